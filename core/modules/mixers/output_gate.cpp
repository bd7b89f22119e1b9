#include "core/modules/mixers/output_gate.h"

#include "kernels/swiglu.h"

namespace linea {

SwishOutputGate::SwishOutputGate(const std::string& prefix, int64_t hidden, int64_t heads,
                                 int64_t dv, DType dtype)
    : heads_(heads), dv_(dv), proj_(prefix + ".g_proj", hidden, heads * dv, dtype) {}

Tensor SwishOutputGate::forward(const Tensor& x, const Tensor& o) {
  gate_ = proj_.forward(x).view({x.dim(0), x.dim(1), heads_, dv_});
  o_ = o;
  Tensor y = Tensor::empty(o.shape(), o.dtype());
  kernels::swiglu_forward(gate_, o_, y);
  return y;
}

Tensor SwishOutputGate::backward(const Tensor& dy, Tensor& dx) {
  Tensor dgate = Tensor::empty(gate_.shape(), gate_.dtype());
  Tensor d_o = Tensor::empty(o_.shape(), o_.dtype());
  kernels::swiglu_backward(gate_, o_, dy, dgate, d_o);
  gate_ = o_ = Tensor();
  dx = proj_.backward(dgate.view({dy.dim(0), dy.dim(1), heads_ * dv_}));
  return d_o;
}

}  // namespace linea
