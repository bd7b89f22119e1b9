// The one-rank communicator and a one-rank process grid: what every single-process run uses, so it
// must behave (and fail) like the real backends.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "parallel/communicator.h"
#include "parallel/grad_sync.h"
#include "parallel/process_grid.h"

namespace linea::parallel {
namespace {

bool throws_with(const std::function<void()>& fn, const std::string& part) {
  try {
    fn();
  } catch (const Error& e) {
    return std::string(e.what()).find(part) != std::string::npos;
  }
  return false;
}

TEST(SelfCommunicator, CollectivesAreCopies) {
  SelfCommunicator self("solo");
  EXPECT_EQ(self.rank(), 0);
  EXPECT_EQ(self.size(), 1);
  EXPECT_EQ(self.name(), "solo");

  Tensor in = Tensor::from_vector({2, 2}, {1, 2, 3, 4}, DType::kF32);
  Tensor out = Tensor::zeros({4}, DType::kF32);
  self.all_gather(in, out);
  EXPECT_EQ(out.to_vector(), in.to_vector());
  Tensor rs = Tensor::zeros({2, 2}, DType::kF32);
  self.reduce_scatter(out, rs, ReduceOp::kSum);
  EXPECT_EQ(rs.to_vector(), in.to_vector());
  self.all_reduce(rs, ReduceOp::kMax);
  EXPECT_EQ(rs.to_vector(), in.to_vector());
  self.all_gather(rs, rs);  // in place is a no-op
  EXPECT_EQ(rs.to_vector(), in.to_vector());

  Tensor a2a = Tensor::zeros({2, 2}, DType::kF32);
  self.all_to_all_v(in, {2}, a2a, {2});
  EXPECT_EQ(a2a.to_vector(), in.to_vector());
  Tensor none = Tensor::zeros({0, 2}, DType::kF32);
  self.all_to_all_v(none, {0}, none, {0});

  Tensor b = Tensor::from_vector({1}, {5}, DType::kBF16);
  self.broadcast(b, 0);
  EXPECT_EQ(b.item(0), 5.0);
  self.barrier();
  EXPECT_EQ(self.all_reduce_scalar(2.5), 2.5);
  // A group of one sends nothing, so it counts nothing.
  for (int k = 0; k < static_cast<int>(CollectiveKind::kCount); ++k) {
    EXPECT_EQ(self.stats().bytes_sent[k], 0u);
  }
}

TEST(SelfCommunicator, FailsLikeTheRealBackends) {
  SelfCommunicator self;
  Tensor t = Tensor::zeros({3}, DType::kF32);
  Tensor bf = Tensor::zeros({3}, DType::kBF16);
  Tensor f64 = Tensor::zeros({3}, DType::kF64);
  Tensor big = Tensor::zeros({4}, DType::kF32);
  EXPECT_TRUE(throws_with([&] { self.all_reduce(bf, ReduceOp::kSum); }, "bf16"));
  EXPECT_TRUE(throws_with([&] { self.all_gather(t, big); }, "all_gather on group 'self'"));
  EXPECT_TRUE(throws_with([&] { self.all_gather(t, f64); }, "f64"));
  EXPECT_TRUE(throws_with([&] { self.reduce_scatter(big, t, ReduceOp::kSum); }, "reduce_scatter"));
  EXPECT_TRUE(throws_with([&] { self.all_to_all_v(t, {2}, t, {3}); }, "sum to 2 rows"));
  EXPECT_TRUE(throws_with([&] { self.all_to_all_v(t, {3, 0}, t, {3}); }, "one count per rank"));
  EXPECT_TRUE(throws_with([&] { self.send(t, 0, 0); }, "is this rank"));
  EXPECT_TRUE(throws_with([&] { self.recv(t, 0, 0); }, "is this rank"));
  EXPECT_TRUE(throws_with([&] { self.send(t, 1, 0); }, "not a rank"));
  EXPECT_TRUE(throws_with([&] { self.broadcast(t, 1); }, "root 1"));
}

TEST(SelfCommunicator, SplitGivesAnotherSelf) {
  SelfCommunicator self;
  auto part = self.split(3, 0, "part");
  ASSERT_TRUE(part);
  EXPECT_EQ(part->name(), "part");
  EXPECT_EQ(part->size(), 1);
  EXPECT_EQ(self.split(-1, 0, "none"), nullptr);
}

TEST(SelfCommunicatorGrid, OneRankGridHasOneRankGroups) {
  SelfCommunicator world("world");
  ProcessGrid grid(world, GridShape{1, 1});
  EXPECT_EQ(grid.dp().size(), 1);
  EXPECT_EQ(grid.sp().size(), 1);
  EXPECT_EQ(grid.dp_sp().size(), 1);
  EXPECT_EQ(grid.dp_rank(), 0);
  EXPECT_EQ(grid.sp_rank(), 0);
  EXPECT_EQ(grid.dp().name(), "dp");
  EXPECT_EQ(grid.sp().name(), "sp");
  EXPECT_EQ(grid.dp_sp().name(), "dp_sp");

  Parameter p{"w", Tensor::zeros({2}, DType::kF32),
              Tensor::from_vector({2}, {1.5, -2}, DType::kF32)};
  average_replicated_gradients({&p}, grid);
  EXPECT_EQ(p.grad.to_vector(), (std::vector<double>{1.5, -2}));
}

TEST(SelfCommunicatorGrid, ShapeLargerThanTheWorldNamesTheFields) {
  SelfCommunicator world("world");
  try {
    ProcessGrid grid(world, GridShape{2, 1});
    FAIL() << "expected linea::Error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("parallel.dp (2)"), std::string::npos) << what;
    EXPECT_NE(what.find("parallel.sp (1)"), std::string::npos) << what;
    EXPECT_NE(what.find("(1 ranks)"), std::string::npos) << what;
    EXPECT_NE(what.find("hint:"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace linea::parallel
