// The chunked causal scan behind basic linear attention on CUDA, forward and backward. One kernel,
// four uses: per (batch, head) it runs through the sequence chunk by chunk (C = 64 tokens), forward
// or reversed in time, keeping a state S [Dqk, Dv] in f32 registers:
//
//   out_c = out_scale * (q_c S_before + mask(q_c k_c^T) v'_c),   S_after = S_before + k_c^T v'_c
//
// with v' = v_scale * v and mask = "s <= t" (forward) or "s >= t" (reversed), diagonal included.
// The state starts at the initial state (or zero) and the final state is written when asked;
// either may be stored transposed ([Dv, Dqk] in memory). Matrix products run on tensor cores
// (WMMA bf16 m16n16k16, f32 accumulation); the intra-chunk scores and the state enter them in
// bf16, the state is carried in f32.
//
// Linear attention (kernels/linear_attention.h, o_t = scale q_t S_t, S_t = S_{t-1} + k_t^T v_t):
//   forward  o                 = scan(q, k, v;    out_scale = scale, S0 = S_in) , S_out = final
//   dq                         = scan(dO, v, k;   out_scale = scale, S0 = S_in^T)
//   dv, dS_in                  = scan(k, q, dO;   reversed, v_scale = scale, S0 = dS_out) , final
//   dk                         = scan(v, dO, q;   reversed, v_scale = scale, S0 = dS_out^T)
// (dv_t = k_t dS_t and dk_t = v_t dS_t^T with dS_t = dS_out + scale sum_{s >= t} q_s^T dO_s.)
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
  void* out = nullptr;               // [B, T, H, Dv], bf16 or f32 (out_f32)
  bool out_f32 = false;
  const float* initial_state = nullptr;  // [B, H, Dqk, Dv] or null (zero)
  float* final_state = nullptr;          // [B, H, Dqk, Dv] or null (not wanted)
  bool initial_transposed = false;       // initial_state stored as [B, H, Dv, Dqk]
  bool final_transposed = false;         // final_state stored as [B, H, Dv, Dqk]
  int B = 0, T = 0, H = 0, Dqk = 0, Dv = 0;
  float out_scale = 1.0f, v_scale = 1.0f;  // v_scale != 0
  bool reverse = false;
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

}  // namespace linea::kernels::cuda
