// CUDA feature maps (kernels/feature_map.h): element-wise in f32, 16-byte packs where the
// pointers are aligned, the map a template argument (one switch per call).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

template <FeatureMap F>
__device__ __forceinline__ float phi(float v) {
  if constexpr (F == FeatureMap::kIdentity) {
    return v;
  } else if constexpr (F == FeatureMap::kEluPlusOne) {
    return v > 0.0f ? v + 1.0f : expf(v);
  } else {
    return v > 0.0f ? v : 0.0f;
  }
}

template <FeatureMap F>
__device__ __forceinline__ float dphi_times(float v, float g) {
  if constexpr (F == FeatureMap::kIdentity) {
    return g;
  } else if constexpr (F == FeatureMap::kEluPlusOne) {
    return v > 0.0f ? g : g * expf(v);
  } else {
    return v > 0.0f ? g : 0.0f;
  }
}

template <FeatureMap F, typename T, int N>
__global__ void feature_map_forward_kernel(const T* x, int64_t n, T* y) {
  const int64_t packs = n / N, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t j = first; j < packs; j += stride) {
    const Pack<T, N> a = load_pack<T, N>(x, j);
    Pack<T, N> o;
#pragma unroll
    for (int e = 0; e < N; ++e) o.v[e] = from_float<T>(phi<F>(to_float(a.v[e])));
    store_pack<T, N>(y, j, o);
  }
  for (int64_t i = packs * N + first; i < n; i += stride)
    y[i] = from_float<T>(phi<F>(to_float(x[i])));
}

template <FeatureMap F, typename T, int N>
__global__ void feature_map_backward_kernel(const T* x, const T* dy, int64_t n, T* dx) {
  const int64_t packs = n / N, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t j = first; j < packs; j += stride) {
    const Pack<T, N> a = load_pack<T, N>(x, j), g = load_pack<T, N>(dy, j);
    Pack<T, N> o;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      o.v[e] = from_float<T>(dphi_times<F>(to_float(a.v[e]), to_float(g.v[e])));
    }
    store_pack<T, N>(dx, j, o);
  }
  for (int64_t i = packs * N + first; i < n; i += stride) {
    dx[i] = from_float<T>(dphi_times<F>(to_float(x[i]), to_float(dy[i])));
  }
}

// fn(std::integral_constant<FeatureMap, F>) for the runtime map f.
template <typename Fn>
void dispatch_map(FeatureMap f, Fn&& fn) {
  switch (f) {
    case FeatureMap::kIdentity:
      return fn(std::integral_constant<FeatureMap, FeatureMap::kIdentity>{});
    case FeatureMap::kEluPlusOne:
      return fn(std::integral_constant<FeatureMap, FeatureMap::kEluPlusOne>{});
    case FeatureMap::kRelu:
      return fn(std::integral_constant<FeatureMap, FeatureMap::kRelu>{});
  }
  LINEA_CHECK(false) << "unknown FeatureMap value " << static_cast<int>(f);
}

}  // namespace

void feature_map_forward(FeatureMap f, const Tensor& x, Tensor& y) {
  const char* op = "feature_map_forward";
  check_float(x, op, "x");
  check_same_shape(y, x, op, "y", "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  OnDevice dev(x);
  const bool vec = aligned16(x.raw()) && aligned16(y.raw());
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    const int block = 256, grid = grid_for(vec ? (n + V - 1) / V : n, block, dev.index);
    dispatch_map(f, [&](auto map) {
      constexpr FeatureMap F = decltype(map)::value;
      if (vec) {
        feature_map_forward_kernel<F, T, V>
            <<<grid, block, 0, dev.stream>>>(ptr<T>(x), n, ptr<T>(y));
      } else {
        feature_map_forward_kernel<F, T, 1>
            <<<grid, block, 0, dev.stream>>>(ptr<T>(x), n, ptr<T>(y));
      }
    });
  });
  CUDA_CHECK_LAUNCH();
}

void feature_map_backward(FeatureMap f, const Tensor& x, const Tensor& dy, Tensor& dx) {
  const char* op = "feature_map_backward";
  check_float(x, op, "x");
  check_same_shape(dy, x, op, "dy", "x");
  check_same_shape(dx, x, op, "dx", "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  OnDevice dev(x);
  const bool vec = aligned16(x.raw()) && aligned16(dy.raw()) && aligned16(dx.raw());
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    const int block = 256, grid = grid_for(vec ? (n + V - 1) / V : n, block, dev.index);
    dispatch_map(f, [&](auto map) {
      constexpr FeatureMap F = decltype(map)::value;
      if (vec) {
        feature_map_backward_kernel<F, T, V>
            <<<grid, block, 0, dev.stream>>>(ptr<T>(x), ptr<T>(dy), n, ptr<T>(dx));
      } else {
        feature_map_backward_kernel<F, T, 1>
            <<<grid, block, 0, dev.stream>>>(ptr<T>(x), ptr<T>(dy), n, ptr<T>(dx));
      }
    });
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
