#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cross_entropy.h"
#include "tests/common/gradcheck.h"
#include "tests/common/kernel_check.h"

namespace linea {
namespace {

using kernels::cross_entropy_backward;
using kernels::cross_entropy_forward;
using kernels::kIgnoreIndex;
using testing::contains;
using testing::error_message;
using testing::random_tensor;
using testing::rel_max_diff;

// Tolerances: hand values 1e-14; f64 against the loop reference 1e-12 relative; finite
// differences in f64 1e-6 relative; f32 against f64 1e-6 relative for the loss and 1e-5
// relative to the largest gradient entry ([64, 257] logits of scale 3).
constexpr double kGradTol = 1e-6;
constexpr double kF32LossTol = 1e-6;
constexpr double kF32GradTol = 1e-5;

Tensor targets_tensor(const std::vector<double>& v) {
  return Tensor::from_vector({static_cast<int64_t>(v.size())}, v, DType::kI32);
}

// Mean over non-ignored rows of logsumexp(z) - z[t], with a plain max-shifted loop.
double loss_reference(const Tensor& z, const Tensor& t) {
  const int64_t v = z.dim(-1), rows = z.numel() / v;
  double sum = 0;
  int64_t n = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t tr = static_cast<int64_t>(t.item(r));
    if (tr == kIgnoreIndex) continue;
    double mx = z.item(r * v);
    for (int64_t j = 1; j < v; ++j) mx = std::max(mx, z.item(r * v + j));
    double se = 0;
    for (int64_t j = 0; j < v; ++j) se += std::exp(z.item(r * v + j) - mx);
    sum += mx + std::log(se) - z.item(r * v + tr);
    ++n;
  }
  return n ? sum / n : 0.0;
}

TEST(KernelsCrossEntropy, ForwardMatchesHandValues) {
  // Row 0: [0, 0], t = 0 -> log 2. Row 1 ignored. Row 2: [1, 2, ...]: log(e + e^2) - 2.
  Tensor z = Tensor::from_vector({3, 2}, {0, 0, 5, -5, 1, 2}, DType::kF64);
  Tensor t = targets_tensor({0, kIgnoreIndex, 1});
  Tensor lse = Tensor::empty({3}, DType::kF64);
  int64_t n_valid = -1;
  const double loss = cross_entropy_forward(z, t, lse, &n_valid);
  EXPECT_EQ(n_valid, 2);
  EXPECT_NEAR(loss, (std::log(2.0) + std::log(std::exp(1.0) + std::exp(2.0)) - 2) / 2, 1e-14);
  EXPECT_NEAR(lse.item(0), std::log(2.0), 1e-14);
  EXPECT_NEAR(lse.item(2), std::log(std::exp(1.0) + std::exp(2.0)), 1e-14);
}

TEST(KernelsCrossEntropy, ForwardMatchesLoopReference) {
  Tensor z = random_tensor({2, 6, 11}, 1, DType::kF64, 2.0);  // leading dims flattened
  Tensor t = targets_tensor({3, 0, 10, kIgnoreIndex, 5, 5, 7, kIgnoreIndex, 1, 2, 9, 4});
  Tensor lse = Tensor::empty({2, 6}, DType::kF64);
  int64_t n_valid = 0;
  const double loss = cross_entropy_forward(z, t, lse, &n_valid);
  EXPECT_EQ(n_valid, 10);
  const double ref = loss_reference(z, t);
  EXPECT_NEAR(loss, ref, 1e-12 * std::abs(ref));
}

TEST(KernelsCrossEntropy, BackwardMatchesFiniteDifferences) {
  Tensor z = random_tensor({7, 9}, 2, DType::kF64, 2.0);
  Tensor t = targets_tensor({0, 8, kIgnoreIndex, 4, 4, kIgnoreIndex, 1});
  Tensor lse = Tensor::empty({7}, DType::kF64);
  const double dloss = 0.7;
  int64_t n_valid = 0;
  auto loss = [&] { return dloss * cross_entropy_forward(z, t, lse, &n_valid); };
  loss();
  Tensor dz = Tensor::empty(z.shape(), DType::kF64);
  cross_entropy_backward(z, t, lse, dloss, n_valid, dz);
  EXPECT_LE(testing::gradcheck(z, dz, loss), kGradTol);
  for (int64_t j = 0; j < 9; ++j) EXPECT_EQ(dz.item(2 * 9 + j), 0.0);  // ignored row
}

TEST(KernelsCrossEntropy, BackwardInPlaceEqualsSeparateOutput) {
  for (DType dt : {DType::kF64, DType::kF32}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor z = random_tensor({5, 13}, 3, dt, 2.0);
    Tensor t = targets_tensor({12, kIgnoreIndex, 0, 6, 6});
    Tensor lse = Tensor::empty({5}, dt);
    int64_t n_valid = 0;
    cross_entropy_forward(z, t, lse, &n_valid);
    Tensor dz = Tensor::empty(z.shape(), dt);
    cross_entropy_backward(z, t, lse, 1.3, n_valid, dz);
    cross_entropy_backward(z, t, lse, 1.3, n_valid, z);  // dlogits aliases logits
    EXPECT_EQ(testing::max_abs_diff(z, dz), 0.0);
  }
}

TEST(KernelsCrossEntropy, F32MatchesF64) {
  const int64_t n = 64, v = 257;
  Tensor z = random_tensor({n, v}, 4, DType::kF64, 3.0);
  Tensor t = Tensor::empty({n}, DType::kI32);
  for (int64_t i = 0; i < n; ++i) t.set_item(i, i % 9 == 0 ? kIgnoreIndex : (i * 31) % v);
  Tensor lse64 = Tensor::empty({n}, DType::kF64), dz64 = Tensor::empty({n, v}, DType::kF64);
  int64_t nv64 = 0;
  const double loss64 = cross_entropy_forward(z, t, lse64, &nv64);
  cross_entropy_backward(z, t, lse64, 1.0, nv64, dz64);
  Tensor z32 = z.to(DType::kF32);
  Tensor lse32 = Tensor::empty({n}, DType::kF32), dz32 = Tensor::empty({n, v}, DType::kF32);
  int64_t nv32 = 0;
  const double loss32 = cross_entropy_forward(z32, t, lse32, &nv32);
  cross_entropy_backward(z32, t, lse32, 1.0, nv32, dz32);
  EXPECT_EQ(nv32, nv64);
  EXPECT_NEAR(loss32, loss64, kF32LossTol * std::abs(loss64));
  EXPECT_LE(rel_max_diff(lse32, lse64), kF32LossTol);
  EXPECT_LE(rel_max_diff(dz32, dz64), kF32GradTol);
}

TEST(KernelsCrossEntropy, LargeLogitsStayFinite) {
  Tensor z = Tensor::from_vector({2, 3}, {1000, 999, -1000, -1e4, -1e4, -1e4 + 1}, DType::kF32);
  Tensor t = targets_tensor({1, 2});
  Tensor lse = Tensor::empty({2}, DType::kF32);
  int64_t n_valid = 0;
  const double loss = cross_entropy_forward(z, t, lse, &n_valid);
  const double row0 = std::log(1 + std::exp(1.0));      // target is one below the max
  const double row1 = std::log(2 + std::exp(1.0)) - 1;  // target is the max
  EXPECT_NEAR(loss, (row0 + row1) / 2, 1e-4);
}

TEST(KernelsCrossEntropy, AllIgnoredGivesZeroLossAndZeroGradient) {
  Tensor z = random_tensor({3, 4}, 5);
  Tensor t = targets_tensor({kIgnoreIndex, kIgnoreIndex, kIgnoreIndex});
  Tensor lse = Tensor::empty({3}, DType::kF64);
  int64_t n_valid = -1;
  EXPECT_EQ(cross_entropy_forward(z, t, lse, &n_valid), 0.0);
  EXPECT_EQ(n_valid, 0);
  Tensor dz = Tensor::empty(z.shape(), DType::kF64);
  cross_entropy_backward(z, t, lse, 1.0, n_valid, dz);
  EXPECT_EQ(testing::max_abs(dz), 0.0);
}

TEST(KernelsCrossEntropy, OutOfRangeTargetIsAUserErrorNamingIdAndVocab) {
  Tensor z = random_tensor({3, 257}, 6);
  Tensor lse = Tensor::empty({3}, DType::kF64);
  int64_t n_valid = 0;
  for (double bad : {257.0, 300.0, -2.0}) {
    Tensor t = targets_tensor({0, bad, 1});
    std::string msg = error_message([&] { cross_entropy_forward(z, t, lse, &n_valid); });
    EXPECT_TRUE(contains(msg, "target id " + std::to_string(static_cast<int>(bad))) &&
                contains(msg, "vocab size 257") && contains(msg, "hint:"))
        << msg;
  }
  // In place, a bad target must be caught before the logits are overwritten.
  Tensor good = targets_tensor({0, 1, 2});
  cross_entropy_forward(z, good, lse, &n_valid);
  Tensor before = z.clone();
  Tensor bad = targets_tensor({0, 1000, 2});
  EXPECT_THROW(cross_entropy_backward(z, bad, lse, 1.0, 3, z), Error);
  EXPECT_EQ(testing::max_abs_diff(z, before), 0.0);
}

TEST(KernelsCrossEntropy, BadShapesAndCountsAreErrors) {
  Tensor z = Tensor::zeros({4, 5}, DType::kF64);
  Tensor lse = Tensor::empty({4}, DType::kF64);
  Tensor t3 = targets_tensor({0, 1, 2});
  int64_t n_valid = 0;
  std::string msg = error_message([&] { cross_entropy_forward(z, t3, lse, &n_valid); });
  EXPECT_TRUE(contains(msg, "[3]") && contains(msg, "[4, 5]")) << msg;
  Tensor t = targets_tensor({0, 1, 2, 3});
  Tensor lse_bad = Tensor::empty({5}, DType::kF64);
  EXPECT_THROW(cross_entropy_forward(z, t, lse_bad, &n_valid), Error);
  Tensor lse32 = Tensor::empty({4}, DType::kF32);
  EXPECT_THROW(cross_entropy_forward(z, t, lse32, &n_valid), Error);
  Tensor t_i64 = Tensor::zeros({4}, DType::kI64);
  EXPECT_THROW(cross_entropy_forward(z, t_i64, lse, &n_valid), Error);
  Tensor flat = Tensor::zeros({20}, DType::kF64);
  EXPECT_THROW(cross_entropy_forward(flat, t, lse, &n_valid), Error);
  cross_entropy_forward(z, t, lse, &n_valid);
  Tensor dz = Tensor::empty({4, 5}, DType::kF64);
  EXPECT_THROW(cross_entropy_backward(z, t, lse, 1.0, 3, dz), Error);  // 4 valid rows here
  Tensor dz_bad = Tensor::empty({5, 4}, DType::kF64);
  EXPECT_THROW(cross_entropy_backward(z, t, lse, 1.0, 4, dz_bad), Error);
}

}  // namespace
}  // namespace linea
