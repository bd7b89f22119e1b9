// CPU degree-2 feature maps. The contract (layout, gradient rule) is in
// kernels/quadratic_feature_map.h.
#include "kernels/quadratic_feature_map.h"

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

void check_out(const QuadraticFeatureMap& f, const Tensor& t, const Tensor& x, const char* op,
               const char* name) {
  cpu::check_like(t, x, op, name, "x");
  Shape want = x.shape();
  want.back() = quadratic_feature_dim(f, x.dim(-1));
  LINEA_CHECK(t.shape() == want) << op << ": " << name << " " << shape_str(t.shape()) << " must be "
                                 << shape_str(want);
}

template <typename T>
void forward(const QuadraticFeatureMap& f, const Tensor& x, Tensor& y) {
  const int64_t d = x.dim(-1), rows = x.numel() / d, w = quadratic_feature_dim(f, d);
  const T* px = x.data<T>();
  T* py = y.data<T>();
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = px + r * d;
    T* yr = py + r * w;
    if (f.constant) *yr++ = T(1);
    if (f.linear != 0)
      for (int64_t i = 0; i < d; ++i) *yr++ = static_cast<T>(f.linear * xr[i]);
    for (int64_t i = 0; i < d; ++i)
      for (int64_t j = 0; j < d; ++j)
        *yr++ = static_cast<T>(f.quadratic * static_cast<double>(xr[i]) * xr[j]);
  }
}

template <typename T>
void backward(const QuadraticFeatureMap& f, const Tensor& x, const Tensor& dy, Tensor& dx) {
  const int64_t d = x.dim(-1), rows = x.numel() / d, w = quadratic_feature_dim(f, d);
  const T *px = x.data<T>(), *pdy = dy.data<T>();
  T* pdx = dx.data<T>();
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = px + r * d;
    const T* dyr = pdy + r * w + (f.constant ? 1 : 0);
    const T* lin = f.linear != 0 ? dyr : nullptr;
    const T* quad = dyr + (f.linear != 0 ? d : 0);
    for (int64_t i = 0; i < d; ++i) {
      double s = 0;
      for (int64_t j = 0; j < d; ++j)
        s += (static_cast<double>(quad[i * d + j]) + quad[j * d + i]) * xr[j];
      double g = f.quadratic * s;
      if (lin) g += f.linear * lin[i];
      pdx[r * d + i] = static_cast<T>(g);
    }
  }
}

}  // namespace

int64_t quadratic_feature_dim(const QuadraticFeatureMap& f, int64_t d) {
  return (f.constant ? 1 : 0) + (f.linear != 0 ? d : 0) + d * d;
}

void quadratic_feature_map_forward(const QuadraticFeatureMap& f, const Tensor& x, Tensor& y) {
  LINEA_ON_CUDA(x, quadratic_feature_map_forward(f, x, y));
  const char* op = "quadratic_feature_map_forward";
  cpu::check_float(x, op, "x");
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) > 0) << op << ": x " << shape_str(x.shape());
  check_out(f, y, x, op, "y");
  cpu::dispatch_float(x.dtype(), [&](auto tag) { forward<decltype(tag)>(f, x, y); });
}

void quadratic_feature_map_backward(const QuadraticFeatureMap& f, const Tensor& x, const Tensor& dy,
                                    Tensor& dx) {
  LINEA_ON_CUDA(x, quadratic_feature_map_backward(f, x, dy, dx));
  const char* op = "quadratic_feature_map_backward";
  cpu::check_float(x, op, "x");
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) > 0) << op << ": x " << shape_str(x.shape());
  check_out(f, dy, x, op, "dy");
  cpu::check_same_shape(dx, x, op, "dx", "x");
  cpu::dispatch_float(x.dtype(), [&](auto tag) { backward<decltype(tag)>(f, x, dy, dx); });
}

}  // namespace linea::kernels
