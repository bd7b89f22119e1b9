// The vector-decay chunk scan (kernels/cuda/vector_decay_scan.h: the math, the steps, the
// contract). One block of 8 warps per chunk of one (b, h); every product runs on tensor cores (WMMA
// bf16 m16n16k16, f32 accumulation) except the four diagonal 16 x 16 sub-blocks of the scores and
// of dq, dk, which take one exp per term on CUDA cores.
//
// Sub-chunks i = 0..3 of 16 rows, R_m = b at token 16 m - 1 (the boundary before sub-chunk m). For
// t in sub-chunk i and s in sub-chunk j < i, any boundary m with j < m <= i splits the decay:
// exp(b_t - b_s) = exp(b_t - R_m) exp(R_m - b_s), both factors <= 1. Pair p = (i, j), j < i,
// numbered i (i - 1) / 2 + j, owns a 16-row operand block:
//   scores and dq (m = i):     Kp[p] = k_j (.) exp(R_i - b_j),    the 16 rows of sub-chunk j
//   dk (m = j + 1):            Qp[p] = q_i (.) exp(b_i - R_(j+1)), the 16 rows of sub-chunk i
// and the query side of the scores is Qi = q_i (.) exp(b_i - R_i) (rows of sub-chunk i >= 1).
// Shared memory: f32 rows of Dk + 1 for b and the raw q or k (the odd stride keeps the 16 rows a
// diagonal warp reads on distinct banks), bf16 operand rows padded by 8, f32 score tiles [64][68].
// Dk = Dv = 128: 203 KB (outputs, dv), 217 KB (dq, dk), 68 KB (chunk states).
#include <mma.h>

#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vector_decay_scan.h"

namespace linea::kernels::cuda {
namespace {

using namespace nvcuda;

constexpr int kC = 64, kSub = 16, kWarps = 8, kThreads = kWarps * 32;
constexpr int kPairs = 6;       // sub-chunk pairs (i, j), j < i
constexpr int kPad = 8;         // bf16 row padding (16 bytes)
constexpr int kLdA = kC + 8;    // bf16 score rows
constexpr int kLdF = kC + 4;    // f32 score rows
constexpr int kDiagTasks = 32;  // 4 diagonal blocks x 8 pairs of rows

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

struct Geo {
  int B, T, H, Dk, Dv, NC;
  // The flat row of token t of head h of sequence b; times D for its first element.
  __device__ int64_t row(int b, int t, int h) const { return (int64_t(b) * T + t) * H + h; }
  __host__ __device__ int64_t state_size() const { return int64_t(Dk) * Dv; }
};

constexpr size_t up(size_t x) { return (x + 127) / 128 * 128; }

__host__ __device__ constexpr int pair_index(int i, int j) { return i * (i - 1) / 2 + j; }
__device__ __forceinline__ void pair_of(int p, int& i, int& j) {
  i = p < 1 ? 1 : (p < 3 ? 2 : 3);
  j = p - pair_index(i, 0);
}

// sb[t * ld + d] = sum_(u <= t) g[t0 + u, d]: the inclusive cumulative log decay; rows past the
// chunk's L tokens repeat row L - 1 (no decay), so every exponent stays finite and <= 0.
__device__ void load_cum_decay(const float* g, const Geo& d, int b, int h, int t0, int L, float* sb,
                               int ld) {
  for (int i = threadIdx.x; i < d.Dk; i += blockDim.x) {
    float acc = 0.0f;
    for (int t = 0; t < kC; ++t) {
      if (t < L) acc += g[d.row(b, t0 + t, h) * d.Dk + i];
      sb[t * ld + i] = acc;
    }
  }
}

// kC rows of D values into shared (f32 or bf16, row stride ld); rows >= L become zeros.
template <typename U, typename T>
__device__ void load_rows(const T* x, const Geo& d, int D, int b, int h, int t0, int L, U* s,
                          int ld) {
  for (int e = threadIdx.x; e < kC * D; e += blockDim.x) {
    const int t = e / D, i = e % D;
    const float val = t < L ? to_float(x[d.row(b, t0 + t, h) * D + i]) : 0.0f;
    s[t * ld + i] = from_float<U>(val);
  }
}

// A state [Dk][Dv] f32 (global) as bf16 rows of ld.
__device__ void load_state_bf16(const float* S, int Dk, int Dv, bf16* s, int ld) {
  for (int e = threadIdx.x; e < Dk * Dv / 4; e += blockDim.x) {
    const int i = e / (Dv / 4), j = (e % (Dv / 4)) * 4;
    const float4 x = *reinterpret_cast<const float4*>(S + int64_t(i) * Dv + j);
    s[i * ld + j + 0] = __float2bfloat16_rn(x.x);
    s[i * ld + j + 1] = __float2bfloat16_rn(x.y);
    s[i * ld + j + 2] = __float2bfloat16_rn(x.z);
    s[i * ld + j + 3] = __float2bfloat16_rn(x.w);
  }
}

// Step 1 of a scan: states[bh][c + slot] = alpha sum_(s < L) (x_s (.) f_s)^T y_s with
// f_s = exp(b_last - b_s) (to_end: U_c of the forward, x = k, y = v, slot 1) or exp(b_s) (W_c of
// the backward, x = q, y = dO, alpha = scale, slot 0); G[bh][c] = b_last when G is not null.
// Warp w owns tiles w N .. w N + N - 1 (row-major over the Dk/16 x Dv/16 grid: one tile row).
template <int Dk, int Dv>
struct StateSmem {
  static constexpr int ldb = Dk + 1, ldx = Dk + kPad, ldy = Dv + kPad;
  static constexpr size_t b = 0, x = up(b + sizeof(float) * kC * ldb),
                          y = up(x + sizeof(bf16) * kC * ldx),
                          bytes = up(y + sizeof(bf16) * kC * ldy);
};

template <typename T, int Dk, int Dv>
__global__ void __launch_bounds__(kThreads)
    chunk_state_kernel(const T* x, const T* y, const float* g, Geo d, float alpha, bool to_end,
                       int slot, float* states, float* G) {
  using L = StateSmem<Dk, Dv>;
  extern __shared__ __align__(128) unsigned char smem[];
  float* sb = reinterpret_cast<float*>(smem + L::b);
  bf16* sx = reinterpret_cast<bf16*>(smem + L::x);
  bf16* sy = reinterpret_cast<bf16*>(smem + L::y);
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int t0 = c * kC, len = min(kC, d.T - t0);
  load_cum_decay(g, d, b, h, t0, len, sb, L::ldb);
  load_rows(y, d, Dv, b, h, t0, len, sy, L::ldy);
  __syncthreads();
  for (int e = threadIdx.x; e < kC * Dk; e += kThreads) {
    const int t = e / Dk, i = e % Dk;
    const float bt = sb[t * L::ldb + i];
    const float f = __expf(to_end ? sb[(kC - 1) * L::ldb + i] - bt : bt);
    const float xv = t < len ? to_float(x[d.row(b, t0 + t, h) * Dk + i]) : 0.0f;
    sx[t * L::ldx + i] = __float2bfloat16_rn(xv * f);
  }
  if (G && threadIdx.x < Dk)
    G[(int64_t(bh) * d.NC + c) * Dk + threadIdx.x] = sb[(kC - 1) * L::ldb + threadIdx.x];
  __syncthreads();
  constexpr int kN = Dk * Dv / (256 * kWarps), kCols = Dv / 16;
  const int warp = threadIdx.x / 32, first = warp * kN, tr = first / kCols, tc = first % kCols;
  FragC acc[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) wmma::fill_fragment(acc[n], 0.0f);
#pragma unroll
  for (int kk = 0; kk < kC / 16; ++kk) {
    FragAT fa;  // (x~)^T: a column-major view of the token rows
    wmma::load_matrix_sync(fa, sx + kk * 16 * L::ldx + tr * 16, L::ldx);
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      FragB fb;
      wmma::load_matrix_sync(fb, sy + kk * 16 * L::ldy + (tc + n) * 16, L::ldy);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
  float* out = states + (int64_t(bh) * (d.NC + 1) + c + slot) * d.state_size();
#pragma unroll
  for (int n = 0; n < kN; ++n) {
#pragma unroll
    for (int e = 0; e < acc[n].num_elements; ++e) acc[n].x[e] *= alpha;
    wmma::store_matrix_sync(out + int64_t(tr) * 16 * Dv + (tc + n) * 16, acc[n], Dv,
                            wmma::mem_row_major);
  }
}

// Step 2: per state element, through the chunks. Forward: slot 0 = init (or 0), slot c + 1 =
// exp(G_c) slot c + U_c (U_c found in slot c + 1). Reverse: slot NC = init, slot c =
// exp(G_c) slot (c + 1) + W_c (W_c found in slot c). `last` (may be null) gets the final value.
__global__ void state_scan_kernel(float* states, const float* G, Geo d, const float* init,
                                  bool reverse, float* last) {
  const int64_t per = d.state_size(), n = int64_t(d.B) * d.H * per;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += stride) {
    const int64_t bh = e / per, ij = e % per, i = ij / d.Dv;
    float* base = states + bh * (d.NC + 1) * per + ij;
    const float* gb = G + bh * d.NC * d.Dk + i;
    float s = init ? init[e] : 0.0f;
    if (!reverse) {
      base[0] = s;
      for (int c = 0; c < d.NC; ++c) {
        s = expf(gb[int64_t(c) * d.Dk]) * s + base[(c + 1) * per];
        base[(c + 1) * per] = s;
      }
    } else {
      base[d.NC * per] = s;
      for (int c = d.NC - 1; c >= 0; --c) {
        s = expf(gb[int64_t(c) * d.Dk]) * s + base[c * per];
        base[c * per] = s;
      }
    }
    if (last) last[e] = s;
  }
}

// Step 3 of the forward (o) and the dv of the backward, one chunk each:
//   o  = scale ((q (.) exp(b)) S_c + A v)                  (kDv false)
//   dv = (k (.) exp(b_last - b)) dS_(c+1) + scale A^T dO    (kDv true)
// with the scores A (s <= t) from Qi Kp^T off the diagonal and the exact per-term sum on it.
// Phases: (1) load b, q, k (f32) and v or dO (bf16); (2) the operands Qi, Kp and the row operand;
// (3) the scores (warps 0..5 a pair each, then every warp the diagonal); (4) A to bf16; (5) the
// state to bf16 over the dead f32 rows, the products, out through a per-warp staging tile.
template <int Dk, int Dv>
struct OutSmem {
  static constexpr int ldb = Dk + 1, ldk = Dk + kPad, ldv = Dv + kPad, ldst = Dv / 2 + 4;
  static constexpr size_t b = 0, q = up(b + sizeof(float) * kC * ldb),
                          k = up(q + sizeof(float) * kC * ldb),
                          qi = up(k + sizeof(float) * kC * ldb),
                          kp = up(qi + sizeof(bf16) * kC * ldk),
                          af = up(kp + sizeof(bf16) * kPairs * kSub * ldk),
                          rw = up(af + sizeof(float) * kC * kLdF),
                          y = up(rw + sizeof(bf16) * kC * ldk),
                          ab = up(y + sizeof(bf16) * kC * ldv),
                          bytes = up(ab + sizeof(bf16) * kC * kLdA);
  // Phase 5, over b, q, k, qi, kp (dead by then).
  static constexpr size_t s = 0, stage = up(s + sizeof(bf16) * Dk * ldv);
  static_assert(stage + sizeof(float) * kWarps * kSub * ldst <= af, "phase-5 alias overflows");
};

// The scores' diagonal blocks, exact: sa[t][s] = sum_d q_td k_sd exp(b_td - b_sd) for s <= t in
// one sub-chunk, 0 for s > t. A task is two rows of a block (lanes 0-15 row pr, 16-31 row 15 - pr,
// lane % 16 the column), so a load of k or b touches 16 rows on 16 banks.
template <int Dk>
__device__ void diagonal_scores(const float* sq, const float* sk, const float* sb, int ld,
                                float* sa, int warp, int lane) {
  for (int task = warp; task < kDiagTasks; task += kWarps) {
    const int blk = task / 8, pr = task % 8;
    const int t = blk * kSub + (lane < 16 ? pr : 15 - pr), s = blk * kSub + lane % 16;
    float acc = 0.0f;
    if (s <= t) {
#pragma unroll 8
      for (int i = 0; i < Dk; ++i)
        acc += sq[t * ld + i] * sk[s * ld + i] * __expf(sb[t * ld + i] - sb[s * ld + i]);
    }
    sa[t * kLdF + s] = acc;
  }
}

template <typename T, int Dk, int Dv, bool kDv>
__global__ void __launch_bounds__(kThreads)
    chunk_output_kernel(const T* q, const T* k, const T* y, const float* g, const float* states,
                        Geo d, float scale, T* out) {
  using L = OutSmem<Dk, Dv>;
  constexpr int ldb = L::ldb, ldk = L::ldk, ldv = L::ldv;
  extern __shared__ __align__(128) unsigned char smem[];
  float* sb = reinterpret_cast<float*>(smem + L::b);
  float* sq = reinterpret_cast<float*>(smem + L::q);
  float* sk = reinterpret_cast<float*>(smem + L::k);
  bf16* sQi = reinterpret_cast<bf16*>(smem + L::qi);
  bf16* sKp = reinterpret_cast<bf16*>(smem + L::kp);
  float* sAf = reinterpret_cast<float*>(smem + L::af);
  bf16* sRow = reinterpret_cast<bf16*>(smem + L::rw);
  bf16* sY = reinterpret_cast<bf16*>(smem + L::y);
  bf16* sAb = reinterpret_cast<bf16*>(smem + L::ab);
  bf16* sS = reinterpret_cast<bf16*>(smem + L::s);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int t0 = c * kC, len = min(kC, d.T - t0);
  // (1)
  load_cum_decay(g, d, b, h, t0, len, sb, ldb);
  load_rows(q, d, Dk, b, h, t0, len, sq, ldb);
  load_rows(k, d, Dk, b, h, t0, len, sk, ldb);
  load_rows(y, d, Dv, b, h, t0, len, sY, ldv);
  __syncthreads();
  // (2) Qi (rows of sub-chunks 1..3), Kp, and the row operand: q exp(b) or k exp(b_last - b).
  for (int e = threadIdx.x; e < kC * Dk; e += kThreads) {
    const int t = e / Dk, i = e % Dk;
    const float bt = sb[t * ldb + i];
    if (t >= kSub) {
      const float r = sb[((t / kSub) * kSub - 1) * ldb + i];
      sQi[t * ldk + i] = __float2bfloat16_rn(sq[t * ldb + i] * __expf(bt - r));
    }
    const float f = kDv ? __expf(sb[(kC - 1) * ldb + i] - bt) : __expf(bt);
    sRow[t * ldk + i] = __float2bfloat16_rn((kDv ? sk : sq)[t * ldb + i] * f);
  }
  for (int e = threadIdx.x; e < kPairs * kSub * Dk; e += kThreads) {
    const int p = e / (kSub * Dk), u = (e / Dk) % kSub, i = e % Dk;
    int pi, pj;
    pair_of(p, pi, pj);
    const int s = pj * kSub + u;
    const float r = sb[(pi * kSub - 1) * ldb + i];
    sKp[(p * kSub + u) * ldk + i] =
        __float2bfloat16_rn(sk[s * ldb + i] * __expf(r - sb[s * ldb + i]));
  }
  __syncthreads();
  // (3) off-diagonal score blocks on tensor cores, then the diagonal ones.
  if (warp < kPairs) {
    int pi, pj;
    pair_of(warp, pi, pj);
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < Dk / 16; ++kk) {
      FragA fa;
      FragBT fb;
      wmma::load_matrix_sync(fa, sQi + pi * kSub * ldk + kk * 16, ldk);
      wmma::load_matrix_sync(fb, sKp + warp * kSub * ldk + kk * 16, ldk);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(sAf + pi * kSub * kLdF + pj * kSub, acc, kLdF, wmma::mem_row_major);
  }
  diagonal_scores<Dk>(sq, sk, sb, ldb, sAf, warp, lane);
  __syncthreads();
  // (4) A (blocks j <= i; dv takes scale here) to bf16.
  const float a_scale = kDv ? scale : 1.0f;
  for (int e = threadIdx.x; e < kC * kC; e += kThreads) {
    const int t = e / kC, s = e % kC;
    if (s / kSub <= t / kSub) sAb[t * kLdA + s] = __float2bfloat16_rn(a_scale * sAf[t * kLdF + s]);
  }
  __syncthreads();
  // (5) the state (S_c, or dS_(c+1) for dv) over the dead f32 rows, then the products: warp w
  // owns rows [16 rg, +16) and columns [Dv/2 ch, +Dv/2).
  const float* S = states + (int64_t(bh) * (d.NC + 1) + c + (kDv ? 1 : 0)) * d.state_size();
  load_state_bf16(S, Dk, Dv, sS, ldv);
  __syncthreads();
  constexpr int kN = Dv / 32;
  const int rg = warp % 4, ch = warp / 4;
  FragC acc[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) wmma::fill_fragment(acc[n], 0.0f);
#pragma unroll
  for (int kk = 0; kk < Dk / 16; ++kk) {
    FragA fa;
    wmma::load_matrix_sync(fa, sRow + rg * kSub * ldk + kk * 16, ldk);
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      FragB fb;
      wmma::load_matrix_sync(fb, sS + kk * 16 * ldv + ch * (Dv / 2) + n * 16, ldv);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
  if constexpr (!kDv) {
    for (int j = 0; j <= rg; ++j) {  // A v over the key blocks the mask keeps
      FragA fa;
      wmma::load_matrix_sync(fa, sAb + rg * kSub * kLdA + j * kSub, kLdA);
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        FragB fb;
        wmma::load_matrix_sync(fb, sY + j * kSub * ldv + ch * (Dv / 2) + n * 16, ldv);
        wmma::mma_sync(acc[n], fa, fb, acc[n]);
      }
    }
  } else {
    for (int i = rg; i < 4; ++i) {  // A^T dO over the query blocks at or after rg
      FragAT fa;
      wmma::load_matrix_sync(fa, sAb + i * kSub * kLdA + rg * kSub, kLdA);
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        FragB fb;
        wmma::load_matrix_sync(fb, sY + i * kSub * ldv + ch * (Dv / 2) + n * 16, ldv);
        wmma::mma_sync(acc[n], fa, fb, acc[n]);
      }
    }
  }
  float* st = reinterpret_cast<float*>(smem + L::stage) + warp * kSub * L::ldst;
#pragma unroll
  for (int n = 0; n < kN; ++n)
    wmma::store_matrix_sync(st + n * 16, acc[n], L::ldst, wmma::mem_row_major);
  __syncwarp();
  const float mult = kDv ? 1.0f : scale;
  for (int e = lane; e < kSub * (Dv / 2); e += 32) {
    const int r = e / (Dv / 2), col = e % (Dv / 2), t = rg * kSub + r;
    if (t < len)
      out[d.row(b, t0 + t, h) * Dv + ch * (Dv / 2) + col] =
          from_float<T>(mult * st[r * L::ldst + col]);
  }
}

// dq (kDk false) or dk (kDk true) of one chunk, in f32, with P = scale dO v^T:
//   dq_t = scale exp(b_t) (.) (dO_t S_c^T) + sum_(s <= t) P_ts k_s (.) exp(b_t - b_s)
//   dk_s = exp(b_last - b_s) (.) (v_s dS_(c+1)^T) + sum_(t >= s) P_ts q_t (.) exp(b_t - b_s)
// The inter-chunk product ("inter": dO S^T or v dS^T) and the off-diagonal blocks (P Kp or P^T Qp)
// on tensor cores, each tile scaled element-wise into sOut; then the diagonal blocks on CUDA cores
// (one exp per term), added on the way out. x is the raw k (dq) or q (dk) in f32; the staging
// tiles reuse the input that only P needed (v for dq, dO for dk).
template <int Dk, int Dv>
struct GradSmem {
  static constexpr int ldb = Dk + 1, ldk = Dk + kPad, ldv = Dv + kPad, ldo = Dk + 4;
  static constexpr size_t b = 0, x = up(b + sizeof(float) * kC * ldb),
                          yi = up(x + sizeof(float) * kC * ldb),  // dO (dq) or v (dk)
      yo = up(yi + sizeof(bf16) * kC * ldv),                      // the other one
      p = up(yo + sizeof(bf16) * kC * ldv), pb = up(p + sizeof(float) * kC * kLdF),
                          op = up(pb + sizeof(bf16) * kC * kLdA),
                          s = up(op + sizeof(bf16) * kPairs * kSub * ldk),
                          o = up(s + sizeof(bf16) * Dk * ldv),
                          bytes = up(o + sizeof(float) * kC * ldo);
  static_assert(sizeof(float) * kWarps * 256 <= sizeof(bf16) * kC * ldv, "staging overflows");
};

template <typename T, int Dk, int Dv, bool kDk>
__global__ void __launch_bounds__(kThreads)
    chunk_grad_kernel(const T* q, const T* k, const T* v, const T* d_o, const float* g,
                      const float* states, Geo d, float scale, float* dx) {
  using L = GradSmem<Dk, Dv>;
  constexpr int ldb = L::ldb, ldk = L::ldk, ldv = L::ldv, ldo = L::ldo;
  extern __shared__ __align__(128) unsigned char smem[];
  float* sb = reinterpret_cast<float*>(smem + L::b);
  float* sx = reinterpret_cast<float*>(smem + L::x);
  bf16* sYi = reinterpret_cast<bf16*>(smem + L::yi);
  bf16* sYo = reinterpret_cast<bf16*>(smem + L::yo);
  float* sP = reinterpret_cast<float*>(smem + L::p);
  bf16* sPb = reinterpret_cast<bf16*>(smem + L::pb);
  bf16* sOp = reinterpret_cast<bf16*>(smem + L::op);
  bf16* sS = reinterpret_cast<bf16*>(smem + L::s);
  float* sOut = reinterpret_cast<float*>(smem + L::o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int t0 = c * kC, len = min(kC, d.T - t0);
  // (1) b, x, dO and v, the state (S_c for dq, dS_(c+1) for dk).
  load_cum_decay(g, d, b, h, t0, len, sb, ldb);
  load_rows(kDk ? q : k, d, Dk, b, h, t0, len, sx, ldb);
  load_rows(kDk ? v : d_o, d, Dv, b, h, t0, len, sYi, ldv);
  load_rows(kDk ? d_o : v, d, Dv, b, h, t0, len, sYo, ldv);
  load_state_bf16(states + (int64_t(bh) * (d.NC + 1) + c + (kDk ? 1 : 0)) * d.state_size(), Dk, Dv,
                  sS, ldv);
  __syncthreads();
  const bf16* sDo = kDk ? sYo : sYi;
  const bf16* sV = kDk ? sYi : sYo;
  // (2) the pair operands: Kp (dq) or Qp (dk) ...
  for (int e = threadIdx.x; e < kPairs * kSub * Dk; e += kThreads) {
    const int p = e / (kSub * Dk), u = (e / Dk) % kSub, i = e % Dk;
    int pi, pj;
    pair_of(p, pi, pj);
    float val;
    if (kDk) {  // q_t exp(b_t - R_(j+1)), t in sub-chunk pi
      const int t = pi * kSub + u;
      val = sx[t * ldb + i] * __expf(sb[t * ldb + i] - sb[((pj + 1) * kSub - 1) * ldb + i]);
    } else {  // k_s exp(R_i - b_s), s in sub-chunk pj
      const int s = pj * kSub + u;
      val = sx[s * ldb + i] * __expf(sb[(pi * kSub - 1) * ldb + i] - sb[s * ldb + i]);
    }
    sOp[(p * kSub + u) * ldk + i] = __float2bfloat16_rn(val);
  }
  // ... and P = scale dO v^T over the 10 blocks j <= i (f32; the off-diagonal ones also bf16).
  for (int blk = warp; blk < 10; blk += kWarps) {
    const int pi = blk < 1 ? 0 : (blk < 3 ? 1 : (blk < 6 ? 2 : 3)), pj = blk - pi * (pi + 1) / 2;
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < Dv / 16; ++kk) {
      FragA fa;
      FragBT fb;  // v^T: a column-major view of v's rows
      wmma::load_matrix_sync(fa, sDo + pi * kSub * ldv + kk * 16, ldv);
      wmma::load_matrix_sync(fb, sV + pj * kSub * ldv + kk * 16, ldv);
      wmma::mma_sync(acc, fa, fb, acc);
    }
#pragma unroll
    for (int e = 0; e < acc.num_elements; ++e) acc.x[e] *= scale;
    float* tile = sP + pi * kSub * kLdF + pj * kSub;
    wmma::store_matrix_sync(tile, acc, kLdF, wmma::mem_row_major);
    __syncwarp();
    if (pj < pi) {
      for (int e = lane; e < 256; e += 32)
        sPb[(pi * kSub + e / 16) * kLdA + pj * kSub + e % 16] =
            __float2bfloat16_rn(tile[(e / 16) * kLdF + e % 16]);
    }
  }
  __syncthreads();
  // (3) warp w: rows of sub-chunk blk = w % 4, columns [Dk/2 ch, +Dk/2) of dx.
  constexpr int kN = Dk / 32;
  const int blk = warp % 4, ch = warp / 4;
  float* st = reinterpret_cast<float*>(smem + L::yo) + warp * 256;  // v (dq) / dO (dk): dead
  const bf16* sIn = kDk ? sV : sDo;
  for (int n = 0; n < kN; ++n) {
    const int c0 = ch * (Dk / 2) + n * 16;
    FragC inter, intra;
    wmma::fill_fragment(inter, 0.0f);
    wmma::fill_fragment(intra, 0.0f);
#pragma unroll
    for (int kk = 0; kk < Dv / 16; ++kk) {
      FragA fa;
      FragBT fb;  // S^T (dS^T): a column-major view of the state's rows
      wmma::load_matrix_sync(fa, sIn + blk * kSub * ldv + kk * 16, ldv);
      wmma::load_matrix_sync(fb, sS + c0 * ldv + kk * 16, ldv);
      wmma::mma_sync(inter, fa, fb, inter);
    }
    if constexpr (!kDk) {
      for (int j = 0; j < blk; ++j) {
        FragA fa;
        FragB fb;
        wmma::load_matrix_sync(fa, sPb + blk * kSub * kLdA + j * kSub, kLdA);
        wmma::load_matrix_sync(fb, sOp + pair_index(blk, j) * kSub * ldk + c0, ldk);
        wmma::mma_sync(intra, fa, fb, intra);
      }
    } else {
      for (int i = blk + 1; i < 4; ++i) {
        FragAT fa;  // P^T: a column-major view of P's rows
        FragB fb;
        wmma::load_matrix_sync(fa, sPb + i * kSub * kLdA + blk * kSub, kLdA);
        wmma::load_matrix_sync(fb, sOp + pair_index(i, blk) * kSub * ldk + c0, ldk);
        wmma::mma_sync(intra, fa, fb, intra);
      }
    }
    wmma::store_matrix_sync(sOut + blk * kSub * ldo + c0, inter, ldo, wmma::mem_row_major);
    wmma::store_matrix_sync(st, intra, 16, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 256; e += 32) {
      const int r = e / 16, col = c0 + e % 16, t = blk * kSub + r;
      const float bt = sb[t * ldb + col];
      float f_inter, f_intra = 0.0f;
      if (kDk) {
        f_inter = __expf(sb[(kC - 1) * ldb + col] - bt);
        if (blk < 3) f_intra = __expf(sb[(blk * kSub + kSub - 1) * ldb + col] - bt);
      } else {
        f_inter = scale * __expf(bt);
        if (blk > 0) f_intra = __expf(bt - sb[(blk * kSub - 1) * ldb + col]);
      }
      float* o = sOut + t * ldo + col;
      *o = f_inter * *o + f_intra * st[e];
    }
    __syncwarp();
  }
  __syncthreads();
  // (4) the diagonal blocks, then out (f32): thread (t, i), lanes along i.
  for (int e = threadIdx.x; e < kC * Dk; e += kThreads) {
    const int t = e / Dk, i = e % Dk, base = (t / kSub) * kSub;
    const float bt = sb[t * ldb + i];
    float acc = sOut[t * ldo + i];
    if (kDk) {  // t is the key row s here; the query rows u >= s of its sub-chunk
      for (int u = t; u < base + kSub; ++u)
        acc += sP[u * kLdF + t] * sx[u * ldb + i] * __expf(sb[u * ldb + i] - bt);
    } else {
      for (int s = base; s <= t; ++s)
        acc += sP[t * kLdF + s] * sx[s * ldb + i] * __expf(bt - sb[s * ldb + i]);
    }
    if (t < len) dx[d.row(b, t0 + t, h) * Dk + i] = acc;
  }
}

// dgk_r = rowsum(dS_(c+1) (.) S_(c+1)) + sum_(t >= r) (q_t (.) dq_t - k_t (.) dk_t) per chunk
// (when dgk is not null), and dq, dk rounded into the outputs' dtype (when `copy`).
template <typename T>
__global__ void gate_grad_kernel(const T* q, const T* k, const float* dq32, const float* dk32,
                                 const float* S, const float* dS, Geo d, float* dgk, bool copy,
                                 T* dq, T* dk) {
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int t0 = c * kC, L = min(kC, d.T - t0);
  for (int i = threadIdx.x; i < d.Dk; i += blockDim.x) {
    float acc = 0.0f;
    if (dgk) {
      const int64_t off = ((int64_t(bh) * (d.NC + 1) + c + 1) * d.Dk + i) * d.Dv;
      for (int j = 0; j < d.Dv; ++j) acc += S[off + j] * dS[off + j];
    }
    for (int t = L - 1; t >= 0; --t) {
      const int64_t idx = d.row(b, t0 + t, h) * d.Dk + i;
      const float dqv = dq32[idx], dkv = dk32[idx];
      if (dgk) {
        acc += to_float(q[idx]) * dqv - to_float(k[idx]) * dkv;
        dgk[idx] = acc;
      }
      if (copy) {
        dq[idx] = from_float<T>(dqv);
        dk[idx] = from_float<T>(dkv);
      }
    }
  }
}

Geo geometry(const Tensor& q, const Tensor& v) {
  Geo d;
  d.B = int(q.dim(0)), d.T = int(q.dim(1)), d.H = int(q.dim(2)), d.Dk = int(q.dim(3));
  d.Dv = int(v.dim(3)), d.NC = (d.T + kC - 1) / kC;
  LINEA_CHECK((d.Dk == 64 || d.Dk == 128) && (d.Dv == 64 || d.Dv == 128))
      << "gated linear attention with a vector gate (CUDA): Dk = " << d.Dk << ", Dv = " << d.Dv
      << "; the vector-decay scan takes Dk and Dv in {64, 128}";
  return d;
}

// f(integral_constant<Dk>, integral_constant<Dv>) for the geometry's sizes (checked above).
template <typename F>
void with_sizes(const Geo& d, F&& f) {
  using D64 = std::integral_constant<int, 64>;
  using D128 = std::integral_constant<int, 128>;
  auto on_dv = [&](auto dk) {
    if (d.Dv == 64)
      f(dk, D64{});
    else
      f(dk, D128{});
  };
  if (d.Dk == 64)
    on_dv(D64{});
  else
    on_dv(D128{});
}

template <typename K>
void allow_smem(K kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(bytes)));
}

Tensor workspace(const Geo& d, int64_t per_chunk, int64_t slots, Device dev) {
  return Tensor::empty({int64_t(d.B) * d.H * slots * per_chunk}, DType::kF32, dev);
}

// One chunk-state pass (step 1) into `states`.
template <typename T, int Dk, int Dv>
void chunk_states(const T* x, const T* y, const Tensor& gk, const Geo& d, float alpha, bool to_end,
                  int slot, Tensor& states, float* G, const OnDevice& dev) {
  constexpr size_t bytes = StateSmem<Dk, Dv>::bytes;
  allow_smem(chunk_state_kernel<T, Dk, Dv>, bytes);
  chunk_state_kernel<T, Dk, Dv><<<dim3(d.NC, d.B * d.H), kThreads, bytes, dev.stream>>>(
      x, y, gk.data<float>(), d, alpha, to_end, slot, states.data<float>(), G);
  CUDA_CHECK_LAUNCH();
}

void scan_states(Tensor& states, const Tensor& G, const Geo& d, const Tensor& init, bool reverse,
                 float* last, const OnDevice& dev) {
  const int64_t n = int64_t(d.B) * d.H * d.state_size();
  state_scan_kernel<<<grid_for(n, kThreads, dev.index), kThreads, 0, dev.stream>>>(
      states.data<float>(), G.data<float>(), d, init.defined() ? init.data<float>() : nullptr,
      reverse, last);
  CUDA_CHECK_LAUNCH();
}

template <typename T, int Dk, int Dv, bool kDv>
void chunk_outputs(const T* q, const T* k, const T* y, const Tensor& gk, const Tensor& states,
                   const Geo& d, float scale, T* out, const OnDevice& dev) {
  constexpr size_t bytes = OutSmem<Dk, Dv>::bytes;
  allow_smem(chunk_output_kernel<T, Dk, Dv, kDv>, bytes);
  chunk_output_kernel<T, Dk, Dv, kDv><<<dim3(d.NC, d.B * d.H), kThreads, bytes, dev.stream>>>(
      q, k, y, gk.data<float>(), states.data<float>(), d, scale, out);
  CUDA_CHECK_LAUNCH();
}

template <typename T, int Dk, int Dv, bool kDk>
void chunk_grads(const T* q, const T* k, const T* v, const T* d_o, const Tensor& gk,
                 const Tensor& states, const Geo& d, float scale, Tensor& dx, const OnDevice& dev) {
  constexpr size_t bytes = GradSmem<Dk, Dv>::bytes;
  allow_smem(chunk_grad_kernel<T, Dk, Dv, kDk>, bytes);
  chunk_grad_kernel<T, Dk, Dv, kDk><<<dim3(d.NC, d.B * d.H), kThreads, bytes, dev.stream>>>(
      q, k, v, d_o, gk.data<float>(), states.data<float>(), d, scale, dx.data<float>());
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void vector_decay_scan_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gk,
                               float scale, const Tensor& initial_state, Tensor& o,
                               Tensor& final_state) {
  const Geo d = geometry(q, v);
  OnDevice dev(q);
  Tensor states = workspace(d, d.state_size(), d.NC + 1, q.device());
  Tensor G = workspace(d, d.Dk, d.NC, q.device());
  dispatch(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    with_sizes(d, [&](auto dk, auto dv) {
      constexpr int Dk = decltype(dk)::value, Dv = decltype(dv)::value;
      chunk_states<T, Dk, Dv>(ptr<T>(k), ptr<T>(v), gk, d, 1.0f, true, 1, states, G.data<float>(),
                              dev);
      scan_states(states, G, d, initial_state, false,
                  final_state.defined() ? final_state.data<float>() : nullptr, dev);
      if (!o.defined()) return;  // only the final state
      chunk_outputs<T, Dk, Dv, false>(ptr<T>(q), ptr<T>(k), ptr<T>(v), gk, states, d, scale,
                                      ptr<T>(o), dev);
    });
  });
}

void vector_decay_scan_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gk,
                                float scale, const Tensor& initial_state, const Tensor& d_o,
                                const Tensor& d_final_state, Tensor& dq, Tensor& dk, Tensor& dv,
                                Tensor& dgk, Tensor& d_initial_state) {
  const Geo d = geometry(q, v);
  OnDevice dev(q);
  const Device device = q.device();
  Tensor states = workspace(d, d.state_size(), d.NC + 1, device);
  Tensor dstates = workspace(d, d.state_size(), d.NC + 1, device);
  Tensor G = workspace(d, d.Dk, d.NC, device);
  dispatch(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    with_sizes(d, [&](auto dk_size, auto dv_size) {
      constexpr int Dk = decltype(dk_size)::value, Dv = decltype(dv_size)::value;
      // S_0 .. S_NC, then dS: W_c = scale sum_t (q_t (.) exp(b_t))^T dO_t per chunk, reversed.
      chunk_states<T, Dk, Dv>(ptr<T>(k), ptr<T>(v), gk, d, 1.0f, true, 1, states, G.data<float>(),
                              dev);
      scan_states(states, G, d, initial_state, false, nullptr, dev);
      chunk_states<T, Dk, Dv>(ptr<T>(q), ptr<T>(d_o), gk, d, scale, false, 0, dstates, nullptr,
                              dev);
      scan_states(dstates, G, d, d_final_state, true,
                  d_initial_state.defined() ? d_initial_state.data<float>() : nullptr, dev);
      // dq, dk in f32 (dgk reads them), in the outputs themselves when those are f32.
      const bool f32 = std::is_same_v<T, float>;
      Tensor dq32 = f32 ? dq : Tensor::empty(dq.shape(), DType::kF32, device);
      Tensor dk32 = f32 ? dk : Tensor::empty(dk.shape(), DType::kF32, device);
      chunk_grads<T, Dk, Dv, false>(ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(d_o), gk, states, d,
                                    scale, dq32, dev);
      chunk_grads<T, Dk, Dv, true>(ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(d_o), gk, dstates, d,
                                   scale, dk32, dev);
      chunk_outputs<T, Dk, Dv, true>(ptr<T>(q), ptr<T>(k), ptr<T>(d_o), gk, dstates, d, scale,
                                     ptr<T>(dv), dev);
      if (dgk.defined() || !f32) {
        gate_grad_kernel<T><<<dim3(d.NC, d.B * d.H), Dk, 0, dev.stream>>>(
            ptr<T>(q), ptr<T>(k), dq32.data<float>(), dk32.data<float>(), states.data<float>(),
            dstates.data<float>(), d, dgk.defined() ? dgk.data<float>() : nullptr, !f32, ptr<T>(dq),
            ptr<T>(dk));
        CUDA_CHECK_LAUNCH();
      }
    });
  });
}

}  // namespace linea::kernels::cuda
