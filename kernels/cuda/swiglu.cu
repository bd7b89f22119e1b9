// CUDA SwiGLU (kernels/swiglu.h): element-wise, f32 arithmetic, grid-stride.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

// expf(-g) overflows to inf for very negative g, which still gives the right limit 0.
__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T>
__global__ void swiglu_forward_kernel(const T* g, const T* u, int64_t n, T* h) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = to_float(g[i]);
    h[i] = from_float<T>(gi * sigmoid(gi) * to_float(u[i]));
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(const T* g, const T* u, const T* dh, int64_t n, T* dg,
                                       T* du) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    // All reads before the writes: dg/du may reuse the storage of g, u or dh.
    const float gi = to_float(g[i]), ui = to_float(u[i]), d = to_float(dh[i]);
    const float s = sigmoid(gi);
    dg[i] = from_float<T>(d * ui * s * (1.0f + gi * (1.0f - s)));
    du[i] = from_float<T>(d * gi * s);
  }
}

}  // namespace

void swiglu_forward(const Tensor& g, const Tensor& u, Tensor& h) {
  const char* op = "swiglu_forward";
  check_float(g, op, "g");
  check_same_shape(u, g, op, "u", "g");
  check_same_shape(h, g, op, "h", "g");
  if (g.numel() == 0) return;
  OnDevice dev(g);
  const int block = 256, grid = grid_for(g.numel(), block, dev.index);
  dispatch(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    swiglu_forward_kernel<<<grid, block, 0, dev.stream>>>(ptr<T>(g), ptr<T>(u), g.numel(),
                                                          ptr<T>(h));
  });
  CUDA_CHECK_LAUNCH();
}

void swiglu_backward(const Tensor& g, const Tensor& u, const Tensor& dh, Tensor& dg, Tensor& du) {
  const char* op = "swiglu_backward";
  check_float(g, op, "g");
  check_same_shape(u, g, op, "u", "g");
  check_same_shape(dh, g, op, "dh", "g");
  check_same_shape(dg, g, op, "dg", "g");
  check_same_shape(du, g, op, "du", "g");
  if (g.numel() == 0) return;
  OnDevice dev(g);
  const int block = 256, grid = grid_for(g.numel(), block, dev.index);
  dispatch(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    swiglu_backward_kernel<<<grid, block, 0, dev.stream>>>(ptr<T>(g), ptr<T>(u), ptr<T>(dh),
                                                           g.numel(), ptr<T>(dg), ptr<T>(du));
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
