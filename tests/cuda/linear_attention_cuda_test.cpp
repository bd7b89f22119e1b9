// Basic chunked linear attention on CUDA (the chunk scan, kernels/cuda/chunk_scan.h) against the
// CPU recurrent reference in f64 on the very bf16 values the GPU saw: outputs, final state and
// every gradient (dq, dk, dv, dS_in), with and without incoming and outgoing states, partial last
// chunks, Dk != Dv, several segments, f32 and bf16 storage. The scan feeds q, k, v, the scores and
// the state to the tensor cores in bf16 (f32 accumulation), so the tolerance is a bf16 one: 2e-2
// of the largest reference value (measured: about 4e-3).
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

// The reference gradients, from the chunked CPU backward on f64 copies (itself checked against
// finite differences of the recurrent forward in tests/unit/linear_attention_test.cpp).
void expect_matches_cpu(const Case& c, DType dt, uint64_t seed) {
  const std::string what = std::string(dtype_name(dt)) + " B" + std::to_string(c.B) + " T" +
                           std::to_string(c.T) + " H" + std::to_string(c.H) + " Dk" +
                           std::to_string(c.Dk) + " Dv" + std::to_string(c.Dv) +
                           (c.states ? " with states" : "");
  // Values rounded through bf16 first, so that the reference sees what the tensor cores see.
  auto input = [&](const Shape& s) { return random_cuda(s, ++seed, DType::kBF16).to(dt); };
  const Tensor q = input({c.B, c.T, c.H, c.Dk}), k = input({c.B, c.T, c.H, c.Dk});
  const Tensor v = input({c.B, c.T, c.H, c.Dv}), d_o = input({c.B, c.T, c.H, c.Dv});
  const Shape ss{c.B, c.H, c.Dk, c.Dv};
  const Tensor s_in = c.states ? random_cuda(ss, ++seed, DType::kF32) : Tensor();
  const Tensor ds_out = c.states ? random_cuda(ss, ++seed, DType::kF32) : Tensor();
  const double scale = 1.0 / std::sqrt(double(c.Dk));

  Tensor o = poisoned_cuda(v.shape(), dt), s_out = poisoned_cuda(ss, DType::kF32);
  kernels::linear_attention_chunked_forward(q, k, v, scale, 64, s_in, o, s_out);
  Tensor dq = poisoned_cuda(q.shape(), dt), dk = poisoned_cuda(k.shape(), dt);
  Tensor dv = poisoned_cuda(v.shape(), dt), ds_in = poisoned_cuda(ss, DType::kF32);
  kernels::linear_attention_chunked_backward(q, k, v, scale, 64, s_in, d_o, ds_out, dq, dk, dv,
                                             ds_in);

  const Tensor q64 = ref64(q), k64 = ref64(k), v64 = ref64(v), do64 = ref64(d_o);
  const Tensor s64 = c.states ? ref64(s_in) : Tensor(), ds64 = c.states ? ref64(ds_out) : Tensor();
  Tensor o_ref = Tensor::empty(v64.shape(), DType::kF64), s_ref = Tensor::empty(ss, DType::kF64);
  kernels::linear_attention_recurrent_forward(q64, k64, v64, scale, s64, o_ref, s_ref);
  // The CPU chunked kernel wants a chunk that divides T: use T itself (one chunk).
  Tensor dq_ref = Tensor::empty(q64.shape(), DType::kF64);
  Tensor dk_ref = Tensor::empty(k64.shape(), DType::kF64);
  Tensor dv_ref = Tensor::empty(v64.shape(), DType::kF64);
  Tensor ds_ref = Tensor::empty(ss, DType::kF64);
  kernels::linear_attention_chunked_backward(q64, k64, v64, scale, c.T, s64, do64, ds64, dq_ref,
                                             dk_ref, dv_ref, ds_ref);
  EXPECT_LT(rel_err(o, o_ref), kTolScan) << what << " o";
  EXPECT_LT(rel_err(s_out, s_ref), kTolScan) << what << " final state";
  EXPECT_LT(rel_err(dq, dq_ref), kTolScan) << what << " dq";
  EXPECT_LT(rel_err(dk, dk_ref), kTolScan) << what << " dk";
  EXPECT_LT(rel_err(dv, dv_ref), kTolScan) << what << " dv";
  EXPECT_LT(rel_err(ds_in, ds_ref), kTolScan) << what << " dS_in";
}

TEST(LinearAttentionCuda, ChunkScanMatchesCpuReference) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 900;
  // Partial chunks (T = 1, 200, 1000), Dk != Dv both ways, and long enough sequences (T = 2048
  // over 1 head: 32 chunks) that the scan splits them into segments.
  const std::vector<Case> cases = {{2, 200, 3, 64, 64, true},    {1, 1, 2, 128, 128, true},
                                   {2, 128, 2, 64, 128, false},  {1, 1000, 1, 128, 64, true},
                                   {1, 2048, 1, 128, 128, true}, {3, 257, 2, 64, 128, true}};
  for (DType dt : {DType::kBF16, DType::kF32})
    for (const Case& c : cases) expect_matches_cpu(c, dt, seed += 10);
}

TEST(LinearAttentionCuda, RejectsUnsupportedHeadSize) {
  LINEA_REQUIRE_CUDA();
  const Tensor q = random_cuda({1, 64, 1, 96}, 1, DType::kBF16);
  const Tensor v = random_cuda({1, 64, 1, 64}, 2, DType::kBF16);
  Tensor o = Tensor::empty(v.shape(), DType::kBF16, Device::cuda(0)), none;
  try {
    kernels::linear_attention_chunked_forward(q, q, v, 1.0, 64, Tensor(), o, none);
    ADD_FAILURE() << "expected linea::Error for Dk = 96";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Dqk = 96"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace linea
