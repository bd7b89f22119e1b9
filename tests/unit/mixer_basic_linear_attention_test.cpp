// Basic linear attention with every feature map: the mixer checks of tests/common/mixer_check.h,
// Based with its sliding-window branch (halo), and the defining property of each learned map.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "common/kernel_check.h"
#include "common/mixer_check.h"
#include "core/modules/mixers/qk_feature_map.h"

namespace linea::testing {
namespace {

using MC = config::MixerConfig;

struct Variant {
  const char* name;
  MC::FeatureMap map;
  int feature_dim = 4;  // small, so Based's 1 + f + f^2 keys stay cheap
  int window = 0;
};

class BasicLinearAttentionMixer : public ::testing::TestWithParam<Variant> {};

TEST_P(BasicLinearAttentionMixer, PassesMixerChecks) {
  MixerCheck c;
  c.cfg = mixer_test_config(MC::LINEAR_ATTENTION);
  MC* m = c.cfg.mutable_model()->mutable_mixer();
  m->set_feature_map(GetParam().map);
  m->set_feature_dim(GetParam().feature_dim);
  m->set_window_size(GetParam().window);
  expect_all_mixer_checks(c);
}

INSTANTIATE_TEST_SUITE_P(
    FeatureMaps, BasicLinearAttentionMixer,
    ::testing::Values(Variant{"IDENTITY", MC::IDENTITY}, Variant{"ELU_PLUS_ONE", MC::ELU_PLUS_ONE},
                      Variant{"RELU", MC::RELU}, Variant{"HEDGEHOG", MC::HEDGEHOG},
                      // feature_dim == head_dim (12 / 2): the identity-initialised map.
                      Variant{"HEDGEHOG_square", MC::HEDGEHOG, 6}, Variant{"BASED", MC::BASED},
                      // window 4: a halo of 3 rows, less than the half segment of 8 tokens.
                      Variant{"BASED_window", MC::BASED, 4, 4},
                      // window 1: each token sees only itself, no halo.
                      Variant{"BASED_window1", MC::BASED, 4, 1}, Variant{"REBASED", MC::REBASED},
                      Variant{"COSINE", MC::COSINE}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- each map's defining property, on the map object the mixer uses ---------------------------

MC map_config(MC::FeatureMap f, int feature_dim) {
  MC m;
  m.set_feature_map(f);
  m.set_feature_dim(feature_dim);
  return m;
}

double row_dot(const Tensor& a, int64_t ra, const Tensor& b, int64_t rb) {
  const int64_t n = a.dim(-1);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a.item(ra * n + i) * b.item(rb * n + i);
  return s;
}

TEST(FeatureMapProperty, BasedIsTheTaylorPolynomialOfExp) {
  const int64_t f = 5, H = 2, rows = 2 * 3 * H;
  QKFeatureMap phi("mixer", map_config(MC::BASED, f), H, 6, 1e-6, DType::kF64);
  EXPECT_EQ(phi.in_dim(), f);
  EXPECT_EQ(phi.out_dim(), 1 + f + f * f);
  EXPECT_EQ(phi.scale(), 1.0);
  const Tensor q = random_tensor({2, 3, H, f}, 1), k = random_tensor({2, 3, H, f}, 2);
  const Tensor fq = phi.forward(QKFeatureMap::kQuery, q), fk = phi.forward(QKFeatureMap::kKey, k);
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0; s < rows; ++s) {
      const double qk = row_dot(q, r, k, s);
      const double want = 1 + qk / std::sqrt(double(f)) + qk * qk / (2.0 * f);
      worst = std::max(worst, std::abs(row_dot(fq, r, fk, s) - want) / std::max(1.0, want));
    }
  EXPECT_LT(worst, 1e-14);
}

TEST(FeatureMapProperty, HedgehogFeaturesArePositiveAndSumToTwo) {
  const int64_t d = 6, f = 4, H = 2;
  QKFeatureMap phi("mixer", map_config(MC::HEDGEHOG, f), H, d, 1e-6, DType::kF64);
  phi.init(3);
  EXPECT_EQ(phi.in_dim(), d);
  EXPECT_EQ(phi.out_dim(), 2 * f);
  const Tensor y =
      phi.forward(QKFeatureMap::kQuery, random_tensor({2, 5, H, d}, 4, DType::kF64, 3));
  const int64_t rows = y.numel() / (2 * f);
  double worst_sum = 0, worst_half = 0, smallest = 1;
  for (int64_t r = 0; r < rows; ++r) {
    double pos = 0, neg = 0;
    for (int64_t j = 0; j < f; ++j) {
      pos += y.item(r * 2 * f + j);
      neg += y.item(r * 2 * f + f + j);
      smallest = std::min({smallest, y.item(r * 2 * f + j), y.item(r * 2 * f + f + j)});
    }
    worst_sum = std::max(worst_sum, std::abs(pos + neg - 2));
    worst_half = std::max(worst_half, std::abs(pos - 1));
  }
  EXPECT_GT(smallest, 0.0);
  EXPECT_LT(worst_sum, 1e-14);
  EXPECT_LT(worst_half, 1e-14);
}

TEST(FeatureMapProperty, HedgehogStartsAsIdentityWhenSquareAndKeepsQueryAndKeyMapsApart) {
  const int64_t d = 4, H = 3;
  QKFeatureMap phi("mixer", map_config(MC::HEDGEHOG, d), H, d, 1e-6, DType::kF64);
  phi.init(3);
  ParameterList ps;
  phi.collect(ps);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0]->name, "mixer.feature_map_q.weight");
  EXPECT_EQ(ps[1]->name, "mixer.feature_map_k.weight");
  for (Parameter* p : ps) {
    EXPECT_EQ(p->value.shape(), (Shape{H, d, d}));
    EXPECT_FALSE(p->weight_decay);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < d; ++i)
        for (int64_t j = 0; j < d; ++j)
          EXPECT_EQ(p->value.item((h * d + i) * d + j), i == j ? 1.0 : 0.0);
  }
  // So phi(x) = [softmax(x), softmax(-x)] at init.
  const Tensor x = random_tensor({1, 1, H, d}, 5);
  const Tensor y = phi.forward(QKFeatureMap::kKey, x);
  for (int64_t h = 0; h < H; ++h) {
    double zp = 0, zn = 0;
    for (int64_t j = 0; j < d; ++j) {
      zp += std::exp(x.item(h * d + j));
      zn += std::exp(-x.item(h * d + j));
    }
    for (int64_t j = 0; j < d; ++j) {
      EXPECT_NEAR(y.item(h * 2 * d + j), std::exp(x.item(h * d + j)) / zp, 1e-15);
      EXPECT_NEAR(y.item(h * 2 * d + d + j), std::exp(-x.item(h * d + j)) / zn, 1e-15);
    }
  }
}

TEST(FeatureMapProperty, ReBasedIsTheSquaredDotOfNormalisedAffineRows) {
  const int64_t f = 5, H = 2;
  const double eps = 1e-6;
  QKFeatureMap phi("mixer", map_config(MC::REBASED, f), H, 6, eps, DType::kF64);
  ParameterList ps;
  phi.collect(ps);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0]->name, "mixer.feature_map.gamma");
  EXPECT_EQ(ps[1]->name, "mixer.feature_map.beta");
  ps[0]->value.copy_from(random_tensor({f}, 6));
  ps[1]->value.copy_from(random_tensor({f}, 7));
  EXPECT_EQ(phi.out_dim(), f * f);
  const Tensor q = random_tensor({1, 3, H, f}, 8), k = random_tensor({1, 3, H, f}, 9);
  const Tensor fq = phi.forward(QKFeatureMap::kQuery, q), fk = phi.forward(QKFeatureMap::kKey, k);
  // The reference: q' = gamma * (q - mean) / sqrt(var + eps) + beta, computed here from scratch.
  auto normalised = [&](const Tensor& x, int64_t r) {
    std::vector<double> u(f);
    double mu = 0, var = 0;
    for (int64_t i = 0; i < f; ++i) mu += x.item(r * f + i) / f;
    for (int64_t i = 0; i < f; ++i) var += std::pow(x.item(r * f + i) - mu, 2) / f;
    for (int64_t i = 0; i < f; ++i)
      u[i] = ps[0]->value.item(i) * (x.item(r * f + i) - mu) / std::sqrt(var + eps) +
             ps[1]->value.item(i);
    return u;
  };
  double worst = 0;
  for (int64_t r = 0; r < 3 * H; ++r)
    for (int64_t s = 0; s < 3 * H; ++s) {
      const auto a = normalised(q, r), b = normalised(k, s);
      double ab = 0;
      for (int64_t i = 0; i < f; ++i) ab += a[i] * b[i];
      const double want = ab * ab / f;
      worst = std::max(worst, std::abs(row_dot(fq, r, fk, s) - want) / std::max(1.0, want));
    }
  EXPECT_LT(worst, 1e-13);
}

TEST(FeatureMapProperty, CosineRowsHaveUnitNorm) {
  const int64_t d = 6, H = 2;
  // eps = 0: exactly unit rows (the mixer uses model.norm_eps inside the root).
  QKFeatureMap phi("mixer", map_config(MC::COSINE, 16), H, d, 0.0, DType::kF64);
  EXPECT_EQ(phi.out_dim(), d);
  EXPECT_EQ(phi.scale(), 1.0);
  const Tensor q = random_tensor({2, 4, H, d}, 10, DType::kF64, 5);
  const Tensor k = random_tensor({2, 4, H, d}, 11, DType::kF64, 0.2);
  const Tensor fq = phi.forward(QKFeatureMap::kQuery, q), fk = phi.forward(QKFeatureMap::kKey, k);
  double worst = 0;
  for (int64_t r = 0; r < q.numel() / d; ++r) {
    worst =
        std::max({worst, std::abs(row_dot(fq, r, fq, r) - 1), std::abs(row_dot(fk, r, fk, r) - 1)});
    // phi(q) . phi(k) is the cosine similarity of q and k.
    const double cos = row_dot(q, r, k, r) / std::sqrt(row_dot(q, r, q, r) * row_dot(k, r, k, r));
    worst = std::max(worst, std::abs(row_dot(fq, r, fk, r) - cos));
  }
  EXPECT_LT(worst, 1e-14);
}

// ---- parameters and user errors -----------------------------------------------------------

std::set<std::string> parameter_names(MC::FeatureMap f, int window, bool output_norm = true) {
  config::Config cfg = mixer_test_config(MC::LINEAR_ATTENTION);
  MC* m = cfg.mutable_model()->mutable_mixer();
  m->set_feature_map(f);
  m->set_window_size(window);
  m->set_output_norm(output_norm);
  auto mixer = make_token_mixer(cfg, 0, "layers.0.mixer", DType::kF32);
  ParameterList ps;
  mixer->collect(ps);
  std::set<std::string> names;
  for (Parameter* p : ps) names.insert(p->name.substr(std::string("layers.0.mixer.").size()));
  return names;
}

TEST(BasicLinearAttentionParameters, NamesPerFeatureMap) {
  const std::set<std::string> base = {"q_proj.weight", "k_proj.weight", "v_proj.weight",
                                      "o_norm.weight", "o_proj.weight"};
  auto with = [&](std::initializer_list<std::string> extra) {
    std::set<std::string> s = base;
    s.insert(extra);
    return s;
  };
  EXPECT_EQ(parameter_names(MC::ELU_PLUS_ONE, 0), base);
  EXPECT_EQ(parameter_names(MC::BASED, 0), base);
  EXPECT_EQ(parameter_names(MC::COSINE, 0), base);
  EXPECT_EQ(parameter_names(MC::HEDGEHOG, 0),
            with({"feature_map_q.weight", "feature_map_k.weight"}));
  EXPECT_EQ(parameter_names(MC::REBASED, 0), with({"feature_map.gamma", "feature_map.beta"}));
  EXPECT_EQ(parameter_names(MC::BASED, 8),
            with({"window_q_proj.weight", "window_k_proj.weight", "window_v_proj.weight"}));
}

TEST(BasicLinearAttentionParameters, ProjectionWidthsFollowTheMap) {
  config::Config cfg = mixer_test_config(MC::LINEAR_ATTENTION);
  MC* m = cfg.mutable_model()->mutable_mixer();
  m->set_feature_map(MC::BASED);
  m->set_feature_dim(3);
  auto mixer = make_token_mixer(cfg, 0, "mixer", DType::kF32);
  ParameterList ps;
  mixer->collect(ps);
  EXPECT_EQ(ps[0]->value.shape(), (Shape{2 * 3, 12}));  // q_proj: H * feature_dim
  EXPECT_EQ(ps[2]->value.shape(), (Shape{2 * 6, 12}));  // v_proj: H * head_dim
  EXPECT_EQ(mixer->halo_size(), 0);
  SegmentOut out;
  mixer->forward_segment(random_tensor({1, 8, 12}, 1, DType::kF32), SegmentIn{}, &out);
  EXPECT_EQ(out.final_states[0].shape(), (Shape{1, 2, 1 + 3 + 9, 6}));
}

TEST(BasicLinearAttentionErrors, WindowNeedsBased) {
  config::Config cfg = mixer_test_config(MC::LINEAR_ATTENTION);
  cfg.mutable_model()->mutable_mixer()->set_feature_map(MC::ELU_PLUS_ONE);
  cfg.mutable_model()->mutable_mixer()->set_window_size(4);
  const std::string msg = error_message([&] { make_token_mixer(cfg, 0, "mixer", DType::kF32); });
  EXPECT_TRUE(contains(msg, "model.mixer.window_size")) << msg;
  EXPECT_TRUE(contains(msg, "hint:")) << msg;
}

TEST(BasicLinearAttentionErrors, WindowNeedsEvenHeadDim) {
  config::Config cfg = mixer_test_config(MC::LINEAR_ATTENTION);
  cfg.mutable_model()->mutable_mixer()->set_feature_map(MC::BASED);
  cfg.mutable_model()->mutable_mixer()->set_window_size(4);
  cfg.mutable_model()->mutable_mixer()->set_head_dim(5);
  const std::string msg = error_message([&] { make_token_mixer(cfg, 0, "mixer", DType::kF32); });
  EXPECT_TRUE(contains(msg, "model.mixer.head_dim")) << msg;
}

}  // namespace
}  // namespace linea::testing
