#include "core/modules/rmsnorm.h"

#include "kernels/rmsnorm.h"

namespace linea {

RMSNorm::RMSNorm(const std::string& name, int64_t dim, double eps, DType dtype)
    : weight_(make_parameter(name + ".weight", {dim}, dtype, /*weight_decay=*/false)), eps_(eps) {
  init_constant(weight_, 1.0);
}

Tensor RMSNorm::forward(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  rstd_ = Tensor::empty({x.numel() / x.dim(-1)}, x.dtype());
  kernels::rmsnorm_forward(x, weight_.value, eps_, y, rstd_);
  x_ = x;
  return y;
}

Tensor RMSNorm::backward(const Tensor& dy) {
  Tensor dx = Tensor::empty(x_.shape(), x_.dtype());
  kernels::rmsnorm_backward(x_, weight_.value, rstd_, dy, dx, weight_.grad);
  x_ = Tensor();
  rstd_ = Tensor();
  return dx;
}

}  // namespace linea
