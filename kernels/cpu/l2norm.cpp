// CPU L2 normalisation. The contract (formula, gradient rule) is in kernels/l2norm.h.
#include "kernels/l2norm.h"

#include <cmath>

#include "core/util/check.h"
#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

Shape row_shape(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 1); }

void check_x(const Tensor& x, const char* op) {
  LINEA_CHECK(x.defined()) << op << ": x is required";
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) > 0)
      << op << ": x needs a non-empty last dimension, got " << shape_str(x.shape());
  LINEA_CHECK(x.dtype() == DType::kF32 || x.dtype() == DType::kF64)
      << op << ": f32 or f64 only, got " << dtype_name(x.dtype());
  LINEA_CHECK(x.device().is_cpu()) << op << ": CPU kernel got x on " << x.device().str();
}

void check_like(const Tensor& t, const Shape& want, DType dtype, const char* op, const char* name) {
  LINEA_CHECK(t.defined()) << op << ": " << name << " is required";
  LINEA_CHECK(t.shape() == want) << op << ": " << name << " must be " << shape_str(want) << ", got "
                                 << shape_str(t.shape());
  LINEA_CHECK(t.dtype() == dtype) << op << ": " << name << " is " << dtype_name(t.dtype())
                                  << ", x is " << dtype_name(dtype);
  LINEA_CHECK(t.device().is_cpu()) << op << ": " << name << " is on " << t.device().str();
}

template <typename T>
void forward(const Tensor& x, double eps, Tensor& y, Tensor& rstd) {
  const int64_t D = x.dim(-1), rows = x.numel() / D;
  const T* px = x.data<T>();
  T* py = y.data<T>();
  T* pr = rstd.data<T>();
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = px + r * D;
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const double rs = 1.0 / std::sqrt(ss + eps);
    pr[r] = static_cast<T>(rs);
    for (int64_t i = 0; i < D; ++i) py[r * D + i] = static_cast<T>(xr[i] * rs);
  }
}

template <typename T>
void backward(const Tensor& x, const Tensor& rstd, const Tensor& dy, Tensor& dx) {
  const int64_t D = x.dim(-1), rows = x.numel() / D;
  const T *px = x.data<T>(), *pr = rstd.data<T>(), *pdy = dy.data<T>();
  T* pdx = dx.data<T>();
  for (int64_t r = 0; r < rows; ++r) {
    const T *xr = px + r * D, *dyr = pdy + r * D;
    const double rs = pr[r];
    double y_dot_dy = 0;
    for (int64_t i = 0; i < D; ++i) y_dot_dy += xr[i] * rs * dyr[i];
    for (int64_t i = 0; i < D; ++i)
      pdx[r * D + i] = static_cast<T>(rs * (dyr[i] - xr[i] * rs * y_dot_dy));
  }
}

}  // namespace

void l2norm_forward(const Tensor& x, double eps, Tensor& y, Tensor& rstd) {
  LINEA_ON_CUDA(x, l2norm_forward(x, eps, y, rstd));
  const char* op = "l2norm_forward";
  check_x(x, op);
  LINEA_CHECK(eps >= 0) << op << ": eps " << eps << " must be >= 0";
  check_like(y, x.shape(), x.dtype(), op, "y");
  check_like(rstd, row_shape(x), x.dtype(), op, "rstd");
  if (x.dtype() == DType::kF32) {
    forward<float>(x, eps, y, rstd);
  } else {
    forward<double>(x, eps, y, rstd);
  }
}

void l2norm_backward(const Tensor& x, const Tensor& rstd, const Tensor& dy, Tensor& dx) {
  LINEA_ON_CUDA(x, l2norm_backward(x, rstd, dy, dx));
  const char* op = "l2norm_backward";
  check_x(x, op);
  check_like(rstd, row_shape(x), x.dtype(), op, "rstd");
  check_like(dy, x.shape(), x.dtype(), op, "dy");
  check_like(dx, x.shape(), x.dtype(), op, "dx");
  if (x.dtype() == DType::kF32) {
    backward<float>(x, rstd, dy, dx);
  } else {
    backward<double>(x, rstd, dy, dx);
  }
}

}  // namespace linea::kernels
