// The chunked causal scan (contract in kernels/cuda/chunk_scan.h).
//
// One thread block of 8 warps per (batch, head, 64-wide slice of Dv, segment); it walks the chunks
// of its segment in order (or in reverse). Warps w and w + 4 own rows [16 w, 16 w + 16) of the
// chunk: they split that row group's score tiles by parity and its output columns by half. Each
// warp also owns 1/8 of the state tiles, whose f32 accumulator fragments stay in registers for the
// whole segment. Per chunk:
//   1. wait for q, k, v of this chunk (cp.async, issued one chunk ahead into a second buffer;
//      rows past T zero-filled) and start the next chunk's copies;
//   2. scores A = mask(q k^T) for the warp's rows (only the tiles the mask keeps), to bf16;
//   3. out = out_scale' * (q S_bf16 + A v), staged through shared memory to global;
//   4. S += k^T v in registers, then S_bf16 refreshed for the next chunk.
// With a decay, b_i = the cumulative log decay inside the chunk (in scan order, inclusive) and
// b_last its total: the scores take exp(b_t - b_s), the q S term exp(b_t), the state update is
// S = exp(b_last) S + k^T (exp(b_last - b_s) v); every exponent is <= 0 for decays <= 0.
// v_scale is folded out: the kernel carries S~ = S / v_scale (the initial state is divided on
// load, the final state multiplied on store) and out_scale' = out_scale * v_scale, so v enters
// the tensor cores unscaled.
//
// With several segments, a state pass (the same kernel, kStateOnly: no q, no outputs) writes each
// segment's sum of k^T v into the workspace, prefix_kernel turns those into every segment's
// incoming state (S0 / v_scale + the segments before it, in scan order), and the full pass reads
// its incoming state from there. The final state comes from the segment scanned last.
#include <mma.h>

#include <algorithm>
#include <string>

#include "kernels/cuda/chunk_scan.h"
#include "kernels/cuda/common.cuh"  // to_float

namespace linea::kernels::cuda {
namespace {

using namespace nvcuda;

constexpr int kC = 64;     // chunk length
constexpr int kDvT = 64;   // Dv slice per block
constexpr int kWarps = 8;  // two per 16 rows of a chunk (one per half of the Dv slice)
constexpr int kPad = 8;    // bf16 row padding (16 bytes) against bank conflicts
constexpr int kFPad = 4;   // f32 row padding
constexpr int kLdV = kDvT + kPad;
constexpr int kLdA = kC + kPad;
constexpr int kLdF = kDvT + kFPad;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

enum Mode { kFull, kStateOnly };

template <int Dqk>
struct Smem {
  static constexpr int kLdQ = Dqk + kPad;
  // One stage of the double buffer: q, k [C, Dqk] and v [C, 64].
  static constexpr size_t q = 0;
  static constexpr size_t k = q + sizeof(bf16) * kC * kLdQ;
  static constexpr size_t v = k + sizeof(bf16) * kC * kLdQ;
  static constexpr size_t stage = v + sizeof(bf16) * kC * kLdV;
  static constexpr size_t a = 2 * stage;
  static constexpr size_t s = a + sizeof(bf16) * kC * kLdA;
  static constexpr size_t f = s + sizeof(bf16) * Dqk * kLdV;
  static constexpr size_t vd = f + sizeof(float) * kWarps * 16 * kLdF;  // decayed v [C, 64]
  static constexpr size_t g = vd + sizeof(bf16) * kC * kLdV;  // h and its cumulative sum [2, C]
  static constexpr size_t bytes = g + sizeof(float) * 2 * kC;
};

// 16 bytes global -> shared without registers; src_bytes = 0 zero-fills.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all_but_one() {
  asm volatile("cp.async.wait_group 1;\n" ::);
}

// Starts copying kC rows x Width bf16 (row stride `stride` elements) into shared (ld); rows >=
// valid become zeros.
template <int Width>
__device__ __forceinline__ void start_rows(bf16* dst, int ld, const bf16* src, int64_t stride,
                                           int valid) {
  constexpr int kVecPerRow = Width / 8;
#pragma unroll
  for (int i = threadIdx.x; i < kC * kVecPerRow; i += kWarps * 32) {
    const int r = i / kVecPerRow, c = (i % kVecPerRow) * 8;
    const bool ok = r < valid;
    cp_async16(dst + r * ld + c, ok ? src + r * stride + c : src, ok);
  }
}

// Four floats rounded to bf16 and stored with one 8-byte access (dst 8-byte aligned).
__device__ __forceinline__ void store4_bf16(bf16* dst, float4 x) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(x.x, x.y), hi = __floats2bfloat162_rn(x.z, x.w);
  uint2 packed;
  packed.x = *reinterpret_cast<uint32_t*>(&lo);
  packed.y = *reinterpret_cast<uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(dst) = packed;
}

// 16 x Width f32 (ld kLdF) -> bf16 (ld) by one warp, 4 elements per lane and step, each times
// factor(r, c) (0 drops it).
template <int Width, typename Factor>
__device__ __forceinline__ void rows_to_bf16(const float* src, bf16* dst, int ld, int lane,
                                             Factor factor) {
#pragma unroll
  for (int e = lane; e < 16 * Width / 4; e += 32) {
    const int r = e / (Width / 4), c = (e % (Width / 4)) * 4;
    float4 x = *reinterpret_cast<const float4*>(src + r * kLdF + c);
    x.x *= factor(r, c + 0);
    x.y *= factor(r, c + 1);
    x.z *= factor(r, c + 2);
    x.w *= factor(r, c + 3);
    store4_bf16(dst + r * ld + c, x);
  }
}

template <int Dqk, bool OutF32, Mode M>
__global__ void __launch_bounds__(kWarps * 32) chunk_scan_kernel(ChunkScanArgs a, int seg_chunks) {
  using L = Smem<Dqk>;
  constexpr int kLdQ = L::kLdQ;
  constexpr int kKq = Dqk / 16;               // k-steps over Dqk
  constexpr int kST = Dqk / 16 * 4 / kWarps;  // state tiles per warp (of Dqk/16 x 4)
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sA = reinterpret_cast<bf16*>(smem + L::a);
  bf16* sS = reinterpret_cast<bf16*>(smem + L::s);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rg = warp % 4, half = warp / 4;  // rows [16 rg, +16); output columns [32 half, +32)
  float* sF = reinterpret_cast<float*>(smem + L::f) + warp * 16 * kLdF;
  bf16* sVd = reinterpret_cast<bf16*>(smem + L::vd);
  float* sH = reinterpret_cast<float*>(smem + L::g);  // h of each position of the chunk
  float* sG = sH + kC;                                // its cumulative sum in scan order
  const bool decay = a.g != nullptr;
  float seg_decay = 0.0f;  // the state pass: the segment's total log decay
  auto stage_q = [&](int st) { return reinterpret_cast<bf16*>(smem + st * L::stage + L::q); };
  auto stage_k = [&](int st) { return reinterpret_cast<bf16*>(smem + st * L::stage + L::k); };
  auto stage_v = [&](int st) { return reinterpret_cast<bf16*>(smem + st * L::stage + L::v); };

  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H, seg = blockIdx.z, nseg = gridDim.z;
  const int dv0 = blockIdx.x * kDvT;
  const int64_t qk_stride = int64_t(a.H) * Dqk, v_stride = int64_t(a.H) * a.Dv;
  const bf16* q = a.q ? a.q + int64_t(b) * a.T * qk_stride + int64_t(h) * Dqk : nullptr;
  const bf16* k = a.k + int64_t(b) * a.T * qk_stride + int64_t(h) * Dqk;
  const bf16* v = a.v + int64_t(b) * a.T * v_stride + int64_t(h) * a.Dv + dv0;
  const int64_t out_off = int64_t(b) * a.T * v_stride + int64_t(h) * a.Dv + dv0;
  const int64_t state_off = int64_t(bh) * Dqk * a.Dv;
  const int64_t seg_off = (int64_t(bh) * nseg + seg) * Dqk * a.Dv;  // workspace [B H][seg]
  const float inv_vs = 1.0f / a.v_scale, out_scale = a.out_scale * a.v_scale;

  // The state S~ = S / v_scale: warp w holds tiles w kST .. w kST + kST - 1 of the Dqk/16 x 4
  // tile grid (row-major), i.e. one tile row, or half of one for Dqk = 64.
  const int s_row = warp * kST / 4, s_col0 = warp * kST % 4;
  FragC S[kST];
#pragma unroll
  for (int i = 0; i < kST; ++i) {
    const int r0 = s_row * 16, c0 = dv0 + (s_col0 + i) * 16;
    if (M == kStateOnly) {
      wmma::fill_fragment(S[i], 0.0f);
    } else if (nseg > 1) {  // from the prefix over segments, already in S~ units
      wmma::load_matrix_sync(S[i], a.workspace + seg_off + int64_t(r0) * a.Dv + c0, a.Dv,
                             wmma::mem_row_major);
    } else if (!a.initial_state) {
      wmma::fill_fragment(S[i], 0.0f);
    } else {
      if (a.initial_transposed)
        wmma::load_matrix_sync(S[i], a.initial_state + state_off + int64_t(c0) * Dqk + r0, Dqk,
                               wmma::mem_col_major);
      else
        wmma::load_matrix_sync(S[i], a.initial_state + state_off + int64_t(r0) * a.Dv + c0, a.Dv,
                               wmma::mem_row_major);
#pragma unroll
      for (int e = 0; e < S[i].num_elements; ++e) S[i].x[e] *= inv_vs;
    }
  }
  // S~ in bf16 for the q S products, staged through the warp's f32 buffer.
  auto publish_state = [&]() {
#pragma unroll
    for (int i = 0; i < kST; ++i)
      wmma::store_matrix_sync(sF + i * 16, S[i], kLdF, wmma::mem_row_major);
    __syncwarp();
    rows_to_bf16<kST * 16>(sF, sS + s_row * 16 * kLdV + s_col0 * 16, kLdV, lane,
                           [](int, int) { return 1.0f; });
    __syncwarp();
  };
  if (M == kFull) publish_state();

  const int chunks = (a.T + kC - 1) / kC;
  const int c_begin = seg * seg_chunks, c_end = min(chunks, c_begin + seg_chunks);
  const int n_steps = max(0, c_end - c_begin);
  auto chunk_of = [&](int step) { return a.reverse ? c_end - 1 - step : c_begin + step; };
  auto start_chunk = [&](int step, int st) {
    if (step < n_steps) {
      const int t0 = chunk_of(step) * kC, valid = min(kC, a.T - t0);
      if (M == kFull) start_rows<Dqk>(stage_q(st), kLdQ, q + t0 * qk_stride, qk_stride, valid);
      start_rows<Dqk>(stage_k(st), kLdQ, k + t0 * qk_stride, qk_stride, valid);
      start_rows<kDvT>(stage_v(st), kLdV, v + t0 * v_stride, v_stride, valid);
    }
    cp_async_commit();  // an empty group past the end keeps the wait count uniform
  };
  start_chunk(0, 0);
  // The key tiles row group rg keeps; this warp computes those of its parity.
  const int j_lo = a.reverse ? rg : 0, j_hi = a.reverse ? 3 : rg;

  for (int step = 0; step < n_steps; ++step) {
    const int st = step & 1;
    const int t0 = chunk_of(step) * kC, valid = min(kC, a.T - t0);
    // The other stage was last read in the previous step: everyone must be done with it.
    __syncthreads();
    start_chunk(step + 1, st ^ 1);
    cp_async_wait_all_but_one();
    __syncthreads();  // this chunk (and S~_bf16 from publish_state) visible to every warp
    const bf16 *sQ = stage_q(st), *sK = stage_k(st), *sV = stage_v(st);

    // Decay: b_i = cumulative h in scan order (inclusive), b_last the chunk's total; v rows
    // times exp(b_last - b_s) for the state update (the scores and q S~ take theirs below).
    float b_last = 0.0f;
    if (decay) {
      if (threadIdx.x < kC) {
        const int i = threadIdx.x, src = t0 + i + (a.g_shift ? 1 : 0);
        sH[i] = (i < valid && src < a.T) ? a.g[(int64_t(b) * a.T + src) * a.H + h] : 0.0f;
      }
      __syncthreads();
      if (threadIdx.x < kC) {
        float acc = 0.0f;
        if (a.reverse) {
          for (int j = threadIdx.x; j < kC; ++j) acc += sH[j];
        } else {
          for (int j = 0; j <= int(threadIdx.x); ++j) acc += sH[j];
        }
        sG[threadIdx.x] = acc;
      }
      __syncthreads();
      b_last = a.reverse ? sG[0] : sG[kC - 1];
      seg_decay += b_last;
      for (int i = threadIdx.x; i < kC * kDvT / 8; i += kWarps * 32) {
        const int r = i / (kDvT / 8), c = (i % (kDvT / 8)) * 8;
        const float f = __expf(b_last - sG[r]);
        uint4 val = *reinterpret_cast<const uint4*>(sV + r * kLdV + c);
        bf16* e = reinterpret_cast<bf16*>(&val);
#pragma unroll
        for (int j = 0; j < 8; ++j) e[j] = __float2bfloat16(__bfloat162float(e[j]) * f);
        *reinterpret_cast<uint4*>(sVd + r * kLdV + c) = val;
      }
      __syncthreads();
    }

    if (M == kFull) {
      // The warp's q rows as A fragments, used for the scores and for q S~.
      FragA fq[kKq];
#pragma unroll
      for (int kk = 0; kk < kKq; ++kk)
        wmma::load_matrix_sync(fq[kk], sQ + rg * 16 * kLdQ + kk * 16, kLdQ);
        // 2. scores: tiles j = half, half + 2 of row group rg, masked, to bf16 in sA
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        const int j = half + 2 * jj;
        const bool in_range = j >= j_lo && j <= j_hi;
        if (in_range) {
          FragC acc;
          wmma::fill_fragment(acc, 0.0f);
#pragma unroll
          for (int kk = 0; kk < kKq; ++kk) {
            FragBT fb;
            wmma::load_matrix_sync(fb, sK + j * 16 * kLdQ + kk * 16, kLdQ);
            wmma::mma_sync(acc, fq[kk], fb, acc);
          }
          wmma::store_matrix_sync(sF + jj * 16, acc, kLdF, wmma::mem_row_major);
        }
        __syncwarp();
        const bool rev = a.reverse;
        rows_to_bf16<16>(sF + jj * 16, sA + rg * 16 * kLdA + j * 16, kLdA, lane, [&](int r, int c) {
          const int t = rg * 16 + r, s = j * 16 + c;
          if (!in_range || (rev ? s < t : s > t)) return 0.0f;
          return decay ? __expf(sG[t] - sG[s]) : 1.0f;
        });
      }
      // 3. out tiles n = 2 half, 2 half + 1 of the warp's rows: q S~ (times exp(b_t) below)
      FragC o[2], oa[2];
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        wmma::fill_fragment(o[n], 0.0f);
        wmma::fill_fragment(oa[n], 0.0f);
      }
#pragma unroll
      for (int kk = 0; kk < kKq; ++kk) {
#pragma unroll
        for (int n = 0; n < 2; ++n) {
          FragB fb;
          wmma::load_matrix_sync(fb, sS + kk * 16 * kLdV + (2 * half + n) * 16, kLdV);
          wmma::mma_sync(o[n], fq[kk], fb, o[n]);
        }
      }
      __syncthreads();  // sA rows of the row group complete (both parities)
      // ... + A v
      for (int j = j_lo; j <= j_hi; ++j) {
        FragA fa;
        wmma::load_matrix_sync(fa, sA + rg * 16 * kLdA + j * 16, kLdA);
#pragma unroll
        for (int n = 0; n < 2; ++n) {
          FragB fb;
          wmma::load_matrix_sync(fb, sV + j * 16 * kLdV + (2 * half + n) * 16, kLdV);
          wmma::mma_sync(oa[n], fa, fb, oa[n]);
        }
      }
      // q S~ in columns [0, 32) of the staging buffer, A v in [32, 64)
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        wmma::store_matrix_sync(sF + n * 16, o[n], kLdF, wmma::mem_row_major);
        wmma::store_matrix_sync(sF + 32 + n * 16, oa[n], kLdF, wmma::mem_row_major);
      }
      __syncwarp();
#pragma unroll
      for (int e = lane; e < 16 * 32 / 4; e += 32) {
        const int r = e / 8, c = (e % 8) * 4, t = rg * 16 + r;
        if (t >= valid) continue;
        const float f = decay ? __expf(sG[t]) : 1.0f;
        const float4 qs = *reinterpret_cast<const float4*>(sF + r * kLdF + c);
        const float4 av = *reinterpret_cast<const float4*>(sF + r * kLdF + 32 + c);
        const float4 x = make_float4(out_scale * (f * qs.x + av.x), out_scale * (f * qs.y + av.y),
                                     out_scale * (f * qs.z + av.z), out_scale * (f * qs.w + av.w));
        const int64_t off = out_off + int64_t(t0 + t) * v_stride + 32 * half + c;
        if constexpr (OutF32) {
          *reinterpret_cast<float4*>(static_cast<float*>(a.out) + off) = x;
        } else {
          store4_bf16(static_cast<bf16*>(a.out) + off, x);
        }
      }
    }

    // 4. S~ = exp(b_last) S~ + k^T v~ (k^T read as a column-major view of sK; v~ the decayed v)
    const bf16* sVs = decay ? sVd : sV;
    if (decay) {
      const float f = __expf(b_last);
#pragma unroll
      for (int i = 0; i < kST; ++i) {
#pragma unroll
        for (int e = 0; e < S[i].num_elements; ++e) S[i].x[e] *= f;
      }
    }
#pragma unroll
    for (int kk = 0; kk < kC / 16; ++kk) {
      FragAT fa;
      wmma::load_matrix_sync(fa, sK + kk * 16 * kLdQ + s_row * 16, kLdQ);
#pragma unroll
      for (int i = 0; i < kST; ++i) {
        FragB fb;
        wmma::load_matrix_sync(fb, sVs + kk * 16 * kLdV + (s_col0 + i) * 16, kLdV);
        wmma::mma_sync(S[i], fa, fb, S[i]);
      }
    }
    if (M == kFull) {
      __syncthreads();  // every warp is done reading the old S~_bf16
      publish_state();
    }
  }

  // The state pass leaves each segment's sum of k^T v in the workspace; the full pass writes
  // the final state from the segment scanned last.
  const bool last = a.reverse ? seg == 0 : seg == nseg - 1;
  if (M == kStateOnly && decay && blockIdx.x == 0 && threadIdx.x == 0)
    a.workspace[int64_t(a.B) * a.H * nseg * Dqk * a.Dv + int64_t(bh) * nseg + seg] = seg_decay;
  if constexpr (M == kStateOnly) {
#pragma unroll
    for (int i = 0; i < kST; ++i) {
      const int r0 = s_row * 16, c0 = dv0 + (s_col0 + i) * 16;
      wmma::store_matrix_sync(a.workspace + seg_off + int64_t(r0) * a.Dv + c0, S[i], a.Dv,
                              wmma::mem_row_major);
    }
  } else if (a.final_state && last) {
    // dS_in of a backward: one more decay, exp(g_0), past the first token.
    const float factor =
        a.final_decay ? a.v_scale * __expf(a.g[int64_t(b) * a.T * a.H + h]) : a.v_scale;
#pragma unroll
    for (int i = 0; i < kST; ++i) {
      const int r0 = s_row * 16, c0 = dv0 + (s_col0 + i) * 16;
#pragma unroll
      for (int e = 0; e < S[i].num_elements; ++e) S[i].x[e] = S[i].x[e] * factor;
      if (a.final_transposed)
        wmma::store_matrix_sync(a.final_state + state_off + int64_t(c0) * Dqk + r0, S[i], Dqk,
                                wmma::mem_col_major);
      else
        wmma::store_matrix_sync(a.final_state + state_off + int64_t(r0) * a.Dv + c0, S[i], a.Dv,
                                wmma::mem_row_major);
    }
  }
}

// Workspace [B H][seg][Dqk][Dv] (then, with a decay, [B H][seg] total log decays): each segment's
// sum of decayed k^T v becomes its incoming state S~: the initial state / v_scale, carried through
// the segments scanned before it (times exp(their total decay)) plus their sums.
__global__ void prefix_kernel(ChunkScanArgs a, int nseg) {
  const int64_t per_head = int64_t(a.Dqk) * a.Dv;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(a.B) * a.H * per_head) return;
  const int64_t bh = i / per_head, e = i % per_head;
  float acc = 0.0f;
  if (a.initial_state) {
    const int64_t r = e / a.Dv, c = e % a.Dv;
    const float s0 = a.initial_transposed ? a.initial_state[bh * per_head + c * a.Dqk + r]
                                          : a.initial_state[bh * per_head + e];
    acc = s0 / a.v_scale;
  }
  float* w = a.workspace + bh * nseg * per_head + e;
  const float* seg_decay = a.workspace + int64_t(a.B) * a.H * nseg * per_head + bh * nseg;
  for (int j = 0; j < nseg; ++j) {
    const int seg = a.reverse ? nseg - 1 - j : j;
    const float sum = w[seg * per_head];
    w[seg * per_head] = acc;
    acc = (a.g ? __expf(seg_decay[seg]) * acc : acc) + sum;
  }
  if (!a.out && a.final_state) {  // the state-only form: the composition is the final state
    const int64_t r = e / a.Dv, c = e % a.Dv;
    const int b = static_cast<int>(bh / a.H), h = static_cast<int>(bh % a.H);
    const float f = a.final_decay ? __expf(a.g[int64_t(b) * a.T * a.H + h]) : 1.0f;
    a.final_state[bh * per_head + (a.final_transposed ? c * a.Dqk + r : e)] = acc * a.v_scale * f;
  }
}

template <int Dqk, bool OutF32, Mode M>
void launch(const ChunkScanArgs& a, int nseg, int seg_chunks, cudaStream_t stream) {
  constexpr size_t bytes = Smem<Dqk>::bytes;
  static bool configured = false;  // one attribute call per instantiation
  if (!configured) {
    const cudaError_t e = cudaFuncSetAttribute(
        chunk_scan_kernel<Dqk, OutF32, M>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
    LINEA_CHECK(e == cudaSuccess) << "chunk_scan: cudaFuncSetAttribute: " << cudaGetErrorString(e);
    configured = true;
  }
  const dim3 grid(a.Dv / kDvT, a.B * a.H, nseg);
  chunk_scan_kernel<Dqk, OutF32, M><<<grid, kWarps * 32, bytes, stream>>>(a, seg_chunks);
  const cudaError_t e = cudaGetLastError();
  LINEA_CHECK(e == cudaSuccess) << "chunk_scan: launch failed: " << cudaGetErrorString(e);
}

template <int Dqk, bool OutF32>
void run(const ChunkScanArgs& a, int nseg, int seg_chunks, cudaStream_t stream) {
  if (nseg > 1 || !a.out) {
    launch<Dqk, OutF32, kStateOnly>(a, nseg, seg_chunks, stream);
    const int64_t n = int64_t(a.B) * a.H * a.Dqk * a.Dv;
    prefix_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(a, nseg);
    const cudaError_t e = cudaGetLastError();
    LINEA_CHECK(e == cudaSuccess) << "chunk_scan: prefix launch failed: " << cudaGetErrorString(e);
  }
  if (a.out) launch<Dqk, OutF32, kFull>(a, nseg, seg_chunks, stream);
}

int sm_count() {
  static int n = [] {
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      return 132;
    return sms;
  }();
  return n;
}

}  // namespace

int chunk_scan_segments(const ChunkScanArgs& a) {
  const int chunks = (a.T + kC - 1) / kC;
  if (chunks <= 1) return 1;
  int nseg = a.segments;
  if (nseg <= 0) {
    // About two blocks per multiprocessor (one fits at a time: 130 KB of shared memory), and
    // segments of at least 4 chunks so that the state pass stays cheap.
    const int64_t blocks = int64_t(a.Dv / kDvT) * a.B * a.H;
    const int64_t want = (2 * int64_t(sm_count()) + blocks - 1) / blocks;
    nseg = static_cast<int>(std::min<int64_t>(want, std::max(1, chunks / 4)));
  }
  nseg = std::min(nseg, chunks);
  const int seg_chunks = (chunks + nseg - 1) / nseg;
  return (chunks + seg_chunks - 1) / seg_chunks;  // no empty segment
}

size_t chunk_scan_workspace_bytes(const ChunkScanArgs& a) {
  const int nseg = chunk_scan_segments(a);
  // The segments' states, then (with a decay) their total log decays; the state-only form
  // (out null) always goes through them.
  return nseg > 1 || !a.out ? sizeof(float) * size_t(a.B) * a.H * nseg * (size_t(a.Dqk) * a.Dv + 1)
                            : 0;
}

void chunk_scan(const ChunkScanArgs& a, cudaStream_t stream) {
  LINEA_CHECK(a.k && a.v && (a.out ? a.q != nullptr : a.final_state != nullptr))
      << "chunk_scan: k, v and either q and out, or (state only) final_state must be set";
  LINEA_CHECK(a.Dqk == 64 || a.Dqk == 128)
      << "chunk_scan: Dqk = " << a.Dqk << " is not supported on CUDA (64 or 128)";
  LINEA_CHECK(a.Dv > 0 && a.Dv % kDvT == 0)
      << "chunk_scan: Dv = " << a.Dv << " must be a multiple of " << kDvT;
  LINEA_CHECK(a.B > 0 && a.H > 0 && a.T >= 0)
      << "chunk_scan: bad shape B " << a.B << " T " << a.T << " H " << a.H;
  LINEA_CHECK(a.v_scale != 0.0f) << "chunk_scan: v_scale must not be 0";
  LINEA_CHECK(!(a.g_shift || a.final_decay) || a.g)
      << "chunk_scan: g_shift and final_decay need the decay g";
  const int nseg = chunk_scan_segments(a);
  LINEA_CHECK((nseg == 1 && a.out) || a.workspace)
      << "chunk_scan: " << nseg << " segments need a workspace of " << chunk_scan_workspace_bytes(a)
      << " bytes (chunk_scan_workspace_bytes)";
  const int chunks = (a.T + kC - 1) / kC;
  const int seg_chunks = nseg > 1 ? (chunks + nseg - 1) / nseg : std::max(chunks, 1);
  if (a.Dqk == 64)
    a.out_f32 ? run<64, true>(a, nseg, seg_chunks, stream)
              : run<64, false>(a, nseg, seg_chunks, stream);
  else
    a.out_f32 ? run<128, true>(a, nseg, seg_chunks, stream)
              : run<128, false>(a, nseg, seg_chunks, stream);
}

// ---- the decay gradient ---------------------------------------------------------------------

namespace {

// x[b, t, h] = sum_d q dq - k dk: one warp per (b, t, h) row.
template <typename G>
__global__ void decay_grad_rows(const bf16* q, const bf16* k, const G* dq, const G* dk,
                                int64_t rows, int D, float* x) {
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float acc = 0.0f;
  for (int d = lane; d < D; d += 32) {
    const int64_t i = row * D + d;
    acc += __bfloat162float(q[i]) * to_float(dq[i]) - __bfloat162float(k[i]) * to_float(dk[i]);
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) x[row] = acc;
}

// Per (b, h) block: dg_r = <dS_out, S_out> + sum_{t >= r} x_t, in tiles of 256 x 8 from the end.
__global__ void decay_grad_scan(const float* x, const float* s_out, const float* ds_out, int T,
                                int H, int64_t state, float* dg) {
  constexpr int kThreads = 256, kItems = 8;
  __shared__ float partial[kThreads];
  __shared__ float carry;
  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  // The final-state term, reduced over the block.
  float c = 0.0f;
  if (s_out && ds_out)
    for (int64_t i = threadIdx.x; i < state; i += kThreads)
      c += s_out[int64_t(bh) * state + i] * ds_out[int64_t(bh) * state + i];
  partial[threadIdx.x] = c;
  __syncthreads();
  for (int off = kThreads / 2; off > 0; off /= 2) {
    if (int(threadIdx.x) < off) partial[threadIdx.x] += partial[threadIdx.x + off];
    __syncthreads();
  }
  if (threadIdx.x == 0) carry = partial[0];
  __syncthreads();
  auto at = [&](int t) { return (int64_t(b) * T + t) * H + h; };
  for (int end = T; end > 0; end -= kThreads * kItems) {
    // Thread j takes positions end - 1 - (j kItems + i), i < kItems: a reversed tile.
    float v[kItems], sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int t = end - 1 - (int(threadIdx.x) * kItems + i);
      v[i] = t >= 0 ? x[at(t)] : 0.0f;
      sum += v[i];
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    // Exclusive prefix of the thread sums (Hillis-Steele over 256 values).
    for (int off = 1; off < kThreads; off *= 2) {
      const float add = int(threadIdx.x) >= off ? partial[threadIdx.x - off] : 0.0f;
      __syncthreads();
      partial[threadIdx.x] += add;
      __syncthreads();
    }
    float run = carry + partial[threadIdx.x] - sum;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int t = end - 1 - (int(threadIdx.x) * kItems + i);
      run += v[i];
      if (t >= 0) dg[at(t)] = run;
    }
    __syncthreads();
    if (threadIdx.x == kThreads - 1) carry = run;
    __syncthreads();
  }
}

}  // namespace

void chunk_scan_decay_grad(const __nv_bfloat16* q, const __nv_bfloat16* k, const void* dq,
                           const void* dk, bool grads_f32, const float* s_out, const float* ds_out,
                           int B, int T, int H, int D, int Dv, float* dg, cudaStream_t stream) {
  LINEA_CHECK(q && k && dq && dk && dg) << "chunk_scan_decay_grad: q, k, dq, dk and dg must be set";
  const int64_t rows = int64_t(B) * T * H;
  float* x = dg;  // the row sums first, scanned in place below (each block owns its (b, h))
  if (rows > 0) {
    const unsigned blocks = static_cast<unsigned>((rows * 32 + 255) / 256);
    if (grads_f32)
      decay_grad_rows<<<blocks, 256, 0, stream>>>(q, k, static_cast<const float*>(dq),
                                                  static_cast<const float*>(dk), rows, D, x);
    else
      decay_grad_rows<<<blocks, 256, 0, stream>>>(q, k, static_cast<const bf16*>(dq),
                                                  static_cast<const bf16*>(dk), rows, D, x);
    const cudaError_t e = cudaGetLastError();
    LINEA_CHECK(e == cudaSuccess) << "chunk_scan_decay_grad: " << cudaGetErrorString(e);
  }
  decay_grad_scan<<<B * H, 256, 0, stream>>>(x, s_out, ds_out, T, H, int64_t(D) * Dv, dg);
  const cudaError_t e = cudaGetLastError();
  LINEA_CHECK(e == cudaSuccess) << "chunk_scan_decay_grad: " << cudaGetErrorString(e);
}

}  // namespace linea::kernels::cuda
