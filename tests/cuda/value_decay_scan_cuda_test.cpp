// The value-decay chunk scan (kernels/cuda/value_decay_scan.h: GSA's first pass) behind
// gated_linear_attention_chunked_forward/backward with gv [B, T, H, Dv] and no gk, against the CPU
// chunked kernel run in f64 on the values the GPU saw: outputs, final state, dq, dk, dv, dgv and
// dS_in, with an incoming state and a gradient reaching the final state, B = 2, H = 4, T in
// {64, 256} (and a partial last chunk, T = 200), Dk and Dv in {64, 128}, gates from gentle
// (logsigmoid / 16) to strong (logsigmoid, about -0.7 a token, and 4x that: exp(bv) underflows f32
// within a chunk); then the state-only form (o undefined, LASP-2's state pass), the optional
// states, and the refusals.
//
// Tolerance: the scan is f32 on CUDA cores throughout (no tensor cores), so f32 storage is held to
// f32-level bounds, 2e-4 of the largest reference value for every output (sums of up to 64 Dk or
// 64 Dv f32 products, __expf's few-ulp error, and dgv's cumulative sums of o dO - v dv, which
// partly cancel; a host emulation of the device code measured at most 6e-6). With bf16 storage
// the inputs are the same rounded values on both sides; o, dq, dk, dv are rounded once to bf16 on
// the way out (kTolBF16 = 1e-2 of the largest value), while the states and dgv stay f32 (2e-4).
#include <cmath>
#include <cstdio>
#include <string>

#include "kernels/gated_linear_attention.h"
#include "kernels/gates.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

constexpr double kTolScan = 2e-4;

struct Case {
  int64_t T, Dk, Dv;
  double gate_strength;  // gv = logsigmoid(z) * strength
  DType dt;
};

// gv <= 0 made on the CPU in f64 then stored f32 on cuda:0: logsigmoid(z) * strength.
Tensor make_gate(const Shape& s, uint64_t seed, double strength) {
  Tensor z = random_tensor(s, seed, DType::kF64, 1.5),
         g64 = Tensor::empty(s, DType::kF64, Device::cpu());
  kernels::log_sigmoid_decay_forward(z, 1.0 / strength, g64);
  return g64.to(DType::kF32).cuda(0);
}

void run_case(const Case& c) {
  const int64_t B = 2, H = 4, T = c.T, Dk = c.Dk, Dv = c.Dv;
  const double scale = 1.0 / std::sqrt(double(Dk));
  const std::string name = "T=" + std::to_string(T) + " Dk=" + std::to_string(Dk) +
                           " Dv=" + std::to_string(Dv) + " gate x" +
                           std::to_string(c.gate_strength).substr(0, 5) +
                           (c.dt == DType::kBF16 ? " bf16" : " f32");
  SCOPED_TRACE(name);
  const Shape qs{B, T, H, Dk}, vs{B, T, H, Dv}, ss{B, H, Dk, Dv};
  const Tensor q = random_cuda(qs, 1, c.dt), k = random_cuda(qs, 2, c.dt),
               v = random_cuda(vs, 3, c.dt), d_o = random_cuda(vs, 4, c.dt);
  const Tensor gv = make_gate(vs, 5, c.gate_strength);
  const Tensor s_in = random_cuda(ss, 6, DType::kF32, 0.5),
               ds_out = random_cuda(ss, 7, DType::kF32, 0.5);

  Tensor o = poisoned_cuda(vs, c.dt), s_out = poisoned_cuda(ss, DType::kF32);
  kernels::gated_linear_attention_chunked_forward(q, k, v, Tensor(), gv, scale, 64, s_in, o, s_out);
  Tensor dq = poisoned_cuda(qs, c.dt), dk = poisoned_cuda(qs, c.dt), dv = poisoned_cuda(vs, c.dt);
  Tensor dgv = poisoned_cuda(vs, DType::kF32), ds_in = poisoned_cuda(ss, DType::kF32), no_dgk;
  kernels::gated_linear_attention_chunked_backward(q, k, v, Tensor(), gv, scale, 64, s_in, d_o,
                                                   ds_out, dq, dk, dv, no_dgk, dgv, ds_in);
  // The state-only form: the same final state, bit for bit (the same kernels).
  Tensor no_o, s_only = poisoned_cuda(ss, DType::kF32);
  kernels::gated_linear_attention_chunked_forward(q, k, v, Tensor(), gv, scale, 64, s_in, no_o,
                                                  s_only);
  EXPECT_EQ(rel_err(s_only, s_out), 0.0) << "state-only final state";

  // The CPU reference in f64 with a chunk that divides T.
  const int64_t chunk = T % 64 == 0 ? 64 : 40;
  const Tensor q_r = ref64(q), k_r = ref64(k), v_r = ref64(v), do_r = ref64(d_o), g_r = ref64(gv);
  Tensor o_r = Tensor::empty(vs, DType::kF64, Device::cpu()),
         s_out_r = Tensor::empty(ss, DType::kF64, Device::cpu());
  kernels::gated_linear_attention_chunked_forward(q_r, k_r, v_r, Tensor(), g_r, scale, chunk,
                                                  ref64(s_in), o_r, s_out_r);
  Tensor dq_r = Tensor::empty(qs, DType::kF64, Device::cpu()), dk_r = dq_r.clone();
  Tensor dv_r = o_r.clone(), dgv_r = o_r.clone(), ds_in_r = s_out_r.clone(), no_dgk_r;
  kernels::gated_linear_attention_chunked_backward(q_r, k_r, v_r, Tensor(), g_r, scale, chunk,
                                                   ref64(s_in), do_r, ref64(ds_out), dq_r, dk_r,
                                                   dv_r, no_dgk_r, dgv_r, ds_in_r);
  const double tol_io = c.dt == DType::kBF16 ? kTolBF16 : kTolScan;
  struct Out {
    const char* what;
    const Tensor *got, *ref;
    double tol;
  } outs[] = {{"o", &o, &o_r, tol_io},
              {"S_out", &s_out, &s_out_r, kTolScan},
              {"dq", &dq, &dq_r, tol_io},
              {"dk", &dk, &dk_r, tol_io},
              {"dv", &dv, &dv_r, tol_io},
              {"dgv", &dgv, &dgv_r, kTolScan},
              {"dS_in", &ds_in, &ds_in_r, kTolScan}};
  std::printf("%s:", name.c_str());
  for (const Out& x : outs) {
    const double e = rel_err(*x.got, *x.ref);
    EXPECT_LT(e, x.tol) << x.what;
    std::printf("  %s %.1e", x.what, e);
  }
  std::printf("\n");
}

TEST(ValueDecayScanCuda, MatchesCpuChunked) {
  LINEA_REQUIRE_CUDA();
  for (int64_t Dk : {64, 128})
    for (int64_t Dv : {64, 128})
      for (int64_t T : {64, 256}) {
        run_case({T, Dk, Dv, 1.0 / 16, DType::kF32});
        run_case({T, Dk, Dv, 1.0, DType::kF32});
      }
  // A partial last chunk, bf16 storage, and gates 4x logsigmoid (about -3 a token: exp(bv)
  // underflows f32 within a chunk; every exponent the scan takes is <= 0).
  run_case({200, 64, 128, 0.25, DType::kF32});
  run_case({200, 128, 64, 1.0, DType::kF32});
  run_case({200, 128, 128, 1.0 / 16, DType::kBF16});
  run_case({256, 64, 64, 1.0, DType::kBF16});
  run_case({256, 128, 128, 1.0, DType::kBF16});
  run_case({256, 64, 128, 4.0, DType::kF32});
  run_case({200, 128, 64, 4.0, DType::kBF16});
}

// The state-only forward (o undefined) against the CPU's, without an incoming state; then without
// incoming state, final state or their gradients, and without dgv: o and the gradients equal those
// of the run with zero states.
TEST(ValueDecayScanCuda, StateOnlyAndOptionalStates) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 192, H = 2, Dk = 128, Dv = 64;
  const Shape qs{B, T, H, Dk}, vs{B, T, H, Dv}, ss{B, H, Dk, Dv};
  const Tensor q = random_cuda(qs, 11, DType::kF32), k = random_cuda(qs, 12, DType::kF32),
               v = random_cuda(vs, 13, DType::kF32), d_o = random_cuda(vs, 14, DType::kF32);
  const Tensor gv = make_gate(vs, 15, 0.5);
  Tensor none, s_only = poisoned_cuda(ss, DType::kF32);
  kernels::gated_linear_attention_chunked_forward(q, k, v, Tensor(), gv, 0.125, 64, Tensor(), none,
                                                  s_only);
  Tensor s_only_r = Tensor::empty(ss, DType::kF64, Device::cpu()), none_r;
  kernels::gated_linear_attention_chunked_forward(ref64(q), ref64(k), ref64(v), Tensor(), ref64(gv),
                                                  0.125, 64, Tensor(), none_r, s_only_r);
  const double e = rel_err(s_only, s_only_r);
  EXPECT_LT(e, kTolScan) << "state-only final state";
  std::printf("state only, no incoming state: S_out %.1e\n", e);

  const Tensor zero = Tensor::zeros(ss, DType::kF32, Device::cuda(0));
  Tensor o1 = poisoned_cuda(vs, DType::kF32), o2 = poisoned_cuda(vs, DType::kF32);
  kernels::gated_linear_attention_chunked_forward(q, k, v, Tensor(), gv, 0.125, 64, Tensor(), o1,
                                                  none);
  Tensor s_out = poisoned_cuda(ss, DType::kF32);
  kernels::gated_linear_attention_chunked_forward(q, k, v, Tensor(), gv, 0.125, 64, zero, o2,
                                                  s_out);
  EXPECT_EQ(rel_err(o1, o2), 0.0);
  EXPECT_EQ(rel_err(s_out, s_only), 0.0);
  Tensor dq1 = poisoned_cuda(qs, DType::kF32), dk1 = dq1.clone(), dq2 = dq1.clone(),
         dk2 = dq1.clone();
  Tensor dv1 = poisoned_cuda(vs, DType::kF32), dv2 = dv1.clone(), dgv2 = dv1.clone();
  Tensor ds_in = poisoned_cuda(ss, DType::kF32), no_dgk, no_dgv, no_ds;
  kernels::gated_linear_attention_chunked_backward(q, k, v, Tensor(), gv, 0.125, 64, Tensor(), d_o,
                                                   Tensor(), dq1, dk1, dv1, no_dgk, no_dgv, no_ds);
  kernels::gated_linear_attention_chunked_backward(q, k, v, Tensor(), gv, 0.125, 64, zero, d_o,
                                                   zero, dq2, dk2, dv2, no_dgk, dgv2, ds_in);
  EXPECT_EQ(rel_err(dq1, dq2), 0.0);
  EXPECT_EQ(rel_err(dk1, dk2), 0.0);
  EXPECT_EQ(rel_err(dv1, dv2), 0.0);
}

TEST(ValueDecayScanCuda, RefusesWhatItDoesNotTake) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 1, T = 64, H = 2;
  Tensor none;
  // Dv = 96: outside {64, 128}.
  {
    const Shape qs{B, T, H, 64}, vs{B, T, H, 96};
    const Tensor q = random_cuda(qs, 21, DType::kF32), v = random_cuda(vs, 22, DType::kF32);
    const Tensor gv = Tensor::zeros(vs, DType::kF32, Device::cuda(0));
    Tensor o = poisoned_cuda(vs, DType::kF32);
    EXPECT_THROW(kernels::gated_linear_attention_chunked_forward(q, q, v, Tensor(), gv, 0.1, 64,
                                                                 Tensor(), o, none),
                 Error);
  }
  // gk and gv together.
  {
    const Shape qs{B, T, H, 64};
    const Tensor q = random_cuda(qs, 23, DType::kF32);
    const Tensor g = Tensor::zeros(qs, DType::kF32, Device::cuda(0));
    Tensor o = poisoned_cuda(qs, DType::kF32);
    EXPECT_THROW(
        kernels::gated_linear_attention_chunked_forward(q, q, q, g, g, 0.1, 64, Tensor(), o, none),
        Error);
  }
}

}  // namespace
}  // namespace linea
