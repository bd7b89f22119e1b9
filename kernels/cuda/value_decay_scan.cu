// The value-decay chunk scan (kernels/cuda/value_decay_scan.h: the math, the steps, the contract).
// One block of 256 threads per chunk of one (b, h), f32 on CUDA cores. Shared memory holds f32
// rows; rows that threads of one warp read at a fixed column with consecutive row indices (k in
// the scores, v, dO and bv in P, the state rows in dq, dk) have an odd stride, so those reads fall
// on distinct banks.
#include <algorithm>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/value_decay_scan.h"

namespace linea::kernels::cuda {
namespace {

constexpr int kC = 64, kThreads = 256;

struct Geo {
  int B, T, H, Dk, Dv, NC;
  // The flat row of token t of head h of sequence b; times D for its first element.
  __host__ __device__ int64_t row(int b, int t, int h) const {
    return (int64_t(b) * T + t) * H + h;
  }
  __host__ __device__ int64_t state_size() const { return int64_t(Dk) * Dv; }
  // The first element of slot `slot` of the (NC + 1)-slot state workspace of head bh.
  __host__ __device__ int64_t slot_offset(int bh, int slot) const {
    return (int64_t(bh) * (NC + 1) + slot) * state_size();
  }
};

// ---- device code (plain C++ apart from the CUDA built-ins) ------------------------------------

// sb[t * ld + j] = sum_(u <= t) gv[t0 + u, j]: the inclusive cumulative log decay; rows past the
// chunk's L tokens repeat row L - 1 (no decay), so every exponent stays finite and <= 0.
__device__ void load_cum_decay(const float* g, const Geo& d, int b, int h, int t0, int L, float* sb,
                               int ld) {
  for (int j = threadIdx.x; j < d.Dv; j += blockDim.x) {
    float acc = 0.0f;
    for (int t = 0; t < kC; ++t) {
      if (t < L) acc += g[d.row(b, t0 + t, h) * d.Dv + j];
      sb[t * ld + j] = acc;
    }
  }
}

// kC rows of D values into shared f32 rows of stride ld; rows >= L become zeros.
template <typename T>
__device__ void load_rows(const T* x, const Geo& d, int D, int b, int h, int t0, int L, float* s,
                          int ld) {
  for (int e = threadIdx.x; e < kC * D; e += blockDim.x) {
    const int t = e / D, i = e % D;
    s[t * ld + i] = t < L ? to_float(x[d.row(b, t0 + t, h) * D + i]) : 0.0f;
  }
}

// A state [Dk][Dv] f32 (global) into shared rows of stride ld.
__device__ void load_state(const float* S, int Dk, int Dv, float* s, int ld) {
  for (int e = threadIdx.x; e < Dk * Dv; e += blockDim.x) s[(e / Dv) * ld + e % Dv] = S[e];
}

// Step 1: states[bh][c + slot] = alpha sum_(s < L) x_s^T (y_s (.) f_s) with f_s = exp(bv_last -
// bv_s) (to_end: U_c of the forward, x = k, y = v, slot 1) or exp(bv_s) (W_c of the backward,
// x = q, y = dO, alpha = scale, slot 0); G[bh][c] = bv_last when G is not null. Shared: x [kC][Dk],
// y (.) f [kC][Dv].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    chunk_state_kernel(const T* x, const T* y, const float* g, Geo d, float alpha, bool to_end,
                       int slot, float* states, float* G) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* sx = reinterpret_cast<float*>(smem);
  float* sy = sx + kC * d.Dk;
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int t0 = c * kC, len = min(kC, d.T - t0);
  load_rows(x, d, d.Dk, b, h, t0, len, sx, d.Dk);
  // Per column: the cumulative decay (kept in sy for the moment), then the decayed y over it.
  for (int j = threadIdx.x; j < d.Dv; j += blockDim.x) {
    float acc = 0.0f;
    for (int t = 0; t < kC; ++t) {
      if (t < len) acc += g[d.row(b, t0 + t, h) * d.Dv + j];
      sy[t * d.Dv + j] = acc;
    }
    for (int t = 0; t < kC; ++t) {
      const float bt = sy[t * d.Dv + j];
      const float yv = t < len ? to_float(y[d.row(b, t0 + t, h) * d.Dv + j]) : 0.0f;
      sy[t * d.Dv + j] = yv * __expf(to_end ? acc - bt : bt);
    }
    if (G) G[(int64_t(bh) * d.NC + c) * d.Dv + j] = acc;
  }
  __syncthreads();
  float* out = states + d.slot_offset(bh, c + slot);
  for (int e = threadIdx.x; e < d.Dk * d.Dv; e += blockDim.x) {
    const int i = e / d.Dv, j = e % d.Dv;
    float acc = 0.0f;
    for (int t = 0; t < len; ++t) acc += sx[t * d.Dk + i] * sy[t * d.Dv + j];
    out[e] = alpha * acc;
  }
}

// Step 2: per state element (i, j), through the chunks. Forward: slot 0 = init (or 0), slot c + 1
// = exp(G_c[j]) slot c + U_c (U_c found in slot c + 1). Reverse: slot NC = init, slot c =
// exp(G_c[j]) slot (c + 1) + W_c (W_c found in slot c). `last` (may be null) gets the final value.
__global__ void state_scan_kernel(float* states, const float* G, Geo d, const float* init,
                                  bool reverse, float* last) {
  const int64_t per = d.state_size(), n = int64_t(d.B) * d.H * per;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += stride) {
    const int64_t bh = e / per, ij = e % per, j = ij % d.Dv;
    float* base = states + bh * (d.NC + 1) * per + ij;
    const float* gb = G + bh * d.NC * d.Dv + j;
    float s = init ? init[e] : 0.0f;
    if (!reverse) {
      base[0] = s;
      for (int c = 0; c < d.NC; ++c) {
        s = expf(gb[int64_t(c) * d.Dv]) * s + base[(c + 1) * per];
        base[(c + 1) * per] = s;
      }
    } else {
      base[d.NC * per] = s;
      for (int c = d.NC - 1; c >= 0; --c) {
        s = expf(gb[int64_t(c) * d.Dv]) * s + base[c * per];
        base[c * per] = s;
      }
    }
    if (last) last[e] = s;
  }
}

// Shared layout of the output kernel (f32 elements): q [kC][Dk], k [kC][Dk + 1], A [kC][kC + 1],
// y [kC][Dv], bv [kC][Dv], the state [Dk][Dv].
struct OutLayout {
  int ldk, lda;
  int64_t q, k, a, y, b, s, floats;
  __host__ __device__ explicit OutLayout(const Geo& d)
      : ldk(d.Dk + 1),
        lda(kC + 1),
        q(0),
        k(q + int64_t(kC) * d.Dk),
        a(k + int64_t(kC) * ldk),
        y(a + int64_t(kC) * lda),
        b(y + int64_t(kC) * d.Dv),
        s(b + int64_t(kC) * d.Dv),
        floats(s + int64_t(d.Dk) * d.Dv) {}
};

// Step 3 of the forward (o) and the dv of the backward, one chunk each, with A_ts = q_t . k_s:
//   o_t[j]  = scale (exp(bv_t[j]) (q_t S_c)[j] + sum_(s <= t) A_ts v_s[j] exp(bv_t[j] - bv_s[j]))
//   dv_s[j] = exp(bv_last[j] - bv_s[j]) (k_s D_(c+1))[j]
//             + scale sum_(t >= s) A_ts dO_t[j] exp(bv_t[j] - bv_s[j])                  (kDv)
// y = v (o) or dO (dv); the state is slot c (S_c) or c + 1 (D_(c+1)) of `states`.
template <typename T, typename TO, bool kDv>
__global__ void __launch_bounds__(kThreads)
    chunk_output_kernel(const T* q, const T* k, const T* y, const float* g, const float* states,
                        Geo d, float scale, TO* out) {
  extern __shared__ __align__(16) unsigned char smem[];
  const OutLayout L(d);
  float* base = reinterpret_cast<float*>(smem);
  float *sq = base + L.q, *sk = base + L.k, *sA = base + L.a, *sy = base + L.y, *sb = base + L.b,
        *sS = base + L.s;
  const int Dk = d.Dk, Dv = d.Dv, ldk = L.ldk, lda = L.lda;
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int t0 = c * kC, len = min(kC, d.T - t0);
  load_rows(q, d, Dk, b, h, t0, len, sq, Dk);
  load_rows(k, d, Dk, b, h, t0, len, sk, ldk);
  load_rows(y, d, Dv, b, h, t0, len, sy, Dv);
  load_cum_decay(g, d, b, h, t0, len, sb, Dv);
  load_state(states + d.slot_offset(bh, c + (kDv ? 1 : 0)), Dk, Dv, sS, Dv);
  __syncthreads();
  // The scores, s <= t (0 above the diagonal, never read).
  for (int e = threadIdx.x; e < kC * kC; e += blockDim.x) {
    const int t = e / kC, s = e % kC;
    float acc = 0.0f;
    if (s <= t)
      for (int i = 0; i < Dk; ++i) acc += sq[t * Dk + i] * sk[s * ldk + i];
    sA[t * lda + s] = acc;
  }
  __syncthreads();
  // Thread (r, j): token r of the chunk (t for o, s for dv), value column j.
  for (int e = threadIdx.x; e < kC * Dv; e += blockDim.x) {
    const int r = e / Dv, j = e % Dv;
    if (r >= len) continue;
    const float* x = kDv ? sk + r * ldk : sq + r * Dk;
    float inter = 0.0f;
    for (int i = 0; i < Dk; ++i) inter += x[i] * sS[i * Dv + j];
    const float br = sb[r * Dv + j];
    float intra = 0.0f, res;
    if (!kDv) {
      for (int s = 0; s <= r; ++s)
        intra += sA[r * lda + s] * sy[s * Dv + j] * __expf(br - sb[s * Dv + j]);
      res = scale * (__expf(br) * inter + intra);
    } else {
      for (int t = r; t < kC; ++t)
        intra += sA[t * lda + r] * sy[t * Dv + j] * __expf(sb[t * Dv + j] - br);
      res = __expf(sb[(kC - 1) * Dv + j] - br) * inter + scale * intra;
    }
    out[d.row(b, t0 + r, h) * Dv + j] = from_float<TO>(res);
  }
}

// Shared layout of the gradient kernel (f32 elements): dO, v, bv [kC][Dv + 1] each, P
// [kC][kC + 1], x [kC][Dk] (k for dq, q for dk), the state [Dk][Dv + 1].
struct GradLayout {
  int ldv, ldp;
  int64_t o, v, b, p, x, s, floats;
  __host__ __device__ explicit GradLayout(const Geo& d)
      : ldv(d.Dv + 1),
        ldp(kC + 1),
        o(0),
        v(o + int64_t(kC) * ldv),
        b(v + int64_t(kC) * ldv),
        p(b + int64_t(kC) * ldv),
        x(p + int64_t(kC) * ldp),
        s(x + int64_t(kC) * d.Dk),
        floats(s + int64_t(d.Dk) * ldv) {}
};

// dq (kDk false, the state S_c) or dk (kDk true, the state D_(c+1)) of one chunk, f32, with
// P_ts = scale sum_j dO_t[j] v_s[j] exp(bv_t[j] - bv_s[j]), s <= t:
//   dq_t = scale (dO_t (.) exp(bv_t)) S_c^T + sum_(s <= t) P_ts k_s
//   dk_s = (v_s (.) exp(bv_last - bv_s)) D_(c+1)^T + sum_(t >= s) P_ts q_t
template <typename T, bool kDk>
__global__ void __launch_bounds__(kThreads)
    chunk_grad_kernel(const T* q, const T* k, const T* v, const T* d_o, const float* g,
                      const float* states, Geo d, float scale, float* dx) {
  extern __shared__ __align__(16) unsigned char smem[];
  const GradLayout L(d);
  float* base = reinterpret_cast<float*>(smem);
  float *sdo = base + L.o, *sv = base + L.v, *sb = base + L.b, *sP = base + L.p, *sx = base + L.x,
        *sS = base + L.s;
  const int Dk = d.Dk, Dv = d.Dv, ldv = L.ldv, ldp = L.ldp;
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int t0 = c * kC, len = min(kC, d.T - t0);
  load_rows(d_o, d, Dv, b, h, t0, len, sdo, ldv);
  load_rows(v, d, Dv, b, h, t0, len, sv, ldv);
  load_rows(kDk ? q : k, d, Dk, b, h, t0, len, sx, Dk);
  load_cum_decay(g, d, b, h, t0, len, sb, ldv);
  load_state(states + d.slot_offset(bh, c + (kDk ? 1 : 0)), Dk, Dv, sS, ldv);
  __syncthreads();
  for (int e = threadIdx.x; e < kC * kC; e += blockDim.x) {
    const int t = e / kC, s = e % kC;
    float acc = 0.0f;
    if (s <= t)
      for (int j = 0; j < Dv; ++j)
        acc += sdo[t * ldv + j] * sv[s * ldv + j] * __expf(sb[t * ldv + j] - sb[s * ldv + j]);
    sP[t * ldp + s] = scale * acc;
  }
  __syncthreads();
  // The row operand of the state product, in place: dO (.) exp(bv) (dq) or v (.) exp(bv_last -
  // bv) (dk).
  float* sop = kDk ? sv : sdo;
  for (int e = threadIdx.x; e < kC * Dv; e += blockDim.x) {
    const int t = e / Dv, j = e % Dv;
    const float bt = sb[t * ldv + j];
    sop[t * ldv + j] *= __expf(kDk ? sb[(kC - 1) * ldv + j] - bt : bt);
  }
  __syncthreads();
  // Thread (r, i): token r of the chunk (t for dq, s for dk), key column i.
  for (int e = threadIdx.x; e < kC * Dk; e += blockDim.x) {
    const int r = e / Dk, i = e % Dk;
    if (r >= len) continue;
    float inter = 0.0f;
    for (int j = 0; j < Dv; ++j) inter += sop[r * ldv + j] * sS[i * ldv + j];
    float intra = 0.0f;
    if (!kDk) {
      for (int s = 0; s <= r; ++s) intra += sP[r * ldp + s] * sx[s * Dk + i];
    } else {
      for (int t = r; t < kC; ++t) intra += sP[t * ldp + r] * sx[t * Dk + i];
    }
    dx[d.row(b, t0 + r, h) * Dk + i] = (kDk ? 1.0f : scale) * inter + intra;
  }
}

// dgv_r = colsum(D_(c+1) (.) S_(c+1)) + sum_(t >= r in the chunk) (o_t (.) dO_t - v_t (.) dv_t),
// one block per chunk, a thread per value column.
template <typename T>
__global__ void gate_grad_kernel(const float* o32, const T* d_o, const T* v, const float* dv32,
                                 const float* S, const float* dS, Geo d, float* dgv) {
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int t0 = c * kC, len = min(kC, d.T - t0);
  const int64_t off = d.slot_offset(bh, c + 1);
  for (int j = threadIdx.x; j < d.Dv; j += blockDim.x) {
    float acc = 0.0f;
    for (int i = 0; i < d.Dk; ++i)
      acc += S[off + int64_t(i) * d.Dv + j] * dS[off + int64_t(i) * d.Dv + j];
    for (int t = len - 1; t >= 0; --t) {
      const int64_t idx = d.row(b, t0 + t, h) * d.Dv + j;
      acc += o32[idx] * to_float(d_o[idx]) - to_float(v[idx]) * dv32[idx];
      dgv[idx] = acc;
    }
  }
}

// ---- host side ----------------------------------------------------------------------------------

Geo geometry(const Tensor& q, const Tensor& v) {
  Geo d;
  d.B = int(q.dim(0)), d.T = int(q.dim(1)), d.H = int(q.dim(2)), d.Dk = int(q.dim(3));
  d.Dv = int(v.dim(3)), d.NC = (d.T + kC - 1) / kC;
  LINEA_CHECK((d.Dk == 64 || d.Dk == 128) && (d.Dv == 64 || d.Dv == 128))
      << "gated linear attention with a value-side gate gv (CUDA): Dk = " << d.Dk
      << ", Dv = " << d.Dv << "; the value-decay scan takes Dk and Dv in {64, 128}";
  LINEA_CHECK(int64_t(d.B) * d.H <= 65535)
      << "gated linear attention with a value-side gate gv (CUDA): B * H = " << int64_t(d.B) * d.H
      << " exceeds the grid's 65535";
  return d;
}

template <typename K>
void launch_setup(K kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(bytes)));
}

Tensor workspace(const Geo& d, int64_t per_chunk, int64_t slots, Device dev) {
  return Tensor::empty({int64_t(d.B) * d.H * slots * per_chunk}, DType::kF32, dev);
}

dim3 chunk_grid(const Geo& d) { return dim3(d.NC, d.B * d.H); }

template <typename T>
void chunk_states(const T* x, const T* y, const Tensor& gv, const Geo& d, float alpha, bool to_end,
                  int slot, Tensor& states, float* G, const OnDevice& dev) {
  const size_t bytes = sizeof(float) * kC * (d.Dk + d.Dv);
  launch_setup(chunk_state_kernel<T>, bytes);
  chunk_state_kernel<T><<<chunk_grid(d), kThreads, bytes, dev.stream>>>(
      x, y, gv.data<float>(), d, alpha, to_end, slot, states.data<float>(), G);
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

template <typename T, typename TO, bool kDv>
void chunk_outputs(const T* q, const T* k, const T* y, const Tensor& gv, const Tensor& states,
                   const Geo& d, float scale, TO* out, const OnDevice& dev) {
  const size_t bytes = sizeof(float) * OutLayout(d).floats;
  launch_setup(chunk_output_kernel<T, TO, kDv>, bytes);
  chunk_output_kernel<T, TO, kDv><<<chunk_grid(d), kThreads, bytes, dev.stream>>>(
      q, k, y, gv.data<float>(), states.data<float>(), d, scale, out);
  CUDA_CHECK_LAUNCH();
}

template <typename T, bool kDk>
void chunk_grads(const T* q, const T* k, const T* v, const T* d_o, const Tensor& gv,
                 const Tensor& states, const Geo& d, float scale, Tensor& dx, const OnDevice& dev) {
  const size_t bytes = sizeof(float) * GradLayout(d).floats;
  launch_setup(chunk_grad_kernel<T, kDk>, bytes);
  chunk_grad_kernel<T, kDk><<<chunk_grid(d), kThreads, bytes, dev.stream>>>(
      q, k, v, d_o, gv.data<float>(), states.data<float>(), d, scale, dx.data<float>());
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void value_decay_scan_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gv,
                              float scale, const Tensor& initial_state, Tensor& o,
                              Tensor& final_state) {
  const Geo d = geometry(q, v);
  OnDevice dev(q);
  Tensor states = workspace(d, d.state_size(), d.NC + 1, q.device());
  Tensor G = workspace(d, d.Dv, d.NC, q.device());
  dispatch(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    chunk_states<T>(ptr<T>(k), ptr<T>(v), gv, d, 1.0f, true, 1, states, G.data<float>(), dev);
    scan_states(states, G, d, initial_state, false,
                final_state.defined() ? final_state.data<float>() : nullptr, dev);
    if (!o.defined()) return;  // only the final state
    chunk_outputs<T, T, false>(ptr<T>(q), ptr<T>(k), ptr<T>(v), gv, states, d, scale, ptr<T>(o),
                               dev);
  });
}

void value_decay_scan_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gv,
                               float scale, const Tensor& initial_state, const Tensor& d_o,
                               const Tensor& d_final_state, Tensor& dq, Tensor& dk, Tensor& dv,
                               Tensor& dgv, Tensor& d_initial_state) {
  const Geo d = geometry(q, v);
  OnDevice dev(q);
  const Device device = q.device();
  Tensor states = workspace(d, d.state_size(), d.NC + 1, device);
  Tensor dstates = workspace(d, d.state_size(), d.NC + 1, device);
  Tensor G = workspace(d, d.Dv, d.NC, device);
  dispatch(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    // S_0 .. S_NC, then D: W_c = scale sum_t q_t^T (dO_t (.) exp(bv_t)) per chunk, reversed.
    chunk_states<T>(ptr<T>(k), ptr<T>(v), gv, d, 1.0f, true, 1, states, G.data<float>(), dev);
    scan_states(states, G, d, initial_state, false, nullptr, dev);
    chunk_states<T>(ptr<T>(q), ptr<T>(d_o), gv, d, scale, false, 0, dstates, nullptr, dev);
    scan_states(dstates, G, d, d_final_state, true,
                d_initial_state.defined() ? d_initial_state.data<float>() : nullptr, dev);
    // dq, dk, dv in f32 (dgv reads dv), in the outputs themselves when those are f32.
    const bool f32 = std::is_same_v<T, float>;
    Tensor dq32 = f32 ? dq : Tensor::empty(dq.shape(), DType::kF32, device);
    Tensor dk32 = f32 ? dk : Tensor::empty(dk.shape(), DType::kF32, device);
    Tensor dv32 = f32 ? dv : Tensor::empty(dv.shape(), DType::kF32, device);
    chunk_grads<T, false>(ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(d_o), gv, states, d, scale, dq32,
                          dev);
    chunk_grads<T, true>(ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(d_o), gv, dstates, d, scale, dk32,
                         dev);
    chunk_outputs<T, float, true>(ptr<T>(q), ptr<T>(k), ptr<T>(d_o), gv, dstates, d, scale,
                                  dv32.data<float>(), dev);
    if (dgv.defined()) {
      // o again (f32) for o (.) dO.
      Tensor o32 = Tensor::empty(v.shape(), DType::kF32, device);
      chunk_outputs<T, float, false>(ptr<T>(q), ptr<T>(k), ptr<T>(v), gv, states, d, scale,
                                     o32.data<float>(), dev);
      gate_grad_kernel<T><<<chunk_grid(d), std::min(d.Dv, kThreads), 0, dev.stream>>>(
          o32.data<float>(), ptr<T>(d_o), ptr<T>(v), dv32.data<float>(), states.data<float>(),
          dstates.data<float>(), d, dgv.data<float>());
      CUDA_CHECK_LAUNCH();
    }
    if (!f32) {
      dq.copy_from(dq32);
      dk.copy_from(dk32);
      dv.copy_from(dv32);
    }
  });
}

}  // namespace linea::kernels::cuda
