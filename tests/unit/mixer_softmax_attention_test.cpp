// Softmax attention (the N layer): the mixer checks of tests/common/mixer_check.h that apply to a
// mixer with no state and no halo (chunked == reference, gradients == finite differences), and
// the LASP-2H decomposition done by hand with the module's split steps: a shard at a position
// offset attending to the gathered keys reproduces the whole sequence, forward and backward.
#include <gtest/gtest.h>

#include <string>

#include "common/mixer_check.h"
#include "core/modules/mixers/softmax_attention_mixer.h"

namespace linea::testing {
namespace {

struct Variant {
  std::string name;
  int num_kv_heads = 0;  // 0 = num_heads (MHA)
  bool qk_norm = false;
  int window = 0;
};

MixerCheck attention_check(const Variant& v) {
  MixerCheck c;
  c.cfg = mixer_test_config(config::MixerConfig::LINEAR_ATTENTION);
  auto* m = c.cfg.mutable_model();
  m->set_hidden_size(16);
  m->set_layer_pattern("N");
  auto* a = m->mutable_attention();
  a->set_num_heads(4);
  a->set_head_dim(4);
  a->set_num_kv_heads(v.num_kv_heads);
  a->set_qk_norm(v.qk_norm);
  a->set_window_size(v.window);
  return c;
}

SoftmaxAttention& as_attention(TokenMixer& m) {
  auto* a = dynamic_cast<SoftmaxAttention*>(&m);
  LINEA_CHECK(a != nullptr) << "layer 0 is not softmax attention";
  return *a;
}

class SoftmaxAttentionMixer : public ::testing::TestWithParam<Variant> {};

TEST_P(SoftmaxAttentionMixer, ChunkedMatchesReference) {
  expect_chunked_matches_recurrent(attention_check(GetParam()));
}

TEST_P(SoftmaxAttentionMixer, GradientsMatchFiniteDifferences) {
  expect_gradients_match_fd(attention_check(GetParam()));
}

// LASP-2H with W = 2 written out: each half projects its tokens at its global positions, both
// attend to the gathered K and V (the second with q_offset T/2), and the key/value gradients are
// summed over the halves for each half's own rows (the reduce-scatter).
TEST_P(SoftmaxAttentionMixer, SecondHalfWithOffsetAndGatheredKeysEqualsWhole) {
  const MixerCheck c = attention_check(GetParam());
  const int64_t D = c.cfg.model().hidden_size(), T = c.T, H = T / 2;
  auto whole = build_mixer(c, DType::kF64);
  auto first_m = build_mixer(c, DType::kF64);
  auto second_m = build_mixer(c, DType::kF64);
  SoftmaxAttention& first = as_attention(*first_m);
  SoftmaxAttention& second = as_attention(*second_m);
  Tensor x = random_tensor({c.B, T, D}, 8);
  Tensor w = random_tensor({c.B, T, D}, 9);

  Tensor y = whole->forward(x);
  first.set_position_offset(0);
  second.set_position_offset(H);
  SoftmaxAttention::Local l1 = first.project(kernels::slice_time(x, 0, H));
  SoftmaxAttention::Local l2 = second.project(kernels::slice_time(x, H, T));
  const Tensor k_all = kernels::concat_time(l1.k, l2.k), v_all = kernels::concat_time(l1.v, l2.v);
  Tensor y1 = first.output(first.attend(l1.q, k_all, v_all, /*keys_start=*/0));
  Tensor y2 = second.output(second.attend(l2.q, k_all, v_all, /*keys_start=*/0));
  EXPECT_LT(rel_diff(kernels::concat_time(y1, y2), y), 1e-10) << "outputs";

  ParameterList pw, p1, p2;
  whole->collect(pw);
  first.collect(p1);
  second.collect(p2);
  for (auto* l : {&pw, &p1, &p2})
    for (Parameter* p : *l) p->grad.zero_();
  Tensor dx = whole->backward(w);
  auto g1 = first.attend_backward(first.output_backward(kernels::slice_time(w, 0, H)));
  auto g2 = second.attend_backward(second.output_backward(kernels::slice_time(w, H, T)));
  auto shard_sum = [&](const Tensor& a, const Tensor& b, int64_t t0, int64_t t1) {
    Tensor s = kernels::slice_time(a, t0, t1);
    kernels::add_inplace(s, kernels::slice_time(b, t0, t1));
    return s;
  };
  Tensor dx1 =
      first.project_backward(g1.dq, shard_sum(g1.dk, g2.dk, 0, H), shard_sum(g1.dv, g2.dv, 0, H));
  Tensor dx2 =
      second.project_backward(g2.dq, shard_sum(g1.dk, g2.dk, H, T), shard_sum(g1.dv, g2.dv, H, T));
  EXPECT_LT(rel_diff(kernels::concat_time(dx1, dx2), dx), 1e-10) << "input gradient";
  ASSERT_EQ(p1.size(), pw.size());
  for (size_t i = 0; i < pw.size(); ++i) {
    Tensor sum = p1[i]->grad.clone();
    kernels::add_inplace(sum, p2[i]->grad);
    EXPECT_LT(rel_diff(sum, pw[i]->grad), 1e-10) << pw[i]->name;
  }
}

// RoPE turns q and k by the same global positions, so shifting a whole segment leaves its
// attention (which sees only relative positions) unchanged, while the rotated keys do change.
TEST_P(SoftmaxAttentionMixer, OffsetOfAWholeSegmentOnlyRotates) {
  const MixerCheck c = attention_check(GetParam());
  const int64_t D = c.cfg.model().hidden_size();
  auto at0 = build_mixer(c, DType::kF64);
  auto at37 = build_mixer(c, DType::kF64);
  as_attention(*at37).set_position_offset(37);
  Tensor x = random_tensor({c.B, c.T, D}, 10);
  EXPECT_LT(rel_diff(at37->forward(x), at0->forward(x)), 1e-10);
  const Tensor k0 = as_attention(*at0).project(x).k, k37 = as_attention(*at37).project(x).k;
  EXPECT_GT(max_abs_diff(k0, k37), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Variants, SoftmaxAttentionMixer,
                         ::testing::Values(Variant{"MHA"}, Variant{"GQA_kv1", 1},
                                           Variant{"GQA_kv2", 2}, Variant{"QkNorm", 0, true},
                                           Variant{"Window5", 0, false, 5},
                                           Variant{"GQA_kv2_QkNorm_Window5", 2, true, 5}),
                         [](const auto& info) { return info.param.name; });

TEST(SoftmaxAttentionMixer, HasNoStateAndNoHalo) {
  auto m = build_mixer(attention_check(Variant{"MHA"}), DType::kF64);
  EXPECT_EQ(m->num_states(), 0);
  EXPECT_EQ(m->halo_size(), 0);
  SegmentOut out;
  m->forward_segment(random_tensor({2, 8, 16}, 1), SegmentIn{}, &out);
  EXPECT_TRUE(out.final_states.empty());
  EXPECT_TRUE(out.transitions.empty());
  SegmentGradOut gout;
  m->backward_segment(random_tensor({2, 8, 16}, 2), SegmentGradIn{}, &gout);
  EXPECT_TRUE(gout.d_states.empty());
  EXPECT_FALSE(gout.d_halo.defined());
}

TEST(SoftmaxAttentionMixer, ParameterNamesAndShapes) {
  auto m = build_mixer(attention_check(Variant{"GQA_kv2_QkNorm", 2, true}), DType::kF32);
  ParameterList ps;
  m->collect(ps);
  std::vector<std::pair<std::string, Shape>> want = {
      {"mixer.q_proj.weight", {16, 16}}, {"mixer.k_proj.weight", {8, 16}},
      {"mixer.v_proj.weight", {8, 16}},  {"mixer.q_norm.weight", {4}},
      {"mixer.k_norm.weight", {4}},      {"mixer.o_proj.weight", {16, 16}}};
  ASSERT_EQ(ps.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(ps[i]->name, want[i].first);
    EXPECT_EQ(ps[i]->value.shape(), want[i].second) << want[i].first;
  }
  EXPECT_FALSE(ps[3]->weight_decay);
  EXPECT_FALSE(ps[4]->weight_decay);
}

TEST(SoftmaxAttentionMixer, KvHeadsMustDivideHeads) {
  MixerCheck c = attention_check(Variant{"bad", 3});
  try {
    build_mixer(c, DType::kF64);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.attention.num_kv_heads"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace linea::testing
