// The incoming-state term of LASP-2 on CUDA (kernels/state_output.h) against the CPU reference in
// f64 on the values the GPU saw: o += scale ((q exp(b)) S) exp(bv) and its state gradient, for no
// gate, a scalar and a vector key gate, with and without a value gate, q/o in f32 and bf16, T from
// one block of the cumulative sum to several with a partial last one; and the state-only chunk
// scans (o undefined) against the full ones' final state.
//
// Tolerance: f32 outputs 2e-5 of the largest reference value (one f32 GEMM over Dk, the exp of an
// f32 running sum over up to 300 tokens); bf16 o gets one rounding (kTolBF16). The state gradient
// is f32 in both cases (a sum over T in f32): 1e-4 relative. The state-only scans sum the state
// per segment of the sequence and then over segments: 1e-6 of the full scans' final state.
#include <cmath>
#include <string>

#include "kernels/gated_linear_attention.h"
#include "kernels/state_output.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

enum class Gate { kNone, kScalar, kVector };

// Log gates in (-0.5, 0), made in f64 and stored f32 on the GPU.
Tensor log_gate(const Shape& shape, uint64_t seed) {
  Tensor g = random_tensor(shape, seed);
  for (int64_t i = 0; i < g.numel(); ++i) g.set_item(i, -0.25 * (1.0 + std::tanh(g.item(i))));
  return g.to(DType::kF32).cuda(0);
}

TEST(StateOutputCuda, MatchesTheCpuReference) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, H = 3;
  for (int64_t T : {int64_t(64), int64_t(300)})
    for (int64_t Dk : {int64_t(64), int64_t(128)})
      for (Gate gate : {Gate::kNone, Gate::kScalar, Gate::kVector})
        for (bool value_gate : {false, true})
          for (DType dt : {DType::kF32, DType::kBF16}) {
            const int64_t Dv = 64;
            SCOPED_TRACE("T=" + std::to_string(T) + " Dk=" + std::to_string(Dk) + " gate " +
                         std::to_string(static_cast<int>(gate)) + (value_gate ? " gv" : "") +
                         (dt == DType::kBF16 ? " bf16" : " f32"));
            const double scale = 1.0 / std::sqrt(double(Dk));
            const Tensor q = random_cuda({B, T, H, Dk}, 1, dt);
            const Tensor d_o = random_cuda({B, T, H, Dv}, 2, dt);
            const Tensor s = random_cuda({B, H, Dk, Dv}, 3, DType::kF32, 0.5);
            Tensor gk, gv;
            if (gate == Gate::kScalar) gk = log_gate({B, T, H}, 4);
            if (gate == Gate::kVector) gk = log_gate({B, T, H, Dk}, 4);
            if (value_gate) gv = log_gate({B, T, H, Dv}, 5);
            const Tensor o0 = random_cuda({B, T, H, Dv}, 6, dt);

            Tensor o = o0.clone();
            kernels::state_output_forward(q, gk, gv, scale, s, o);
            Tensor ds = poisoned_cuda({B, H, Dk, Dv}, DType::kF32);
            kernels::state_output_state_grad(q, gk, gv, scale, d_o, ds);

            const Tensor none;
            const Tensor gk_r = gk.defined() ? ref64(gk) : none;
            const Tensor gv_r = gv.defined() ? ref64(gv) : none;
            Tensor o_r = ref64(o0);
            kernels::state_output_forward(ref64(q), gk_r, gv_r, scale, ref64(s), o_r);
            Tensor ds_r = Tensor::empty({B, H, Dk, Dv}, DType::kF64, Device::cpu());
            kernels::state_output_state_grad(ref64(q), gk_r, gv_r, scale, ref64(d_o), ds_r);
            // The added term alone, so that the tolerance is not measured against o0.
            Tensor added = ref64(o), added_r = o_r.clone();
            const Tensor base = ref64(o0);
            for (int64_t i = 0; i < added.numel(); ++i) {
              added.set_item(i, added.item(i) - base.item(i));
              added_r.set_item(i, added_r.item(i) - base.item(i));
            }
            EXPECT_LT(rel_err(added, added_r), dt == DType::kBF16 ? kTolBF16 : 2e-5);
            EXPECT_LT(rel_err(ds, ds_r), 1e-4);
          }
}

TEST(StateOutputCuda, StateOnlyScansGiveTheFullScansFinalState) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, H = 4, T = 256, D = 64;
  for (Gate gate : {Gate::kNone, Gate::kScalar, Gate::kVector}) {
    SCOPED_TRACE(static_cast<int>(gate));
    const Tensor q = random_cuda({B, T, H, D}, 1, DType::kBF16);
    const Tensor k = random_cuda({B, T, H, D}, 2, DType::kBF16);
    const Tensor v = random_cuda({B, T, H, D}, 3, DType::kBF16);
    const Tensor s_in = random_cuda({B, H, D, D}, 4, DType::kF32, 0.5);
    Tensor gk;
    if (gate == Gate::kScalar) gk = log_gate({B, T, H}, 5);
    if (gate == Gate::kVector) gk = log_gate({B, T, H, D}, 5);
    Tensor o = poisoned_cuda({B, T, H, D}, DType::kBF16), none;
    Tensor full = poisoned_cuda({B, H, D, D}, DType::kF32);
    Tensor only = poisoned_cuda({B, H, D, D}, DType::kF32);
    kernels::gated_linear_attention_chunked_forward(q, k, v, gk, none, 0.125, 64, s_in, o, full);
    kernels::gated_linear_attention_chunked_forward(q, k, v, gk, none, 0.125, 64, s_in, none, only);
    const Tensor a = ref64(full), b = ref64(only);
    EXPECT_LT(rel_max_diff(b, a), 1e-6);
    EXPECT_FALSE(std::isnan(b.item(0)));
  }
}

}  // namespace
}  // namespace linea
