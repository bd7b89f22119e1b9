// CUDA causal softmax attention (kernels/softmax_attention.h), flash-attention-2 style: the
// [Tq, Tk] score matrix is never stored. Tensor cores through mma.sync m16n8k16 (bf16 operands,
// f32 accumulation) fed by ldmatrix from shared memory; q, k, v and dO enter in bf16 (f32 inputs
// are rounded to bf16 copies), o, dq, dk, dv leave in the storage dtype, lse and the backward's
// D_i = dO_i . o_i are f32. Head dims D = Dv in {64, 128}; any Tq, Tk; GQA; the causal mask with
// q_offset and an optional window, as the header states.
//
// Layout of the warp-level products (PTX ISA, mma.m16n8k16 fragments): an accumulator tile of
// 16 rows x 8 columns gives lane l the elements (row l/4 + 8 (e/2), column 2 (l%4) + e%2),
// e = 0..3. Two such tiles side by side are, converted to bf16, the A fragment of the next
// product over those 16 columns (the flash-attention-2 register reuse of P).
//
// forward   one block of 4 warps per (128 queries, batch, query head); each warp owns two
//           m-tiles of 16 query rows, so that each K and V fragment read from shared memory feeds
//           two products. It walks the 64-key tiles its queries can see (tiles no query sees are
//           never loaded), the next tile's K and V copied by cp.async while this one is used:
//           S = Q K^T, the mask only on tiles that cut through it, an online softmax in registers
//           (running max m of the raw scores and sum l of 2^(scale log2(e) (s - m)) per row),
//           O = alpha O + P V. o = O / l, lse = scale m + ln l.
// backward  a small pre-kernel D_i = dO_i . o_i; then two kernels, both deterministic (no
//           atomics): per (128 queries, query head) dQ = scale sum_tiles dS K (32-key tiles for
//           D = 128, as it holds two score tiles in registers), with P = exp(S - lse) recomputed
//           and dS = P (dO V^T - D); per (64 keys, kv head) the transposed products S^T = K Q^T,
//           dV += P^T dO, dP^T = V dO^T, dK += dS^T Q over every query head of the group and
//           every query tile that sees the keys, written once (`=`, zeros for keys no query sees).
#include <climits>
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockN = 64;  // keys per block (dK, dV); the forward and dQ tiles are QTile
constexpr int kPad = 8;  // bf16 row padding: rows 16 bytes apart in banks, ldmatrix conflict-free
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Queries per tile in the dK/dV kernel: its warps hold dK and dV [16, D] in registers, so the
// score tiles are kept narrower for D = 128.
template <int D>
constexpr int kBlockQ = D == 128 ? 32 : 64;

struct AttnArgs {
  const bf16 *q = nullptr, *k = nullptr, *v = nullptr, *d_o = nullptr;
  void *o = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
  float* lse = nullptr;
  const float* delta = nullptr;
  int B = 0, Tq = 0, Tk = 0, Hq = 0, Hkv = 0;
  int q_offset = 0, window = 0;
  float scale = 1.0f, scale_log2 = kLog2e;  // scale and scale * log2(e)
};

// ---- warp-level building blocks --------------------------------------------------------------

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int n = valid ? 16 : 0;  // 0: zero-fill
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// Rows x W bf16 from global (row stride `stride` elements) into shared (row stride W + kPad);
// rows >= valid become zeros.
template <int Rows, int W>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int64_t stride, int valid) {
  constexpr int kVecs = W / 8;
#pragma unroll 4
  for (int i = threadIdx.x; i < Rows * kVecs; i += kThreads) {
    const int r = i / kVecs, c = (i % kVecs) * 8;
    const bool ok = r < valid;
    cp_async16(dst + r * (W + kPad) + c, ok ? src + r * stride + c : src, ok);
  }
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// c[16 x 8] += a[16 x 16] b[16 x 8], bf16 in, f32 accumulate.
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int N>
__device__ __forceinline__ void zero(float (&c)[N][4]) {
#pragma unroll
  for (int n = 0; n < N; ++n) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.0f;
}

// acc [MT 16 x N] += A [MT 16 x K] B^T, A and B [N x K] row-major bf16 in shared memory: MT
// m-tiles of 16 rows share every B fragment read.
template <int MT, int N, int K>
__device__ __forceinline__ void warp_mma_abt(float (&acc)[MT][N / 8][4], const bf16* sa, int lda,
                                             const bf16* sb, int ldb, int lane) {
#pragma unroll
  for (int k0 = 0; k0 < K; k0 += 16) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      ldsm_x4(a[mt], sa + (mt * 16 + lane % 16) * lda + k0 + (lane / 16) * 8);
#pragma unroll
    for (int n0 = 0; n0 < N; n0 += 16) {
      uint32_t b[4];
      ldsm_x4(b, sb + (n0 + lane % 8 + (lane / 16) * 8) * ldb + k0 + ((lane / 8) % 2) * 8);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma16816(acc[mt][n0 / 8], a[mt], b[0], b[1]);
        mma16816(acc[mt][n0 / 8 + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// acc [MT 16 x N] += P [MT 16 x K] B, P as bf16 A fragments in registers, B [K x N] row-major
// bf16 in shared memory.
template <int MT, int N, int K>
__device__ __forceinline__ void warp_mma_pb(float (&acc)[MT][N / 8][4],
                                            const uint32_t (&pa)[MT][K / 16][4], const bf16* sb,
                                            int ldb, int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
#pragma unroll
    for (int n0 = 0; n0 < N; n0 += 16) {
      uint32_t b[4];
      ldsm_x4_trans(b,
                    sb + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * ldb + n0 + (lane / 16) * 8);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma16816(acc[mt][n0 / 8], pa[mt][kk], b[0], b[1]);
        mma16816(acc[mt][n0 / 8 + 1], pa[mt][kk], b[2], b[3]);
      }
    }
  }
}

// One m-tile (the dK/dV kernel).
template <int N, int K>
__device__ __forceinline__ void mma_abt(float (&acc)[N / 8][4], const bf16* sa, int lda,
                                        const bf16* sb, int ldb, int lane) {
  warp_mma_abt<1, N, K>(reinterpret_cast<float(&)[1][N / 8][4]>(acc), sa, lda, sb, ldb, lane);
}
template <int N, int K>
__device__ __forceinline__ void mma_pb(float (&acc)[N / 8][4], const uint32_t (&pa)[K / 16][4],
                                       const bf16* sb, int ldb, int lane) {
  warp_mma_pb<1, N, K>(reinterpret_cast<float(&)[1][N / 8][4]>(acc),
                       reinterpret_cast<const uint32_t(&)[1][K / 16][4]>(pa), sb, ldb, lane);
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// An accumulator [16 x K] as the bf16 A fragments of a product over its K columns.
template <int K>
__device__ __forceinline__ void to_a_frags(const float (&c)[K / 8][4], uint32_t (&pa)[K / 16][4]) {
#pragma unroll
  for (int j = 0; j < K / 16; ++j) {
    pa[j][0] = pack_bf16(c[2 * j][0], c[2 * j][1]);
    pa[j][1] = pack_bf16(c[2 * j][2], c[2 * j][3]);
    pa[j][2] = pack_bf16(c[2 * j + 1][0], c[2 * j + 1][1]);
    pa[j][3] = pack_bf16(c[2 * j + 1][2], c[2 * j + 1][3]);
  }
}

// 2^x on the special-function unit (2 ulp; 2^-inf = +0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

__device__ __forceinline__ void store2(float* p, float x, float y) {
  *reinterpret_cast<float2*>(p) = make_float2(x, y);
}
__device__ __forceinline__ void store2(bf16* p, float x, float y) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(x, y);
}

// Key j (global position j) is visible to the query at global position p.
__device__ __forceinline__ bool visible(int j, int p, int window) {
  return j <= p && (window == 0 || j > p - window);
}

// Rows [16 w, 16 w + 16) of a [rows, D] accumulator owned by warp w, times `mul`, to global
// (row stride `stride`), rows >= valid skipped.
template <int D, typename OutT>
__device__ __forceinline__ void store_rows(OutT* dst, int64_t stride, const float (&acc)[D / 8][4],
                                           int r0, int valid, const float (&mul)[2], int lane) {
  const int gid = lane / 4, tig = lane % 4;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r0 + gid + 8 * r;
    if (row >= valid) continue;
    OutT* out = dst + row * stride + tig * 2;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      store2(out + dt * 8, acc[dt][2 * r] * mul[r], acc[dt][2 * r + 1] * mul[r]);
  }
}

// ---- forward ---------------------------------------------------------------------------------

// Forward and dQ tiles: each warp owns MT m-tiles of 16 query rows (a block 4 x 16 MT queries), so
// that every K and V fragment read from shared memory feeds MT products; BN keys per tile. The dQ
// kernel holds two score tiles (S and dP), so for D = 128 it takes 32-key tiles (measured on an
// H200 at B8 T4096 H8 D128: 64-key tiles make the forward 1.13 -> 0.985 ms, the backward
// 3.85 -> 4.20 ms).
template <int D, bool Backward>
struct QTile {
  static constexpr int MT = 2, BN = Backward && D == 128 ? 32 : 64, BM = kWarps * 16 * MT;
};

template <int D>
constexpr size_t fwd_smem() {
  using Tl = QTile<D, false>;  // Q; K and V, two stages each
  return sizeof(bf16) * (Tl::BM + 4 * Tl::BN) * (D + kPad);
}

template <int D, typename OutT>
__global__ void __launch_bounds__(kThreads) attn_fwd_kernel(AttnArgs a) {
  using Tl = QTile<D, false>;
  constexpr int LD = D + kPad, MT = Tl::MT, BN = Tl::BN, BM = Tl::BM;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sK = sQ + BM * LD;  // [2][BN][LD]
  bf16* sV = sK + 2 * BN * LD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int qb = gridDim.x - 1 - blockIdx.x;  // the longest rows of keys first
  const int b = blockIdx.y / a.Hq, h = blockIdx.y % a.Hq, g = h / (a.Hq / a.Hkv);
  const int i0 = qb * BM, valid_q = min(BM, a.Tq - i0);
  const int64_t q_stride = int64_t(a.Hq) * D, kv_stride = int64_t(a.Hkv) * D;
  const int64_t q_off = (int64_t(b) * a.Tq + i0) * q_stride + int64_t(h) * D;
  const bf16* k = a.k + int64_t(b) * a.Tk * kv_stride + int64_t(g) * D;
  const bf16* v = a.v + int64_t(b) * a.Tk * kv_stride + int64_t(g) * D;
  const int p_first = a.q_offset + i0, p_last = p_first + valid_q - 1;
  const int t_begin = (a.window > 0 ? max(0, p_first - a.window + 1) : 0) / BN;
  const int t_end = p_last / BN;

  auto load_kv = [&](int t, int st) {
    const int j0 = t * BN, valid = min(BN, a.Tk - j0);
    load_tile<BN, D>(sK + st * BN * LD, k + j0 * kv_stride, kv_stride, valid);
    load_tile<BN, D>(sV + st * BN * LD, v + j0 * kv_stride, kv_stride, valid);
  };
  load_tile<BM, D>(sQ, a.q + q_off, q_stride, valid_q);
  load_kv(t_begin, 0);
  cp_async_commit();

  const int r0 = warp * 16 * MT;
  int pos[MT][2];  // global positions of this lane's rows (rows past Tq act as the last one)
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      pos[mt][r] = min(p_first + r0 + 16 * mt + gid + 8 * r, p_last);
      m[mt][r] = -INFINITY;
      l[mt][r] = 0.0f;
    }
  float acc[MT][D / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) zero(acc[mt]);

  for (int t = t_begin; t <= t_end; ++t) {
    const int st = (t - t_begin) & 1;
    cp_async_wait_all();
    __syncthreads();  // tile t visible to all; everyone is done with the other stage
    if (t < t_end) load_kv(t + 1, st ^ 1);
    cp_async_commit();
    const bf16* cK = sK + st * BN * LD;
    const bf16* cV = sV + st * BN * LD;

    float s[MT][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) zero(s[mt]);
    warp_mma_abt<MT, BN, D>(s, sQ + r0 * LD, LD, cK, LD, lane);
    const int j0 = t * BN;
    const bool masked = j0 + BN - 1 > p_first || (a.window > 0 && j0 <= p_last - a.window);
    uint32_t pa[MT][BN / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (masked && !visible(j0 + nt * 8 + tig * 2 + (e & 1), pos[mt][e >> 1], a.window))
            s[mt][nt][e] = -INFINITY;
          mx[e >> 1] = fmaxf(mx[e >> 1], s[mt][nt][e]);
        }
      // m is the running max of the raw scores; exponents are scale log2(e) (s - m).
      float alpha[2], base[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float m_new = fmaxf(m[mt][r], quad_max(mx[r]));
        base[r] = m_new == -INFINITY ? 0.0f : m_new * a.scale_log2;  // a row with no key yet: 0
        alpha[r] = fast_exp2(m[mt][r] * a.scale_log2 - base[r]);
        m[mt][r] = m_new;
      }
      float rs[2] = {0.0f, 0.0f};
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = fast_exp2(fmaf(s[mt][nt][e], a.scale_log2, -base[e >> 1]));
          s[mt][nt][e] = p;
          rs[e >> 1] += p;
        }
#pragma unroll
      for (int r = 0; r < 2; ++r) l[mt][r] = l[mt][r] * alpha[r] + rs[r];
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][dt][e] *= alpha[e >> 1];
      to_a_frags<BN>(s[mt], pa[mt]);
    }
    warp_mma_pb<MT, D, BN>(acc, pa, cV, LD, lane);
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[mt][r] = quad_sum(l[mt][r]);
      inv[r] = 1.0f / l[mt][r];
    }
    store_rows<D>(static_cast<OutT*>(a.o) + q_off, q_stride, acc[mt], r0 + 16 * mt, valid_q, inv,
                  lane);
    if (tig == 0) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = r0 + 16 * mt + gid + 8 * r;
        if (row < valid_q)
          a.lse[(int64_t(b) * a.Hq + h) * a.Tq + i0 + row] =
              (m[mt][r] * a.scale_log2 + log2f(l[mt][r])) * kLn2;
      }
    }
  }
}

// ---- backward --------------------------------------------------------------------------------

// D_i = dO_i . o_i in f32: one warp per (b, i, h) row, written to delta [B, Hq, Tq].
template <typename T>
__global__ void attn_delta_kernel(const T* o, const T* d_o, float* delta, int Tq, int Hq, int Dv,
                                  int64_t rows) {
  const int lane = threadIdx.x % 32;
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += int64_t(gridDim.x) * blockDim.x / 32) {
    const T* x = o + row * Dv;
    const T* y = d_o + row * Dv;
    float acc = 0.0f;
    for (int c = lane; c < Dv; c += 32) acc += to_float(x[c]) * to_float(y[c]);
    acc = warp_sum(acc);
    if (lane == 0) {
      const int64_t h = row % Hq, bi = row / Hq, i = bi % Tq, b = bi / Tq;
      delta[(b * Hq + h) * Tq + i] = acc;
    }
  }
}

template <int D>
constexpr size_t dq_smem() {
  using Tl = QTile<D, true>;  // Q, dO; K, V two stages each
  return sizeof(bf16) * (2 * Tl::BM + 4 * Tl::BN) * (D + kPad);
}

template <int D, typename OutT>
__global__ void __launch_bounds__(kThreads) attn_dq_kernel(AttnArgs a) {
  using Tl = QTile<D, true>;
  constexpr int LD = D + kPad, MT = Tl::MT, BN = Tl::BN, BM = Tl::BM;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sdO = sQ + BM * LD;
  bf16* sK = sdO + BM * LD;  // [2][BN][LD]
  bf16* sV = sK + 2 * BN * LD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int qb = gridDim.x - 1 - blockIdx.x;
  const int b = blockIdx.y / a.Hq, h = blockIdx.y % a.Hq, g = h / (a.Hq / a.Hkv);
  const int i0 = qb * BM, valid_q = min(BM, a.Tq - i0);
  const int64_t q_stride = int64_t(a.Hq) * D, kv_stride = int64_t(a.Hkv) * D;
  const int64_t q_off = (int64_t(b) * a.Tq + i0) * q_stride + int64_t(h) * D;
  const bf16* k = a.k + int64_t(b) * a.Tk * kv_stride + int64_t(g) * D;
  const bf16* v = a.v + int64_t(b) * a.Tk * kv_stride + int64_t(g) * D;
  const int p_first = a.q_offset + i0, p_last = p_first + valid_q - 1;
  const int t_begin = (a.window > 0 ? max(0, p_first - a.window + 1) : 0) / BN;
  const int t_end = p_last / BN;

  auto load_kv = [&](int t, int st) {
    const int j0 = t * BN, valid = min(BN, a.Tk - j0);
    load_tile<BN, D>(sK + st * BN * LD, k + j0 * kv_stride, kv_stride, valid);
    load_tile<BN, D>(sV + st * BN * LD, v + j0 * kv_stride, kv_stride, valid);
  };
  load_tile<BM, D>(sQ, a.q + q_off, q_stride, valid_q);
  load_tile<BM, D>(sdO, a.d_o + q_off, q_stride, valid_q);
  load_kv(t_begin, 0);
  cp_async_commit();

  const int r0 = warp * 16 * MT;
  int pos[MT][2];
  float lse2[MT][2], dlt[MT][2];  // lse in base 2 (+inf past Tq: P = 0 there) and D_i
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = r0 + 16 * mt + gid + 8 * r;
      pos[mt][r] = min(p_first + row, p_last);
      const int64_t at = (int64_t(b) * a.Hq + h) * a.Tq + i0 + row;
      lse2[mt][r] = row < valid_q ? a.lse[at] * kLog2e : INFINITY;
      dlt[mt][r] = row < valid_q ? a.delta[at] : 0.0f;
    }
  float acc[MT][D / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) zero(acc[mt]);

  for (int t = t_begin; t <= t_end; ++t) {
    const int st = (t - t_begin) & 1;
    cp_async_wait_all();
    __syncthreads();
    if (t < t_end) load_kv(t + 1, st ^ 1);
    cp_async_commit();
    const bf16* cK = sK + st * BN * LD;
    const bf16* cV = sV + st * BN * LD;

    float s[MT][BN / 8][4], dp[MT][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      zero(s[mt]);
      zero(dp[mt]);
    }
    warp_mma_abt<MT, BN, D>(s, sQ + r0 * LD, LD, cK, LD, lane);
    warp_mma_abt<MT, BN, D>(dp, sdO + r0 * LD, LD, cV, LD, lane);
    const int j0 = t * BN;
    const bool masked = j0 + BN - 1 > p_first || (a.window > 0 && j0 <= p_last - a.window);
    uint32_t pa[MT][BN / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float p = fast_exp2(fmaf(s[mt][nt][e], a.scale_log2, -lse2[mt][e >> 1]));
          if (masked && !visible(j0 + nt * 8 + tig * 2 + (e & 1), pos[mt][e >> 1], a.window))
            p = 0.0f;
          s[mt][nt][e] = p * (dp[mt][nt][e] - dlt[mt][e >> 1]);  // dS
        }
      to_a_frags<BN>(s[mt], pa[mt]);
    }
    warp_mma_pb<MT, D, BN>(acc, pa, cK, LD, lane);
  }
  const float mul[2] = {a.scale, a.scale};
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
    store_rows<D>(static_cast<OutT*>(a.dq) + q_off, q_stride, acc[mt], r0 + 16 * mt, valid_q, mul,
                  lane);
}

template <int D>
constexpr size_t dkdv_smem() {
  constexpr int BQ = kBlockQ<D>;
  // K, V; Q and dO two stages each; lse and D two stages each.
  return sizeof(bf16) * (2 * kBlockN + 4 * BQ) * (D + kPad) + sizeof(float) * 4 * BQ;
}

template <int D, typename OutT>
__global__ void __launch_bounds__(kThreads) attn_dkdv_kernel(AttnArgs a) {
  constexpr int LD = D + kPad;
  constexpr int BQ = kBlockQ<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);
  bf16* sV = sK + kBlockN * LD;
  bf16* sQ = sV + kBlockN * LD;                             // [2][BQ][LD]
  bf16* sdO = sQ + 2 * BQ * LD;                             // [2][BQ][LD]
  float* sL = reinterpret_cast<float*>(sdO + 2 * BQ * LD);  // [2][BQ] lse * log2(e)
  float* sDl = sL + 2 * BQ;                                 // [2][BQ] D_i
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int b = blockIdx.y / a.Hkv, g = blockIdx.y % a.Hkv, group = a.Hq / a.Hkv;
  const int j0 = blockIdx.x * kBlockN, valid_k = min(kBlockN, a.Tk - j0);
  const int64_t q_stride = int64_t(a.Hq) * D, kv_stride = int64_t(a.Hkv) * D;
  const int64_t kv_off = (int64_t(b) * a.Tk + j0) * kv_stride + int64_t(g) * D;
  // The queries that see some key of [j0, j0 + valid_k): q_offset + i >= j0, and with a window
  // q_offset + i < j_last + window.
  const int j_last = j0 + valid_k - 1;
  const int i_lo = max(0, j0 - a.q_offset);
  const int i_hi = a.window > 0 ? min(a.Tq - 1, j_last + a.window - 1 - a.q_offset) : a.Tq - 1;
  const int qt0 = i_lo / BQ;
  const int n_q = i_lo <= i_hi ? i_hi / BQ - qt0 + 1 : 0;
  const int steps = n_q * group;

  auto load_q = [&](int step, int st) {
    const int h = g * group + step / n_q, i0 = (qt0 + step % n_q) * BQ;
    const int valid = min(BQ, a.Tq - i0);
    const int64_t off = (int64_t(b) * a.Tq + i0) * q_stride + int64_t(h) * D;
    load_tile<BQ, D>(sQ + st * BQ * LD, a.q + off, q_stride, valid);
    load_tile<BQ, D>(sdO + st * BQ * LD, a.d_o + off, q_stride, valid);
    const int64_t at = (int64_t(b) * a.Hq + h) * a.Tq + i0;
    for (int i = threadIdx.x; i < BQ; i += kThreads) {
      sL[st * BQ + i] = i < valid ? a.lse[at + i] * kLog2e : INFINITY;
      sDl[st * BQ + i] = i < valid ? a.delta[at + i] : 0.0f;
    }
  };
  if (steps > 0) {
    load_tile<kBlockN, D>(sK, a.k + kv_off, kv_stride, valid_k);
    load_tile<kBlockN, D>(sV, a.v + kv_off, kv_stride, valid_k);
    load_q(0, 0);
  }
  cp_async_commit();

  const int r0 = warp * 16;
  int key[2];  // positions of this lane's two key rows
#pragma unroll
  for (int r = 0; r < 2; ++r) key[r] = j0 + r0 + gid + 8 * r;
  float dk[D / 8][4], dv[D / 8][4];
  zero(dk);
  zero(dv);

  for (int step = 0; step < steps; ++step) {
    const int st = step & 1;
    const int i0 = (qt0 + step % n_q) * BQ;
    cp_async_wait_all();
    __syncthreads();
    if (step + 1 < steps) load_q(step + 1, st ^ 1);
    cp_async_commit();
    const bf16* cQ = sQ + st * BQ * LD;
    const bf16* cdO = sdO + st * BQ * LD;
    const float* cL = sL + st * BQ;
    const float* cDl = sDl + st * BQ;

    float s[BQ / 8][4];  // S^T: rows are this warp's keys, columns the tile's queries
    zero(s);
    mma_abt<BQ, D>(s, sK + r0 * LD, LD, cQ, LD, lane);
    const int p0 = a.q_offset + i0;
    const bool masked = j0 + kBlockN - 1 > p0 || (a.window > 0 && j0 <= p0 + BQ - 1 - a.window);
#pragma unroll
    for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = nt * 8 + tig * 2 + (e & 1);
        float p = fast_exp2(fmaf(s[nt][e], a.scale_log2, -cL[c]));
        if (masked && !visible(key[e >> 1], p0 + c, a.window)) p = 0.0f;
        s[nt][e] = p;
      }
    uint32_t pa[BQ / 16][4];
    to_a_frags<BQ>(s, pa);
    mma_pb<D, BQ>(dv, pa, cdO, LD, lane);  // dV += P^T dO

    float dp[BQ / 8][4];  // dP^T = V dO^T
    zero(dp);
    mma_abt<BQ, D>(dp, sV + r0 * LD, LD, cdO, LD, lane);
#pragma unroll
    for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = nt * 8 + tig * 2 + (e & 1);
        dp[nt][e] = s[nt][e] * (dp[nt][e] - cDl[c]);  // dS^T
      }
    to_a_frags<BQ>(dp, pa);
    mma_pb<D, BQ>(dk, pa, cQ, LD, lane);  // dK += dS^T Q
  }
  cp_async_wait_all();
  const float mul_k[2] = {a.scale, a.scale}, one[2] = {1.0f, 1.0f};
  store_rows<D>(static_cast<OutT*>(a.dk) + kv_off, kv_stride, dk, r0, valid_k, mul_k, lane);
  store_rows<D>(static_cast<OutT*>(a.dv) + kv_off, kv_stride, dv, r0, valid_k, one, lane);
}

// ---- host side -------------------------------------------------------------------------------

struct Dims {
  int B, Tq, Tk, Hq, Hkv, D;
};

const char* kOffsetHint =
    "q_offset is the global position of the first local query; with sequence parallelism it is "
    "rank * local_length, and k, v must hold the keys of every position up to the last local query "
    "(all ranks' keys gathered in rank order)";

Dims check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const CausalMask& mask,
                  double scale, const char* op) {
  check_float(q, op, "q");
  check_like(k, q, op, "k", "q");
  check_like(v, q, op, "v", "q");
  LINEA_CHECK(q.ndim() == 4) << op << ": q must be [B, Tq, Hq, D], got " << describe(q);
  LINEA_CHECK(k.ndim() == 4) << op << ": k must be [B, Tk, Hkv, D], got " << describe(k);
  LINEA_CHECK(v.ndim() == 4) << op << ": v must be [B, Tk, Hkv, Dv], got " << describe(v);
  LINEA_CHECK(k.dim(0) == q.dim(0) && k.dim(3) == q.dim(3))
      << op << ": k " << shape_str(k.shape()) << " must be [B, Tk, Hkv, D] with q's B and D "
      << shape_str(q.shape());
  LINEA_CHECK(v.dim(0) == k.dim(0) && v.dim(1) == k.dim(1) && v.dim(2) == k.dim(2))
      << op << ": v " << shape_str(v.shape()) << " must be [B, Tk, Hkv, Dv] with k's B, Tk, Hkv "
      << shape_str(k.shape());
  LINEA_CHECK(v.dim(3) == q.dim(3) && (q.dim(3) == 64 || q.dim(3) == 128))
      << op << ": the CUDA kernel takes head dims D = Dv in {64, 128}; got q "
      << shape_str(q.shape()) << " (D = " << q.dim(3) << "), v " << shape_str(v.shape())
      << " (Dv = " << v.dim(3) << ")";
  LINEA_USER_CHECK(k.dim(2) > 0 && q.dim(2) % k.dim(2) == 0,
                   "the number of query heads must be a multiple of the number of key/value heads")
      << op << ": Hq = " << q.dim(2) << " query heads cannot be grouped over Hkv = " << k.dim(2)
      << " kv heads";
  LINEA_USER_CHECK(mask.q_offset >= 0 && mask.q_offset + q.dim(1) <= k.dim(1), kOffsetHint)
      << op << ": queries at positions [" << mask.q_offset << ", " << mask.q_offset + q.dim(1)
      << ") need keys up to position " << mask.q_offset + q.dim(1) - 1
      << ", but k holds Tk = " << k.dim(1);
  LINEA_CHECK(mask.window >= 0) << op << ": window " << mask.window << " must be >= 0 (0 = none)";
  LINEA_CHECK(scale > 0) << op << ": scale " << scale
                         << " must be positive (the running max is taken on unscaled scores)";
  // Positions are int in the kernels (with room for j + window); the grid's y is B * heads.
  LINEA_CHECK(k.dim(1) < INT_MAX / 4 && mask.window < INT_MAX / 4)
      << op << ": Tk = " << k.dim(1) << " or window " << mask.window << " too large";
  LINEA_CHECK(q.dim(0) * q.dim(2) <= 65535)
      << op << ": B * Hq = " << q.dim(0) * q.dim(2) << " exceeds the grid limit 65535";
  return {int(q.dim(0)), int(q.dim(1)), int(k.dim(1)), int(q.dim(2)), int(k.dim(2)), int(q.dim(3))};
}

void check_out(const Tensor& t, const Tensor& ref, const Shape& shape, const char* op,
               const char* name) {
  check_like(t, ref, op, name, "q");
  LINEA_CHECK(t.shape() == shape) << op << ": " << name << " " << describe(t) << " must be "
                                  << shape_str(shape);
}

void check_lse(const Tensor& lse, const Tensor& q, const Dims& d, const char* op) {
  check_cuda(lse, op, "lse");
  check_same_device(lse, q, op, "lse", "q");
  const Shape want{d.B, d.Hq, d.Tq};
  LINEA_CHECK(lse.dtype() == DType::kF32 && lse.shape() == want)
      << op << ": lse " << describe(lse) << " must be " << shape_str(want)
      << " f32 (saved statistics are f32 on CUDA whatever the input dtype)";
}

// What the tensor cores read: t itself, or a bf16 (and 16-byte aligned) copy.
Tensor tc_operand(const Tensor& t) {
  if (t.dtype() != DType::kBF16) return t.to(DType::kBF16);
  return aligned16(t.raw()) ? t : t.clone();
}

AttnArgs make_args(const Dims& d, const CausalMask& mask, double scale) {
  AttnArgs a;
  a.B = d.B, a.Tq = d.Tq, a.Tk = d.Tk, a.Hq = d.Hq, a.Hkv = d.Hkv;
  a.q_offset = int(mask.q_offset), a.window = int(mask.window);
  a.scale = float(scale), a.scale_log2 = float(scale * 1.4426950408889634);
  return a;
}

template <typename Kernel>
void configure(Kernel kernel, size_t bytes, bool& done, const char* name) {
  if (done) return;
  const cudaError_t e =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  LINEA_CHECK(e == cudaSuccess) << name << ": cudaFuncSetAttribute: " << cudaGetErrorString(e);
  done = true;
}

void check_launch(const char* name) {
  const cudaError_t e = cudaGetLastError();
  LINEA_CHECK(e == cudaSuccess) << name << ": launch failed: " << cudaGetErrorString(e);
}

template <int D, typename OutT>
void run_forward(const AttnArgs& a, cudaStream_t stream) {
  static bool done = false;
  configure(attn_fwd_kernel<D, OutT>, fwd_smem<D>(), done, "softmax attention forward");
  constexpr int BM = QTile<D, false>::BM;
  const dim3 grid((a.Tq + BM - 1) / BM, a.B * a.Hq);
  attn_fwd_kernel<D, OutT><<<grid, kThreads, fwd_smem<D>(), stream>>>(a);
  check_launch("softmax attention forward");
}

template <int D, typename OutT>
void run_backward(const AttnArgs& a, cudaStream_t stream) {
  static bool done_q = false, done_kv = false;
  configure(attn_dq_kernel<D, OutT>, dq_smem<D>(), done_q, "softmax attention dq");
  configure(attn_dkdv_kernel<D, OutT>, dkdv_smem<D>(), done_kv, "softmax attention dk, dv");
  constexpr int BM = QTile<D, true>::BM;
  const dim3 grid_q((a.Tq + BM - 1) / BM, a.B * a.Hq);
  attn_dq_kernel<D, OutT><<<grid_q, kThreads, dq_smem<D>(), stream>>>(a);
  check_launch("softmax attention dq");
  const dim3 grid_kv((a.Tk + kBlockN - 1) / kBlockN, a.B * a.Hkv);
  attn_dkdv_kernel<D, OutT><<<grid_kv, kThreads, dkdv_smem<D>(), stream>>>(a);
  check_launch("softmax attention dk, dv");
}

}  // namespace

void softmax_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                               const CausalMask& mask, Tensor& o, Tensor& lse) {
  const char* op = "softmax_attention_forward (CUDA)";
  const Dims d = check_inputs(q, k, v, mask, scale, op);
  check_out(o, q, {d.B, d.Tq, d.Hq, d.D}, op, "o");
  check_lse(lse, q, d, op);
  OnDevice dev(q);
  const Tensor qb = tc_operand(q), kb = tc_operand(k), vb = tc_operand(v);
  AttnArgs a = make_args(d, mask, scale);
  a.q = ptr<bf16>(qb), a.k = ptr<bf16>(kb), a.v = ptr<bf16>(vb);
  a.o = o.raw(), a.lse = lse.data<float>();
  LINEA_CHECK(aligned16(a.o)) << op << ": o " << describe(o) << " must be 16-byte aligned";
  if (d.Tq == 0) return;
  dispatch(o.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if (d.D == 64)
      run_forward<64, T>(a, dev.stream);
    else
      run_forward<128, T>(a, dev.stream);
  });
}

void softmax_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                                const Tensor& lse, const Tensor& d_o, double scale,
                                const CausalMask& mask, Tensor& dq, Tensor& dk, Tensor& dv) {
  const char* op = "softmax_attention_backward (CUDA)";
  const Dims d = check_inputs(q, k, v, mask, scale, op);
  const Shape o_shape{d.B, d.Tq, d.Hq, d.D};
  check_out(o, q, o_shape, op, "o");
  check_out(d_o, q, o_shape, op, "d_o");
  check_lse(lse, q, d, op);
  check_out(dq, q, q.shape(), op, "dq");
  check_out(dk, q, k.shape(), op, "dk");
  check_out(dv, q, v.shape(), op, "dv");
  OnDevice dev(q);
  if (d.Tq == 0 || d.Tk == 0) return;
  Tensor delta = Tensor::empty({d.B, d.Hq, d.Tq}, DType::kF32, q.device());
  const int64_t rows = int64_t(d.B) * d.Tq * d.Hq;
  dispatch(o.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int blocks = grid_for(rows * 32, 256, dev.index);
    attn_delta_kernel<T><<<blocks, 256, 0, dev.stream>>>(
        ptr<T>(o), ptr<T>(d_o), delta.data<float>(), d.Tq, d.Hq, d.D, rows);
    check_launch("softmax attention D = dO . o");
  });
  const Tensor qb = tc_operand(q), kb = tc_operand(k), vb = tc_operand(v), dob = tc_operand(d_o);
  AttnArgs a = make_args(d, mask, scale);
  a.q = ptr<bf16>(qb), a.k = ptr<bf16>(kb), a.v = ptr<bf16>(vb), a.d_o = ptr<bf16>(dob);
  a.dq = dq.raw(), a.dk = dk.raw(), a.dv = dv.raw();
  a.lse = lse.data<float>(), a.delta = delta.data<float>();
  LINEA_CHECK(aligned16(a.dq) && aligned16(a.dk) && aligned16(a.dv))
      << op << ": dq, dk, dv must be 16-byte aligned";
  dispatch(dq.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if (d.D == 64)
      run_backward<64, T>(a, dev.stream);
    else
      run_backward<128, T>(a, dev.stream);
  });
}

}  // namespace linea::kernels::cuda
