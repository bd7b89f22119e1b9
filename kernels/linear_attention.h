// Basic (ungated) causal linear attention, per batch b and head h:
//   S_t = S_{t-1} + k_t^T v_t,   o_t = scale * q_t S_t,   S_0 = initial_state (or 0)
// q, k: [B, T, H, Dk]; v, o: [B, T, H, Dv]; states: [B, H, Dk, Dv]. f32 or f64, one dtype.
// (The feature map is applied by the caller; these kernels see phi(q), phi(k).)
//
// Two forms with identical results:
//  - recurrent: token by token (the reference);
//  - chunked (chunk C divides T): per chunk, o = scale * (q S_prev + tril(q k^T) v) as masked
//    matrix products over the chunk, and S_next = S_prev + k^T v; the state is carried only from
//    chunk to chunk.
// Both take an optional incoming state and return the final state when asked (undefined tensor =
// zero / not wanted): this is the segment transition S_out = S_in + B that LASP-2 composes.
//
// Backward (chunked), given dO and optionally dS_final (the gradient reaching the final state):
//   dS_t = dS_{t+1} + scale * q_t^T dO_t (accumulated backwards from dS_final),
//   dq_t = scale * dO_t S_t^T,  dk_t = v_t dS_t^T,  dv_t = k_t dS_t,  dS_in = dS_0.
// dq, dk, dv written (`=`); d_initial_state written when defined. Reductions in the input dtype
// with per-chunk products through BLAS.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void linear_attention_recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                        double scale, const Tensor& initial_state, Tensor& o,
                                        Tensor& final_state);

void linear_attention_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                      double scale, int64_t chunk, const Tensor& initial_state,
                                      Tensor& o, Tensor& final_state);

void linear_attention_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       double scale, int64_t chunk, const Tensor& initial_state,
                                       const Tensor& d_o, const Tensor& d_final_state, Tensor& dq,
                                       Tensor& dk, Tensor& dv, Tensor& d_initial_state);

}  // namespace linea::kernels
