// CUDA_CHECK / CUBLAS_CHECK messages and the no-GPU errors. These need no GPU: they run wherever
// the CUDA backend is built.
#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/tensor/cuda_device.h"
#include "core/tensor/tensor.h"
#include "core/util/cuda_check.h"
#include "tests/common/kernel_check.h"

namespace linea {
namespace {

using testing::contains;
using testing::error_message;

TEST(CudaCheck, MessageNamesExpressionErrorFileRankAndHint) {
  setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  const std::string msg = error_message([] { CUDA_CHECK(cudaErrorMemoryAllocation); });
  unsetenv("OMPI_COMM_WORLD_RANK");
  EXPECT_TRUE(contains(msg, "checks_cuda_test.cpp:")) << msg;
  EXPECT_TRUE(contains(msg, "[rank 3]")) << msg;
  EXPECT_TRUE(contains(msg, "CUDA error 2")) << msg;
  EXPECT_TRUE(contains(msg, "cudaErrorMemoryAllocation")) << msg;
  EXPECT_TRUE(contains(msg, "hint: the GPU is out of memory")) << msg;
}

TEST(CudaCheck, CublasStatusIsNamed) {
  const std::string msg = error_message([] { CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE); });
  EXPECT_TRUE(contains(msg, "cuBLAS error")) << msg;
  EXPECT_TRUE(contains(msg, "CUBLAS_STATUS_INVALID_VALUE")) << msg;
  EXPECT_TRUE(error_message([] { CUDA_CHECK(cudaSuccess); }).empty());
}

TEST(CudaCheck, NoGpuIsAUserErrorWithAHint) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present: nothing to refuse";
  const std::string msg = error_message([] { Tensor::empty({4}, DType::kF32, Device::cuda(0)); });
  EXPECT_TRUE(contains(msg, "cuda:0 requested")) << msg;
  EXPECT_TRUE(contains(msg, "hint:")) << msg;
}

TEST(CudaCheck, DeviceIndexOutOfRangeIsAUserError) {
  if (cuda::device_count() == 0) {
    GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  }
  const std::string msg =
      error_message([] { Tensor::empty({4}, DType::kF32, Device::cuda(cuda::device_count())); });
  EXPECT_TRUE(contains(msg, "device(s) present")) << msg;
}

}  // namespace
}  // namespace linea
