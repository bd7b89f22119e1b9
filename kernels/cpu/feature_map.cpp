#include "kernels/feature_map.h"

#include <cmath>
#include <cstdint>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

// One loop per map (the map is a template argument), so the switch runs once per call.
template <FeatureMap F, typename T>
void apply_forward(const T* x, int64_t n, T* y) {
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    if constexpr (F == FeatureMap::kIdentity) {
      y[i] = v;
    } else if constexpr (F == FeatureMap::kEluPlusOne) {
      y[i] = v > T(0) ? v + T(1) : std::exp(v);
    } else {
      y[i] = v > T(0) ? v : T(0);
    }
  }
}

template <FeatureMap F, typename T>
void apply_backward(const T* x, const T* dy, int64_t n, T* dx) {
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i], g = dy[i];
    if constexpr (F == FeatureMap::kIdentity) {
      dx[i] = g;
    } else if constexpr (F == FeatureMap::kEluPlusOne) {
      dx[i] = v > T(0) ? g : g * std::exp(v);
    } else {
      dx[i] = v > T(0) ? g : T(0);
    }
  }
}

template <typename Fn>
void dispatch_map(FeatureMap f, Fn&& fn) {
  switch (f) {
    case FeatureMap::kIdentity:
      fn.template operator()<FeatureMap::kIdentity>();
      return;
    case FeatureMap::kEluPlusOne:
      fn.template operator()<FeatureMap::kEluPlusOne>();
      return;
    case FeatureMap::kRelu:
      fn.template operator()<FeatureMap::kRelu>();
      return;
  }
  LINEA_CHECK(false) << "unknown FeatureMap value " << static_cast<int>(f);
}

}  // namespace

void feature_map_forward(FeatureMap f, const Tensor& x, Tensor& y) {
  LINEA_ON_CUDA(x, feature_map_forward(f, x, y));
  const char* op = "feature_map_forward";
  cpu::check_float(x, op, "x");
  cpu::check_same_shape(y, x, op, "y", "x");
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    dispatch_map(f, [&]<FeatureMap F>() { apply_forward<F>(x.data<T>(), x.numel(), y.data<T>()); });
  });
}

void feature_map_backward(FeatureMap f, const Tensor& x, const Tensor& dy, Tensor& dx) {
  LINEA_ON_CUDA(x, feature_map_backward(f, x, dy, dx));
  const char* op = "feature_map_backward";
  cpu::check_float(x, op, "x");
  cpu::check_same_shape(dy, x, op, "dy", "x");
  cpu::check_same_shape(dx, x, op, "dx", "x");
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    dispatch_map(f, [&]<FeatureMap F>() {
      apply_backward<F>(x.data<T>(), dy.data<T>(), x.numel(), dx.data<T>());
    });
  });
}

}  // namespace linea::kernels
