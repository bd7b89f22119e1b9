// gemm and linear on CUDA (cuBLAS) against the CPU reference in f64.
#include "kernels/matmul.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

struct GemmCase {
  DType in, out;
};

class GemmCuda : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GemmCuda, AllTransposesMatchCpu) {
  LINEA_REQUIRE_CUDA();
  const auto [in, out] = GetParam();
  const int64_t m = 67, n = 130, k = 515;
  uint64_t seed = 100;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Tensor a = random_cuda(ta ? Shape{k, m} : Shape{m, k}, ++seed, in);
      Tensor b = random_cuda(tb ? Shape{n, k} : Shape{k, n}, ++seed, in);
      Tensor c = random_cuda({m, n}, ++seed, out);
      Tensor ref = ref64(c);
      kernels::gemm(ref64(a), ta, ref64(b), tb, ref, 0.5, -1.5);
      kernels::gemm(a, ta, b, tb, c, 0.5, -1.5);
      EXPECT_LT(rel_err(c, ref), tol_for(out))
          << dtype_name(in) << "->" << dtype_name(out) << " ta " << ta << " tb " << tb;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GemmCuda,
                         ::testing::Values(GemmCase{DType::kF32, DType::kF32},
                                           GemmCase{DType::kBF16, DType::kBF16},
                                           GemmCase{DType::kBF16, DType::kF32}),
                         [](const ::testing::TestParamInfo<GemmCase>& info) {
                           return std::string(dtype_name(info.param.in)) + "_to_" +
                                  dtype_name(info.param.out);
                         });

TEST(LinearCuda, ForwardAndBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const int64_t b = 3, t = 50, in = 96, out = 160;
    Tensor x = random_cuda({b, t, in}, 1, dt);
    Tensor w = random_cuda({out, in}, 2, dt, 0.1);
    Tensor dy = random_cuda({b, t, out}, 3, dt);
    Tensor y = poisoned_cuda({b, t, out}, dt);
    kernels::linear_forward(x, w, y);
    Tensor y_ref = Tensor::empty({b, t, out}, DType::kF64);
    kernels::linear_forward(ref64(x), ref64(w), y_ref);
    EXPECT_LT(rel_err(y, y_ref), tol_for(dt)) << dtype_name(dt);

    // dw accumulates (`+=`) into an f32 gradient that already holds values; dx is written.
    Tensor dw = random_cuda({out, in}, 4, DType::kF32);
    Tensor dw_ref = ref64(dw);
    Tensor dx = poisoned_cuda({b, t, in}, dt);
    Tensor dx_ref = Tensor::empty({b, t, in}, DType::kF64);
    kernels::linear_backward(x, w, dy, dx, dw);
    kernels::linear_backward(ref64(x), ref64(w), ref64(dy), dx_ref, dw_ref);
    EXPECT_LT(rel_err(dx, dx_ref), tol_for(dt)) << dtype_name(dt);
    EXPECT_LT(rel_err(dw, dw_ref), kTolF32) << dtype_name(dt);

    // dx not wanted.
    Tensor none;
    kernels::linear_backward(x, w, dy, none, dw);
    kernels::linear_backward(ref64(x), ref64(w), ref64(dy), none, dw_ref);
    EXPECT_LT(rel_err(dw, dw_ref), kTolF32) << dtype_name(dt);
  }
}

TEST(LinearCuda, ZeroRowsStillDefineTheOutputs) {
  LINEA_REQUIRE_CUDA();
  Tensor x = Tensor::empty({0, 8}, DType::kF32, Device::cuda(0));
  Tensor w = random_cuda({4, 8}, 5, DType::kF32);
  Tensor dy = Tensor::empty({0, 4}, DType::kF32, Device::cuda(0));
  Tensor dw = random_cuda({4, 8}, 6, DType::kF32);
  const Tensor before = dw.cpu();
  Tensor none;
  kernels::linear_backward(x, w, dy, none, dw);  // K = 0: dw += 0
  EXPECT_EQ(max_abs_diff(dw.cpu(), before), 0.0);
  Tensor a = random_cuda({3, 0}, 7, DType::kF32), b = random_cuda({0, 5}, 8, DType::kF32);
  Tensor c = poisoned_cuda({3, 5}, DType::kF32);
  kernels::gemm(a, false, b, false, c, 1.0, 0.0);  // beta = 0 overwrites NaN
  EXPECT_EQ(max_abs(c.cpu()), 0.0);
}

TEST(LinearCuda, MixedDevicesAreRefused) {
  LINEA_REQUIRE_CUDA();
  Tensor x = random_cuda({4, 8}, 9, DType::kF32);
  Tensor w = random_tensor({4, 8}, 10, DType::kF32);
  Tensor y = Tensor::empty({4, 4}, DType::kF32, Device::cuda(0));
  const std::string msg = error_message([&] { kernels::linear_forward(x, w, y); });
  EXPECT_TRUE(contains(msg, "linear_forward: w")) << msg;
  EXPECT_TRUE(contains(msg, "CUDA device")) << msg;
}

}  // namespace
}  // namespace linea
