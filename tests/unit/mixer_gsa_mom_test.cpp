// Gated Slot Attention and Mixture-of-Memories: the mixer checks of tests/common/mixer_check.h,
// plus MoM's routing contract (a memory's state moves only with the tokens routed to it).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>

#include "common/mixer_check.h"

namespace linea::testing {
namespace {

using MC = config::MixerConfig;

config::Config gsa_config(bool short_conv) {
  config::Config cfg = mixer_test_config(MC::GSA);
  auto* m = cfg.mutable_model()->mutable_mixer();
  m->set_num_slots(5);
  if (short_conv) m->set_short_conv(MC::ON);
  return cfg;
}

TEST(GsaMixer, PassesMixerChecks) {
  MixerCheck c;
  c.cfg = gsa_config(false);
  expect_all_mixer_checks(c);
}

TEST(GsaMixer, WithShortConvAndNoOutputGatePassesMixerChecks) {
  MixerCheck c;
  c.cfg = gsa_config(true);
  c.cfg.mutable_model()->mutable_mixer()->set_output_gate(MC::OFF);
  expect_all_mixer_checks(c);
}

TEST(GsaMixer, StatesAreKeysAndValuesOfTheSlots) {
  MixerCheck c;
  c.cfg = gsa_config(false);
  auto m = build_mixer(c, DType::kF64);
  ASSERT_EQ(m->num_states(), 2);
  SegmentOut out;
  m->forward_segment(random_tensor({2, 8, 12}, 1), SegmentIn{}, &out);
  // [B, H, dk, m] = K~^T and [B, H, m, dv] = V~, hidden 12 over 2 heads, 5 slots.
  EXPECT_EQ(out.final_states[0].shape(), (Shape{2, 2, 6, 5}));
  EXPECT_EQ(out.final_states[1].shape(), (Shape{2, 2, 5, 6}));
  // Both decay with the slot gates alpha in (0, 1): log decays are negative.
  for (const Transition& t : out.transitions) {
    ASSERT_EQ(t.kind, Transition::Kind::kDiagonal);
    const Tensor& a = t.log_decay_k.defined() ? t.log_decay_k : t.log_decay_v;
    ASSERT_TRUE(a.defined());
    EXPECT_EQ(a.shape(), (Shape{2, 2, 5}));
    EXPECT_LT(max_abs(a), 1e9);
    for (int64_t i = 0; i < a.numel(); ++i) EXPECT_LT(a.item(i), 0.0);
  }
}

config::Config mom_config(MC::Kind memory_kind, bool shared) {
  config::Config cfg = mixer_test_config(MC::MOM);
  auto* m = cfg.mutable_model()->mutable_mixer();
  m->set_memory_kind(memory_kind);
  m->set_num_memories(3);
  m->set_memory_top_k(2);
  m->set_shared_memory(shared);
  return cfg;
}

// Router logits x Wr of the mixer `m` for input x [B, T, D] ([B*T, M] row-major).
std::vector<double> router_logits(TokenMixer& m, const Tensor& x) {
  ParameterList params;
  m.collect(params);
  const Parameter* gate = nullptr;
  for (Parameter* p : params)
    if (p->name == "mixer.gate.weight") gate = p;
  EXPECT_NE(gate, nullptr);
  const int64_t M = gate->value.dim(0), D = gate->value.dim(1), N = x.numel() / D;
  std::vector<double> l(N * M, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t d = 0; d < D; ++d)
        l[n * M + i] += gate->value.item(i * D + d) * x.item(n * D + d);
  return l;
}

// Memories chosen by each token (top-k of the logits) and the smallest gap between the k-th and
// the (k+1)-th logit over all tokens: the finite differences must not flip the choice.
std::vector<std::vector<int>> top_k(const std::vector<double>& l, int64_t M, int64_t K,
                                    double* min_gap) {
  std::vector<std::vector<int>> chosen;
  *min_gap = 1e300;
  for (size_t n = 0; n < l.size() / M; ++n) {
    std::vector<int> order(M);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int a, int b) { return l[n * M + a] > l[n * M + b]; });
    if (K < M) *min_gap = std::min(*min_gap, l[n * M + order[K - 1]] - l[n * M + order[K]]);
    chosen.emplace_back(order.begin(), order.begin() + K);
  }
  return chosen;
}

void expect_stable_routing(const MixerCheck& c) {
  auto m = build_mixer(c, DType::kF64);
  const auto& mix = c.cfg.model().mixer();
  for (uint64_t seed : {5, 6, 8}) {  // the inputs mixer_check.h draws
    double gap = 0;
    top_k(router_logits(*m, random_tensor({c.B, c.T, 12}, seed)), mix.num_memories(),
          mix.memory_top_k(), &gap);
    EXPECT_GT(gap, 1e-3) << "input seed " << seed << ": a finite-difference step could flip "
                         << "the top-k choice";
  }
}

struct MomCase {
  MC::Kind kind;
  bool shared;
  bool short_conv;
};

void PrintTo(const MomCase& c, std::ostream* os) {
  *os << MC::Kind_Name(c.kind) << (c.shared ? " + shared" : "") << (c.short_conv ? " + conv" : "");
}

class MomMixer : public ::testing::TestWithParam<MomCase> {};

TEST_P(MomMixer, PassesMixerChecks) {
  MixerCheck c;
  c.cfg = mom_config(GetParam().kind, GetParam().shared);
  if (!GetParam().short_conv) c.cfg.mutable_model()->mutable_mixer()->set_short_conv(MC::OFF);
  expect_stable_routing(c);
  expect_all_mixer_checks(c);
}

INSTANTIATE_TEST_SUITE_P(MemoryKinds, MomMixer,
                         ::testing::Values(MomCase{MC::GATED_DELTANET, true, true},
                                           MomCase{MC::GATED_DELTANET, false, true},
                                           MomCase{MC::GATED_DELTANET, true, false},
                                           MomCase{MC::LINEAR_ATTENTION, true, true},
                                           MomCase{MC::DELTANET, true, true},
                                           MomCase{MC::GLA, false, true},
                                           MomCase{MC::SIMPLE_GLA, true, true}),
                         [](const auto& info) {
                           return MC::Kind_Name(info.param.kind) +
                                  (info.param.shared ? "_shared" : "_unshared") +
                                  (info.param.short_conv ? "" : "_noconv");
                         });

// Run token by token (one-token segments, states and halo carried): after each token, exactly the
// memories it was routed to (and the shared one) have moved; every other memory's state is
// bit-for-bit the incoming one. The token-by-token outputs equal the whole sequence's.
TEST(MomMixerRouting, TokensNotRoutedLeaveTheMemoryUnchanged) {
  for (MC::Kind kind : {MC::GATED_DELTANET, MC::LINEAR_ATTENTION}) {
    MixerCheck c;
    c.cfg = mom_config(kind, true);
    c.cfg.mutable_model()->mutable_mixer()->set_num_memories(4);
    c.cfg.mutable_model()->mutable_mixer()->set_memory_top_k(1);
    const int64_t B = 2, T = 8, D = 12, M = 4;
    auto whole = build_mixer(c, DType::kF64);
    auto steps = build_mixer(c, DType::kF64);
    const Tensor x = random_tensor({B, T, D}, 12);
    double gap = 0;
    const auto chosen = top_k(router_logits(*steps, x), M, 1, &gap);

    SegmentOut probe;
    whole->forward_segment(x, SegmentIn{}, &probe);
    ASSERT_EQ(probe.final_states.size(), static_cast<size_t>(M + 1));
    SegmentIn in;
    in.states = random_states(*whole, probe, 3);
    const Tensor y = whole->forward_segment(x, in, nullptr);

    const int64_t halo = steps->halo_size();
    const Tensor x_pad = kernels::concat_time(Tensor::zeros({B, halo, D}, DType::kF64), x);
    Tensor y_steps;
    int untouched = 0;
    for (int64_t t = 0; t < T; ++t) {
      SegmentOut o;
      if (halo > 0) in.halo = kernels::slice_time(x_pad, t, t + halo);
      const Tensor yt = steps->forward_segment(kernels::slice_time(x, t, t + 1), in, &o);
      y_steps = y_steps.defined() ? kernels::concat_time(y_steps, yt) : yt;
      for (int64_t i = 0; i <= M; ++i)
        for (int64_t b = 0; b < B; ++b) {
          const double moved =
              max_abs_diff(o.final_states[i].slice(b, b + 1), in.states[i].slice(b, b + 1));
          const bool routed = i == M || chosen[b * T + t][0] == i;
          if (routed) {
            EXPECT_GT(moved, 0.0) << "memory " << i << " row " << b << " token " << t;
          } else {
            EXPECT_EQ(moved, 0.0) << "memory " << i << " row " << b << " token " << t;
            ++untouched;
          }
        }
      in.states = o.final_states;
    }
    EXPECT_EQ(untouched, B * T * (M - 1));
    EXPECT_LT(rel_diff(y_steps, y), 1e-10) << MC::Kind_Name(kind);
  }
}

TEST(MomMixerConfig, UnsupportedMemoryKindNamesTheField) {
  config::Config cfg = mom_config(MC::GSA, true);
  try {
    make_token_mixer(cfg, 0, "mixer", DType::kF64);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.mixer.memory_kind"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace linea::testing
