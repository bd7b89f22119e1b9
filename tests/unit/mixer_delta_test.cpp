// DeltaNet and Gated DeltaNet: the mixer checks of tests/common/mixer_check.h for every variant,
// plus what the delta rule relies on: beta's range, unit-norm q and k, the decay's init and sign,
// and the checkpoint names.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "common/mixer_check.h"
#include "core/modules/mixers/delta_mixers.h"

namespace linea::testing {
namespace {

using MC = config::MixerConfig;

struct Variant {
  MC::Kind kind;
  bool neg_eigval;
};

class DeltaMixerChecks : public ::testing::TestWithParam<Variant> {};

TEST_P(DeltaMixerChecks, PassesMixerChecks) {
  MixerCheck c;
  c.cfg = mixer_test_config(GetParam().kind);
  c.cfg.mutable_model()->mutable_mixer()->set_allow_neg_eigval(GetParam().neg_eigval);
  auto m = build_mixer(c, DType::kF64);
  EXPECT_EQ(m->halo_size(), 3);  // conv_size 4
  EXPECT_EQ(m->num_states(), 1);
  expect_all_mixer_checks(c);
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, DeltaMixerChecks,
    ::testing::Values(Variant{MC::DELTANET, false}, Variant{MC::DELTANET, true},
                      Variant{MC::GATED_DELTANET, false}, Variant{MC::GATED_DELTANET, true}),
    [](const auto& info) {
      return MC::Kind_Name(info.param.kind) + (info.param.neg_eigval ? "_NegEigval" : "");
    });

// Without the conv there is no halo; DeltaNet's optional output gate rides along.
TEST(DeltaMixer, ShortConvOffPassesMixerChecks) {
  MixerCheck c;
  c.cfg = mixer_test_config(MC::DELTANET);
  c.cfg.mutable_model()->mutable_mixer()->set_short_conv(MC::OFF);
  c.cfg.mutable_model()->mutable_mixer()->set_output_gate(MC::ON);
  auto m = build_mixer(c, DType::kF64);
  EXPECT_EQ(m->halo_size(), 0);
  expect_all_mixer_checks(c);
}

// Builds the layer-0 mixer of `cfg` with weights N(0, std) and runs one forward on N(0, 1) input.
std::unique_ptr<TokenMixer> run_forward(const config::Config& cfg, double std, DeltaMixer** dm) {
  auto m = make_token_mixer(cfg, 0, "mixer", DType::kF64);
  m->init(3, std, std);
  *dm = dynamic_cast<DeltaMixer*>(m.get());
  EXPECT_NE(*dm, nullptr);
  m->forward(random_tensor({2, 16, cfg.model().hidden_size()}, 4));
  return m;
}

TEST(DeltaMixer, BetaRangeIsOpenUnitOrTwoInterval) {
  for (MC::Kind kind : {MC::DELTANET, MC::GATED_DELTANET})
    for (bool neg : {false, true}) {
      config::Config cfg = mixer_test_config(kind);
      cfg.mutable_model()->mutable_mixer()->set_allow_neg_eigval(neg);
      DeltaMixer* dm = nullptr;
      // Large weights spread the logits over about +-10: beta reaches near both ends.
      auto m = run_forward(cfg, 3.0, &dm);
      const double hi = neg ? 2.0 : 1.0;
      const Tensor& beta = dm->beta();
      ASSERT_EQ(beta.shape(), (Shape{2, 16, 2}));
      double lo_seen = hi, hi_seen = 0;
      for (int64_t i = 0; i < beta.numel(); ++i) {
        lo_seen = std::min(lo_seen, beta.item(i));
        hi_seen = std::max(hi_seen, beta.item(i));
      }
      const std::string what = MC::Kind_Name(kind) + (neg ? " (0, 2)" : " (0, 1)");
      EXPECT_GT(lo_seen, 0.0) << what;
      EXPECT_LT(hi_seen, hi) << what;
      EXPECT_LT(lo_seen, 0.1 * hi) << what;
      EXPECT_GT(hi_seen, 0.9 * hi) << what;  // with (0, 2): beyond 1, a negative eigenvalue
    }
}

TEST(DeltaMixer, QueriesAndKeysAreUnitNorm) {
  for (MC::Kind kind : {MC::DELTANET, MC::GATED_DELTANET})
    for (MC::Toggle conv : {MC::DEFAULT, MC::OFF}) {
      config::Config cfg = mixer_test_config(kind);
      cfg.mutable_model()->mutable_mixer()->set_short_conv(conv);
      DeltaMixer* dm = nullptr;
      auto m = run_forward(cfg, 0.5, &dm);
      for (const Tensor* t : {&dm->normalized_q(), &dm->normalized_k()}) {
        ASSERT_EQ(t->shape(), (Shape{2, 16, 2, 6}));
        double worst = 0;
        for (int64_t r = 0; r < t->numel() / 6; ++r) {
          double ss = 0;
          for (int64_t i = 0; i < 6; ++i) ss += t->item(r * 6 + i) * t->item(r * 6 + i);
          worst = std::max(worst, std::abs(std::sqrt(ss) - 1));
        }
        // The eps inside the root (1e-6) shortens a row of squared norm s by about 5e-7 / s.
        EXPECT_LT(worst, 1e-4) << MC::Kind_Name(kind) << " conv " << MC::Toggle_Name(conv);
      }
    }
}

TEST(DeltaMixer, GatedDecayInitAndSign) {
  config::Config cfg = mixer_test_config(MC::GATED_DELTANET);
  cfg.mutable_model()->mutable_mixer()->set_num_heads(4);
  cfg.mutable_model()->set_hidden_size(16);
  DeltaMixer* dm = nullptr;
  auto m = run_forward(cfg, 0.5, &dm);
  ParameterList params;
  m->collect(params);
  std::map<std::string, Parameter*> by_name;
  for (Parameter* p : params) by_name[p->name] = p;
  const Tensor& A_log = by_name.at("mixer.A_log")->value;
  const Tensor& dt_bias = by_name.at("mixer.dt_bias")->value;
  // A evenly over [1, 16]; softplus(dt_bias) log-evenly over [1e-3, 1e-1].
  for (int64_t h = 0; h < 4; ++h) {
    EXPECT_NEAR(std::exp(A_log.item(h)), 1 + 15 * h / 3.0, 1e-12) << h;
    const double dt = std::log1p(std::exp(dt_bias.item(h)));
    EXPECT_NEAR(std::log10(dt), -3 + 2 * h / 3.0, 1e-9) << h;
  }
  // The init is the same for every seed (a property of the parametrisation, not a draw).
  auto again = make_token_mixer(cfg, 0, "mixer", DType::kF64);
  again->init(99, 0.5, 0.5);
  ParameterList p2;
  again->collect(p2);
  for (Parameter* p : p2) {
    if (p->name == "mixer.A_log" || p->name == "mixer.dt_bias") {
      EXPECT_EQ(max_abs_diff(p->value, by_name.at(p->name)->value), 0.0) << p->name;
    }
  }

  const Tensor& g = dm->log_decay();
  ASSERT_EQ(g.shape(), (Shape{2, 16, 4}));
  for (int64_t i = 0; i < g.numel(); ++i) ASSERT_LT(g.item(i), 0.0) << i;
}

TEST(DeltaMixer, CheckpointNamesShapesAndDecay) {
  struct Want {
    Shape shape;
    bool decay;
  };
  // hidden 12, 2 heads of width 6, conv 4.
  const std::map<std::string, Want> common = {
      {"mixer.q_proj.weight", {{12, 12}, true}},  {"mixer.k_proj.weight", {{12, 12}, true}},
      {"mixer.v_proj.weight", {{12, 12}, true}},  {"mixer.b_proj.weight", {{2, 12}, true}},
      {"mixer.q_conv1d.weight", {{12, 4}, true}}, {"mixer.k_conv1d.weight", {{12, 4}, true}},
      {"mixer.v_conv1d.weight", {{12, 4}, true}}, {"mixer.o_norm.weight", {{6}, false}},
      {"mixer.o_proj.weight", {{12, 12}, true}}};
  std::map<std::string, Want> gated = common;
  gated["mixer.a_proj.weight"] = {{2, 12}, true};
  gated["mixer.A_log"] = {{2}, false};
  gated["mixer.dt_bias"] = {{2}, false};
  gated["mixer.g_proj.weight"] = {{12, 12}, true};
  for (MC::Kind kind : {MC::DELTANET, MC::GATED_DELTANET}) {
    auto m = make_token_mixer(mixer_test_config(kind), 0, "mixer", DType::kF64);
    ParameterList params;
    m->collect(params);
    const auto& want = kind == MC::DELTANET ? common : gated;
    EXPECT_EQ(params.size(), want.size()) << MC::Kind_Name(kind);
    for (Parameter* p : params) {
      auto it = want.find(p->name);
      ASSERT_NE(it, want.end()) << MC::Kind_Name(kind) << ": unexpected " << p->name;
      EXPECT_EQ(p->value.shape(), it->second.shape) << p->name;
      EXPECT_EQ(p->weight_decay, it->second.decay) << p->name;
    }
  }
}

TEST(DeltaMixer, ValueWidthFromExpandV) {
  config::Config cfg = mixer_test_config(MC::GATED_DELTANET);
  cfg.mutable_model()->mutable_mixer()->set_expand_v(2.0);
  auto m = make_token_mixer(cfg, 0, "mixer", DType::kF64);
  ParameterList params;
  m->collect(params);
  for (Parameter* p : params) {
    if (p->name == "mixer.v_proj.weight" || p->name == "mixer.g_proj.weight") {
      EXPECT_EQ(p->value.shape(), (Shape{24, 12})) << p->name;
    }
  }

  cfg.mutable_model()->mutable_mixer()->set_expand_v(0.25);  // 6 * 0.25 = 1.5
  try {
    make_token_mixer(cfg, 0, "mixer", DType::kF64);
    FAIL() << "expand_v giving a fractional value width was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.mixer.expand_v"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace linea::testing
