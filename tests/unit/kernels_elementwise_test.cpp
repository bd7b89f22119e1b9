#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/elementwise.h"
#include "tests/common/gradcheck.h"
#include "tests/common/kernel_check.h"

namespace linea {
namespace {

using namespace kernels;
using testing::dot;
using testing::gradcheck;
using testing::random_tensor;

// Tolerances: hand values exact; finite differences in f64 1e-6 relative; f32 sum_squares
// against an f64 loop 1e-6 relative (f64 accumulation; an f32 sum over 1e6 terms would miss
// by ~1e-3).
constexpr double kGradTol = 1e-6;
constexpr double kF32SumTol = 1e-6;

Tensor vec(const std::vector<double>& v, DType dt = DType::kF64) {
  return Tensor::from_vector({static_cast<int64_t>(v.size())}, v, dt);
}

TEST(KernelsElementwise, OpsMatchHandValuesInBothDtypes) {
  for (DType dt : {DType::kF64, DType::kF32}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor a = vec({1, -2, 3.5}, dt), b = vec({0.5, 4, -1}, dt);
    Tensor out = Tensor::empty({3}, dt);
    add(a, b, out);
    EXPECT_EQ(out.to_vector(), (std::vector<double>{1.5, 2, 2.5}));
    add_inplace(a, b);
    EXPECT_EQ(a.to_vector(), (std::vector<double>{1.5, 2, 2.5}));
    axpy(-2.0, b, a);
    EXPECT_EQ(a.to_vector(), (std::vector<double>{0.5, -6, 4.5}));
    scale(a, 0.5);
    EXPECT_EQ(a.to_vector(), (std::vector<double>{0.25, -3, 2.25}));
    EXPECT_EQ(sum_squares(vec({1, -2, 3, 0.5, 1, 1, 1}, dt)), 17.25);  // odd length: tail loop
    EXPECT_EQ(sum_squares(Tensor::empty({0}, dt)), 0.0);
  }
}

// The gradient rules the callers rely on: add passes dout to both inputs, axpy scales dx by
// alpha, scale by alpha, sum_squares has gradient 2x.
TEST(KernelsElementwise, GradientRulesMatchFiniteDifferences) {
  Tensor a = random_tensor({3, 5}, 1), b = random_tensor({3, 5}, 2), up = random_tensor({3, 5}, 3);
  Tensor out = Tensor::empty({3, 5}, DType::kF64);
  auto add_loss = [&] {
    add(a, b, out);
    return dot(out, up);
  };
  EXPECT_LE(gradcheck(a, up, add_loss), kGradTol);
  EXPECT_LE(gradcheck(b, up, add_loss), kGradTol);

  const double alpha = -0.7;
  auto axpy_loss = [&] {
    Tensor y = b.clone();
    axpy(alpha, a, y);
    return dot(y, up);
  };
  Tensor alpha_up = up.clone();
  scale(alpha_up, alpha);
  EXPECT_LE(gradcheck(a, alpha_up, axpy_loss), kGradTol);
  EXPECT_LE(gradcheck(b, up, axpy_loss), kGradTol);
  auto scale_loss = [&] {
    Tensor y = a.clone();
    scale(y, alpha);
    return dot(y, up);
  };
  EXPECT_LE(gradcheck(a, alpha_up, scale_loss), kGradTol);

  Tensor two_a = a.clone();
  scale(two_a, 2.0);
  EXPECT_LE(gradcheck(a, two_a, [&] { return sum_squares(a); }), kGradTol);
}

TEST(KernelsElementwise, SumSquaresAccumulatesF32InF64) {
  const int64_t n = 1 << 20;
  Tensor x = random_tensor({n}, 4, DType::kF32);
  double ref = 0;
  const float* p = x.data<float>();
  for (int64_t i = 0; i < n; ++i) ref += static_cast<double>(p[i]) * p[i];
  EXPECT_NEAR(sum_squares(x), ref, kF32SumTol * ref);
  EXPECT_NEAR(sum_squares(x.to(DType::kF64)), ref, 1e-12 * ref);
}

TEST(KernelsElementwise, AllFiniteFindsNanAndInf) {
  for (DType dt : {DType::kF64, DType::kF32}) {
    SCOPED_TRACE(dtype_name(dt));
    EXPECT_TRUE(all_finite(vec({1, -1e30, 0}, dt)));
    EXPECT_TRUE(all_finite(Tensor::empty({0}, dt)));
    EXPECT_FALSE(all_finite(vec({1, std::numeric_limits<double>::quiet_NaN(), 0}, dt)));
    EXPECT_FALSE(all_finite(vec({0, 0, std::numeric_limits<double>::infinity()}, dt)));
    EXPECT_FALSE(all_finite(vec({-std::numeric_limits<double>::infinity()}, dt)));
  }
}

TEST(KernelsElementwise, BadShapesAndDtypesAreErrors) {
  Tensor a = Tensor::zeros({2, 3}, DType::kF64);
  Tensor b = Tensor::zeros({3, 2}, DType::kF64);
  Tensor out = Tensor::zeros({2, 3}, DType::kF64);
  std::string msg = testing::error_message([&] { add(a, b, out); });
  EXPECT_TRUE(testing::contains(msg, "[3, 2]") && testing::contains(msg, "[2, 3]")) << msg;
  Tensor a32 = Tensor::zeros({2, 3}, DType::kF32);
  EXPECT_THROW(add(a, a32, out), Error);
  EXPECT_THROW(add_inplace(a, b), Error);
  EXPECT_THROW(axpy(1.0, a32, out), Error);
  Tensor ints = Tensor::zeros({2, 3}, DType::kI32);
  EXPECT_THROW(scale(ints, 2.0), Error);
  EXPECT_THROW(sum_squares(ints), Error);
  EXPECT_THROW(all_finite(Tensor()), Error);
}

}  // namespace
}  // namespace linea
