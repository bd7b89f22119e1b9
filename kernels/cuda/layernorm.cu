// CUDA LayerNorm (kernels/layernorm.h): one warp per row (ReBased normalises rows of a few dozen
// features), two passes over the row for the mean and the variance, f32 arithmetic; mean and
// rstd f32; gamma, beta and their gradients f32 (the gradients `+=`, sums over rows through the
// deterministic row-sum kernel, kernels/cuda/column_sum.cuh).
#include "kernels/cuda/column_sum.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

template <typename T>
__global__ void layernorm_forward_kernel(const T* x, const float* gamma, const float* beta,
                                         int64_t rows, int D, float eps, T* y, float* mean,
                                         float* rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); r < rows;
       r += warps) {
    const T* xr = x + r * D;
    float s = 0.0f;
    for (int i = lane; i < D; i += 32) s += to_float(xr[i]);
    const float mu = warp_sum(s) / D;
    float v = 0.0f;
    for (int i = lane; i < D; i += 32) {
      const float c = to_float(xr[i]) - mu;
      v += c * c;
    }
    const float rs = rsqrtf(warp_sum(v) / D + eps);
    for (int i = lane; i < D; i += 32) {
      float o = (to_float(xr[i]) - mu) * rs;
      if (gamma) o *= gamma[i];
      if (beta) o += beta[i];
      y[r * D + i] = from_float<T>(o);
    }
    if (lane == 0) mean[r] = mu, rstd[r] = rs;
  }
}

// dx, and the rows' terms dy * x_hat of dgamma (when asked) in f32.
template <typename T>
__global__ void layernorm_backward_kernel(const T* x, const float* gamma, const float* mean,
                                          const float* rstd, const T* dy, int64_t rows, int D,
                                          T* dx, float* dgamma_rows) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); r < rows;
       r += warps) {
    const T *xr = x + r * D, *dyr = dy + r * D;
    const float mu = mean[r], rs = rstd[r];
    float mg = 0.0f, mgx = 0.0f;
    for (int i = lane; i < D; i += 32) {
      const float xh = (to_float(xr[i]) - mu) * rs, d = to_float(dyr[i]);
      const float g = gamma ? d * gamma[i] : d;
      mg += g;
      mgx += g * xh;
      if (dgamma_rows) dgamma_rows[r * D + i] = d * xh;
    }
    mg = warp_sum(mg) / D;
    mgx = warp_sum(mgx) / D;
    for (int i = lane; i < D; i += 32) {
      const float xh = (to_float(xr[i]) - mu) * rs, d = to_float(dyr[i]);
      const float g = gamma ? d * gamma[i] : d;
      dx[r * D + i] = from_float<T>(rs * (g - mg - xh * mgx));
    }
  }
}

Shape row_shape(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 1); }

void check_stat(const Tensor& t, const Tensor& x, const char* op, const char* name) {
  check_dtype(t, DType::kF32, op, name);
  check_same_device(t, x, op, name, "x");
  LINEA_CHECK(t.shape() == row_shape(x))
      << op << ": " << name << " " << describe(t) << " must be f32 " << shape_str(row_shape(x));
}

void check_affine(const Tensor& t, const Tensor& x, const char* op, const char* name) {
  if (!t.defined()) return;
  check_dtype(t, DType::kF32, op, name);
  check_same_device(t, x, op, name, "x");
  LINEA_CHECK(t.ndim() == 1 && t.dim(0) == x.dim(-1))
      << op << ": " << name << " " << describe(t) << " must be f32 [" << x.dim(-1) << "]";
}

void check_x(const Tensor& x, const char* op) {
  check_float(x, op, "x");
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) > 0 && x.dim(-1) <= (1 << 30))
      << op << ": x " << describe(x) << " needs a last dimension D > 0";
}

const float* opt(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                       Tensor& y, Tensor& mean, Tensor& rstd) {
  const char* op = "layernorm_forward";
  check_x(x, op);
  LINEA_CHECK(eps >= 0) << op << ": eps " << eps << " must be >= 0";
  check_affine(gamma, x, op, "gamma");
  check_affine(beta, x, op, "beta");
  check_same_shape(y, x, op, "y", "x");
  check_stat(mean, x, op, "mean");
  check_stat(rstd, x, op, "rstd");
  const int D = static_cast<int>(x.dim(-1));
  const int64_t rows = x.numel() / D;
  if (rows == 0) return;
  OnDevice dev(x);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    layernorm_forward_kernel<T><<<grid_for(rows * 32, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(x), opt(gamma), opt(beta), rows, D, static_cast<float>(eps), ptr<T>(y),
        mean.data<float>(), rstd.data<float>());
  });
  CUDA_CHECK_LAUNCH();
}

void layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                        const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                        Tensor& dbeta) {
  const char* op = "layernorm_backward";
  check_x(x, op);
  check_affine(gamma, x, op, "gamma");
  check_affine(dgamma, x, op, "dgamma");
  check_affine(dbeta, x, op, "dbeta");
  check_stat(mean, x, op, "mean");
  check_stat(rstd, x, op, "rstd");
  check_same_shape(dy, x, op, "dy", "x");
  check_same_shape(dx, x, op, "dx", "x");
  const int D = static_cast<int>(x.dim(-1));
  const int64_t rows = x.numel() / D;
  if (rows == 0) return;
  OnDevice dev(x);
  Tensor dg_rows;
  if (dgamma.defined()) dg_rows = Tensor::empty({rows, D}, DType::kF32, x.device());
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    layernorm_backward_kernel<T><<<grid_for(rows * 32, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(x), opt(gamma), mean.data<float>(), rstd.data<float>(), ptr<T>(dy), rows, D,
        ptr<T>(dx), dg_rows.defined() ? dg_rows.data<float>() : nullptr);
    CUDA_CHECK_LAUNCH();
    if (dbeta.defined()) column_sums<T>(ptr<T>(dy), 1, rows, D, dbeta.data<float>(), true, dev);
  });
  if (dgamma.defined())
    column_sums<float>(dg_rows.data<float>(), 1, rows, D, dgamma.data<float>(), true, dev);
}

}  // namespace linea::kernels::cuda
