// The short convolution and its time concat/slice, the learned feature maps (Hedgehog, the
// degree-2 maps of Based and ReBased, LayerNorm), Mamba2's SSD steps and GSA's slot steps on CUDA
// against their CPU twins in f64 on the values the GPU saw (kTolF32 / kTolBF16 by output dtype,
// f32 sums over rows 1e-4); basic linear attention with key widths the chunk scan does not take
// (blocks of key columns); then whole mixers built on the CPU (f64) and on cuda:0 (f32) with the
// same weights: SIMPLE_GLA and LIGHTNING with the short convolution, LINEAR_ATTENTION with the
// HEDGEHOG, BASED, REBASED and COSINE maps, and MAMBA2, in outputs, input gradients and every
// parameter gradient (the scans' bf16 tensor-core operands: 2e-2 in norm, 6e-2 per element, as in
// tests/cuda/decay_mixer_cuda_test.cpp), plainly and as a segment with a halo and states.
#include <cmath>
#include <cstdio>
#include <string>

#include "core/config/config.h"
#include "core/modules/mixers/segment.h"
#include "core/modules/mixers/token_mixer.h"
#include "kernels/gsa.h"
#include "kernels/hedgehog_feature_map.h"
#include "kernels/layernorm.h"
#include "kernels/linear_attention.h"
#include "kernels/quadratic_feature_map.h"
#include "kernels/sequence.h"
#include "kernels/short_conv.h"
#include "kernels/ssd.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/mixer_pair.h"

namespace linea {
namespace {

using namespace testing;
using MC = config::MixerConfig;

void expect_close(const Tensor& got, const Tensor& ref, double tol, const std::string& what) {
  const double e = rel_err(got, ref);
  EXPECT_LT(e, tol) << what;
  std::printf("  %-60s rel max diff %.2e (tol %.0e)\n", what.c_str(), e, tol);
}

Tensor ref_empty(const Shape& s) { return Tensor::empty(s, DType::kF64, Device::cpu()); }
const char* dt_name(DType dt) { return dt == DType::kBF16 ? "bf16" : "f32"; }
constexpr double kTolSum = 1e-4;  // f32 parameter gradients summed over rows

// ---- short convolution and the halo's concat / slice ------------------------------------------

TEST(ShortConvCuda, ForwardBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 500;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t K : {2, 4, 8}) {
      for (bool silu : {true, false}) {
        const int64_t B = 2, L = 301, C = 70;
        const std::string what =
            std::string(dt_name(dt)) + " K " + std::to_string(K) + (silu ? " silu" : " linear");
        const Tensor x = random_cuda({B, L, C}, ++seed, dt), w = random_cuda({C, K}, ++seed, dt);
        Tensor y = poisoned_cuda({B, L, C}, dt), y_ref = ref_empty({B, L, C});
        kernels::short_conv_forward(x, w, silu, y);
        kernels::short_conv_forward(ref64(x), ref64(w), silu, y_ref);
        expect_close(y, y_ref, tol_for(dt), "short conv y " + what);
        const Tensor dy = random_cuda({B, L, C}, ++seed, dt);
        Tensor dx = poisoned_cuda({B, L, C}, dt), dx_ref = ref_empty({B, L, C});
        Tensor dw = random_cuda({C, K}, ++seed, DType::kF32);  // `+=` onto a random start
        Tensor dw_ref = ref64(dw);
        kernels::short_conv_backward(x, w, silu, dy, dx, dw);
        kernels::short_conv_backward(ref64(x), ref64(w), silu, ref64(dy), dx_ref, dw_ref);
        expect_close(dx, dx_ref, tol_for(dt), "short conv dx " + what);
        expect_close(dw, dw_ref, kTolSum, "short conv dw (f32) " + what);
      }
    }
  }
  // dw in the dtype of w (bf16).
  const Tensor x = random_cuda({1, 64, 16}, 1, DType::kBF16),
               w = random_cuda({16, 4}, 2, DType::kBF16);
  const Tensor dy = random_cuda({1, 64, 16}, 3, DType::kBF16);
  Tensor dx = poisoned_cuda({1, 64, 16}, DType::kBF16),
         dw = Tensor::zeros({16, 4}, DType::kBF16, Device::cuda(0));
  Tensor dx_ref = ref_empty({1, 64, 16}),
         dw_ref = Tensor::zeros({16, 4}, DType::kF64, Device::cpu());
  kernels::short_conv_backward(x, w, true, dy, dx, dw);
  kernels::short_conv_backward(ref64(x), ref64(w), true, ref64(dy), dx_ref, dw_ref);
  expect_close(dw, dw_ref, kTolBF16, "short conv dw (bf16)");
  // K beyond the CUDA limit is refused with its size.
  const Tensor w9 = random_cuda({16, 9}, 4, DType::kF32);
  Tensor y9 = poisoned_cuda({1, 64, 16}, DType::kF32);
  EXPECT_TRUE(
      contains(error_message([&] { kernels::short_conv_forward(x.to(DType::kF32), w9, true, y9); }),
               "K = 9"));
}

TEST(SequenceCuda, ConcatAndSliceAreExact) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const Tensor a = random_cuda({3, 5, 2, 7}, 10, dt), b = random_cuda({3, 4, 2, 7}, 11, dt);
    const Tensor c = kernels::concat_time(a, b);
    const Tensor c_ref = kernels::concat_time(a.cpu(), b.cpu());
    ASSERT_FALSE(c.device().is_cpu());
    EXPECT_EQ(c.shape(), c_ref.shape());
    EXPECT_EQ(max_abs_diff(c.cpu().to(DType::kF64), c_ref.to(DType::kF64)), 0.0) << dt_name(dt);
    for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, 3}, {2, 9}, {4, 4}, {0, 9}}) {
      const Tensor s = kernels::slice_time(c, lo, hi), s_ref = kernels::slice_time(c_ref, lo, hi);
      EXPECT_EQ(s.shape(), s_ref.shape());
      EXPECT_EQ(max_abs_diff(s.cpu().to(DType::kF64), s_ref.to(DType::kF64)), 0.0)
          << dt_name(dt) << " [" << lo << ", " << hi << ")";
    }
    // An empty side.
    const Tensor e = Tensor::empty({3, 0, 2, 7}, dt, Device::cuda(0));
    EXPECT_EQ(
        max_abs_diff(kernels::concat_time(e, b).cpu().to(DType::kF64), b.cpu().to(DType::kF64)),
        0.0);
  }
}

// ---- feature maps ------------------------------------------------------------------------------

TEST(FeatureMapsCuda, HedgehogMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 600;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (auto [d, f] : {std::pair<int64_t, int64_t>{64, 64}, {64, 48}, {33, 200}}) {
      const int64_t B = 2, T = 37, H = 3;
      const std::string what =
          std::string(dt_name(dt)) + " d " + std::to_string(d) + " f " + std::to_string(f);
      const Tensor x = random_cuda({B, T, H, d}, ++seed, dt),
                   w = random_cuda({H, d, f}, ++seed, dt, 1.0 / std::sqrt(double(d)));
      Tensor y = poisoned_cuda({B, T, H, 2 * f}, dt), y_ref = ref_empty({B, T, H, 2 * f});
      kernels::hedgehog_feature_map_forward(x, w, y);
      kernels::hedgehog_feature_map_forward(ref64(x), ref64(w), y_ref);
      expect_close(y, y_ref, tol_for(dt), "hedgehog y " + what);
      const Tensor dy = random_cuda({B, T, H, 2 * f}, ++seed, dt);
      Tensor dx = poisoned_cuda({B, T, H, d}, dt), dx_ref = ref_empty({B, T, H, d});
      Tensor dw = random_cuda({H, d, f}, ++seed, DType::kF32), dw_ref = ref64(dw);
      // The reference reads back the GPU's y (the backward's saved tensor).
      kernels::hedgehog_feature_map_backward(x, w, y, dy, dx, dw);
      kernels::hedgehog_feature_map_backward(ref64(x), ref64(w), ref64(y), ref64(dy), dx_ref,
                                             dw_ref);
      expect_close(dx, dx_ref, tol_for(dt), "hedgehog dx " + what);
      expect_close(dw, dw_ref, kTolSum, "hedgehog dw (f32) " + what);
    }
  }
}

TEST(FeatureMapsCuda, QuadraticMapsMatchCpu) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 700;
  const kernels::QuadraticFeatureMap based{.constant = true, .linear = 0.5, .quadratic = 0.18};
  const kernels::QuadraticFeatureMap rebased{.constant = false, .linear = 0, .quadratic = 0.25};
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const auto& f : {based, rebased}) {
      for (int64_t d : {16, 5}) {
        const int64_t w = kernels::quadratic_feature_dim(f, d);
        const std::string what = std::string(dt_name(dt)) + (f.constant ? " based" : " rebased") +
                                 " d " + std::to_string(d);
        const Tensor x = random_cuda({2, 29, 3, d}, ++seed, dt);
        Tensor y = poisoned_cuda({2, 29, 3, w}, dt), y_ref = ref_empty({2, 29, 3, w});
        kernels::quadratic_feature_map_forward(f, x, y);
        kernels::quadratic_feature_map_forward(f, ref64(x), y_ref);
        expect_close(y, y_ref, tol_for(dt), "quadratic y " + what);
        const Tensor dy = random_cuda({2, 29, 3, w}, ++seed, dt);
        Tensor dx = poisoned_cuda({2, 29, 3, d}, dt), dx_ref = ref_empty({2, 29, 3, d});
        kernels::quadratic_feature_map_backward(f, x, dy, dx);
        kernels::quadratic_feature_map_backward(f, ref64(x), ref64(dy), dx_ref);
        expect_close(dx, dx_ref, tol_for(dt), "quadratic dx " + what);
      }
    }
  }
}

TEST(FeatureMapsCuda, LayerNormMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 800;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t D : {16, 100}) {
      for (bool affine : {true, false}) {
        const std::string what =
            std::string(dt_name(dt)) + " D " + std::to_string(D) + (affine ? " affine" : " plain");
        const Shape s{3, 41, 2, D}, rows{3, 41, 2};
        const Tensor x = random_cuda(s, ++seed, dt, 2.0);
        const Tensor g = affine ? random_cuda({D}, ++seed, DType::kF32) : Tensor();
        const Tensor b = affine ? random_cuda({D}, ++seed, DType::kF32) : Tensor();
        const Tensor g64 = affine ? ref64(g) : Tensor(), b64 = affine ? ref64(b) : Tensor();
        Tensor y = poisoned_cuda(s, dt), mean = poisoned_cuda(rows, DType::kF32),
               rstd = poisoned_cuda(rows, DType::kF32);
        Tensor y_ref = ref_empty(s), mean_ref = ref_empty(rows), rstd_ref = ref_empty(rows);
        kernels::layernorm_forward(x, g, b, 1e-5, y, mean, rstd);
        kernels::layernorm_forward(ref64(x), g64, b64, 1e-5, y_ref, mean_ref, rstd_ref);
        expect_close(y, y_ref, tol_for(dt), "layernorm y " + what);
        expect_close(mean, mean_ref, kTolF32, "layernorm mean " + what);
        expect_close(rstd, rstd_ref, kTolF32, "layernorm rstd " + what);
        const Tensor dy = random_cuda(s, ++seed, dt);
        Tensor dx = poisoned_cuda(s, dt), dx_ref = ref_empty(s);
        Tensor dg = affine ? random_cuda({D}, ++seed, DType::kF32) : Tensor();
        Tensor db = affine ? random_cuda({D}, ++seed, DType::kF32) : Tensor();
        Tensor dg_ref = affine ? ref64(dg) : Tensor(), db_ref = affine ? ref64(db) : Tensor();
        kernels::layernorm_backward(x, g, mean, rstd, dy, dx, dg, db);
        kernels::layernorm_backward(ref64(x), g64, mean_ref, rstd_ref, ref64(dy), dx_ref, dg_ref,
                                    db_ref);
        expect_close(dx, dx_ref, tol_for(dt), "layernorm dx " + what);
        if (affine) {
          expect_close(dg, dg_ref, kTolSum, "layernorm dgamma " + what);
          expect_close(db, db_ref, kTolSum, "layernorm dbeta " + what);
        }
      }
    }
  }
}

// ---- Mamba2's SSD steps and GSA's slot steps ---------------------------------------------------

TEST(SsdCuda, StepsMatchCpu) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 900;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const int64_t B = 2, T = 77, H = 3, P = 40, N = 24;
    const std::string n = dt_name(dt);
    const Tensor m = random_cuda({B, T, N}, ++seed, dt);
    Tensor bm = poisoned_cuda({B, T, H, N}, dt), bm_ref = ref_empty({B, T, H, N});
    kernels::ssd_heads_broadcast(m, bm);
    kernels::ssd_heads_broadcast(ref64(m), bm_ref);
    expect_close(bm, bm_ref, 0.0 + 1e-30, "heads broadcast " + n);
    const Tensor d = random_cuda({B, T, H, N}, ++seed, dt);
    Tensor sd = poisoned_cuda({B, T, N}, dt), sd_ref = ref_empty({B, T, N});
    kernels::ssd_heads_sum(d, sd);
    kernels::ssd_heads_sum(ref64(d), sd_ref);
    expect_close(sd, sd_ref, tol_for(dt), "heads sum " + n);

    const Tensor x = random_cuda({B, T, H, P}, ++seed, dt);
    Tensor step = random_tensor({B, T, H}, ++seed, DType::kF64, 0.5);
    for (int64_t i = 0; i < step.numel(); ++i) step.set_item(i, std::log1p(std::exp(step.item(i))));
    const Tensor dts = step.to(dt).cuda(0);
    const Tensor A_log = random_cuda({H}, ++seed, DType::kF32, 0.5),
                 Dp = random_cuda({H}, ++seed, DType::kF32);
    Tensor g = poisoned_cuda({B, T, H}, dt), v = poisoned_cuda({B, T, H, P}, dt);
    Tensor g_ref = ref_empty({B, T, H}), v_ref = ref_empty({B, T, H, P});
    kernels::ssd_discretise(x, dts, A_log, g, v);
    kernels::ssd_discretise(ref64(x), ref64(dts), ref64(A_log), g_ref, v_ref);
    expect_close(g, g_ref, tol_for(dt), "discretise g " + n);
    expect_close(v, v_ref, tol_for(dt), "discretise v " + n);
    Tensor o = random_cuda({B, T, H, P}, ++seed, dt);
    Tensor o_ref = ref64(o);
    kernels::ssd_add_skip(x, Dp, o);
    kernels::ssd_add_skip(ref64(x), ref64(Dp), o_ref);
    expect_close(o, o_ref, tol_for(dt), "add skip " + n);

    const Tensor dv = random_cuda({B, T, H, P}, ++seed, dt),
                 dg = random_cuda({B, T, H}, ++seed, dt),
                 d_o = random_cuda({B, T, H, P}, ++seed, dt);
    Tensor dx = poisoned_cuda({B, T, H, P}, dt), ddt = poisoned_cuda({B, T, H}, dt);
    Tensor dA = random_cuda({H}, ++seed, DType::kF32), dD = random_cuda({H}, ++seed, DType::kF32);
    Tensor dx_ref = ref_empty({B, T, H, P}), ddt_ref = ref_empty({B, T, H});
    Tensor dA_ref = ref64(dA), dD_ref = ref64(dD);
    kernels::ssd_discretise_backward(x, dts, g, A_log, Dp, dv, dg, d_o, dx, ddt, dA, dD);
    kernels::ssd_discretise_backward(ref64(x), ref64(dts), ref64(g), ref64(A_log), ref64(Dp),
                                     ref64(dv), ref64(dg), ref64(d_o), dx_ref, ddt_ref, dA_ref,
                                     dD_ref);
    expect_close(dx, dx_ref, tol_for(dt), "discretise backward dx " + n);
    expect_close(ddt, ddt_ref, tol_for(dt), "discretise backward ddt " + n);
    expect_close(dA, dA_ref, kTolSum, "discretise backward dA_log (f32) " + n);
    expect_close(dD, dD_ref, kTolSum, "discretise backward dD (f32) " + n);
  }
}

TEST(GsaOpsCuda, SlotStepsMatchCpu) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 1000;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t M : {64, 45}) {
      const std::string n = std::string(dt_name(dt)) + " M " + std::to_string(M);
      const Shape s{2, 33, 3, M};
      Tensor la64 = random_tensor(s, ++seed, DType::kF64);
      for (int64_t i = 0; i < la64.numel(); ++i) la64.set_item(i, -std::abs(la64.item(i)) / 8);
      const Tensor la = la64.to(dt).cuda(0);
      Tensor w = poisoned_cuda(s, dt), w_ref = ref_empty(s);
      kernels::gsa_slot_write_forward(la, w);
      kernels::gsa_slot_write_forward(ref64(la), w_ref);
      expect_close(w, w_ref, tol_for(dt), "slot write " + n);
      const Tensor dla = random_cuda(s, ++seed, dt), dw = random_cuda(s, ++seed, dt);
      Tensor dt_out = poisoned_cuda(s, dt), dt_ref = ref_empty(s);
      kernels::gsa_slot_write_backward(la, dla, dw, dt_out);
      kernels::gsa_slot_write_backward(ref64(la), ref64(dla), ref64(dw), dt_ref);
      expect_close(dt_out, dt_ref, tol_for(dt), "slot write backward " + n);

      const Tensor sc = random_cuda(s, ++seed, dt, 3.0);
      Tensor p = poisoned_cuda(s, dt), p_ref = ref_empty(s);
      kernels::gsa_slot_softmax_forward(sc, p);
      kernels::gsa_slot_softmax_forward(ref64(sc), p_ref);
      expect_close(p, p_ref, tol_for(dt), "slot softmax " + n);
      const Tensor dp = random_cuda(s, ++seed, dt);
      Tensor ds = poisoned_cuda(s, dt), ds_ref = ref_empty(s);
      kernels::gsa_slot_softmax_backward(p, dp, ds);
      kernels::gsa_slot_softmax_backward(ref64(p), ref64(dp), ds_ref);
      expect_close(ds, ds_ref, tol_for(dt), "slot softmax backward " + n);
    }
  }
}

// ---- basic linear attention with key widths outside {64, 128} ----------------------------------

TEST(WideKeyLinearAttentionCuda, BlocksOfKeyColumnsMatchCpu) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 1100;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t Dk : {16, 73, 200, 273}) {
      const int64_t B = 2, T = 150, H = 2, Dv = 64;
      const std::string n = std::string(dt_name(dt)) + " Dk " + std::to_string(Dk);
      const double scale = 1 / std::sqrt(double(Dk));
      const Tensor q = random_cuda({B, T, H, Dk}, ++seed, dt),
                   k = random_cuda({B, T, H, Dk}, ++seed, dt),
                   v = random_cuda({B, T, H, Dv}, ++seed, dt);
      const Tensor s0 = random_cuda({B, H, Dk, Dv}, ++seed, DType::kF32, 0.5);
      Tensor o = poisoned_cuda({B, T, H, Dv}, dt), fs = poisoned_cuda({B, H, Dk, Dv}, DType::kF32);
      Tensor o_ref = ref_empty({B, T, H, Dv}), fs_ref = ref_empty({B, H, Dk, Dv});
      kernels::linear_attention_chunked_forward(q, k, v, scale, 64, s0, o, fs);
      // The reference on the bf16 values the tensor cores see.
      const Tensor qb = ref64(q.to(DType::kBF16)), kb = ref64(k.to(DType::kBF16)),
                   vb = ref64(v.to(DType::kBF16));
      // The CPU chunk must divide T (the GPU's 64 leaves a partial last chunk).
      kernels::linear_attention_chunked_forward(qb, kb, vb, scale, 50, ref64(s0), o_ref, fs_ref);
      expect_close(o, o_ref, 2e-2, "o " + n);
      expect_close(fs, fs_ref, 2e-2, "S_out " + n);
      const Tensor d_o = random_cuda({B, T, H, Dv}, ++seed, dt);
      const Tensor ds = random_cuda({B, H, Dk, Dv}, ++seed, DType::kF32, 0.5);
      Tensor dq = poisoned_cuda({B, T, H, Dk}, dt), dk = poisoned_cuda({B, T, H, Dk}, dt),
             dv = poisoned_cuda({B, T, H, Dv}, dt),
             ds0 = poisoned_cuda({B, H, Dk, Dv}, DType::kF32);
      Tensor dq_ref = ref_empty({B, T, H, Dk}), dk_ref = ref_empty({B, T, H, Dk}),
             dv_ref = ref_empty({B, T, H, Dv}), ds0_ref = ref_empty({B, H, Dk, Dv});
      kernels::linear_attention_chunked_backward(q, k, v, scale, 64, s0, d_o, ds, dq, dk, dv, ds0);
      kernels::linear_attention_chunked_backward(qb, kb, vb, scale, 50, ref64(s0),
                                                 ref64(d_o.to(DType::kBF16)), ref64(ds), dq_ref,
                                                 dk_ref, dv_ref, ds0_ref);
      expect_close(dq, dq_ref, 2e-2, "dq " + n);
      expect_close(dk, dk_ref, 2e-2, "dk " + n);
      expect_close(dv, dv_ref, 2e-2, "dv " + n);
      expect_close(ds0, ds0_ref, 2e-2, "dS_in " + n);
    }
  }
}

// ---- whole mixers: CPU (f64) against cuda:0 (f32), same weights --------------------------------

struct MixerCase {
  std::string name;
  MC::Kind kind;
  MC::FeatureMap map;
  int64_t head, feature_dim;
  bool conv;
};

config::Config mixer_config(const MixerCase& c) {
  config::Config cfg = load_config({}, {});
  auto* m = cfg.mutable_model();
  m->set_hidden_size(128);
  m->set_num_layers(1);
  m->set_layer_pattern("L");
  auto* mx = m->mutable_mixer();
  mx->set_kind(c.kind);
  mx->set_num_heads(2);
  mx->set_head_dim(static_cast<int>(c.head));
  mx->set_chunk_size(64);
  mx->set_feature_map(c.map);
  mx->set_feature_dim(static_cast<int>(c.feature_dim));
  mx->set_short_conv(c.conv ? MC::ON : MC::OFF);
  mx->set_conv_size(4);
  if (c.kind == MC::LINEAR_ATTENTION) mx->set_value_dim(64);
  cfg.mutable_data()->set_seq_len(192);
  return cfg;
}

MixerPair make_pair(const MixerCase& c) {
  return make_mixer_pair(mixer_config(c), [](Parameter& g) {
    // ReBased's affine starts at (1, 0): a random shift shows a wrong beta path.
    if (g.name.find("feature_map.beta") != std::string::npos)
      g.value = random_tensor(g.value.shape(), 78, DType::kF64, 0.3).to(DType::kF32);
  });
}

constexpr double kTolNorm = 2e-2, kTolMax = 6e-2;

void expect_param_grads_close(const MixerPair& p) {
  for (size_t i = 0; i < p.pg.size(); ++i) {
    ASSERT_EQ(p.pc[i]->name, p.pg[i]->name);
    EXPECT_FALSE(p.pg[i]->grad.device().is_cpu()) << p.pg[i]->name;
    // As in decay_mixer_cuda_test: q_proj under a per-head output norm and the scalar decay's
    // parameters (sums of cancelling bf16 products) get the wider allowance.
    const std::string& nm = p.pg[i]->name;
    const bool loose =
        nm.find("q_proj") != std::string::npos || nm.find("gk_proj") != std::string::npos ||
        nm.find("A_log") != std::string::npos || nm.find("dt_bias") != std::string::npos;
    expect_norm_close(p.pg[i]->grad, p.pc[i]->grad, loose ? 1.5e-1 : kTolNorm,
                      loose ? 2e-1 : kTolMax, "d " + nm);
  }
}

const MixerCase kCases[] = {
    {"SIMPLE_GLA + short conv", MC::SIMPLE_GLA, MC::IDENTITY, 64, 16, true},
    {"LIGHTNING + short conv", MC::LIGHTNING, MC::IDENTITY, 128, 16, true},
    {"LINEAR_ATTENTION HEDGEHOG (f 32: Dk 64)", MC::LINEAR_ATTENTION, MC::HEDGEHOG, 64, 32, false},
    {"LINEAR_ATTENTION HEDGEHOG (f 48: Dk 96)", MC::LINEAR_ATTENTION, MC::HEDGEHOG, 64, 48, false},
    {"LINEAR_ATTENTION BASED (f 16: Dk 273)", MC::LINEAR_ATTENTION, MC::BASED, 64, 16, false},
    {"LINEAR_ATTENTION REBASED (f 8: Dk 64)", MC::LINEAR_ATTENTION, MC::REBASED, 64, 8, false},
    {"LINEAR_ATTENTION REBASED (f 12: Dk 144)", MC::LINEAR_ATTENTION, MC::REBASED, 64, 12, false},
    {"LINEAR_ATTENTION COSINE", MC::LINEAR_ATTENTION, MC::COSINE, 64, 16, false},
    {"LINEAR_ATTENTION identity + short conv", MC::LINEAR_ATTENTION, MC::IDENTITY, 64, 16, true},
    {"MAMBA2 (conv on)", MC::MAMBA2, MC::IDENTITY, 64, 16, true},
    {"MAMBA2 (conv off)", MC::MAMBA2, MC::IDENTITY, 64, 16, false},
};

TEST(ConvFeatureMixerCuda, ForwardBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 192, D = 128;
  for (const MixerCase& c : kCases) {
    SCOPED_TRACE(c.name);
    std::printf("%s\n", c.name.c_str());
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
    expect_param_grads_close(p);
  }
}

// A segment in the middle of a sequence: the halo rows of the previous segment, an incoming
// state and a gradient reaching the final state; the halo's and the state's gradients back.
TEST(ConvFeatureMixerCuda, SegmentWithHaloAndStatesMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 128, D = 128;
  for (const MixerCase& c : {kCases[0], kCases[4], kCases[9]}) {
    SCOPED_TRACE(c.name);
    std::printf("segment: %s\n", c.name.c_str());
    MixerPair p = make_pair(c);
    const int64_t halo = p.gpu->halo_size();
    EXPECT_EQ(halo, c.conv ? 3 : 0);
    // The state's shape from a CPU segment without an incoming state.
    SegmentOut probe;
    p.cpu->forward_segment(random_tensor({B, T, D}, 90), SegmentIn{}, &probe);
    p.cpu->release_saved();
    ASSERT_EQ(probe.final_states.size(), 1u);
    const Shape ss = probe.final_states[0].shape();
    const Tensor x = random_cuda({B, T, D}, 91, DType::kF32),
                 dy = random_cuda({B, T, D}, 92, DType::kF32);
    const Tensor s_in = random_cuda(ss, 93, DType::kF32, 0.5),
                 ds_out = random_cuda(ss, 94, DType::kF32, 0.5);
    const Tensor h = halo > 0 ? random_cuda({B, halo, D}, 95, DType::kF32) : Tensor();
    SegmentOut out, out_r;
    SegmentGradOut gout, gout_r;
    Tensor y, dx;
    {
      const DefaultDeviceScope on(Device::cuda(0));
      y = p.gpu->forward_segment(x, SegmentIn{{s_in}, h}, &out);
      dx = p.gpu->backward_segment(dy, SegmentGradIn{{ds_out}}, &gout);
    }
    const Tensor y_r = p.cpu->forward_segment(
        ref64(x), SegmentIn{{ref64(s_in)}, h.defined() ? ref64(h) : Tensor()}, &out_r);
    const Tensor dx_r = p.cpu->backward_segment(ref64(dy), SegmentGradIn{{ref64(ds_out)}}, &gout_r);
    expect_norm_close(y, y_r, kTolNorm, kTolMax, "y");
    expect_norm_close(out.final_states[0], out_r.final_states[0], kTolNorm, kTolMax, "S_out");
    expect_norm_close(dx, dx_r, kTolNorm, kTolMax, "dx");
    expect_norm_close(gout.d_states[0], gout_r.d_states[0], kTolNorm, kTolMax, "dS_in");
    if (halo > 0) {
      ASSERT_TRUE(gout.d_halo.defined());
      expect_norm_close(gout.d_halo, gout_r.d_halo, kTolNorm, kTolMax, "d_halo");
    }
    expect_param_grads_close(p);
  }
}

}  // namespace
}  // namespace linea
