#include "core/tensor/tensor.h"

#include <gtest/gtest.h>

namespace linea {
namespace {

TEST(Tensor, SliceAndViewShareStorage) {
  Tensor t = Tensor::from_vector({3, 2}, {0, 1, 2, 3, 4, 5}, DType::kF32);
  Tensor s = t.slice(1, 3);
  EXPECT_EQ(s.shape(), (Shape{2, 2}));
  EXPECT_EQ(s.item(0), 2.0);
  s.set_item(0, 7.0);
  EXPECT_EQ(t.item(2), 7.0);
  Tensor v = t.view({-1});
  EXPECT_EQ(v.shape(), (Shape{6}));
  EXPECT_EQ(v.item(2), 7.0);
}

TEST(Tensor, ConversionRoundsBf16ToNearestEven) {
  Tensor t = Tensor::from_vector({3}, {1.0, 1.00390625, 3.14159}, DType::kF32);
  Tensor b = t.to(DType::kBF16);
  EXPECT_EQ(b.item(0), 1.0);
  EXPECT_EQ(b.item(1), 1.0);  // halfway between 1 and 1.0078125 rounds to even
  EXPECT_NEAR(b.item(2), 3.140625, 1e-9);
}

TEST(Tensor, BadShapesAreErrors) {
  Tensor t = Tensor::zeros({4, 3}, DType::kF64);
  EXPECT_THROW(t.view({5, 3}), Error);
  EXPECT_THROW(t.slice(2, 5), Error);
  EXPECT_THROW(t.data<float>(), Error);
}

}  // namespace
}  // namespace linea
