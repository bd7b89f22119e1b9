// Whole-model checks in f64: the gradient of every parameter against finite differences of the
// loss, tied and untied heads, determinism, and gradient accumulation equal to one large batch.
#include "core/model/model.h"

#include <gtest/gtest.h>

#include "common/gradcheck.h"
#include "core/config/config.h"
#include "core/util/rng.h"

namespace linea {
namespace {

config::Config tiny_config(bool tied) {
  config::Config cfg = load_config({}, {});
  auto* m = cfg.mutable_model();
  m->set_vocab_size(11);
  m->set_hidden_size(8);
  m->set_num_layers(2);
  m->set_layer_pattern("LL");
  m->set_tie_embeddings(tied);
  m->set_init_std(0.3);  // large enough that every path carries a visible gradient
  m->mutable_mixer()->set_num_heads(2);
  m->mutable_mixer()->set_chunk_size(4);
  m->mutable_mixer()->set_feature_map(config::MixerConfig::ELU_PLUS_ONE);
  m->mutable_channel_mixer()->set_intermediate_size(12);
  cfg.mutable_data()->set_seq_len(8);
  return cfg;
}

data::Batch random_batch(int64_t B, int64_t T, int32_t vocab, uint64_t seed) {
  Rng rng(seed);
  data::Batch b{Tensor::empty({B, T}, DType::kI32), Tensor::empty({B, T}, DType::kI32)};
  for (int64_t i = 0; i < B * T; ++i) {
    b.inputs.data<int32_t>()[i] = static_cast<int32_t>(rng.below(vocab));
    // Some targets ignored, to exercise the masked mean.
    b.targets.data<int32_t>()[i] = (i % 5 == 3) ? -1 : static_cast<int32_t>(rng.below(vocab));
  }
  return b;
}

void check_model_gradients(bool tied) {
  config::Config cfg = tiny_config(tied);
  Model model(cfg, DType::kF64);
  model.init(7);
  data::Batch batch = random_batch(2, 8, 11, 3);
  model.zero_grad();
  model.forward_backward(batch, 1.0);
  for (Parameter* p : model.parameters()) {
    Tensor analytic = p->grad.clone();
    double err = testing::gradcheck(
        p->value, analytic, [&] { return model.forward_loss(batch).loss_sum; }, 1e-6, 60);
    EXPECT_LT(err, 1e-6) << p->name;
  }
}

TEST(Model, GradientsMatchFiniteDifferencesTied) { check_model_gradients(true); }
TEST(Model, GradientsMatchFiniteDifferencesUntied) { check_model_gradients(false); }

TEST(Model, ParameterNamesAreStableAndComplete) {
  Model model(tiny_config(false), DType::kF32);
  std::vector<std::string> names;
  for (Parameter* p : model.parameters()) names.push_back(p->name);
  EXPECT_EQ(names.front(), "embeddings.weight");
  EXPECT_EQ(names.back(), "lm_head.weight");
  EXPECT_NE(std::find(names.begin(), names.end(), "layers.1.mixer.q_proj.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "layers.0.mlp.down_proj.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "norm.weight"), names.end());
}

TEST(Model, InitIsDeterministic) {
  Model a(tiny_config(true), DType::kF32), b(tiny_config(true), DType::kF32);
  a.init(5);
  b.init(5);
  for (size_t i = 0; i < a.parameters().size(); ++i)
    EXPECT_EQ(testing::max_abs_diff(a.parameters()[i]->value, b.parameters()[i]->value), 0.0);
}

TEST(Model, AccumulatedMicroBatchesEqualOneBatch) {
  config::Config cfg = tiny_config(true);
  data::Batch big = random_batch(4, 8, 11, 9);
  Model one(cfg, DType::kF64), two(cfg, DType::kF64);
  one.init(1);
  two.init(1);
  one.zero_grad();
  two.zero_grad();
  LossStats s = one.forward_backward(big, 1.0);
  LossStats s1 = two.forward_backward({big.inputs.slice(0, 2), big.targets.slice(0, 2)}, 1.0);
  LossStats s2 = two.forward_backward({big.inputs.slice(2, 4), big.targets.slice(2, 4)}, 1.0);
  EXPECT_EQ(s.tokens, s1.tokens + s2.tokens);
  EXPECT_NEAR(s.loss_sum, s1.loss_sum + s2.loss_sum, 1e-10);
  for (size_t i = 0; i < one.parameters().size(); ++i)
    EXPECT_LT(testing::max_abs_diff(one.parameters()[i]->grad, two.parameters()[i]->grad), 1e-10)
        << one.parameters()[i]->name;
}

}  // namespace
}  // namespace linea

namespace linea {
namespace {

TEST(Model, LayerPatternAndPerLayerOverridesChooseTheMixers) {
  config::Config cfg = tiny_config(true);
  auto* m = cfg.mutable_model();
  m->set_num_layers(4);
  m->set_layer_pattern("LLLN");
  m->mutable_attention()->set_num_heads(2);
  auto* o = m->add_mixer_overrides();
  o->set_layer(1);
  o->mutable_mixer()->set_kind(config::MixerConfig::GLA);
  validate_config(cfg, 1);
  Model model(cfg, DType::kF32);
  std::vector<std::string> names;
  for (Parameter* p : model.parameters()) names.push_back(p->name);
  auto has = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  EXPECT_TRUE(has("layers.0.mixer.q_proj.weight"));
  EXPECT_FALSE(has("layers.0.mixer.gk_proj.0.weight"));
  EXPECT_TRUE(has("layers.1.mixer.gk_proj.0.weight"));  // the GLA override
  EXPECT_FALSE(has("layers.2.mixer.gk_proj.0.weight"));
  EXPECT_TRUE(has("layers.3.mixer.k_proj.weight"));  // softmax attention
  EXPECT_FALSE(has("layers.3.mixer.o_norm.weight"));
}

}  // namespace
}  // namespace linea

namespace linea {
namespace {

// A model with one MoE layer (softmax top-2, shared expert with its gate) and one dense layer:
// every gradient, aux and z losses included, against finite differences of the full objective.
TEST(Model, MoeGradientsMatchFiniteDifferences) {
  for (auto router : {config::MoeConfig::SOFTMAX_TOPK, config::MoeConfig::SIGMOID_BIAS}) {
    config::Config cfg = tiny_config(true);
    auto* cm = cfg.mutable_model()->mutable_channel_mixer();
    cm->set_kind(config::ChannelMixerConfig::MOE);
    cm->set_moe_pattern("ED");
    auto* moe = cm->mutable_moe();
    moe->set_num_experts(4);
    moe->set_top_k(2);
    moe->set_expert_intermediate_size(6);
    moe->set_router(router);
    moe->set_num_shared_experts(1);
    moe->set_shared_intermediate_size(4);
    moe->set_shared_expert_gate(router == config::MoeConfig::SOFTMAX_TOPK);
    moe->set_aux_loss_coeff(0.1);
    moe->set_z_loss_coeff(0.01);
    validate_config(cfg, 1);
    Model model(cfg, DType::kF64);
    model.init(7);
    ASSERT_EQ(model.moe_layers().size(), 1u);
    data::Batch batch = random_batch(2, 8, 11, 3);
    const double aux_scale = 3.0;
    model.zero_grad();
    LossStats s = model.forward_backward(batch, 1.0, aux_scale);
    EXPECT_GT(s.aux_loss, 0.0);
    EXPECT_GT(s.z_loss, 0.0);
    auto loss = [&] {
      LossStats l = model.forward_loss(batch);
      return l.loss_sum + aux_scale * (l.aux_loss + l.z_loss);
    };
    for (Parameter* p : model.parameters()) {
      Tensor analytic = p->grad.clone();
      double err = testing::gradcheck(p->value, analytic, loss, 1e-6, 60);
      EXPECT_LT(err, 1e-6) << p->name;
    }
    std::vector<std::string> names;
    for (Parameter* p : model.parameters()) names.push_back(p->name);
    auto has = [&](const std::string& n) {
      return std::find(names.begin(), names.end(), n) != names.end();
    };
    EXPECT_TRUE(has("layers.0.mlp.experts.3.up_proj.weight"));
    EXPECT_TRUE(has("layers.0.mlp.gate.weight"));
    EXPECT_TRUE(has("layers.0.mlp.shared_experts.down_proj.weight"));
    EXPECT_TRUE(has("layers.1.mlp.down_proj.weight"));  // the dense layer
  }
}

}  // namespace
}  // namespace linea
