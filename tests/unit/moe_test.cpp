// MoE channel mixer in f64: routers and the layer against a dense per-token reference (a loop over
// tokens and their chosen experts), every gradient (router, experts, shared experts, shared gate,
// input; aux and z losses included) against finite differences, capacity dropping, and the
// aux-loss-free bias evening out a skewed load.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "common/gradcheck.h"
#include "core/modules/moe/moe_layer.h"

namespace linea {
namespace {

constexpr int64_t D = 6;

config::MoeConfig softmax_config() {
  config::MoeConfig c;
  c.set_num_experts(4);
  c.set_top_k(2);
  c.set_expert_intermediate_size(5);
  c.set_router(config::MoeConfig::SOFTMAX_TOPK);
  c.set_renormalize(true);
  c.set_num_shared_experts(1);
  c.set_shared_intermediate_size(3);
  c.set_shared_expert_gate(true);
  c.set_aux_loss_coeff(0.1);
  c.set_z_loss_coeff(0.05);
  return c;
}

config::MoeConfig sigmoid_config() {
  config::MoeConfig c = softmax_config();
  c.set_router(config::MoeConfig::SIGMOID_BIAS);
  c.set_num_shared_experts(2);
  c.set_shared_expert_gate(false);
  c.set_routed_scaling(2.5);
  return c;
}

std::map<std::string, Parameter*> by_name(MoeLayer& layer) {
  ParameterList ps;
  layer.collect(ps);
  std::map<std::string, Parameter*> m;
  for (Parameter* p : ps) m[p->name] = p;
  return m;
}

// y = W_down (silu(W_gate x) * (W_up x)) for one token, straight loops.
std::vector<double> swiglu_ref(std::map<std::string, Parameter*>& p, const std::string& prefix,
                               const std::vector<double>& x) {
  const Tensor& wg = p.at(prefix + ".gate_proj.weight")->value;
  const Tensor& wu = p.at(prefix + ".up_proj.weight")->value;
  const Tensor& wd = p.at(prefix + ".down_proj.weight")->value;
  const int64_t F = wg.dim(0);
  std::vector<double> h(F), y(D, 0.0);
  for (int64_t f = 0; f < F; ++f) {
    double g = 0, u = 0;
    for (int64_t d = 0; d < D; ++d) {
      g += wg.item(f * D + d) * x[d];
      u += wu.item(f * D + d) * x[d];
    }
    h[f] = g / (1 + std::exp(-g)) * u;
  }
  for (int64_t d = 0; d < D; ++d)
    for (int64_t f = 0; f < F; ++f) y[d] += wd.item(d * F + f) * h[f];
  return y;
}

// The whole layer for each token separately.
Tensor moe_reference(MoeLayer& layer, const config::MoeConfig& c, const Tensor& x) {
  auto p = by_name(layer);
  const int64_t N = x.dim(0), E = c.num_experts(), k = c.top_k();
  const bool sig = c.router() == config::MoeConfig::SIGMOID_BIAS;
  Tensor y = Tensor::zeros({N, D}, DType::kF64);
  for (int64_t t = 0; t < N; ++t) {
    std::vector<double> xt(D);
    for (int64_t d = 0; d < D; ++d) xt[d] = x.item(t * D + d);
    std::vector<double> z(E, 0.0), s(E), key(E);
    for (int64_t e = 0; e < E; ++e)
      for (int64_t d = 0; d < D; ++d)
        z[e] += p.at("mlp.gate.weight")->value.item(e * D + d) * xt[d];
    double zmax = *std::max_element(z.begin(), z.end()), sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(z[e] - zmax);
    for (int64_t e = 0; e < E; ++e) {
      s[e] = sig ? 1 / (1 + std::exp(-z[e])) : std::exp(z[e] - zmax) / sum;
      key[e] = s[e] + (sig ? layer.router().bias()[e] : 0.0);
    }
    std::vector<int> idx(E);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return key[a] > key[b]; });
    double chosen = 0;
    for (int j = 0; j < k; ++j) chosen += s[idx[j]];
    for (int j = 0; j < k; ++j) {
      const double w = c.routed_scaling() * s[idx[j]] / (sig || c.renormalize() ? chosen : 1.0);
      auto ye = swiglu_ref(p, "mlp.experts." + std::to_string(idx[j]), xt);
      for (int64_t d = 0; d < D; ++d) y.set_item(t * D + d, y.item(t * D + d) + w * ye[d]);
    }
    if (c.num_shared_experts() > 0) {
      double g = 1;
      if (c.shared_expert_gate()) {
        double l = 0;
        for (int64_t d = 0; d < D; ++d)
          l += p.at("mlp.shared_expert_gate.weight")->value.item(d) * xt[d];
        g = 1 / (1 + std::exp(-l));
      }
      auto ys = swiglu_ref(p, "mlp.shared_experts", xt);
      for (int64_t d = 0; d < D; ++d) y.set_item(t * D + d, y.item(t * D + d) + g * ys[d]);
    }
  }
  return y;
}

void check_against_reference_and_fd(const config::MoeConfig& c) {
  MoeLayer layer("mlp", D, c, DType::kF64);
  layer.init(3, 0.5, 0.5);
  if (c.router() == config::MoeConfig::SIGMOID_BIAS) layer.router().bias() = {0.05, -0.1, 0.0, 0.2};
  const int64_t N = 10;
  Tensor x = testing::random_tensor({N, D}, 11);
  Tensor w = testing::random_tensor({N, D}, 12);
  const double aux_scale = 0.7;
  layer.set_aux_grad_scale(aux_scale);

  Tensor y = layer.forward(x);
  EXPECT_LT(testing::max_abs_diff(y, moe_reference(layer, c, x)), 1e-12);
  EXPECT_GT(layer.stats().aux_loss, 0.0);
  EXPECT_GT(layer.stats().z_loss, 0.0);
  EXPECT_EQ(layer.stats().dropped, 0);

  auto loss = [&] {
    Tensor out = layer.forward(x);
    return testing::dot(out, w) + aux_scale * (layer.stats().aux_loss + layer.stats().z_loss);
  };
  ParameterList ps;
  layer.collect(ps);
  for (Parameter* p : ps) p->grad.zero_();
  layer.forward(x);
  Tensor dx = layer.backward(w);
  std::vector<Tensor> analytic;
  for (Parameter* p : ps) analytic.push_back(p->grad.clone());
  EXPECT_LT(testing::gradcheck(x, dx, loss), 1e-7) << "input";
  for (size_t i = 0; i < ps.size(); ++i)
    EXPECT_LT(testing::gradcheck(ps[i]->value, analytic[i], loss), 1e-7) << ps[i]->name;
}

TEST(Moe, SoftmaxTopKMatchesDenseReferenceAndFiniteDifferences) {
  check_against_reference_and_fd(softmax_config());
}

TEST(Moe, SoftmaxTopKWithoutRenormalisation) {
  config::MoeConfig c = softmax_config();
  c.set_renormalize(false);
  c.set_top_k(3);
  check_against_reference_and_fd(c);
}

TEST(Moe, SigmoidBiasMatchesDenseReferenceAndFiniteDifferences) {
  check_against_reference_and_fd(sigmoid_config());
}

TEST(Moe, ParameterNamesAndSharding) {
  MoeLayer layer("layers.2.mlp", D, softmax_config(), DType::kF32);
  ParameterList ps;
  layer.collect(ps);
  std::map<std::string, Parameter*> m;
  for (Parameter* p : ps) m[p->name] = p;
  ASSERT_TRUE(m.count("layers.2.mlp.gate.weight"));
  EXPECT_EQ(m["layers.2.mlp.gate.weight"]->value.shape(), (Shape{4, D}));
  ASSERT_TRUE(m.count("layers.2.mlp.experts.3.down_proj.weight"));
  EXPECT_EQ(m["layers.2.mlp.experts.3.down_proj.weight"]->value.shape(), (Shape{D, 5}));
  EXPECT_EQ(m["layers.2.mlp.experts.0.gate_proj.weight"]->sharding, ParamSharding::kExpert);
  EXPECT_TRUE(m["layers.2.mlp.experts.0.gate_proj.weight"]->weight_decay);
  EXPECT_EQ(m["layers.2.mlp.gate.weight"]->sharding, ParamSharding::kReplicated);
  EXPECT_EQ(m["layers.2.mlp.shared_experts.up_proj.weight"]->value.shape(), (Shape{3, D}));
  EXPECT_EQ(m["layers.2.mlp.shared_expert_gate.weight"]->value.shape(), (Shape{1, D}));
  EXPECT_EQ(ps.size(), 1u + 4 * 3 + 3 + 1);
}

// Only the aux and z losses (no output gradient): their gradients by finite differences.
TEST(Moe, AuxAndZLossGradients) {
  for (auto router : {config::MoeConfig::SOFTMAX_TOPK, config::MoeConfig::SIGMOID_BIAS}) {
    config::MoeConfig c = softmax_config();
    c.set_router(router);
    c.set_aux_loss_coeff(0.3);
    c.set_z_loss_coeff(0.2);
    Router r("gate", D, c, DType::kF64);
    r.init(5, 0.8);
    Tensor x = testing::random_tensor({12, D}, 6);
    r.weight().grad.zero_();
    r.forward(x);
    Tensor dx = r.backward(std::vector<double>(12 * 2, 0.0), 1.0);
    Tensor dw = r.weight().grad.clone();
    auto loss = [&] {
      r.forward(x);
      return r.aux_loss() + r.z_loss();
    };
    EXPECT_LT(testing::gradcheck(x, dx, loss), 1e-8);
    EXPECT_LT(testing::gradcheck(r.weight().value, dw, loss), 1e-8);
    // The aux loss is coeff * E * sum f_e P_e with f and P both summing to 1: at least coeff
    // when balanced... and it is not constant in the logits.
    EXPECT_GT(testing::max_abs(dw), 1e-4);
  }
}

// Every token prefers expert 0; with capacity_factor 1 expert 0 keeps its first
// ceil(1 * 8 * 1 / 4) = 2 tokens, the later 6 are dropped and their outputs are zero.
TEST(Moe, CapacityDropsLaterTokensFirst) {
  config::MoeConfig c = softmax_config();
  c.set_top_k(1);
  c.set_num_shared_experts(0);
  c.set_shared_expert_gate(false);
  c.set_capacity_factor(1.0);
  MoeLayer layer("mlp", D, c, DType::kF64);
  layer.init(1, 0.5, 0.5);
  Parameter& gate = layer.router().weight();
  gate.value.zero_();
  for (int64_t d = 0; d < D; ++d) gate.value.set_item(d, 1.0);  // expert 0 row
  Tensor x = testing::random_tensor({8, D}, 2);
  for (int64_t i = 0; i < x.numel(); ++i) x.set_item(i, std::abs(x.item(i)) + 0.1);
  Tensor y = layer.forward(x);
  EXPECT_EQ(expert_capacity(1.0, 8, 1, 4), 2);
  EXPECT_EQ(layer.stats().dropped, 6);
  EXPECT_EQ(layer.stats().load, (std::vector<int64_t>{8, 0, 0, 0}));
  const DispatchPlan& plan = layer.plan();
  EXPECT_EQ(plan.rows(), 2);
  EXPECT_EQ(plan.row_copy, (std::vector<int64_t>{0, 1}));
  for (int64_t t = 0; t < 8; ++t) {
    double norm = 0;
    for (int64_t d = 0; d < D; ++d) norm += std::abs(y.item(t * D + d));
    if (t < 2)
      EXPECT_GT(norm, 0.0) << "token " << t;
    else
      EXPECT_EQ(norm, 0.0) << "token " << t;
  }
  // Dropless for comparison: nothing dropped, every token has an output.
  c.set_capacity_factor(0);
  MoeLayer dropless("mlp", D, c, DType::kF64);
  dropless.init(1, 0.5, 0.5);
  dropless.router().weight().value.copy_from(gate.value);
  dropless.forward(x);
  EXPECT_EQ(dropless.stats().dropped, 0);
  EXPECT_EQ(dropless.plan().rows(), 8);
}

TEST(Moe, PermutationIsStableAndInverts) {
  // 5 tokens, top-2: copies (t, j) -> experts.
  std::vector<int32_t> e = {2, 0, 1, 2, 2, 0, 0, 1, 2, 1};
  DispatchPlan p = plan_dispatch(e, 5, 2, 3, -1);
  EXPECT_EQ(p.offsets, (std::vector<int64_t>{0, 3, 6, 10}));
  EXPECT_EQ(p.row_copy, (std::vector<int64_t>{1, 5, 6, 2, 7, 9, 0, 3, 4, 8}));
  for (int64_t c = 0; c < 10; ++c) EXPECT_EQ(p.row_copy[p.copy_row[c]], c);
  DispatchPlan capped = plan_dispatch(e, 5, 2, 3, 2);
  EXPECT_EQ(capped.dropped, 4);  // expert 0: copy 6, expert 1: copy 9, expert 2: copies 4, 8
  EXPECT_EQ(capped.copy_row[6], -1);
  EXPECT_EQ(capped.copy_row[4], -1);
  EXPECT_EQ(capped.copy_row[8], -1);
  EXPECT_EQ(capped.copy_row[9], -1);
  EXPECT_EQ(capped.offsets, (std::vector<int64_t>{0, 2, 4, 6}));
}

// DeepSeek-V3's aux-loss-free balancing: on inputs that all favour expert 0, bias updates from
// the load lower expert 0's bias and the load evens out.
TEST(Moe, SigmoidBiasUpdatesEvenOutTheLoad) {
  config::MoeConfig c = sigmoid_config();
  c.set_top_k(1);
  c.set_bias_update_rate(0.01);
  Router r("gate", D, c, DType::kF64);
  r.init(4, 0.3);
  for (int64_t d = 0; d < D; ++d) r.weight().value.set_item(d, 1.0);  // favours expert 0
  Tensor x = testing::random_tensor({64, D}, 9);
  for (int64_t i = 0; i < x.numel(); ++i) x.set_item(i, std::abs(x.item(i)) * 0.5);
  auto max_over_mean = [&] {
    r.forward(x);
    const auto& l = r.load();
    return *std::max_element(l.begin(), l.end()) * 4.0 / 64.0;
  };
  const double before = max_over_mean();
  EXPECT_GT(before, 3.0);  // nearly everything on expert 0
  double best = before;
  for (int step = 0; step < 300; ++step) {
    r.forward(x);
    std::vector<double> load(r.load().begin(), r.load().end());
    r.update_bias(load);
    best = std::min(best, max_over_mean());
  }
  const double after = max_over_mean();
  EXPECT_LT(r.bias()[0], 0.0);
  EXPECT_LT(after, 1.6) << "load max/mean after updates (before: " << before << ")";
  EXPECT_LT(best, before);
  // The router's gradient-carrying weights are untouched by the bias: the softmax router ignores
  // it.
  config::MoeConfig soft = c;
  soft.set_router(config::MoeConfig::SOFTMAX_TOPK);
  Router rs("gate", D, soft, DType::kF64);
  rs.update_bias({10, 0, 0, 0});
  EXPECT_EQ(rs.bias(), (std::vector<double>(4, 0.0)));
}

}  // namespace
}  // namespace linea
