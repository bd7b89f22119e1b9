// CPU Hedgehog feature map. The contract (formula, gradient rule) is in
// kernels/hedgehog_feature_map.h.
#include "kernels/hedgehog_feature_map.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

// Checks shapes; returns {rows, H, d, f}.
struct Dims {
  int64_t rows, H, d, f;
};

Dims check_xw(const Tensor& x, const Tensor& w, const char* op) {
  cpu::check_float(x, op, "x");
  cpu::check_like(w, x, op, "w", "x");
  LINEA_CHECK(x.ndim() >= 2 && w.ndim() == 3 && w.dim(0) == x.dim(-2) && w.dim(1) == x.dim(-1))
      << op << ": x " << shape_str(x.shape()) << " must be [..., H, d] and w "
      << shape_str(w.shape()) << " [H, d, f]";
  const int64_t H = w.dim(0), d = w.dim(1), f = w.dim(2);
  LINEA_CHECK(d > 0 && f > 0) << op << ": empty w " << shape_str(w.shape());
  return {x.numel() / (H * d), H, d, f};
}

void check_y(const Tensor& y, const Tensor& x, const Dims& s, const char* op, const char* name) {
  cpu::check_like(y, x, op, name, "x");
  Shape want = x.shape();
  want.back() = 2 * s.f;
  LINEA_CHECK(y.shape() == want) << op << ": " << name << " " << shape_str(y.shape()) << " must be "
                                 << shape_str(want);
}

// out[j] = softmax(sign * z)[j].
template <typename T>
void softmax_into(const std::vector<double>& z, double sign, T* out) {
  double m = -INFINITY;
  for (double v : z) m = std::max(m, sign * v);
  double sum = 0;
  for (double v : z) sum += std::exp(sign * v - m);
  for (size_t j = 0; j < z.size(); ++j) out[j] = static_cast<T>(std::exp(sign * z[j] - m) / sum);
}

template <typename T>
void forward(const Dims& s, const Tensor& x, const Tensor& w, Tensor& y) {
  const T *px = x.data<T>(), *pw = w.data<T>();
  T* py = y.data<T>();
  std::vector<double> z(s.f);
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t h = 0; h < s.H; ++h) {
      const T* xr = px + (r * s.H + h) * s.d;
      const T* wh = pw + h * s.d * s.f;
      std::fill(z.begin(), z.end(), 0.0);
      for (int64_t i = 0; i < s.d; ++i)
        for (int64_t j = 0; j < s.f; ++j) z[j] += static_cast<double>(xr[i]) * wh[i * s.f + j];
      T* yr = py + (r * s.H + h) * 2 * s.f;
      softmax_into(z, 1.0, yr);
      softmax_into(z, -1.0, yr + s.f);
    }
}

template <typename T>
void backward(const Dims& s, const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dy,
              Tensor& dx, Tensor& dw) {
  const T *px = x.data<T>(), *pw = w.data<T>(), *py = y.data<T>(), *pdy = dy.data<T>();
  T* pdx = dx.data<T>();
  std::vector<double> dz(s.f), acc(s.H * s.d * s.f, 0.0);
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t row = r * s.H + h;
      const T *p = py + row * 2 * s.f, *n = p + s.f;
      const T *dp = pdy + row * 2 * s.f, *dn = dp + s.f;
      double pdp = 0, ndn = 0;
      for (int64_t j = 0; j < s.f; ++j) {
        pdp += static_cast<double>(p[j]) * dp[j];
        ndn += static_cast<double>(n[j]) * dn[j];
      }
      for (int64_t j = 0; j < s.f; ++j) dz[j] = p[j] * (dp[j] - pdp) - n[j] * (dn[j] - ndn);
      const T* xr = px + row * s.d;
      const T* wh = pw + h * s.d * s.f;
      double* ah = acc.data() + h * s.d * s.f;
      for (int64_t i = 0; i < s.d; ++i) {
        double g = 0;
        for (int64_t j = 0; j < s.f; ++j) {
          g += dz[j] * wh[i * s.f + j];
          ah[i * s.f + j] += xr[i] * dz[j];
        }
        pdx[row * s.d + i] = static_cast<T>(g);
      }
    }
  T* pdw = dw.data<T>();
  for (size_t i = 0; i < acc.size(); ++i) pdw[i] += static_cast<T>(acc[i]);
}

}  // namespace

void hedgehog_feature_map_forward(const Tensor& x, const Tensor& w, Tensor& y) {
  LINEA_ON_CUDA(x, hedgehog_feature_map_forward(x, w, y));
  const char* op = "hedgehog_feature_map_forward";
  const Dims s = check_xw(x, w, op);
  check_y(y, x, s, op, "y");
  cpu::dispatch_float(x.dtype(), [&](auto tag) { forward<decltype(tag)>(s, x, w, y); });
}

void hedgehog_feature_map_backward(const Tensor& x, const Tensor& w, const Tensor& y,
                                   const Tensor& dy, Tensor& dx, Tensor& dw) {
  LINEA_ON_CUDA(x, hedgehog_feature_map_backward(x, w, y, dy, dx, dw));
  const char* op = "hedgehog_feature_map_backward";
  const Dims s = check_xw(x, w, op);
  check_y(y, x, s, op, "y");
  check_y(dy, x, s, op, "dy");
  cpu::check_same_shape(dx, x, op, "dx", "x");
  cpu::check_same_shape(dw, w, op, "dw", "w");
  cpu::dispatch_float(x.dtype(),
                      [&](auto tag) { backward<decltype(tag)>(s, x, w, y, dy, dx, dw); });
}

}  // namespace linea::kernels
