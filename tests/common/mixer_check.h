// Checks every token mixer must pass (issue: mixers chunked, exact, selectable). Given a config and
// a layer, the harness builds the layer's mixer with large random weights and checks, in f64:
//   1. chunked forward == recurrent reference forward (and in f32 within a looser tolerance);
//   2. the chunked backward == central finite differences of the recurrent forward, for the input,
//      every parameter, the incoming states and the halo, with L = sum(y w) + sum_i sum(S_i w_i);
//   3. two halves run as segments (states and halo carried) == the whole sequence, forward and
//      backward (input and parameter gradients);
//   4. the transitions exported by the halves, composed with their zero-state final states, give
//      the whole sequence's final states from a random incoming state.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "common/gradcheck.h"
#include "core/config/config.h"
#include "core/modules/mixers/token_mixer.h"
#include "kernels/elementwise.h"
#include "kernels/sequence.h"

namespace linea::testing {

struct MixerCheck {
  config::Config cfg;
  int layer = 0;
  int64_t B = 2, T = 16;
  double init_std = 0.3;
  double fd_tol = 1e-6;  // relative error of the finite-difference checks
  double fd_step = 1e-6;
  int64_t fd_checks = 40;  // elements checked per tensor
  double tol64 = 1e-10;    // chunked vs recurrent, f64 (relative to max |y|)
  double tol32 = 1e-4;     // the same in f32
};

inline std::unique_ptr<TokenMixer> build_mixer(const MixerCheck& c, DType dt) {
  auto m = make_token_mixer(c.cfg, c.layer, "mixer", dt);
  m->init(11, c.init_std, c.init_std);
  return m;
}

inline std::vector<Tensor> random_states(const TokenMixer& m, const SegmentOut& shapes,
                                         uint64_t seed) {
  std::vector<Tensor> s;
  for (size_t i = 0; i < shapes.final_states.size(); ++i)
    s.push_back(random_tensor(shapes.final_states[i].shape(), seed + i,
                              shapes.final_states[i].dtype(), 0.5));
  return s;
}

inline double rel_diff(const Tensor& a, const Tensor& b) {
  return max_abs_diff(a, b) / std::max(1.0, max_abs(b));
}

// 1. chunked == recurrent, f64 and f32.
inline void expect_chunked_matches_recurrent(const MixerCheck& c) {
  const int64_t D = c.cfg.model().hidden_size();
  for (DType dt : {DType::kF64, DType::kF32}) {
    auto m = build_mixer(c, dt);
    Tensor x = random_tensor({c.B, c.T, D}, 5, dt);
    Tensor y = m->forward(x);
    m->set_recurrent_reference(true);
    Tensor y_ref = m->forward(x);
    EXPECT_LT(rel_diff(y, y_ref), dt == DType::kF64 ? c.tol64 : c.tol32) << dtype_name(dt);
  }
}

// 2. chunked backward vs finite differences of the recurrent forward.
inline void expect_gradients_match_fd(const MixerCheck& c) {
  const int64_t D = c.cfg.model().hidden_size();
  auto m = build_mixer(c, DType::kF64);
  Tensor x = random_tensor({c.B, c.T, D}, 6);
  SegmentOut probe;
  m->forward_segment(x, SegmentIn{}, &probe);
  SegmentIn in;
  in.states = random_states(*m, probe, 40);
  if (m->halo_size() > 0) in.halo = random_tensor({c.B, m->halo_size(), D}, 41);
  Tensor w = random_tensor({c.B, c.T, D}, 7);
  std::vector<Tensor> ws = random_states(*m, probe, 60);

  auto loss = [&] {
    m->set_recurrent_reference(true);
    SegmentOut out;
    Tensor y = m->forward_segment(x, in, &out);
    m->set_recurrent_reference(false);
    double l = dot(y, w);
    for (size_t i = 0; i < ws.size(); ++i) l += dot(out.final_states[i], ws[i]);
    return l;
  };
  ParameterList params;
  m->collect(params);
  for (Parameter* p : params) p->grad.zero_();
  SegmentOut out;
  m->forward_segment(x, in, &out);
  SegmentGradIn gin;
  gin.d_final_states = ws;
  SegmentGradOut gout;
  Tensor dx = m->backward_segment(w, gin, &gout);

  EXPECT_LT(gradcheck(x, dx, loss, c.fd_step, c.fd_checks), c.fd_tol) << "input";
  for (Parameter* p : params) {
    Tensor g = p->grad.clone();
    EXPECT_LT(gradcheck(p->value, g, loss, c.fd_step, c.fd_checks), c.fd_tol) << p->name;
  }
  ASSERT_EQ(gout.d_states.size(), in.states.size());
  for (size_t i = 0; i < in.states.size(); ++i)
    EXPECT_LT(gradcheck(in.states[i], gout.d_states[i], loss, c.fd_step, c.fd_checks), c.fd_tol)
        << "incoming state " << i;
  if (in.halo.defined()) {
    EXPECT_LT(gradcheck(in.halo, gout.d_halo, loss, c.fd_step, c.fd_checks), c.fd_tol) << "halo";
  }
}

// 3 and 4. Two halves as segments == the whole sequence; transitions compose.
inline void expect_segments_compose(const MixerCheck& c) {
  const int64_t D = c.cfg.model().hidden_size(), H = c.T / 2;
  auto whole = build_mixer(c, DType::kF64);
  auto first = build_mixer(c, DType::kF64);
  auto second = build_mixer(c, DType::kF64);
  Tensor x = random_tensor({c.B, c.T, D}, 8);
  Tensor w = random_tensor({c.B, c.T, D}, 9);
  Tensor x1 = kernels::slice_time(x, 0, H), x2 = kernels::slice_time(x, H, c.T);

  SegmentOut o_whole, o1, o2;
  Tensor y = whole->forward_segment(x, SegmentIn{}, &o_whole);
  Tensor y1 = first->forward_segment(x1, SegmentIn{}, &o1);
  SegmentIn in2;
  in2.states = o1.final_states;
  const int64_t halo = second->halo_size();
  if (halo > 0) in2.halo = kernels::slice_time(x1, H - halo, H);
  Tensor y2 = second->forward_segment(x2, in2, &o2);
  EXPECT_LT(rel_diff(kernels::concat_time(y1, y2), y), 1e-10) << "outputs";
  ASSERT_EQ(o2.final_states.size(), o_whole.final_states.size());
  for (size_t i = 0; i < o2.final_states.size(); ++i)
    EXPECT_LT(rel_diff(o2.final_states[i], o_whole.final_states[i]), 1e-10) << "state " << i;

  // Backward: the second half first; its incoming-state gradients feed the first half.
  ParameterList pw, p1, p2;
  whole->collect(pw);
  first->collect(p1);
  second->collect(p2);
  for (auto* l : {&pw, &p1, &p2})
    for (Parameter* p : *l) p->grad.zero_();
  Tensor dx = whole->backward(w);
  SegmentGradOut g2;
  Tensor dx2 = second->backward_segment(kernels::slice_time(w, H, c.T), SegmentGradIn{}, &g2);
  SegmentGradIn gin1;
  gin1.d_final_states = g2.d_states;
  Tensor dx1 = first->backward_segment(kernels::slice_time(w, 0, H), gin1, nullptr);
  if (halo > 0) {
    Tensor tail = kernels::slice_time(dx1, H - halo, H);
    kernels::add_inplace(tail, g2.d_halo);
    dx1 = kernels::concat_time(kernels::slice_time(dx1, 0, H - halo), tail);
  }
  EXPECT_LT(rel_diff(kernels::concat_time(dx1, dx2), dx), 1e-10) << "input gradient";
  for (size_t i = 0; i < pw.size(); ++i) {
    Tensor sum = p1[i]->grad.clone();
    kernels::add_inplace(sum, p2[i]->grad);
    EXPECT_LT(rel_diff(sum, pw[i]->grad), 1e-10) << pw[i]->name;
  }

  // Transitions: from a random S0, whole = A2(A1(S0) + B1) + B2 with B_i from zero states.
  if (o_whole.final_states.empty()) return;
  auto from_s0 = build_mixer(c, DType::kF64);
  SegmentIn in0;
  in0.states = random_states(*from_s0, o_whole, 70);
  SegmentOut o_s0;
  from_s0->forward_segment(x, in0, &o_s0);
  auto seg2_zero = build_mixer(c, DType::kF64);
  SegmentIn in2_zero;  // zero state, same halo: B2
  in2_zero.halo = in2.halo;
  SegmentOut o2_zero;
  seg2_zero->forward_segment(x2, in2_zero, &o2_zero);
  for (size_t i = 0; i < o_s0.final_states.size(); ++i) {
    Tensor s = transition_apply(o1.transitions[i], in0.states[i]);
    kernels::add_inplace(s, o1.final_states[i]);
    s = transition_apply(o2_zero.transitions[i], s);
    kernels::add_inplace(s, o2_zero.final_states[i]);
    EXPECT_LT(rel_diff(s, o_s0.final_states[i]), 1e-10) << "composed state " << i;
    Transition both = transition_compose(o1.transitions[i], o2_zero.transitions[i]);
    Tensor s2 = transition_apply(both, in0.states[i]);
    Tensor s_direct = transition_apply(o_whole.transitions[i], in0.states[i]);
    EXPECT_LT(rel_diff(s2, s_direct), 1e-10) << "composed transition " << i;
  }
}

inline void expect_all_mixer_checks(const MixerCheck& c) {
  expect_chunked_matches_recurrent(c);
  expect_gradients_match_fd(c);
  expect_segments_compose(c);
}

// A small config whose layer 0 is the given linear mixer.
inline config::Config mixer_test_config(config::MixerConfig::Kind kind) {
  config::Config cfg = load_config({}, {});
  auto* m = cfg.mutable_model();
  m->set_hidden_size(12);
  m->set_num_layers(1);
  m->set_layer_pattern("L");
  m->mutable_mixer()->set_kind(kind);
  m->mutable_mixer()->set_num_heads(2);
  m->mutable_mixer()->set_chunk_size(4);
  cfg.mutable_data()->set_seq_len(16);
  return cfg;
}

}  // namespace linea::testing
