// The kernels behind the learned feature maps of basic linear attention: LayerNorm (ReBased), the
// degree-2 polynomial maps (Based, ReBased) and Hedgehog's two-sided softmax. Forward against
// loops written here, f64 finite-difference gradients of every input, `=` into dx and `+=` into
// parameter gradients, f32 against f64.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/hedgehog_feature_map.h"
#include "kernels/layernorm.h"
#include "kernels/quadratic_feature_map.h"
#include "tests/common/gradcheck.h"
#include "tests/common/kernel_check.h"

namespace linea {
namespace {

using testing::dot;
using testing::gradcheck;
using testing::random_tensor;
using testing::rel_max_diff;

constexpr double kGradTol = 1e-7;
constexpr double kF32Tol = 1e-5;

Shape rows_of(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 1); }

// ---- LayerNorm --------------------------------------------------------------------------------

struct LnOut {
  Tensor y, mean, rstd;
};

LnOut ln_forward(const Tensor& x, const Tensor& g, const Tensor& b, double eps) {
  LnOut o{Tensor::empty(x.shape(), x.dtype()), Tensor::empty(rows_of(x), x.dtype()),
          Tensor::empty(rows_of(x), x.dtype())};
  kernels::layernorm_forward(x, g, b, eps, o.y, o.mean, o.rstd);
  return o;
}

TEST(KernelsLayerNorm, ForwardMatchesFormula) {
  const int64_t D = 7;
  const Tensor x = random_tensor({3, 4, D}, 1), g = random_tensor({D}, 2),
               b = random_tensor({D}, 3);
  const LnOut o = ln_forward(x, g, b, 1e-5);
  double worst = 0;
  for (int64_t r = 0; r < 12; ++r) {
    double mu = 0, var = 0;
    for (int64_t i = 0; i < D; ++i) mu += x.item(r * D + i) / D;
    for (int64_t i = 0; i < D; ++i) var += std::pow(x.item(r * D + i) - mu, 2) / D;
    for (int64_t i = 0; i < D; ++i) {
      const double want = (x.item(r * D + i) - mu) / std::sqrt(var + 1e-5) * g.item(i) + b.item(i);
      worst = std::max(worst, std::abs(o.y.item(r * D + i) - want));
    }
  }
  EXPECT_LT(worst, 1e-14);
  const LnOut o32 = ln_forward(x.to(DType::kF32), g.to(DType::kF32), b.to(DType::kF32), 1e-5);
  EXPECT_LT(rel_max_diff(o32.y, o.y), kF32Tol);
  // Without affine: zero mean, unit variance (up to eps).
  const LnOut plain = ln_forward(x, Tensor(), Tensor(), 0.0);
  for (int64_t r = 0; r < 12; ++r) {
    double mu = 0, ms = 0;
    for (int64_t i = 0; i < D; ++i) {
      mu += plain.y.item(r * D + i) / D;
      ms += std::pow(plain.y.item(r * D + i), 2) / D;
    }
    EXPECT_NEAR(mu, 0, 1e-14);
    EXPECT_NEAR(ms, 1, 1e-13);
  }
}

TEST(KernelsLayerNorm, BackwardMatchesFiniteDifferences) {
  const int64_t D = 6;
  Tensor x = random_tensor({2, 5, D}, 4), g = random_tensor({D}, 5), b = random_tensor({D}, 6);
  const Tensor w = random_tensor({2, 5, D}, 7);
  auto loss = [&] { return dot(ln_forward(x, g, b, 1e-3).y, w); };
  const LnOut o = ln_forward(x, g, b, 1e-3);
  Tensor dx = Tensor::empty(x.shape(), x.dtype());
  dx.fill_(123);
  Tensor dg = Tensor::empty({D}, x.dtype()), db = Tensor::empty({D}, x.dtype());
  dg.fill_(0.5);
  db.fill_(-0.25);
  kernels::layernorm_backward(x, g, o.mean, o.rstd, w, dx, dg, db);
  for (int64_t i = 0; i < D; ++i) {  // `+=`: take the prior contents back out
    dg.set_item(i, dg.item(i) - 0.5);
    db.set_item(i, db.item(i) + 0.25);
  }
  EXPECT_LT(gradcheck(x, dx, loss), kGradTol);
  EXPECT_LT(gradcheck(g, dg, loss), kGradTol);
  EXPECT_LT(gradcheck(b, db, loss), kGradTol);
}

// ---- degree-2 polynomial maps -----------------------------------------------------------------

const kernels::QuadraticFeatureMap kTaylor{.constant = true, .linear = 0.7, .quadratic = 0.3};
const kernels::QuadraticFeatureMap kSquare{.constant = false, .linear = 0, .quadratic = 0.5};

Tensor quad_forward(const kernels::QuadraticFeatureMap& f, const Tensor& x) {
  Shape s = x.shape();
  s.back() = kernels::quadratic_feature_dim(f, x.dim(-1));
  Tensor y = Tensor::empty(s, x.dtype());
  kernels::quadratic_feature_map_forward(f, x, y);
  return y;
}

TEST(KernelsQuadraticFeatureMap, LayoutAndInnerProduct) {
  const int64_t d = 3;
  EXPECT_EQ(kernels::quadratic_feature_dim(kTaylor, d), 1 + 3 + 9);
  EXPECT_EQ(kernels::quadratic_feature_dim(kSquare, d), 9);
  const Tensor x = Tensor::from_vector({1, d}, {1, -2, 3}, DType::kF64);
  const std::vector<double> y = quad_forward(kTaylor, x).to_vector();
  const std::vector<double> want = {1,        0.7,      -1.4,     2.1,     0.3 * 1,
                                    0.3 * -2, 0.3 * 3,  0.3 * -2, 0.3 * 4, 0.3 * -6,
                                    0.3 * 3,  0.3 * -6, 0.3 * 9};
  ASSERT_EQ(y.size(), want.size());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], want[i], 1e-15) << i;
  // phi(q) . phi(k) = c0^2 + c1^2 q.k + c2^2 (q.k)^2.
  const Tensor q = random_tensor({4, 5}, 1), k = random_tensor({4, 5}, 2);
  for (const auto& f : {kTaylor, kSquare}) {
    const Tensor fq = quad_forward(f, q), fk = quad_forward(f, k);
    const int64_t w = fq.dim(-1);
    for (int64_t r = 0; r < 4; ++r) {
      double qk = 0, got = 0;
      for (int64_t i = 0; i < 5; ++i) qk += q.item(r * 5 + i) * k.item(r * 5 + i);
      for (int64_t i = 0; i < w; ++i) got += fq.item(r * w + i) * fk.item(r * w + i);
      const double want_dot =
          (f.constant ? 1 : 0) + f.linear * f.linear * qk + f.quadratic * f.quadratic * qk * qk;
      EXPECT_NEAR(got, want_dot, 1e-13 * std::max(1.0, std::abs(want_dot)));
    }
  }
}

TEST(KernelsQuadraticFeatureMap, BackwardMatchesFiniteDifferencesAndF32) {
  for (const auto& f : {kTaylor, kSquare}) {
    Tensor x = random_tensor({2, 3, 4}, 3);
    const Tensor w = random_tensor(quad_forward(f, x).shape(), 4);
    auto loss = [&] { return dot(quad_forward(f, x), w); };
    Tensor dx = Tensor::empty(x.shape(), x.dtype());
    dx.fill_(123);
    kernels::quadratic_feature_map_backward(f, x, w, dx);
    EXPECT_LT(gradcheck(x, dx, loss), kGradTol);
    Tensor dx32 = Tensor::empty(x.shape(), DType::kF32);
    kernels::quadratic_feature_map_backward(f, x.to(DType::kF32), w.to(DType::kF32), dx32);
    EXPECT_LT(rel_max_diff(dx32, dx), kF32Tol);
    EXPECT_LT(rel_max_diff(quad_forward(f, x.to(DType::kF32)), quad_forward(f, x)), kF32Tol);
  }
}

// ---- Hedgehog ---------------------------------------------------------------------------------

Tensor hh_forward(const Tensor& x, const Tensor& w) {
  Shape s = x.shape();
  s.back() = 2 * w.dim(2);
  Tensor y = Tensor::empty(s, x.dtype());
  kernels::hedgehog_feature_map_forward(x, w, y);
  return y;
}

TEST(KernelsHedgehogFeatureMap, ForwardMatchesFormula) {
  const int64_t H = 2, d = 3, f = 4;
  const Tensor x = random_tensor({5, H, d}, 1, DType::kF64, 4);  // large logits: shift matters
  const Tensor w = random_tensor({H, d, f}, 2);
  const Tensor y = hh_forward(x, w);
  double worst = 0;
  for (int64_t r = 0; r < 5; ++r)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> z(f, 0.0);
      for (int64_t j = 0; j < f; ++j)
        for (int64_t i = 0; i < d; ++i)
          z[j] += x.item((r * H + h) * d + i) * w.item((h * d + i) * f + j);
      double sp = 0, sn = 0;
      for (double v : z) {
        sp += std::exp(v);
        sn += std::exp(-v);
      }
      for (int64_t j = 0; j < f; ++j) {
        const int64_t o = (r * H + h) * 2 * f;
        worst = std::max(worst, std::abs(y.item(o + j) - std::exp(z[j]) / sp));
        worst = std::max(worst, std::abs(y.item(o + f + j) - std::exp(-z[j]) / sn));
      }
    }
  EXPECT_LT(worst, 1e-14);
  EXPECT_LT(rel_max_diff(hh_forward(x.to(DType::kF32), w.to(DType::kF32)), y), kF32Tol);
}

TEST(KernelsHedgehogFeatureMap, BackwardMatchesFiniteDifferences) {
  const int64_t H = 2, d = 3, f = 5;
  Tensor x = random_tensor({2, 3, H, d}, 3), w = random_tensor({H, d, f}, 4);
  const Tensor up = random_tensor({2, 3, H, 2 * f}, 5);
  auto loss = [&] { return dot(hh_forward(x, w), up); };
  const Tensor y = hh_forward(x, w);
  Tensor dx = Tensor::empty(x.shape(), x.dtype()), dw = Tensor::empty(w.shape(), w.dtype());
  dx.fill_(123);
  dw.fill_(0.5);
  kernels::hedgehog_feature_map_backward(x, w, y, up, dx, dw);
  for (int64_t i = 0; i < dw.numel(); ++i) dw.set_item(i, dw.item(i) - 0.5);  // `+=`
  EXPECT_LT(gradcheck(x, dx, loss), kGradTol);
  EXPECT_LT(gradcheck(w, dw, loss), kGradTol);
  Tensor dx32 = Tensor::empty(x.shape(), DType::kF32), dw32 = Tensor::zeros(w.shape(), DType::kF32);
  kernels::hedgehog_feature_map_backward(x.to(DType::kF32), w.to(DType::kF32), y.to(DType::kF32),
                                         up.to(DType::kF32), dx32, dw32);
  EXPECT_LT(rel_max_diff(dx32, dx), kF32Tol);
  EXPECT_LT(rel_max_diff(dw32, dw), kF32Tol);
}

TEST(KernelsHedgehogFeatureMap, RejectsMismatchedWeights) {
  const Tensor x = random_tensor({2, 3, 4}, 1), w = random_tensor({3, 5, 2}, 2);
  Tensor y = Tensor::empty({2, 3, 4}, DType::kF64);
  const std::string msg =
      testing::error_message([&] { kernels::hedgehog_feature_map_forward(x, w, y); });
  EXPECT_TRUE(testing::contains(msg, "[H, d, f]")) << msg;
}

}  // namespace
}  // namespace linea
