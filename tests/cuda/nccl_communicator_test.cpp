// The NCCL communicator on one GPU, bootstrapped over a SelfCommunicator: every collective of a
// group of one rank is a copy (or nothing) and counts no bytes, CPU tensors are staged for
// all_reduce and broadcast, wrong tensors fail with the group's name, and split() builds groups.
// The W-rank equivalence with the MPI backend is tests/cuda_multirank/nccl_vs_mpi_test.cpp.
#include "parallel/nccl_communicator.h"

#include "core/tensor/cuda_stream.h"
#include "kernels/matmul.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

TEST(NcclCommunicator, OneRankCollectivesAreCopies) {
  LINEA_REQUIRE_CUDA();
  parallel::SelfCommunicator self;
  auto nccl = parallel::NcclCommunicator::create(self, 0, "world");
  ASSERT_EQ(nccl->size(), 1);
  ASSERT_EQ(nccl->rank(), 0);
  const Tensor x = random_cuda({7, 5}, 1, DType::kF32);

  Tensor r = x.clone();
  nccl->all_reduce(r, parallel::ReduceOp::kSum);
  Tensor g = Tensor::empty({7, 5}, DType::kF32, Device::cuda(0));
  nccl->all_gather(x, g);
  Tensor s = Tensor::empty({7, 5}, DType::kF32, Device::cuda(0));
  nccl->reduce_scatter(x, s, parallel::ReduceOp::kMax);
  Tensor a = Tensor::empty({7, 5}, DType::kBF16, Device::cuda(0));
  const Tensor xb = x.to(DType::kBF16);
  nccl->all_to_all_v(xb, {7}, a, {7});
  Tensor b = x.clone();
  nccl->broadcast(b, 0);
  cuda::synchronize(0);
  for (const Tensor* t : {&r, &g, &s, &b}) EXPECT_EQ(rel_err(*t, x), 0.0);
  EXPECT_EQ(rel_err(a, xb), 0.0);
  for (uint64_t bytes : nccl->stats().bytes_sent) EXPECT_EQ(bytes, 0u);
  EXPECT_EQ(nccl->stats().calls[static_cast<int>(parallel::CollectiveKind::kAllReduce)], 1u);

  // Host scalars go through the device.
  EXPECT_EQ(nccl->all_reduce_scalar(2.5), 2.5);
  nccl->barrier();
}

// all_gather_async runs on the communicator's side stream: it sends what the current stream wrote
// before the call (the fill queued just before it, behind a long GEMM), and after wait() work on
// the current stream sees the result; a pending gather dropped without wait() still orders it.
TEST(NcclCommunicator, AsyncAllGatherIsOrderedWithTheCurrentStream) {
  LINEA_REQUIRE_CUDA();
  parallel::SelfCommunicator self;
  auto nccl = parallel::NcclCommunicator::create(self, 0, "sp");
  const Tensor a = random_cuda({2048, 2048}, 1, DType::kF32);
  for (int round = 0; round < 3; ++round) {
    Tensor busy = Tensor::empty({2048, 2048}, DType::kF32, Device::cuda(0));
    kernels::gemm(a, false, a, false, busy);  // keeps the current stream busy
    Tensor x = Tensor::empty({1000}, DType::kF32, Device::cuda(0));
    x.fill_(1.5 + round);
    Tensor g = poisoned_cuda({1000}, DType::kF32);
    auto pending = nccl->all_gather_async(x, g);
    if (round == 2) {
      pending.reset();  // dropped: the destructor orders the current stream after the gather
    } else {
      pending->wait();
    }
    Tensor h = g.clone();  // queued on the current stream after the wait
    const Tensor hc = h.cpu();
    for (int64_t i = 0; i < hc.numel(); ++i) ASSERT_EQ(hc.item(i), 1.5 + round) << round;
  }
  EXPECT_EQ(nccl->stats().calls[static_cast<int>(parallel::CollectiveKind::kAllGather)], 3u);
}

TEST(NcclCommunicator, RejectsWrongTensorsAndSplits) {
  LINEA_REQUIRE_CUDA();
  parallel::SelfCommunicator self;
  auto nccl = parallel::NcclCommunicator::create(self, 0, "dp");
  // Host tensors are staged through the device (counts, statistics): one rank's gather copies.
  Tensor cpu = Tensor::from_vector({4}, std::vector<double>{1, 2, 3, 4}, DType::kF32);
  Tensor out = Tensor::zeros({4}, DType::kF32);
  nccl->all_gather(cpu, out);
  EXPECT_EQ(out.to_vector(), cpu.to_vector());
  // A tensor on another device than the communicator's is an error naming the group.
  if (cuda::device_count() > 1) {
    Tensor other = Tensor::zeros({4}, DType::kF32, Device::cuda(1));
    try {
      nccl->all_gather(other, other);
      ADD_FAILURE() << "expected linea::Error for a tensor on cuda:1";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'dp'"), std::string::npos) << e.what();
    }
  }
  Tensor bf = Tensor::zeros({4}, DType::kBF16, Device::cuda(0));
  EXPECT_THROW(nccl->all_reduce(bf, parallel::ReduceOp::kSum), Error);
  auto sub = nccl->split(0, 0, "sp");
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(sub->name(), "sp");
  EXPECT_EQ(nccl->split(-1, 0, "none"), nullptr);
}

}  // namespace
}  // namespace linea
