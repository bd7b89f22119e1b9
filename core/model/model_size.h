// Parameter counts and training FLOPs of a config's model, without building the model (the
// Linear-MoE zoo shapes have billions of parameters). `linea info model` prints them;
// docs/model_size.md has every formula.
//
// How it counts: each layer's token mixer is constructed alone (make_token_mixer with that layer's
// config) and its ParameterList summed; norms, the dense SwiGLU MLP, the MoE router, experts and
// shared experts, the embedding and the LM head are counted from their shapes. A unit test
// (tests/unit/model_size_test.cpp) checks the total against linea::Model::num_parameters().
//
//   total        = every parameter once (a tied LM head is the embedding, counted once)
//   active       = total - sum over MoE layers of (num_experts - top_k) * routed expert size
//                  (what one token's forward touches: router, top_k routed experts, shared experts)
//   "without input embedding" drops the input embedding [V, D] (an untied LM head stays in);
//   "non-embedding" drops the LM head too (the convention of the Linear-MoE names A0.3B-2B:
//   the active count is non-embedding, the total counts everything).
//   train FLOPs per token = 3 * forward = 6 * matmul parameters + 3 * sequence-dependent mixer
//   terms.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "linea.pb.h"

namespace linea {

// One layer's parameters by part and its sequence-dependent forward FLOPs per token.
struct LayerSize {
  int layer = 0;
  char mixer_letter = 'L';     // layer_pattern letter: L linear mixer, N softmax attention
  char channel_letter = 'D';   // resolved_moe_pattern letter: D dense MLP, E MoE
  std::string mixer_kind;      // MixerConfig kind name, or "SOFTMAX_ATTENTION"
  int64_t token_mixer = 0;     // every parameter of the mixer module (projections, gates, norms...)
  int64_t norms = 0;           // attn_norm + mlp_norm
  int64_t dense_mlp = 0;       // SwiGLU 3 D F (dense layers)
  int64_t router = 0;          // E D (MoE layers)
  int64_t routed_experts = 0;  // E * 3 D F_e
  int64_t routed_experts_active = 0;  // top_k * 3 D F_e
  int64_t shared_experts = 0;         // 3 D (S F_s) + D with shared_expert_gate
  // Forward FLOPs per token that depend on the sequence (attention scores, state updates), not
  // counted by 2 * matmul parameters.
  double mixer_sequence_flops = 0;
  std::string mixer_flops_note;  // the shapes behind mixer_sequence_flops, for the printout

  int64_t channel_mixer() const { return dense_mlp + router + routed_experts + shared_experts; }
  int64_t total() const { return token_mixer + norms + channel_mixer(); }
  int64_t active() const { return total() - routed_experts + routed_experts_active; }
};

struct ModelSize {
  int64_t vocab = 0, hidden = 0;
  bool tied = true;
  int64_t embedding = 0;   // V D
  int64_t lm_head = 0;     // V D untied, 0 tied
  int64_t final_norm = 0;  // D
  std::vector<LayerSize> layers;
  int64_t seq_len = 0;

  int64_t total = 0, total_without_embedding = 0, total_non_embedding = 0;
  int64_t active = 0, active_without_embedding = 0, active_non_embedding = 0;
  // Parameters one token multiplies by (active, less the embedding lookup and the norm scales,
  // plus the LM head matrix even when tied): 2 FLOPs each forward.
  int64_t matmul_parameters = 0;
  double train_flops_matmul = 0;    // 6 * matmul_parameters
  double train_flops_sequence = 0;  // 3 * sum of mixer_sequence_flops
  double train_flops = 0;           // per token, forward + backward
};

// Counts the model of `cfg` (validated first, with world size 0). Builds one token mixer at a time.
ModelSize count_model_size(const config::Config& cfg);

// The human-readable table (`linea info model`) and its JSON form (`--json`).
std::string model_size_table(const ModelSize& s);
std::string model_size_json(const ModelSize& s);

}  // namespace linea
