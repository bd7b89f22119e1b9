// CUDA SwiGLU (kernels/swiglu.h): element-wise in f32, 16-byte packs where every tensor is
// aligned (the tail, and unaligned views, element by element), grid-stride.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

// expf(-g) overflows to inf for very negative g, which still gives the right limit 0.
__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T, int N>
__global__ void swiglu_forward_kernel(const T* g, const T* u, int64_t n, T* h) {
  const int64_t packs = n / N, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t j = first; j < packs; j += stride) {
    const Pack<T, N> gv = load_pack<T, N>(g, j), uv = load_pack<T, N>(u, j);
    Pack<T, N> o;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const float gi = to_float(gv.v[e]);
      o.v[e] = from_float<T>(gi * sigmoid(gi) * to_float(uv.v[e]));
    }
    store_pack<T, N>(h, j, o);
  }
  for (int64_t i = packs * N + first; i < n; i += stride) {
    const float gi = to_float(g[i]);
    h[i] = from_float<T>(gi * sigmoid(gi) * to_float(u[i]));
  }
}

__device__ __forceinline__ void swiglu_grad(float gi, float ui, float d, float& dg, float& du) {
  const float s = sigmoid(gi);
  dg = d * ui * s * (1.0f + gi * (1.0f - s));
  du = d * gi * s;
}

template <typename T, int N>
__global__ void swiglu_backward_kernel(const T* g, const T* u, const T* dh, int64_t n, T* dg,
                                       T* du) {
  const int64_t packs = n / N, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  // All reads of an element happen before its writes: dg/du may reuse the storage of g, u, dh.
  for (int64_t j = first; j < packs; j += stride) {
    const Pack<T, N> gv = load_pack<T, N>(g, j), uv = load_pack<T, N>(u, j),
                     dv = load_pack<T, N>(dh, j);
    Pack<T, N> og, ou;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      float a, b;
      swiglu_grad(to_float(gv.v[e]), to_float(uv.v[e]), to_float(dv.v[e]), a, b);
      og.v[e] = from_float<T>(a);
      ou.v[e] = from_float<T>(b);
    }
    store_pack<T, N>(dg, j, og);
    store_pack<T, N>(du, j, ou);
  }
  for (int64_t i = packs * N + first; i < n; i += stride) {
    float a, b;
    swiglu_grad(to_float(g[i]), to_float(u[i]), to_float(dh[i]), a, b);
    dg[i] = from_float<T>(a);
    du[i] = from_float<T>(b);
  }
}

bool all_aligned(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    if (!aligned16(t->raw())) return false;
  }
  return true;
}

}  // namespace

void swiglu_forward(const Tensor& g, const Tensor& u, Tensor& h) {
  const char* op = "swiglu_forward";
  check_float(g, op, "g");
  check_same_shape(u, g, op, "u", "g");
  check_same_shape(h, g, op, "h", "g");
  const int64_t n = g.numel();
  if (n == 0) return;
  OnDevice dev(g);
  const bool vec = all_aligned({&g, &u, &h});
  dispatch(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    const int block = 256, grid = grid_for(vec ? (n + V - 1) / V : n, block, dev.index);
    if (vec) {
      swiglu_forward_kernel<T, V>
          <<<grid, block, 0, dev.stream>>>(ptr<T>(g), ptr<T>(u), n, ptr<T>(h));
    } else {
      swiglu_forward_kernel<T, 1>
          <<<grid, block, 0, dev.stream>>>(ptr<T>(g), ptr<T>(u), n, ptr<T>(h));
    }
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
  const int64_t n = g.numel();
  if (n == 0) return;
  OnDevice dev(g);
  const bool vec = all_aligned({&g, &u, &dh, &dg, &du});
  dispatch(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    const int block = 256, grid = grid_for(vec ? (n + V - 1) / V : n, block, dev.index);
    if (vec) {
      swiglu_backward_kernel<T, V><<<grid, block, 0, dev.stream>>>(ptr<T>(g), ptr<T>(u), ptr<T>(dh),
                                                                   n, ptr<T>(dg), ptr<T>(du));
    } else {
      swiglu_backward_kernel<T, 1><<<grid, block, 0, dev.stream>>>(ptr<T>(g), ptr<T>(u), ptr<T>(dh),
                                                                   n, ptr<T>(dg), ptr<T>(du));
    }
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
