// LASP-2: a linear mixer run with its sequence split over W ranks (SP = W) gives the same outputs,
// input gradients and parameter gradients as one rank on the whole sequence (f64, 1e-10), for
// every mixer kind; and the bytes it gathers do not depend on the sequence length.
#include "parallel/lasp2.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "common/mixer_check.h"
#include "parallel/mpi_communicator.h"

namespace linea {
namespace {

using testing::max_abs;
using testing::max_abs_diff;
using testing::random_tensor;

struct SpCase {
  std::string name;
  config::Config cfg;
};

config::Config kind_config(config::MixerConfig::Kind kind) {
  return testing::mixer_test_config(kind);
}

std::vector<SpCase> sp_cases() {
  using MC = config::MixerConfig;
  std::vector<SpCase> cases;
  for (auto fm :
       {MC::IDENTITY, MC::ELU_PLUS_ONE, MC::HEDGEHOG, MC::BASED, MC::REBASED, MC::COSINE}) {
    config::Config c = kind_config(MC::LINEAR_ATTENTION);
    c.mutable_model()->mutable_mixer()->set_feature_map(fm);
    c.mutable_model()->mutable_mixer()->set_feature_dim(4);
    cases.push_back({"LINEAR_ATTENTION_" + MC::FeatureMap_Name(fm), c});
  }
  {
    config::Config c = kind_config(MC::LINEAR_ATTENTION);
    c.mutable_model()->mutable_mixer()->set_feature_map(MC::BASED);
    c.mutable_model()->mutable_mixer()->set_feature_dim(4);
    c.mutable_model()->mutable_mixer()->set_window_size(3);
    cases.push_back({"BASED_window", c});
  }
  for (auto k : {MC::LIGHTNING, MC::RETNET, MC::MAMBA2, MC::SIMPLE_GLA, MC::GLA, MC::HGRN2,
                 MC::DELTANET, MC::GATED_DELTANET, MC::GSA, MC::MOM}) {
    config::Config c = kind_config(k);
    c.mutable_model()->mutable_mixer()->set_num_slots(4);
    cases.push_back({MC::Kind_Name(k), c});
  }
  {
    config::Config c = kind_config(MC::GATED_DELTANET);
    c.mutable_model()->mutable_mixer()->set_allow_neg_eigval(true);
    cases.push_back({"GATED_DELTANET_neg_eigval", c});
  }
  return cases;
}

// tol: relative to max(1, max |reference|); 1e-10 in f64.
void expect_sp_equals_whole(const SpCase& sc, parallel::Communicator& sp, int64_t T,
                            DType dt = DType::kF64, double tol = 1e-10) {
  const int W = sp.size(), r = sp.rank();
  const int64_t B = 2, D = sc.cfg.model().hidden_size(), L = T / W;
  auto whole = make_token_mixer(sc.cfg, 0, "mixer", dt);
  whole->init(11, 0.3, 0.3);
  auto inner = make_token_mixer(sc.cfg, 0, "mixer", dt);
  inner->init(11, 0.3, 0.3);
  parallel::Lasp2Mixer split(std::move(inner), sp, sc.name);

  Tensor x = random_tensor({B, T, D}, 5, dt), dy = random_tensor({B, T, D}, 6, dt);
  Tensor y = whole->forward(x);
  Tensor dx = whole->backward(dy);
  Tensor ys = split.forward(kernels::slice_time(x, r * L, (r + 1) * L));
  Tensor dxs = split.backward(kernels::slice_time(dy, r * L, (r + 1) * L));

  const double ysc = std::max(1.0, max_abs(y)), dsc = std::max(1.0, max_abs(dx));
  EXPECT_LT(max_abs_diff(ys, kernels::slice_time(y, r * L, (r + 1) * L)) / ysc, tol)
      << sc.name << " outputs, rank " << r;
  EXPECT_LT(max_abs_diff(dxs, kernels::slice_time(dx, r * L, (r + 1) * L)) / dsc, tol)
      << sc.name << " input gradient, rank " << r;
  ParameterList pw, ps;
  whole->collect(pw);
  split.collect(ps);
  ASSERT_EQ(pw.size(), ps.size());
  for (size_t i = 0; i < pw.size(); ++i) {
    Tensor g = ps[i]->grad.clone();
    sp.all_reduce(g);  // each rank holds its shard's part of the gradient
    EXPECT_LT(max_abs_diff(g, pw[i]->grad) / std::max(1.0, max_abs(pw[i]->grad)), tol)
        << sc.name << " " << pw[i]->name << ", rank " << r;
  }
}

TEST(Lasp2, EveryMixerKindMatchesTheWholeSequence) {
  auto world = parallel::MpiCommunicator::world();
  // LINEA_SP_CASE=<substring> runs only the matching cases (debugging one kind).
  const char* only = std::getenv("LINEA_SP_CASE");
  for (const SpCase& sc : sp_cases())
    if (!only || sc.name.find(only) != std::string::npos)
      expect_sp_equals_whole(sc, *world, 8 * world->size());
}

// LASP-2H: softmax attention (MHA and GQA, with qk-norm, with a sliding window) with K and V
// gathered over W ranks equals the whole sequence on one rank.
TEST(Lasp2H, SoftmaxAttentionMatchesTheWholeSequence) {
  auto world = parallel::MpiCommunicator::world();
  const int W = world->size(), r = world->rank();
  for (int variant = 0; variant < 3; ++variant) {
    config::Config cfg = kind_config(config::MixerConfig::LINEAR_ATTENTION);
    cfg.mutable_model()->set_hidden_size(16);
    cfg.mutable_model()->set_layer_pattern("N");
    auto* a = cfg.mutable_model()->mutable_attention();
    a->set_num_heads(4);
    a->set_num_kv_heads(variant == 0 ? 4 : 2);
    a->set_qk_norm(variant == 1);
    a->set_window_size(variant == 2 ? 5 : 0);
    const int64_t B = 2, T = 6 * W, L = T / W, D = 16;
    auto whole = make_token_mixer(cfg, 0, "attn", DType::kF64);
    whole->init(11, 0.3, 0.3);
    auto split = make_token_mixer(cfg, 0, "attn", DType::kF64);
    split->init(11, 0.3, 0.3);
    ASSERT_TRUE(split->enable_sequence_parallel(*world));
    Tensor x = random_tensor({B, T, D}, 5), dy = random_tensor({B, T, D}, 6);
    Tensor y = whole->forward(x), dx = whole->backward(dy);
    Tensor ys = split->forward(kernels::slice_time(x, r * L, (r + 1) * L));
    Tensor dxs = split->backward(kernels::slice_time(dy, r * L, (r + 1) * L));
    EXPECT_LT(max_abs_diff(ys, kernels::slice_time(y, r * L, (r + 1) * L)), 1e-10) << variant;
    EXPECT_LT(max_abs_diff(dxs, kernels::slice_time(dx, r * L, (r + 1) * L)), 1e-10) << variant;
    ParameterList pw, ps;
    whole->collect(pw);
    split->collect(ps);
    for (size_t i = 0; i < pw.size(); ++i) {
      Tensor g = ps[i]->grad.clone();
      world->all_reduce(g, parallel::ReduceOp::kSum);
      EXPECT_LT(max_abs_diff(g, pw[i]->grad), 1e-10) << pw[i]->name << " variant " << variant;
    }
  }
}

// In f32 (the training dtype) the same holds to 1e-4 relative: the difference is rounding of the
// composed states.
TEST(Lasp2, F32MatchesTheWholeSequence) {
  auto world = parallel::MpiCommunicator::world();
  for (const SpCase& sc : sp_cases())
    if (sc.name == "GLA" || sc.name == "GATED_DELTANET" || sc.name == "MAMBA2" || sc.name == "GSA")
      expect_sp_equals_whole(sc, *world, 8 * world->size(), DType::kF32, 1e-4);
}

TEST(Lasp2, GatheredBytesDoNotDependOnSequenceLength) {
  auto world = parallel::MpiCommunicator::world();
  const int W = world->size();
  for (auto kind : {config::MixerConfig::GLA, config::MixerConfig::GATED_DELTANET}) {
    config::Config cfg = kind_config(kind);
    uint64_t bytes[2];
    for (int i = 0; i < 2; ++i) {
      const int64_t T = (i == 0 ? 8 : 32) * W;
      auto inner = make_token_mixer(cfg, 0, "mixer", DType::kF32);
      inner->init(3, 0.1, 0.1);
      parallel::Lasp2Mixer split(std::move(inner), *world, "bytes");
      Tensor x = random_tensor({2, T / W, cfg.model().hidden_size()}, 1, DType::kF32);
      world->stats().reset();
      Tensor y = split.forward(x);
      split.backward(y);
      bytes[i] = world->stats().bytes_sent[static_cast<int>(parallel::CollectiveKind::kAllGather)];
    }
    EXPECT_GT(bytes[0], 0u);
    EXPECT_EQ(bytes[0], bytes[1]) << config::MixerConfig::Kind_Name(kind);
  }
}

}  // namespace
}  // namespace linea
