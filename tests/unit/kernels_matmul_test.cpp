#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "tests/common/gradcheck.h"
#include "tests/common/kernel_check.h"

namespace linea {
namespace {

using kernels::gemm;
using kernels::linear_backward;
using kernels::linear_forward;
using testing::dot;
using testing::error_message;
using testing::gradcheck;
using testing::random_tensor;
using testing::rel_max_diff;

// Tolerances: f64 against a loop reference to rounding (1e-12 relative); finite differences in
// f64 to 1e-6 relative; f32 against f64 to 1e-5 relative to the largest value.
constexpr double kF64Tol = 1e-12;
constexpr double kGradTol = 1e-6;
constexpr double kF32Tol = 1e-5;

// C = alpha * op(A) op(B) + beta * C with plain loops, element by element through item().
Tensor gemm_reference(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& c,
                      double alpha, double beta) {
  const int64_t m = c.dim(0), n = c.dim(1), k = ta ? a.dim(0) : a.dim(1);
  Tensor out = Tensor::empty(c.shape(), DType::kF64);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double av = ta ? a.item(p * a.dim(1) + i) : a.item(i * a.dim(1) + p);
        const double bv = tb ? b.item(j * b.dim(1) + p) : b.item(p * b.dim(1) + j);
        s += av * bv;
      }
      out.set_item(i * n + j, alpha * s + beta * c.item(i * n + j));
    }
  }
  return out;
}

TEST(KernelsMatmul, GemmMatchesLoopReferenceForAllTransposes) {
  const int64_t m = 5, n = 4, k = 7;
  const double alpha = 0.7, beta = -0.3;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      SCOPED_TRACE(std::string(ta ? "a^T" : "a") + (tb ? " b^T" : " b"));
      Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, 1);
      Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, 2);
      Tensor c = random_tensor({m, n}, 3);
      Tensor ref = gemm_reference(a, ta, b, tb, c, alpha, beta);
      for (DType dt : {DType::kF64, DType::kF32}) {
        Tensor c_dt = c.to(dt);
        gemm(a.to(dt), ta, b.to(dt), tb, c_dt, alpha, beta);
        EXPECT_LE(rel_max_diff(c_dt, ref), dt == DType::kF64 ? kF64Tol : kF32Tol);
      }
    }
  }
}

TEST(KernelsMatmul, GemmWithEmptyInnerDimensionAppliesBeta) {
  Tensor a = Tensor::empty({3, 0}, DType::kF64);
  Tensor b = Tensor::empty({0, 2}, DType::kF64);
  Tensor c = Tensor::from_vector({3, 2}, {1, 2, 3, 4, 5, 6}, DType::kF64);
  gemm(a, false, b, false, c, 1.0, 2.0);
  EXPECT_EQ(c.to_vector(), (std::vector<double>{2, 4, 6, 8, 10, 12}));
  // beta = 0 overwrites, even garbage.
  c.fill_(std::numeric_limits<double>::quiet_NaN());
  gemm(a, false, b, false, c, 1.0, 0.0);
  EXPECT_EQ(c.to_vector(), (std::vector<double>(6, 0.0)));
}

TEST(KernelsMatmul, LinearForwardMatchesHandValuesAndLoopReference) {
  // Hand values: x [1, 2] = [1, 2], W [[1, 0], [0, 1], [1, 1]] -> y = [1, 2, 3].
  Tensor x1 = Tensor::from_vector({1, 2}, {1, 2}, DType::kF64);
  Tensor w1 = Tensor::from_vector({3, 2}, {1, 0, 0, 1, 1, 1}, DType::kF64);
  Tensor y1 = Tensor::empty({1, 3}, DType::kF64);
  linear_forward(x1, w1, y1);
  EXPECT_EQ(y1.to_vector(), (std::vector<double>{1, 2, 3}));

  // Leading dimensions [2, 3] are flattened to 6 rows.
  Tensor x = random_tensor({2, 3, 5}, 4);
  Tensor w = random_tensor({4, 5}, 5);
  Tensor y = Tensor::empty({2, 3, 4}, DType::kF64);
  linear_forward(x, w, y);
  Tensor zero = Tensor::zeros({6, 4}, DType::kF64);
  Tensor ref = gemm_reference(x.view({6, 5}), false, w, true, zero, 1.0, 0.0);
  EXPECT_LE(rel_max_diff(y, ref), kF64Tol);
}

TEST(KernelsMatmul, LinearBackwardMatchesFiniteDifferences) {
  Tensor x = random_tensor({2, 3, 5}, 6);
  Tensor w = random_tensor({4, 5}, 7);
  Tensor up = random_tensor({2, 3, 4}, 8);  // dL/dy for L = sum(y * up)
  Tensor y = Tensor::empty({2, 3, 4}, DType::kF64);
  auto loss = [&] {
    linear_forward(x, w, y);
    return dot(y, up);
  };
  Tensor dx = Tensor::empty(x.shape(), DType::kF64);
  Tensor dw = Tensor::zeros(w.shape(), DType::kF64);
  linear_backward(x, w, up, dx, dw);
  EXPECT_LE(gradcheck(x, dx, loss), kGradTol);
  EXPECT_LE(gradcheck(w, dw, loss), kGradTol);
}

TEST(KernelsMatmul, LinearBackwardAccumulatesWeightGradAndSkipsUndefinedDx) {
  Tensor x = random_tensor({6, 5}, 9);
  Tensor w = random_tensor({4, 5}, 10);
  Tensor dy = random_tensor({6, 4}, 11);
  Tensor dx = Tensor::empty(x.shape(), DType::kF64);
  Tensor dw = Tensor::zeros(w.shape(), DType::kF64);
  linear_backward(x, w, dy, dx, dw);
  Tensor once = dw.clone();
  Tensor no_dx;
  linear_backward(x, w, dy, no_dx, dw);  // dx not needed: only dw moves
  for (int64_t i = 0; i < dw.numel(); ++i) EXPECT_NEAR(dw.item(i), 2 * once.item(i), 1e-12);
}

TEST(KernelsMatmul, LinearF32MatchesF64) {
  Tensor x = random_tensor({8, 16, 33}, 12);
  Tensor w = random_tensor({17, 33}, 13);
  Tensor dy = random_tensor({8, 16, 17}, 14);
  Tensor y64 = Tensor::empty({8, 16, 17}, DType::kF64);
  Tensor dx64 = Tensor::empty(x.shape(), DType::kF64);
  Tensor dw64 = Tensor::zeros(w.shape(), DType::kF64);
  linear_forward(x, w, y64);
  linear_backward(x, w, dy, dx64, dw64);

  Tensor x32 = x.to(DType::kF32), w32 = w.to(DType::kF32), dy32 = dy.to(DType::kF32);
  Tensor y32 = Tensor::empty(y64.shape(), DType::kF32);
  Tensor dx32 = Tensor::empty(x.shape(), DType::kF32);
  Tensor dw32 = Tensor::zeros(w.shape(), DType::kF32);
  linear_forward(x32, w32, y32);
  linear_backward(x32, w32, dy32, dx32, dw32);
  EXPECT_LE(rel_max_diff(y32, y64), kF32Tol);
  EXPECT_LE(rel_max_diff(dx32, dx64), kF32Tol);
  EXPECT_LE(rel_max_diff(dw32, dw64), kF32Tol);
}

TEST(KernelsMatmul, BadShapesAndDtypesAreErrors) {
  Tensor a = Tensor::zeros({3, 4}, DType::kF64);
  Tensor b = Tensor::zeros({5, 2}, DType::kF64);
  Tensor c = Tensor::zeros({3, 2}, DType::kF64);
  std::string msg = error_message([&] { gemm(a, false, b, false, c); });
  EXPECT_TRUE(testing::contains(msg, "[3, 4]") && testing::contains(msg, "[5, 2]")) << msg;
  EXPECT_THROW(gemm(a, false, a.to(DType::kF32), true, c), Error);  // mixed dtypes
  Tensor c3 = Tensor::zeros({3, 2, 1}, DType::kF64);
  EXPECT_THROW(gemm(a, false, b, false, c3), Error);  // not 2-D

  Tensor x = Tensor::zeros({2, 3, 5}, DType::kF64);
  Tensor w = Tensor::zeros({4, 5}, DType::kF64);
  Tensor y = Tensor::zeros({2, 3, 4}, DType::kF64);
  Tensor w_bad = Tensor::zeros({4, 6}, DType::kF64);
  msg = error_message([&] { linear_forward(x, w_bad, y); });
  EXPECT_TRUE(testing::contains(msg, "[2, 3, 5]") && testing::contains(msg, "[4, 6]")) << msg;
  Tensor y_rows = Tensor::zeros({5, 4}, DType::kF64);
  EXPECT_THROW(linear_forward(x, w, y_rows), Error);  // 6 rows of x, 5 of y
  Tensor y_out = Tensor::zeros({2, 3, 3}, DType::kF64);
  EXPECT_THROW(linear_forward(x, w, y_out), Error);
  Tensor y32 = Tensor::zeros({2, 3, 4}, DType::kF32);
  EXPECT_THROW(linear_forward(x, w, y32), Error);

  Tensor dx = Tensor::zeros(x.shape(), DType::kF64);
  Tensor dw_bad = Tensor::zeros({5, 4}, DType::kF64);
  EXPECT_THROW(linear_backward(x, w, y, dx, dw_bad), Error);
  Tensor dw = Tensor::zeros(w.shape(), DType::kF64);
  Tensor dx_bad = Tensor::zeros({2, 3, 4}, DType::kF64);
  EXPECT_THROW(linear_backward(x, w, y, dx_bad, dw), Error);
  Tensor no_dw;
  EXPECT_THROW(linear_backward(x, w, y, dx, no_dw), Error);
  Tensor ints = Tensor::zeros({3, 4}, DType::kI32);
  EXPECT_THROW(gemm(ints, false, ints, true, c), Error);
}

}  // namespace
}  // namespace linea
