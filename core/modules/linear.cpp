#include "core/modules/linear.h"

#include "kernels/matmul.h"

namespace linea {

Linear::Linear(const std::string& name, int64_t in, int64_t out, DType dtype)
    : weight_(make_parameter(name + ".weight", {out, in}, dtype, /*weight_decay=*/true)) {}

Tensor Linear::forward(const Tensor& x) {
  LINEA_CHECK(x.dim(-1) == in_features()) << weight_.name << ": input " << shape_str(x.shape())
                                          << ", expected last dim " << in_features();
  Shape ys = x.shape();
  ys.back() = out_features();
  Tensor y = Tensor::empty(ys, x.dtype());
  kernels::linear_forward(x, weight_.value, y);
  x_ = x;
  return y;
}

Tensor Linear::backward(const Tensor& dy) {
  Tensor dx = Tensor::empty(x_.shape(), x_.dtype());
  kernels::linear_backward(x_, weight_.value, dy, dx, weight_.grad);
  x_ = Tensor();
  return dx;
}

}  // namespace linea
