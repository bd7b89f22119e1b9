// The chunked scan of gated linear attention with a vector value-side decay and no key gate on
// CUDA (kernels/gated_linear_attention.h with gv [B, T, H, Dv], gk undefined: the first pass of
// Gated Slot Attention, whose "values" are the slot writes 1 - alpha), forward and backward. Per
// (batch, head), chunks of C = 64 tokens, bv_t = the in-chunk inclusive cumulative log decay (a row
// of Dv values, <= 0 and falling in t), S_c the state entering chunk c, A_ts = q_t . k_s:
//
//   o_t[j]   = scale (exp(bv_t[j]) (q_t S_c)[j] + sum_(s <= t) A_ts v_s[j] exp(bv_t[j] - bv_s[j]))
//   S_(c+1)  = S_c diag(exp(bv_last)) + sum_s k_s^T (v_s (.) exp(bv_last - bv_s))
//
// (every exponent <= 0: exact, no rescaling whatever the decay strength). The key side has no
// decay, so the scores A are plain dot products and the decay acts per output column.
//
// Three steps, as the key-side twin (kernels/cuda/vector_decay_scan.h): (1) every chunk's local
// state sum U_c and total decay G_c = bv_last (one block per chunk), (2) a scan over chunks per
// state element, S_(c+1) = S_c exp(G_c[j]) + U_c, keeping every chunk's incoming state in a
// workspace, (3) every chunk's outputs from its incoming state (one block per chunk). The backward
// runs (1)-(2) again for S, the same two in reverse for D_c, the gradient reaching the state that
// enters chunk c (D_c = D_(c+1) diag(exp(G_c)) + scale sum_t q_t^T (dO_t (.) exp(bv_t)),
// D_NC = dS_out, dS_in = D_0), then per chunk, with P_ts = scale sum_j dO_t[j] v_s[j]
// exp(bv_t[j] - bv_s[j]) (s <= t):
//
//   dq_t    = scale (dO_t (.) exp(bv_t)) S_c^T + sum_(s <= t) P_ts k_s
//   dk_s    = (v_s (.) exp(bv_last - bv_s)) D_(c+1)^T + sum_(t >= s) P_ts q_t
//   dv_s[j] = exp(bv_last[j] - bv_s[j]) (k_s D_(c+1))[j]
//             + scale sum_(t >= s) A_ts dO_t[j] exp(bv_t[j] - bv_s[j])
//   dgv_r   = sum_(t >= r in the chunk) (o_t (.) dO_t - v_t (.) dv_t) + colsum(D_(c+1) (.) S_(c+1))
//
// (o recomputed in f32 for dgv when it is wanted.)
//
// First version: every product is f32 on CUDA cores (no tensor cores), one exp per (t, s, j) term
// of the intra-chunk sums; all arithmetic, the decays, the states (workspace and scan), o, dq, dk,
// dv before rounding and dgv are f32, so f32 storage matches the f64 CPU reference to f32
// rounding (tests/cuda/value_decay_scan_cuda_test.cpp, docs/cuda.md). One block of 256 threads
// per chunk; up to 215 KB of shared memory for Dk = Dv = 128.
//
// q, k, v, dO f32 or bf16 (one dtype, the outputs' too), gv, states and dgv f32; Dk and Dv in
// {64, 128} (other sizes are refused); any T (the last chunk may be partial). Work on the device's
// current stream; workspaces from the caching allocator: (T / 64 + 1) states per (b, h), twice in
// the backward, and f32 copies of dq, dk, dv (bf16 storage) and o (dgv).
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels::cuda {

// Arguments as kernels/gated_linear_attention.h (o undefined: only final_state, which must then be
// defined), checked by the caller (gated_linear_attention.cu).
void value_decay_scan_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gv,
                              float scale, const Tensor& initial_state, Tensor& o,
                              Tensor& final_state);

void value_decay_scan_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gv,
                               float scale, const Tensor& initial_state, const Tensor& d_o,
                               const Tensor& d_final_state, Tensor& dq, Tensor& dk, Tensor& dv,
                               Tensor& dgv, Tensor& d_initial_state);

}  // namespace linea::kernels::cuda
