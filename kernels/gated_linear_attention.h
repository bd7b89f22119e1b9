// Gated (decayed) causal linear attention: the CPU reference for every linear mixer whose state
// transition is diagonal. Per batch b and head h, with log-space gates (values <= 0):
//   S_t = diag(exp(gk_t)) S_{t-1} diag(exp(gv_t)) + k_t^T v_t,   o_t = scale * q_t S_t,
//   S_0 = initial_state (or 0).
// q, k: [B, T, H, Dk]; v, o: [B, T, H, Dv]; states: [B, H, Dk, Dv]. f32 or f64, one dtype for all.
// Gates (each may be an undefined Tensor, meaning no decay on that side):
//   gk: key-side log decay, [B, T, H, Dk] (vector: GLA, HGRN2) or [B, T, H] (one scalar per head
//       broadcast over Dk: Mamba2, simple GLA; Lightning/RetNet pass the constant log(lambda_h)).
//   gv: value-side log decay, [B, T, H, Dv] (the first pass of Gated Slot Attention).
// Gates > 0 are accepted (a finite-difference step may cross 0) but may overflow; with gates <= 0
// every exponent the chunked form evaluates is a sum of gates, so none is positive, whatever the
// decay strength or chunk size.
//
// Two forward forms with identical results:
//  - recurrent: token by token (the reference);
//  - chunked (chunk C divides T): with b_t and bv_t the in-chunk cumulative log decays of gk and gv
//    (inclusive: S_t carries token t's decay), the intra-chunk part is masked products over the
//    chunk weighted by the relative decays exp(b_t - b_s), exp(bv_t - bv_s), s <= t (a scalar gate
//    gives one masked C x C decay matrix; a vector gate decays each term of the scores); the
//    inter-chunk part reads the carried state with q_t scaled by exp(b_t) (and o_t by exp(bv_t)),
//    and S_next = diag(exp(b_C)) S_prev diag(exp(bv_C)) + sum_s k~_s^T v~_s with
//    k~_s = k_s exp(b_C - b_s), v~_s = v_s exp(bv_C - bv_s). No loop over tokens carries the state.
// Both take an optional incoming state and return the final state when asked (undefined tensor =
// zero / not wanted). The chunked form also takes o undefined: then only the final state is made
// (the state pass of LASP-2, parallel/lasp2.h), which must then be wanted.
//
// Segment transition (LASP-2): a segment maps its incoming state to its outgoing one by
//   S_out = diag(exp(A_k)) S_in diag(exp(A_v)) + B,
// with A_k = sum_t gk_t and A_v = sum_t gv_t over the segment (gated_linear_attention_segment_
// log_decay; a missing gate contributes 0) and B = the final state of a forward from a zero
// initial state. A_k is [B, H, Dk] for vector gk and [B, H] for scalar gk; A_v is [B, H, Dv]. The
// outputs are affine in S_in too: o_t = o_t(S_in = 0) + scale * ((q_t exp(b_t)) S_in) exp(bv_t),
// b and bv cumulative from the segment start. The backward maps dS_out to
// dS_in = diag(exp(A_k)) dS_out diag(exp(A_v)) + (the part from the segment's own outputs).
//
// Backward (chunked), given dO and optionally dS_final (the gradient reaching the final state):
//   dS_t = diag(exp(gk_{t+1})) dS_{t+1} diag(exp(gv_{t+1})) + scale * q_t^T dO_t (from dS_final),
//   dq_t = scale * dO_t S_t^T,  dk_t = v_t dS_t^T,  dv_t = k_t dS_t,
//   dS_in = diag(exp(gk_1)) dS_1 diag(exp(gv_1)).
// Gate gradients, per chunk with S_next, dS_next its outgoing state and that state's gradient and
// (.) the element-wise product:
//   dgk_r = sum_{t >= r in the chunk} (q_t (.) dq_t - k_t (.) dk_t) + rowsum(dS_next (.) S_next),
//   dgv_r = sum_{t >= r in the chunk} (o_t (.) dO_t - v_t (.) dv_t) + colsum(dS_next (.) S_next);
// scalar gk gets the sum over Dk of the vector rule. dq, dk, dv, dgk, dgv, d_initial_state are
// written (`=`), the last three when defined (undefined = not wanted; dgk/dgv need their gate).
// Reductions in the input dtype, with per-chunk products through BLAS.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void gated_linear_attention_recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                              const Tensor& gk, const Tensor& gv, double scale,
                                              const Tensor& initial_state, Tensor& o,
                                              Tensor& final_state);

void gated_linear_attention_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                            const Tensor& gk, const Tensor& gv, double scale,
                                            int64_t chunk, const Tensor& initial_state, Tensor& o,
                                            Tensor& final_state);

void gated_linear_attention_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const Tensor& gk, const Tensor& gv, double scale,
                                             int64_t chunk, const Tensor& initial_state,
                                             const Tensor& d_o, const Tensor& d_final_state,
                                             Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dgk,
                                             Tensor& dgv, Tensor& d_initial_state);

// A_k = sum over T of gk ([B, T, H, Dk] -> [B, H, Dk], [B, T, H] -> [B, H]) and A_v = sum over T
// of gv ([B, T, H, Dv] -> [B, H, Dv]), written (`=`) when defined; each needs its gate.
void gated_linear_attention_segment_log_decay(const Tensor& gk, const Tensor& gv,
                                              Tensor& log_decay_k, Tensor& log_decay_v);

// The segment transition applied to a state S [B, H, Dk, Dv] (being diagonal, it is also its own
// transpose, the map of a gradient dS_out to dS_in):
//   out = diag(exp(log_decay_k)) S diag(exp(log_decay_v)),
// log_decay_k [B, H, Dk], [B, H] (one scalar a head) or undefined (no decay on that side),
// log_decay_v [B, H, Dv] or undefined; out (`=`) shaped like S, may be S itself. CPU: one dtype
// (f32 or f64), the exponent in f64; CUDA: f32.
void gated_linear_attention_apply_transition(const Tensor& log_decay_k, const Tensor& log_decay_v,
                                             const Tensor& s, Tensor& out);

}  // namespace linea::kernels
