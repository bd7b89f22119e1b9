// The vector-decay chunk scan (kernels/cuda/vector_decay_scan.h: the math, the steps, the
// contract). Shared-memory layout per block (one chunk of one (b, h)): rows of Dk + 1 floats for
// q, k and the cumulative decay b (the odd stride keeps the lanes of a warp that walk tokens on
// distinct banks), rows of Dv (+ 1) floats for v and dO, [C, C + 1] tiles for the scores. Dk =
// Dv = 128: 149 KB forward, 194 KB backward (one block per multiprocessor).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vector_decay_scan.h"

namespace linea::kernels::cuda {
namespace {

constexpr int kC = 64, kThreads = 256;

struct Geo {
  int B, T, H, Dk, Dv, NC;
  // The flat row of token t of head h of sequence b; times D for its first element.
  __device__ int64_t row(int b, int t, int h) const { return (int64_t(b) * T + t) * H + h; }
  __host__ __device__ int64_t state_size() const { return int64_t(Dk) * Dv; }
};

// sb[t * ld + i] = sum_(u <= t) g[t0 + u, i]: the chunk's inclusive cumulative log decay.
__device__ void load_cum_decay(const float* g, const Geo& d, int b, int h, int t0, int L, float* sb,
                               int ld) {
  for (int i = threadIdx.x; i < d.Dk; i += blockDim.x) {
    float acc = 0.0f;
    for (int t = 0; t < L; ++t) {
      acc += g[d.row(b, t0 + t, h) * d.Dk + i];
      sb[t * ld + i] = acc;
    }
  }
}

template <typename T>
__device__ void load_rows(const T* x, const Geo& d, int D, int b, int h, int t0, int L, float* s,
                          int ld) {
  for (int e = threadIdx.x; e < L * D; e += blockDim.x) {
    const int t = e / D, i = e % D;
    s[t * ld + i] = to_float(x[d.row(b, t0 + t, h) * D + i]);
  }
}

// Step 1 of a scan: states[bh][c + slot] = alpha sum_(s < L) (x_s (.) f_s)^T y_s with
// f_s = exp(b_last - b_s) (to_end: U_c of the forward, x = k, y = v, slot 1) or exp(b_s) (W_c of
// the backward, x = q, y = dO, alpha = scale, slot 0); G[bh][c] = b_last when G is not null.
template <typename T>
__global__ void chunk_state_kernel(const T* x, const T* y, const float* g, Geo d, float alpha,
                                   bool to_end, int slot, float* states, float* G) {
  extern __shared__ float sm[];
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int t0 = c * kC, L = min(kC, d.T - t0), ldk = d.Dk + 1;
  float* sb = sm;
  float* sx = sb + kC * ldk;
  float* sy = sx + kC * ldk;  // [kC][Dv]
  load_cum_decay(g, d, b, h, t0, L, sb, ldk);
  load_rows(x, d, d.Dk, b, h, t0, L, sx, ldk);
  load_rows(y, d, d.Dv, b, h, t0, L, sy, d.Dv);
  __syncthreads();
  for (int e = threadIdx.x; e < L * d.Dk; e += blockDim.x) {
    const int t = e / d.Dk, i = e % d.Dk;
    const float bt = sb[t * ldk + i];
    sx[t * ldk + i] *= expf(to_end ? sb[(L - 1) * ldk + i] - bt : bt);
  }
  if (G) {
    for (int i = threadIdx.x; i < d.Dk; i += blockDim.x)
      G[(int64_t(bh) * d.NC + c) * d.Dk + i] = sb[(L - 1) * ldk + i];
  }
  __syncthreads();
  float* out = states + (int64_t(bh) * (d.NC + 1) + c + slot) * d.state_size();
  for (int e = threadIdx.x; e < d.Dk * d.Dv; e += blockDim.x) {
    const int i = e / d.Dv, j = e % d.Dv;
    float acc = 0.0f;
    for (int s = 0; s < L; ++s) acc += sx[s * ldk + i] * sy[s * d.Dv + j];
    out[e] = alpha * acc;
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

// Step 3 of the forward: o of one chunk from its incoming state.
template <typename T>
__global__ void chunk_output_kernel(const T* q, const T* k, const T* v, const float* g,
                                    const float* states, Geo d, float scale, T* o) {
  extern __shared__ float sm[];
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int t0 = c * kC, L = min(kC, d.T - t0), ldk = d.Dk + 1, lda = kC + 1;
  float* sb = sm;
  float* sq = sb + kC * ldk;
  float* sk = sq + kC * ldk;
  float* sv = sk + kC * ldk;   // [kC][Dv]
  float* sa = sv + kC * d.Dv;  // [kC][kC + 1]
  load_cum_decay(g, d, b, h, t0, L, sb, ldk);
  load_rows(q, d, d.Dk, b, h, t0, L, sq, ldk);
  load_rows(k, d, d.Dk, b, h, t0, L, sk, ldk);
  load_rows(v, d, d.Dv, b, h, t0, L, sv, d.Dv);
  __syncthreads();
  // A_ts, s <= t: one exp per term, every exponent <= 0.
  for (int e = threadIdx.x; e < kC * kC; e += blockDim.x) {
    const int t = e / kC, s = e % kC;
    float acc = 0.0f;
    if (s <= t && t < L) {
      for (int i = 0; i < d.Dk; ++i)
        acc += sq[t * ldk + i] * sk[s * ldk + i] * expf(sb[t * ldk + i] - sb[s * ldk + i]);
    }
    sa[t * lda + s] = acc;
  }
  __syncthreads();
  // k is done with: its rows now hold q_t (.) exp(b_t), the inter-chunk query.
  for (int e = threadIdx.x; e < L * d.Dk; e += blockDim.x) {
    const int t = e / d.Dk, i = e % d.Dk;
    sk[t * ldk + i] = sq[t * ldk + i] * expf(sb[t * ldk + i]);
  }
  __syncthreads();
  const float* S = states + (int64_t(bh) * (d.NC + 1) + c) * d.state_size();
  for (int e = threadIdx.x; e < L * d.Dv; e += blockDim.x) {
    const int t = e / d.Dv, j = e % d.Dv;
    float acc = 0.0f;
    for (int i = 0; i < d.Dk; ++i) acc += sk[t * ldk + i] * S[int64_t(i) * d.Dv + j];
    for (int s = 0; s <= t; ++s) acc += sa[t * lda + s] * sv[s * d.Dv + j];
    o[d.row(b, t0 + t, h) * d.Dv + j] = from_float<T>(scale * acc);
  }
}

// The backward of one chunk: dq, dk (f32) and dv from S_c, dS_(c+1) (header formulas).
template <typename T>
__global__ void chunk_grad_kernel(const T* q, const T* k, const T* v, const T* d_o, const float* g,
                                  const float* S, const float* dS, Geo d, float scale, float* dq,
                                  float* dk, T* dv) {
  extern __shared__ float sm[];
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int t0 = c * kC, L = min(kC, d.T - t0), ldk = d.Dk + 1, ldv = d.Dv + 1, lda = kC + 1;
  float* sb = sm;
  float* sq = sb + kC * ldk;
  float* sk = sq + kC * ldk;
  float* sv = sk + kC * ldk;
  float* sdo = sv + kC * ldv;
  float* sa = sdo + kC * ldv;
  float* sp = sa + kC * lda;
  load_cum_decay(g, d, b, h, t0, L, sb, ldk);
  load_rows(q, d, d.Dk, b, h, t0, L, sq, ldk);
  load_rows(k, d, d.Dk, b, h, t0, L, sk, ldk);
  load_rows(v, d, d.Dv, b, h, t0, L, sv, ldv);
  load_rows(d_o, d, d.Dv, b, h, t0, L, sdo, ldv);
  __syncthreads();
  // A_ts = sum_i q_ti k_si exp(b_ti - b_si) and P_ts = scale dO_t . v_s for s <= t.
  for (int e = threadIdx.x; e < kC * kC; e += blockDim.x) {
    const int t = e / kC, s = e % kC;
    float a = 0.0f, p = 0.0f;
    if (s <= t && t < L) {
      for (int i = 0; i < d.Dk; ++i)
        a += sq[t * ldk + i] * sk[s * ldk + i] * expf(sb[t * ldk + i] - sb[s * ldk + i]);
      for (int j = 0; j < d.Dv; ++j) p += sdo[t * ldv + j] * sv[s * ldv + j];
    }
    sa[t * lda + s] = a;
    sp[t * lda + s] = scale * p;
  }
  __syncthreads();
  const float* Sc = S + (int64_t(bh) * (d.NC + 1) + c) * d.state_size();
  const float* dSn = dS + (int64_t(bh) * (d.NC + 1) + c + 1) * d.state_size();
  // dq_ti, the lanes of a warp on consecutive tokens (the state row i read once per warp).
  for (int e = threadIdx.x; e < kC * d.Dk; e += blockDim.x) {
    const int t = e % kC, i = e / kC;
    if (t >= L) continue;
    const float bt = sb[t * ldk + i];
    float inter = 0.0f;
    for (int j = 0; j < d.Dv; ++j) inter += sdo[t * ldv + j] * Sc[int64_t(i) * d.Dv + j];
    float acc = scale * expf(bt) * inter;
    for (int s = 0; s <= t; ++s)
      acc += sp[t * lda + s] * sk[s * ldk + i] * expf(bt - sb[s * ldk + i]);
    dq[d.row(b, t0 + t, h) * d.Dk + i] = acc;
  }
  // dk_si.
  for (int e = threadIdx.x; e < kC * d.Dk; e += blockDim.x) {
    const int s = e % kC, i = e / kC;
    if (s >= L) continue;
    const float bs = sb[s * ldk + i];
    float inter = 0.0f;
    for (int j = 0; j < d.Dv; ++j) inter += sv[s * ldv + j] * dSn[int64_t(i) * d.Dv + j];
    float acc = expf(sb[(L - 1) * ldk + i] - bs) * inter;
    for (int t = s; t < L; ++t)
      acc += sp[t * lda + s] * sq[t * ldk + i] * expf(sb[t * ldk + i] - bs);
    dk[d.row(b, t0 + s, h) * d.Dk + i] = acc;
  }
  __syncthreads();
  // k's rows become k_s (.) exp(b_last - b_s) for dv's inter-chunk term.
  for (int e = threadIdx.x; e < L * d.Dk; e += blockDim.x) {
    const int s = e / d.Dk, i = e % d.Dk;
    sk[s * ldk + i] *= expf(sb[(L - 1) * ldk + i] - sb[s * ldk + i]);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < L * d.Dv; e += blockDim.x) {
    const int s = e / d.Dv, j = e % d.Dv;
    float inter = 0.0f, intra = 0.0f;
    for (int i = 0; i < d.Dk; ++i) inter += sk[s * ldk + i] * dSn[int64_t(i) * d.Dv + j];
    for (int t = s; t < L; ++t) intra += sa[t * lda + s] * sdo[t * ldv + j];
    dv[d.row(b, t0 + s, h) * d.Dv + j] = from_float<T>(inter + scale * intra);
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

size_t state_smem(const Geo& d) { return sizeof(float) * kC * (2 * (d.Dk + 1) + d.Dv); }
size_t output_smem(const Geo& d) { return sizeof(float) * kC * (3 * (d.Dk + 1) + d.Dv + kC + 1); }
size_t grad_smem(const Geo& d) {
  return sizeof(float) * kC * (3 * (d.Dk + 1) + 2 * (d.Dv + 1) + 2 * (kC + 1));
}

template <typename K>
void allow_smem(K kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(bytes)));
}

Tensor workspace(const Geo& d, int64_t per_chunk, int64_t slots, Device dev) {
  return Tensor::empty({int64_t(d.B) * d.H * slots * per_chunk}, DType::kF32, dev);
}

// S_0 .. S_NC into `states` (and the final state), G_c into `G`.
template <typename T>
void forward_states(const Tensor& k, const Tensor& v, const Tensor& gk, const Geo& d,
                    const Tensor& initial_state, float* final_state, Tensor& states, Tensor& G,
                    const OnDevice& dev) {
  const dim3 grid(d.NC, d.B * d.H);
  allow_smem(chunk_state_kernel<T>, state_smem(d));
  chunk_state_kernel<T><<<grid, kThreads, state_smem(d), dev.stream>>>(
      ptr<T>(k), ptr<T>(v), gk.data<float>(), d, 1.0f, true, 1, states.data<float>(),
      G.data<float>());
  CUDA_CHECK_LAUNCH();
  const int64_t n = int64_t(d.B) * d.H * d.state_size();
  state_scan_kernel<<<grid_for(n, kThreads, dev.index), kThreads, 0, dev.stream>>>(
      states.data<float>(), G.data<float>(), d,
      initial_state.defined() ? initial_state.data<float>() : nullptr, false, final_state);
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
    forward_states<T>(k, v, gk, d, initial_state,
                      final_state.defined() ? final_state.data<float>() : nullptr, states, G, dev);
    if (!o.defined()) return;  // only the final state
    allow_smem(chunk_output_kernel<T>, output_smem(d));
    chunk_output_kernel<T><<<dim3(d.NC, d.B * d.H), kThreads, output_smem(d), dev.stream>>>(
        ptr<T>(q), ptr<T>(k), ptr<T>(v), gk.data<float>(), states.data<float>(), d, scale,
        ptr<T>(o));
    CUDA_CHECK_LAUNCH();
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
  const dim3 grid(d.NC, d.B * d.H);
  dispatch(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    forward_states<T>(k, v, gk, d, initial_state, nullptr, states, G, dev);
    // dS: W_c = scale sum_t (q_t (.) exp(b_t))^T dO_t per chunk, then the reversed scan.
    allow_smem(chunk_state_kernel<T>, state_smem(d));
    chunk_state_kernel<T><<<grid, kThreads, state_smem(d), dev.stream>>>(
        ptr<T>(q), ptr<T>(d_o), gk.data<float>(), d, scale, false, 0, dstates.data<float>(),
        nullptr);
    CUDA_CHECK_LAUNCH();
    const int64_t n = int64_t(d.B) * d.H * d.state_size();
    state_scan_kernel<<<grid_for(n, kThreads, dev.index), kThreads, 0, dev.stream>>>(
        dstates.data<float>(), G.data<float>(), d,
        d_final_state.defined() ? d_final_state.data<float>() : nullptr, true,
        d_initial_state.defined() ? d_initial_state.data<float>() : nullptr);
    CUDA_CHECK_LAUNCH();
    // dq, dk in f32 (dgk reads them), in the outputs themselves when those are f32.
    const bool f32 = std::is_same_v<T, float>;
    Tensor dq32 = f32 ? dq : Tensor::empty(dq.shape(), DType::kF32, device);
    Tensor dk32 = f32 ? dk : Tensor::empty(dk.shape(), DType::kF32, device);
    allow_smem(chunk_grad_kernel<T>, grad_smem(d));
    chunk_grad_kernel<T><<<grid, kThreads, grad_smem(d), dev.stream>>>(
        ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(d_o), gk.data<float>(), states.data<float>(),
        dstates.data<float>(), d, scale, dq32.data<float>(), dk32.data<float>(), ptr<T>(dv));
    CUDA_CHECK_LAUNCH();
    if (dgk.defined() || !f32) {
      gate_grad_kernel<T><<<grid, d.Dk, 0, dev.stream>>>(
          ptr<T>(q), ptr<T>(k), dq32.data<float>(), dk32.data<float>(), states.data<float>(),
          dstates.data<float>(), d, dgk.defined() ? dgk.data<float>() : nullptr, !f32, ptr<T>(dq),
          ptr<T>(dk));
      CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace linea::kernels::cuda
