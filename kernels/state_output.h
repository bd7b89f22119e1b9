// The part of a segment's outputs that comes from its incoming state, for the mixers with a
// diagonal state transition (kernels/gated_linear_attention.h): with b_t and bv_t the cumulative
// log decays of gk and gv from the segment start, inclusive of token t,
//   o_t = o_t(S_in = 0) + scale * ((q_t (.) exp(b_t)) S_in) (.) exp(bv_t).
// LASP-2 (parallel/lasp2.h) runs a segment's scan from a zero state while the incoming states are
// gathered, then adds this term; its backward needs only the map of dO to dS_in through the same
// term (the rest of the gradient comes from the scan's backward run with S_in):
//   dS_in += scale * sum_t (q_t (.) exp(b_t))^T (dO_t (.) exp(bv_t))     (without dS_out).
//
// q [B, T, H, Dk]; o, d_o [B, T, H, Dv]; gk [B, T, H, Dk] (vector), [B, T, H] (one scalar a head)
// or undefined (no decay); gv [B, T, H, Dv] or undefined; s, ds [B, H, Dk, Dv].
// CPU: one dtype (f32 or f64) for all; the exponents in that dtype. CUDA: q, o, d_o f32 or bf16,
// gates and states f32; arithmetic in f32; scratch of [B, T, H, Dk + Dv] f32.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

// o += scale * ((q (.) exp(b)) s) (.) exp(bv).
void state_output_forward(const Tensor& q, const Tensor& gk, const Tensor& gv, double scale,
                          const Tensor& s, Tensor& o);

// ds = scale * sum_t (q_t (.) exp(b_t))^T (d_o_t (.) exp(bv_t))   (written, `=`).
void state_output_state_grad(const Tensor& q, const Tensor& gk, const Tensor& gv, double scale,
                             const Tensor& d_o, Tensor& ds);

}  // namespace linea::kernels
