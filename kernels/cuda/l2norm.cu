// CUDA L2 norm (kernels/l2norm.h): the row-norm kernels of kernels/cuda/row_norm.cuh with div = 1
// and no weight; rstd is f32.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/row_norm.cuh"

namespace linea::kernels::cuda {
namespace {

void check_l2_args(const Tensor& x, const Tensor& rstd, const char* op) {
  check_float(x, op, "x");
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) > 0 && x.dim(-1) <= (1 << 30))
      << op << ": x " << describe(x) << " needs a last dimension D > 0";
  check_dtype(rstd, DType::kF32, op, "rstd");
  check_same_device(rstd, x, op, "rstd", "x");
  LINEA_CHECK(rstd.numel() == x.numel() / x.dim(-1))
      << op << ": rstd " << shape_str(rstd.shape()) << " must hold one value per row of x "
      << shape_str(x.shape());
}

}  // namespace

void l2norm_forward(const Tensor& x, double eps, Tensor& y, Tensor& rstd) {
  const char* op = "l2norm_forward";
  check_l2_args(x, rstd, op);
  check_same_shape(y, x, op, "y", "x");
  LINEA_CHECK(eps >= 0) << op << ": eps " << eps << " must be >= 0";
  row_norm::forward(x, Tensor(), eps, 1.0f, y, rstd);
}

void l2norm_backward(const Tensor& x, const Tensor& rstd, const Tensor& dy, Tensor& dx) {
  const char* op = "l2norm_backward";
  check_l2_args(x, rstd, op);
  check_same_shape(dy, x, op, "dy", "x");
  check_same_shape(dx, x, op, "dx", "x");
  Tensor no_dw;
  row_norm::backward(x, Tensor(), rstd, dy, 1.0f, dx, no_dw);
}

}  // namespace linea::kernels::cuda
