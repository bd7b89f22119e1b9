// CUDA RMSNorm (kernels/rmsnorm.h): the row-norm kernels of kernels/cuda/row_norm.cuh with
// div = 1/D.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/row_norm.cuh"

namespace linea::kernels::cuda {
namespace {

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
  row_norm::forward(x, w, eps, 1.0f / static_cast<float>(x.dim(-1)), y, rstd);
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
  row_norm::backward(x, w, rstd, dy, 1.0f / static_cast<float>(x.dim(-1)), dx, dw);
}

}  // namespace linea::kernels::cuda
