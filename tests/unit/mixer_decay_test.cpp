// The decay mixers (LIGHTNING, RETNET, MAMBA2, SIMPLE_GLA, GLA, HGRN2): the mixer checks of
// tests/common/mixer_check.h for every kind and the non-default variants (short convolution,
// toggled gates and norms, lower-bounded forget gate), then each kind's own parametrisation,
// read back from the segment transitions (the log decays the state pass really applied) and
// compared with the paper's formula evaluated here from the parameters.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "common/mixer_check.h"
#include "core/modules/mixers/decay_mixers.h"

namespace linea::testing {
namespace {

using MC = config::MixerConfig;

struct Variant {
  std::string name;
  MC::Kind kind;
  std::function<void(MC&)> tweak;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

class DecayMixer : public ::testing::TestWithParam<Variant> {};

TEST_P(DecayMixer, PassesMixerChecks) {
  MixerCheck c;
  c.cfg = mixer_test_config(GetParam().kind);
  if (GetParam().tweak) GetParam().tweak(*c.cfg.mutable_model()->mutable_mixer());
  expect_all_mixer_checks(c);
}

const Variant kVariants[] = {
    {"Lightning", MC::LIGHTNING, nullptr},
    {"LightningNoGateNoNorm", MC::LIGHTNING,
     [](MC& m) {
       m.set_output_gate(MC::OFF);
       m.set_output_norm(false);
     }},
    {"RetNet", MC::RETNET, [](MC& m) { m.set_value_dim(12); }},  // the paper's d_v = 2 d_k
    {"Mamba2", MC::MAMBA2, [](MC& m) { m.set_expand_v(2); }},
    {"Mamba2NoConvNoGate", MC::MAMBA2,
     [](MC& m) {
       m.set_short_conv(MC::OFF);
       m.set_output_gate(MC::OFF);
     }},
    {"SimpleGla", MC::SIMPLE_GLA, nullptr},
    {"SimpleGlaShortConv", MC::SIMPLE_GLA, [](MC& m) { m.set_short_conv(MC::ON); }},
    {"Gla", MC::GLA, [](MC& m) { m.set_gate_low_rank(4); }},
    {"GlaShortConv", MC::GLA,
     [](MC& m) {
       m.set_gate_low_rank(4);
       m.set_short_conv(MC::ON);
       m.set_conv_size(3);
     }},
    {"Hgrn2", MC::HGRN2, nullptr},
    {"Hgrn2BoundGateConv", MC::HGRN2,
     [](MC& m) {
       m.set_forget_lower_bound(0.3);
       m.set_output_gate(MC::ON);
       m.set_short_conv(MC::ON);
     }},
};

INSTANTIATE_TEST_SUITE_P(Kinds, DecayMixer, ::testing::ValuesIn(kVariants),
                         [](const auto& info) { return info.param.name; });

// ---- helpers for the parametrisation tests -----------------------------------------------------

Parameter& param(TokenMixer& m, const std::string& name) {
  ParameterList ps;
  m.collect(ps);
  for (Parameter* p : ps)
    if (p->name == name) return *p;
  ADD_FAILURE() << "no parameter " << name;
  return *ps.front();
}

// x_row . W[row, :] for x [.., D] at flat row r.
double row_dot(const Tensor& x, int64_t r, const Tensor& w, int64_t row) {
  const int64_t D = w.dim(1);
  double acc = 0;
  for (int64_t i = 0; i < D; ++i) acc += x.item(r * D + i) * w.item(row * D + i);
  return acc;
}

double log_sigmoid(double z) { return -std::log1p(std::exp(-z)); }
double softplus(double z) { return std::log1p(std::exp(z)); }

// The transition of one segment run from a zero state.
SegmentOut run(TokenMixer& m, const Tensor& x) {
  SegmentOut out;
  m.forward_segment(x, SegmentIn{}, &out);
  return out;
}

// ---- LIGHTNING: lambda_h = exp(-2^(-8 (h+1) / H) (1 - l / (L - 1) + 1e-5)) ----------------------

TEST(DecayMixerParametrisation, LightningDecaysFollowSlopesAndDepth) {
  for (int layers : {1, 4}) {
    config::Config cfg = mixer_test_config(MC::LIGHTNING);
    cfg.mutable_model()->set_num_layers(layers);
    cfg.mutable_model()->set_layer_pattern(std::string(layers, 'L'));
    cfg.mutable_model()->mutable_mixer()->set_num_heads(4);
    const int64_t T = 8, H = 4;
    for (int l = 0; l < layers; ++l) {
      auto m = make_token_mixer(cfg, l, "mixer", DType::kF64);
      m->init(3, 0.3, 0.3);
      const SegmentOut out = run(*m, random_tensor({2, T, 12}, 1));
      const Tensor& a = out.transitions[0].log_decay_k;  // [B, H]: T log lambda_h
      ASSERT_EQ(a.shape(), (Shape{2, H}));
      for (int64_t h = 0; h < H; ++h) {
        const double depth = layers > 1 ? 1 - l / double(layers - 1) + 1e-5 : 1.0;
        const double log_lambda = -std::pow(2.0, -8.0 * (h + 1) / H) * depth;
        for (int64_t b = 0; b < 2; ++b)
          EXPECT_NEAR(a.item(b * H + h), T * log_lambda, 1e-12) << "layer " << l << " head " << h;
        EXPECT_NEAR(dynamic_cast<DecayAttention&>(*m).constant_log_decay()[h], log_lambda, 1e-15);
      }
    }
  }
}

// ---- RETNET: gamma_h = 1 - 2^(-5 - h) -------------------------------------------------------

TEST(DecayMixerParametrisation, RetNetGammas) {
  config::Config cfg = mixer_test_config(MC::RETNET);
  cfg.mutable_model()->mutable_mixer()->set_num_heads(4);
  auto m = make_token_mixer(cfg, 0, "mixer", DType::kF64);
  m->init(3, 0.3, 0.3);
  const int64_t T = 16;
  const Tensor a = run(*m, random_tensor({1, T, 12}, 2)).transitions[0].log_decay_k;
  const double gammas[] = {1 - 1 / 32.0, 1 - 1 / 64.0, 1 - 1 / 128.0, 1 - 1 / 256.0};
  for (int h = 0; h < 4; ++h) EXPECT_NEAR(std::exp(a.item(h) / T), gammas[h], 1e-14) << h;
}

// ---- MAMBA2: g = -exp(A_log) softplus(x W_dt + dt_bias), so 0 < exp(g) < 1 ----------------------

TEST(DecayMixerParametrisation, Mamba2InitAndDecay) {
  config::Config cfg = mixer_test_config(MC::MAMBA2);
  auto* mc = cfg.mutable_model()->mutable_mixer();
  mc->set_expand_v(2);
  mc->set_num_heads(4);
  auto m = make_token_mixer(cfg, 0, "mixer", DType::kF64);
  m->init(3, 0.3, 0.3);
  const int64_t H = 4, D = 12, N = 3, inner = 24;
  const Tensor& A_log = param(*m, "mixer.A_log").value;
  const Tensor& dt_bias = param(*m, "mixer.dt_bias").value;
  for (int64_t h = 0; h < H; ++h) {
    EXPECT_GE(std::exp(A_log.item(h)), 1.0);
    EXPECT_LE(std::exp(A_log.item(h)), 16.0);
    EXPECT_GE(softplus(dt_bias.item(h)), 1e-3 * (1 - 1e-12));
    EXPECT_LE(softplus(dt_bias.item(h)), 1e-1 * (1 + 1e-12));
    if (h > 0) {
      EXPECT_GT(A_log.item(h), A_log.item(h - 1)) << "heads span the range";
      EXPECT_GT(dt_bias.item(h), dt_bias.item(h - 1)) << "heads span the range";
    }
    EXPECT_EQ(param(*m, "mixer.D").value.item(h), 1.0);
  }
  // One-token segments expose each token's log decay as its transition.
  const Tensor& w = param(*m, "mixer.in_proj.weight").value;  // rows: z, x, B, C, dt
  ASSERT_EQ(w.dim(0), 2 * inner + 2 * N + H);
  const Tensor x = random_tensor({2, 1, D}, 4, DType::kF64, 2.0);
  const Tensor g = run(*m, x).transitions[0].log_decay_k;  // [B, H]
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const double dt = softplus(row_dot(x, b, w, 2 * inner + 2 * N + h) + dt_bias.item(h));
      const double expect = -std::exp(A_log.item(h)) * dt;
      EXPECT_NEAR(g.item(b * H + h), expect, 1e-12);
      EXPECT_GT(std::exp(g.item(b * H + h)), 0.0);
      EXPECT_LT(std::exp(g.item(b * H + h)), 1.0);
    }
}

// ---- SIMPLE_GLA: g = logsigmoid(x W_g + b) / normalizer, one scalar per head
// ---------------------

TEST(DecayMixerParametrisation, SimpleGlaScalarGate) {
  config::Config cfg = mixer_test_config(MC::SIMPLE_GLA);
  cfg.mutable_model()->mutable_mixer()->set_gate_logit_normalizer(4);
  auto m = make_token_mixer(cfg, 0, "mixer", DType::kF64);
  m->init(3, 0.3, 0.3);
  Parameter& bias = param(*m, "mixer.gk_proj.bias");
  EXPECT_FALSE(bias.weight_decay);
  bias.value.copy_from(random_tensor({2}, 9));
  const Tensor x = random_tensor({2, 1, 12}, 5);
  const Tensor g = run(*m, x).transitions[0].log_decay_k;  // [B, H]
  const Tensor& w = param(*m, "mixer.gk_proj.weight").value;
  ASSERT_EQ(g.shape(), (Shape{2, 2}));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 2; ++h)
      EXPECT_NEAR(g.item(b * 2 + h), log_sigmoid(row_dot(x, b, w, h) + bias.value.item(h)) / 4,
                  1e-12);
}

// ---- GLA: gk = logsigmoid(x W1^T W2^T + b) / normalizer, one per key channel --------------------

TEST(DecayMixerParametrisation, GlaLowRankVectorGate) {
  config::Config cfg = mixer_test_config(MC::GLA);
  cfg.mutable_model()->mutable_mixer()->set_gate_low_rank(3);
  auto m = make_token_mixer(cfg, 0, "mixer", DType::kF64);
  m->init(3, 0.3, 0.3);
  Parameter& bias = param(*m, "mixer.gk_proj.1.bias");
  bias.value.copy_from(random_tensor({12}, 9));
  const Tensor& w1 = param(*m, "mixer.gk_proj.0.weight").value;  // [r, D]
  const Tensor& w2 = param(*m, "mixer.gk_proj.1.weight").value;  // [H dk, r]
  ASSERT_EQ(w1.shape(), (Shape{3, 12}));
  ASSERT_EQ(w2.shape(), (Shape{12, 3}));
  const Tensor x = random_tensor({2, 1, 12}, 6);
  const Tensor g = run(*m, x).transitions[0].log_decay_k;  // [B, H, dk]
  ASSERT_EQ(g.shape(), (Shape{2, 2, 6}));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t c = 0; c < 12; ++c) {
      double z = bias.value.item(c);
      for (int64_t r = 0; r < 3; ++r) z += row_dot(x, b, w1, r) * w2.item(c * 3 + r);
      EXPECT_NEAR(g.item(b * 12 + c), log_sigmoid(z) / 16, 1e-12);
    }
}

// ---- HGRN2: S_1 = (1 - f)^T v from a zero state, f the forget gate (>= the lower bound)
// ----------

TEST(DecayMixerParametrisation, Hgrn2KeyIsOneMinusForgetGate) {
  for (double lb : {0.0, 0.3}) {
    config::Config cfg = mixer_test_config(MC::HGRN2);
    cfg.mutable_model()->mutable_mixer()->set_forget_lower_bound(lb);
    auto m = make_token_mixer(cfg, 0, "mixer", DType::kF64);
    m->init(3, 0.5, 0.5);
    const Tensor x = random_tensor({2, 1, 12}, 7, DType::kF64, 2.0);
    const SegmentOut out = run(*m, x);
    const Tensor& a = out.transitions[0].log_decay_k;  // [B, H, dk] = log f
    const Tensor& s = out.final_states[0];             // [B, H, dk, dv]
    const Tensor& wi = param(*m, "mixer.i_proj.weight").value;
    const Tensor& wf = param(*m, "mixer.f_proj.weight").value;
    const int64_t H = 2, dk = 6, dv = 6;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < dk; ++i) {
          const double f = std::exp(a.item((b * H + h) * dk + i));
          const double sig = 1 / (1 + std::exp(-row_dot(x, b, wf, h * dk + i)));
          EXPECT_NEAR(f, lb + (1 - lb) * sig, 1e-12);
          EXPECT_GE(f, lb);
          for (int64_t j = 0; j < dv; ++j) {
            const double v = row_dot(x, b, wi, h * dv + j);
            EXPECT_NEAR(s.item(((b * H + h) * dk + i) * dv + j), (1 - f) * v, 1e-12) << "lb " << lb;
          }
        }
  }
}

// ---- User errors name the field -------------------------------------------------------------

TEST(DecayMixerConfig, Mamba2RejectsIndivisibleValueWidth) {
  config::Config cfg = mixer_test_config(MC::MAMBA2);
  cfg.mutable_model()->mutable_mixer()->set_num_heads(5);
  cfg.mutable_model()->mutable_mixer()->set_head_dim(4);
  try {
    make_token_mixer(cfg, 0, "mixer", DType::kF64);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.mixer.num_heads"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace linea::testing
