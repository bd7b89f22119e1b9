// The chunk scan on CUDA (kernels/cuda/chunk_scan.h) through its public kernels, against the CPU
// kernels in f64 (themselves checked against finite differences in tests/unit/) on the very
// bf16 values the GPU saw: basic linear attention (kernels/linear_attention.h), and gated linear
// attention with a scalar decay per token and head (kernels/gated_linear_attention.h: Lightning,
// RetNet, Mamba2, simple GLA; log(lambda) in (-0.35, -0.05), strong over a 64-token chunk).
// Outputs, final state, dq, dk, dv, dS_in and dgk, with and without states, partial chunks,
// Dk != Dv, and sequences long enough to be split into segments; f32 and bf16 storage. The scan
// feeds q, k, v, the scores and the state to the tensor cores in bf16 (f32 accumulation), so the
// tolerance is a bf16 one: 2e-2 of the largest reference value (measured about 4e-3).
#include <functional>

#include "kernels/gated_linear_attention.h"
#include "kernels/linear_attention.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

constexpr double kTolScan = 2e-2;

struct Case {
  int64_t B, T, H, Dk, Dv;
  bool states;
};

// Partial chunks (T = 1, 200, 257, 1000), Dk != Dv both ways, and T = 2048 over one head (32
// chunks), which the scan splits into segments.
const std::vector<Case> kCases = {{2, 200, 3, 64, 64, true},    {1, 1, 2, 128, 128, true},
                                  {2, 128, 2, 64, 128, false},  {1, 1000, 1, 128, 64, true},
                                  {1, 2048, 1, 128, 128, true}, {3, 257, 2, 64, 128, true}};

Tensor log_decays(const Shape& s, uint64_t seed) {
  Tensor u = random_tensor(s, seed, DType::kF64, 1.0);
  for (int64_t i = 0; i < u.numel(); ++i)
    u.set_item(i, -0.05 - 0.3 / (1.0 + std::exp(-u.item(i))));  // in (-0.35, -0.05)
  return u.to(DType::kF32).cuda(0);
}

// decay: gated linear attention with a scalar gk; otherwise basic linear attention.
void expect_matches_cpu(const Case& c, DType dt, uint64_t seed, bool decay) {
  const std::string what = std::string(decay ? "decay " : "") + dtype_name(dt) + " B" +
                           std::to_string(c.B) + " T" + std::to_string(c.T) + " H" +
                           std::to_string(c.H) + " Dk" + std::to_string(c.Dk) + " Dv" +
                           std::to_string(c.Dv) + (c.states ? " with states" : "");
  // Values rounded through bf16 first, so that the reference sees what the tensor cores see.
  auto input = [&](const Shape& s) { return random_cuda(s, ++seed, DType::kBF16).to(dt); };
  const Tensor q = input({c.B, c.T, c.H, c.Dk}), k = input({c.B, c.T, c.H, c.Dk});
  const Tensor v = input({c.B, c.T, c.H, c.Dv}), d_o = input({c.B, c.T, c.H, c.Dv});
  const Tensor gk = decay ? log_decays({c.B, c.T, c.H}, ++seed) : Tensor();
  const Shape ss{c.B, c.H, c.Dk, c.Dv};
  const Tensor s_in = c.states ? random_cuda(ss, ++seed, DType::kF32) : Tensor();
  const Tensor ds_out = c.states ? random_cuda(ss, ++seed, DType::kF32) : Tensor();
  const double scale = 1.0 / std::sqrt(double(c.Dk));
  Tensor none;

  Tensor o = poisoned_cuda(v.shape(), dt), s_out = poisoned_cuda(ss, DType::kF32);
  Tensor dq = poisoned_cuda(q.shape(), dt), dk = poisoned_cuda(k.shape(), dt);
  Tensor dv = poisoned_cuda(v.shape(), dt), ds_in = poisoned_cuda(ss, DType::kF32);
  Tensor dgk = decay ? poisoned_cuda(gk.shape(), DType::kF32) : Tensor();
  const Tensor q64 = ref64(q), k64 = ref64(k), v64 = ref64(v), do64 = ref64(d_o);
  const Tensor g64 = decay ? ref64(gk) : Tensor();
  const Tensor s64 = c.states ? ref64(s_in) : Tensor(), ds64 = c.states ? ref64(ds_out) : Tensor();
  Tensor o_ref = Tensor::empty(v64.shape(), DType::kF64), s_ref = Tensor::empty(ss, DType::kF64);
  Tensor dq_ref = Tensor::empty(q64.shape(), DType::kF64);
  Tensor dk_ref = Tensor::empty(k64.shape(), DType::kF64);
  Tensor dv_ref = Tensor::empty(v64.shape(), DType::kF64), ds_ref = Tensor::empty(ss, DType::kF64);
  Tensor dg_ref = decay ? Tensor::empty(g64.shape(), DType::kF64) : Tensor();
  // The GPU kernels take any chunk (they use 64); the CPU ones one that divides T: T itself.
  if (decay) {
    kernels::gated_linear_attention_chunked_forward(q, k, v, gk, none, scale, 64, s_in, o, s_out);
    kernels::gated_linear_attention_chunked_backward(q, k, v, gk, none, scale, 64, s_in, d_o,
                                                     ds_out, dq, dk, dv, dgk, none, ds_in);
    kernels::gated_linear_attention_chunked_forward(q64, k64, v64, g64, none, scale, c.T, s64,
                                                    o_ref, s_ref);
    kernels::gated_linear_attention_chunked_backward(q64, k64, v64, g64, none, scale, c.T, s64,
                                                     do64, ds64, dq_ref, dk_ref, dv_ref, dg_ref,
                                                     none, ds_ref);
  } else {
    kernels::linear_attention_chunked_forward(q, k, v, scale, 64, s_in, o, s_out);
    kernels::linear_attention_chunked_backward(q, k, v, scale, 64, s_in, d_o, ds_out, dq, dk, dv,
                                               ds_in);
    kernels::linear_attention_recurrent_forward(q64, k64, v64, scale, s64, o_ref, s_ref);
    kernels::linear_attention_chunked_backward(q64, k64, v64, scale, c.T, s64, do64, ds64, dq_ref,
                                               dk_ref, dv_ref, ds_ref);
  }
  EXPECT_LT(rel_err(o, o_ref), kTolScan) << what << " o";
  EXPECT_LT(rel_err(s_out, s_ref), kTolScan) << what << " final state";
  EXPECT_LT(rel_err(dq, dq_ref), kTolScan) << what << " dq";
  EXPECT_LT(rel_err(dk, dk_ref), kTolScan) << what << " dk";
  EXPECT_LT(rel_err(dv, dv_ref), kTolScan) << what << " dv";
  EXPECT_LT(rel_err(ds_in, ds_ref), kTolScan) << what << " dS_in";
  if (decay) EXPECT_LT(rel_err(dgk, dg_ref), kTolScan) << what << " dgk";
}

TEST(ChunkScanCuda, LinearAttentionMatchesCpuReference) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 900;
  for (DType dt : {DType::kBF16, DType::kF32})
    for (const Case& c : kCases) expect_matches_cpu(c, dt, seed += 10, false);
}

TEST(ChunkScanCuda, ScalarDecayMatchesCpuReference) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 1900;
  for (DType dt : {DType::kBF16, DType::kF32})
    for (const Case& c : kCases) expect_matches_cpu(c, dt, seed += 10, true);
}

void expect_error_with(const std::function<void()>& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "expected linea::Error containing '" << part << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(ChunkScanCuda, RefusesWhatItDoesNotRunWithAMessage) {
  LINEA_REQUIRE_CUDA();
  const Tensor q96 = random_cuda({1, 64, 1, 96}, 1, DType::kBF16);
  const Tensor v = random_cuda({1, 64, 1, 64}, 2, DType::kBF16);
  Tensor o = Tensor::empty(v.shape(), DType::kBF16, Device::cuda(0)), none;
  // Without gates a key width of 96 runs as a block of key columns
  // (WideKeyLinearAttentionCuda); a scalar decay takes 64 or 128 only.
  const Tensor gk = log_decays({1, 64, 1}, 4);
  expect_error_with(
      [&] {
        kernels::gated_linear_attention_chunked_forward(q96, q96, v, gk, none, 1.0, 64, none, o,
                                                        none);
      },
      "Dqk = 96");
  // A value-side gate (GSA) runs the value-decay scan (ValueDecayScanCuda); with a key-side gate
  // too it is refused.
  const Tensor gv = log_decays({1, 64, 1, 64}, 3), gk_vec = log_decays({1, 64, 1, 64}, 5);
  expect_error_with(
      [&] {
        kernels::gated_linear_attention_chunked_forward(v, v, v, gk_vec, gv, 1.0, 64, none, o,
                                                        none);
      },
      "a decay on both sides");
}

}  // namespace
}  // namespace linea
