// CUDA incoming-state term of a segment's outputs (kernels/state_output.h).
//
// 1. The cumulative log decays exp(b_t) of a gate [B, T, H, W] (W = Dk, Dv, or 1 for one scalar
//    a head) in three passes over blocks of kSeg tokens: block sums, an exclusive prefix over
//    the blocks, then each block's running sum from its prefix (no thread walks the whole T).
// 2. The decayed rows q (.) exp(b) in f32, transposed to [B, H, T, Dk], so that each head is one
//    row-major matrix (and likewise d_o (.) exp(bv) for the gradient).
// 3. One cuBLAS f32 GEMM a head through kernels::cuda::gemm: [T, Dk] x [Dk, Dv] for the outputs,
//    [Dk, T] x [T, Dv] for the state gradient.
// 4. The forward adds scale * (.) exp(bv) of the product into o in o's dtype.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kSeg = 128;  // tokens per block of the cumulative sum

struct Geo {
  int B, T, H, W;  // the gate's [B, T, H, W]
  __host__ __device__ int64_t lanes() const { return int64_t(B) * H * W; }
  __host__ __device__ int segs() const { return (T + kSeg - 1) / kSeg; }
  // The element (b, t, h, w) of lane (b, h, w).
  __device__ int64_t at(int64_t lane, int t) const {
    const int64_t b = lane / (int64_t(H) * W), hw = lane % (int64_t(H) * W);
    return (b * T + t) * int64_t(H) * W + hw;
  }
};

// sums[s, lane] = sum of g over the tokens of block s.
__global__ void segment_sums(const float* g, Geo d, float* sums) {
  const int64_t n = d.lanes() * d.segs();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int s = static_cast<int>(i / d.lanes());
    const int64_t lane = i % d.lanes();
    float acc = 0.f;
    for (int t = s * kSeg, e = min(d.T, t + kSeg); t < e; ++t) acc += g[d.at(lane, t)];
    sums[i] = acc;
  }
}

// sums[s, lane] becomes the exclusive prefix: the sum over the blocks before s.
__global__ void segment_prefix(Geo d, float* sums) {
  for (int64_t lane = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; lane < d.lanes();
       lane += int64_t(gridDim.x) * blockDim.x) {
    float run = 0.f;
    for (int s = 0; s < d.segs(); ++s) {
      const float x = sums[s * d.lanes() + lane];
      sums[s * d.lanes() + lane] = run;
      run += x;
    }
  }
}

// e[b, t, h, w] = exp(sum_{u <= t} g[b, u, h, w]).
__global__ void segment_exp_cumsum(const float* g, Geo d, const float* prefix, float* e) {
  const int64_t n = d.lanes() * d.segs();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int s = static_cast<int>(i / d.lanes());
    const int64_t lane = i % d.lanes();
    float run = prefix[i];
    for (int t = s * kSeg, end = min(d.T, t + kSeg); t < end; ++t) {
      const int64_t at = d.at(lane, t);
      run += g[at];
      e[at] = expf(run);
    }
  }
}

// exp of the inclusive cumulative sum over T of g [B, T, H] or [B, T, H, W] (f32).
Tensor exp_cumsum(const Tensor& g, const OnDevice& dev) {
  const Geo d{int(g.dim(0)), int(g.dim(1)), int(g.dim(2)), g.ndim() == 4 ? int(g.dim(3)) : 1};
  Tensor sums = Tensor::empty({d.segs(), d.lanes()}, DType::kF32, g.device());
  Tensor e = Tensor::empty(g.shape(), DType::kF32, g.device());
  const int64_t n = d.lanes() * d.segs();
  segment_sums<<<grid_for(n, kThreads, dev.index), kThreads, 0, dev.stream>>>(g.data<float>(), d,
                                                                              sums.data<float>());
  CUDA_CHECK_LAUNCH();
  segment_prefix<<<grid_for(d.lanes(), kThreads, dev.index), kThreads, 0, dev.stream>>>(
      d, sums.data<float>());
  CUDA_CHECK_LAUNCH();
  segment_exp_cumsum<<<grid_for(n, kThreads, dev.index), kThreads, 0, dev.stream>>>(
      g.data<float>(), d, sums.data<float>(), e.data<float>());
  CUDA_CHECK_LAUNCH();
  return e;
}

// out[b, h, t, i] = x[b, t, h, i] * (e ? e[b, t, h, i or scalar] : 1), f32.
template <typename T>
__global__ void decayed_heads(const T* x, const float* e, bool scalar, int B, int Tn, int H, int D,
                              float* out) {
  const int64_t n = int64_t(B) * Tn * H * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % D);
    const int64_t row = i / D;  // (b, t, h)
    const int h = static_cast<int>(row % H);
    const int t = static_cast<int>((row / H) % Tn);
    const int64_t b = row / (int64_t(H) * Tn);
    float v = to_float(x[i]);
    if (e) v *= e[scalar ? row : i];
    out[((b * H + h) * Tn + t) * D + c] = v;
  }
}

// o[b, t, h, j] += scale * y[b, h, t, j] * (ev ? ev[b, t, h, j] : 1).
template <typename T>
__global__ void add_heads(const float* y, const float* ev, float scale, int B, int Tn, int H, int D,
                          T* o) {
  const int64_t n = int64_t(B) * Tn * H * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % D);
    const int64_t row = i / D;
    const int h = static_cast<int>(row % H);
    const int t = static_cast<int>((row / H) % Tn);
    const int64_t b = row / (int64_t(H) * Tn);
    float v = scale * y[((b * H + h) * Tn + t) * D + c];
    if (ev) v *= ev[i];
    o[i] = from_float<T>(to_float(o[i]) + v);
  }
}

struct Dims {
  int B, T, H, Dk, Dv;
};

Dims check_args(const Tensor& q, const Tensor& gk, const Tensor& gv, const Tensor& s,
                const Tensor& y, const char* op, const char* y_name, const char* s_name) {
  check_float(q, op, "q");
  LINEA_CHECK(q.ndim() == 4) << op << ": q " << describe(q) << " must be [B, T, H, Dk]";
  check_float(y, op, y_name);
  check_same_device(y, q, op, y_name, "q");
  const Dims d{int(q.dim(0)), int(q.dim(1)), int(q.dim(2)), int(q.dim(3)),
               y.ndim() == 4 ? int(y.dim(3)) : -1};
  LINEA_CHECK(y.shape() == (Shape{d.B, d.T, d.H, d.Dv}))
      << op << ": " << y_name << " " << describe(y) << " must be [B, T, H, Dv] with q's B, T, H";
  check_dtype(s, DType::kF32, op, s_name);
  check_same_device(s, q, op, s_name, "q");
  LINEA_CHECK(s.shape() == (Shape{d.B, d.H, d.Dk, d.Dv}))
      << op << ": " << s_name << " " << describe(s) << " must be f32 [B, H, Dk, Dv]";
  if (gk.defined()) {
    check_dtype(gk, DType::kF32, op, "gk");
    check_same_device(gk, q, op, "gk", "q");
    LINEA_CHECK(gk.shape() == q.shape() || gk.shape() == (Shape{d.B, d.T, d.H}))
        << op << ": gk " << describe(gk) << " must be f32 [B, T, H, Dk] or [B, T, H]";
  }
  if (gv.defined()) {
    check_dtype(gv, DType::kF32, op, "gv");
    check_same_device(gv, q, op, "gv", "q");
    LINEA_CHECK(gv.shape() == y.shape())
        << op << ": gv " << describe(gv) << " must be f32 [B, T, H, Dv]";
  }
  return d;
}

// x (.) e in f32 as [B * H, T, D] (e undefined: x itself).
Tensor decayed(const Tensor& x, const Tensor& e, const OnDevice& dev) {
  const int B = int(x.dim(0)), Tn = int(x.dim(1)), H = int(x.dim(2)), D = int(x.dim(3));
  Tensor out = Tensor::empty({int64_t(B) * H, Tn, D}, DType::kF32, x.device());
  const bool scalar = e.defined() && e.ndim() == 3;
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    decayed_heads<T><<<grid_for(x.numel(), kThreads, dev.index), kThreads, 0, dev.stream>>>(
        ptr<T>(x), e.defined() ? e.data<float>() : nullptr, scalar, B, Tn, H, D, out.data<float>());
  });
  CUDA_CHECK_LAUNCH();
  return out;
}

Tensor head(const Tensor& t, int64_t i) { return t.slice(i, i + 1).view({t.dim(1), t.dim(2)}); }

}  // namespace

void state_output_forward(const Tensor& q, const Tensor& gk, const Tensor& gv, double scale,
                          const Tensor& s, Tensor& o) {
  const Dims d = check_args(q, gk, gv, s, o, "state_output_forward (CUDA)", "o", "s");
  if (q.numel() == 0 || o.numel() == 0) return;
  OnDevice dev(q);
  const Tensor qd = decayed(q, gk.defined() ? exp_cumsum(gk, dev) : Tensor(), dev);
  const Tensor ev = gv.defined() ? exp_cumsum(gv, dev) : Tensor();
  const Tensor sh = s.view({int64_t(d.B) * d.H, d.Dk, d.Dv});
  Tensor y = Tensor::empty({int64_t(d.B) * d.H, d.T, d.Dv}, DType::kF32, q.device());
  for (int64_t i = 0; i < int64_t(d.B) * d.H; ++i) {
    Tensor yi = head(y, i);
    gemm(head(qd, i), false, head(sh, i), false, yi, 1.0, 0.0);
  }
  dispatch(o.dtype(), [&](auto tag) {
    using T = decltype(tag);
    add_heads<T><<<grid_for(o.numel(), kThreads, dev.index), kThreads, 0, dev.stream>>>(
        y.data<float>(), ev.defined() ? ev.data<float>() : nullptr, static_cast<float>(scale), d.B,
        d.T, d.H, d.Dv, ptr<T>(o));
  });
  CUDA_CHECK_LAUNCH();
}

void state_output_state_grad(const Tensor& q, const Tensor& gk, const Tensor& gv, double scale,
                             const Tensor& d_o, Tensor& ds) {
  const Dims d = check_args(q, gk, gv, ds, d_o, "state_output_state_grad (CUDA)", "d_o", "ds");
  if (ds.numel() == 0) return;
  if (d.T == 0) {
    ds.zero_();
    return;
  }
  OnDevice dev(q);
  const Tensor qd = decayed(q, gk.defined() ? exp_cumsum(gk, dev) : Tensor(), dev);
  const Tensor dd = decayed(d_o, gv.defined() ? exp_cumsum(gv, dev) : Tensor(), dev);
  Tensor dsh = ds.view({int64_t(d.B) * d.H, d.Dk, d.Dv});
  for (int64_t i = 0; i < int64_t(d.B) * d.H; ++i) {
    Tensor di = head(dsh, i);
    gemm(head(qd, i), true, head(dd, i), false, di, scale, 0.0);
  }
}

}  // namespace linea::kernels::cuda
