// The (gated) delta rule of DeltaNet and Gated DeltaNet, per batch b and head h:
//   S_t = exp(g_t) (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,   o_t = scale * q_t S_t,
//   S_0 = initial_state (or 0).
// q, k: [B, T, H, Dk]; v, o: [B, T, H, Dv]; g, beta: [B, T, H]; states: [B, H, Dk, Dv];
// transitions: [B, H, Dk, Dk]. f32 or f64, one dtype; reductions in that dtype, products by BLAS.
// On CUDA tensors the chunked functions run kernels/cuda/delta_rule.cu (its header comment: f32
// arithmetic, f32 gates and states, chunks of 64 and any T, Dk in {64, 128}, Dv a multiple of 64).
// g is the log decay (<= 0 from the module, not checked: a positive g is followed faithfully but
// can overflow); an undefined g means no decay (DeltaNet). beta may be any real (the module gives
// (0, 1) or (0, 2)). q and k are used as given: the module L2-normalises them, nothing here
// relies on it.
//
// Two forms, equal up to rounding:
//  - recurrent: token by token (the reference);
//  - chunked (chunk C divides T), the WY / UT-transform form. Within a chunk (rows i, j = 0..C-1,
//    incoming state S), with b_i = g_0 + ... + g_i, gamma_i = exp(b_i), Gamma_ij = exp(b_i - b_j):
//      L  = strictly_lower(diag(beta) (K K^T ⊙ Gamma)),   Tr = (I + L)^{-1} diag(beta),
//      W  = Tr (gamma ⊙ K),  U = Tr V                  (forward substitutions, BLAS trsm),
//      U~ = U - W S        (row t: beta_t (v_t - k_t exp(g_t) S_{t-1}), the corrected value),
//      O  = scale ((gamma ⊙ Q) S + (tril(Q K^T) ⊙ Gamma) U~),
//      S_next = gamma_{C-1} S + (K ⊙ gamma_{C-1} / gamma)^T U~.
//    The state is carried only from chunk to chunk. Every exponent used is b_i - b_j with i >= j
//    (a sum of g's), so no 1/gamma is formed and, with g <= 0, nothing grows with C.
//
// Segment transition (DESIGN.md, "the affine state transition"): S_out = A S_in + B, where
//   A = prod_t exp(g_t) (I - beta_t k_t^T k_t)  (later tokens on the left), dense Dk x Dk,
//   B = the final state from a zero incoming state (the forward with initial_state undefined).
// delta_rule_chunked_transition builds A chunk by chunk from the same WY factors as the forward:
//   A_chunk = gamma_{C-1} I - (K ⊙ gamma_{C-1} / gamma)^T W,  A = A_chunk_last ... A_chunk_first,
// since S_next above is A_chunk S + (K ⊙ gamma_{C-1} / gamma)^T U.
// The outputs are affine in S_in as well: o = o_local + scale * q~ S_in, with q~_t = q_t P_t and
// P_t the transition from S_in to S_t (per chunk q~ = ((gamma ⊙ Q) - (tril(Q K^T) ⊙ Gamma) W)
// times the transition of the chunks before it); o_local is the forward from a zero state.
// Backward through S_in therefore composes as dS_in = c + A^T dS_out, where c = scale q~^T dO is
// d_initial_state of the backward run with d_final_state undefined (it depends on neither S_in
// nor dS_out, so initial_state may be left undefined too) and dS_out is the gradient reaching
// S_out. LASP-2 gathers (A, c), composes in reverse to find each segment's dS_out, then runs the
// backward once more with initial_state = S_in and d_final_state = dS_out: that run also gives
// the gradients of k, g and beta through A, so the export needs no backward of its own.
//
// Backward (chunked), given dO and optionally dS_final (undefined = zero): the exact gradient of
// the chunked forward (so of the recurrence). Each chunk's incoming state is recomputed from the
// inputs; then, chunk by chunk from the last, the formulas above are differentiated with the
// chunk's factors recomputed: the solve's adjoint is the transposed triangular solve
// (I + L)^T dY = [dU dW] (a back substitution), and the gradient of the cumulative decays b turns
// into dg by a reverse cumulative sum within the chunk (b starts afresh in every chunk; the
// decay of earlier chunks reaches this one only through S).
// dq, dk, dv, dbeta written (`=`); dg written (`=`) and required exactly when g is defined;
// d_initial_state written when defined.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void delta_rule_recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& g, const Tensor& beta, double scale,
                                  const Tensor& initial_state, Tensor& o, Tensor& final_state);

void delta_rule_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                const Tensor& beta, double scale, int64_t chunk,
                                const Tensor& initial_state, Tensor& o, Tensor& final_state);

void delta_rule_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                 const Tensor& beta, double scale, int64_t chunk,
                                 const Tensor& initial_state, const Tensor& d_o,
                                 const Tensor& d_final_state, Tensor& dq, Tensor& dk, Tensor& dv,
                                 Tensor& dg, Tensor& dbeta, Tensor& d_initial_state);

// The dense transition A [B, H, Dk, Dk] of the whole segment (k's T tokens), written (`=`).
void delta_rule_chunked_transition(const Tensor& k, const Tensor& g, const Tensor& beta,
                                   int64_t chunk, Tensor& transition);

}  // namespace linea::kernels
