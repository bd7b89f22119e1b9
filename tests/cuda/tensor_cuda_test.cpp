// Tensor on CUDA: transfers, conversions, zero_/fill_, element reads, the caching allocator,
// streams and the event timer.
#include <cstring>

#include "core/tensor/cuda_allocator.h"
#include "core/tensor/cuda_stream.h"
#include "kernels/cuda/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using testing::random_tensor;

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(TensorCuda, RoundTripIsBitIdentical) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF64, DType::kI32}) {
    Tensor host = random_tensor({37, 129}, 11, DType::kF64, 100.0).to(dt);
    Tensor dev = host.cuda(0);
    EXPECT_EQ(dev.device(), Device::cuda(0));
    EXPECT_EQ(dev.dtype(), dt);
    Tensor back = dev.cpu();
    EXPECT_TRUE(same_bytes(back, host)) << dtype_name(dt);
    // Already there: the same storage, no copy.
    EXPECT_EQ(dev.cuda(0).raw(), dev.raw());
  }
}

TEST(TensorCuda, ConversionsOnDeviceMatchTheCpu) {
  LINEA_REQUIRE_CUDA();
  const std::pair<DType, DType> pairs[] = {{DType::kF32, DType::kBF16},
                                           {DType::kBF16, DType::kF32},
                                           {DType::kF64, DType::kBF16},
                                           {DType::kF64, DType::kF32},
                                           {DType::kF32, DType::kF64}};
  for (auto [from, to] : pairs) {
    Tensor host = random_tensor({1000}, 12, DType::kF64, 3.0).to(from);
    Tensor on_gpu = host.cuda(0).to(to).cpu();
    EXPECT_TRUE(same_bytes(on_gpu, host.to(to))) << dtype_name(from) << " -> " << dtype_name(to);
    // Across devices, converting on the way.
    Tensor dst = Tensor::empty({1000}, to, Device::cuda(0));
    dst.copy_from(host);
    EXPECT_TRUE(same_bytes(dst.cpu(), host.to(to)));
    Tensor back = Tensor::empty({1000}, to);
    back.copy_from(host.cuda(0));
    EXPECT_TRUE(same_bytes(back, host.to(to)));
  }
}

TEST(TensorCuda, ZeroFillCloneAndItem) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16, DType::kI32, DType::kF64}) {
    Tensor t = random_tensor({513}, 13, DType::kF64).to(dt).cuda(0);
    t.zero_();
    EXPECT_EQ(testing::max_abs(t.cpu()), 0.0) << dtype_name(dt);
    t.fill_(-3.0);
    Tensor expect = Tensor::empty({513}, dt);
    expect.fill_(-3.0);
    EXPECT_TRUE(same_bytes(t.cpu(), expect)) << dtype_name(dt);
    Tensor c = t.clone();
    EXPECT_NE(c.raw(), t.raw());
    EXPECT_TRUE(same_bytes(c.cpu(), expect));
  }
  Tensor r = random_tensor({4, 5}, 14, DType::kF32);
  Tensor g = r.cuda(0);
  EXPECT_EQ(g.item(7), r.item(7));
  EXPECT_EQ(g.to_vector(), r.to_vector());
  // A slice is a view: copying into it writes the parent's rows.
  Tensor rows = g.slice(1, 3);
  rows.zero_();
  Tensor back = g.cpu();
  EXPECT_EQ(back.item(4), r.item(4));
  EXPECT_EQ(back.item(5), 0.0);
  EXPECT_EQ(back.item(14), 0.0);
  EXPECT_EQ(back.item(15), r.item(15));
  EXPECT_TRUE(testing::contains(testing::error_message([&] { g.set_item(0, 1.0); }), "set_item"));
}

TEST(TensorCuda, RoundSizeClasses) {
  // No GPU needed: the size classes are pure arithmetic.
  EXPECT_EQ(cuda::round_size(1), 512u);
  EXPECT_EQ(cuda::round_size(512), 512u);
  EXPECT_EQ(cuda::round_size(513), 1024u);
  EXPECT_EQ(cuda::round_size(1 << 20), size_t(1) << 20);
  for (size_t b : {size_t(1) << 20 | 1, size_t(3) << 20, size_t(100) << 20, size_t(5) << 30}) {
    const size_t r = cuda::round_size(b);
    EXPECT_GE(r, b);
    EXPECT_LE(static_cast<double>(r), 1.25 * static_cast<double>(b) + (2 << 20)) << b;
    EXPECT_EQ(r % (size_t(2) << 20), 0u) << b;
  }
}

TEST(TensorCuda, WarmAllocatorCallsNoCudaMalloc) {
  LINEA_REQUIRE_CUDA();
  const Shape shapes[] = {{1}, {1000}, {4096, 1024}, {3, 7, 11}, {8192, 3000}, {1000}};
  auto round = [&] {
    std::vector<Tensor> live;
    for (const Shape& s : shapes) live.push_back(Tensor::empty(s, DType::kF32, Device::cuda(0)));
    for (const Shape& s : shapes) live.push_back(Tensor::empty(s, DType::kBF16, Device::cuda(0)));
    live.back().zero_();
  };
  round();
  const cuda::AllocatorStats warm = cuda::allocator_stats(0);
  round();
  const cuda::AllocatorStats after = cuda::allocator_stats(0);
  EXPECT_EQ(after.cuda_malloc_calls, warm.cuda_malloc_calls);
  EXPECT_EQ(after.allocations - warm.allocations, 12);
  EXPECT_EQ(after.cache_hits - warm.cache_hits, 12);
  EXPECT_EQ(after.bytes_in_use, warm.bytes_in_use);
  EXPECT_GE(after.peak_bytes_in_use, size_t(8192) * 3000 * 4);
  EXPECT_GE(after.bytes_reserved, after.peak_bytes_in_use);
  // Releasing the cache gives the memory back; the next round allocates again.
  cuda::release_cached(0);
  EXPECT_EQ(cuda::allocator_stats(0).bytes_reserved, cuda::allocator_stats(0).bytes_in_use);
  round();
  EXPECT_GT(cuda::allocator_stats(0).cuda_malloc_calls, after.cuda_malloc_calls);
}

TEST(TensorCuda, StreamGuardAndEventTimer) {
  LINEA_REQUIRE_CUDA();
  cudaStream_t mine = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&mine, cudaStreamNonBlocking), cudaSuccess);
  const cudaStream_t base = cuda::current_stream(0);
  {
    cuda::StreamGuard guard(0, mine);
    EXPECT_EQ(cuda::current_stream(0), mine);
    Tensor t = Tensor::empty({1 << 20}, DType::kF32, Device::cuda(0));
    cuda::EventTimer timer(0);
    timer.start();
    kernels::cuda::fill_normal(t, 1, 1.0);
    timer.stop();
    EXPECT_GT(timer.elapsed_ms(), 0.0f);
    cuda::synchronize(0);
  }
  EXPECT_EQ(cuda::current_stream(0), base);
  cudaStreamDestroy(mine);
}

TEST(TensorCuda, FillNormalLooksNormal) {
  LINEA_REQUIRE_CUDA();
  Tensor t = Tensor::empty({1 << 16}, DType::kF32, Device::cuda(0));
  kernels::cuda::fill_normal(t, 7, 2.0);
  const std::vector<double> v = t.to_vector();
  double mean = 0, sq = 0;
  for (double x : v) mean += x, sq += x * x;
  mean /= v.size();
  const double sd = std::sqrt(sq / v.size() - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.05);
  EXPECT_NEAR(sd, 2.0, 0.05);
}

}  // namespace
}  // namespace linea
