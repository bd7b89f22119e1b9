#include "kernels/l2norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "common/gradcheck.h"

namespace linea {
namespace {

using kernels::l2norm_backward;
using kernels::l2norm_forward;
using testing::gradcheck;
using testing::max_abs_diff;
using testing::random_tensor;

struct Outputs {
  Tensor y, rstd;
};

Shape rows_of(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 1); }

Outputs run_forward(const Tensor& x, double eps) {
  Outputs r{Tensor::empty(x.shape(), x.dtype()), Tensor::empty(rows_of(x), x.dtype())};
  l2norm_forward(x, eps, r.y, r.rstd);
  return r;
}

Tensor run_backward(const Tensor& x, const Outputs& f, const Tensor& dy) {
  Tensor dx = Tensor::empty(x.shape(), x.dtype());
  dx.fill_(123.0);  // `=`: nothing may leak through
  l2norm_backward(x, f.rstd, dy, dx);
  return dx;
}

TEST(L2Norm, ForwardMatchesFormula) {
  const Tensor x = random_tensor({2, 5, 3, 8}, 1);
  const int64_t D = 8;
  for (double eps : {0.0, 1e-6, 0.5}) {
    const Outputs f = run_forward(x, eps);
    const Outputs f32 = run_forward(x.to(DType::kF32), eps);
    double worst = 0, worst32 = 0, worst_norm = 0;
    for (int64_t r = 0; r < x.numel() / D; ++r) {
      double ss = 0, ny = 0;
      for (int64_t i = 0; i < D; ++i) ss += x.item(r * D + i) * x.item(r * D + i);
      for (int64_t i = 0; i < D; ++i) {
        const double want = x.item(r * D + i) / std::sqrt(ss + eps);
        worst = std::max(worst, std::abs(f.y.item(r * D + i) - want));
        worst32 = std::max(worst32, std::abs(f32.y.item(r * D + i) - want));
        ny += f.y.item(r * D + i) * f.y.item(r * D + i);
      }
      worst = std::max(worst, std::abs(f.rstd.item(r) - 1 / std::sqrt(ss + eps)) * std::sqrt(ss));
      // |y|^2 = ss / (ss + eps): exactly 1 without eps.
      worst_norm = std::max(worst_norm, std::abs(ny - ss / (ss + eps)));
    }
    EXPECT_LE(worst, 1e-15) << "eps " << eps;
    EXPECT_LE(worst32, 1e-6) << "eps " << eps;  // |y| <= 1: a few f32 ulps
    EXPECT_LE(worst_norm, 1e-14) << "eps " << eps;
  }
}

// L = sum(y * w); smooth in x, so central differences with h = 1e-5 carry ~1e-10 error.
TEST(L2Norm, BackwardMatchesFiniteDifferences) {
  for (double eps : {1e-6, 0.5}) {
    for (const Shape& s : {Shape{2, 5, 3, 8}, Shape{7, 1}, Shape{16}}) {
      SCOPED_TRACE("eps=" + std::to_string(eps) + " shape=" + shape_str(s));
      Tensor x = random_tensor(s, 2);
      const Tensor w = random_tensor(s, 3);
      const Tensor dx = run_backward(x, run_forward(x, eps), w);
      auto loss = [&] { return testing::dot(run_forward(x, eps).y, w); };
      EXPECT_LE(gradcheck(x, dx, loss, 1e-5), 1e-8);
    }
  }
}

TEST(L2Norm, BackwardF32MatchesF64) {
  const Tensor x = random_tensor({4, 6, 16}, 4), w = random_tensor({4, 6, 16}, 5);
  const Tensor x32 = x.to(DType::kF32), w32 = w.to(DType::kF32);
  const Tensor dx = run_backward(x, run_forward(x, 1e-6), w);
  const Tensor dx32 = run_backward(x32, run_forward(x32, 1e-6), w32);
  EXPECT_LE(max_abs_diff(dx32, dx), 1e-5);
}

// eps inside the root keeps a zero row (a padded or dead head) at zero with a finite gradient.
TEST(L2Norm, ZeroRowStaysFinite) {
  Tensor x = random_tensor({3, 4}, 6);
  for (int64_t i = 4; i < 8; ++i) x.set_item(i, 0.0);
  const Outputs f = run_forward(x, 1e-6);
  const Tensor dx = run_backward(x, f, random_tensor({3, 4}, 7));
  for (int64_t i = 4; i < 8; ++i) {
    EXPECT_EQ(f.y.item(i), 0.0);
    EXPECT_TRUE(std::isfinite(dx.item(i)));
  }
}

TEST(L2Norm, BadArgumentsAreErrors) {
  const Tensor x = random_tensor({2, 3, 4}, 1);
  Tensor y = Tensor::empty(x.shape(), DType::kF64);
  Tensor rstd = Tensor::empty({2, 3}, DType::kF64);
  Tensor rstd_bad = Tensor::empty({2, 4}, DType::kF64);
  Tensor y_f32 = Tensor::empty(x.shape(), DType::kF32), none;
  EXPECT_THROW(l2norm_forward(x, 1e-6, y, rstd_bad), Error);
  EXPECT_THROW(l2norm_forward(x, 1e-6, y_f32, rstd), Error);
  EXPECT_THROW(l2norm_forward(x, 1e-6, y, none), Error);
  EXPECT_THROW(l2norm_forward(x, -1.0, y, rstd), Error);
  l2norm_forward(x, 1e-6, y, rstd);
  Tensor dx = Tensor::empty(x.shape(), DType::kF64);
  try {
    l2norm_backward(x, rstd_bad, y, dx);
    ADD_FAILURE() << "expected linea::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rstd"), std::string::npos) << e.what();
  }
  EXPECT_THROW(l2norm_backward(x, rstd, y_f32, dx), Error);
  EXPECT_THROW(l2norm_backward(x, rstd, y, y_f32), Error);
}

}  // namespace
}  // namespace linea
