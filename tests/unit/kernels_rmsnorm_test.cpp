#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kernels/rmsnorm.h"
#include "tests/common/gradcheck.h"
#include "tests/common/kernel_check.h"

namespace linea {
namespace {

using kernels::rmsnorm_backward;
using kernels::rmsnorm_forward;
using testing::contains;
using testing::error_message;
using testing::gradcheck;
using testing::random_tensor;
using testing::rel_max_diff;

// Tolerances: f64 against the loop reference 1e-12 relative; finite differences in f64 1e-6
// relative; f32 against f64 1e-5 relative to the largest value (rows of D = 257).
constexpr double kF64Tol = 1e-12;
constexpr double kGradTol = 1e-6;
constexpr double kF32Tol = 1e-5;
constexpr double kEps = 1e-5;

// y = x / sqrt(mean(x^2) + eps) * w, row by row; w undefined means w = 1.
Tensor rmsnorm_reference(const Tensor& x, const Tensor& w, double eps) {
  const int64_t d = x.dim(-1), rows = x.numel() / d;
  Tensor y = Tensor::empty(x.shape(), DType::kF64);
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t j = 0; j < d; ++j) ms += x.item(r * d + j) * x.item(r * d + j) / d;
    for (int64_t j = 0; j < d; ++j) {
      const double wj = w.defined() ? w.item(j) : 1.0;
      y.set_item(r * d + j, x.item(r * d + j) / std::sqrt(ms + eps) * wj);
    }
  }
  return y;
}

TEST(KernelsRmsNorm, ForwardMatchesHandValuesAndLoopReference) {
  // Row [3, 4]: mean square 12.5, eps 0 -> rstd = 1/sqrt(12.5); w = [1, 2].
  Tensor x1 = Tensor::from_vector({1, 2}, {3, 4}, DType::kF64);
  Tensor w1 = Tensor::from_vector({2}, {1, 2}, DType::kF64);
  Tensor y1 = Tensor::empty({1, 2}, DType::kF64);
  Tensor r1 = Tensor::empty({1}, DType::kF64);
  rmsnorm_forward(x1, w1, 0.0, y1, r1);
  EXPECT_NEAR(r1.item(0), 1 / std::sqrt(12.5), 1e-15);
  EXPECT_NEAR(y1.item(0), 3 / std::sqrt(12.5), 1e-15);
  EXPECT_NEAR(y1.item(1), 8 / std::sqrt(12.5), 1e-15);

  Tensor x = random_tensor({3, 4, 9}, 1);
  Tensor w = random_tensor({9}, 2);
  Tensor y = Tensor::empty(x.shape(), DType::kF64);
  Tensor rstd = Tensor::empty({3, 4}, DType::kF64);
  rmsnorm_forward(x, w, kEps, y, rstd);
  EXPECT_LE(rel_max_diff(y, rmsnorm_reference(x, w, kEps)), kF64Tol);
  Tensor none;
  rmsnorm_forward(x, none, kEps, y, rstd);
  EXPECT_LE(rel_max_diff(y, rmsnorm_reference(x, none, kEps)), kF64Tol);
}

TEST(KernelsRmsNorm, BackwardMatchesFiniteDifferences) {
  for (bool weighted : {true, false}) {
    SCOPED_TRACE(weighted ? "weighted" : "weightless");
    Tensor x = random_tensor({3, 4, 9}, 3);
    Tensor w = weighted ? random_tensor({9}, 4) : Tensor();
    Tensor up = random_tensor(x.shape(), 5);
    Tensor y = Tensor::empty(x.shape(), DType::kF64);
    Tensor rstd = Tensor::empty({12}, DType::kF64);
    auto loss = [&] {
      rmsnorm_forward(x, w, kEps, y, rstd);
      return testing::dot(y, up);
    };
    loss();  // rstd for the analytic backward
    Tensor dx = Tensor::empty(x.shape(), DType::kF64);
    Tensor dw = weighted ? Tensor::zeros(w.shape(), DType::kF64) : Tensor();
    rmsnorm_backward(x, w, rstd, up, dx, dw);
    EXPECT_LE(gradcheck(x, dx, loss), kGradTol);
    if (weighted) {
      EXPECT_LE(gradcheck(w, dw, loss), kGradTol);
    }
  }
}

TEST(KernelsRmsNorm, BackwardAccumulatesWeightGrad) {
  Tensor x = random_tensor({5, 6}, 6);
  Tensor w = random_tensor({6}, 7);
  Tensor dy = random_tensor({5, 6}, 8);
  Tensor y = Tensor::empty(x.shape(), DType::kF64);
  Tensor rstd = Tensor::empty({5}, DType::kF64);
  rmsnorm_forward(x, w, kEps, y, rstd);
  Tensor dx = Tensor::empty(x.shape(), DType::kF64);
  Tensor dw = Tensor::zeros(w.shape(), DType::kF64);
  rmsnorm_backward(x, w, rstd, dy, dx, dw);
  Tensor once = dw.clone();
  Tensor dx_once = dx.clone();
  rmsnorm_backward(x, w, rstd, dy, dx, dw);
  for (int64_t i = 0; i < dw.numel(); ++i) EXPECT_NEAR(dw.item(i), 2 * once.item(i), 1e-12);
  EXPECT_EQ(testing::max_abs_diff(dx, dx_once), 0.0);  // dx is written, not accumulated
}

TEST(KernelsRmsNorm, F32MatchesF64) {
  const Shape shape{64, 257};
  Tensor x = random_tensor(shape, 9, DType::kF64, 3.0);
  Tensor w = random_tensor({257}, 10);
  Tensor dy = random_tensor(shape, 11);
  Tensor y64 = Tensor::empty(shape, DType::kF64), r64 = Tensor::empty({64}, DType::kF64);
  Tensor dx64 = Tensor::empty(shape, DType::kF64), dw64 = Tensor::zeros({257}, DType::kF64);
  rmsnorm_forward(x, w, kEps, y64, r64);
  rmsnorm_backward(x, w, r64, dy, dx64, dw64);

  Tensor x32 = x.to(DType::kF32), w32 = w.to(DType::kF32), dy32 = dy.to(DType::kF32);
  Tensor y32 = Tensor::empty(shape, DType::kF32), r32 = Tensor::empty({64}, DType::kF32);
  Tensor dx32 = Tensor::empty(shape, DType::kF32), dw32 = Tensor::zeros({257}, DType::kF32);
  rmsnorm_forward(x32, w32, kEps, y32, r32);
  rmsnorm_backward(x32, w32, r32, dy32, dx32, dw32);
  EXPECT_LE(rel_max_diff(y32, y64), kF32Tol);
  EXPECT_LE(rel_max_diff(r32, r64), kF32Tol);
  EXPECT_LE(rel_max_diff(dx32, dx64), kF32Tol);
  EXPECT_LE(rel_max_diff(dw32, dw64), kF32Tol);
}

TEST(KernelsRmsNorm, BadShapesAndDtypesAreErrors) {
  Tensor x = Tensor::zeros({4, 6}, DType::kF64);
  Tensor y = Tensor::zeros({4, 6}, DType::kF64);
  Tensor rstd = Tensor::zeros({4}, DType::kF64);
  Tensor w_bad = Tensor::zeros({5}, DType::kF64);
  std::string msg = error_message([&] { rmsnorm_forward(x, w_bad, kEps, y, rstd); });
  EXPECT_TRUE(contains(msg, "[5]") && contains(msg, "[4, 6]")) << msg;
  Tensor rstd_bad = Tensor::zeros({6}, DType::kF64);
  Tensor none;
  EXPECT_THROW(rmsnorm_forward(x, none, kEps, y, rstd_bad), Error);
  Tensor y_bad = Tensor::zeros({6, 4}, DType::kF64);
  EXPECT_THROW(rmsnorm_forward(x, none, kEps, y_bad, rstd), Error);
  Tensor w32 = Tensor::zeros({6}, DType::kF32);
  EXPECT_THROW(rmsnorm_forward(x, w32, kEps, y, rstd), Error);
  EXPECT_THROW(rmsnorm_forward(x, none, -1.0, y, rstd), Error);
  Tensor w = Tensor::zeros({6}, DType::kF64);
  Tensor dx = Tensor::zeros({4, 6}, DType::kF64);
  Tensor dw_bad = Tensor::zeros({4}, DType::kF64);
  EXPECT_THROW(rmsnorm_backward(x, w, rstd, y, dx, dw_bad), Error);
  EXPECT_THROW(rmsnorm_backward(x, w, rstd, y_bad, dx, w), Error);
}

}  // namespace
}  // namespace linea
