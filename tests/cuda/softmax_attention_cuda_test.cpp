// Causal softmax attention on CUDA (kernels/cuda/softmax_attention.cu) through its public kernels
// (kernels/softmax_attention.h), against the CPU kernels in f64 (themselves checked against a
// naive loop and finite differences in tests/unit/) on the very bf16 values the GPU saw: o, lse,
// dq, dk, dv for MHA and GQA, D = 64 and 128, sequences that are and are not tile multiples,
// queries at an offset into longer keys (LASP-2H; keys past the last query get zero gradients),
// windows (down to one key), f32 and bf16 storage. The kernels feed q, k, v, dO, P and dS to the
// tensor cores in bf16 (f32 accumulation), so the tolerance is a bf16 one: 1e-2 of the largest
// reference value. Then the whole softmax-attention mixer on cuda:0 against the same mixer on the
// CPU (output and every gradient).
#include <cstdio>
#include <functional>

#include "core/config/config.h"
#include "core/modules/mixers/softmax_attention_mixer.h"
#include "core/tensor/device.h"
#include "kernels/softmax_attention.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

constexpr double kTolAttention = 1e-2;

struct Case {
  int64_t B, Tq, Tk, Hq, Hkv, D, q_offset, window;
};

std::string name_of(const Case& c, DType dt) {
  return std::string(dtype_name(dt)) + " B" + std::to_string(c.B) + " Tq" + std::to_string(c.Tq) +
         " Tk" + std::to_string(c.Tk) + " Hq" + std::to_string(c.Hq) + " Hkv" +
         std::to_string(c.Hkv) + " D" + std::to_string(c.D) + " offset" +
         std::to_string(c.q_offset) + " window" + std::to_string(c.window);
}

// Tile multiples and not (T = 200), MHA and GQA, both head dims; offsets with Tk > q_offset + Tq
// (the last keys are seen by no query), windows shorter and longer than a 64-key tile, and a
// window of two keys (each query sees itself and the key before; with one key P = 1, so
// dq = dk = 0 exactly and a relative error has nothing to measure against).
const std::vector<Case> kCases = {
    {2, 64, 64, 8, 8, 64, 0, 0},      {2, 64, 64, 8, 2, 128, 0, 0},
    {2, 200, 200, 8, 8, 128, 0, 0},   {2, 200, 200, 8, 2, 64, 0, 0},
    {2, 512, 512, 8, 8, 128, 0, 0},   {2, 512, 512, 8, 2, 64, 0, 100},
    {2, 200, 600, 8, 2, 64, 256, 0},  {2, 200, 500, 8, 8, 128, 300, 77},
    {2, 200, 200, 8, 2, 128, 0, 2},   {2, 512, 512, 8, 2, 128, 0, 333},
    {2, 64, 1000, 8, 2, 128, 900, 0},
};

void expect_matches_cpu(const Case& c, DType dt, uint64_t seed) {
  const std::string what = name_of(c, dt);
  auto input = [&](const Shape& s) { return random_cuda(s, ++seed, DType::kBF16).to(dt); };
  const Tensor q = input({c.B, c.Tq, c.Hq, c.D}), k = input({c.B, c.Tk, c.Hkv, c.D});
  const Tensor v = input({c.B, c.Tk, c.Hkv, c.D}), d_o = input({c.B, c.Tq, c.Hq, c.D});
  const double scale = 1.0 / std::sqrt(double(c.D));
  kernels::CausalMask mask;
  mask.q_offset = c.q_offset;
  mask.window = c.window;

  Tensor o = poisoned_cuda(d_o.shape(), dt), lse = poisoned_cuda({c.B, c.Hq, c.Tq}, DType::kF32);
  kernels::softmax_attention_forward(q, k, v, scale, mask, o, lse);
  Tensor dq = poisoned_cuda(q.shape(), dt), dk = poisoned_cuda(k.shape(), dt);
  Tensor dv = poisoned_cuda(v.shape(), dt);
  kernels::softmax_attention_backward(q, k, v, o, lse, d_o, scale, mask, dq, dk, dv);

  // The reference backward runs on the GPU's o and lse (the statistics the backward is given).
  const Tensor q64 = ref64(q), k64 = ref64(k), v64 = ref64(v), do64 = ref64(d_o);
  Tensor o_ref = Tensor::empty(o.shape(), DType::kF64, Device::cpu());
  Tensor lse_ref = Tensor::empty(lse.shape(), DType::kF64, Device::cpu());
  kernels::softmax_attention_forward(q64, k64, v64, scale, mask, o_ref, lse_ref);
  Tensor dq_ref = Tensor::empty(q64.shape(), DType::kF64, Device::cpu());
  Tensor dk_ref = Tensor::empty(k64.shape(), DType::kF64, Device::cpu());
  Tensor dv_ref = Tensor::empty(v64.shape(), DType::kF64, Device::cpu());
  kernels::softmax_attention_backward(q64, k64, v64, o_ref, lse_ref, do64, scale, mask, dq_ref,
                                      dk_ref, dv_ref);
  const double e_o = rel_err(o, o_ref), e_lse = rel_err(lse, lse_ref);
  const double e_dq = rel_err(dq, dq_ref), e_dk = rel_err(dk, dk_ref), e_dv = rel_err(dv, dv_ref);
  std::printf("%-70s o %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", what.c_str(), e_o, e_lse, e_dq,
              e_dk, e_dv);
  EXPECT_LT(e_o, kTolAttention) << what << " o";
  EXPECT_LT(e_lse, kTolAttention) << what << " lse";
  EXPECT_LT(e_dq, kTolAttention) << what << " dq";
  EXPECT_LT(e_dk, kTolAttention) << what << " dk";
  EXPECT_LT(e_dv, kTolAttention) << what << " dv";
}

TEST(SoftmaxAttentionCuda, MatchesCpuReference) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 4100;
  for (DType dt : {DType::kBF16, DType::kF32})
    for (const Case& c : kCases) expect_matches_cpu(c, dt, seed += 10);
}

// Keys that no query sees (past the last query, or too old for every window) get zero dk, dv:
// written, not left as they were.
TEST(SoftmaxAttentionCuda, UnseenKeysGetZeroGradients) {
  LINEA_REQUIRE_CUDA();
  const Case c{1, 64, 320, 2, 1, 64, 100, 30};  // queries at 100..163 see keys 71..163
  const Tensor q = random_cuda({c.B, c.Tq, c.Hq, c.D}, 1, DType::kBF16);
  const Tensor k = random_cuda({c.B, c.Tk, c.Hkv, c.D}, 2, DType::kBF16);
  const Tensor v = random_cuda({c.B, c.Tk, c.Hkv, c.D}, 3, DType::kBF16);
  const Tensor d_o = random_cuda({c.B, c.Tq, c.Hq, c.D}, 4, DType::kBF16);
  kernels::CausalMask mask{c.q_offset, c.window};
  Tensor o = poisoned_cuda(d_o.shape(), DType::kBF16);
  Tensor lse = poisoned_cuda({c.B, c.Hq, c.Tq}, DType::kF32);
  kernels::softmax_attention_forward(q, k, v, 0.125, mask, o, lse);
  Tensor dq = poisoned_cuda(q.shape(), DType::kBF16), dk = poisoned_cuda(k.shape(), DType::kBF16);
  Tensor dv = poisoned_cuda(v.shape(), DType::kBF16);
  kernels::softmax_attention_backward(q, k, v, o, lse, d_o, 0.125, mask, dq, dk, dv);
  const Tensor dk64 = ref64(dk), dv64 = ref64(dv);
  int64_t nonzero_seen = 0, nonzero_unseen = 0;
  for (int64_t j = 0; j < c.Tk; ++j) {
    const bool seen = j >= 71 && j <= 163;
    for (int64_t e = 0; e < c.D; ++e) {
      const double a = dk64.item(j * c.D + e), b = dv64.item(j * c.D + e);
      ASSERT_FALSE(std::isnan(a) || std::isnan(b)) << "key " << j << " left unwritten";
      (seen ? nonzero_seen : nonzero_unseen) += (a != 0) + (b != 0);
    }
  }
  EXPECT_EQ(nonzero_unseen, 0);
  EXPECT_GT(nonzero_seen, 93 * c.D);  // the seen keys do get gradients
}

void expect_error_with(const std::function<void()>& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "expected linea::Error containing '" << part << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(SoftmaxAttentionCuda, RefusesWhatItDoesNotRunWithAMessage) {
  LINEA_REQUIRE_CUDA();
  const Tensor q96 = random_cuda({1, 64, 2, 96}, 1, DType::kBF16);
  Tensor o96 = Tensor::empty(q96.shape(), DType::kBF16, Device::cuda(0));
  Tensor lse = Tensor::empty({1, 2, 64}, DType::kF32, Device::cuda(0));
  expect_error_with([&] { kernels::softmax_attention_forward(q96, q96, q96, 0.1, {}, o96, lse); },
                    "(D = 96)");
  const Tensor q = random_cuda({1, 64, 2, 64}, 2, DType::kBF16);
  Tensor o = Tensor::empty(q.shape(), DType::kBF16, Device::cuda(0));
  Tensor lse_bf16 = Tensor::empty({1, 2, 64}, DType::kBF16, Device::cuda(0));
  expect_error_with([&] { kernels::softmax_attention_forward(q, q, q, 0.1, {}, o, lse_bf16); },
                    "saved statistics are f32 on CUDA");
  const Tensor k3 = random_cuda({1, 64, 3, 64}, 3, DType::kBF16);
  expect_error_with([&] { kernels::softmax_attention_forward(q, k3, k3, 0.1, {}, o, lse); },
                    "cannot be grouped");
  expect_error_with(
      [&] {
        kernels::softmax_attention_forward(q, q, q, 0.1, {10, 0}, o, lse);
      },
      "Tk = 64");
}

// ---- the mixer ---------------------------------------------------------------------------------

struct MixerVariant {
  bool qk_norm;
  int window;
  int64_t position_offset;
};

config::Config mixer_config(const MixerVariant& mv) {
  config::Config cfg = load_config({}, {});
  auto* m = cfg.mutable_model();
  m->set_hidden_size(256);
  m->set_num_layers(1);
  m->set_layer_pattern("N");
  auto* a = m->mutable_attention();
  a->set_num_heads(4);
  a->set_num_kv_heads(2);
  a->set_head_dim(64);
  a->set_rope_theta(10000);
  a->set_qk_norm(mv.qk_norm);
  a->set_window_size(mv.window);
  return cfg;
}

// The mixer with f32 parameters on cuda:0 (moved as Model::to does) gives the CPU mixer's output,
// input gradient and parameter gradients; the GPU rounds q, k, v, dO, P and dS to bf16 inside
// the attention, hence the bf16 tolerance. The reference mode on the GPU (a host loop in f64)
// agrees with the kernel.
TEST(SoftmaxAttentionCuda, MixerOnGpuMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 200, D = 256;
  for (const MixerVariant& mv : {MixerVariant{false, 0, 0}, MixerVariant{true, 48, 37}}) {
    const std::string what = std::string("qk_norm ") + (mv.qk_norm ? "on" : "off") + " window " +
                             std::to_string(mv.window) + " offset " +
                             std::to_string(mv.position_offset);
    const config::Config cfg = mixer_config(mv);
    auto cpu = make_token_mixer(cfg, 0, "mixer", DType::kF32);
    auto gpu = make_token_mixer(cfg, 0, "mixer", DType::kF32);
    cpu->init(11, 0.06, 0.06);
    gpu->init(11, 0.06, 0.06);
    ParameterList pc, pg;
    cpu->collect(pc);
    gpu->collect(pg);
    ASSERT_EQ(pc.size(), pg.size());
    for (Parameter* p : pg) {
      p->value = p->value.cuda(0);
      p->grad = p->grad.cuda(0);
    }
    dynamic_cast<SoftmaxAttention&>(*cpu).set_position_offset(mv.position_offset);
    dynamic_cast<SoftmaxAttention&>(*gpu).set_position_offset(mv.position_offset);
    const Tensor x = random_tensor({B, T, D}, 21, DType::kF32);
    const Tensor dy = random_tensor({B, T, D}, 22, DType::kF32);

    const Tensor y_c = cpu->forward(x), dx_c = cpu->backward(dy);
    Tensor y_g, dx_g, y_ref_g;
    {
      const DefaultDeviceScope on(Device::cuda(0));
      y_g = gpu->forward(x.cuda(0));
      dx_g = gpu->backward(dy.cuda(0));
      gpu->set_recurrent_reference(true);
      y_ref_g = gpu->forward(x.cuda(0));
      gpu->set_recurrent_reference(false);
    }
    ASSERT_FALSE(y_g.device().is_cpu()) << what;
    ASSERT_FALSE(dx_g.device().is_cpu()) << what;
    const double e_y = rel_err(y_g, y_c), e_dx = rel_err(dx_g, dx_c);
    const double e_ref = rel_err(y_ref_g, y_c);
    std::printf("mixer %s: y %.2e dx %.2e reference-mode y %.2e\n", what.c_str(), e_y, e_dx, e_ref);
    EXPECT_LT(e_y, 2e-2) << what << " y";
    EXPECT_LT(e_dx, 2e-2) << what << " dx";
    EXPECT_LT(e_ref, 1e-4) << what << " reference-mode y (f64 host loop on the GPU's q, k, v)";
    for (size_t i = 0; i < pc.size(); ++i) {
      ASSERT_EQ(pc[i]->name, pg[i]->name);
      EXPECT_FALSE(pg[i]->grad.device().is_cpu()) << pg[i]->name;
      const double e = rel_err(pg[i]->grad, pc[i]->grad);
      std::printf("  %-24s grad %.2e\n", pc[i]->name.c_str(), e);
      EXPECT_LT(e, 2e-2) << what << " " << pc[i]->name;
    }
  }
}

}  // namespace
}  // namespace linea
