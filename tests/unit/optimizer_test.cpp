#include <gtest/gtest.h>

#include <cmath>

#include "core/modules/module.h"
#include "core/optim/adamw.h"

namespace linea {
namespace {

TEST(AdamW, MatchesHandComputedSteps) {
  Parameter p = make_parameter("w", {2}, DType::kF64, true);
  p.value.set_item(0, 1.0);
  p.value.set_item(1, -2.0);
  config::OptimizerConfig cfg;
  cfg.set_lr(0.1);
  cfg.set_weight_decay(0.5);
  AdamW opt({&p}, cfg);
  // Reference: the update rule written out for two steps with constant gradients.
  double w[2] = {1.0, -2.0}, g[2] = {0.3, -0.7}, m[2] = {0, 0}, v[2] = {0, 0};
  for (int t = 1; t <= 2; ++t) {
    p.grad.set_item(0, g[0]);
    p.grad.set_item(1, g[1]);
    opt.step(0.1);
    for (int i = 0; i < 2; ++i) {
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.95 * v[i] + 0.05 * g[i] * g[i];
      double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.95, t));
      w[i] -= 0.1 * (mh / (std::sqrt(vh) + 1e-8) + 0.5 * w[i]);
      EXPECT_NEAR(p.value.item(i), w[i], 1e-12);
    }
  }
}

TEST(AdamW, NoDecayWhereDisabled) {
  Parameter p = make_parameter("norm", {1}, DType::kF32, false);
  p.value.set_item(0, 1.0);
  config::OptimizerConfig cfg;
  cfg.set_weight_decay(10.0);
  AdamW opt({&p}, cfg);
  opt.step(0.1);  // zero gradient and no decay: unchanged
  EXPECT_EQ(p.value.item(0), 1.0);
}

TEST(Schedule, WarmupThenCosineToMinimum) {
  config::OptimizerConfig opt;
  opt.set_lr(1.0);
  config::ScheduleConfig s;
  s.set_warmup_steps(10);
  s.set_min_lr_ratio(0.1);
  EXPECT_NEAR(learning_rate(opt, s, 0, 100), 0.1, 1e-12);
  EXPECT_NEAR(learning_rate(opt, s, 9, 100), 1.0, 1e-12);
  EXPECT_NEAR(learning_rate(opt, s, 10, 100), 1.0, 1e-12);
  EXPECT_NEAR(learning_rate(opt, s, 99, 100), 0.1, 1e-12);
  EXPECT_LT(learning_rate(opt, s, 60, 100), learning_rate(opt, s, 40, 100));
}

TEST(GradClip, ScalesToMaxNorm) {
  Parameter a = make_parameter("a", {2}, DType::kF64, true);
  Parameter b = make_parameter("b", {1}, DType::kF64, true);
  a.grad.set_item(0, 3.0);
  b.grad.set_item(0, 4.0);
  EXPECT_NEAR(clip_grad_norm({&a, &b}, 1.0), 5.0, 1e-12);
  EXPECT_NEAR(a.grad.item(0), 0.6, 1e-6);
  EXPECT_NEAR(b.grad.item(0), 0.8, 1e-6);
  EXPECT_NEAR(clip_grad_norm({&a, &b}, 0.0), 1.0, 1e-5);  // 0 = no clipping, norm reported
}

}  // namespace
}  // namespace linea
