// The decay mixers on the GPU (issue 6): the gate kernels (kernels/gates.h), biases and column
// blocks (kernels/columns.h), the segment log decay and transition
// (kernels/gated_linear_attention.h, core/modules/mixers/segment.h) against their CPU twins in f64
// on the values the GPU saw; then LIGHTNING, RETNET, SIMPLE_GLA, GLA and HGRN2 mixers built on
// the CPU (f64) and on cuda:0 (f32) with the same weights, compared in outputs, input gradients
// and every parameter gradient, plainly and as a segment (incoming state, exported final state and
// transition, gradients of both).
//
// Tolerances (rel_max_diff unless said): element-wise kernels kTolF32 / kTolBF16 by output dtype;
// f32 sums kTolF32. The mixers: the chunk scan and the vector-decay scan feed q, k, v and dO to
// the tensor cores in bf16 (docs/cuda.md: 2e-2 of the largest value for the scans themselves), so
// outputs and gradients are held to ||g - g_cpu|| / ||g_cpu|| < 2e-2 and no element off by more
// than 6e-2 of the tensor's largest; with the per-head output norm (o_norm, Lightning's default)
// the loss is invariant to each token's q scale, the q gradient a small remainder of cancelling
// terms (tests/cuda/model_cuda_test.cpp measured 6.9e-2 there), and q_proj's gradient is held to
// 1.5e-1 in norm and 2e-1 per element; so are the gate projections' (below).
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "core/config/config.h"
#include "core/modules/mixers/decay_mixers.h"
#include "core/modules/mixers/segment.h"
#include "core/modules/mixers/token_mixer.h"
#include "kernels/columns.h"
#include "kernels/gated_linear_attention.h"
#include "kernels/gates.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/mixer_pair.h"

namespace linea {
namespace {

using namespace testing;
using kernels::Activation;
using MC = config::MixerConfig;

void expect_close(const Tensor& got, const Tensor& ref, double tol, const std::string& what) {
  const double e = rel_err(got, ref);
  EXPECT_LT(e, tol) << what;
  std::printf("  %-56s rel max diff %.2e (tol %.0e)\n", what.c_str(), e, tol);
}

Tensor ref_empty(const Shape& s) { return Tensor::empty(s, DType::kF64, Device::cpu()); }

const char* dt_name(DType dt) { return dt == DType::kBF16 ? "bf16" : "f32"; }

// ---- gate kernels ------------------------------------------------------------------------------

// One unary kernel: y = f(x) on the GPU and in f64 on the CPU.
void check_unary(const std::string& name, DType dt, double stddev,
                 const std::function<void(const Tensor&, Tensor&)>& f) {
  const Shape s{3, 37, 5};  // 555 elements: packs and a tail
  const Tensor x = random_cuda(s, 11, dt, stddev);
  Tensor y = poisoned_cuda(s, dt), y_ref = ref_empty(s);
  f(x, y);
  f(ref64(x), y_ref);
  expect_close(y, y_ref, tol_for(dt), name + " " + dt_name(dt));
}

// One binary kernel: y = f(x, d).
void check_binary(const std::string& name, DType dt, double stddev,
                  const std::function<void(const Tensor&, const Tensor&, Tensor&)>& f) {
  const Shape s{3, 37, 5};
  const Tensor x = random_cuda(s, 12, dt, stddev), d = random_cuda(s, 13, dt);
  Tensor y = poisoned_cuda(s, dt), y_ref = ref_empty(s);
  f(x, d, y);
  f(ref64(x), ref64(d), y_ref);
  expect_close(y, y_ref, tol_for(dt), name + " " + dt_name(dt));
}

TEST(DecayGatesCuda, ActivationsMatchCpu) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (Activation a : {Activation::kSilu, Activation::kSigmoid, Activation::kIdentity}) {
      const std::string n = "activation " + std::to_string(static_cast<int>(a));
      check_unary(n + " forward", dt, 3.0,
                  [a](const Tensor& x, Tensor& y) { kernels::activation_forward(a, x, y); });
      check_binary(n + " backward", dt, 3.0, [a](const Tensor& x, const Tensor& d, Tensor& y) {
        kernels::activation_backward(a, x, d, y);
      });
    }
  }
}

TEST(DecayGatesCuda, OutputGateMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const Shape s{2, 41, 3};
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (Activation a : {Activation::kSilu, Activation::kSigmoid}) {
      const Tensor g = random_cuda(s, 21, dt, 3.0), n = random_cuda(s, 22, dt),
                   dy = random_cuda(s, 23, dt);
      Tensor y = poisoned_cuda(s, dt), dg = poisoned_cuda(s, dt), dn = poisoned_cuda(s, dt);
      Tensor y_r = ref_empty(s), dg_r = ref_empty(s), dn_r = ref_empty(s);
      kernels::output_gate_forward(a, g, n, y);
      kernels::output_gate_forward(a, ref64(g), ref64(n), y_r);
      kernels::output_gate_backward(a, g, n, dy, dg, dn);
      kernels::output_gate_backward(a, ref64(g), ref64(n), ref64(dy), dg_r, dn_r);
      const std::string w = std::string("output gate ") +
                            (a == Activation::kSilu ? "silu " : "sigmoid ") + dt_name(dt);
      expect_close(y, y_r, tol_for(dt), w + " y");
      expect_close(dg, dg_r, tol_for(dt), w + " dg");
      expect_close(dn, dn_r, tol_for(dt), w + " dn");
    }
  }
}

TEST(DecayGatesCuda, LogSigmoidSoftplusBetaMatchCpu) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    check_unary("log_sigmoid_decay forward c=16", dt, 4.0,
                [](const Tensor& z, Tensor& y) { kernels::log_sigmoid_decay_forward(z, 16.0, y); });
    check_binary("log_sigmoid_decay backward c=16", dt, 4.0,
                 [](const Tensor& z, const Tensor& d, Tensor& y) {
                   kernels::log_sigmoid_decay_backward(z, d, 16.0, y);
                 });
    check_unary("softplus forward", dt, 4.0,
                [](const Tensor& z, Tensor& y) { kernels::softplus_forward(z, y); });
    check_binary("softplus backward", dt, 4.0, [](const Tensor& z, const Tensor& d, Tensor& y) {
      kernels::softplus_backward(z, d, y);
    });
    check_unary("delta_beta forward scale 2", dt, 3.0,
                [](const Tensor& b, Tensor& y) { kernels::delta_beta_forward(b, 2.0, y); });
    check_binary("delta_beta backward scale 2", dt, 3.0,
                 [](const Tensor& b, const Tensor& d, Tensor& y) {
                   kernels::delta_beta_backward(b, 2.0, d, y);
                 });
  }
}

TEST(DecayGatesCuda, ForgetGateMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const Shape s{2, 33, 7};
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (double lb : {0.0, 0.3}) {
      const Tensor z = random_cuda(s, 31, dt, 4.0), dgk = random_cuda(s, 32, dt),
                   dk = random_cuda(s, 33, dt);
      Tensor gk = poisoned_cuda(s, dt), k = poisoned_cuda(s, dt), dz = poisoned_cuda(s, dt);
      Tensor gk_r = ref_empty(s), k_r = ref_empty(s), dz_r = ref_empty(s);
      kernels::forget_gate_forward(z, lb, gk, k);
      kernels::forget_gate_forward(ref64(z), lb, gk_r, k_r);
      kernels::forget_gate_backward(z, lb, dgk, dk, dz);
      kernels::forget_gate_backward(ref64(z), lb, ref64(dgk), ref64(dk), dz_r);
      const std::string w = "forget gate lb=" + std::to_string(lb).substr(0, 3) + " " + dt_name(dt);
      expect_close(gk, gk_r, tol_for(dt), w + " gk");
      expect_close(k, k_r, tol_for(dt), w + " k");
      expect_close(dz, dz_r, tol_for(dt), w + " dz");
    }
  }
}

TEST(DecayGatesCuda, DeltaLogDecayMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t H = 5;
  const Shape s{2, 300, H};
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const Tensor a = random_cuda(s, 41, dt, 2.0), A_log = random_cuda({H}, 42, dt, 0.5),
                 dt_bias = random_cuda({H}, 43, dt, 0.5), dg = random_cuda(s, 44, dt);
    Tensor g = poisoned_cuda(s, dt), da = poisoned_cuda(s, dt);
    // The parameter gradients accumulate: both sides start from the same random values.
    Tensor dA = random_cuda({H}, 45, DType::kF32), ddt = random_cuda({H}, 46, DType::kF32);
    Tensor g_r = ref_empty(s), da_r = ref_empty(s), dA_r = ref64(dA), ddt_r = ref64(ddt);
    kernels::delta_log_decay_forward(a, A_log, dt_bias, g);
    kernels::delta_log_decay_forward(ref64(a), ref64(A_log), ref64(dt_bias), g_r);
    kernels::delta_log_decay_backward(a, A_log, dt_bias, dg, da, dA, ddt);
    kernels::delta_log_decay_backward(ref64(a), ref64(A_log), ref64(dt_bias), ref64(dg), da_r, dA_r,
                                      ddt_r);
    const std::string w = std::string("delta_log_decay ") + dt_name(dt);
    expect_close(g, g_r, tol_for(dt), w + " g");
    expect_close(da, da_r, tol_for(dt), w + " da");
    // Row sums of 600 terms: of da rounded to bf16 for d_dt_bias, so bf16's tolerance there.
    expect_close(ddt, ddt_r, tol_for(dt), w + " d_dt_bias (+=)");
    expect_close(dA, dA_r, kTolF32, w + " dA_log (+=)");
  }
}

// ---- biases, column blocks, segment log decay and transition -----------------------------------

TEST(DecayOpsCuda, BiasesAndColumnBlocksMatchCpu) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const std::string d = dt_name(dt);
    // add_bias with a bias of y's dtype and with an f32 bias.
    for (DType bdt : {dt, DType::kF32}) {
      Tensor y = random_cuda({2, 37, 24}, 51, dt);
      const Tensor b = random_cuda({24}, 52, bdt);
      Tensor y_r = ref64(y);
      kernels::add_bias(y, b);
      kernels::add_bias(y_r, ref64(b));
      expect_close(y, y_r, tol_for(dt), "add_bias " + d + " bias " + dt_name(bdt));
    }
    // bias_backward over many rows (split into partials) and few columns, accumulating.
    for (const Shape& s : {Shape{2, 37, 24}, Shape{4, 10000, 8}}) {
      const Tensor dy = random_cuda(s, 53, dt);
      Tensor db = random_cuda({s[2]}, 54, DType::kF32), db_r = ref64(db);
      kernels::bias_backward(dy, db);
      kernels::bias_backward(ref64(dy), db_r);
      expect_close(db, db_r, kTolF32, "bias_backward " + d + " " + shape_str(s));
    }
    // Columns [5, 17) from row 3 out of [2, 40, 30], and added back.
    const Tensor t = random_cuda({2, 40, 30}, 55, dt);
    Tensor part = poisoned_cuda({2, 37, 12}, dt), part_r = ref_empty({2, 37, 12});
    kernels::gather_columns(t, 3, 5, part);
    kernels::gather_columns(ref64(t), 3, 5, part_r);
    EXPECT_EQ(rel_err(part, part_r), 0.0) << "gather_columns " << d << " is a copy";
    Tensor whole = random_cuda({2, 40, 30}, 56, dt), whole_r = ref64(whole);
    const Tensor src = random_cuda({2, 37, 12}, 57, dt);
    kernels::scatter_add_columns(whole, 3, 5, src);
    kernels::scatter_add_columns(whole_r, 3, 5, ref64(src));
    expect_close(whole, whole_r, tol_for(dt), "scatter_add_columns " + d);
  }
  // Shapes that do not fit are refused with the shapes named.
  Tensor bad = Tensor::empty({2, 37, 20}, DType::kF32, Device::cuda(0));
  EXPECT_THROW(kernels::gather_columns(random_cuda({2, 40, 30}, 58, DType::kF32), 3, 15, bad),
               Error);
}

TEST(DecayOpsCuda, SegmentLogDecayAndTransitionMatchCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 300, H = 3, Dk = 64, Dv = 128;
  for (bool vector : {false, true}) {
    const Shape gs = vector ? Shape{B, T, H, Dk} : Shape{B, T, H};
    const Shape as = vector ? Shape{B, H, Dk} : Shape{B, H};
    // Log decays <= 0, as the gates make them.
    Tensor gk = random_cuda(gs, 61, DType::kF32, 0.05);
    Tensor ak = poisoned_cuda(as, DType::kF32), ak_r = ref_empty(as), none;
    kernels::gated_linear_attention_segment_log_decay(gk, Tensor(), ak, none);
    kernels::gated_linear_attention_segment_log_decay(ref64(gk), Tensor(), ak_r, none);
    expect_close(ak, ak_r, kTolF32,
                 std::string("segment log decay ") + (vector ? "vector" : "scalar"));

    // A transition of small log decays (a segment of a few tokens) applied to a state.
    const Tensor lk = random_cuda(as, 62, DType::kF32, 0.3),
                 lv = random_cuda({B, H, Dv}, 63, DType::kF32, 0.3);
    const Tensor s = random_cuda({B, H, Dk, Dv}, 64, DType::kF32);
    for (bool with_v : {false, true}) {
      Tensor out = poisoned_cuda(s.shape(), DType::kF32), out_r = ref_empty(s.shape());
      kernels::gated_linear_attention_apply_transition(lk, with_v ? lv : Tensor(), s, out);
      kernels::gated_linear_attention_apply_transition(ref64(lk), with_v ? ref64(lv) : Tensor(),
                                                       ref64(s), out_r);
      expect_close(out, out_r, kTolF32,
                   std::string("apply transition k ") + (vector ? "vector" : "scalar") +
                       (with_v ? " and v" : ""));
    }
    // segment.h's composition on CUDA: (second o first)(S) and its transpose.
    Transition t1, t2;
    t1.log_decay_k = lk;
    t2.log_decay_k = random_cuda(as, 65, DType::kF32, 0.3);
    Transition r1 = t1, r2 = t2;
    r1.log_decay_k = ref64(t1.log_decay_k);
    r2.log_decay_k = ref64(t2.log_decay_k);
    const Tensor got = transition_apply(transition_compose(t1, t2), s);
    const Tensor want = transition_apply(transition_compose(r1, r2), ref64(s));
    EXPECT_FALSE(got.device().is_cpu());
    expect_close(got, want, kTolF32, "transition compose + apply");
    expect_close(transition_apply_transpose(t1, s), transition_apply_transpose(r1, ref64(s)),
                 kTolF32, "transition apply transpose");
  }
}

// ---- whole mixers: CPU (f64) against cuda:0 (f32), same weights --------------------------------

struct MixerCase {
  MC::Kind kind;
  int64_t head;
};

std::string case_name(const MixerCase& c) {
  return MC::Kind_Name(c.kind) + " heads of " + std::to_string(c.head);
}

config::Config decay_config(const MixerCase& c) {
  config::Config cfg = load_config({}, {});
  auto* m = cfg.mutable_model();
  m->set_hidden_size(128);
  m->set_num_layers(1);
  m->set_layer_pattern("L");
  m->mutable_mixer()->set_kind(c.kind);
  m->mutable_mixer()->set_num_heads(2);
  m->mutable_mixer()->set_head_dim(static_cast<int>(c.head));
  m->mutable_mixer()->set_chunk_size(64);
  cfg.mutable_data()->set_seq_len(192);
  return cfg;
}

// The GPU mixer holds f32 weights on cuda:0; the CPU mixer the very same values in f64.
MixerPair make_pair(const MixerCase& c) {
  return make_mixer_pair(decay_config(c), [](Parameter& g) {
    // A random gate bias, so that a wrong bias path shows (the init is zero).
    const std::string bias = ".bias";
    if (g.name.size() > bias.size() &&
        g.name.compare(g.name.size() - bias.size(), bias.size(), bias) == 0)
      g.value = random_tensor(g.value.shape(), 77, DType::kF64, 1.0).to(DType::kF32);
  });
}

constexpr double kTolNorm = 2e-2, kTolMax = 6e-2;

// Every kind feeds its scan's tensor cores bf16 operands (the scalar-decay chunk scan and the
// vector-decay scan of GLA and HGRN2 alike), so all share these bf16-level tolerances.

void expect_param_grads_close(const MixerPair& p, MC::Kind kind) {
  for (size_t i = 0; i < p.pg.size(); ++i) {
    ASSERT_EQ(p.pc[i]->name, p.pg[i]->name);
    EXPECT_FALSE(p.pg[i]->grad.device().is_cpu()) << p.pg[i]->name;
    const std::string& name = p.pg[i]->name;
    const bool q = name.find("q_proj") != std::string::npos;
    // The decay's gradient dgk = sums of products of bf16 operands that largely cancel (measured
    // up to 7e-2 in norm for the scalar decay's bias, a sum of dgk over every token, with an
    // incoming state): the gate parameters get the q_proj allowance. HGRN2's gate is f_proj (its
    // key is 1 - f), GLA's and simple GLA's gk_proj.
    const bool gate = name.find("gk_proj") != std::string::npos ||
                      (kind == MC::HGRN2 && name.find("f_proj") != std::string::npos);
    expect_norm_close(p.pg[i]->grad, p.pc[i]->grad, q || gate ? 1.5e-1 : kTolNorm,
                      q || gate ? 2e-1 : kTolMax, "d " + name);
  }
}

const MixerCase kCases[] = {{MC::LIGHTNING, 64}, {MC::LIGHTNING, 128}, {MC::RETNET, 64},
                            {MC::RETNET, 128},   {MC::SIMPLE_GLA, 64}, {MC::SIMPLE_GLA, 128},
                            {MC::GLA, 64},       {MC::GLA, 128},       {MC::HGRN2, 64},
                            {MC::HGRN2, 128}};

TEST(DecayMixerCuda, ForwardBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 192, D = 128;
  for (const MixerCase& c : kCases) {
    SCOPED_TRACE(case_name(c));
    std::printf("%s\n", case_name(c).c_str());
    MixerPair p = make_pair(c);
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
    expect_param_grads_close(p, c.kind);
  }
}

// forward_segment with an incoming state, exporting the final state and the transition, and
// backward_segment with a gradient reaching the final state, returning the incoming state's.
TEST(DecayMixerCuda, SegmentWithStatesMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 128, D = 128;
  for (const MixerCase& c : {MixerCase{MC::LIGHTNING, 64}, MixerCase{MC::SIMPLE_GLA, 128},
                             MixerCase{MC::GLA, 64}, MixerCase{MC::HGRN2, 128}}) {
    SCOPED_TRACE(case_name(c));
    std::printf("segment: %s\n", case_name(c).c_str());
    MixerPair p = make_pair(c);
    const Shape ss{B, 2, c.head, c.head};
    const Tensor x = random_cuda({B, T, D}, 91, DType::kF32),
                 dy = random_cuda({B, T, D}, 92, DType::kF32);
    const Tensor s_in = random_cuda(ss, 93, DType::kF32, 0.5),
                 ds_out = random_cuda(ss, 94, DType::kF32, 0.5);
    SegmentOut out, out_r;
    SegmentGradOut gout, gout_r;
    Tensor y, dx;
    {
      const DefaultDeviceScope on(Device::cuda(0));
      y = p.gpu->forward_segment(x, SegmentIn{{s_in}, Tensor()}, &out);
      dx = p.gpu->backward_segment(dy, SegmentGradIn{{ds_out}}, &gout);
    }
    const Tensor y_r = p.cpu->forward_segment(ref64(x), SegmentIn{{ref64(s_in)}, Tensor()}, &out_r);
    const Tensor dx_r = p.cpu->backward_segment(ref64(dy), SegmentGradIn{{ref64(ds_out)}}, &gout_r);
    ASSERT_EQ(out.final_states.size(), 1u);
    ASSERT_EQ(out.transitions.size(), 1u);
    ASSERT_EQ(gout.d_states.size(), 1u);
    EXPECT_EQ(out.final_states[0].dtype(), DType::kF32);
    EXPECT_FALSE(out.transitions[0].log_decay_k.device().is_cpu());
    const double tn = kTolNorm, tm = kTolMax;
    expect_norm_close(y, y_r, tn, tm, "y");
    expect_norm_close(out.final_states[0], out_r.final_states[0], tn, tm, "S_out");
    expect_norm_close(out.transitions[0].log_decay_k, out_r.transitions[0].log_decay_k, 1e-5, 1e-5,
                      "transition log_decay_k");
    expect_norm_close(dx, dx_r, tn, tm, "dx");
    expect_norm_close(gout.d_states[0], gout_r.d_states[0], tn, tm, "dS_in");
    expect_param_grads_close(p, c.kind);
  }
}

}  // namespace
}  // namespace linea
