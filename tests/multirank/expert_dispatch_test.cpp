// Expert parallelism on W ranks: the EP groups of the process grid, token dispatch and combine
// across an EP group against what each rank computes locally from every rank's deterministic
// inputs, the adjointness of the backward partners, expert gradient reduction and the global
// gradient norm. Values are small integers, so f32 and f64 results are exact.
#include "parallel/expert_dispatch.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/modules/parameter.h"
#include "parallel/grad_sync.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_grid.h"

namespace linea::parallel {
namespace {

constexpr int kAR = static_cast<int>(CollectiveKind::kAllReduce);
constexpr int kA2A = static_cast<int>(CollectiveKind::kAllToAll);
constexpr int64_t kWidth = 3;

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

std::vector<double> gather_world_ranks(Communicator& group, int world_rank) {
  Tensor mine = Tensor::from_vector({1}, {static_cast<double>(world_rank)}, DType::kI64);
  Tensor all = Tensor::zeros({group.size()}, DType::kI64);
  group.all_gather(mine, all);
  return all.to_vector();
}

// The divisors of w: every EP size a world of w ranks allows.
std::vector<int> ep_sizes(int w) {
  std::vector<int> out;
  for (int p = 1; p <= w; ++p) {
    if (w % p == 0) out.push_back(p);
  }
  return out;
}

// ---- process grid -----------------------------------------------------------------------------

TEST(ExpertGrid, EpGroupsAreAdjacentAndExpertDpStrided) {
  auto world = MpiCommunicator::world();
  const int w = world->size(), r = world->rank();
  for (int ep : ep_sizes(w)) {
    for (GridShape shape : {GridShape{w, 1, ep}, GridShape{2, w / 2, ep}}) {
      SCOPED_TRACE("N " + std::to_string(w) + ", dp " + std::to_string(shape.dp) + ", sp " +
                   std::to_string(shape.sp) + ", ep " + std::to_string(ep));
      ProcessGrid grid(*world, shape);
      EXPECT_EQ(grid.ep().size(), ep);
      EXPECT_EQ(grid.expert_dp().size(), w / ep);
      EXPECT_EQ(grid.ep_rank(), r % ep);
      EXPECT_EQ(grid.ep().name(), "ep");
      EXPECT_EQ(grid.expert_dp().name(), "expert_dp");
      std::vector<double> ep_members, edp_members;
      for (int k = 0; k < ep; ++k) ep_members.push_back((r / ep) * ep + k);
      for (int k = 0; k < w / ep; ++k) edp_members.push_back(k * ep + r % ep);
      EXPECT_EQ(gather_world_ranks(grid.ep(), r), ep_members);
      EXPECT_EQ(gather_world_ranks(grid.expert_dp(), r), edp_members);
      // The DP x SP groups are unchanged by ep.
      EXPECT_EQ(grid.dp_sp().size(), w);
      EXPECT_EQ(grid.sp().size(), shape.sp);
    }
  }
  // The layouts the issue names, spelled out (the loop above covers them on 2 and 4 ranks).
  if (w == 4) {
    ProcessGrid two(*world, GridShape{4, 1, 2});
    const std::vector<std::vector<double>> ep_of = {{0, 1}, {0, 1}, {2, 3}, {2, 3}};
    const std::vector<std::vector<double>> edp_of = {{0, 2}, {1, 3}, {0, 2}, {1, 3}};
    EXPECT_EQ(gather_world_ranks(two.ep(), r), ep_of[r]);
    EXPECT_EQ(gather_world_ranks(two.expert_dp(), r), edp_of[r]);
    ProcessGrid four(*world, GridShape{4, 1, 4});
    EXPECT_EQ(gather_world_ranks(four.ep(), r), (std::vector<double>{0, 1, 2, 3}));
    EXPECT_EQ(gather_world_ranks(four.expert_dp(), r), (std::vector<double>{double(r)}));
  }
  if (w == 2) {
    ProcessGrid two(*world, GridShape{2, 1, 2});
    EXPECT_EQ(gather_world_ranks(two.ep(), r), (std::vector<double>{0, 1}));
    EXPECT_EQ(gather_world_ranks(two.expert_dp(), r), (std::vector<double>{double(r)}));
  }
}

TEST(ExpertGrid, EpNotDividingTheWorldIsAUserError) {
  auto world = MpiCommunicator::world();
  const int w = world->size();
  const std::string ranks = std::to_string(w) + " ranks)";
  expect_throws_with(
      [&] {
        ProcessGrid grid(*world, GridShape{w, 1, 3});
      },
      {"parallel.ep (3)", ranks, "hint:"});
  expect_throws_with([&] { ProcessGrid grid(*world, GridShape{w, 1, 0}); }, {"parallel.ep (0)"});
}

// ---- deterministic routing of every rank ------------------------------------------------------

// How the copies of rank s (its position in the EP group) are routed, by scenario:
//   0 uneven counts, some drops, some experts with no copies
//   1 position 0 has no copies at all, position 1 drops all of its copies
//   2 every copy goes to expert 0 (every other rank receives nothing)
std::vector<int32_t> routing(int scenario, int s, int num_experts) {
  std::vector<int32_t> e;
  if (scenario == 1) {
    if (s == 0) return e;
    const int n = 3 + s;
    for (int i = 0; i < n; ++i) e.push_back(s == 1 ? -1 : (i * 5 + s) % num_experts);
    return e;
  }
  const int n = 5 + 3 * s;
  for (int i = 0; i < n; ++i) {
    if (scenario == 2) {
      e.push_back(0);
    } else if ((i + s) % 4 == 3) {
      e.push_back(-1);
    } else {
      // Skips the last expert entirely when there are 3 or more.
      const int span = num_experts >= 3 ? num_experts - 1 : num_experts;
      e.push_back(static_cast<int32_t>((i * 7 + s * 3) % span));
    }
  }
  return e;
}

double row_value(int s, int64_t i, int64_t c) { return s * 1000.0 + i * 10.0 + c + 1; }

Tensor copies_of(int s, int64_t n, DType dtype) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < kWidth; ++c) v.push_back(row_value(s, i, c));
  }
  return Tensor::from_vector({n, kWidth}, v, dtype);
}

double dot(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  EXPECT_EQ(x.size(), y.size());
  double d = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) d += x[i] * y[i];
  return d;
}

struct DispatchCase {
  int ep;
  int num_experts;
  int scenario;
  DType dtype;
  std::string str() const {
    return "ep " + std::to_string(ep) + ", E " + std::to_string(num_experts) + ", scenario " +
           std::to_string(scenario) + ", " + dtype_name(dtype);
  }
};

std::vector<DispatchCase> dispatch_cases(int w) {
  std::vector<DispatchCase> out;
  for (int ep : ep_sizes(w)) {
    for (int e : {ep, 8}) {
      for (int scenario : {0, 1, 2}) {
        for (DType dt : {DType::kF64, DType::kF32}) out.push_back({ep, e, scenario, dt});
      }
    }
  }
  return out;
}

TEST(ExpertDispatch, EachRankReceivesExactlyTheRowsRoutedToItsExperts) {
  auto world = MpiCommunicator::world();
  const int w = world->size();
  for (const DispatchCase& k : dispatch_cases(w)) {
    SCOPED_TRACE(k.str());
    ProcessGrid grid(*world, GridShape{w, 1, k.ep});
    Communicator& ep = grid.ep();
    const int me = ep.rank(), p = ep.size();
    ExpertDispatcher d(ep, k.num_experts);
    const int local = k.num_experts / p;
    EXPECT_EQ(d.num_local_experts(), local);
    EXPECT_EQ(d.first_local_expert(), me * local);

    const std::vector<int32_t> mine = routing(k.scenario, me, k.num_experts);
    const int64_t n = static_cast<int64_t>(mine.size());
    d.prepare(mine);
    const uint64_t prepare_bytes = ep.stats().bytes_sent[kA2A];
    EXPECT_EQ(prepare_bytes, static_cast<uint64_t>((p - 1) * local * 8));
    const Tensor x = copies_of(me, n, k.dtype);
    const Tensor got = d.dispatch(x);

    // Expectation: for each local expert, each source position in order, its copies in order.
    std::vector<double> want;
    std::vector<int64_t> want_counts(static_cast<size_t>(local), 0);
    for (int l = 0; l < local; ++l) {
      const int e = me * local + l;
      for (int s = 0; s < p; ++s) {
        const std::vector<int32_t> route = routing(k.scenario, s, k.num_experts);
        for (size_t i = 0; i < route.size(); ++i) {
          if (route[i] != e) continue;
          ++want_counts[static_cast<size_t>(l)];
          for (int64_t c = 0; c < kWidth; ++c) want.push_back(row_value(s, int64_t(i), c));
        }
      }
    }
    ASSERT_EQ(got.shape(), (Shape{static_cast<int64_t>(want.size()) / kWidth, kWidth}));
    EXPECT_EQ(got.dtype(), k.dtype);
    EXPECT_EQ(got.to_vector(), want);
    EXPECT_EQ(d.local_expert_counts(), want_counts);
    EXPECT_EQ(d.num_received(), got.dim(0));

    // Bytes: the kept copies whose expert lives on another rank, one row each.
    int64_t remote = 0;
    for (int32_t e : mine) remote += e >= 0 && e / local != me;
    const uint64_t row = static_cast<uint64_t>(kWidth * dtype_size(k.dtype));
    EXPECT_EQ(ep.stats().bytes_sent[kA2A] - prepare_bytes, static_cast<uint64_t>(remote) * row);

    // combine(f(dispatch(x))) with f = multiply expert e's rows by e + 1: each copy comes back
    // to its own place scaled by its expert; dropped copies are zero.
    std::vector<double> scaled = got.to_vector();
    int64_t at = 0;
    for (int l = 0; l < local; ++l) {
      for (int64_t j = 0; j < d.local_expert_counts()[l] * kWidth; ++j) {
        scaled[static_cast<size_t>(at++)] *= me * local + l + 1;
      }
    }
    const uint64_t before_combine = ep.stats().bytes_sent[kA2A];
    const Tensor back = d.combine(Tensor::from_vector(got.shape(), scaled, k.dtype));
    ASSERT_EQ(back.shape(), x.shape());
    const Tensor identity = d.combine(got);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t e = mine[static_cast<size_t>(i)];
      for (int64_t c = 0; c < kWidth; ++c) {
        const double v = row_value(me, i, c);
        EXPECT_EQ(identity.item(i * kWidth + c), e >= 0 ? v : 0.0) << "copy " << i;
        EXPECT_EQ(back.item(i * kWidth + c), e >= 0 ? v * (e + 1) : 0.0) << "copy " << i;
      }
    }
    // Combine sends back what dispatch brought, so the same rows cross each link once more.
    int64_t returned = 0;
    for (int s = 0; s < p; ++s) {
      if (s != me) returned += d.recv_counts()[s];
    }
    EXPECT_EQ(ep.stats().bytes_sent[kA2A] - before_combine,
              2 * static_cast<uint64_t>(returned) * row);
    EXPECT_EQ(ep.stats().calls[kA2A], 4u);  // prepare, dispatch, combine twice
  }
}

TEST(ExpertDispatch, BackwardPartnersAreAdjoint) {
  auto world = MpiCommunicator::world();
  const int w = world->size();
  for (const DispatchCase& k : dispatch_cases(w)) {
    if (k.dtype != DType::kF64) continue;
    SCOPED_TRACE(k.str());
    ProcessGrid grid(*world, GridShape{w, 1, k.ep});
    Communicator& ep = grid.ep();
    const int me = ep.rank();
    ExpertDispatcher d(ep, k.num_experts);
    const std::vector<int32_t> mine = routing(k.scenario, me, k.num_experts);
    d.prepare(mine);
    const int64_t n = static_cast<int64_t>(mine.size()), m = d.num_received();
    const Tensor x = copies_of(me, n, DType::kF64);
    std::vector<double> yv;
    for (int64_t i = 0; i < m * kWidth; ++i) yv.push_back(double((i * 3 + me * 5) % 11) - 5);
    const Tensor y = Tensor::from_vector({m, kWidth}, yv, DType::kF64);

    // <dispatch(x), y> == <x, dispatch_backward(y)>, summed over the group.
    const double lhs = ep.all_reduce_scalar(dot(d.dispatch(x), y));
    const double rhs = ep.all_reduce_scalar(dot(x, d.dispatch_backward(y)));
    EXPECT_EQ(lhs, rhs);
    // <combine(y), x> == <y, combine_backward(x)>.
    const double lhs2 = ep.all_reduce_scalar(dot(d.combine(y), x));
    const double rhs2 = ep.all_reduce_scalar(dot(y, d.combine_backward(x)));
    EXPECT_EQ(lhs2, rhs2);
    // The split steps compose to the whole.
    EXPECT_EQ(d.unpack_dispatched(d.exchange_dispatch(d.pack_dispatch(x))).to_vector(),
              d.dispatch(x).to_vector());
    EXPECT_EQ(d.unpack_combined(d.exchange_combine(d.pack_combine(y))).to_vector(),
              d.combine(y).to_vector());
  }
}

TEST(ExpertDispatch, ExpertsNotDivisibleByEpIsAUserError) {
  auto world = MpiCommunicator::world();
  const int w = world->size();
  ProcessGrid grid(*world, GridShape{w, 1, w});
  expect_throws_with([&] { ExpertDispatcher d(grid.ep(), 2 * w + 1); },
                     {"num_experts = " + std::to_string(2 * w + 1), "parallel.ep", "hint:"});
}

// ---- gradients ------------------------------------------------------------------------------

Parameter expert_param(const std::string& name, double grad) {
  return Parameter{name, Tensor::zeros({1}, DType::kF64),
                   Tensor::from_vector({1}, {grad}, DType::kF64), true, ParamSharding::kExpert};
}

TEST(ExpertGradients, ReducedOverExpertDpAndEqualToTheGlobalBatchGradient) {
  // A toy MoE: copy i of rank s carries the scalar x and is routed to expert e; the loss is
  // sum_i w_e x_i / N over the global batch (N = every rank's kept copies). Each rank scales its
  // loss by W / N like the trainer does, dispatches, and accumulates dL/dw_e of its local experts
  // from the rows it received. After sync_gradients every holder must have the one-rank gradient.
  auto world = MpiCommunicator::world();
  const int w = world->size(), r = world->rank();
  const int num_experts = 8;
  for (int ep : ep_sizes(w)) {
    SCOPED_TRACE("ep " + std::to_string(ep));
    ProcessGrid grid(*world, GridShape{w, 1, ep});
    // Routing depends on the world rank, so EP groups see different tokens.
    auto route_of = [&](int rank) { return routing(0, rank, num_experts); };
    double n_total = 0;
    std::vector<double> want(num_experts, 0.0);
    for (int s = 0; s < w; ++s) {
      const std::vector<int32_t> route = route_of(s);
      for (size_t i = 0; i < route.size(); ++i) {
        if (route[i] < 0) continue;
        n_total += 1;
        want[static_cast<size_t>(route[i])] += row_value(s, int64_t(i), 0);
      }
    }
    for (double& v : want) v /= n_total;

    ExpertDispatcher d(grid.ep(), num_experts);
    const std::vector<int32_t> route = route_of(r);
    d.prepare(route);
    const Tensor got = d.dispatch(copies_of(r, static_cast<int64_t>(route.size()), DType::kF64));
    const double grad_scale = w / n_total;
    std::vector<Parameter> experts;
    int64_t row = 0;
    for (int l = 0; l < d.num_local_experts(); ++l) {
      double g = 0;
      for (int64_t j = 0; j < d.local_expert_counts()[l]; ++j, ++row) g += got.item(row * kWidth);
      experts.push_back(
          expert_param("experts." + std::to_string(d.first_local_expert() + l), grad_scale * g));
    }
    Parameter shared{"shared", Tensor::zeros({2}, DType::kF64),
                     Tensor::from_vector({2}, {1.0 + r, -2.0 * r}, DType::kF64), true,
                     ParamSharding::kReplicated};
    ParameterList params{&shared};
    for (Parameter& e : experts) params.push_back(&e);
    sync_gradients(params, grid);

    for (int l = 0; l < d.num_local_experts(); ++l) {
      EXPECT_NEAR(experts[l].grad.item(0), want[d.first_local_expert() + l], 1e-12)
          << experts[l].name;
    }
    double mean0 = 0, mean1 = 0;
    for (int s = 0; s < w; ++s) mean0 += (1.0 + s) / w, mean1 += -2.0 * s / w;
    EXPECT_NEAR(shared.grad.item(0), mean0, 1e-12);
    EXPECT_NEAR(shared.grad.item(1), mean1, 1e-12);

    // The norm counts each parameter once: the shared one (identical everywhere) plus every
    // expert of the model (one copy per EP position), as one rank holding all of them would.
    double sq = mean0 * mean0 + mean1 * mean1;
    for (double v : want) sq += v * v;
    EXPECT_NEAR(global_grad_norm(params, grid), std::sqrt(sq), 1e-12);
  }
}

TEST(ExpertGradients, ExpertDpSumDividedByDpSpSize) {
  auto world = MpiCommunicator::world();
  const int w = world->size(), r = world->rank();
  for (int ep : ep_sizes(w)) {
    SCOPED_TRACE("ep " + std::to_string(ep));
    ProcessGrid grid(*world, GridShape{2, w / 2, ep});
    const int q = r % ep, g = r / ep;
    Parameter e = expert_param("e", 10.0 * q + g + 1);
    Parameter f{"f", Tensor::zeros({2}, DType::kF32),
                Tensor::from_vector({2}, {1.0 * g, 2.0}, DType::kF32), true,
                ParamSharding::kExpert};
    Parameter rep{"rep", Tensor::zeros({1}, DType::kF64),
                  Tensor::from_vector({1}, {double(r)}, DType::kF64), true,
                  ParamSharding::kReplicated};
    reduce_expert_gradients({&e, &f, &rep}, grid);
    double sum_e = 0, sum_f = 0;
    for (int k = 0; k < w / ep; ++k) sum_e += 10.0 * q + k + 1, sum_f += k;
    EXPECT_DOUBLE_EQ(e.grad.item(0), sum_e / w);
    EXPECT_FLOAT_EQ(static_cast<float>(f.grad.item(0)), static_cast<float>(sum_f / w));
    EXPECT_FLOAT_EQ(static_cast<float>(f.grad.item(1)), static_cast<float>(2.0 * (w / ep) / w));
    EXPECT_EQ(rep.grad.item(0), r);  // replicated parameters are not touched
    // One all-reduce per dtype over expert_dp (f32, f64); none over dp_sp.
    EXPECT_EQ(grid.expert_dp().stats().calls[kAR], 2u);
    EXPECT_EQ(grid.dp_sp().stats().calls[kAR], 0u);

    // The norm of these (no longer reduced) values: rep counted once, experts summed over the
    // EP group.
    double sq = double(r) * r;
    const double f0 = static_cast<float>(sum_f / w), f1 = static_cast<float>(2.0 * (w / ep) / w);
    for (int k = 0; k < ep; ++k) {
      double ek = 0;  // e's reduced gradient on EP position k
      for (int gg = 0; gg < w / ep; ++gg) ek += 10.0 * k + gg + 1;
      ek /= w;
      sq += ek * ek + f0 * f0 + f1 * f1;
    }
    EXPECT_NEAR(global_grad_norm({&e, &f, &rep}, grid), std::sqrt(sq), 1e-6);
  }
}

}  // namespace
}  // namespace linea::parallel
