// RMSNorm over the last dimension with a learned scale ("<prefix>.weight", initialised to 1, no
// weight decay).
#pragma once

#include "core/modules/module.h"

namespace linea {

class RMSNorm {
 public:
  RMSNorm(const std::string& name, int64_t dim, double eps, DType dtype);
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  void collect(ParameterList& out) { out.push_back(&weight_); }
  void release_saved() { x_ = rstd_ = Tensor(); }

 private:
  Parameter weight_;
  double eps_;
  Tensor x_, rstd_;
};

}  // namespace linea
