// CUDA kernel benchmarks: each op timed with CUDA events on the current stream after warm-up,
// median (and min) of many runs, on random inputs generated on the device. Prints a table and,
// with --json PATH, writes the same rows as JSON. Ceilings to compare with are in GPU.md:
// cuBLAS bf16 GEMM 8192^3 1.603 ms (686 TFLOP/s), device copy about 4.26 TB/s, torch SDPA causal
// (flash) at B8 T4096 H8 D128 bf16 0.512 ms forward, 2.164 ms forward + backward.
//
//   kernels_bench [--json out.json] [--quick] [--only GROUP]   (GROUP: gemm, norm, loss, optim,
//   attention, decay, delta, moe, experts)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/modules/matmul_precision.h"
#include "core/modules/moe/grouped_experts.h"
#include "core/modules/moe/moe_layer.h"
#include "core/modules/swiglu_mlp.h"
#include "core/tensor/cuda_allocator.h"
#include "core/tensor/cuda_device.h"
#include "core/tensor/cuda_stream.h"
#include "core/tensor/tensor.h"
#include "kernels/adamw.h"
#include "kernels/cross_entropy.h"
#include "kernels/cuda/ops.h"
#include "kernels/delta_rule.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/gated_linear_attention.h"
#include "kernels/gates.h"
#include "kernels/grouped_gemm.h"
#include "kernels/l2norm.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/softmax_attention.h"
#include "kernels/swiglu.h"

namespace {

using linea::DType;
using linea::Tensor;
const linea::Device kGpu = linea::Device::cuda(0);

struct Row {
  std::string name, shape;
  double median_ms = 0, min_ms = 0;
  int reps = 0;
  double work = 0;  // FLOPs or bytes moved
  bool flops = false;
};

std::vector<Row> g_rows;
bool g_quick = false;

Tensor randn(const linea::Shape& s, DType dt, uint64_t seed, double sd = 1.0) {
  Tensor t = Tensor::empty(s, dt, kGpu);
  linea::kernels::cuda::fill_normal(t, seed, sd);
  return t;
}

void bench(const std::string& name, const std::string& shape, double work, bool flops,
           const std::function<void()>& f, int reps = 50) {
  if (g_quick) reps = std::min(reps, 5);
  for (int i = 0; i < 3; ++i) f();
  linea::cuda::synchronize(0);
  const int64_t mallocs = linea::cuda::allocator_stats(0).cuda_malloc_calls;
  linea::cuda::EventTimer timer(0);
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    timer.start();
    f();
    timer.stop();
    ms.push_back(timer.elapsed_ms());
  }
  std::sort(ms.begin(), ms.end());
  Row r{name, shape, ms[ms.size() / 2], ms[0], reps, work, flops};
  const double rate = work / (r.median_ms * 1e-3) / 1e12;
  std::printf(
      "%-28s %-26s %9.4f %9.4f %9.1f %s%s\n", name.c_str(), shape.c_str(), r.median_ms, r.min_ms,
      flops ? rate : rate * 1e3, flops ? "TFLOP/s" : "GB/s",
      linea::cuda::allocator_stats(0).cuda_malloc_calls != mallocs ? "  (cudaMalloc!)" : "");
  std::fflush(stdout);
  g_rows.push_back(r);
}

void gemm_benches() {
  for (int64_t n : {int64_t(8192), int64_t(4096)}) {
    Tensor a = randn({n, n}, DType::kBF16, 1), b = randn({n, n}, DType::kBF16, 2);
    Tensor c = Tensor::empty({n, n}, DType::kBF16, kGpu);
    const std::string s = std::to_string(n) + "^3";
    bench("gemm_bf16_nn", s, 2.0 * n * n * n, true,
          [&] { linea::kernels::gemm(a, false, b, false, c, 1.0, 0.0); });
    bench("gemm_bf16_nt (linear fwd)", s, 2.0 * n * n * n, true,
          [&] { linea::kernels::gemm(a, false, b, true, c, 1.0, 0.0); });
  }
  const int64_t n = 4096;
  Tensor a = randn({n, n}, DType::kF32, 3), b = randn({n, n}, DType::kF32, 4);
  Tensor c = Tensor::empty({n, n}, DType::kF32, kGpu);
  bench(
      "gemm_f32_nn (no tf32)", "4096^3", 2.0 * n * n * n, true,
      [&] { linea::kernels::gemm(a, false, b, false, c, 1.0, 0.0); }, 20);
}

void norm_act_benches() {
  const int64_t rows = 32768, d = 2048;
  const std::string s = "[32768, 2048] bf16";
  Tensor x = randn({rows, d}, DType::kBF16, 5), w = randn({d}, DType::kBF16, 6);
  Tensor y = Tensor::empty({rows, d}, DType::kBF16, kGpu);
  Tensor rstd = Tensor::empty({rows}, DType::kF32, kGpu);
  const double act = 2.0 * rows * d;  // bytes of one bf16 activation
  bench("rmsnorm_fwd", s, 2 * act, false,
        [&] { linea::kernels::rmsnorm_forward(x, w, 1e-6, y, rstd); });
  Tensor dy = randn({rows, d}, DType::kBF16, 7), dx = Tensor::empty({rows, d}, DType::kBF16, kGpu);
  Tensor dw = Tensor::zeros({d}, DType::kF32, kGpu);
  bench("rmsnorm_bwd", s, 3 * act, false,
        [&] { linea::kernels::rmsnorm_backward(x, w, rstd, dy, dx, dw); });

  const int64_t f = 4096;
  Tensor g = randn({rows, f}, DType::kBF16, 8), u = randn({rows, f}, DType::kBF16, 9);
  Tensor h = Tensor::empty({rows, f}, DType::kBF16, kGpu);
  const double act_f = 2.0 * rows * f;
  bench("swiglu_fwd", "[32768, 4096] bf16", 3 * act_f, false,
        [&] { linea::kernels::swiglu_forward(g, u, h); });
  Tensor dg = Tensor::empty({rows, f}, DType::kBF16, kGpu), du = dg.clone();
  bench("swiglu_bwd", "[32768, 4096] bf16", 5 * act_f, false,
        [&] { linea::kernels::swiglu_backward(g, u, h, dg, du); });

  Tensor q = randn({8, 4096, 8, 128}, DType::kBF16, 10);
  Tensor qr = Tensor::empty(q.shape(), DType::kBF16, kGpu);
  linea::kernels::RopeParams p;
  bench("rope_fwd", "[8, 4096, 8, 128] bf16", 2.0 * 2 * q.numel(), false,
        [&] { linea::kernels::rope_forward(q, p, qr); });
}

void loss_embed_benches() {
  const int64_t rows = 8192, vocab = 151936;
  const std::string s = "[8192, 151936] bf16";
  Tensor z = randn({rows, vocab}, DType::kBF16, 11, 2.0);
  std::vector<double> ids(rows);
  for (int64_t i = 0; i < rows; ++i) ids[i] = static_cast<double>((i * 7919) % vocab);
  Tensor t = Tensor::from_vector({rows}, ids, DType::kI32).cuda(0);
  Tensor lse = Tensor::empty({rows}, DType::kF32, kGpu);
  const double logits_bytes = 2.0 * rows * vocab;
  int64_t n_valid = 0;
  bench(
      "cross_entropy_fwd (+sync)", s, logits_bytes, false,
      [&] { linea::kernels::cross_entropy_forward(z, t, lse, &n_valid); }, 20);
  Tensor dz = Tensor::empty({rows, vocab}, DType::kBF16, kGpu);
  bench(
      "cross_entropy_bwd", s, 2 * logits_bytes, false,
      [&] { linea::kernels::cross_entropy_backward(z, t, lse, 1.0, n_valid, dz); }, 20);

  const int64_t tokens = 32768, d = 1024;
  Tensor table = randn({vocab, d}, DType::kBF16, 12);
  std::vector<double> tok(tokens);
  for (int64_t i = 0; i < tokens; ++i) tok[i] = static_cast<double>((i * 104729) % vocab);
  Tensor tid = Tensor::from_vector({tokens}, tok, DType::kI32).cuda(0);
  Tensor e = Tensor::empty({tokens, d}, DType::kBF16, kGpu);
  bench("embedding_fwd (+id check)", "32768 x 1024 bf16", 2 * 2.0 * tokens * d, false,
        [&] { linea::kernels::embedding_forward(tid, table, e); });
  Tensor de = randn({tokens, d}, DType::kBF16, 17);
  Tensor dtable = Tensor::zeros({vocab, d}, DType::kF32, kGpu);
  // Bytes: dy read, and the touched dtable rows read and written (every id distinct here).
  bench("embedding_bwd (+id check, sort)", "32768 x 1024 bf16 -> f32", (2.0 + 8.0) * tokens * d,
        false, [&] { linea::kernels::embedding_backward(tid, de, dtable); });
}

void optim_benches() {
  const int64_t n = 300'000'000;
  Tensor p = randn({n}, DType::kF32, 13), g = randn({n}, DType::kF32, 14, 0.01);
  Tensor m = Tensor::zeros({n}, DType::kF32, kGpu), v = m.clone();
  linea::kernels::AdamWStep st;
  st.lr = 1e-4;
  st.weight_decay = 0.1;
  st.bias_correction1 = 0.1;
  st.bias_correction2 = 0.001;
  bench(
      "adamw_step (f32 grad)", "300M f32", 28.0 * n, false,
      [&] { linea::kernels::adamw_step(p, g, m, v, st); }, 20);
  Tensor gb = randn({n}, DType::kBF16, 15, 0.01);
  bench(
      "adamw_step (bf16 grad)", "300M f32", 26.0 * n, false,
      [&] { linea::kernels::adamw_step(p, gb, m, v, st); }, 20);
  bench(
      "sum_squares (+sync)", "300M f32", 4.0 * n, false, [&] { linea::kernels::sum_squares(g); },
      20);
  Tensor big = randn({int64_t(1) << 29}, DType::kF32, 16);  // 2 GiB
  Tensor dst = Tensor::empty(big.shape(), DType::kF32, kGpu);
  bench(
      "device copy 2 GiB", "2^29 f32", 2.0 * big.nbytes(), false, [&] { dst.copy_from(big); }, 20);
}

// Causal softmax attention at GPU.md's shape. FLOPs as flash-attention counts them: the forward's
// two products over half the (query, key) pairs, 2 B H T^2 D; the backward's five, 2.5 times that.
void attention_benches() {
  const int64_t B = 8, T = 4096, H = 8, D = 128;
  const std::string s = "B8 T4096 H8 D128 bf16";
  const double fwd = 2.0 * B * H * T * T * D;
  for (int64_t hkv : {H, int64_t(2)}) {
    const std::string shape = hkv == H ? s : "B8 T4096 H8/2 D128 bf16";
    Tensor q = randn({B, T, H, D}, DType::kBF16, 30), k = randn({B, T, hkv, D}, DType::kBF16, 31);
    Tensor v = randn({B, T, hkv, D}, DType::kBF16, 32), d_o = randn({B, T, H, D}, DType::kBF16, 33);
    Tensor o = Tensor::empty(q.shape(), DType::kBF16, kGpu);
    Tensor lse = Tensor::empty({B, H, T}, DType::kF32, kGpu);
    Tensor dq = Tensor::empty(q.shape(), DType::kBF16, kGpu);
    Tensor dk = Tensor::empty(k.shape(), DType::kBF16, kGpu), dv = dk.clone();
    const double scale = 1.0 / std::sqrt(double(D));
    const linea::kernels::CausalMask mask;
    bench(
        "attention_fwd (causal)", shape, fwd, true,
        [&] { linea::kernels::softmax_attention_forward(q, k, v, scale, mask, o, lse); }, 20);
    bench(
        "attention_bwd (causal)", shape, 2.5 * fwd, true,
        [&] {
          linea::kernels::softmax_attention_backward(q, k, v, o, lse, d_o, scale, mask, dq, dk, dv);
        },
        20);
    bench(
        "attention_fwd+bwd (causal)", shape, 3.5 * fwd, true,
        [&] {
          linea::kernels::softmax_attention_forward(q, k, v, scale, mask, o, lse);
          linea::kernels::softmax_attention_backward(q, k, v, o, lse, d_o, scale, mask, dq, dk, dv);
        },
        20);
  }
}

// The decay scans (bf16 q, k, v, dO, f32 gates logsigmoid(z) / 16 <= 0): the scalar-decay chunk
// scan (Lightning, simple GLA) and the vector-decay scan (GLA, HGRN2), forward, backward (with
// dgk) and forward + backward, at the zoo's shape B = 8, T = 4096, H = 8, D = 128 and at
// B = 1, T = 32768 (the long-sequence rows of docs/performance.md). The FLOP counts are the useful
// products only: forward per chunk of C tokens 2 C Dk Dv (state) + 2 C Dk Dv (inter-chunk output)
// + C^2 (Dk + Dv) (causal scores and their product); backward 2.5 times that.
void decay_scan_benches() {
  const int64_t H = 8, D = 128, C = 64;
  for (auto [B, T] :
       {std::pair{int64_t(8), int64_t(4096)}, std::pair{int64_t(1), int64_t(32768)}}) {
    const linea::Shape qs{B, T, H, D};
    const std::string s = "[" + std::to_string(B) + ", " + std::to_string(T) + ", 8, 128] bf16";
    Tensor q = randn(qs, DType::kBF16, 21), k = randn(qs, DType::kBF16, 22);
    Tensor v = randn(qs, DType::kBF16, 23), d_o = randn(qs, DType::kBF16, 24);
    Tensor o = Tensor::empty(qs, DType::kBF16, kGpu), none;
    Tensor dq = Tensor::empty(qs, DType::kBF16, kGpu), dk = dq.clone(), dv = dq.clone();
    const double fwd = double(B) * H * (T / C) * (4.0 * C * D * D + double(C) * C * 2 * D);
    for (bool vector : {false, true}) {
      const linea::Shape gs = vector ? qs : linea::Shape{B, T, H};
      Tensor z = randn(gs, DType::kF32, 25), gk = Tensor::empty(gs, DType::kF32, kGpu);
      linea::kernels::log_sigmoid_decay_forward(z, 16.0, gk);
      Tensor dgk = Tensor::empty(gs, DType::kF32, kGpu);
      const std::string n = vector ? "gla vector decay" : "gla scalar decay";
      auto forward = [&] {
        linea::kernels::gated_linear_attention_chunked_forward(q, k, v, gk, none, 0.088, C, none, o,
                                                               none);
      };
      auto backward = [&] {
        linea::kernels::gated_linear_attention_chunked_backward(
            q, k, v, gk, none, 0.088, C, none, d_o, none, dq, dk, dv, dgk, none, none);
      };
      bench(n + " fwd", s, fwd, true, forward, 20);
      bench(n + " bwd", s, 2.5 * fwd, true, backward, 20);
      bench(
          n + " fwd+bwd", s, 3.5 * fwd, true,
          [&] {
            forward();
            backward();
          },
          20);
    }
  }
}

// The delta rule (DeltaNet, Gated DeltaNet) at the same shape: q, k L2-normalised rows, bf16 q, k,
// v, dO, f32 beta in (0, 1) and g <= 0; forward, and backward with dg. FLOPs as for the decay scans
// plus the chunk's K K^T, inverse and W, U: C^2 Dk + C^3 / 3 + C^2 (Dk + Dv) per chunk.
void delta_rule_benches() {
  const int64_t B = 8, T = 4096, H = 8, D = 128, C = 64;
  const linea::Shape qs{B, T, H, D}, gs{B, T, H};
  const std::string s = "[8, 4096, 8, 128] bf16";
  auto unit_rows = [&](uint64_t seed) {
    Tensor x = randn(qs, DType::kF32, seed), y = Tensor::empty(qs, DType::kF32, kGpu);
    Tensor rstd = Tensor::empty(gs, DType::kF32, kGpu);
    linea::kernels::l2norm_forward(x, 1e-6, y, rstd);
    return y.to(DType::kBF16);
  };
  Tensor q = unit_rows(31), k = unit_rows(32);
  Tensor v = randn(qs, DType::kBF16, 33), d_o = randn(qs, DType::kBF16, 34);
  Tensor zb = randn(gs, DType::kF32, 35), beta = Tensor::empty(gs, DType::kF32, kGpu);
  linea::kernels::delta_beta_forward(zb, 1.0, beta);
  Tensor zg = randn(gs, DType::kF32, 36), g = Tensor::empty(gs, DType::kF32, kGpu);
  linea::kernels::log_sigmoid_decay_forward(zg, 16.0, g);
  Tensor o = Tensor::empty(qs, DType::kBF16, kGpu), none;
  Tensor dq = Tensor::empty(qs, DType::kBF16, kGpu), dk = dq.clone(), dv = dq.clone();
  Tensor dg = Tensor::empty(gs, DType::kF32, kGpu), dbeta = dg.clone();
  const double fwd =
      double(B) * H * (T / C) *
      (4.0 * C * D * D + double(C) * C * 2 * D + double(C) * C * 3 * D + double(C) * C * C / 3);
  bench(
      "delta rule fwd", s, fwd, true,
      [&] {
        linea::kernels::delta_rule_chunked_forward(q, k, v, g, beta, 0.088, C, none, o, none);
      },
      20);
  bench(
      "delta rule bwd", s, 2.5 * fwd, true,
      [&] {
        linea::kernels::delta_rule_chunked_backward(q, k, v, g, beta, 0.088, C, none, d_o, none, dq,
                                                    dk, dv, dg, dbeta, none);
      },
      20);
}

}  // namespace

// The whole MoE layer (router, plan with its one read-back, permutation, one cuBLAS SwiGLU per
// expert, combine, shared expert), f32; work = the FLOPs of the routed and shared experts.
void moe_benches() {
  for (auto [E, F] : {std::pair{int64_t(8), int64_t(1024)}, std::pair{int64_t(64), int64_t(256)}}) {
    const int64_t N = 8192, D = 1024, k = 2;
    linea::config::MoeConfig cfg;
    cfg.set_num_experts(static_cast<int>(E));
    cfg.set_top_k(static_cast<int>(k));
    cfg.set_expert_intermediate_size(static_cast<int>(F));
    cfg.set_num_shared_experts(1);
    cfg.set_shared_intermediate_size(static_cast<int>(F));
    cfg.set_shared_expert_gate(true);
    cfg.set_aux_loss_coeff(0.01);
    cfg.set_z_loss_coeff(0.001);
    linea::MoeLayer layer("moe", D, cfg, DType::kF32);
    layer.init(1, 0.02, 0.02);
    linea::ParameterList ps;
    layer.collect(ps);
    for (linea::Parameter* p : ps) {
      p->value = p->value.to(kGpu);
      p->grad = p->grad.to(kGpu);
    }
    Tensor x = randn({N, D}, DType::kF32, 21), dy = randn({N, D}, DType::kF32, 22);
    const std::string s =
        "N 8192, D 1024, E " + std::to_string(E) + ", k 2, F " + std::to_string(F) + ", f32";
    const double fwd = 2.0 * 3 * D * F * N * (k + 1);
    bench(
        "moe_layer_fwd", s, fwd, true, [&] { layer.forward(x); }, 20);
    bench(
        "moe_layer_fwd_bwd", s, 3 * fwd, true,
        [&] {
          layer.forward(x);
          layer.backward(dy);
        },
        20);
  }
}

// The MoE experts of the A0.3B-2B configs at 8 x 4096 tokens, top-8: 64 experts, 262144 routed
// rows, D 1024, F 896, uniform and skewed row counts. Old: one SwiGLUMLP per expert on its f32 row
// block under bf16 precision (the bf16 copies of rows and weights made per Linear, as the MoE
// layer ran before grouped_experts.h). New: GroupedExperts on bf16 rows (stacked bf16 weights
// made per pass, included), with the grouped cuBLAS call and with LINEA_GROUPED_GEMM=loop.
// Forward and backward timed separately (a forward before each backward, untimed).
void experts_benches() {
  // Modules allocate on the default device (the MoE layer installs this scope itself).
  const linea::DefaultDeviceScope on(kGpu);
  const int64_t E = 64, R = 32768 * 8, D = 1024, F = 896;
  const int reps = g_quick ? 3 : 10;
  const double fwd_flops = 6.0 * R * D * F;
  std::vector<int64_t> uniform(E, R / E), skewed(E, 0);
  {
    // Geometric weights exp(-e / 12) over experts 0..59, experts 60..63 empty.
    double sum = 0;
    for (int64_t e = 0; e < 60; ++e) sum += std::exp(-e / 12.0);
    int64_t given = 0;
    for (int64_t e = 0; e < 60; ++e) {
      skewed[e] = static_cast<int64_t>(R * std::exp(-e / 12.0) / sum);
      given += skewed[e];
    }
    skewed[0] += R - given;
  }
  auto timed = [&](const std::string& name, const std::string& shape, double work,
                   const std::function<void()>& setup, const std::function<void()>& f) {
    for (int i = 0; i < 2; ++i) {
      setup();
      f();
    }
    linea::cuda::synchronize(0);
    linea::cuda::EventTimer timer(0);
    std::vector<float> ms;
    for (int i = 0; i < reps; ++i) {
      setup();
      timer.start();
      f();
      timer.stop();
      ms.push_back(timer.elapsed_ms());
    }
    std::sort(ms.begin(), ms.end());
    Row r{name, shape, ms[ms.size() / 2], ms[0], reps, work, true};
    std::printf("%-28s %-26s %9.4f %9.4f %9.1f TFLOP/s\n", name.c_str(), shape.c_str(), r.median_ms,
                r.min_ms, work / (r.median_ms * 1e-3) / 1e12);
    std::fflush(stdout);
    g_rows.push_back(r);
  };
  auto nothing = [] {};

  // Parameters: f32 masters on the GPU, the same values for both implementations.
  // (No init(): it fills CPU parameters, and the values are drawn on the GPU below.)
  linea::GroupedExperts grouped("experts", 0, E, D, F, DType::kF32);
  std::vector<std::unique_ptr<linea::SwiGLUMLP>> old;
  linea::ParameterList ps;
  grouped.collect(ps);
  for (int64_t e = 0; e < E; ++e) {
    old.push_back(
        std::make_unique<linea::SwiGLUMLP>("experts." + std::to_string(e), D, F, DType::kF32));
    old.back()->collect(ps);
  }
  for (linea::Parameter* p : ps) {
    p->value = randn(p->value.shape(), DType::kF32, 7, 0.02);
    p->grad = Tensor::zeros(p->value.shape(), DType::kF32, kGpu);
  }

  for (const auto& dist :
       {std::pair{std::string("uniform"), uniform}, std::pair{std::string("skewed"), skewed}}) {
    const std::string& label = dist.first;
    const std::vector<int64_t>& counts = dist.second;
    const std::string shape = "E64 R262144 D1024 F896 " + label;
    const Tensor rows32 = randn({R, D}, DType::kF32, 31), dy32 = randn({R, D}, DType::kF32, 32);
    {
      const linea::MatmulPrecisionScope bf16(linea::MatmulPrecision::kBF16);
      auto old_forward = [&] {
        Tensor out = Tensor::empty({R, D}, DType::kF32, kGpu);
        int64_t a = 0;
        for (int64_t e = 0; e < E; a += counts[e], ++e) {
          if (counts[e] == 0) continue;
          out.slice(a, a + counts[e]).copy_from(old[e]->forward(rows32.slice(a, a + counts[e])));
        }
      };
      auto old_backward = [&] {
        Tensor out = Tensor::empty({R, D}, DType::kF32, kGpu);
        int64_t a = 0;
        for (int64_t e = 0; e < E; a += counts[e], ++e) {
          if (counts[e] == 0) continue;
          out.slice(a, a + counts[e]).copy_from(old[e]->backward(dy32.slice(a, a + counts[e])));
        }
      };
      timed("experts_old_loop_fwd", shape, fwd_flops, nothing, old_forward);
      timed("experts_old_loop_bwd", shape, 2 * fwd_flops, old_forward, old_backward);
      for (auto& m : old) m->release_saved();
    }
    const Tensor rows = rows32.to(DType::kBF16), dy = dy32.to(DType::kBF16);
    for (bool loop : {false, true}) {
      if (loop)
        setenv("LINEA_GROUPED_GEMM", "loop", 1);
      else
        unsetenv("LINEA_GROUPED_GEMM");
      const std::string tag = loop ? "experts_new_loop" : "experts_new_grouped";
      auto fwd = [&] { grouped.forward(rows, counts); };
      auto bwd = [&] { grouped.backward(dy, counts); };
      timed(tag + "_fwd", shape, fwd_flops, nothing, fwd);
      timed(tag + "_bwd", shape, 2 * fwd_flops, fwd, bwd);
      grouped.release_saved();
      // The bare gate/up product [R, 2F] (no weight stacking, no SwiGLU).
      const Tensor w = randn({E, 2 * F, D}, DType::kBF16, 33, 0.02);
      Tensor gu = Tensor::empty({R, 2 * F}, DType::kBF16, kGpu);
      timed(std::string(loop ? "gemm_loop" : "gemm_grouped") + "_gate_up", shape,
            2.0 * R * D * 2 * F, nothing,
            [&] { linea::kernels::grouped_linear_forward(rows, w, counts, gu); });
    }
    unsetenv("LINEA_GROUPED_GEMM");
  }
}

int main(int argc, char** argv) {
  std::string json_path, only;  // only: one group of benchmarks (empty: all)
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    if (!std::strcmp(argv[i], "--quick")) g_quick = true;
    if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
  }
  if (linea::cuda::device_count() == 0) {
    std::fprintf(stderr, "kernels_bench: no CUDA device: %s\n",
                 linea::cuda::unavailable_reason().c_str());
    return 2;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s, %d SMs, %.0f MiB L2\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize / 1048576.0);
  std::printf("%-28s %-26s %9s %9s %9s\n", "op", "shape", "median ms", "min ms", "rate");
  try {
    auto group = [&](const char* name, void (*f)()) {
      if (only.empty() || only == name) f();
    };
    group("gemm", gemm_benches);
    group("norm", norm_act_benches);
    group("loss", loss_embed_benches);
    group("optim", optim_benches);
    group("attention", attention_benches);
    group("decay", decay_scan_benches);
    group("delta", delta_rule_benches);
    group("moe", moe_benches);
    group("experts", experts_benches);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernels_bench failed: %s\n", e.what());
    return 1;
  }
  const linea::cuda::AllocatorStats st = linea::cuda::allocator_stats(0);
  std::printf(
      "allocator: %lld cudaMalloc calls, %lld allocations (%lld cache hits), peak %.1f "
      "MiB, reserved %.1f MiB\n",
      static_cast<long long>(st.cuda_malloc_calls), static_cast<long long>(st.allocations),
      static_cast<long long>(st.cache_hits), st.peak_bytes_in_use / 1048576.0,
      st.bytes_reserved / 1048576.0);
  if (!json_path.empty()) {
    nlohmann::json j;
    j["device"] = prop.name;
    for (const Row& r : g_rows) {
      const double rate = r.work / (r.median_ms * 1e-3);
      j["results"].push_back({{"op", r.name},
                              {"shape", r.shape},
                              {"median_ms", r.median_ms},
                              {"min_ms", r.min_ms},
                              {"reps", r.reps},
                              {r.flops ? "tflops" : "gbps", r.flops ? rate / 1e12 : rate / 1e9}});
    }
    j["allocator"] = {{"cuda_malloc_calls", st.cuda_malloc_calls},
                      {"allocations", st.allocations},
                      {"cache_hits", st.cache_hits},
                      {"peak_bytes", st.peak_bytes_in_use},
                      {"reserved_bytes", st.bytes_reserved}};
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return 0;
}
