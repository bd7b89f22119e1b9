// Expert and sequence parallelism of the MoE layer on W ranks: for every EP size P > 1 dividing W,
// the layer with its experts spread over the P ranks of an EP group gives, on every rank and its
// own tokens, the same outputs, aux and z losses, input gradients and replicated gradients (router,
// shared experts, shared gate) as the layer holding every expert (EP = 1), and each expert's
// gradient on its owner equals the sum over the EP group of the EP = 1 gradients of that expert.
// f64, 1e-12. Routers: softmax top-k (renormalised, shared experts with the Qwen2 gate, capacity
// dropping on) and sigmoid with a non-zero aux-loss-free bias.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/gradcheck.h"
#include "core/modules/moe/moe_layer.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_grid.h"

namespace linea {
namespace {

using testing::max_abs_diff;
using testing::random_tensor;

constexpr int64_t kD = 6;
constexpr int64_t kTokens = 13;  // per rank; odd so that expert blocks are uneven
constexpr double kTol = 1e-12;

config::MoeConfig softmax_config() {
  config::MoeConfig c;
  c.set_num_experts(8);
  c.set_top_k(3);
  c.set_expert_intermediate_size(5);
  c.set_router(config::MoeConfig::SOFTMAX_TOPK);
  c.set_renormalize(true);
  c.set_num_shared_experts(1);
  c.set_shared_intermediate_size(4);
  c.set_shared_expert_gate(true);
  c.set_aux_loss_coeff(0.1);
  c.set_z_loss_coeff(0.05);
  c.set_capacity_factor(1.0);
  return c;
}

config::MoeConfig sigmoid_config() {
  config::MoeConfig c = softmax_config();
  c.set_router(config::MoeConfig::SIGMOID_BIAS);
  c.set_capacity_factor(0);
  c.set_num_shared_experts(0);
  c.set_shared_expert_gate(false);
  c.set_routed_scaling(2.0);
  return c;
}

std::map<std::string, Parameter*> by_name(MoeLayer& layer) {
  ParameterList ps;
  layer.collect(ps);
  std::map<std::string, Parameter*> m;
  for (Parameter* p : ps) m[p->name] = p;
  return m;
}

// max_abs_diff (tests/common/gradcheck.h) of two tensors that must have one size.
double diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  return a.numel() == b.numel() ? max_abs_diff(a, b) : 1e300;
}

void expect_ep_matches_replicated(const config::MoeConfig& cfg, int ep) {
  auto world = parallel::MpiCommunicator::world();
  const int w = world->size(), rank = world->rank();
  parallel::ProcessGrid grid(*world, {w, 1, ep});
  SCOPED_TRACE("router " + config::MoeConfig::Router_Name(cfg.router()) + ", ep " +
               std::to_string(ep) + ", rank " + std::to_string(rank));

  MoeLayer full("layers.0.mlp", kD, cfg, DType::kF64);
  MoeLayer spread("layers.0.mlp", kD, cfg, DType::kF64, &grid.ep());
  full.init(7, 0.4, 0.3);
  spread.init(7, 0.4, 0.3);
  ASSERT_EQ(spread.num_local_experts(), cfg.num_experts() / ep);
  ASSERT_EQ(spread.first_local_expert(), grid.ep_rank() * cfg.num_experts() / ep);
  if (cfg.router() == config::MoeConfig::SIGMOID_BIAS) {
    // A bias that changes the choice: identical on every rank, as after real updates.
    for (int e = 0; e < cfg.num_experts(); ++e) {
      full.router().bias()[e] = 0.3 * ((e * 5) % 3 - 1);
      spread.router().bias()[e] = full.router().bias()[e];
    }
  }

  // Each rank its own tokens (and its own output gradient).
  const Tensor x = random_tensor({kTokens, kD}, 11 + 1000 * rank);
  const Tensor dy = random_tensor({kTokens, kD}, 12 + 1000 * rank);
  const Tensor y_full = full.forward(x);
  const Tensor y_spread = spread.forward(x);
  EXPECT_LT(diff(y_full, y_spread), kTol) << "outputs";
  EXPECT_NEAR(full.stats().aux_loss, spread.stats().aux_loss, kTol);
  EXPECT_NEAR(full.stats().z_loss, spread.stats().z_loss, kTol);
  EXPECT_EQ(full.stats().dropped, spread.stats().dropped);
  EXPECT_EQ(full.stats().load, spread.stats().load);
  if (cfg.capacity_factor() > 0) {
    // The test must exercise dropping somewhere in the world.
    const double dropped = world->all_reduce_scalar(static_cast<double>(full.stats().dropped));
    EXPECT_GT(dropped, 0) << "capacity_factor 1.0 dropped nothing; make the test stricter";
  }

  const Tensor dx_full = full.backward(dy);
  const Tensor dx_spread = spread.backward(dy);
  EXPECT_LT(diff(dx_full, dx_spread), kTol) << "input gradients";

  auto pf = by_name(full), ps = by_name(spread);
  for (auto& [name, p] : pf) {
    if (p->sharding == ParamSharding::kReplicated) {
      ASSERT_TRUE(ps.count(name)) << name;
      EXPECT_LT(diff(p->grad, ps.at(name)->grad), kTol) << name;
      continue;
    }
    // Expert parameter: the EP = 1 gradients summed over the EP group land on the owner.
    Tensor sum = p->grad.clone();
    grid.ep().all_reduce(sum);
    if (ps.count(name)) {
      EXPECT_LT(diff(sum, ps.at(name)->grad), kTol) << name;
      EXPECT_LT(diff(p->value, ps.at(name)->value), 1e-15) << name << " init";
    }
  }
  // This rank holds exactly its block of experts (3 matrices each), plus the replicated ones.
  size_t expert_params = 0;
  for (auto& [name, p] : ps) expert_params += p->sharding == ParamSharding::kExpert;
  EXPECT_EQ(expert_params, static_cast<size_t>(3 * spread.num_local_experts()));
}

// A micro-batch split over a sequence group (each rank holds a block of its tokens): every rank
// reports the aux and z losses of the whole micro-batch, and the gradients summed over the ranks
// equal those of one layer holding all tokens whose losses are counted once per rank (the trainer's
// mean over ranks, docs/moe.md). Experts spread too (EP = W), so both groups act at once.
// Dropless: the capacity is per rank's tokens (docs/moe.md), so it would differ by design.
void expect_sequence_split_matches_whole(config::MoeConfig cfg) {
  cfg.set_capacity_factor(0);
  auto world = parallel::MpiCommunicator::world();
  const int w = world->size(), rank = world->rank();
  parallel::ProcessGrid grid(*world, {1, w, w});
  SCOPED_TRACE("router " + config::MoeConfig::Router_Name(cfg.router()));
  MoeLayer whole("layers.0.mlp", kD, cfg, DType::kF64);
  MoeLayer shard("layers.0.mlp", kD, cfg, DType::kF64, &grid.ep(), &grid.sp());
  whole.init(5, 0.4, 0.3);
  shard.init(5, 0.4, 0.3);
  const int64_t n = kTokens * w;
  const Tensor x = random_tensor({n, kD}, 21), dy = random_tensor({n, kD}, 22);
  const Tensor y = whole.forward(x);
  whole.set_aux_grad_scale(w);
  const Tensor dx = whole.backward(dy);

  const Tensor xs = x.slice(rank * kTokens, (rank + 1) * kTokens).clone();
  const Tensor ys = shard.forward(xs);
  EXPECT_LT(diff(ys, y.slice(rank * kTokens, (rank + 1) * kTokens)), kTol) << "outputs";
  EXPECT_NEAR(shard.stats().aux_loss, whole.stats().aux_loss, kTol);
  EXPECT_NEAR(shard.stats().z_loss, whole.stats().z_loss, kTol);
  EXPECT_GT(whole.stats().aux_loss, 0);
  const Tensor dxs = shard.backward(dy.slice(rank * kTokens, (rank + 1) * kTokens).clone());
  EXPECT_LT(diff(dxs, dx.slice(rank * kTokens, (rank + 1) * kTokens)), kTol) << "dx";

  auto pw = by_name(whole), ps = by_name(shard);
  for (auto& [name, p] : pw) {
    if (p->sharding == ParamSharding::kReplicated) {
      Tensor sum = ps.at(name)->grad.clone();
      grid.world().all_reduce(sum);
      EXPECT_LT(diff(sum, p->grad), kTol) << name;
    } else if (ps.count(name)) {  // the owner already holds every rank's rows
      EXPECT_LT(diff(ps.at(name)->grad, p->grad), kTol) << name;
    }
  }
}

TEST(MoeExpertParallel, SequenceSplitLossesEqualWholeMicroBatch) {
  expect_sequence_split_matches_whole(softmax_config());
  config::MoeConfig sig = sigmoid_config();
  sig.set_num_shared_experts(1);
  expect_sequence_split_matches_whole(sig);
}

std::vector<int> ep_sizes(int w) {
  std::vector<int> out;
  for (int p = 2; p <= w; ++p)
    if (w % p == 0) out.push_back(p);
  return out;
}

TEST(MoeExpertParallel, SoftmaxRouterEpEqualsReplicated) {
  auto world = parallel::MpiCommunicator::world();
  for (int ep : ep_sizes(world->size())) expect_ep_matches_replicated(softmax_config(), ep);
}

TEST(MoeExpertParallel, SigmoidRouterEpEqualsReplicated) {
  auto world = parallel::MpiCommunicator::world();
  for (int ep : ep_sizes(world->size())) expect_ep_matches_replicated(sigmoid_config(), ep);
}

}  // namespace
}  // namespace linea
