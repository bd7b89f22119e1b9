// Linear projection without bias: y = x W^T, W [out, in] (PyTorch nn.Linear layout and name
// "<prefix>.weight").
#pragma once

#include "core/modules/module.h"

namespace linea {

class Linear {
 public:
  Linear(const std::string& name, int64_t in, int64_t out, DType dtype);
  // x [..., in] -> [..., out]; saves x.
  Tensor forward(const Tensor& x);
  // dy [..., out] -> dx [..., in]; dW += dy^T x. Releases the saved input.
  Tensor backward(const Tensor& dy);
  void collect(ParameterList& out) { out.push_back(&weight_); }
  // Drops what forward saved (activation recomputation runs forward again before backward).
  void release_saved() { x_ = Tensor(); }
  Parameter& weight() { return weight_; }
  int64_t in_features() const { return weight_.value.dim(1); }
  int64_t out_features() const { return weight_.value.dim(0); }

 private:
  Parameter weight_;
  Tensor x_;
};

}  // namespace linea
