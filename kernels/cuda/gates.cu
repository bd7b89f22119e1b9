// CUDA gates (kernels/gates.h): element-wise in f32 (the CPU evaluates in f64), one dtype per call
// (f32 or bf16), 16-byte packs where every tensor is aligned, grid-stride. The per-head parameter
// gradients of delta_log_decay_backward are row sums in f64 in a fixed order (column_sum.cuh),
// written into f32 gradients. Stable forms as on the CPU: no exponent is ever positive.
#include <array>

#include "kernels/cuda/column_sum.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

__device__ __forceinline__ float sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  const float e = expf(x);
  return e / (1.0f + e);
}

__device__ __forceinline__ float softplus(float x) {
  return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
}

__device__ __forceinline__ float log_sigmoid(float x) {
  return x >= 0.0f ? -log1pf(expf(-x)) : x - log1pf(expf(x));
}

__device__ __forceinline__ float act(Activation a, float x) {
  switch (a) {
    case Activation::kSilu:
      return x * sigmoid(x);
    case Activation::kSigmoid:
      return sigmoid(x);
    default:
      return x;
  }
}

__device__ __forceinline__ float act_grad(Activation a, float x) {
  switch (a) {
    case Activation::kSilu: {
      const float s = sigmoid(x);
      return s * (1.0f + x * (1.0f - s));
    }
    case Activation::kSigmoid: {
      const float s = sigmoid(x);
      return s * (1.0f - s);
    }
    default:
      return 1.0f;
  }
}

// ---- the element-wise maps: y[NO] = f(x[NI]) per element ------------------------------------

struct ActForward {
  Activation a;
  __device__ void operator()(const float* x, float* y) const { y[0] = act(a, x[0]); }
};
struct ActBackward {  // (x, dy) -> dx
  Activation a;
  __device__ void operator()(const float* x, float* y) const { y[0] = x[1] * act_grad(a, x[0]); }
};
struct GateForward {  // (g, n) -> y
  Activation a;
  __device__ void operator()(const float* x, float* y) const { y[0] = x[1] * act(a, x[0]); }
};
struct GateBackward {  // (g, n, dy) -> (dg, dn)
  Activation a;
  __device__ void operator()(const float* x, float* y) const {
    y[0] = x[2] * x[1] * act_grad(a, x[0]);
    y[1] = x[2] * act(a, x[0]);
  }
};
struct LogSigmoidForward {
  float inv_c;
  __device__ void operator()(const float* x, float* y) const { y[0] = log_sigmoid(x[0]) * inv_c; }
};
struct LogSigmoidBackward {  // (z, dgk) -> dz
  float inv_c;
  __device__ void operator()(const float* x, float* y) const {
    y[0] = x[1] * sigmoid(-x[0]) * inv_c;
  }
};
struct ForgetForward {  // z -> (gk, k)
  float lb;
  __device__ void operator()(const float* x, float* y) const {
    y[0] = lb == 0.0f ? log_sigmoid(x[0]) : logf(lb + (1.0f - lb) * sigmoid(x[0]));
    y[1] = (1.0f - lb) * sigmoid(-x[0]);
  }
};
struct ForgetBackward {  // (z, dgk, dk) -> dz
  float lb;
  __device__ void operator()(const float* x, float* y) const {
    const float s = sigmoid(x[0]), sm = sigmoid(-x[0]);
    const float df = (1.0f - lb) * s * sm;
    const float dlogf = lb == 0.0f ? sm : df / (lb + (1.0f - lb) * s);
    y[0] = x[1] * dlogf - x[2] * df;
  }
};
struct SoftplusForward {
  __device__ void operator()(const float* x, float* y) const { y[0] = softplus(x[0]); }
};
struct SoftplusBackward {  // (z, dy) -> dz
  __device__ void operator()(const float* x, float* y) const { y[0] = x[1] * sigmoid(x[0]); }
};
struct BetaForward {
  float scale;
  __device__ void operator()(const float* x, float* y) const { y[0] = scale * sigmoid(x[0]); }
};
struct BetaBackward {  // (b, dbeta) -> db
  float scale;
  __device__ void operator()(const float* x, float* y) const {
    const float s = sigmoid(x[0]);
    y[0] = x[1] * scale * s * (1.0f - s);
  }
};

template <typename T, int NI, int NO>
struct MapPtrs {
  const T* in[NI];
  T* out[NO];
};

template <int N, typename T, int NI, int NO, typename F>
__global__ void map_kernel(MapPtrs<T, NI, NO> p, int64_t n, F f) {
  const int64_t packs = n / N, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  // Every read of an element comes before its writes: outputs may reuse an input's storage.
  for (int64_t j = first; j < packs; j += stride) {
    Pack<T, N> a[NI], o[NO];
#pragma unroll
    for (int k = 0; k < NI; ++k) a[k] = load_pack<T, N>(p.in[k], j);
#pragma unroll
    for (int e = 0; e < N; ++e) {
      float x[NI], y[NO];
#pragma unroll
      for (int k = 0; k < NI; ++k) x[k] = to_float(a[k].v[e]);
      f(x, y);
#pragma unroll
      for (int k = 0; k < NO; ++k) o[k].v[e] = from_float<T>(y[k]);
    }
#pragma unroll
    for (int k = 0; k < NO; ++k) store_pack<T, N>(p.out[k], j, o[k]);
  }
  for (int64_t i = packs * N + first; i < n; i += stride) {
    float x[NI], y[NO];
#pragma unroll
    for (int k = 0; k < NI; ++k) x[k] = to_float(p.in[k][i]);
    f(x, y);
#pragma unroll
    for (int k = 0; k < NO; ++k) p.out[k][i] = from_float<T>(y[k]);
  }
}

// Checks (the first input names the shape, dtype and device of all) and launches f over them.
template <int NI, int NO, typename F>
void map(const char* op, const std::array<const Tensor*, NI>& in,
         const std::array<const char*, NI>& in_names, const std::array<Tensor*, NO>& out,
         const std::array<const char*, NO>& out_names, F f) {
  const Tensor& x = *in[0];
  check_float(x, op, in_names[0]);
  for (int k = 1; k < NI; ++k) check_same_shape(*in[k], x, op, in_names[k], in_names[0]);
  for (int k = 0; k < NO; ++k) check_same_shape(*out[k], x, op, out_names[k], in_names[0]);
  const int64_t n = x.numel();
  if (n == 0) return;
  OnDevice dev(x);
  bool vec = true;
  for (int k = 0; k < NI; ++k) vec = vec && aligned16(in[k]->raw());
  for (int k = 0; k < NO; ++k) vec = vec && aligned16(out[k]->raw());
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    MapPtrs<T, NI, NO> p;
    for (int k = 0; k < NI; ++k) p.in[k] = ptr<T>(*in[k]);
    for (int k = 0; k < NO; ++k) p.out[k] = ptr<T>(*out[k]);
    const int block = 256, grid = grid_for(vec ? (n + V - 1) / V : n, block, dev.index);
    if (vec) {
      map_kernel<V><<<grid, block, 0, dev.stream>>>(p, n, f);
    } else {
      map_kernel<1><<<grid, block, 0, dev.stream>>>(p, n, f);
    }
  });
  CUDA_CHECK_LAUNCH();
}

// ---- delta log decay: per-head parameters broadcast over the rows ---------------------------

template <typename T>
__global__ void delta_log_decay_forward_kernel(const T* a, const T* A_log, const T* dt_bias,
                                               int64_t n, int H, T* g) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int h = static_cast<int>(i % H);
    const float z = to_float(a[i]) + to_float(dt_bias[h]);
    g[i] = from_float<T>(-expf(to_float(A_log[h])) * softplus(z));
  }
}

// da = -dg exp(A_log) sigmoid(z); dg * g = dg * -exp(A_log) softplus(z) into an f32 buffer for
// the dA_log row sum (da's row sum is d_dt_bias).
template <typename T>
__global__ void delta_log_decay_backward_kernel(const T* a, const T* A_log, const T* dt_bias,
                                                const T* dg, int64_t n, int H, T* da, float* dg_g) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int h = static_cast<int>(i % H);
    const float A = expf(to_float(A_log[h])), z = to_float(a[i]) + to_float(dt_bias[h]);
    const float d = to_float(dg[i]);
    da[i] = from_float<T>(-d * A * sigmoid(z));
    dg_g[i] = d * (-A * softplus(z));
  }
}

void check_head_params(const Tensor& a, const Tensor& p, const char* op, const char* name) {
  check_like(p, a, op, name, "a");
  LINEA_CHECK(p.ndim() == 1 && p.dim(0) == a.dim(-1))
      << op << ": " << name << " " << describe(p) << " must be [H] with H = " << a.dim(-1)
      << " (the last dimension of a)";
}

void check_head_grad(const Tensor& a, const Tensor& p, const char* op, const char* name) {
  check_dtype(p, DType::kF32, op, name);
  check_same_device(p, a, op, name, "a");
  LINEA_CHECK(p.ndim() == 1 && p.dim(0) == a.dim(-1))
      << op << ": " << name << " " << describe(p) << " must be f32 [H] with H = " << a.dim(-1);
}

}  // namespace

void activation_forward(Activation a, const Tensor& x, Tensor& y) {
  map<1, 1>("activation_forward", {&x}, {"x"}, {&y}, {"y"}, ActForward{a});
}

void activation_backward(Activation a, const Tensor& x, const Tensor& dy, Tensor& dx) {
  map<2, 1>("activation_backward", {&x, &dy}, {"x", "dy"}, {&dx}, {"dx"}, ActBackward{a});
}

void output_gate_forward(Activation a, const Tensor& g, const Tensor& n, Tensor& y) {
  map<2, 1>("output_gate_forward", {&g, &n}, {"g", "n"}, {&y}, {"y"}, GateForward{a});
}

void output_gate_backward(Activation a, const Tensor& g, const Tensor& n, const Tensor& dy,
                          Tensor& dg, Tensor& dn) {
  map<3, 2>("output_gate_backward", {&g, &n, &dy}, {"g", "n", "dy"}, {&dg, &dn}, {"dg", "dn"},
            GateBackward{a});
}

void log_sigmoid_decay_forward(const Tensor& z, double normalizer, Tensor& gk) {
  map<1, 1>("log_sigmoid_decay_forward", {&z}, {"z"}, {&gk}, {"gk"},
            LogSigmoidForward{static_cast<float>(1.0 / normalizer)});
}

void log_sigmoid_decay_backward(const Tensor& z, const Tensor& dgk, double normalizer, Tensor& dz) {
  map<2, 1>("log_sigmoid_decay_backward", {&z, &dgk}, {"z", "dgk"}, {&dz}, {"dz"},
            LogSigmoidBackward{static_cast<float>(1.0 / normalizer)});
}

void forget_gate_forward(const Tensor& z, double lower_bound, Tensor& gk, Tensor& k) {
  map<1, 2>("forget_gate_forward", {&z}, {"z"}, {&gk, &k}, {"gk", "k"},
            ForgetForward{static_cast<float>(lower_bound)});
}

void forget_gate_backward(const Tensor& z, double lower_bound, const Tensor& dgk, const Tensor& dk,
                          Tensor& dz) {
  map<3, 1>("forget_gate_backward", {&z, &dgk, &dk}, {"z", "dgk", "dk"}, {&dz}, {"dz"},
            ForgetBackward{static_cast<float>(lower_bound)});
}

void softplus_forward(const Tensor& z, Tensor& y) {
  map<1, 1>("softplus_forward", {&z}, {"z"}, {&y}, {"y"}, SoftplusForward{});
}

void softplus_backward(const Tensor& z, const Tensor& dy, Tensor& dz) {
  map<2, 1>("softplus_backward", {&z, &dy}, {"z", "dy"}, {&dz}, {"dz"}, SoftplusBackward{});
}

void delta_beta_forward(const Tensor& b, double scale, Tensor& beta) {
  map<1, 1>("delta_beta_forward", {&b}, {"b"}, {&beta}, {"beta"},
            BetaForward{static_cast<float>(scale)});
}

void delta_beta_backward(const Tensor& b, double scale, const Tensor& dbeta, Tensor& db) {
  map<2, 1>("delta_beta_backward", {&b, &dbeta}, {"b", "dbeta"}, {&db}, {"db"},
            BetaBackward{static_cast<float>(scale)});
}

void delta_log_decay_forward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                             Tensor& g) {
  const char* op = "delta_log_decay_forward";
  check_float(a, op, "a");
  LINEA_CHECK(a.ndim() >= 1) << op << ": a " << describe(a) << " needs a head dimension";
  check_head_params(a, A_log, op, "A_log");
  check_head_params(a, dt_bias, op, "dt_bias");
  check_same_shape(g, a, op, "g", "a");
  const int64_t n = a.numel();
  if (n == 0) return;
  OnDevice dev(a);
  dispatch(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    delta_log_decay_forward_kernel<T><<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(a), ptr<T>(A_log), ptr<T>(dt_bias), n, static_cast<int>(a.dim(-1)), ptr<T>(g));
  });
  CUDA_CHECK_LAUNCH();
}

void delta_log_decay_backward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                              const Tensor& dg, Tensor& da, Tensor& dA_log, Tensor& d_dt_bias) {
  const char* op = "delta_log_decay_backward";
  check_float(a, op, "a");
  LINEA_CHECK(a.ndim() >= 1) << op << ": a " << describe(a) << " needs a head dimension";
  check_head_params(a, A_log, op, "A_log");
  check_head_params(a, dt_bias, op, "dt_bias");
  check_same_shape(dg, a, op, "dg", "a");
  check_same_shape(da, a, op, "da", "a");
  check_head_grad(a, dA_log, op, "dA_log");
  check_head_grad(a, d_dt_bias, op, "d_dt_bias");
  const int64_t n = a.numel(), H = a.dim(-1);
  if (n == 0) return;
  OnDevice dev(a);
  Tensor dg_g = Tensor::empty({n}, DType::kF32, a.device());
  dispatch(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    delta_log_decay_backward_kernel<T><<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(a), ptr<T>(A_log), ptr<T>(dt_bias), ptr<T>(dg), n, static_cast<int>(H), ptr<T>(da),
        dg_g.data<float>());
    CUDA_CHECK_LAUNCH();
    column_sums<T>(ptr<T>(da), 1, n / H, static_cast<int>(H), d_dt_bias.data<float>(), true, dev);
  });
  column_sums<float>(dg_g.data<float>(), 1, n / H, static_cast<int>(H), dA_log.data<float>(), true,
                     dev);
}

}  // namespace linea::kernels::cuda
