// The chunked scan of gated linear attention with a vector key-side decay on CUDA (GLA, HGRN2:
// kernels/gated_linear_attention.h with gk [B, T, H, Dk], no gv), forward and backward. Per
// (batch, head), chunks of C = 64 tokens, b_t = the in-chunk inclusive cumulative log decay
// (a row of Dk values, <= 0 and falling in t), S_c the state entering chunk c:
//
//   o_t      = scale ((q_t (.) exp(b_t)) S_c + sum_(s <= t) A_ts v_s),
//   A_ts     = sum_d q_td k_sd exp(b_td - b_sd)           (every exponent <= 0: exact, no rescale)
//   S_(c+1)  = diag(exp(b_last)) S_c + sum_s (k_s (.) exp(b_last - b_s))^T v_s.
//
// Three steps, each parallel where the recurrence allows: (1) every chunk's local state sum U_c
// and total decay G_c = b_last (one block per chunk), (2) a scan over chunks per state element,
// S_(c+1) = exp(G_c) S_c + U_c, keeping every chunk's incoming state in a workspace, (3) every
// chunk's outputs from its incoming state (one block per chunk). The backward runs (1)-(2) again
// for S, the same two for dS in reverse (dS_c = exp(G_c) dS_(c+1) + scale sum_t (q_t (.)
// exp(b_t))^T dO_t, dS_NC = dS_out, dS_in = dS_0), then per chunk, with P_ts = scale dO_t . v_s:
//
//   dq_t = scale exp(b_t) (.) (dO_t S_c^T) + sum_(s <= t) P_ts k_s (.) exp(b_t - b_s)
//   dk_s = exp(b_last - b_s) (.) (v_s dS_(c+1)^T) + sum_(t >= s) P_ts q_t (.) exp(b_t - b_s)
//   dv_s = (k_s (.) exp(b_last - b_s)) dS_(c+1) + scale sum_(t >= s) A_ts dO_t
//   dgk_r = sum_(t >= r in the chunk) (q_t (.) dq_t - k_t (.) dk_t) + rowsum(dS_(c+1) (.) S_(c+1))
//
// (dgk: o and S_(c+1) depend on b only through q_t exp(b_t), k_s exp(-b_s) and exp(b_last)
// scaling S_(c+1), so d/db_t is q_t (.) dq_t - k_t (.) dk_t, plus the rowsum at the last token,
// and gk_r moves every b_t with t >= r of its chunk.)
//
// Tensor cores (secondary chunking, Yang et al. 2024): each chunk is 4 sub-chunks of 16 rows. For
// t in sub-chunk i, s in sub-chunk j < i and R = b at a boundary between them,
// exp(b_t - b_s) = exp(b_t - R) exp(R - b_s) with both factors <= 1 whatever the decay strength,
// so the off-diagonal 16 x 16 blocks of A, of dq's sum and of dk's sum are plain products of
// pre-scaled operands (q (.) exp(b - R), k (.) exp(R - b)); the 4 diagonal blocks keep the exact
// per-term form (one exp per (t, s, d), f32 on CUDA cores). Every other product (the chunk sums
// (k (.) exp(b_last - b))^T v and (q (.) exp(b))^T dO, (q (.) exp(b)) S_c, A v, P = dO v^T,
// dO S_c^T, v dS^T, (k (.) exp(b_last - b)) dS, A^T dO) is WMMA bf16 m16n16k16 with f32
// accumulation. The operands (q, k, v, dO, the decayed copies, A, P, S_c, dS) enter the tensor
// cores rounded to bf16, also for f32 storage; the decays, the states (workspace and scan), the
// accumulators, dq, dk before rounding, and dgk are f32. Tolerance against the f64 CPU reference:
// 2e-2 of the largest value for o, dq, dk, dv, dgk and the states, f32 or bf16 storage
// (tests/cuda/vector_decay_scan_cuda_test.cpp, docs/cuda.md).
//
// q, k, v, dO f32 or bf16 (one dtype, the outputs' too), gk, states and dgk f32; Dk, Dv in
// {64, 128}; any T (the last chunk may be partial). dq and dk are kept in f32 until dgk has read
// them. Work on the device's current stream; workspaces from the caching allocator: (T / 64 + 1)
// states per (b, h), twice in the backward. Kernels: the chunk sums (step 1), the state scan (2),
// the outputs (3, also dv: the same kernel with A^T), and dq, dk (one kernel, two instances).
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels::cuda {

// Arguments as kernels/gated_linear_attention.h, checked by the caller (gated_linear_attention.cu).
void vector_decay_scan_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gk,
                               float scale, const Tensor& initial_state, Tensor& o,
                               Tensor& final_state);

void vector_decay_scan_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gk,
                                float scale, const Tensor& initial_state, const Tensor& d_o,
                                const Tensor& d_final_state, Tensor& dq, Tensor& dk, Tensor& dv,
                                Tensor& dgk, Tensor& d_initial_state);

}  // namespace linea::kernels::cuda
