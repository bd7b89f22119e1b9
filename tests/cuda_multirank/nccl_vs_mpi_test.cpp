// The NCCL backend against the MPI backend on W ranks, one GPU each (run by ctest as
// cuda_multirank_np2 under mpirun; skips unless every rank has its own GPU): each rank makes the
// same deterministic per-rank data, runs each collective once over MPI on the CPU and once over
// NCCL on its GPU, and the results agree (integers exactly, f32 sums to 1e-6 relative: NCCL may
// sum in another order), including groups made by split() and the byte counts.
#include <gtest/gtest.h>

#include "core/tensor/cuda_device.h"
#include "core/tensor/cuda_stream.h"
#include "core/util/rng.h"
#include "parallel/launch_env.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"

namespace linea::parallel {
namespace {

Tensor rank_data(const Shape& s, int rank, uint64_t seed, DType dt) {
  Rng rng(seed, "rank" + std::to_string(rank));
  Tensor t = Tensor::empty(s, dt);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.set_item(i, dt == DType::kI64 ? double(rng.below(1000)) : rng.normal());
  return t;
}

double max_rel(const Tensor& got_device, const Tensor& ref) {
  const Tensor g = got_device.cpu();
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    worst = std::max(worst, std::abs(g.item(i) - ref.item(i)));
    scale = std::max(scale, std::abs(ref.item(i)));
  }
  return scale > 0 ? worst / scale : worst;
}

class NcclVsMpi : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = MpiCommunicator::world();
    const LaunchInfo li = launch_info(*world_);
    if (cuda::device_count() < li.local_size)
      GTEST_SKIP() << "needs one GPU per rank: " << li.local_size << " local ranks, "
                   << cuda::device_count() << " GPUs (" << cuda::unavailable_reason() << ")";
    device_ = li.local_rank;
    nccl_ = NcclCommunicator::create(*world_, device_, "world");
  }
  void compare(Communicator& mpi, Communicator& nccl, uint64_t seed) {
    const int w = mpi.size(), r = mpi.rank();
    const Device dev = Device::cuda(device_);
    const CommStats mpi0 = mpi.stats(), nccl0 = nccl.stats();  // the bootstrap counted already
    // all_reduce
    Tensor a = rank_data({33, 3}, world_->rank(), seed, DType::kF32), ad = a.to(dev);
    mpi.all_reduce(a);
    nccl.all_reduce(ad);
    EXPECT_LT(max_rel(ad, a), 1e-6) << nccl.name() << " all_reduce";
    Tensor i = rank_data({17}, world_->rank(), seed + 1, DType::kI64), id = i.to(dev);
    mpi.all_reduce(i, ReduceOp::kMax);
    nccl.all_reduce(id, ReduceOp::kMax);
    EXPECT_EQ(max_rel(id, i), 0.0) << nccl.name() << " all_reduce max";
    // all_gather / reduce_scatter (backward partners)
    const Tensor in = rank_data({5, 4}, world_->rank(), seed + 2, DType::kF32);
    Tensor g = Tensor::empty({5 * w, 4}, DType::kF32),
           gd = Tensor::empty(g.shape(), DType::kF32, dev);
    mpi.all_gather(in, g);
    nccl.all_gather(in.to(dev), gd);
    EXPECT_EQ(max_rel(gd, g), 0.0) << nccl.name() << " all_gather";
    const Tensor big = rank_data({6 * w, 2}, world_->rank(), seed + 3, DType::kF32);
    Tensor s = Tensor::empty({6, 2}, DType::kF32), sd = Tensor::empty({6, 2}, DType::kF32, dev);
    mpi.reduce_scatter(big, s);
    nccl.reduce_scatter(big.to(dev), sd);
    EXPECT_LT(max_rel(sd, s), 1e-6) << nccl.name() << " reduce_scatter";
    // all_to_all_v with uneven counts (rank r sends r + d + 1 rows to rank d), bf16 rows
    std::vector<int64_t> sc(w), rc(w);
    int64_t ns = 0, nr = 0;
    for (int d = 0; d < w; ++d) ns += sc[d] = r + d + 1, nr += rc[d] = d + r + 1;
    const Tensor rows = rank_data({ns, 3}, world_->rank(), seed + 4, DType::kF32).to(DType::kBF16);
    Tensor got = Tensor::empty({nr, 3}, DType::kBF16);
    Tensor gotd = Tensor::empty({nr, 3}, DType::kBF16, dev);
    mpi.all_to_all_v(rows, sc, got, rc);
    nccl.all_to_all_v(rows.to(dev), sc, gotd, rc);
    EXPECT_EQ(max_rel(gotd, got), 0.0) << nccl.name() << " all_to_all_v";
    // broadcast from the last rank, send/recv around a ring
    Tensor b = rank_data({9}, world_->rank(), seed + 5, DType::kF64), bd = b.to(dev);
    mpi.broadcast(b, w - 1);
    nccl.broadcast(bd, w - 1);
    EXPECT_EQ(max_rel(bd, b), 0.0) << nccl.name() << " broadcast";
    if (w > 1) {
      const Tensor msg = rank_data({4}, world_->rank(), seed + 6, DType::kF32);
      Tensor back = Tensor::empty({4}, DType::kF32, dev);
      const int next = (r + 1) % w, prev = (r + w - 1) % w;
      if (r % 2 == 0) {
        nccl.send(msg.to(dev), next, 0);
        nccl.recv(back, prev, 0);
      } else {
        nccl.recv(back, prev, 0);
        nccl.send(msg.to(dev), next, 0);
      }
      Tensor expect = Tensor::empty({4}, DType::kF32);
      mpi.send(msg, next, 7);  // MPI buffers small messages, so this order does not block
      mpi.recv(expect, prev, 7);
      EXPECT_EQ(max_rel(back, expect), 0.0) << nccl.name() << " send/recv";
    }
    cuda::synchronize(device_);
    for (size_t k = 0; k < mpi0.bytes_sent.size(); ++k)
      EXPECT_EQ(nccl.stats().bytes_sent[k] - nccl0.bytes_sent[k],
                mpi.stats().bytes_sent[k] - mpi0.bytes_sent[k])
          << nccl.name() << " bytes of " << collective_name(static_cast<CollectiveKind>(k));
  }
  std::unique_ptr<MpiCommunicator> world_;
  std::unique_ptr<NcclCommunicator> nccl_;
  int device_ = 0;
};

TEST_F(NcclVsMpi, WorldAndSplitGroupsAgree) {
  compare(*world_, *nccl_, 10);
  if (world_->size() % 2 == 0) {
    // Pairs of adjacent ranks, as the process grid makes SP and EP groups.
    auto mpi_pair = world_->split(world_->rank() / 2, world_->rank(), "pair");
    auto nccl_pair = nccl_->split(world_->rank() / 2, world_->rank(), "pair");
    ASSERT_EQ(nccl_pair->size(), 2);
    compare(*mpi_pair, *nccl_pair, 20);
  }
}

}  // namespace
}  // namespace linea::parallel
