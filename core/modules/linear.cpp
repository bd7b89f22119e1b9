#include "core/modules/linear.h"

#include "core/modules/matmul_precision.h"
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
  // bf16 precision: the bf16 copy of x is what backward needs (half the memory of x); the
  // weight's copy is made again there rather than kept.
  x_ = matmul_operand(x);
  kernels::linear_forward(x_, matmul_operand(weight_.value), y);
  return y;
}

Tensor Linear::backward(const Tensor& dy) {
  // dx in the storage dtype (f32 from bf16 operands under bf16 precision).
  Tensor dx = Tensor::empty(x_.shape(), dy.dtype());
  const Tensor w =
      x_.dtype() == weight_.value.dtype() ? weight_.value : weight_.value.to(x_.dtype());
  kernels::linear_backward(x_, w, x_.dtype() == dy.dtype() ? dy : dy.to(x_.dtype()), dx,
                           weight_.grad);
  x_ = Tensor();
  return dx;
}

}  // namespace linea
