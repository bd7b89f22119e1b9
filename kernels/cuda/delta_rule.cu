// CUDA delta rule (kernels/delta_rule.h: DeltaNet, Gated DeltaNet): the chunked WY / UT form,
// forward, backward and the dense segment transition. The math and the names (b, gamma, Gamma,
// L, W, U, U~, tail) are the header's; the CPU twin is kernels/cpu/delta_rule.cpp.
//
// Chunks of C = 64 tokens whatever `chunk` says (the chunked form equals the recurrence for any
// chunk); T need not divide: the tokens past T of the last chunk read as k = q = v = dO = 0,
// beta = 0, g = 0, which leave the state as it is (S <- 1 (I - 0) S + 0), and are never written.
// All arithmetic in f32 on CUDA cores (block-level products from shared memory and L1/L2); the
// inverse (I + L)^{-1} of each chunk by forward substitution over its 64 rows.
//
// Work, per (batch, head):
//   factors   one block per chunk, all chunks at once (nothing here depends on the state):
//             K K^T, L, Tinv = (I + L)^{-1}, W = Tinv diag(beta gamma) K, U = Tinv diag(beta) V;
//   state     one block per (64 columns of the state): the only sequential pass, over chunks:
//             stores each chunk's incoming state S_c, U~ = U - W S_c (the forward keeps it in
//             place of U), S <- gamma_last S + (K ⊙ tail)^T U~;
//   output    one block per chunk: O = scale ((gamma ⊙ Q) S_c + (tril(Q K^T) ⊙ Gamma) U~).
// The transition is the state pass with U = 0 started from the identity (A_chunk S = S_next for a
// zero value stream), its "state" [Dk, Dk].
// Backward: factors and the state pass again (S_c, U kept), then
//   local dU  one block per chunk: dU = scale P^T dO (P = tril(Q K^T) ⊙ Gamma), state-free;
//   reverse   one block per (64 columns): from dS_final, chunk by chunk from the last: stores the
//             gradient dS_c reaching the chunk's outgoing state, dU~ = dU + (K ⊙ tail) dS_c (in
//             place), dS <- gamma_last dS + scale (gamma ⊙ Q)^T dO - W^T dU~ (= d_initial_state
//             at the end; every product is column-separable, hence the column blocks);
//   grads     one block per chunk: the CPU's chunk_backward from S_c, dS_c, U, dU~: the adjoint
//             solves as products with Tinv^T, dq, dk, dv, dbeta, and dg by a reverse cumulative
//             sum of db within the chunk.
//
// Scratch (f32, from the caching allocator), N = ceil(T / 64) chunks, per (batch, head):
//   W [N 64, Dk], U [N 64, Dv], S_c [N, Dk, Dv]; the backward adds dU [N 64, Dv] and dS_c [N, Dk,
//   Dv]. That is about 4 (forward) or 6 (backward) times the f32 size of v for Dk = Dv, plus
//   Dk Dv / 16 values per token for the chunk states: at T = 32768, B H = 64, Dk = Dv = 128 the
//   forward takes 4 GiB and the backward 7 GiB; no [T, C, C] buffer is kept (the [C, C] tiles
//   live in shared memory).
//
// Contract on CUDA: q, k, v, dO, o, dq, dk, dv of one dtype (f32 or bf16); g, beta, dg, dbeta
// f32 [B, T, H]; states and transitions f32; Dk in {64, 128}, Dv a multiple of 64; any T.
#include <climits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

constexpr int kC = 64;         // chunk length
constexpr int kCols = 64;      // columns of the state per block of the sequential passes
constexpr int kThreads = 256;  // every kernel
constexpr int kLd = kC + 1;    // [C, C] and [C, 64] / [Dk, 64] tiles: odd, conflict-free columns

// A read-only matrix operand: element (i, j) is stored at (i, j), or at (j, i) when `trans`;
// stored rows >= `rows` read as 0 (tokens past T); `rs` optionally scales each stored row.
template <typename T>
struct Mat {
  const T* p;
  int64_t ld;
  bool trans;
  int rows;
  const float* rs;
  __device__ __forceinline__ float at(int i, int j) const {
    const int r = trans ? j : i, c = trans ? i : j;
    if (r >= rows) return 0.0f;
    const float x = to_float(p[int64_t(r) * ld + c]);
    return rs ? x * rs[r] : x;
  }
};

template <typename T>
__device__ __forceinline__ Mat<T> mat(const T* p, int64_t ld, bool trans = false,
                                      int rows = INT_MAX, const float* rs = nullptr) {
  return Mat<T>{p, ld, trans, rows, rs};
}

// C = alpha A B + beta C over the block, C [M, N] f32 (shared or global, row stride ldc), A
// [M, K], B [K, N]; M and N multiples of 4. Thread t computes a 4 x 4 tile of rows r0 + a M/4
// and columns c0 + b N/4, the same tiles in every call of one (M, N): two calls into one C need
// no barrier between them. beta = 0 does not read C. The caller synchronises before reading C.
template <typename TA, typename TB>
__device__ void bgemm(int M, int N, int K, float alpha, const Mat<TA>& A, const Mat<TB>& B,
                      float beta, float* C, int64_t ldc) {
  const int mt = M / 4, nt = N / 4;
  for (int t = threadIdx.x; t < mt * nt; t += blockDim.x) {
    const int r0 = t / nt, c0 = t % nt;
    float acc[4][4] = {};
    for (int k = 0; k < K; ++k) {
      float a[4], b[4];
#pragma unroll
      for (int x = 0; x < 4; ++x) a[x] = A.at(r0 + x * mt, k);
#pragma unroll
      for (int y = 0; y < 4; ++y) b[y] = B.at(k, c0 + y * nt);
#pragma unroll
      for (int x = 0; x < 4; ++x)
#pragma unroll
        for (int y = 0; y < 4; ++y) acc[x][y] += a[x] * b[y];
    }
#pragma unroll
    for (int x = 0; x < 4; ++x)
#pragma unroll
      for (int y = 0; y < 4; ++y) {
        float* c = C + int64_t(r0 + x * mt) * ldc + c0 + y * nt;
        *c = beta != 0.0f ? alpha * acc[x][y] + beta * *c : alpha * acc[x][y];
      }
  }
}

struct Geo {
  int B, T, H, Dk, Dv, N;  // N = ceil(T / 64) chunks
  float scale;
};

// One chunk's gates in shared memory: b (cumulative log decay), gamma = exp(b), tail =
// exp(b_last - b), beta (0 past T).
struct Gates {
  float b[kC], gamma[kC], tail[kC], beta[kC];
};

// The chunk starting at token t0 of (b, h); `valid` of its rows are tokens.
struct ChunkAt {
  int b, h, bh, c, t0, valid;
  __device__ ChunkAt(const Geo& g, int bh_, int c_)
      : b(bh_ / g.H), h(bh_ % g.H), bh(bh_), c(c_), t0(c_ * kC), valid(min(kC, g.T - c_ * kC)) {}
  // Row t0 of a [B, T, H, D] tensor (row stride H D).
  template <typename T>
  __device__ const T* rows(const T* p, const Geo& g, int D) const {
    return p + ((int64_t(b) * g.T + t0) * g.H + h) * D;
  }
  template <typename T>
  __device__ T* rows(T* p, const Geo& g, int D) const {
    return p + ((int64_t(b) * g.T + t0) * g.H + h) * D;
  }
  // Row 0 of this chunk in a [B H, N 64, D] scratch.
  __device__ int64_t scratch(const Geo& g, int D) const {
    return (int64_t(bh) * g.N * kC + t0) * D;
  }
  // This chunk's [Dk, Dv] matrix in a [B H, N, Dk, Dv] scratch.
  __device__ int64_t state(const Geo& g) const {
    return (int64_t(bh) * g.N + c) * int64_t(g.Dk) * g.Dv;
  }
};

// Every thread of the block must call it (it synchronises).
__device__ void load_gates(Gates& s, const Geo& geo, const ChunkAt& ch, const float* g,
                           const float* beta) {
  const int i = threadIdx.x;
  const int64_t at = (int64_t(ch.b) * geo.T + ch.t0 + i) * geo.H + ch.h;
  if (i < kC) {
    s.beta[i] = beta && i < ch.valid ? beta[at] : 0.0f;
    s.gamma[i] = g && i < ch.valid ? g[at] : 0.0f;  // the log decay, summed below
  }
  __syncthreads();
  if (i == 0) {
    float acc = 0.0f;
    for (int r = 0; r < kC; ++r) s.b[r] = acc += s.gamma[r];
  }
  __syncthreads();
  if (i < kC) {
    s.gamma[i] = expf(s.b[i]);
    s.tail[i] = expf(s.b[kC - 1] - s.b[i]);
  }
  __syncthreads();
}

// m [C, C] (ld kLd) holds K K^T; it becomes Tinv = (I + L)^{-1} with L = strictly_lower(
// diag(beta) (K K^T ⊙ Gamma)): forward substitution, row i from the rows before it,
// Tinv_ic = -L_ic - sum_{c < j < i} L_ij Tinv_jc (the unit diagonal implied until the end).
__device__ void build_inverse(float* m, const Gates& s) {
  for (int e = threadIdx.x; e < kC * kC; e += blockDim.x) {
    const int i = e / kC, j = e % kC;
    m[i * kLd + j] = j < i ? s.beta[i] * m[i * kLd + j] * expf(s.b[i] - s.b[j]) : 0.0f;
  }
  __syncthreads();
  const int c = threadIdx.x;
  for (int i = 1; i < kC; ++i) {
    float val = 0.0f;
    if (c < i) {
      val = -m[i * kLd + c];
      for (int j = c + 1; j < i; ++j) val -= m[i * kLd + j] * m[j * kLd + c];
    }
    __syncthreads();
    if (c < i) m[i * kLd + c] = val;
    __syncthreads();
  }
  if (c < kC) m[c * kLd + c] = 1.0f;
  __syncthreads();
}

// P = tril(Q K^T) ⊙ Gamma into p [C, C].
template <typename TIn>
__device__ void build_scores(float* p, const Gates& s, const TIn* qc, const TIn* kc, int64_t ld,
                             int Dk, int valid) {
  bgemm(kC, kC, Dk, 1.0f, mat(qc, ld, false, valid), mat(kc, ld, true, valid), 0.0f, p, kLd);
  __syncthreads();
  for (int e = threadIdx.x; e < kC * kC; e += blockDim.x) {
    const int i = e / kC, j = e % kC;
    p[i * kLd + j] = j <= i ? p[i * kLd + j] * expf(s.b[i] - s.b[j]) : 0.0f;
  }
  __syncthreads();
}

// ---- factors: W, U of every chunk ---------------------------------------------------------

template <typename TIn>
__global__ void __launch_bounds__(kThreads)
    factors_kernel(Geo geo, const TIn* k, const TIn* v, const float* g, const float* beta, float* W,
                   float* U) {
  extern __shared__ __align__(16) float smem[];
  Gates& s = *reinterpret_cast<Gates*>(smem);
  float* sT = smem + sizeof(Gates) / sizeof(float);  // Tinv diag(beta)
  float* sA = sT + kC * kLd;                         // Tinv diag(beta gamma)
  const ChunkAt ch(geo, blockIdx.y, blockIdx.x);
  const int64_t ldk = int64_t(geo.H) * geo.Dk, ldv = int64_t(geo.H) * geo.Dv;
  const TIn* kc = ch.rows(k, geo, geo.Dk);
  load_gates(s, geo, ch, g, beta);
  bgemm(kC, kC, geo.Dk, 1.0f, mat(kc, ldk, false, ch.valid), mat(kc, ldk, true, ch.valid), 0.0f, sT,
        kLd);
  __syncthreads();
  build_inverse(sT, s);
  for (int e = threadIdx.x; e < kC * kC; e += blockDim.x) {
    const int i = e / kC, j = e % kC;
    const float t = sT[i * kLd + j] * s.beta[j];
    sT[i * kLd + j] = t;
    sA[i * kLd + j] = t * s.gamma[j];
  }
  __syncthreads();
  bgemm(kC, geo.Dk, kC, 1.0f, mat(sA, kLd), mat(kc, ldk, false, ch.valid), 0.0f,
        W + ch.scratch(geo, geo.Dk), geo.Dk);
  if (v)
    bgemm(kC, geo.Dv, kC, 1.0f, mat(sT, kLd), mat(ch.rows(v, geo, geo.Dv), ldv, false, ch.valid),
          0.0f, U + ch.scratch(geo, geo.Dv), geo.Dv);
}

// ---- the state pass (and the transition) --------------------------------------------------

struct StateArgs {
  const float* W;
  float* U;            // [B H, N 64, cols] or null (the transition: no values)
  const float* s0;     // [B H, Dk, cols] or null
  bool identity;       // with s0 null: start from I (cols = Dk)
  float* states;       // [B H, N, Dk, cols] incoming states, or null
  bool write_ut;       // U <- U~ (the forward)
  float* final_state;  // [B H, Dk, cols] or null
  int cols;            // Dv, or Dk for the transition
};

template <typename TIn>
__global__ void __launch_bounds__(kThreads)
    state_kernel(Geo geo, const TIn* k, const float* g, const float* beta, StateArgs a) {
  extern __shared__ __align__(16) float smem[];
  Gates& s = *reinterpret_cast<Gates*>(smem);
  float* sS = smem + sizeof(Gates) / sizeof(float);  // [Dk, 64]
  float* sUt = sS + geo.Dk * kLd;                    // [C, 64]
  const int bh = blockIdx.y, j0 = blockIdx.x * kCols, Dk = geo.Dk, cols = a.cols;
  const int64_t ldk = int64_t(geo.H) * Dk;
  for (int e = threadIdx.x; e < Dk * kCols; e += blockDim.x) {
    const int r = e / kCols, c = e % kCols;
    sS[r * kLd + c] = a.s0 ? a.s0[(int64_t(bh) * Dk + r) * cols + j0 + c]
                           : (a.identity && r == j0 + c ? 1.0f : 0.0f);
  }
  for (int c = 0; c < geo.N; ++c) {
    const ChunkAt ch(geo, bh, c);
    load_gates(s, geo, ch, g, beta);  // also orders the previous chunk's update of sS
    if (a.states) {
      float* out = a.states + (int64_t(bh) * geo.N + c) * Dk * cols + j0;
      for (int e = threadIdx.x; e < Dk * kCols; e += blockDim.x)
        out[int64_t(e / kCols) * cols + e % kCols] = sS[(e / kCols) * kLd + e % kCols];
    }
    float* uc = a.U ? a.U + ch.scratch(geo, cols) + j0 : nullptr;
    for (int e = threadIdx.x; e < kC * kCols; e += blockDim.x)
      sUt[(e / kCols) * kLd + e % kCols] = uc ? uc[int64_t(e / kCols) * cols + e % kCols] : 0.0f;
    __syncthreads();
    bgemm(kC, kCols, Dk, -1.0f, mat(a.W + ch.scratch(geo, Dk), Dk), mat(sS, kLd), 1.0f, sUt, kLd);
    __syncthreads();
    if (a.write_ut)
      for (int e = threadIdx.x; e < kC * kCols; e += blockDim.x)
        uc[int64_t(e / kCols) * cols + e % kCols] = sUt[(e / kCols) * kLd + e % kCols];
    bgemm(Dk, kCols, kC, 1.0f, mat(ch.rows(k, geo, Dk), ldk, true, ch.valid, s.tail), mat(sUt, kLd),
          s.gamma[kC - 1], sS, kLd);
    __syncthreads();
  }
  if (a.final_state)
    for (int e = threadIdx.x; e < Dk * kCols; e += blockDim.x) {
      const int r = e / kCols, c = e % kCols;
      a.final_state[(int64_t(bh) * Dk + r) * cols + j0 + c] = sS[r * kLd + c];
    }
}

// ---- outputs ------------------------------------------------------------------------------

template <typename TIn>
__global__ void __launch_bounds__(kThreads)
    output_kernel(Geo geo, const TIn* q, const TIn* k, const float* g, const float* states,
                  const float* Ut, TIn* o) {
  extern __shared__ __align__(16) float smem[];
  Gates& s = *reinterpret_cast<Gates*>(smem);
  float* sP = smem + sizeof(Gates) / sizeof(float);
  float* sO = sP + kC * kLd;
  const ChunkAt ch(geo, blockIdx.y, blockIdx.x);
  const int Dk = geo.Dk, Dv = geo.Dv;
  const int64_t ldk = int64_t(geo.H) * Dk, ldv = int64_t(geo.H) * Dv;
  const TIn* qc = ch.rows(q, geo, Dk);
  load_gates(s, geo, ch, g, nullptr);
  build_scores(sP, s, qc, ch.rows(k, geo, Dk), ldk, Dk, ch.valid);
  TIn* oc = ch.rows(o, geo, Dv);
  for (int j0 = 0; j0 < Dv; j0 += kCols) {
    bgemm(kC, kCols, Dk, 1.0f, mat(qc, ldk, false, ch.valid, s.gamma),
          mat(states + ch.state(geo) + j0, Dv), 0.0f, sO, kLd);
    bgemm(kC, kCols, kC, 1.0f, mat(sP, kLd), mat(Ut + ch.scratch(geo, Dv) + j0, Dv), 1.0f, sO, kLd);
    __syncthreads();
    for (int e = threadIdx.x; e < kC * kCols; e += blockDim.x) {
      const int i = e / kCols, c = e % kCols;
      if (i < ch.valid) oc[i * ldv + j0 + c] = from_float<TIn>(geo.scale * sO[i * kLd + c]);
    }
    __syncthreads();
  }
}

// ---- backward -----------------------------------------------------------------------------

// dU = scale P^T dO for every chunk.
template <typename TIn>
__global__ void __launch_bounds__(kThreads)
    local_du_kernel(Geo geo, const TIn* q, const TIn* k, const float* g, const TIn* d_o,
                    float* dU) {
  extern __shared__ __align__(16) float smem[];
  Gates& s = *reinterpret_cast<Gates*>(smem);
  float* sP = smem + sizeof(Gates) / sizeof(float);
  const ChunkAt ch(geo, blockIdx.y, blockIdx.x);
  const int64_t ldk = int64_t(geo.H) * geo.Dk, ldv = int64_t(geo.H) * geo.Dv;
  load_gates(s, geo, ch, g, nullptr);
  build_scores(sP, s, ch.rows(q, geo, geo.Dk), ch.rows(k, geo, geo.Dk), ldk, geo.Dk, ch.valid);
  bgemm(kC, geo.Dv, kC, geo.scale, mat(sP, kLd, true),
        mat(ch.rows(d_o, geo, geo.Dv), ldv, false, ch.valid), 0.0f, dU + ch.scratch(geo, geo.Dv),
        geo.Dv);
}

struct ReverseArgs {
  const float* W;
  float* dU;              // in: scale P^T dO; out: dU~
  const float* ds_final;  // [B H, Dk, Dv] or null
  float* dstates;         // [B H, N, Dk, Dv]: the gradient reaching each chunk's outgoing state
  float* ds_initial;      // [B H, Dk, Dv] or null
};

template <typename TIn>
__global__ void __launch_bounds__(kThreads)
    reverse_kernel(Geo geo, const TIn* q, const TIn* k, const float* g, const TIn* d_o,
                   ReverseArgs a) {
  extern __shared__ __align__(16) float smem[];
  Gates& s = *reinterpret_cast<Gates*>(smem);
  float* sdS = smem + sizeof(Gates) / sizeof(float);  // [Dk, 64]
  float* sdU = sdS + geo.Dk * kLd;                    // [C, 64]
  const int bh = blockIdx.y, j0 = blockIdx.x * kCols, Dk = geo.Dk, Dv = geo.Dv;
  const int64_t ldk = int64_t(geo.H) * Dk, ldv = int64_t(geo.H) * Dv;
  for (int e = threadIdx.x; e < Dk * kCols; e += blockDim.x) {
    const int r = e / kCols, c = e % kCols;
    sdS[r * kLd + c] = a.ds_final ? a.ds_final[(int64_t(bh) * Dk + r) * Dv + j0 + c] : 0.0f;
  }
  for (int c = geo.N - 1; c >= 0; --c) {
    const ChunkAt ch(geo, bh, c);
    load_gates(s, geo, ch, g, nullptr);
    float* out = a.dstates + ch.state(geo) + j0;
    for (int e = threadIdx.x; e < Dk * kCols; e += blockDim.x)
      out[int64_t(e / kCols) * Dv + e % kCols] = sdS[(e / kCols) * kLd + e % kCols];
    float* duc = a.dU + ch.scratch(geo, Dv) + j0;
    for (int e = threadIdx.x; e < kC * kCols; e += blockDim.x)
      sdU[(e / kCols) * kLd + e % kCols] = duc[int64_t(e / kCols) * Dv + e % kCols];
    __syncthreads();
    const TIn* kc = ch.rows(k, geo, Dk);
    bgemm(kC, kCols, Dk, 1.0f, mat(kc, ldk, false, ch.valid, s.tail), mat(sdS, kLd), 1.0f, sdU,
          kLd);
    __syncthreads();
    for (int e = threadIdx.x; e < kC * kCols; e += blockDim.x)
      duc[int64_t(e / kCols) * Dv + e % kCols] = sdU[(e / kCols) * kLd + e % kCols];
    bgemm(Dk, kCols, kC, geo.scale, mat(ch.rows(q, geo, Dk), ldk, true, ch.valid, s.gamma),
          mat(ch.rows(d_o, geo, Dv) + j0, ldv, false, ch.valid), s.gamma[kC - 1], sdS, kLd);
    bgemm(Dk, kCols, kC, -1.0f, mat(a.W + ch.scratch(geo, Dk), Dk, true), mat(sdU, kLd), 1.0f, sdS,
          kLd);
    __syncthreads();
  }
  if (a.ds_initial)
    for (int e = threadIdx.x; e < Dk * kCols; e += blockDim.x) {
      const int r = e / kCols, c = e % kCols;
      a.ds_initial[(int64_t(bh) * Dk + r) * Dv + j0 + c] = sdS[r * kLd + c];
    }
}

struct GradArgs {
  const float *W, *U, *dU, *states, *dstates;
  void *dq, *dk, *dv;  // the storage dtype
  float *dg, *dbeta;   // dg null without decay
};

// Shared memory of grads_kernel, in floats.
struct GradSmem {
  static constexpr int kGates = sizeof(Gates) / sizeof(float);
  static constexpr int kVectors = 4 * kC + 32;  // db, dbeta, column sums, to_end; reduction
  static size_t floats(int Dk) {
    return kGates + kVectors + 7 * size_t(kC) * kLd + 3 * size_t(kC) * (Dk + 1);
  }
};

template <typename TIn>
__global__ void __launch_bounds__(kThreads)
    grads_kernel(Geo geo, const TIn* q, const TIn* k, const TIn* v, const float* g,
                 const float* beta, const TIn* d_o, GradArgs a) {
  extern __shared__ __align__(16) float smem[];
  Gates& s = *reinterpret_cast<Gates*>(smem);
  const int Dk = geo.Dk, Dv = geo.Dv, ldw = Dk + 1;
  float* sdb = smem + GradSmem::kGates;
  float* sdbeta = sdb + kC;
  float* scol = sdbeta + kC;
  float* stoend = scol + kC;
  float* red = stoend + kC;
  float* sKK = red + 32;          // K K^T, then the dbeta terms of the pairs
  float* sQK = sKK + kC * kLd;    // Q K^T, then d(exponent) of the pairs
  float* sTi = sQK + kC * kLd;    // Tinv
  float* sDP = sTi + kC * kLd;    // dP, then dQK
  float* sDL = sDP + kC * kLd;    // dL, then dKK
  float* sUt = sDL + kC * kLd;    // [C, 64]: U~, then dY_U
  float* sDY = sUt + kC * kLd;    // [C, 64]: dU~
  float* sDKT = sDY + kC * kLd;   // [C, Dk]: d(K ⊙ tail), then dk
  float* sDQG = sDKT + kC * ldw;  // [C, Dk]: d(gamma ⊙ Q), then dq
  float* sDW = sDQG + kC * ldw;   // [C, Dk]: dW, then dY_W
  const ChunkAt ch(geo, blockIdx.y, blockIdx.x);
  const int64_t ldk = int64_t(geo.H) * Dk, ldv = int64_t(geo.H) * Dv;
  const TIn* qc = ch.rows(q, geo, Dk);
  const TIn* kc = ch.rows(k, geo, Dk);
  const TIn* vc = ch.rows(v, geo, Dv);
  const TIn* doc = ch.rows(d_o, geo, Dv);
  const float* Wc = a.W + ch.scratch(geo, Dk);
  const bool gated = g != nullptr;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, warps = blockDim.x / 32;

  load_gates(s, geo, ch, g, beta);
  if (tid < kC) sdb[tid] = sdbeta[tid] = 0.0f;
  bgemm(kC, kC, Dk, 1.0f, mat(kc, ldk, false, ch.valid), mat(kc, ldk, true, ch.valid), 0.0f, sKK,
        kLd);
  bgemm(kC, kC, Dk, 1.0f, mat(qc, ldk, false, ch.valid), mat(kc, ldk, true, ch.valid), 0.0f, sQK,
        kLd);
  __syncthreads();
  for (int e = tid; e < kC * kC; e += blockDim.x) {
    const int i = e / kC, j = e % kC;
    sTi[i * kLd + j] = sKK[i * kLd + j];
    sDP[i * kLd + j] = sDL[i * kLd + j] = 0.0f;
  }
  for (int e = tid; e < kC * Dk; e += blockDim.x) {
    const int i = e / Dk, j = e % Dk;
    sDKT[i * ldw + j] = sDQG[i * ldw + j] = sDW[i * ldw + j] = 0.0f;
  }
  __syncthreads();
  build_inverse(sTi, s);

  float dot_part = 0.0f;  // <dS_c, S_c>
  for (int j0 = 0; j0 < Dv; j0 += kCols) {
    const float* Sj = a.states + ch.state(geo) + j0;
    const float* dSj = a.dstates + ch.state(geo) + j0;
    const float* Uj = a.U + ch.scratch(geo, Dv) + j0;
    const float* dUj = a.dU + ch.scratch(geo, Dv) + j0;
    for (int e = tid; e < kC * kCols; e += blockDim.x) {
      const int i = e / kCols, c = e % kCols;
      sUt[i * kLd + c] = Uj[int64_t(i) * Dv + c];
      sDY[i * kLd + c] = dUj[int64_t(i) * Dv + c];
    }
    for (int e = tid; e < Dk * kCols; e += blockDim.x) {
      const int64_t off = int64_t(e / kCols) * Dv + e % kCols;
      dot_part += dSj[off] * Sj[off];
    }
    __syncthreads();
    bgemm(kC, kCols, Dk, -1.0f, mat(Wc, Dk), mat(Sj, Dv), 1.0f, sUt, kLd);  // U~
    __syncthreads();
    const Mat<TIn> dOj = mat(doc + j0, ldv, false, ch.valid);
    bgemm(kC, kC, kCols, geo.scale, dOj, mat(sUt, kLd, true), 1.0f, sDP, kLd);
    bgemm(kC, Dk, kCols, 1.0f, mat(sUt, kLd), mat(dSj, Dv, true), 1.0f, sDKT, ldw);
    bgemm(kC, Dk, kCols, geo.scale, dOj, mat(Sj, Dv, true), 1.0f, sDQG, ldw);
    bgemm(kC, Dk, kCols, -1.0f, mat(sDY, kLd), mat(Sj, Dv, true), 1.0f, sDW, ldw);
    __syncthreads();
    // dY_U = Tinv^T dU~ (the adjoint of the solve), then dv, dL and dbeta's value term.
    bgemm(kC, kCols, kC, 1.0f, mat(sTi, kLd, true), mat(sDY, kLd), 0.0f, sUt, kLd);
    __syncthreads();
    TIn* dvc = ch.rows(static_cast<TIn*>(a.dv), geo, Dv);
    for (int e = tid; e < kC * kCols; e += blockDim.x) {
      const int i = e / kCols, c = e % kCols;
      if (i < ch.valid) dvc[i * ldv + j0 + c] = from_float<TIn>(s.beta[i] * sUt[i * kLd + c]);
    }
    bgemm(kC, kC, kCols, -1.0f, mat(sUt, kLd), mat(Uj, Dv, true), 1.0f, sDL, kLd);
    for (int i = warp; i < ch.valid; i += warps) {
      float acc = 0.0f;
      for (int c = lane; c < kCols; c += 32)
        acc += sUt[i * kLd + c] * to_float(vc[i * ldv + j0 + c]);
      acc = warp_sum(acc);
      if (lane == 0) sdbeta[i] += acc;
    }
    __syncthreads();
  }
  const float dot = block_sum(dot_part, red);

  // dY_W = Tinv^T dW, 64 columns at a time through sUt.
  for (int p0 = 0; p0 < Dk; p0 += kCols) {
    bgemm(kC, kCols, kC, 1.0f, mat(sTi, kLd, true), mat(sDW + p0, ldw), 0.0f, sUt, kLd);
    __syncthreads();
    for (int e = tid; e < kC * kCols; e += blockDim.x) {
      const int i = e / kCols, c = e % kCols;
      sDW[i * ldw + p0 + c] = sUt[i * kLd + c];
    }
    __syncthreads();
  }
  bgemm(kC, kC, Dk, -1.0f, mat(sDW, ldw), mat(Wc, Dk, true), 1.0f, sDL, kLd);
  __syncthreads();

  // Per-token terms: the right-hand sides, gamma ⊙ Q and K ⊙ tail (one warp a row).
  for (int i = warp; i < kC; i += warps) {
    float dyw_k = 0.0f, qdq = 0.0f, kdt = 0.0f;
    if (i < ch.valid)
      for (int c = lane; c < Dk; c += 32) {
        const float kv = to_float(kc[i * ldk + c]), qv = to_float(qc[i * ldk + c]);
        dyw_k += sDW[i * ldw + c] * kv;
        qdq += sDQG[i * ldw + c] * qv;
        kdt += sDKT[i * ldw + c] * kv;
      }
    dyw_k = warp_sum(dyw_k);
    qdq = warp_sum(qdq);
    kdt = warp_sum(kdt);
    const float gam = s.gamma[i], bet = s.beta[i], tl = s.tail[i];
    if (lane == 0) {
      sdbeta[i] += gam * dyw_k;
      const float to_end = tl * kdt;
      sdb[i] += bet * gam * dyw_k + gam * qdq - to_end;
      stoend[i] = to_end;
    }
    for (int c = lane; c < Dk; c += 32) {
      sDQG[i * ldw + c] *= gam;
      sDKT[i * ldw + c] = bet * gam * sDW[i * ldw + c] + tl * sDKT[i * ldw + c];
    }
  }
  __syncthreads();

  // Pairwise terms: L_ij = beta_i (K K^T)_ij Gamma_ij (j < i), P_ij = (Q K^T)_ij Gamma_ij (j <= i).
  for (int e = tid; e < kC * kC; e += blockDim.x) {
    const int i = e / kC, j = e % kC, ij = i * kLd + j;
    const float G = j <= i ? expf(s.b[i] - s.b[j]) : 0.0f;
    const float dp = sDP[ij], dl = sDL[ij], kk = sKK[ij], qk = sQK[ij];
    float dqk = dp * G, dkk = 0.0f, dbeta_term = 0.0f, dexp = 0.0f;
    if (j < i) {
      dbeta_term = dl * kk * G;
      dkk = dl * s.beta[i] * G;
      dexp = (dl * s.beta[i] * kk + dp * qk) * G;
    }
    sDP[ij] = dqk;
    sDL[ij] = dkk;
    sKK[ij] = dbeta_term;
    sQK[ij] = dexp;
  }
  __syncthreads();
  if (tid < kC) {
    float rb = 0.0f, rd = 0.0f;
    for (int j = 0; j < kC; ++j) {
      rb += sKK[tid * kLd + j];
      rd += sQK[tid * kLd + j];
    }
    sdbeta[tid] += rb;
    sdb[tid] += rd;
  } else if (tid < 2 * kC) {
    const int j = tid - kC;
    float cs = 0.0f;
    for (int i = 0; i < kC; ++i) cs += sQK[i * kLd + j];
    scol[j] = cs;
  }
  // dq = gamma dqg + dQK K; dk = (so far) + dQK^T Q + dKK K + dKK^T K.
  bgemm(kC, Dk, kC, 1.0f, mat(sDP, kLd), mat(kc, ldk, false, ch.valid), 1.0f, sDQG, ldw);
  bgemm(kC, Dk, kC, 1.0f, mat(sDP, kLd, true), mat(qc, ldk, false, ch.valid), 1.0f, sDKT, ldw);
  bgemm(kC, Dk, kC, 1.0f, mat(sDL, kLd), mat(kc, ldk, false, ch.valid), 1.0f, sDKT, ldw);
  bgemm(kC, Dk, kC, 1.0f, mat(sDL, kLd, true), mat(kc, ldk, false, ch.valid), 1.0f, sDKT, ldw);
  __syncthreads();
  TIn* dqc = ch.rows(static_cast<TIn*>(a.dq), geo, Dk);
  TIn* dkc = ch.rows(static_cast<TIn*>(a.dk), geo, Dk);
  for (int e = tid; e < kC * Dk; e += blockDim.x) {
    const int i = e / Dk, c = e % Dk;
    if (i >= ch.valid) continue;
    dqc[i * ldk + c] = from_float<TIn>(sDQG[i * ldw + c]);
    dkc[i * ldk + c] = from_float<TIn>(sDKT[i * ldw + c]);
  }
  if (tid == 0) {
    const int64_t at = (int64_t(ch.b) * geo.T + ch.t0) * geo.H + ch.h;
    for (int i = 0; i < ch.valid; ++i) a.dbeta[at + int64_t(i) * geo.H] = sdbeta[i];
    if (gated) {
      // b_{C-1} also receives <dS, S> gamma_last and every token's K ⊙ tail term; then
      // b_i = g_0 + ... + g_i gives dg_j = sum_{i >= j} db_i.
      float last = s.gamma[kC - 1] * dot;
      for (int i = 0; i < kC; ++i) last += stoend[i];
      float acc = last;
      for (int i = kC - 1; i >= 0; --i) {
        acc += sdb[i] - scol[i];
        if (i < ch.valid) a.dg[at + int64_t(i) * geo.H] = acc;
      }
    }
  }
}

// ---- host side ----------------------------------------------------------------------------

struct Dims {
  int B, T, H, Dk, Dv;
};

void check_gate(const Tensor& t, const Dims& d, const Tensor& ref, const char* op,
                const char* name) {
  check_dtype(t, DType::kF32, op, name);
  check_same_device(t, ref, op, name, "k");
  LINEA_CHECK(t.shape() == (Shape{d.B, d.T, d.H}))
      << op << ": " << name << " " << describe(t)
      << " must be f32 [B, T, H] = " << shape_str({d.B, d.T, d.H});
}

void check_state(const Tensor& t, const Shape& want, const Tensor& ref, const char* op,
                 const char* name) {
  if (!t.defined()) return;
  check_dtype(t, DType::kF32, op, name);
  check_same_device(t, ref, op, name, "k");
  LINEA_CHECK(t.shape() == want) << op << ": " << name << " " << describe(t) << " must be f32 "
                                 << shape_str(want);
}

// k, beta and the optional g (the transition's inputs).
Dims check_keys(const Tensor& k, const Tensor& g, const Tensor& beta, const char* op) {
  check_float(k, op, "k");
  LINEA_CHECK(k.ndim() == 4) << op << ": k " << describe(k) << " must be [B, T, H, Dk]";
  LINEA_CHECK(k.numel() < (int64_t(1) << 40)) << op << ": k " << describe(k) << " is too large";
  const Dims d{int(k.dim(0)), int(k.dim(1)), int(k.dim(2)), int(k.dim(3)), 0};
  LINEA_CHECK(d.Dk == 64 || d.Dk == 128) << op << ": k " << describe(k) << ": key heads of " << d.Dk
                                         << " are not supported on CUDA (64 or 128)";
  check_gate(beta, d, k, op, "beta");
  if (g.defined()) check_gate(g, d, k, op, "g");
  return d;
}

Dims check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                  const Tensor& beta, const char* op) {
  Dims d = check_keys(k, g, beta, op);
  check_same_shape(q, k, op, "q", "k");
  check_like(v, k, op, "v", "k");
  LINEA_CHECK(v.ndim() == 4 && v.dim(0) == d.B && v.dim(1) == d.T && v.dim(2) == d.H)
      << op << ": v " << describe(v) << " must be [B, T, H, Dv] with k's B, T, H "
      << shape_str(k.shape());
  d.Dv = int(v.dim(3));
  LINEA_CHECK(d.Dv > 0 && d.Dv % kCols == 0)
      << op << ": v " << describe(v) << ": value heads of " << d.Dv
      << " are not supported on CUDA (a multiple of 64)";
  return d;
}

Geo geo_of(const Dims& d, double scale) {
  return Geo{d.B, d.T, d.H, d.Dk, d.Dv, (d.T + kC - 1) / kC, static_cast<float>(scale)};
}

Tensor scratch(int64_t n, const Device& dev) {
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::kF32, dev);
}

const float* fptr(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }
float* fptr(Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, size_t floats, cudaStream_t stream, Args... args) {
  if (grid.x == 0 || grid.y == 0) return;
  const size_t bytes = floats * sizeof(float);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(bytes)));
  kernel<<<grid, kThreads, bytes, stream>>>(args...);
  CUDA_CHECK_LAUNCH();
}

constexpr size_t kGateFloats = sizeof(Gates) / sizeof(float);

// W and U (U when v is given) of every chunk, then the state pass.
template <typename TIn>
void factors_and_states(const Geo& geo, const TIn* k, const TIn* v, const float* g,
                        const float* beta, float* W, float* U, const StateArgs& sa,
                        cudaStream_t stream) {
  const unsigned BH = unsigned(geo.B) * geo.H;
  launch(factors_kernel<TIn>, dim3(geo.N, BH), kGateFloats + 2 * kC * kLd, stream, geo, k, v, g,
         beta, W, U);
  launch(state_kernel<TIn>, dim3(sa.cols / kCols, BH),
         kGateFloats + size_t(geo.Dk) * kLd + kC * kLd, stream, geo, k, g, beta, sa);
}

}  // namespace

void delta_rule_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                const Tensor& beta, double scale, int64_t chunk,
                                const Tensor& initial_state, Tensor& o, Tensor& final_state) {
  const char* op = "delta_rule_chunked_forward (CUDA)";
  const Dims d = check_inputs(q, k, v, g, beta, op);
  LINEA_CHECK(chunk > 0) << op << ": chunk = " << chunk << " must be positive";
  check_same_shape(o, v, op, "o", "v");
  const Shape ss{d.B, d.H, d.Dk, d.Dv};
  check_state(initial_state, ss, k, op, "initial_state");
  check_state(final_state, ss, k, op, "final_state");
  const Geo geo = geo_of(d, scale);
  const Device dev = k.device();
  OnDevice on(k);
  const int64_t BH = int64_t(d.B) * d.H, rows = BH * geo.N * kC;
  Tensor W = scratch(rows * d.Dk, dev), U = scratch(rows * d.Dv, dev),
         states = scratch(BH * geo.N * d.Dk * d.Dv, dev);
  dispatch(k.dtype(), [&](auto zero) {
    using T = decltype(zero);
    StateArgs sa{W.data<float>(),      U.data<float>(),
                 fptr(initial_state),  false,
                 states.data<float>(), true,
                 fptr(final_state),    d.Dv};
    factors_and_states<T>(geo, ptr<T>(k), ptr<T>(v), fptr(g), beta.data<float>(), W.data<float>(),
                          U.data<float>(), sa, on.stream);
    launch(output_kernel<T>, dim3(geo.N, unsigned(BH)), kGateFloats + 2 * kC * kLd, on.stream, geo,
           ptr<T>(q), ptr<T>(k), fptr(g), static_cast<const float*>(states.data<float>()),
           static_cast<const float*>(U.data<float>()), ptr<T>(o));
  });
}

void delta_rule_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                 const Tensor& beta, double scale, int64_t chunk,
                                 const Tensor& initial_state, const Tensor& d_o,
                                 const Tensor& d_final_state, Tensor& dq, Tensor& dk, Tensor& dv,
                                 Tensor& dg, Tensor& dbeta, Tensor& d_initial_state) {
  const char* op = "delta_rule_chunked_backward (CUDA)";
  const Dims d = check_inputs(q, k, v, g, beta, op);
  LINEA_CHECK(chunk > 0) << op << ": chunk = " << chunk << " must be positive";
  check_same_shape(d_o, v, op, "d_o", "v");
  check_same_shape(dq, q, op, "dq", "q");
  check_same_shape(dk, k, op, "dk", "k");
  check_same_shape(dv, v, op, "dv", "v");
  check_gate(dbeta, d, k, op, "dbeta");
  if (g.defined()) {
    check_gate(dg, d, k, op, "dg");
  } else {
    LINEA_CHECK(!dg.defined()) << op << ": dg given but g is undefined (no decay, nothing to "
                               << "differentiate); pass an undefined dg";
  }
  const Shape ss{d.B, d.H, d.Dk, d.Dv};
  check_state(initial_state, ss, k, op, "initial_state");
  check_state(d_final_state, ss, k, op, "d_final_state");
  check_state(d_initial_state, ss, k, op, "d_initial_state");
  const Geo geo = geo_of(d, scale);
  const Device dev = k.device();
  OnDevice on(k);
  const int64_t BH = int64_t(d.B) * d.H, rows = BH * geo.N * kC, state_n = BH * geo.N * d.Dk * d.Dv;
  Tensor W = scratch(rows * d.Dk, dev), U = scratch(rows * d.Dv, dev),
         dU = scratch(rows * d.Dv, dev), states = scratch(state_n, dev),
         dstates = scratch(state_n, dev);
  dispatch(k.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const float* gp = fptr(g);
    StateArgs sa{W.data<float>(),
                 U.data<float>(),
                 fptr(initial_state),
                 false,
                 states.data<float>(),
                 false,
                 nullptr,
                 d.Dv};
    factors_and_states<T>(geo, ptr<T>(k), ptr<T>(v), gp, beta.data<float>(), W.data<float>(),
                          U.data<float>(), sa, on.stream);
    launch(local_du_kernel<T>, dim3(geo.N, unsigned(BH)), kGateFloats + kC * kLd, on.stream, geo,
           ptr<T>(q), ptr<T>(k), gp, ptr<T>(d_o), dU.data<float>());
    ReverseArgs ra{W.data<float>(), dU.data<float>(), fptr(d_final_state), dstates.data<float>(),
                   fptr(d_initial_state)};
    launch(reverse_kernel<T>, dim3(d.Dv / kCols, unsigned(BH)),
           kGateFloats + size_t(d.Dk) * kLd + kC * kLd, on.stream, geo, ptr<T>(q), ptr<T>(k), gp,
           ptr<T>(d_o), ra);
    GradArgs ga{W.data<float>(),
                U.data<float>(),
                dU.data<float>(),
                states.data<float>(),
                dstates.data<float>(),
                dq.raw(),
                dk.raw(),
                dv.raw(),
                fptr(dg),
                dbeta.data<float>()};
    launch(grads_kernel<T>, dim3(geo.N, unsigned(BH)), GradSmem::floats(d.Dk), on.stream, geo,
           ptr<T>(q), ptr<T>(k), ptr<T>(v), gp, beta.data<float>(), ptr<T>(d_o), ga);
  });
}

void delta_rule_chunked_transition(const Tensor& k, const Tensor& g, const Tensor& beta,
                                   int64_t chunk, Tensor& transition) {
  const char* op = "delta_rule_chunked_transition (CUDA)";
  const Dims d = check_keys(k, g, beta, op);
  LINEA_CHECK(chunk > 0) << op << ": chunk = " << chunk << " must be positive";
  LINEA_CHECK(transition.defined()) << op << ": transition is required";
  check_state(transition, {d.B, d.H, d.Dk, d.Dk}, k, op, "transition");
  Dims dt = d;
  dt.Dv = d.Dk;
  const Geo geo = geo_of(dt, 1.0);
  const Device dev = k.device();
  OnDevice on(k);
  const int64_t BH = int64_t(d.B) * d.H;
  Tensor W = scratch(BH * geo.N * kC * d.Dk, dev);
  dispatch(k.dtype(), [&](auto zero) {
    using T = decltype(zero);
    StateArgs sa{W.data<float>(),          nullptr, nullptr, true, nullptr, false,
                 transition.data<float>(), d.Dk};
    factors_and_states<T>(geo, ptr<T>(k), static_cast<const T*>(nullptr), fptr(g),
                          beta.data<float>(), W.data<float>(), nullptr, sa, on.stream);
  });
}

}  // namespace linea::kernels::cuda
