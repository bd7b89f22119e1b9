#include "kernels/short_conv.h"

#include <cmath>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

void check(const Tensor& x, const Tensor& w, const char* fn) {
  LINEA_CHECK(x.ndim() == 3 && w.ndim() == 2 && w.dim(0) == x.dim(2))
      << fn << ": x " << shape_str(x.shape()) << ", w " << shape_str(w.shape())
      << " (expected x [B, T, C], w [C, K])";
  LINEA_CHECK(x.device().is_cpu() && w.device().is_cpu())
      << fn << ": x on " << x.device().str() << ", w on " << w.device().str() << " (one device)";
  LINEA_CHECK(x.dtype() == w.dtype() && (x.dtype() == DType::kF32 || x.dtype() == DType::kF64))
      << fn << ": f32 or f64, one dtype";
}

template <typename T>
void forward_impl(const Tensor& x, const Tensor& w, bool silu, Tensor& y) {
  const int64_t B = x.dim(0), L = x.dim(1), C = x.dim(2), K = w.dim(1);
  const T* xp = x.data<T>();
  const T* wp = w.data<T>();
  T* yp = y.data<T>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double acc = 0;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t s = t - K + 1 + j;
          if (s >= 0) acc += double(wp[c * K + j]) * xp[(b * L + s) * C + c];
        }
        yp[(b * L + t) * C + c] = static_cast<T>(silu ? acc / (1 + std::exp(-acc)) : acc);
      }
}

template <typename T>
void backward_impl(const Tensor& x, const Tensor& w, bool silu, const Tensor& dy, Tensor& dx,
                   Tensor& dw) {
  const int64_t B = x.dim(0), L = x.dim(1), C = x.dim(2), K = w.dim(1);
  const T* xp = x.data<T>();
  const T* wp = w.data<T>();
  const T* dyp = dy.data<T>();
  T* dxp = dx.data<T>();
  T* dwp = dw.data<T>();
  dx.zero_();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double g = dyp[(b * L + t) * C + c];
        if (silu) {
          // Recompute the pre-activation: d silu(a)/da = s (1 + a (1 - s)), s = sigmoid(a).
          double a = 0;
          for (int64_t j = 0; j < K; ++j) {
            const int64_t s = t - K + 1 + j;
            if (s >= 0) a += double(wp[c * K + j]) * xp[(b * L + s) * C + c];
          }
          const double sg = 1 / (1 + std::exp(-a));
          g *= sg * (1 + a * (1 - sg));
        }
        for (int64_t j = 0; j < K; ++j) {
          const int64_t s = t - K + 1 + j;
          if (s < 0) continue;
          dxp[(b * L + s) * C + c] += static_cast<T>(g * wp[c * K + j]);
          dwp[c * K + j] += static_cast<T>(g * xp[(b * L + s) * C + c]);
        }
      }
}

}  // namespace

void short_conv_forward(const Tensor& x, const Tensor& w, bool silu, Tensor& y) {
  LINEA_ON_CUDA(x, short_conv_forward(x, w, silu, y));
  check(x, w, "short_conv_forward");
  LINEA_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype()) << "short_conv_forward: y shape";
  if (x.dtype() == DType::kF32)
    forward_impl<float>(x, w, silu, y);
  else
    forward_impl<double>(x, w, silu, y);
}

void short_conv_backward(const Tensor& x, const Tensor& w, bool silu, const Tensor& dy, Tensor& dx,
                         Tensor& dw) {
  LINEA_ON_CUDA(x, short_conv_backward(x, w, silu, dy, dx, dw));
  check(x, w, "short_conv_backward");
  LINEA_CHECK(dy.shape() == x.shape() && dx.shape() == x.shape() && dw.shape() == w.shape())
      << "short_conv_backward: dy/dx/dw shapes";
  if (x.dtype() == DType::kF32)
    backward_impl<float>(x, w, silu, dy, dx, dw);
  else
    backward_impl<double>(x, w, silu, dy, dx, dw);
}

}  // namespace linea::kernels
