#include "core/modules/mixers/segment.h"

#include "kernels/elementwise.h"
#include "kernels/gated_linear_attention.h"
#include "kernels/matmul.h"

namespace linea {
namespace {

// diag(exp(ak)) S diag(exp(av)) on the state's device (kernels/gated_linear_attention.h).
Tensor scale_diagonal(const Transition& t, const Tensor& s) {
  Tensor out = Tensor::empty(s.shape(), s.dtype(), s.device());
  kernels::gated_linear_attention_apply_transition(t.log_decay_k, t.log_decay_v, s, out);
  return out;
}

// out[bh] = op(M[bh]) @ s[bh] for every (b, h).
Tensor dense_apply(const Tensor& m, const Tensor& s, bool transpose) {
  Tensor out = Tensor::empty(s.shape(), s.dtype(), s.device());
  const int64_t BH = s.dim(0) * s.dim(1), Dk = s.dim(2), Dv = s.dim(3);
  Tensor mv = m.view({BH, Dk, Dk}), sv = s.view({BH, Dk, Dv}), ov = out.view({BH, Dk, Dv});
  for (int64_t i = 0; i < BH; ++i) {
    Tensor mi = mv.slice(i, i + 1).view({Dk, Dk});
    Tensor oi = ov.slice(i, i + 1).view({Dk, Dv});
    kernels::gemm(mi, transpose, sv.slice(i, i + 1).view({Dk, Dv}), false, oi);
  }
  return out;
}

Tensor add_optional(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b.defined() ? b.clone() : Tensor();
  if (!b.defined()) return a.clone();
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  kernels::add(a, b, out);
  return out;
}

}  // namespace

Tensor transition_apply(const Transition& t, const Tensor& s) {
  if (t.kind == Transition::Kind::kDense) return dense_apply(t.dense, s, false);
  return scale_diagonal(t, s);
}

Tensor transition_apply_transpose(const Transition& t, const Tensor& ds) {
  if (t.kind == Transition::Kind::kDense) return dense_apply(t.dense, ds, true);
  return scale_diagonal(t, ds);  // a diagonal map is its own transpose
}

Transition transition_compose(const Transition& first, const Transition& second) {
  LINEA_CHECK(first.kind == second.kind) << "composing transitions of different kinds";
  Transition out;
  out.kind = first.kind;
  if (first.kind == Transition::Kind::kDiagonal) {
    out.log_decay_k = add_optional(first.log_decay_k, second.log_decay_k);
    out.log_decay_v = add_optional(first.log_decay_v, second.log_decay_v);
    return out;
  }
  // M = M2 M1: apply M2 to each column block of M1 (M1 viewed as a [B, H, Dk, Dk] state).
  out.dense = dense_apply(second.dense, first.dense, false);
  return out;
}

}  // namespace linea
