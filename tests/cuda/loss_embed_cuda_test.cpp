// Cross-entropy and embedding on CUDA against the CPU reference in f64.
#include "core/util/rng.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

Tensor random_ids(int64_t n, int64_t vocab, uint64_t seed, bool some_ignored) {
  Rng rng(seed);
  Tensor t = Tensor::empty({n}, DType::kI32);
  for (int64_t i = 0; i < n; ++i) {
    const bool ignore = some_ignored && rng.below(5) == 0;
    t.set_item(i, ignore ? kernels::kIgnoreIndex : static_cast<double>(rng.below(vocab)));
  }
  return t;
}

struct CeCase {
  DType dt;
  int64_t rows, vocab;
};

class CrossEntropyCuda : public ::testing::TestWithParam<CeCase> {};

TEST_P(CrossEntropyCuda, ForwardBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  const auto [dt, rows, vocab] = GetParam();
  Tensor z = random_cuda({rows, vocab}, 30 + vocab, dt, 4.0);
  Tensor t_cpu = random_ids(rows, vocab, 31, true);
  Tensor t = t_cpu.cuda(0);
  Tensor lse = poisoned_cuda({rows}, DType::kF32);
  int64_t n_valid = -1, n_valid_ref = -1;
  const double loss = kernels::cross_entropy_forward(z, t, lse, &n_valid);
  Tensor z64 = ref64(z);
  Tensor lse_ref = Tensor::empty({rows}, DType::kF64);
  const double loss_ref = kernels::cross_entropy_forward(z64, t_cpu, lse_ref, &n_valid_ref);
  EXPECT_EQ(n_valid, n_valid_ref);
  EXPECT_NEAR(loss, loss_ref, 2e-5 * std::abs(loss_ref));
  EXPECT_LT(rel_err(lse, lse_ref), kTolF32);

  // Backward written in place over the logits, as the model does to save the [N, V] buffer.
  Tensor dz_ref = Tensor::empty({rows, vocab}, DType::kF64);
  kernels::cross_entropy_backward(z64, t_cpu, lse_ref, 0.7, n_valid_ref, dz_ref);
  kernels::cross_entropy_backward(z, t, lse, 0.7, n_valid, z);
  EXPECT_LT(rel_err(z, dz_ref), tol_for(dt)) << dtype_name(dt);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CrossEntropyCuda,
    ::testing::Values(CeCase{DType::kF32, 37, 1000}, CeCase{DType::kBF16, 37, 1001},
                      CeCase{DType::kF32, 9, 151936}, CeCase{DType::kBF16, 9, 151936}),
    [](const ::testing::TestParamInfo<CeCase>& info) {
      return std::string(dtype_name(info.param.dt)) + "_V" + std::to_string(info.param.vocab);
    });

TEST(CrossEntropyCudaErrors, BadTargetIsAUserError) {
  LINEA_REQUIRE_CUDA();
  Tensor z = random_cuda({4, 10}, 40, DType::kF32);
  Tensor t = Tensor::from_vector({4}, {1, 2, 10, -1}, DType::kI32).cuda(0);
  Tensor lse = Tensor::empty({4}, DType::kF32, Device::cuda(0));
  const std::string msg =
      error_message([&] { kernels::cross_entropy_forward(z, t, lse, nullptr); });
  EXPECT_TRUE(contains(msg, "target id 10 at row 2")) << msg;
  EXPECT_TRUE(contains(msg, "hint:")) << msg;
}

TEST(EmbeddingCuda, ForwardCopiesRowsBackwardAccumulates) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t d : {136, 130}) {          // 130: rows that are no whole 16-byte pieces
      const int64_t vocab = 500, n = 2000;  // ids repeat: the backward adds collisions
      Tensor table = random_cuda({vocab, d}, 50, dt);
      Tensor ids_cpu = random_ids(n, vocab, 51, false);
      Tensor ids = ids_cpu.view({40, 50}).cuda(0);
      Tensor y = poisoned_cuda({40, 50, d}, dt);
      kernels::embedding_forward(ids, table, y);
      Tensor y_ref = Tensor::empty({40, 50, d}, DType::kF64);
      kernels::embedding_forward(ids_cpu, ref64(table), y_ref);
      EXPECT_EQ(max_abs_diff(ref64(y), y_ref), 0.0) << dtype_name(dt);

      Tensor dy = random_cuda({40, 50, d}, 52, dt);
      Tensor dtable = random_cuda({vocab, d}, 53, DType::kF32);
      Tensor dtable_ref = ref64(dtable);
      kernels::embedding_backward(ids, dy, dtable);
      kernels::embedding_backward(ids_cpu, ref64(dy), dtable_ref);
      EXPECT_LT(rel_err(dtable, dtable_ref), kTolF32) << dtype_name(dt);
    }
  }
}

TEST(EmbeddingCuda, BackwardIsDeterministic) {
  LINEA_REQUIRE_CUDA();
  const int64_t vocab = 50, d = 256, n = 20000;  // about 400 rows per id
  Tensor ids = random_ids(n, vocab, 54, false).cuda(0);
  Tensor dy = random_cuda({n, d}, 55, DType::kBF16);
  Tensor a = Tensor::zeros({vocab, d}, DType::kF32, Device::cuda(0)), b = a.clone();
  kernels::embedding_backward(ids, dy, a);
  kernels::embedding_backward(ids, dy, b);
  EXPECT_EQ(max_abs_diff(a.cpu(), b.cpu()), 0.0);
  Tensor ref = Tensor::zeros({vocab, d}, DType::kF64);
  kernels::embedding_backward(ids.cpu(), ref64(dy), ref);
  EXPECT_LT(rel_err(a, ref), kTolF32);
}

TEST(EmbeddingCuda, BadIdIsAUserError) {
  LINEA_REQUIRE_CUDA();
  Tensor table = random_cuda({10, 4}, 60, DType::kF32);
  Tensor ids = Tensor::from_vector({3}, {0, 9, -2}, DType::kI32).cuda(0);
  Tensor y = Tensor::empty({3, 4}, DType::kF32, Device::cuda(0));
  const std::string msg = error_message([&] { kernels::embedding_forward(ids, table, y); });
  EXPECT_TRUE(contains(msg, "token id -2 at position 2")) << msg;
}

}  // namespace
}  // namespace linea
