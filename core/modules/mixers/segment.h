// What flows between adjacent segments of one sequence (chunks of a long sequence, or the shards
// of the ranks of a sequence-parallel group): DESIGN.md's affine state transition.
//
// A linear mixer carries one or more states S [B, H, Dk, Dv] (one per memory or pass). Over a
// segment, each maps as S_out = A(S_in) + B, where A depends only on the segment's tokens:
//   kDiagonal: A(S) = diag(exp(a_k)) S diag(exp(a_v)), a_k [B, H, Dk] or [B, H] (scalar per head,
//              broadcast), a_v [B, H, Dv]; an undefined side is the identity (basic linear
//              attention has both undefined: A = I);
//   kDense:    A(S) = M S, M [B, H, Dk, Dk] (delta rule).
// B is the final state of the segment run from zero incoming states.
// Mixers with a local window (short convolution, sliding-window branch) also need the last few
// rows of the previous segment's input: the halo.
#pragma once

#include <vector>

#include "core/tensor/tensor.h"

namespace linea {

struct Transition {
  enum class Kind { kDiagonal, kDense };
  Kind kind = Kind::kDiagonal;
  Tensor log_decay_k;  // kDiagonal
  Tensor log_decay_v;  // kDiagonal
  Tensor dense;        // kDense
};

// A(S) for S [B, H, Dk, Dv].
Tensor transition_apply(const Transition& t, const Tensor& s);
// A^T(dS): how the gradient reaching S_out flows to S_in.
Tensor transition_apply_transpose(const Transition& t, const Tensor& ds);
// The transition of `first` followed by `second` (second ∘ first).
Transition transition_compose(const Transition& first, const Transition& second);

struct SegmentIn {
  std::vector<Tensor> states;  // incoming states, one per mixer state; empty = all zero
  Tensor halo;                 // [B, halo_size, D] last rows of the previous segment's input;
                               // undefined = start of the sequence (zeros)
};

struct SegmentOut {
  std::vector<Tensor> final_states;     // S_out, one per state
  std::vector<Transition> transitions;  // A, one per state
};

struct SegmentGradIn {
  std::vector<Tensor> d_final_states;  // gradients reaching S_out; empty = zero
};

struct SegmentGradOut {
  std::vector<Tensor> d_states;  // gradients of the incoming states
  Tensor d_halo;                 // gradient of the halo rows (when halo_size() > 0)
};

}  // namespace linea
