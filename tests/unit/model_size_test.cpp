// count_model_size (core/model/model_size.h) against the parameters of the built model, for every
// shipped tiny config; active == total for dense models; moe_tiny's active count by hand.
#include "core/model/model_size.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/config/config.h"
#include "core/model/model.h"

namespace linea {
namespace {

namespace fs = std::filesystem;

std::string source_path(const std::string& rel) {
  return std::string(LINEA_SOURCE_DIR) + "/" + rel;
}

// configs/tiny, moe_tiny, hybrid_tiny and every configs/mixers/*.pbtxt.
std::vector<std::string> tiny_configs() {
  std::vector<std::string> files = {source_path("configs/tiny.pbtxt"),
                                    source_path("configs/moe_tiny.pbtxt"),
                                    source_path("configs/hybrid_tiny.pbtxt")};
  std::vector<std::string> mixers;
  for (const auto& e : fs::directory_iterator(source_path("configs/mixers")))
    if (e.path().extension() == ".pbtxt") mixers.push_back(e.path().string());
  std::sort(mixers.begin(), mixers.end());
  EXPECT_GE(mixers.size(), 18u);
  files.insert(files.end(), mixers.begin(), mixers.end());
  return files;
}

bool has_moe(const config::Config& cfg) {
  return resolved_moe_pattern(cfg).find('E') != std::string::npos;
}

TEST(ModelSize, TotalEqualsTheBuiltModelForEveryTinyConfig) {
  for (const std::string& file : tiny_configs()) {
    SCOPED_TRACE(file);
    const config::Config cfg = load_config({file}, {});
    const ModelSize s = count_model_size(cfg);
    Model model(cfg, DType::kF32);
    EXPECT_EQ(s.total, model.num_parameters());
    EXPECT_EQ(s.total_without_embedding, s.total - s.embedding);
    EXPECT_EQ(s.active_without_embedding, s.active - s.embedding);
    EXPECT_EQ(s.total_non_embedding, s.total - s.embedding - s.lm_head);
    EXPECT_EQ(s.active_non_embedding, s.active - s.embedding - s.lm_head);
    if (has_moe(cfg)) {
      EXPECT_LT(s.active, s.total);
    } else {
      EXPECT_EQ(s.active, s.total);
    }
    EXPECT_GT(s.train_flops_sequence, 0);
    EXPECT_DOUBLE_EQ(s.train_flops, 6.0 * s.matmul_parameters + s.train_flops_sequence);
  }
}

// Dense and MoE layers mixed, shared-expert gate, per-layer mixer overrides, qk-norm, untied head.
TEST(ModelSize, VariantsEqualTheBuiltModel) {
  const std::string moe = source_path("configs/moe_tiny.pbtxt");
  std::vector<config::Config> variants = {
      load_config({moe}, {"model.channel_mixer.moe_every=2"}),
      load_config({moe}, {"model.channel_mixer.moe.shared_expert_gate=true",
                          "model.attention.qk_norm=true", "model.tie_embeddings=false"}),
      load_config({moe}, {"model.channel_mixer.moe.num_shared_experts=0",
                          "model.channel_mixer.moe.top_k=4"}),
  };
  config::Config overridden = load_config({source_path("configs/hybrid_tiny.pbtxt")}, {});
  auto* o = overridden.mutable_model()->add_mixer_overrides();
  o->set_layer(1);
  o->mutable_mixer()->set_kind(config::MixerConfig::GATED_DELTANET);
  variants.push_back(overridden);
  for (const config::Config& cfg : variants) {
    SCOPED_TRACE(cfg.model().ShortDebugString());
    const ModelSize s = count_model_size(cfg);
    EXPECT_EQ(s.total, Model(cfg, DType::kF32).num_parameters());
  }
  // moe_every = 2: layers 1 and 3 are MoE, 0 and 2 dense.
  const ModelSize every2 = count_model_size(variants[0]);
  EXPECT_GT(every2.layers[0].dense_mlp, 0);
  EXPECT_EQ(every2.layers[1].dense_mlp, 0);
  EXPECT_GT(every2.layers[1].router, 0);
  // top_k = num_experts and no shared experts: every routed expert is active.
  const ModelSize all_active = count_model_size(variants[2]);
  EXPECT_EQ(all_active.active, all_active.total);
  // The overridden layer has its own mixer count.
  const ModelSize over = count_model_size(overridden);
  EXPECT_EQ(over.layers[1].mixer_kind, "GATED_DELTANET");
  EXPECT_NE(over.layers[1].token_mixer, over.layers[0].token_mixer);
}

TEST(ModelSize, UntiedHeadCountsOnceMore) {
  for (const char* rel : {"configs/tiny.pbtxt", "configs/moe_tiny.pbtxt"}) {
    const config::Config tied = load_config({source_path(rel)}, {});
    const config::Config untied = load_config({source_path(rel)}, {"model.tie_embeddings=false"});
    const ModelSize a = count_model_size(tied), b = count_model_size(untied);
    const int64_t VD = 257 * 64;
    EXPECT_EQ(b.total, a.total + VD);
    EXPECT_EQ(b.active, a.active + VD);
    EXPECT_EQ(b.active_without_embedding, a.active_without_embedding + VD);
    EXPECT_EQ(b.active_non_embedding, a.active_non_embedding);
    EXPECT_EQ(b.total, Model(untied, DType::kF32).num_parameters());
    // The LM head's matmul is counted either way.
    EXPECT_EQ(b.matmul_parameters, a.matmul_parameters);
  }
}

// configs/moe_tiny.pbtxt by hand: V = 257, D = 64, layers LLLN; L = basic linear attention with 4
// heads of 16 (q, k, v, o projections and a per-head output norm); N = softmax attention with 4
// query heads and 2 kv heads of 16; MoE on every layer: 4 experts of width 64, top 2, one shared
// expert of width 64, no shared gate; tied embeddings.
TEST(ModelSize, MoeTinyByHand) {
  const int64_t V = 257, D = 64, F = 64, E = 4, K = 2;
  const int64_t embedding = V * D, final_norm = D, norms = 2 * D;
  const int64_t linear_mixer = 4 * D * D + 16;
  const int64_t attention = D * D + 2 * (D * 32) + D * D;
  const int64_t expert = 3 * D * F, router = E * D, shared = 3 * D * F;
  const int64_t active_channel = router + K * expert + shared;
  const int64_t total_channel = router + E * expert + shared;
  const int64_t total = embedding + final_norm + 3 * (linear_mixer + norms + total_channel) +
                        (attention + norms + total_channel);
  const int64_t active = embedding + final_norm + 3 * (linear_mixer + norms + active_channel) +
                         (attention + norms + active_channel);

  const ModelSize s = count_model_size(load_config({source_path("configs/moe_tiny.pbtxt")}, {}));
  EXPECT_TRUE(s.tied);
  EXPECT_EQ(s.total, total);
  EXPECT_EQ(s.active, active);
  EXPECT_EQ(s.active_without_embedding, active - embedding);
  ASSERT_EQ(s.layers.size(), 4u);
  EXPECT_EQ(s.layers[0].token_mixer, linear_mixer);
  EXPECT_EQ(s.layers[3].token_mixer, attention);
  EXPECT_EQ(s.layers[3].mixer_letter, 'N');
  EXPECT_EQ(s.layers[1].routed_experts_active, K * expert);
  EXPECT_EQ(s.layers[1].shared_experts, shared);
  // Matmul parameters: active less the embedding lookup and the norm scales, plus the tied head.
  EXPECT_EQ(s.matmul_parameters, active - embedding - final_norm - 4 * norms + V * D);

  // Sequence terms at T = 128: the L layers' state [4, 16, 16] with chunk 32, the N layer's causal
  // softmax over a mean context of 64 tokens.
  const double T = 128, C = 32, H = 4, d = 16;
  const double linear_flops = 4 * H * d * d + C * H * (d + d);
  const double attention_flops = 2 * 2 * (T / 2) * H * d;
  EXPECT_DOUBLE_EQ(s.layers[0].mixer_sequence_flops, linear_flops);
  EXPECT_DOUBLE_EQ(s.layers[3].mixer_sequence_flops, attention_flops);
  EXPECT_DOUBLE_EQ(s.train_flops,
                   6.0 * double(s.matmul_parameters) + 3 * (3 * linear_flops + attention_flops));
}

TEST(ModelSize, SlidingWindowLimitsTheAttentionContext) {
  const std::string hybrid = source_path("configs/hybrid_tiny.pbtxt");
  const ModelSize full = count_model_size(load_config({hybrid}, {}));
  const ModelSize window =
      count_model_size(load_config({hybrid}, {"model.attention.window_size=32"}));
  // Mean of min(t, 32) over 128 tokens, continuous: 32 - 32^2 / 256 = 28.
  EXPECT_DOUBLE_EQ(window.layers[3].mixer_sequence_flops,
                   full.layers[3].mixer_sequence_flops * 28.0 / 64.0);
}

TEST(ModelSize, JsonCarriesTheTable) {
  const ModelSize s = count_model_size(load_config({source_path("configs/moe_tiny.pbtxt")}, {}));
  const auto j = nlohmann::json::parse(model_size_json(s));
  EXPECT_EQ(j["total"].get<int64_t>(), s.total);
  EXPECT_EQ(j["active_without_embedding"].get<int64_t>(), s.active_without_embedding);
  EXPECT_EQ(j["tied_embeddings"].get<bool>(), true);
  EXPECT_EQ(j["layers"].size(), 4u);
  EXPECT_DOUBLE_EQ(j["train_flops_per_token"].get<double>(), s.train_flops);
  const std::string table = model_size_table(s);
  EXPECT_NE(table.find("TIED"), std::string::npos);
  EXPECT_NE(table.find("TOTAL parameters"), std::string::npos);
  EXPECT_NE(table.find("ACTIVE parameters"), std::string::npos);
}

}  // namespace
}  // namespace linea
