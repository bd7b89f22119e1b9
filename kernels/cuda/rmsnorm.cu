// CUDA RMSNorm (kernels/rmsnorm.h). One block per row (grid-stride): the sum of squares is f32
// per thread and reduced over the block; rstd is saved in f32. The backward keeps each block's
// dw partial sums in shared memory (each column owned by one thread) and adds them to the f32 dw
// with one atomic per column and block at the end.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

template <typename T, bool kWeighted>
__global__ void rmsnorm_forward_kernel(const T* x, const T* w, float eps, int64_t rows, int d, T* y,
                                       float* rstd) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    float ss = 0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
      const float v = to_float(xr[j]);
      ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const float rs = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
    if (threadIdx.x == 0) rstd[r] = rs;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
      float v = to_float(xr[j]) * rs;
      if constexpr (kWeighted) v *= to_float(w[j]);
      yr[j] = from_float<T>(v);
    }
  }
}

template <typename T, bool kWeighted>
__global__ void rmsnorm_backward_kernel(const T* x, const T* w, const float* rstd, const T* dy,
                                        int64_t rows, int d, T* dx, float* dw) {
  extern __shared__ float dw_part[];  // [d] when weighted
  __shared__ float scratch[32];
  if constexpr (kWeighted) {
    for (int j = threadIdx.x; j < d; j += blockDim.x) dw_part[j] = 0;
  }
  const float inv_d = 1.0f / static_cast<float>(d);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    const T* gr = dy + r * d;
    T* dxr = dx + r * d;
    const float rs = rstd[r];
    float dot = 0;  // sum_j x_hat_j * w_j * dy_j
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
      const float g = to_float(gr[j]);
      const float wg = kWeighted ? to_float(w[j]) * g : g;
      dot += to_float(xr[j]) * rs * wg;
    }
    const float mean = block_sum(dot, scratch) * inv_d;
    // The same thread reads x_j and dy_j, then writes dx_j: dx may share storage with x or dy.
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
      const float xh = to_float(xr[j]) * rs;
      const float g = to_float(gr[j]);
      if constexpr (kWeighted) dw_part[j] += g * xh;
      const float wg = kWeighted ? to_float(w[j]) * g : g;
      dxr[j] = from_float<T>(rs * (wg - xh * mean));
    }
  }
  if constexpr (kWeighted) {
    for (int j = threadIdx.x; j < d; j += blockDim.x) atomicAdd(dw + j, dw_part[j]);
  }
}

int row_block(int64_t d) { return d >= 2048 ? 512 : (d >= 512 ? 256 : (d >= 128 ? 128 : 32)); }

void check_norm_args(const Tensor& x, const Tensor& w, const Tensor& rstd, const char* op) {
  check_float(x, op, "x");
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) > 0)
      << op << ": x " << describe(x) << " needs a last dimension D > 0";
  const int64_t d = x.dim(-1);
  LINEA_CHECK(d <= (1 << 30)) << op << ": D = " << d << " is too large";
  if (w.defined()) {
    check_like(w, x, op, "w", "x");
    LINEA_CHECK(w.ndim() == 1 && w.dim(0) == d)
        << op << ": w " << shape_str(w.shape()) << " must be [D] = [" << d << "] for x "
        << shape_str(x.shape());
  }
  check_dtype(rstd, DType::kF32, op, "rstd");
  check_same_device(rstd, x, op, "rstd", "x");
  LINEA_CHECK(rstd.numel() == x.numel() / d)
      << op << ": rstd " << shape_str(rstd.shape()) << " must hold one value per row of x "
      << shape_str(x.shape()) << " (" << x.numel() / d << " rows)";
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  const char* op = "rmsnorm_forward";
  check_norm_args(x, w, rstd, op);
  check_same_shape(y, x, op, "y", "x");
  LINEA_CHECK(eps >= 0) << op << ": eps = " << eps << " must be >= 0";
  const int d = static_cast<int>(x.dim(-1));
  const int64_t rows = x.numel() / d;
  if (rows == 0) return;
  OnDevice dev(x);
  const int block = row_block(d);
  const int grid = grid_for(rows * block, block, dev.index, 8);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (w.defined()) {
      rmsnorm_forward_kernel<T, true><<<grid, block, 0, dev.stream>>>(
          ptr<T>(x), ptr<T>(w), static_cast<float>(eps), rows, d, ptr<T>(y), rstd.data<float>());
    } else {
      rmsnorm_forward_kernel<T, false><<<grid, block, 0, dev.stream>>>(
          ptr<T>(x), nullptr, static_cast<float>(eps), rows, d, ptr<T>(y), rstd.data<float>());
    }
  });
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor& dw) {
  const char* op = "rmsnorm_backward";
  check_norm_args(x, w, rstd, op);
  check_same_shape(dy, x, op, "dy", "x");
  check_same_shape(dx, x, op, "dx", "x");
  if (w.defined()) {
    check_dtype(dw, DType::kF32, op, "dw");
    check_same_device(dw, x, op, "dw", "x");
    LINEA_CHECK(dw.shape() == w.shape()) << op << ": dw " << shape_str(dw.shape())
                                         << " must have the shape of w " << shape_str(w.shape());
  }
  const int d = static_cast<int>(x.dim(-1));
  const int64_t rows = x.numel() / d;
  if (rows == 0) return;
  OnDevice dev(x);
  const int block = row_block(d);
  // Fewer blocks than the forward: each block ends with D atomics into dw.
  const int grid = grid_for(rows * block, block, dev.index, 2);
  const size_t smem = w.defined() ? static_cast<size_t>(d) * sizeof(float) : 0;
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (w.defined()) {
      auto kernel = rmsnorm_backward_kernel<T, true>;
      if (smem > 48 * 1024) {
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
      }
      kernel<<<grid, block, smem, dev.stream>>>(ptr<T>(x), ptr<T>(w), rstd.data<float>(),
                                                ptr<T>(dy), rows, d, ptr<T>(dx), dw.data<float>());
    } else {
      rmsnorm_backward_kernel<T, false><<<grid, block, 0, dev.stream>>>(
          ptr<T>(x), nullptr, rstd.data<float>(), ptr<T>(dy), rows, d, ptr<T>(dx), nullptr);
    }
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
