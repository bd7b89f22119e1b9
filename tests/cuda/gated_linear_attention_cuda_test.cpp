// Gated linear attention with a scalar decay per token and head (Lightning, RetNet, Mamba2, simple
// GLA) on CUDA against the CPU chunked kernel in f64 (itself checked against finite differences
// in tests/unit/gated_linear_attention_test.cpp) on the very bf16 values the GPU saw: outputs,
// final state, dq, dk, dv, dgk and dS_in, with and without states, partial chunks, Dk != Dv,
// several segments. Decays log(lambda) in [-0.35, -0.05] per token (strong over a 64-token chunk).
// Tolerance 2e-2 of the largest reference value, as for the undecayed scan; vector gates and gv
// are refused with a message.
#include "kernels/gated_linear_attention.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

constexpr double kTolScan = 2e-2;

struct Case {
  int64_t B, T, H, Dk, Dv;
  bool states;
};

Tensor log_decays(const Shape& s, uint64_t seed) {
  Tensor u = random_tensor(s, seed, DType::kF64, 1.0);
  for (int64_t i = 0; i < u.numel(); ++i)
    u.set_item(i, -0.05 - 0.3 / (1.0 + std::exp(-u.item(i))));  // in (-0.35, -0.05)
  return u.to(DType::kF32).cuda(0);
}

void expect_matches_cpu(const Case& c, DType dt, uint64_t seed) {
  const std::string what = std::string(dtype_name(dt)) + " B" + std::to_string(c.B) + " T" +
                           std::to_string(c.T) + " H" + std::to_string(c.H) + " Dk" +
                           std::to_string(c.Dk) + " Dv" + std::to_string(c.Dv) +
                           (c.states ? " with states" : "");
  auto input = [&](const Shape& s) { return random_cuda(s, ++seed, DType::kBF16).to(dt); };
  const Tensor q = input({c.B, c.T, c.H, c.Dk}), k = input({c.B, c.T, c.H, c.Dk});
  const Tensor v = input({c.B, c.T, c.H, c.Dv}), d_o = input({c.B, c.T, c.H, c.Dv});
  const Tensor gk = log_decays({c.B, c.T, c.H}, ++seed);
  const Shape ss{c.B, c.H, c.Dk, c.Dv};
  const Tensor s_in = c.states ? random_cuda(ss, ++seed, DType::kF32) : Tensor();
  const Tensor ds_out = c.states ? random_cuda(ss, ++seed, DType::kF32) : Tensor();
  const double scale = 1.0 / std::sqrt(double(c.Dk));
  Tensor none;

  Tensor o = poisoned_cuda(v.shape(), dt), s_out = poisoned_cuda(ss, DType::kF32);
  kernels::gated_linear_attention_chunked_forward(q, k, v, gk, none, scale, 64, s_in, o, s_out);
  Tensor dq = poisoned_cuda(q.shape(), dt), dk = poisoned_cuda(k.shape(), dt);
  Tensor dv = poisoned_cuda(v.shape(), dt), ds_in = poisoned_cuda(ss, DType::kF32);
  Tensor dgk = poisoned_cuda(gk.shape(), DType::kF32), no_dgv;
  kernels::gated_linear_attention_chunked_backward(q, k, v, gk, none, scale, 64, s_in, d_o, ds_out,
                                                   dq, dk, dv, dgk, no_dgv, ds_in);

  const Tensor q64 = ref64(q), k64 = ref64(k), v64 = ref64(v), do64 = ref64(d_o), g64 = ref64(gk);
  const Tensor s64 = c.states ? ref64(s_in) : Tensor(), ds64 = c.states ? ref64(ds_out) : Tensor();
  Tensor o_ref = Tensor::empty(v64.shape(), DType::kF64), s_ref = Tensor::empty(ss, DType::kF64);
  kernels::gated_linear_attention_chunked_forward(q64, k64, v64, g64, none, scale, c.T, s64, o_ref,
                                                  s_ref);
  Tensor dq_ref = Tensor::empty(q64.shape(), DType::kF64);
  Tensor dk_ref = Tensor::empty(k64.shape(), DType::kF64);
  Tensor dv_ref = Tensor::empty(v64.shape(), DType::kF64);
  Tensor dg_ref = Tensor::empty(g64.shape(), DType::kF64), no_dgv_ref;
  Tensor ds_ref = Tensor::empty(ss, DType::kF64);
  kernels::gated_linear_attention_chunked_backward(q64, k64, v64, g64, none, scale, c.T, s64, do64,
                                                   ds64, dq_ref, dk_ref, dv_ref, dg_ref, no_dgv_ref,
                                                   ds_ref);
  EXPECT_LT(rel_err(o, o_ref), kTolScan) << what << " o";
  EXPECT_LT(rel_err(s_out, s_ref), kTolScan) << what << " final state";
  EXPECT_LT(rel_err(dq, dq_ref), kTolScan) << what << " dq";
  EXPECT_LT(rel_err(dk, dk_ref), kTolScan) << what << " dk";
  EXPECT_LT(rel_err(dv, dv_ref), kTolScan) << what << " dv";
  EXPECT_LT(rel_err(dgk, dg_ref), kTolScan) << what << " dgk";
  EXPECT_LT(rel_err(ds_in, ds_ref), kTolScan) << what << " dS_in";
}

TEST(GatedLinearAttentionCuda, ScalarDecayMatchesCpuReference) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 1900;
  const std::vector<Case> cases = {{2, 200, 3, 64, 64, true},    {1, 1, 2, 128, 128, true},
                                   {2, 128, 2, 64, 128, false},  {1, 1000, 1, 128, 64, true},
                                   {1, 2048, 1, 128, 128, true}, {3, 257, 2, 64, 128, true}};
  for (DType dt : {DType::kBF16, DType::kF32})
    for (const Case& c : cases) expect_matches_cpu(c, dt, seed += 10);
}

TEST(GatedLinearAttentionCuda, RefusesVectorGatesWithAMessage) {
  LINEA_REQUIRE_CUDA();
  const Tensor q = random_cuda({1, 64, 1, 64}, 1, DType::kBF16);
  const Tensor gk = log_decays({1, 64, 1, 64}, 2);  // vector gate (GLA)
  Tensor o = Tensor::empty(q.shape(), DType::kBF16, Device::cuda(0)), none;
  try {
    kernels::gated_linear_attention_chunked_forward(q, q, q, gk, none, 1.0, 64, none, o, none);
    ADD_FAILURE() << "expected linea::Error for a vector gate";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not supported on CUDA yet"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace linea
