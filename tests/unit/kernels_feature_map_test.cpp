#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/feature_map.h"
#include "tests/common/gradcheck.h"
#include "tests/common/kernel_check.h"

namespace linea {
namespace {

using kernels::feature_map_backward;
using kernels::feature_map_forward;
using kernels::FeatureMap;
using testing::random_tensor;
using testing::rel_max_diff;

// Tolerances: hand values to 1e-15; finite differences in f64 1e-6 relative (inputs kept away
// from the kink at 0); f32 against f64 1e-6 relative to the largest value.
constexpr double kGradTol = 1e-6;
constexpr double kF32Tol = 1e-6;

constexpr FeatureMap kAllMaps[] = {FeatureMap::kIdentity, FeatureMap::kEluPlusOne,
                                   FeatureMap::kRelu};

const char* map_name(FeatureMap f) {
  switch (f) {
    case FeatureMap::kIdentity:
      return "identity";
    case FeatureMap::kEluPlusOne:
      return "elu+1";
    case FeatureMap::kRelu:
      return "relu";
  }
  return "?";
}

// Normal values with none closer than 0.01 to 0, where elu+1 and relu have their kink.
Tensor away_from_zero(const Shape& s, uint64_t seed) {
  Tensor t = random_tensor(s, seed);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = t.item(i);
    if (std::abs(v) < 0.01) t.set_item(i, v < 0 ? v - 0.01 : v + 0.01);
  }
  return t;
}

TEST(KernelsFeatureMap, ForwardAndDerivativeMatchHandValues) {
  const std::vector<double> xs{-2, -0.5, 0, 0.5, 3};
  Tensor x = Tensor::from_vector({5}, xs, DType::kF64);
  Tensor ones = Tensor::from_vector({5}, std::vector<double>(5, 1.0), DType::kF64);
  for (FeatureMap f : kAllMaps) {
    SCOPED_TRACE(map_name(f));
    Tensor y = Tensor::empty({5}, DType::kF64), dx = Tensor::empty({5}, DType::kF64);
    feature_map_forward(f, x, y);
    feature_map_backward(f, x, ones, dx);
    for (int64_t i = 0; i < 5; ++i) {
      const double v = xs[i];
      double phi = v, dphi = 1;
      if (f == FeatureMap::kEluPlusOne) {
        phi = v > 0 ? v + 1 : std::exp(v);
        dphi = v > 0 ? 1 : std::exp(v);
      } else if (f == FeatureMap::kRelu) {
        phi = v > 0 ? v : 0;
        dphi = v > 0 ? 1 : 0;
      }
      EXPECT_NEAR(y.item(i), phi, 1e-15) << "x = " << v;
      EXPECT_NEAR(dx.item(i), dphi, 1e-15) << "x = " << v;
    }
  }
}

TEST(KernelsFeatureMap, BackwardMatchesFiniteDifferences) {
  for (FeatureMap f : kAllMaps) {
    SCOPED_TRACE(map_name(f));
    Tensor x = away_from_zero({6, 5}, 1);
    Tensor up = random_tensor({6, 5}, 2);
    Tensor y = Tensor::empty(x.shape(), DType::kF64);
    auto loss = [&] {
      feature_map_forward(f, x, y);
      return testing::dot(y, up);
    };
    Tensor dx = Tensor::empty(x.shape(), DType::kF64);
    feature_map_backward(f, x, up, dx);
    EXPECT_LE(testing::gradcheck(x, dx, loss), kGradTol);
  }
}

TEST(KernelsFeatureMap, F32MatchesF64) {
  Tensor x = random_tensor({32, 64}, 3, DType::kF64, 2.0);
  Tensor dy = random_tensor({32, 64}, 4);
  for (FeatureMap f : kAllMaps) {
    SCOPED_TRACE(map_name(f));
    Tensor y64 = Tensor::empty(x.shape(), DType::kF64),
           dx64 = Tensor::empty(x.shape(), DType::kF64);
    feature_map_forward(f, x, y64);
    feature_map_backward(f, x, dy, dx64);
    Tensor x32 = x.to(DType::kF32);
    Tensor y32 = Tensor::empty(x.shape(), DType::kF32),
           dx32 = Tensor::empty(x.shape(), DType::kF32);
    feature_map_forward(f, x32, y32);
    feature_map_backward(f, x32, dy.to(DType::kF32), dx32);
    EXPECT_LE(rel_max_diff(y32, y64), kF32Tol);
    EXPECT_LE(rel_max_diff(dx32, dx64), kF32Tol);
  }
}

TEST(KernelsFeatureMap, BadShapesAndDtypesAreErrors) {
  Tensor x = Tensor::zeros({4, 6}, DType::kF64);
  Tensor y_bad = Tensor::zeros({4, 5}, DType::kF64);
  std::string msg =
      testing::error_message([&] { feature_map_forward(FeatureMap::kRelu, x, y_bad); });
  EXPECT_TRUE(testing::contains(msg, "[4, 5]") && testing::contains(msg, "[4, 6]")) << msg;
  Tensor y32 = Tensor::zeros({4, 6}, DType::kF32);
  EXPECT_THROW(feature_map_forward(FeatureMap::kIdentity, x, y32), Error);
  Tensor dx = Tensor::zeros({4, 6}, DType::kF64);
  EXPECT_THROW(feature_map_backward(FeatureMap::kEluPlusOne, x, y_bad, dx), Error);
  Tensor xi = Tensor::zeros({4, 6}, DType::kI32);
  EXPECT_THROW(feature_map_forward(FeatureMap::kRelu, xi, xi), Error);
}

}  // namespace
}  // namespace linea
