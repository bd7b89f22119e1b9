// The vector-decay chunk scan (kernels/cuda/vector_decay_scan.h: GLA, HGRN2) behind
// gated_linear_attention_chunked_forward/backward with gk [B, T, H, Dk], against the CPU chunked
// kernel run in f64 on the values the GPU saw: outputs, final state, dq, dk, dv, dgk and dS_in,
// with an incoming state and a gradient reaching the final state, B = 2, H = 4, T in {64, 256} (and
// a partial last chunk, T = 200), D in {64, 128}, gates from gentle (GLA's logsigmoid / 16) to
// strong (logsigmoid, about -0.7 a token: exp(b) reaches 1e-20 within a chunk).
//
// Tolerance: the scan's products run on tensor cores with bf16 operands, also for f32 storage (q,
// k, v, dO, their decayed copies, the scores, P and the states are rounded to 8 significant bits
// on the way in; accumulation, decays and states stay f32), so both storages are held to bf16-level
// bounds, as the scalar chunk scan and softmax attention are: 2e-2 of the largest reference value
// for o, dq, dk, dv (sums of up to Dk * 64 rounded products, plus one rounding of bf16 outputs),
// dgk (a sum of differences q dq - k dk that partly cancel) and the states S_out, dS_in (under
// strong gates a state is a few recent terms, each off by up to two roundings, 2 * 2^-9; measured
// on an H200: at most 5.9e-3 for the states, 4.8e-3 elsewhere, the strong gates included). The
// strong gates (exp(b) down to 1e-20 within a chunk) check the sub-chunk factorisation: its factors
// are <= 1, so nothing overflows or loses range.
#include <cmath>
#include <cstdio>
#include <string>

#include "kernels/gated_linear_attention.h"
#include "kernels/gates.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

struct Case {
  int64_t T, D;
  double gate_strength;  // gk = logsigmoid(z) * strength
  DType dt;
};

void run_case(const Case& c) {
  const int64_t B = 2, H = 4, T = c.T, D = c.D;
  const double scale = 1.0 / std::sqrt(double(D));
  const std::string name = "T=" + std::to_string(T) + " D=" + std::to_string(D) + " gate x" +
                           std::to_string(c.gate_strength).substr(0, 5) +
                           (c.dt == DType::kBF16 ? " bf16" : " f32");
  SCOPED_TRACE(name);
  const Shape qs{B, T, H, D}, ss{B, H, D, D};
  const Tensor q = random_cuda(qs, 1, c.dt), k = random_cuda(qs, 2, c.dt),
               v = random_cuda(qs, 3, c.dt), d_o = random_cuda(qs, 4, c.dt);
  // gk <= 0 made on the CPU in f64 then stored f32: logsigmoid(z) * strength.
  Tensor z = random_tensor(qs, 5, DType::kF64, 1.5),
         g64 = Tensor::empty(qs, DType::kF64, Device::cpu());
  kernels::log_sigmoid_decay_forward(z, 1.0 / c.gate_strength, g64);
  const Tensor gk = g64.to(DType::kF32).cuda(0);
  const Tensor s_in = random_cuda(ss, 6, DType::kF32, 0.5),
               ds_out = random_cuda(ss, 7, DType::kF32, 0.5);

  Tensor o = poisoned_cuda(qs, c.dt), s_out = poisoned_cuda(ss, DType::kF32);
  kernels::gated_linear_attention_chunked_forward(q, k, v, gk, Tensor(), scale, 64, s_in, o, s_out);
  Tensor dq = poisoned_cuda(qs, c.dt), dk = poisoned_cuda(qs, c.dt), dv = poisoned_cuda(qs, c.dt);
  Tensor dgk = poisoned_cuda(qs, DType::kF32), ds_in = poisoned_cuda(ss, DType::kF32), no_dgv;
  kernels::gated_linear_attention_chunked_backward(q, k, v, gk, Tensor(), scale, 64, s_in, d_o,
                                                   ds_out, dq, dk, dv, dgk, no_dgv, ds_in);

  // The CPU reference in f64 with a chunk that divides T.
  const int64_t chunk = T % 64 == 0 ? 64 : 40;
  const Tensor q_r = ref64(q), k_r = ref64(k), v_r = ref64(v), do_r = ref64(d_o), g_r = ref64(gk);
  Tensor o_r = Tensor::empty(qs, DType::kF64, Device::cpu()),
         s_out_r = Tensor::empty(ss, DType::kF64, Device::cpu());
  kernels::gated_linear_attention_chunked_forward(q_r, k_r, v_r, g_r, Tensor(), scale, chunk,
                                                  ref64(s_in), o_r, s_out_r);
  Tensor dq_r = o_r.clone(), dk_r = o_r.clone(), dv_r = o_r.clone(), dgk_r = o_r.clone();
  Tensor ds_in_r = s_out_r.clone(), no_dgv_r;
  kernels::gated_linear_attention_chunked_backward(q_r, k_r, v_r, g_r, Tensor(), scale, chunk,
                                                   ref64(s_in), do_r, ref64(ds_out), dq_r, dk_r,
                                                   dv_r, dgk_r, no_dgv_r, ds_in_r);
  const double tol = 2e-2;
  struct Out {
    const char* what;
    const Tensor *got, *ref;
    double tol;
  } outs[] = {{"o", &o, &o_r, tol},
              {"S_out", &s_out, &s_out_r, tol},
              {"dq", &dq, &dq_r, tol},
              {"dk", &dk, &dk_r, tol},
              {"dv", &dv, &dv_r, tol},
              {"dgk", &dgk, &dgk_r, tol},
              {"dS_in", &ds_in, &ds_in_r, tol}};
  std::printf("%s:", name.c_str());
  for (const Out& x : outs) {
    const double e = rel_err(*x.got, *x.ref);
    EXPECT_LT(e, x.tol) << x.what;
    std::printf("  %s %.1e", x.what, e);
  }
  std::printf("\n");
}

TEST(VectorDecayScanCuda, MatchesCpuChunked) {
  LINEA_REQUIRE_CUDA();
  for (int64_t D : {64, 128})
    for (int64_t T : {64, 256}) {
      run_case({T, D, 1.0 / 16, DType::kF32});
      run_case({T, D, 1.0, DType::kF32});
    }
  // A partial last chunk, and bf16 storage.
  run_case({200, 64, 0.25, DType::kF32});
  run_case({200, 128, 1.0 / 16, DType::kBF16});
  run_case({256, 128, 1.0, DType::kBF16});
  // Gates 4x logsigmoid (about -3 a token): exp(b) underflows f32 within a chunk, so an unsplit
  // exp(b_t) exp(-b_s) would overflow; the sub-chunk factors stay <= 1.
  run_case({256, 64, 4.0, DType::kF32});
}

// Without incoming state, final state or their gradients, and without dgk (HGRN2-style callers
// that want everything, GLA callers that skip nothing: the defaults): o and the gradients equal
// those of the run with zero states.
TEST(VectorDecayScanCuda, OptionalStatesAreZero) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 128, H = 2, D = 64;
  const Shape qs{B, T, H, D}, ss{B, H, D, D};
  const Tensor q = random_cuda(qs, 11, DType::kF32), k = random_cuda(qs, 12, DType::kF32),
               v = random_cuda(qs, 13, DType::kF32), d_o = random_cuda(qs, 14, DType::kF32);
  Tensor z = random_cuda(qs, 15, DType::kF32), gk = poisoned_cuda(qs, DType::kF32);
  kernels::log_sigmoid_decay_forward(z, 4.0, gk);
  const Tensor zero = Tensor::zeros(ss, DType::kF32, Device::cuda(0));
  Tensor o1 = poisoned_cuda(qs, DType::kF32), o2 = poisoned_cuda(qs, DType::kF32), none;
  kernels::gated_linear_attention_chunked_forward(q, k, v, gk, Tensor(), 0.125, 64, Tensor(), o1,
                                                  none);
  Tensor s_out = poisoned_cuda(ss, DType::kF32);
  kernels::gated_linear_attention_chunked_forward(q, k, v, gk, Tensor(), 0.125, 64, zero, o2,
                                                  s_out);
  EXPECT_EQ(rel_err(o1, o2), 0.0);
  Tensor dq1 = poisoned_cuda(qs, DType::kF32), dk1 = dq1.clone(), dv1 = dq1.clone();
  Tensor dq2 = dq1.clone(), dk2 = dq1.clone(), dv2 = dq1.clone(), dgk2 = dq1.clone(),
         ds_in = poisoned_cuda(ss, DType::kF32);
  Tensor no_dgk, no_dgv, no_ds;
  kernels::gated_linear_attention_chunked_backward(q, k, v, gk, Tensor(), 0.125, 64, Tensor(), d_o,
                                                   Tensor(), dq1, dk1, dv1, no_dgk, no_dgv, no_ds);
  kernels::gated_linear_attention_chunked_backward(q, k, v, gk, Tensor(), 0.125, 64, zero, d_o,
                                                   zero, dq2, dk2, dv2, dgk2, no_dgv, ds_in);
  EXPECT_EQ(rel_err(dq1, dq2), 0.0);
  EXPECT_EQ(rel_err(dk1, dk2), 0.0);
  EXPECT_EQ(rel_err(dv1, dv2), 0.0);
  // Sizes the scan does not take are refused with the size named.
  const Shape bad{B, T, H, 96};
  Tensor qb = random_cuda(bad, 16, DType::kF32),
         gb = Tensor::zeros(bad, DType::kF32, Device::cuda(0));
  Tensor ob = poisoned_cuda(bad, DType::kF32);
  EXPECT_THROW(kernels::gated_linear_attention_chunked_forward(qb, qb, qb, gb, Tensor(), 0.1, 64,
                                                               Tensor(), ob, none),
               Error);
}

}  // namespace
}  // namespace linea
