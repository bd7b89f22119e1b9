// The chunked causal scan behind the linear-attention family on CUDA, forward and backward. One
// kernel, four uses per layer: per (batch, head) it runs through the sequence chunk by chunk
// (C = 64 tokens), forward or reversed in time, keeping a state S [Dqk, Dv] in f32 registers:
//
//   S_t = exp(h_t) S_(t-1) + k_t^T v'_t,   out_t = out_scale * q_t S_t        (forward)
//   S_t = exp(h_t) S_(t+1) + k_t^T v'_t,   out_t = out_scale * q_t S_t        (reversed)
//
// with v' = v_scale * v and h the scalar log decay of each token and head (none: h = 0; basic
// linear attention), read from g [B, T, H] f32 as h_t = g_t, or with g_shift as h_t = g_(t+1)
// (and h = 0 past the end): the form the backward needs. The state starts at the initial state (or
// zero) and the final state is written when asked (times final_decay, see below); either may be
// stored transposed ([Dv, Dqk] in memory). Matrix products run on tensor cores (WMMA bf16
// m16n16k16, f32 accumulation); the intra-chunk scores and the state enter them in bf16, the
// state is carried in f32 and the decays are applied in f32.
//
// Linear attention with scalar decay g (kernels/gated_linear_attention.h's scalar gk; g = none for
// kernels/linear_attention.h), o_t = scale q_t S_t:
//   forward  o, S_out = scan(q, k, v;   g;          out_scale = scale, S0 = S_in)
//   dq               = scan(dO, v, k;  g;          out_scale = scale, S0 = S_in^T)
//   dv, dS_in        = scan(k, q, dO;  g shifted;  reversed, v_scale = scale, S0 = dS_out,
//                           final state times exp(g_0))
//   dk               = scan(v, dO, q;  g shifted;  reversed, v_scale = scale, S0 = dS_out^T)
//   dg_r             = sum_(t >= r) (q_t . dq_t - k_t . dk_t) + <dS_out, S_out>  (decay_grad)
// (dv_t = k_t dS_t and dk_t = v_t dS_t^T with dS_t = exp(g_(t+1)) dS_(t+1) + scale q_t^T dO_t,
// dS_T = dS_out; a term of o or S_out pairing tokens s < t carries exp(g_(s+1) + ... + g_t), so
// its derivative by g_r is the term itself when s < r <= t, which the two sums count.)
//
// Layout: q, k [B, T, H, Dqk] and v, out [B, T, H, Dv] (row stride H * D: a token's row of one
// head); states [B, H, Dqk, Dv] f32. Inputs bf16; out bf16 or f32. Dqk in {64, 128}; Dv a multiple
// of 64; any T (the last chunk may be partial). Runs on `stream`; writes `=` into out and the
// final state.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace linea::kernels::cuda {

struct ChunkScanArgs {
  const __nv_bfloat16* q = nullptr;  // [B, T, H, Dqk]
  const __nv_bfloat16* k = nullptr;  // [B, T, H, Dqk]
  const __nv_bfloat16* v = nullptr;  // [B, T, H, Dv]
  void* out =
      nullptr;  // [B, T, H, Dv], bf16 or f32 (out_f32); null: only the final state (q unused)
  bool out_f32 = false;
  const float* initial_state = nullptr;  // [B, H, Dqk, Dv] or null (zero)
  float* final_state = nullptr;          // [B, H, Dqk, Dv] or null (not wanted)
  bool initial_transposed = false;       // initial_state stored as [B, H, Dv, Dqk]
  bool final_transposed = false;         // final_state stored as [B, H, Dv, Dqk]
  int B = 0, T = 0, H = 0, Dqk = 0, Dv = 0;
  float out_scale = 1.0f, v_scale = 1.0f;  // v_scale != 0
  bool reverse = false;
  const float* g = nullptr;  // [B, T, H] log decay per token (<= 0), or null: no decay
  bool g_shift = false;      // h_t = g_(t+1) (0 at t = T - 1) instead of g_t
  bool final_decay = false;  // final state times exp(g_0) (needs g; the dS_in of a backward)
  // Segments of the sequence scanned in parallel (0: chosen from the shape so that the GPU is
  // full): a state pass sums k^T v per segment, a prefix over segments gives each its incoming
  // state (the LASP-2 composition inside one GPU), then every segment runs the full scan.
  int segments = 0;
  float* workspace = nullptr;  // chunk_scan_workspace_bytes(args) bytes, or null for 1 segment
};

// The segments chunk_scan will use for these args (resolving segments = 0), and the workspace it
// then needs (0 for one segment).
int chunk_scan_segments(const ChunkScanArgs& args);
size_t chunk_scan_workspace_bytes(const ChunkScanArgs& args);

// Throws linea::Error (naming the field) on unsupported shapes or a missing workspace.
void chunk_scan(const ChunkScanArgs& args, cudaStream_t stream);

// dg [B, T, H] f32 = the reverse cumulative sum over t of sum_d (q . dq - k . dk) plus
// <dS_out, S_out> per (b, h) (either state may be null: no final-state term). q, k, dq, dk
// [B, T, H, D] bf16 or f32 (dq_f32 / dk_f32 say which for the gradients; q, k are bf16).
void chunk_scan_decay_grad(const __nv_bfloat16* q, const __nv_bfloat16* k, const void* dq,
                           const void* dk, bool grads_f32, const float* s_out, const float* ds_out,
                           int B, int T, int H, int D, int Dv, float* dg, cudaStream_t stream);

}  // namespace linea::kernels::cuda
