// Every collective of MpiCommunicator on W ranks against values each rank computes locally, the
// byte counters against the rule in parallel/communicator.h, the process grid's groups, and
// gradient averaging. Values are small integers so every dtype (f32 included) is exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/modules/parameter.h"
#include "parallel/grad_sync.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_grid.h"

namespace linea::parallel {
namespace {

constexpr int kAR = static_cast<int>(CollectiveKind::kAllReduce);
constexpr int kAG = static_cast<int>(CollectiveKind::kAllGather);
constexpr int kRS = static_cast<int>(CollectiveKind::kReduceScatter);
constexpr int kA2A = static_cast<int>(CollectiveKind::kAllToAll);
constexpr int kSR = static_cast<int>(CollectiveKind::kSendRecv);
constexpr int kBC = static_cast<int>(CollectiveKind::kBroadcast);

// Signed, rank- and index-dependent, so sum, max and min all differ.
double value(int rank, int64_t i) {
  return static_cast<double>((rank + 1) * (i + 1) * ((rank + i) % 2 ? -1 : 1));
}

Tensor ranked_tensor(const Shape& shape, int rank, DType dtype) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = value(rank, static_cast<int64_t>(i));
  return Tensor::from_vector(shape, v, dtype);
}

// The all_reduce byte rule, written out for the sizes the tests use so that a mistake in the
// formula is not mirrored here.
uint64_t expected_all_reduce_bytes(uint64_t nbytes, int w) {
  if (w == 2 && nbytes == 24) return 24;  // 2 * 1 * 24 / 2
  if (w == 4 && nbytes == 24) return 36;  // 2 * 3 * 24 / 4
  return 2 * static_cast<uint64_t>(w - 1) * nbytes / static_cast<uint64_t>(w);
}

template <typename E>
void expect_throws_with(E&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected linea::Error";
  } catch (const Error& e) {
    for (const std::string& p : parts) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "'" << p << "' missing from: " << e.what();
    }
  }
}

class MpiCollective : public ::testing::TestWithParam<DType> {
 protected:
  std::unique_ptr<MpiCommunicator> world_ = MpiCommunicator::world();
  int w_ = world_->size();
  int r_ = world_->rank();
};

TEST_P(MpiCollective, AllReduceSumMaxMin) {
  const DType dt = GetParam();
  const Shape shape{2, 3};
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
    Tensor t = ranked_tensor(shape, r_, dt);
    world_->all_reduce(t, op);
    for (int64_t i = 0; i < t.numel(); ++i) {
      double want = value(0, i);
      for (int s = 1; s < w_; ++s) {
        const double v = value(s, i);
        want = op == ReduceOp::kSum   ? want + v
               : op == ReduceOp::kMax ? std::max(want, v)
                                      : std::min(want, v);
      }
      EXPECT_EQ(t.item(i), want) << "element " << i;
    }
  }
  const uint64_t nbytes = 6 * dtype_size(dt);
  EXPECT_EQ(world_->stats().calls[kAR], 3u);
  EXPECT_EQ(world_->stats().bytes_sent[kAR], 3 * expected_all_reduce_bytes(nbytes, w_));
}

TEST_P(MpiCollective, AllGatherConcatenatesInRankOrder) {
  const DType dt = GetParam();
  Tensor in = ranked_tensor({2, 3}, r_, dt);
  Tensor out = Tensor::zeros({2 * w_, 3}, dt);
  world_->all_gather(in, out);
  for (int s = 0; s < w_; ++s) {
    for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(out.item(s * 6 + i), value(s, i));
  }
  EXPECT_EQ(world_->stats().calls[kAG], 1u);
  EXPECT_EQ(world_->stats().bytes_sent[kAG], in.nbytes() * (w_ - 1));
}

TEST_P(MpiCollective, ReduceScatterSumsThisRanksBlock) {
  const DType dt = GetParam();
  Tensor in = ranked_tensor({2 * w_, 3}, r_, dt);
  Tensor out = Tensor::zeros({2, 3}, dt);
  world_->reduce_scatter(in, out, ReduceOp::kSum);
  for (int64_t i = 0; i < 6; ++i) {
    double want = 0;
    for (int s = 0; s < w_; ++s) want += value(s, r_ * 6 + i);
    EXPECT_EQ(out.item(i), want);
  }
  EXPECT_EQ(world_->stats().bytes_sent[kRS], out.nbytes() * (w_ - 1));
}

// The backward partner (STYLE.md 6): for every x (one block a rank) and y (W blocks a rank),
// sum_ranks <all_gather(x), y> == sum_ranks <x, reduce_scatter(y)>.
TEST_P(MpiCollective, ReduceScatterIsTheAdjointOfAllGather) {
  const DType dt = GetParam();
  Tensor x = ranked_tensor({4}, r_, dt);
  Tensor y = ranked_tensor({4 * w_}, r_ + 7, dt);
  Tensor gx = Tensor::zeros({4 * w_}, dt);
  Tensor ry = Tensor::zeros({4}, dt);
  world_->all_gather(x, gx);
  world_->reduce_scatter(y, ry, ReduceOp::kSum);
  double lhs = 0, rhs = 0;
  for (int64_t i = 0; i < gx.numel(); ++i) lhs += gx.item(i) * y.item(i);
  for (int64_t i = 0; i < x.numel(); ++i) rhs += x.item(i) * ry.item(i);
  EXPECT_EQ(world_->all_reduce_scalar(lhs), world_->all_reduce_scalar(rhs));
}

// Rows from rank s to rank d: count(s, d), zero for some pairs and for all of rank 0's sends (an
// input with no rows at all).
int64_t a2a_count(int s, int d) { return s == 0 ? 0 : (s + 2 * d + 1) % 3; }
double a2a_value(int s, int d, int64_t k, int64_t col) {
  return (col ? -1.0 : 1.0) * static_cast<double>(100 * s + 10 * d + k);
}

TEST_P(MpiCollective, AllToAllVUnevenCountsAndItsInverse) {
  const DType dt = GetParam();
  std::vector<int64_t> send(w_), recv(w_);
  for (int d = 0; d < w_; ++d) send[d] = a2a_count(r_, d);
  for (int s = 0; s < w_; ++s) recv[s] = a2a_count(s, r_);
  int64_t n_send = 0, n_recv = 0;
  for (int i = 0; i < w_; ++i) n_send += send[i], n_recv += recv[i];

  Tensor in = Tensor::zeros({n_send, 2}, dt);
  int64_t row = 0;
  for (int d = 0; d < w_; ++d) {
    for (int64_t k = 0; k < send[d]; ++k, ++row) {
      for (int64_t c = 0; c < 2; ++c) in.set_item(row * 2 + c, a2a_value(r_, d, k, c));
    }
  }
  Tensor out = Tensor::zeros({n_recv, 2}, dt);
  world_->all_to_all_v(in, send, out, recv);
  row = 0;
  for (int s = 0; s < w_; ++s) {
    for (int64_t k = 0; k < recv[s]; ++k, ++row) {
      for (int64_t c = 0; c < 2; ++c) {
        EXPECT_EQ(out.item(row * 2 + c), a2a_value(s, r_, k, c)) << "from " << s << " row " << k;
      }
    }
  }

  // The inverse: counts swapped brings every row home.
  Tensor back = Tensor::zeros({n_send, 2}, dt);
  world_->all_to_all_v(out, recv, back, send);
  EXPECT_EQ(back.to_vector(), in.to_vector());

  uint64_t rows_out = 0;
  for (int i = 0; i < w_; ++i) {
    if (i != r_) rows_out += send[i] + recv[i];
  }
  EXPECT_EQ(world_->stats().calls[kA2A], 2u);
  EXPECT_EQ(world_->stats().bytes_sent[kA2A], rows_out * 2 * dtype_size(dt));
}

TEST_P(MpiCollective, SendRecvRing) {
  const DType dt = GetParam();
  const int next = (r_ + 1) % w_, prev = (r_ + w_ - 1) % w_;
  Tensor mine = ranked_tensor({5}, r_, dt);
  Tensor got = Tensor::zeros({5}, dt);
  // Alternating order keeps blocking sends from waiting on each other around the ring.
  if (r_ % 2 == 0) {
    world_->send(mine, next, 3);
    world_->recv(got, prev, 3);
  } else {
    world_->recv(got, prev, 3);
    world_->send(mine, next, 3);
  }
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(got.item(i), value(prev, i));
  EXPECT_EQ(world_->stats().calls[kSR], 2u);
  EXPECT_EQ(world_->stats().bytes_sent[kSR], mine.nbytes());
}

TEST_P(MpiCollective, BroadcastFromTheLastRank) {
  const DType dt = GetParam();
  const int root = w_ - 1;
  Tensor t = r_ == root ? ranked_tensor({7}, root, dt) : Tensor::zeros({7}, dt);
  world_->broadcast(t, root);
  for (int64_t i = 0; i < 7; ++i) EXPECT_EQ(t.item(i), value(root, i));
  EXPECT_EQ(world_->stats().bytes_sent[kBC], r_ == root ? t.nbytes() * (w_ - 1) : 0u);
  EXPECT_EQ(world_->stats().calls[kBC], 1u);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, MpiCollective,
                         ::testing::Values(DType::kF32, DType::kF64, DType::kI32, DType::kI64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(MpiCommunicator, Bf16MovesAsRawBytesButIsNotReduced) {
  auto world = MpiCommunicator::world();
  const int w = world->size(), r = world->rank();
  Tensor in = Tensor::from_vector({2}, {r + 0.5, -r - 0.25}, DType::kBF16);
  Tensor out = Tensor::zeros({2 * w}, DType::kBF16);
  world->all_gather(in, out);
  for (int s = 0; s < w; ++s) {
    EXPECT_EQ(out.item(2 * s), s + 0.5);
    EXPECT_EQ(out.item(2 * s + 1), -s - 0.25);
  }
  expect_throws_with([&] { world->all_reduce(out, ReduceOp::kSum); }, {"all_reduce", "bf16"});
  Tensor small = Tensor::zeros({2}, DType::kBF16);
  expect_throws_with([&] { world->reduce_scatter(out, small, ReduceOp::kSum); },
                     {"reduce_scatter", "bf16"});
}

TEST(MpiCommunicator, AllGatherInPlaceFromOwnBlock) {
  auto world = MpiCommunicator::world();
  const int w = world->size(), r = world->rank();
  Tensor out = Tensor::zeros({3 * w}, DType::kF32);
  Tensor mine = out.slice(3 * r, 3 * r + 3);
  for (int64_t i = 0; i < 3; ++i) mine.set_item(i, value(r, i));
  world->all_gather(mine, out);
  for (int s = 0; s < w; ++s) {
    for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(out.item(3 * s + i), value(s, i));
  }
}

TEST(MpiCommunicator, AllReduceScalar) {
  auto world = MpiCommunicator::world();
  const int w = world->size(), r = world->rank();
  EXPECT_EQ(world->all_reduce_scalar(r + 1.0), w * (w + 1) / 2.0);
  EXPECT_EQ(world->all_reduce_scalar(r, ReduceOp::kMax), w - 1.0);
  EXPECT_EQ(world->all_reduce_scalar(r, ReduceOp::kMin), 0.0);
  EXPECT_EQ(world->stats().calls[kAR], 3u);
  world->stats().reset();
  EXPECT_EQ(world->stats().calls[kAR], 0u);
}

TEST(MpiCommunicator, BadArgumentsAreClearErrors) {
  auto world = MpiCommunicator::world();
  const int w = world->size(), r = world->rank();
  Tensor in = Tensor::zeros({2, 3}, DType::kF32);
  Tensor wrong = Tensor::zeros({2 * w + 1, 3}, DType::kF32);
  expect_throws_with([&] { world->all_gather(in, wrong); },
                     {"all_gather on group 'world'", "[2, 3]"});
  Tensor other = Tensor::zeros({2 * w, 3}, DType::kF64);
  expect_throws_with([&] { world->all_gather(in, other); }, {"f32", "f64"});
  Tensor five = Tensor::zeros({5}, DType::kF32);  // no W divides 6 into blocks of 5
  expect_throws_with([&] { world->reduce_scatter(in, five, ReduceOp::kSum); }, {"reduce_scatter"});
  std::vector<int64_t> short_counts(w - 1, 0);
  std::vector<int64_t> counts(w, 0);
  counts[0] = 2;
  expect_throws_with([&] { world->all_to_all_v(in, short_counts, in, counts); },
                     {"one count per rank"});
  counts[0] = 1;
  Tensor out = Tensor::zeros({1, 3}, DType::kF32);
  expect_throws_with([&] { world->all_to_all_v(in, counts, out, counts); }, {"sum to 1 rows"});
  expect_throws_with([&] { world->send(in, r, 0); }, {"is this rank"});
  expect_throws_with([&] { world->recv(in, w, 0); }, {"not a rank"});
  expect_throws_with([&] { world->broadcast(in, -1); }, {"root -1"});
  EXPECT_EQ(world->stats().calls, (CommStats{}.calls));  // nothing reached MPI
}

// MPI_CHECK turns a failing call into a linea::Error naming the call, the place and the rank. The
// failing call is one MPI rejects locally: after a communication error MPI's state is undefined,
// so a test must not go on from one.
TEST(MpiCommunicator, MpiCheckNamesTheCallAndTheRank) {
  auto world = MpiCommunicator::world();
  int ignored = 0;
  expect_throws_with([&] { MPI_CHECK(MPI_Comm_rank(MPI_COMM_NULL, &ignored)); },
                     {"MPI_Comm_rank(MPI_COMM_NULL, &ignored)",
                      "communicator_test.cpp:", "on rank " + std::to_string(world->rank())});
}

// A message shorter than the buffer is legal MPI, so recv checks the length itself.
TEST(MpiCommunicator, RecvOfAShortMessageIsAnError) {
  auto world = MpiCommunicator::world();
  const int r = world->rank();
  if (r == 0) {
    world->send(Tensor::zeros({3}, DType::kF32), 1, 12);
  } else if (r == 1) {
    Tensor t = Tensor::zeros({4}, DType::kF32);
    expect_throws_with([&] { world->recv(t, 0, 12); }, {"from rank 0", "expected 4", "had 3"});
  }
  world->barrier();
}

TEST(MpiCommunicator, SplitByParityAndNoGroup) {
  auto world = MpiCommunicator::world();
  const int w = world->size(), r = world->rank();
  auto parity = world->split(r % 2, r, "parity");
  ASSERT_TRUE(parity);
  EXPECT_EQ(parity->name(), "parity");
  EXPECT_EQ(parity->size(), (w + 1 - r % 2) / 2);
  EXPECT_EQ(parity->rank(), r / 2);
  EXPECT_EQ(parity->all_reduce_scalar(1.0), parity->size());
  // Reversed keys reverse the ranks.
  auto reversed = world->split(0, w - r, "reversed");
  EXPECT_EQ(reversed->rank(), w - 1 - r);
  auto evens = world->split(r % 2 ? -1 : 0, r, "evens");
  EXPECT_EQ(evens == nullptr, r % 2 == 1);
}

// ---- process grid ---------------------------------------------------------------------------

std::vector<double> gather_world_ranks(Communicator& group, int world_rank) {
  Tensor mine = Tensor::from_vector({1}, {static_cast<double>(world_rank)}, DType::kI64);
  Tensor all = Tensor::zeros({group.size()}, DType::kI64);
  group.all_gather(mine, all);
  return all.to_vector();
}

TEST(ProcessGrid, GroupsFollowTheLayout) {
  auto world = MpiCommunicator::world();
  const int w = world->size(), r = world->rank();
  for (GridShape shape : {GridShape{w, 1}, GridShape{1, w}, GridShape{2, w / 2}}) {
    SCOPED_TRACE("dp " + std::to_string(shape.dp) + " x sp " + std::to_string(shape.sp));
    ProcessGrid grid(*world, shape);
    const int dp_index = r / shape.sp, sp_index = r % shape.sp;
    EXPECT_EQ(&grid.world(), world.get());
    EXPECT_EQ(grid.dp().size(), shape.dp);
    EXPECT_EQ(grid.sp().size(), shape.sp);
    EXPECT_EQ(grid.dp_sp().size(), w);
    EXPECT_EQ(grid.dp_rank(), dp_index);
    EXPECT_EQ(grid.sp_rank(), sp_index);
    EXPECT_EQ(grid.dp_sp().rank(), r);
    EXPECT_EQ(grid.dp().name(), "dp");
    EXPECT_EQ(grid.sp().name(), "sp");
    EXPECT_EQ(grid.dp_sp().name(), "dp_sp");
    std::vector<double> dp_members, sp_members, all;
    for (int k = 0; k < shape.dp; ++k) dp_members.push_back(k * shape.sp + sp_index);
    for (int k = 0; k < shape.sp; ++k) sp_members.push_back(dp_index * shape.sp + k);
    for (int k = 0; k < w; ++k) all.push_back(k);
    EXPECT_EQ(gather_world_ranks(grid.dp(), r), dp_members);
    EXPECT_EQ(gather_world_ranks(grid.sp(), r), sp_members);
    EXPECT_EQ(gather_world_ranks(grid.dp_sp(), r), all);
    // Groups count their own traffic; the world saw none of it.
    EXPECT_EQ(grid.sp().stats().calls[kAG], 1u);
    EXPECT_EQ(world->stats().calls[kAG], 0u);
  }
}

TEST(ProcessGrid, ShapeNotMatchingTheWorldIsAUserError) {
  auto world = MpiCommunicator::world();
  const int w = world->size();
  const std::string ranks = "world size (" + std::to_string(w) + " ranks)";
  expect_throws_with(
      [&] {
        ProcessGrid grid(*world, GridShape{w, 2});
      },
      {"parallel.dp (" + std::to_string(w) + ")", "parallel.sp (2)", ranks, "hint:"});
  expect_throws_with(
      [&] {
        ProcessGrid grid(*world, GridShape{0, w});
      },
      {"parallel.dp (0)", ranks});
}

TEST(GradSync, AveragesReplicatedGradientsOverDpSp) {
  auto world = MpiCommunicator::world();
  const int w = world->size(), r = world->rank();
  ProcessGrid grid(*world, GridShape{2, w / 2});
  auto param = [](const char* name, Tensor grad, ParamSharding sharding) {
    return Parameter{name, Tensor::zeros(grad.shape(), grad.dtype()), grad, true, sharding};
  };
  Parameter a = param("a", ranked_tensor({2, 3}, r, DType::kF32), ParamSharding::kReplicated);
  Parameter b = param("b", ranked_tensor({4}, r, DType::kF64), ParamSharding::kReplicated);
  Parameter c = param("c", Tensor::from_vector({2}, {r + 1.0, -(r + 1.0)}, DType::kBF16),
                      ParamSharding::kReplicated);
  Parameter e = param("e", ranked_tensor({3}, r, DType::kF32), ParamSharding::kExpert);
  Parameter a2 = param("a2", ranked_tensor({2}, r + 3, DType::kF32), ParamSharding::kReplicated);
  average_replicated_gradients({&a, &b, &c, &e, &a2}, grid);

  auto mean = [&](int offset, int64_t i) {
    double s = 0;
    for (int k = 0; k < w; ++k) s += value(k + offset, i);
    return s / w;
  };
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(a.grad.item(i), mean(0, i));
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(b.grad.item(i), mean(0, i));
  for (int64_t i = 0; i < 2; ++i) EXPECT_EQ(a2.grad.item(i), mean(3, i));
  EXPECT_EQ(c.grad.item(0), (w + 1) / 2.0);
  EXPECT_EQ(c.grad.item(1), -(w + 1) / 2.0);
  for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(e.grad.item(i), value(r, i));  // not replicated

  // One all-reduce per dtype: f32 (a, a2: 8 floats), f64 (b: 4), bf16 reduced in f32 (c: 2).
  const CommStats& st = grid.dp_sp().stats();
  EXPECT_EQ(st.calls[kAR], 3u);
  auto rule = [&](uint64_t n) { return 2 * static_cast<uint64_t>(w - 1) * n / w; };
  EXPECT_EQ(st.bytes_sent[kAR], rule(8 * 4) + rule(4 * 8) + rule(2 * 4));
}

TEST(GradSync, MissingGradientIsAnError) {
  auto world = MpiCommunicator::world();
  ProcessGrid grid(*world, GridShape{world->size(), 1});
  Parameter p{"blocks.0.w", Tensor::zeros({2}, DType::kF32), Tensor(), true,
              ParamSharding::kReplicated};
  expect_throws_with([&] { average_replicated_gradients({&p}, grid); }, {"blocks.0.w"});
}

}  // namespace
}  // namespace linea::parallel
