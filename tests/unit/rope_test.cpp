#include "kernels/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "common/gradcheck.h"

namespace linea {
namespace {

using kernels::rope_backward;
using kernels::rope_forward;
using kernels::RopeParams;
using testing::gradcheck;
using testing::max_abs;
using testing::max_abs_diff;
using testing::random_tensor;

Tensor rope(const Tensor& x, const RopeParams& p) {
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  rope_forward(x, p, y);
  return y;
}

Tensor rope_grad(const Tensor& dy, const RopeParams& p) {
  Tensor dx = Tensor::empty(dy.shape(), dy.dtype());
  dx.fill_(123.0);  // `=`: nothing may leak through
  rope_backward(dy, p, dx);
  return dx;
}

// The rotate-half formula written out, in f64.
Tensor explicit_rope(const Tensor& x, double theta, int64_t pos_offset) {
  const int64_t B = x.dim(0), T = x.dim(1), H = x.dim(2), D = x.dim(3), half = D / 2;
  Tensor y = Tensor::empty(x.shape(), DType::kF64);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const int64_t base = ((b * T + t) * H + h) * D;
          const double a = static_cast<double>(pos_offset + t) / std::pow(theta, 2.0 * i / D);
          const double x1 = x.item(base + i), x2 = x.item(base + half + i);
          y.set_item(base + i, x1 * std::cos(a) - x2 * std::sin(a));
          y.set_item(base + half + i, x2 * std::cos(a) + x1 * std::sin(a));
        }
  return y;
}

// Rows [t0, t1) of the time axis of a [B, T, H, D] tensor, copied.
Tensor time_slice(const Tensor& x, int64_t t0, int64_t t1) {
  const int64_t B = x.dim(0), T = x.dim(1), HD = x.dim(2) * x.dim(3);
  Tensor out = Tensor::empty({B, t1 - t0, x.dim(2), x.dim(3)}, x.dtype());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t i = 0; i < HD; ++i)
        out.set_item((b * (t1 - t0) + t - t0) * HD + i, x.item((b * T + t) * HD + i));
  return out;
}

TEST(Rope, ForwardMatchesExplicitFormula) {
  const Tensor x = random_tensor({2, 9, 3, 16}, 1);
  for (double theta : {10000.0, 500000.0, 10.0}) {
    for (int64_t offset : {0, 5, 4096}) {
      SCOPED_TRACE("theta=" + std::to_string(theta) + " offset=" + std::to_string(offset));
      const Tensor want = explicit_rope(x, theta, offset);
      // The reference divides by theta^(2i/D) where the kernel multiplies by theta^(-2i/D): the
      // angles differ by ~1e-16 relative, ~1e-12 absolute at position 4096.
      EXPECT_LE(max_abs_diff(rope(x, {theta, offset}), want), 1e-11);
      // f32 rounds the inputs, cos and sin: a few ulps of |x| <= ~4.
      EXPECT_LE(max_abs_diff(rope(x.to(DType::kF32), {theta, offset}), want), 2e-6);
    }
  }
}

TEST(Rope, DefaultThetaIsTenThousand) {
  const Tensor x = random_tensor({1, 4, 2, 8}, 2);
  EXPECT_LE(max_abs_diff(rope(x, {}), explicit_rope(x, 10000.0, 0)), 1e-13);
}

TEST(Rope, PositionZeroIsIdentity) {
  const Tensor x = random_tensor({2, 1, 3, 8}, 3);
  EXPECT_EQ(max_abs_diff(rope(x, {}), x), 0.0);
}

TEST(Rope, InPlaceEqualsOutOfPlace) {
  const Tensor x = random_tensor({2, 7, 3, 12}, 4);
  const RopeParams p{10000.0, 3};
  const Tensor want = rope(x, p);
  Tensor y = x.clone();
  rope_forward(y, p, y);
  EXPECT_EQ(max_abs_diff(y, want), 0.0);
  Tensor dx = want.clone();
  rope_backward(dx, p, dx);
  EXPECT_EQ(max_abs_diff(dx, rope_grad(want, p)), 0.0);
}

// L = sum(rope(x) * w) is linear in x, so central differences have no truncation error and a
// large step only shrinks the rounding (~1e-16 |L| / h).
TEST(Rope, BackwardMatchesFiniteDifferences) {
  for (int64_t offset : {0, 17}) {
    Tensor x = random_tensor({2, 6, 2, 10}, 5);
    const RopeParams p{10000.0, offset};
    const Tensor w = random_tensor(x.shape(), 6);
    const Tensor dx = rope_grad(w, p);
    auto loss = [&] { return testing::dot(rope(x, p), w); };
    EXPECT_LE(gradcheck(x, dx, loss, 0.1), 1e-12) << "offset " << offset;
  }
}

TEST(Rope, BackwardInvertsForward) {
  const Tensor x = random_tensor({2, 8, 3, 16}, 7);
  const RopeParams p{10000.0, 100};
  EXPECT_LE(max_abs_diff(rope_grad(rope(x, p), p), x), 1e-13);
  EXPECT_LE(max_abs_diff(rope(rope_grad(x, p), p), x), 1e-13);
}

TEST(Rope, PreservesNorms) {
  const Tensor x = random_tensor({2, 8, 3, 16}, 8);
  const Tensor y = rope(x, {10000.0, 1000});
  const int64_t D = 16;
  double worst = 0;
  for (int64_t r = 0; r < x.numel() / D; ++r) {
    double nx = 0, ny = 0;
    for (int64_t i = 0; i < D; ++i) {
      nx += x.item(r * D + i) * x.item(r * D + i);
      ny += y.item(r * D + i) * y.item(r * D + i);
    }
    worst = std::max(worst, std::abs(std::sqrt(ny) - std::sqrt(nx)));
  }
  EXPECT_LE(worst, 1e-13);
}

// <R_m q, R_n k> must depend on m - n only: place the same q at every position and the same k at
// every position, then compare pairs with equal distance at very different absolute positions.
TEST(Rope, ScoresDependOnlyOnRelativePosition) {
  const int64_t D = 32, T = 12;
  const Tensor q1 = random_tensor({1, 1, 1, D}, 9), k1 = random_tensor({1, 1, 1, D}, 10);
  Tensor q = Tensor::empty({1, T, 1, D}, DType::kF64), k = q.clone();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) {
      q.set_item(t * D + i, q1.item(i));
      k.set_item(t * D + i, k1.item(i));
    }
  auto score = [&](const Tensor& rq, const Tensor& rk, int64_t m, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < D; ++i) s += rq.item(m * D + i) * rk.item(n * D + i);
    return s;
  };
  const Tensor rq0 = rope(q, {}), rk0 = rope(k, {});
  const Tensor rq1 = rope(q, {10000.0, 3000}), rk1 = rope(k, {10000.0, 3000});
  for (int64_t delta : {0, 1, 3, 7}) {
    const double ref = score(rq0, rk0, delta, 0);
    for (int64_t n = 1; n + delta < T; ++n)
      EXPECT_NEAR(score(rq0, rk0, n + delta, n), ref, 1e-11) << "delta " << delta << " n " << n;
    // Positions near 3000: angles of ~3000 rad lose ~1e-13 to argument reduction.
    EXPECT_NEAR(score(rq1, rk1, 2 + delta, 2), ref, 1e-10) << "delta " << delta;
  }
  // And the scores do change with distance (the check above is not vacuous).
  EXPECT_GT(std::abs(score(rq0, rk0, 3, 0) - score(rq0, rk0, 0, 0)), 1e-3);
}

// A sequence-parallel rank rotating its shard with pos_offset = its start equals the rows of the
// whole sequence's rotation.
TEST(Rope, OffsetMatchesSliceOfWhole) {
  const Tensor x = random_tensor({2, 16, 2, 8}, 11);
  const Tensor whole = rope(x, {});
  for (int64_t t0 : {4, 8, 12}) {
    const Tensor part = rope(time_slice(x, t0, t0 + 4), {10000.0, t0});
    EXPECT_EQ(max_abs_diff(part, time_slice(whole, t0, t0 + 4)), 0.0) << "t0 " << t0;
  }
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected linea::Error";
  return "";
}

TEST(Rope, OddHeadDimensionIsAnError) {
  const Tensor x = random_tensor({1, 4, 2, 7}, 1);
  Tensor y = Tensor::empty(x.shape(), DType::kF64);
  const std::string msg = error_of([&] { rope_forward(x, {}, y); });
  EXPECT_NE(msg.find("D = 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hint:"), std::string::npos) << msg;
  EXPECT_THROW(rope_backward(x, {}, y), Error);
}

TEST(Rope, BadArgumentsAreErrors) {
  const Tensor x = random_tensor({1, 4, 2, 8}, 1);
  Tensor y = Tensor::empty(x.shape(), DType::kF64), none;
  Tensor y_f32 = Tensor::empty(x.shape(), DType::kF32);
  Tensor y_bad = Tensor::empty({1, 4, 2, 6}, DType::kF64);
  const Tensor x3 = random_tensor({4, 2, 8}, 1);
  Tensor y3 = Tensor::empty(x3.shape(), DType::kF64);
  EXPECT_THROW(rope_forward(x, {}, y_f32), Error);
  EXPECT_THROW(rope_forward(x, {}, y_bad), Error);
  EXPECT_THROW(rope_forward(x, {}, none), Error);
  EXPECT_THROW(rope_forward(x3, {}, y3), Error);
  EXPECT_THROW(rope_forward(x, {10000.0, -1}, y), Error);
  EXPECT_THROW(rope_forward(x, {0.0, 0}, y), Error);
  EXPECT_THROW(rope_backward(x, {}, y_bad), Error);
}

}  // namespace
}  // namespace linea
