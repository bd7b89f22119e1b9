// Gated Slot Attention on the GPU: the GSA mixer built on the CPU (f64) and on cuda:0 (f32) with
// the same weights, compared in outputs, input gradients and every parameter gradient, plainly and
// as a segment (incoming states of both passes, exported final states and transitions, gradients
// of both). Its first pass (keys: q, k against the slot writes 1 - alpha with the value-side decay
// log alpha) runs the value-decay scan (kernels/cuda/value_decay_scan.h), its second (values: the
// slot softmax against 1 - alpha and v with the key-side decay log alpha) the vector-decay scan.
//
// Tolerances as tests/cuda/decay_mixer_cuda_test.cpp: the second pass feeds its scan's tensor
// cores bf16 operands (docs/cuda.md: 2e-2 of the largest value), so outputs and gradients are held
// to ||g - g_cpu|| / ||g_cpu|| < 2e-2 and no element off by more than 6e-2 of the tensor's
// largest; the q projection and the gate projection (f_proj: its gradient sums dgv of the first
// pass and dgk of the second, differences that largely cancel) get 1.5e-1 in norm and 2e-1 per
// element, as the decay mixers' q_proj and gate projections do.
#include <cmath>
#include <cstdio>
#include <string>

#include "core/config/config.h"
#include "core/modules/mixers/segment.h"
#include "core/modules/mixers/token_mixer.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/mixer_pair.h"

namespace linea {
namespace {

using namespace testing;
using MC = config::MixerConfig;

struct GsaCase {
  int64_t head, slots;
  bool short_conv;
};

std::string case_name(const GsaCase& c) {
  return "GSA heads of " + std::to_string(c.head) + ", " + std::to_string(c.slots) + " slots" +
         (c.short_conv ? ", short conv" : "");
}

config::Config gsa_config(const GsaCase& c, int64_t seq_len) {
  config::Config cfg = load_config({}, {});
  auto* m = cfg.mutable_model();
  m->set_hidden_size(128);
  m->set_num_layers(1);
  m->set_layer_pattern("L");
  auto* mx = m->mutable_mixer();
  mx->set_kind(MC::GSA);
  mx->set_num_heads(2);
  mx->set_head_dim(static_cast<int>(c.head));
  mx->set_num_slots(static_cast<int>(c.slots));
  mx->set_chunk_size(64);
  if (c.short_conv) mx->set_short_conv(MC::ON);
  cfg.mutable_data()->set_seq_len(seq_len);
  return cfg;
}

// The GPU mixer holds f32 weights on cuda:0; the CPU mixer the very same values in f64.
MixerPair make_pair(const GsaCase& c, int64_t seq_len) {
  return make_mixer_pair(gsa_config(c, seq_len));
}

constexpr double kTolNorm = 2e-2, kTolMax = 6e-2;

void expect_param_grads_close(const MixerPair& p) {
  for (size_t i = 0; i < p.pg.size(); ++i) {
    ASSERT_EQ(p.pc[i]->name, p.pg[i]->name);
    EXPECT_FALSE(p.pg[i]->grad.device().is_cpu()) << p.pg[i]->name;
    const std::string& name = p.pg[i]->name;
    const bool loose =
        name.find("q_proj") != std::string::npos || name.find("f_proj") != std::string::npos;
    expect_norm_close(p.pg[i]->grad, p.pc[i]->grad, loose ? 1.5e-1 : kTolNorm,
                      loose ? 2e-1 : kTolMax, "d " + name);
  }
}

TEST(GsaMixerCuda, ForwardBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 192, D = 128;
  for (const GsaCase& c :
       {GsaCase{64, 64, false}, GsaCase{128, 64, false}, GsaCase{64, 128, true}}) {
    SCOPED_TRACE(case_name(c));
    std::printf("%s\n", case_name(c).c_str());
    MixerPair p = make_pair(c, T);
    const Tensor x = random_cuda({B, T, D}, 81, DType::kF32),
                 dy = random_cuda({B, T, D}, 82, DType::kF32);
    Tensor y, dx;
    {
      const DefaultDeviceScope on(Device::cuda(0));
      y = p.gpu->forward(x);
      dx = p.gpu->backward(dy);
    }
    ASSERT_FALSE(y.device().is_cpu());
    const Tensor y_r = p.cpu->forward(ref64(x));
    const Tensor dx_r = p.cpu->backward(ref64(dy));
    expect_norm_close(y, y_r, kTolNorm, kTolMax, "y");
    expect_norm_close(dx, dx_r, kTolNorm, kTolMax, "dx");
    expect_param_grads_close(p);
  }
}

// forward_segment with incoming states (keys [B, H, dk, slots], values [B, H, slots, dv]),
// exporting the final states and the transitions, and backward_segment with gradients reaching
// both final states, returning the incoming states'. T = 192: three chunks (a segment needs T
// divisible by the chunk).
TEST(GsaMixerCuda, SegmentWithStatesMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 192, D = 128, H = 2;
  for (const GsaCase& c : {GsaCase{64, 64, false}, GsaCase{128, 128, false}}) {
    SCOPED_TRACE(case_name(c));
    std::printf("segment: %s\n", case_name(c).c_str());
    MixerPair p = make_pair(c, T);
    const Shape sk{B, H, c.head, c.slots}, sv{B, H, c.slots, c.head};
    const Tensor x = random_cuda({B, T, D}, 91, DType::kF32),
                 dy = random_cuda({B, T, D}, 92, DType::kF32);
    const Tensor s_in_k = random_cuda(sk, 93, DType::kF32, 0.5),
                 s_in_v = random_cuda(sv, 94, DType::kF32, 0.5),
                 ds_out_k = random_cuda(sk, 95, DType::kF32, 0.5),
                 ds_out_v = random_cuda(sv, 96, DType::kF32, 0.5);
    SegmentOut out, out_r;
    SegmentGradOut gout, gout_r;
    Tensor y, dx;
    {
      const DefaultDeviceScope on(Device::cuda(0));
      y = p.gpu->forward_segment(x, SegmentIn{{s_in_k, s_in_v}, Tensor()}, &out);
      dx = p.gpu->backward_segment(dy, SegmentGradIn{{ds_out_k, ds_out_v}}, &gout);
    }
    const Tensor y_r = p.cpu->forward_segment(
        ref64(x), SegmentIn{{ref64(s_in_k), ref64(s_in_v)}, Tensor()}, &out_r);
    const Tensor dx_r = p.cpu->backward_segment(
        ref64(dy), SegmentGradIn{{ref64(ds_out_k), ref64(ds_out_v)}}, &gout_r);
    ASSERT_EQ(out.final_states.size(), 2u);
    ASSERT_EQ(out.transitions.size(), 2u);
    ASSERT_EQ(gout.d_states.size(), 2u);
    expect_norm_close(y, y_r, kTolNorm, kTolMax, "y");
    for (int s = 0; s < 2; ++s) {
      const std::string which = s == 0 ? " (keys)" : " (values)";
      EXPECT_EQ(out.final_states[s].dtype(), DType::kF32);
      EXPECT_FALSE(out.final_states[s].device().is_cpu());
      expect_norm_close(out.final_states[s], out_r.final_states[s], kTolNorm, kTolMax,
                        "S_out" + which);
      const Transition &t = out.transitions[s], &t_r = out_r.transitions[s];
      const Tensor& a = t.log_decay_k.defined() ? t.log_decay_k : t.log_decay_v;
      const Tensor& a_r = t_r.log_decay_k.defined() ? t_r.log_decay_k : t_r.log_decay_v;
      ASSERT_TRUE(a.defined() && a_r.defined()) << which;
      expect_norm_close(a, a_r, 1e-5, 1e-5, "transition log decay" + which);
      expect_norm_close(gout.d_states[s], gout_r.d_states[s], kTolNorm, kTolMax, "dS_in" + which);
    }
    expect_norm_close(dx, dx_r, kTolNorm, kTolMax, "dx");
    expect_param_grads_close(p);
  }
}

}  // namespace
}  // namespace linea
