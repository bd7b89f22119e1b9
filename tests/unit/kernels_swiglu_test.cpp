#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kernels/elementwise.h"
#include "kernels/swiglu.h"
#include "tests/common/gradcheck.h"
#include "tests/common/kernel_check.h"

namespace linea {
namespace {

using kernels::swiglu_backward;
using kernels::swiglu_forward;
using testing::gradcheck;
using testing::random_tensor;
using testing::rel_max_diff;

// Tolerances: f64 against the loop reference 1e-14 relative; finite differences in f64 1e-6
// relative; f32 against f64 1e-5 relative to the largest value (a few f32 roundings of exp).
constexpr double kF64Tol = 1e-14;
constexpr double kGradTol = 1e-6;
constexpr double kF32Tol = 1e-5;

TEST(KernelsSwiGlu, ForwardMatchesHandValuesAndLoopReference) {
  // silu(0) = 0, silu(1) = 1 / (1 + e^-1), silu(-2) = -2 / (1 + e^2).
  Tensor g1 = Tensor::from_vector({3}, {0, 1, -2}, DType::kF64);
  Tensor u1 = Tensor::from_vector({3}, {5, 2, 3}, DType::kF64);
  Tensor h1 = Tensor::empty({3}, DType::kF64);
  swiglu_forward(g1, u1, h1);
  EXPECT_EQ(h1.item(0), 0.0);
  EXPECT_NEAR(h1.item(1), 2 / (1 + std::exp(-1.0)), 1e-15);
  EXPECT_NEAR(h1.item(2), 3 * -2 / (1 + std::exp(2.0)), 1e-15);

  Tensor g = random_tensor({4, 7}, 1, DType::kF64, 3.0);
  Tensor u = random_tensor({4, 7}, 2);
  Tensor h = Tensor::empty({4, 7}, DType::kF64);
  swiglu_forward(g, u, h);
  Tensor ref = Tensor::empty({4, 7}, DType::kF64);
  for (int64_t i = 0; i < g.numel(); ++i) {
    ref.set_item(i, g.item(i) / (1 + std::exp(-g.item(i))) * u.item(i));
  }
  EXPECT_LE(rel_max_diff(h, ref), kF64Tol);
}

TEST(KernelsSwiGlu, BackwardMatchesFiniteDifferences) {
  Tensor g = random_tensor({4, 7}, 3, DType::kF64, 3.0);
  Tensor u = random_tensor({4, 7}, 4);
  Tensor up = random_tensor({4, 7}, 5);
  Tensor h = Tensor::empty({4, 7}, DType::kF64);
  auto loss = [&] {
    swiglu_forward(g, u, h);
    return testing::dot(h, up);
  };
  Tensor dg = Tensor::empty(g.shape(), DType::kF64), du = Tensor::empty(g.shape(), DType::kF64);
  swiglu_backward(g, u, up, dg, du);
  EXPECT_LE(gradcheck(g, dg, loss), kGradTol);
  EXPECT_LE(gradcheck(u, du, loss), kGradTol);
}

TEST(KernelsSwiGlu, ExtremeGatesStayFinite) {
  Tensor g = Tensor::from_vector({4}, {-1000, -100, 100, 1000}, DType::kF32);
  Tensor u = Tensor::from_vector({4}, {1, 1, 1, 1}, DType::kF32);
  Tensor h = Tensor::empty({4}, DType::kF32);
  Tensor dg = Tensor::empty({4}, DType::kF32), du = Tensor::empty({4}, DType::kF32);
  swiglu_forward(g, u, h);
  swiglu_backward(g, u, u, dg, du);
  EXPECT_TRUE(kernels::all_finite(h) && kernels::all_finite(dg) && kernels::all_finite(du));
  EXPECT_EQ(h.item(3), 1000.0);
  EXPECT_EQ(dg.item(3), 1.0);
}

TEST(KernelsSwiGlu, F32MatchesF64) {
  Tensor g = random_tensor({64, 96}, 6, DType::kF64, 3.0);
  Tensor u = random_tensor({64, 96}, 7);
  Tensor dh = random_tensor({64, 96}, 8);
  Tensor h64 = Tensor::empty(g.shape(), DType::kF64);
  Tensor dg64 = Tensor::empty(g.shape(), DType::kF64), du64 = Tensor::empty(g.shape(), DType::kF64);
  swiglu_forward(g, u, h64);
  swiglu_backward(g, u, dh, dg64, du64);
  Tensor g32 = g.to(DType::kF32), u32 = u.to(DType::kF32), dh32 = dh.to(DType::kF32);
  Tensor h32 = Tensor::empty(g.shape(), DType::kF32);
  Tensor dg32 = Tensor::empty(g.shape(), DType::kF32), du32 = Tensor::empty(g.shape(), DType::kF32);
  swiglu_forward(g32, u32, h32);
  swiglu_backward(g32, u32, dh32, dg32, du32);
  EXPECT_LE(rel_max_diff(h32, h64), kF32Tol);
  EXPECT_LE(rel_max_diff(dg32, dg64), kF32Tol);
  EXPECT_LE(rel_max_diff(du32, du64), kF32Tol);
}

TEST(KernelsSwiGlu, BadShapesAndDtypesAreErrors) {
  Tensor g = Tensor::zeros({4, 6}, DType::kF64);
  Tensor u_bad = Tensor::zeros({6, 4}, DType::kF64);
  Tensor h = Tensor::zeros({4, 6}, DType::kF64);
  std::string msg = testing::error_message([&] { swiglu_forward(g, u_bad, h); });
  EXPECT_TRUE(testing::contains(msg, "[6, 4]") && testing::contains(msg, "[4, 6]")) << msg;
  Tensor u32 = Tensor::zeros({4, 6}, DType::kF32);
  EXPECT_THROW(swiglu_forward(g, u32, h), Error);
  Tensor dg_bad = Tensor::zeros({24}, DType::kF64);
  EXPECT_THROW(swiglu_backward(g, g, g, dg_bad, h), Error);
}

}  // namespace
}  // namespace linea
