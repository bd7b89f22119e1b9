// kernels/gates.h (the delta-rule gates): formulas, finite-difference gradients in f64, stability
// at large logits.
#include <gtest/gtest.h>

#include <cmath>

#include "common/gradcheck.h"
#include "kernels/gates.h"

namespace linea {
namespace {

using testing::dot;
using testing::gradcheck;
using testing::random_tensor;

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double softplus(double x) { return std::log1p(std::exp(x)); }

TEST(DeltaGates, BetaFormulaAndGradient) {
  for (double scale : {1.0, 2.0}) {
    Tensor b = random_tensor({2, 5, 3}, 1, DType::kF64, 3.0);
    Tensor beta = Tensor::empty(b.shape(), DType::kF64);
    kernels::delta_beta_forward(b, scale, beta);
    for (int64_t i = 0; i < b.numel(); ++i)
      EXPECT_NEAR(beta.item(i), scale * sigmoid(b.item(i)), 1e-15);

    const Tensor w = random_tensor(b.shape(), 2);
    Tensor db = Tensor::empty(b.shape(), DType::kF64);
    db.fill_(123.0);  // `=`
    kernels::delta_beta_backward(b, scale, w, db);
    auto loss = [&] {
      Tensor y = Tensor::empty(b.shape(), DType::kF64);
      kernels::delta_beta_forward(b, scale, y);
      return dot(y, w);
    };
    EXPECT_LT(gradcheck(b, db, loss), 1e-8) << "scale " << scale;
  }
}

TEST(DeltaGates, LogDecayFormulaAndGradient) {
  const int64_t H = 3;
  Tensor a = random_tensor({2, 5, H}, 3, DType::kF64, 2.0);
  Tensor A_log = random_tensor({H}, 4);
  Tensor dt_bias = random_tensor({H}, 5);
  Tensor g = Tensor::empty(a.shape(), DType::kF64);
  kernels::delta_log_decay_forward(a, A_log, dt_bias, g);
  for (int64_t i = 0; i < a.numel(); ++i) {
    const int64_t h = i % H;
    EXPECT_NEAR(g.item(i), -std::exp(A_log.item(h)) * softplus(a.item(i) + dt_bias.item(h)), 1e-13);
    EXPECT_LE(g.item(i), 0.0);
  }

  const Tensor w = random_tensor(a.shape(), 6);
  Tensor da = Tensor::empty(a.shape(), DType::kF64);
  Tensor dA = Tensor::empty({H}, DType::kF64), ddt = Tensor::empty({H}, DType::kF64);
  dA.fill_(0.5);  // `+=`: the check subtracts what was there
  ddt.fill_(-0.25);
  kernels::delta_log_decay_backward(a, A_log, dt_bias, w, da, dA, ddt);
  for (int64_t h = 0; h < H; ++h) {
    dA.set_item(h, dA.item(h) - 0.5);
    ddt.set_item(h, ddt.item(h) + 0.25);
  }
  auto loss = [&] {
    Tensor y = Tensor::empty(a.shape(), DType::kF64);
    kernels::delta_log_decay_forward(a, A_log, dt_bias, y);
    return dot(y, w);
  };
  EXPECT_LT(gradcheck(a, da, loss), 1e-8) << "a";
  EXPECT_LT(gradcheck(A_log, dA, loss), 1e-8) << "A_log";
  EXPECT_LT(gradcheck(dt_bias, ddt, loss), 1e-8) << "dt_bias";
}

// Logits far outside the usual range stay finite, in f32 too, and keep beta within its interval.
TEST(DeltaGates, StableAtLargeLogits) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    Tensor x = Tensor::from_vector({1, 4}, {-1000, -80, 80, 1000}, dt);
    Tensor p = Tensor::from_vector({4}, {0, 0, 0, 0}, dt);
    Tensor beta = Tensor::empty(x.shape(), dt), db = Tensor::empty(x.shape(), dt);
    Tensor g = Tensor::empty(x.shape(), dt), da = Tensor::empty(x.shape(), dt);
    Tensor dA = Tensor::zeros({4}, dt), ddt = Tensor::zeros({4}, dt);
    Tensor ones = Tensor::from_vector({1, 4}, {1, 1, 1, 1}, dt);
    kernels::delta_beta_forward(x, 2.0, beta);
    kernels::delta_beta_backward(x, 2.0, ones, db);
    kernels::delta_log_decay_forward(x, p, p, g);
    kernels::delta_log_decay_backward(x, p, p, ones, da, dA, ddt);
    for (const Tensor* t : {&beta, &db, &g, &da, &dA, &ddt})
      for (int64_t i = 0; i < t->numel(); ++i) EXPECT_TRUE(std::isfinite(t->item(i)));
    for (int64_t i = 0; i < 4; ++i) {
      EXPECT_GE(beta.item(i), 0.0);
      EXPECT_LE(beta.item(i), 2.0);
    }
    EXPECT_NEAR(g.item(3), -1000.0, 1e-3);  // softplus(x) -> x
    EXPECT_LE(g.item(0), 0.0);
  }
}

}  // namespace
}  // namespace linea
