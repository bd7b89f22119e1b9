#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/embedding.h"
#include "tests/common/gradcheck.h"
#include "tests/common/kernel_check.h"

namespace linea {
namespace {

using kernels::embedding_backward;
using kernels::embedding_forward;
using testing::contains;
using testing::error_message;
using testing::random_tensor;

// Tolerances: the forward is a copy (exact); finite differences in f64 to 1e-6 relative; the f32
// backward sums at most a few rows per entry, so it matches f64 to 1e-6 relative.
constexpr double kGradTol = 1e-6;
constexpr double kF32Tol = 1e-6;

Tensor ids_tensor(const Shape& s, const std::vector<double>& v) {
  return Tensor::from_vector(s, v, DType::kI32);
}

TEST(KernelsEmbedding, ForwardCopiesTableRows) {
  Tensor table = random_tensor({7, 3}, 1);
  Tensor ids = ids_tensor({2, 3}, {6, 0, 2, 2, 5, 0});
  Tensor y = Tensor::empty({2, 3, 3}, DType::kF64);
  embedding_forward(ids, table, y);
  for (int64_t n = 0; n < ids.numel(); ++n) {
    const int64_t row = static_cast<int64_t>(ids.item(n));
    for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(y.item(n * 3 + j), table.item(row * 3 + j));
  }
}

TEST(KernelsEmbedding, BackwardMatchesFiniteDifferences) {
  Tensor table = random_tensor({7, 4}, 2);
  Tensor ids = ids_tensor({5}, {3, 1, 3, 6, 3});  // repeated ids must sum
  Tensor up = random_tensor({5, 4}, 3);
  Tensor y = Tensor::empty({5, 4}, DType::kF64);
  auto loss = [&] {
    embedding_forward(ids, table, y);
    return testing::dot(y, up);
  };
  Tensor dtable = Tensor::zeros(table.shape(), DType::kF64);
  embedding_backward(ids, up, dtable);
  EXPECT_LE(testing::gradcheck(table, dtable, loss), kGradTol);
  // Rows no id touches get nothing.
  for (int64_t j = 0; j < 4; ++j) EXPECT_EQ(dtable.item(0 * 4 + j), 0.0);
}

TEST(KernelsEmbedding, BackwardAccumulates) {
  Tensor ids = ids_tensor({4}, {0, 2, 2, 1});
  Tensor dy = random_tensor({4, 3}, 4);
  Tensor dtable = Tensor::zeros({3, 3}, DType::kF64);
  embedding_backward(ids, dy, dtable);
  Tensor once = dtable.clone();
  embedding_backward(ids, dy, dtable);
  for (int64_t i = 0; i < dtable.numel(); ++i) EXPECT_NEAR(dtable.item(i), 2 * once.item(i), 1e-15);
}

TEST(KernelsEmbedding, F32MatchesF64) {
  Tensor table = random_tensor({257, 16}, 5);
  Tensor ids = Tensor::empty({64}, DType::kI32);
  for (int64_t i = 0; i < 64; ++i) ids.set_item(i, (i * 37) % 257 % 20);  // many repeats
  Tensor dy = random_tensor({64, 16}, 6);
  Tensor y64 = Tensor::empty({64, 16}, DType::kF64);
  Tensor dt64 = Tensor::zeros(table.shape(), DType::kF64);
  embedding_forward(ids, table, y64);
  embedding_backward(ids, dy, dt64);
  Tensor y32 = Tensor::empty({64, 16}, DType::kF32);
  Tensor dt32 = Tensor::zeros(table.shape(), DType::kF32);
  embedding_forward(ids, table.to(DType::kF32), y32);
  embedding_backward(ids, dy.to(DType::kF32), dt32);
  EXPECT_EQ(testing::max_abs_diff(y32, y64.to(DType::kF32)), 0.0);
  EXPECT_LE(testing::rel_max_diff(dt32, dt64), kF32Tol);
}

TEST(KernelsEmbedding, OutOfRangeIdIsAUserErrorNamingIdAndVocab) {
  Tensor table = random_tensor({10, 2}, 7);
  Tensor y = Tensor::empty({3, 2}, DType::kF64);
  for (double bad : {10.0, -1.0}) {
    Tensor ids = ids_tensor({3}, {1, bad, 2});
    std::string msg = error_message([&] { embedding_forward(ids, table, y); });
    EXPECT_TRUE(contains(msg, "token id " + std::to_string(static_cast<int>(bad))) &&
                contains(msg, "vocab size 10") && contains(msg, "hint:"))
        << msg;
  }
  // The backward checks before writing: a bad batch leaves dtable as it was.
  Tensor dtable = Tensor::zeros({10, 2}, DType::kF64);
  Tensor ids = ids_tensor({3}, {1, 2, 42});
  EXPECT_THROW(embedding_backward(ids, random_tensor({3, 2}, 8), dtable), Error);
  EXPECT_EQ(testing::max_abs(dtable), 0.0);
}

TEST(KernelsEmbedding, BadShapesAndDtypesAreErrors) {
  Tensor table = Tensor::zeros({10, 4}, DType::kF64);
  Tensor ids = ids_tensor({3}, {0, 1, 2});
  Tensor y_wrong_d = Tensor::empty({3, 5}, DType::kF64);
  std::string msg = error_message([&] { embedding_forward(ids, table, y_wrong_d); });
  EXPECT_TRUE(contains(msg, "[3, 5]") && contains(msg, "[10, 4]")) << msg;
  Tensor y_wrong_n = Tensor::empty({4, 4}, DType::kF64);
  EXPECT_THROW(embedding_forward(ids, table, y_wrong_n), Error);
  Tensor y32 = Tensor::empty({3, 4}, DType::kF32);
  EXPECT_THROW(embedding_forward(ids, table, y32), Error);
  Tensor ids64 = Tensor::zeros({3}, DType::kI64);
  Tensor y = Tensor::empty({3, 4}, DType::kF64);
  EXPECT_THROW(embedding_forward(ids64, table, y), Error);
  Tensor flat_table = Tensor::zeros({40}, DType::kF64);
  EXPECT_THROW(embedding_backward(ids, y, flat_table), Error);
}

}  // namespace
}  // namespace linea
