// The swish output gate of the delta mixers, GSA and MoM (fla's gated RMSNorm after the per-head
// norm): y = SiLU(x Wg) * o per head (kernels/swiglu.h), weight "<prefix>.g_proj.weight"
// [H dv, D]. The backward writes (`=`) the gradients of o and of x and accumulates (`+=`) into the
// weight's.
#pragma once

#include "core/modules/linear.h"

namespace linea {

class SwishOutputGate {
 public:
  SwishOutputGate(const std::string& prefix, int64_t hidden, int64_t heads, int64_t dv,
                  DType dtype);
  void init(uint64_t seed, double std) { init_normal(proj_.weight(), seed, std); }
  void collect(ParameterList& out) { proj_.collect(out); }
  void release_saved() {
    proj_.release_saved();
    gate_ = o_ = Tensor();
  }
  // x [B, T, D], o [B, T, H, dv] -> y [B, T, H, dv]; saves the gate and o.
  Tensor forward(const Tensor& x, const Tensor& o);
  // dy [B, T, H, dv] -> do; the gradient reaching x through Wg goes to dx.
  Tensor backward(const Tensor& dy, Tensor& dx);

 private:
  int64_t heads_, dv_;
  Linear proj_;
  Tensor gate_, o_;
};

}  // namespace linea
