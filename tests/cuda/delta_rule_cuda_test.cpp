// The delta rule on CUDA (kernels/cuda/delta_rule.cu: DeltaNet, Gated DeltaNet) against the CPU
// chunked kernels run in f64 on the values the GPU saw: forward o and final state, backward dq,
// dk, dv, dg, dbeta and d_initial_state (with and without d_final_state, g and initial_state),
// and the dense segment transition; B = 2, H = 3, T = 64 (one chunk), 256 (four) and 200 (a
// partial last chunk), Dk in {64, 128}, Dv in {64, 128}, f32 and bf16 storage. Inputs as the
// module makes them: q, k L2-normalised per head, beta = sigmoid in (0, 1), g = logsigmoid(z) x
// strength <= 0 (gentle 1/16 and strong 1).
//
// Tolerance (rel_max_diff): the kernels compute in f32 (CUDA cores), so f32 outputs, the states,
// the transition, dg and dbeta (f32 whatever the storage) are held to 1e-4 (2e-4 for dg, a sum of
// differences); bf16 outputs (o, dq, dk, dv) to kTolBF16 (one rounding to 8 bits).
#include <cmath>
#include <cstdio>
#include <string>

#include "kernels/delta_rule.h"
#include "kernels/gates.h"
#include "kernels/l2norm.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

Tensor cpu64(const Shape& s) { return Tensor::empty(s, DType::kF64, Device::cpu()); }

// Rows of [B, T, H, D] with unit L2 norm, drawn in f64, stored in dt on cuda:0.
Tensor unit_rows_cuda(const Shape& s, uint64_t seed, DType dt) {
  const Tensor x = random_tensor(s, seed, DType::kF64, 1.0);
  Tensor y = cpu64(s), rstd = cpu64({s[0], s[1], s[2]});
  kernels::l2norm_forward(x, 1e-6, y, rstd);
  return y.to(dt).cuda(0);
}

struct Inputs {
  Tensor q, k, v, g, beta, s_in, d_o, ds_out;
};

Inputs make_inputs(int64_t B, int64_t T, int64_t H, int64_t Dk, int64_t Dv, double strength,
                   DType dt, uint64_t seed) {
  Inputs in;
  const Shape gs{B, T, H};
  in.q = unit_rows_cuda({B, T, H, Dk}, seed + 1, dt);
  in.k = unit_rows_cuda({B, T, H, Dk}, seed + 2, dt);
  in.v = random_cuda({B, T, H, Dv}, seed + 3, dt);
  in.d_o = random_cuda({B, T, H, Dv}, seed + 4, dt);
  Tensor zb = random_tensor(gs, seed + 5, DType::kF64, 1.5), beta = cpu64(gs);
  kernels::delta_beta_forward(zb, 1.0, beta);
  in.beta = beta.to(DType::kF32).cuda(0);
  if (strength > 0) {
    Tensor zg = random_tensor(gs, seed + 6, DType::kF64, 1.5), g = cpu64(gs);
    kernels::log_sigmoid_decay_forward(zg, 1.0 / strength, g);
    in.g = g.to(DType::kF32).cuda(0);
  }
  in.s_in = random_cuda({B, H, Dk, Dv}, seed + 7, DType::kF32, 0.5);
  in.ds_out = random_cuda({B, H, Dk, Dv}, seed + 8, DType::kF32, 0.5);
  return in;
}

Tensor opt64(const Tensor& t) { return t.defined() ? ref64(t) : Tensor(); }

struct Case {
  int64_t T, Dk, Dv;
  double strength;  // 0: no decay (DeltaNet)
  DType dt;
  bool with_s_in, with_ds_out;
};

std::string name_of(const Case& c) {
  return "T=" + std::to_string(c.T) + " Dk=" + std::to_string(c.Dk) +
         " Dv=" + std::to_string(c.Dv) +
         (c.strength > 0 ? " g x" + std::to_string(c.strength).substr(0, 5) : " no g") +
         (c.dt == DType::kBF16 ? " bf16" : " f32") + (c.with_s_in ? " S_in" : "") +
         (c.with_ds_out ? " dS_out" : "");
}

void run_case(const Case& c) {
  const int64_t B = 2, H = 3, T = c.T, Dk = c.Dk, Dv = c.Dv;
  const std::string name = name_of(c);
  SCOPED_TRACE(name);
  const Inputs in = make_inputs(B, T, H, Dk, Dv, c.strength, c.dt, 100 + T + Dk + Dv);
  const double scale = 1.0 / std::sqrt(double(Dk));
  const Shape qs{B, T, H, Dk}, vs{B, T, H, Dv}, gs{B, T, H}, ss{B, H, Dk, Dv};
  const Tensor s_in = c.with_s_in ? in.s_in : Tensor();
  const Tensor ds_out = c.with_ds_out ? in.ds_out : Tensor();
  const bool gated = in.g.defined();

  Tensor o = poisoned_cuda(vs, c.dt), s_out = poisoned_cuda(ss, DType::kF32);
  kernels::delta_rule_chunked_forward(in.q, in.k, in.v, in.g, in.beta, scale, 64, s_in, o, s_out);
  Tensor dq = poisoned_cuda(qs, c.dt), dk = poisoned_cuda(qs, c.dt), dv = poisoned_cuda(vs, c.dt);
  Tensor dbeta = poisoned_cuda(gs, DType::kF32), ds_in = poisoned_cuda(ss, DType::kF32);
  Tensor dg = gated ? poisoned_cuda(gs, DType::kF32) : Tensor();
  kernels::delta_rule_chunked_backward(in.q, in.k, in.v, in.g, in.beta, scale, 64, s_in, in.d_o,
                                       ds_out, dq, dk, dv, dg, dbeta, ds_in);

  // The CPU reference in f64, with a chunk that divides T.
  const int64_t chunk = T % 64 == 0 ? 64 : 40;
  const Tensor q_r = ref64(in.q), k_r = ref64(in.k), v_r = ref64(in.v), g_r = opt64(in.g),
               b_r = ref64(in.beta), do_r = ref64(in.d_o), s_in_r = opt64(s_in),
               ds_out_r = opt64(ds_out);
  Tensor o_r = cpu64(vs), s_out_r = cpu64(ss);
  kernels::delta_rule_chunked_forward(q_r, k_r, v_r, g_r, b_r, scale, chunk, s_in_r, o_r, s_out_r);
  Tensor dq_r = cpu64(qs), dk_r = cpu64(qs), dv_r = cpu64(vs), dbeta_r = cpu64(gs),
         ds_in_r = cpu64(ss);
  Tensor dg_r = gated ? cpu64(gs) : Tensor();
  kernels::delta_rule_chunked_backward(q_r, k_r, v_r, g_r, b_r, scale, chunk, s_in_r, do_r,
                                       ds_out_r, dq_r, dk_r, dv_r, dg_r, dbeta_r, ds_in_r);

  const double tol = c.dt == DType::kBF16 ? kTolBF16 : 1e-4, tol_f32 = 1e-4;
  struct Out {
    const char* what;
    const Tensor *got, *ref;
    double tol;
  } outs[] = {{"o", &o, &o_r, tol},
              {"S_out", &s_out, &s_out_r, tol_f32},
              {"dq", &dq, &dq_r, tol},
              {"dk", &dk, &dk_r, tol},
              {"dv", &dv, &dv_r, tol},
              {"dbeta", &dbeta, &dbeta_r, tol_f32},
              {"dS_in", &ds_in, &ds_in_r, tol_f32},
              {"dg", &dg, &dg_r, 2e-4}};
  std::printf("%s:", name.c_str());
  for (const Out& x : outs) {
    if (!x.got->defined()) continue;
    const double e = rel_err(*x.got, *x.ref);
    EXPECT_LT(e, x.tol) << x.what;
    std::printf("  %s %.1e", x.what, e);
  }
  std::printf("\n");
}

TEST(DeltaRuleCuda, ForwardBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  for (int64_t T : {64, 256, 200})
    for (double strength : {0.0, 1.0 / 16, 1.0}) {
      run_case({T, 64, 64, strength, DType::kF32, true, true});
      run_case({T, 128, 128, strength, DType::kF32, true, true});
    }
  // Unequal heads, the optional states left out, bf16 storage.
  run_case({256, 64, 128, 1.0 / 16, DType::kF32, false, true});
  run_case({200, 128, 64, 1.0, DType::kF32, true, false});
  run_case({256, 128, 128, 0.0, DType::kF32, false, false});
  run_case({256, 128, 128, 1.0 / 16, DType::kF32, false, false});
  run_case({64, 64, 64, 1.0 / 16, DType::kBF16, true, true});
  run_case({200, 128, 128, 1.0, DType::kBF16, true, true});
  run_case({256, 128, 64, 0.0, DType::kBF16, false, true});
  run_case({256, 64, 128, 1.0 / 16, DType::kBF16, true, false});
}

TEST(DeltaRuleCuda, TransitionMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, H = 3;
  for (int64_t T : {64, 256, 200})
    for (int64_t Dk : {64, 128})
      for (double strength : {0.0, 1.0 / 16})
        for (DType dt : {DType::kF32, DType::kBF16}) {
          const Inputs in = make_inputs(B, T, H, Dk, 64, strength, dt, 300 + T + Dk);
          const Shape ts{B, H, Dk, Dk};
          Tensor a = poisoned_cuda(ts, DType::kF32), a_r = cpu64(ts);
          kernels::delta_rule_chunked_transition(in.k, in.g, in.beta, 64, a);
          kernels::delta_rule_chunked_transition(ref64(in.k), opt64(in.g), ref64(in.beta),
                                                 T % 64 == 0 ? 64 : 40, a_r);
          const double e = rel_err(a, a_r);
          EXPECT_LT(e, 1e-4) << "T " << T << " Dk " << Dk << " strength " << strength << " "
                             << dtype_name(dt);
          std::printf("transition T=%ld Dk=%ld g x%.3f %s: %.1e\n", long(T), long(Dk), strength,
                      dtype_name(dt), e);
        }
}

// The segment algebra the header promises, on the GPU alone: S_out(S_in) = A S_in + S_out(0)
// (through the exported transition), and the chunk size argument does not matter on CUDA.
TEST(DeltaRuleCuda, TransitionComposesWithForward) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 1, T = 192, H = 2, D = 64;
  const Inputs in = make_inputs(B, T, H, D, D, 1.0 / 16, DType::kF32, 500);
  const Shape vs{B, T, H, D}, ss{B, H, D, D};
  Tensor o1 = poisoned_cuda(vs, DType::kF32), s1 = poisoned_cuda(ss, DType::kF32);
  Tensor o0 = poisoned_cuda(vs, DType::kF32), s0 = poisoned_cuda(ss, DType::kF32);
  kernels::delta_rule_chunked_forward(in.q, in.k, in.v, in.g, in.beta, 0.125, 64, in.s_in, o1, s1);
  kernels::delta_rule_chunked_forward(in.q, in.k, in.v, in.g, in.beta, 0.125, 32, Tensor(), o0, s0);
  Tensor a = poisoned_cuda({B, H, D, D}, DType::kF32);
  kernels::delta_rule_chunked_transition(in.k, in.g, in.beta, 64, a);
  // A S_in + S_out(0) in f64 on the host.
  const Tensor a64 = ref64(a), sin64 = ref64(in.s_in), s064 = ref64(s0), s164 = ref64(s1);
  Tensor want = s064.clone();
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < D; ++i)
      for (int64_t j = 0; j < D; ++j) {
        double acc = 0;
        for (int64_t r = 0; r < D; ++r)
          acc += a64.item((h * D + i) * D + r) * sin64.item((h * D + r) * D + j);
        want.set_item((h * D + i) * D + j, want.item((h * D + i) * D + j) + acc);
      }
  EXPECT_LT(rel_max_diff(s164, want), 1e-4);
}

TEST(DeltaRuleCuda, RefusesUnsupportedShapes) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 1, T = 64, H = 1;
  // Dk = 96 and Dv = 96 fail with the size named.
  for (auto [Dk, Dv] : {std::pair<int64_t, int64_t>{96, 64}, std::pair<int64_t, int64_t>{64, 96}}) {
    const Inputs in = make_inputs(B, T, H, Dk, Dv, 0.0, DType::kF32, 700);
    Tensor o = poisoned_cuda({B, T, H, Dv}, DType::kF32), none;
    try {
      kernels::delta_rule_chunked_forward(in.q, in.k, in.v, in.g, in.beta, 0.1, 64, Tensor(), o,
                                          none);
      ADD_FAILURE() << "Dk " << Dk << " Dv " << Dv << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("96"), std::string::npos) << e.what();
    }
  }
  // Gates must be f32 on CUDA.
  const Inputs in = make_inputs(B, T, H, 64, 64, 0.0, DType::kF32, 701);
  Tensor o = poisoned_cuda({B, T, H, 64}, DType::kF32), none;
  const Tensor beta_bf16 = in.beta.to(DType::kBF16);
  EXPECT_THROW(kernels::delta_rule_chunked_forward(in.q, in.k, in.v, Tensor(), beta_bf16, 0.1, 64,
                                                   Tensor(), o, none),
               Error);
}

}  // namespace
}  // namespace linea
