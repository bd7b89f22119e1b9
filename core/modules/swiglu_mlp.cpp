#include "core/modules/swiglu_mlp.h"

#include "kernels/elementwise.h"
#include "kernels/swiglu.h"

namespace linea {

SwiGLUMLP::SwiGLUMLP(const std::string& name, int64_t hidden, int64_t intermediate, DType dtype)
    : gate_(name + ".gate_proj", hidden, intermediate, dtype),
      up_(name + ".up_proj", hidden, intermediate, dtype),
      down_(name + ".down_proj", intermediate, hidden, dtype) {}

void SwiGLUMLP::init(uint64_t seed, double std, double out_std) {
  init_normal(gate_.weight(), seed, std);
  init_normal(up_.weight(), seed, std);
  init_normal(down_.weight(), seed, out_std);
}

Tensor SwiGLUMLP::forward(const Tensor& x) {
  g_ = gate_.forward(x);
  u_ = up_.forward(x);
  Tensor h = Tensor::empty(g_.shape(), g_.dtype());
  kernels::swiglu_forward(g_, u_, h);
  return down_.forward(h);
}

Tensor SwiGLUMLP::backward(const Tensor& dy) {
  Tensor dh = down_.backward(dy);
  Tensor dg = Tensor::empty(g_.shape(), g_.dtype());
  Tensor du = Tensor::empty(u_.shape(), u_.dtype());
  kernels::swiglu_backward(g_, u_, dh, dg, du);
  g_ = Tensor();
  u_ = Tensor();
  Tensor dx = gate_.backward(dg);
  kernels::add_inplace(dx, up_.backward(du));
  return dx;
}

void SwiGLUMLP::collect(ParameterList& out) {
  gate_.collect(out);
  up_.collect(out);
  down_.collect(out);
}

}  // namespace linea
