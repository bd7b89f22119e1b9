#include "core/modules/mixers/segment.h"

#include <cmath>

#include "kernels/matmul.h"

namespace linea {
namespace {

// S[b,h,i,j] *= exp(ak[b,h,(i)]) * exp(av[b,h,j]); ak may be scalar per head.
Tensor scale_diagonal(const Transition& t, const Tensor& s) {
  Tensor out = s.clone();
  const int64_t B = s.dim(0), H = s.dim(1), Dk = s.dim(2), Dv = s.dim(3);
  const bool scalar_k = t.log_decay_k.defined() && t.log_decay_k.ndim() == 2;
  for (int64_t bh = 0; bh < B * H; ++bh) {
    for (int64_t i = 0; i < Dk; ++i) {
      double fk = 0;
      if (t.log_decay_k.defined()) fk = t.log_decay_k.item(scalar_k ? bh : bh * Dk + i);
      for (int64_t j = 0; j < Dv; ++j) {
        double f = fk + (t.log_decay_v.defined() ? t.log_decay_v.item(bh * Dv + j) : 0.0);
        const int64_t idx = (bh * Dk + i) * Dv + j;
        out.set_item(idx, out.item(idx) * std::exp(f));
      }
    }
  }
  return out;
}

// out[bh] = op(M[bh]) @ s[bh] for every (b, h).
Tensor dense_apply(const Tensor& m, const Tensor& s, bool transpose) {
  Tensor out = Tensor::empty(s.shape(), s.dtype());
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
  Tensor out = a.clone();
  for (int64_t i = 0; i < out.numel(); ++i) out.set_item(i, a.item(i) + b.item(i));
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
