// kernels/state_output.h on the CPU: the incoming state's term of the outputs is what the scan
// from S_in adds to the scan from a zero state, and the state gradient is its adjoint; the
// state-only chunked forward (o undefined) gives the same final state as the full one.
#include "kernels/state_output.h"

#include <gtest/gtest.h>

#include "kernels/gated_linear_attention.h"
#include "tests/common/gradcheck.h"

namespace linea {
namespace {

using testing::dot;
using testing::max_abs;
using testing::max_abs_diff;
using testing::random_tensor;

enum class Gate { kNone, kScalar, kVector };

struct Case {
  Gate gk;
  bool gv;
};

struct Inputs {
  Tensor q, k, v, gk, gv, s;
};

// Log gates in (-0.5, 0): realistic decays, every exponent <= 0.
Tensor log_gate(const Shape& shape, uint64_t seed) {
  Tensor g = random_tensor(shape, seed);
  for (int64_t i = 0; i < g.numel(); ++i) g.set_item(i, -0.25 * (1.0 + std::tanh(g.item(i))));
  return g;
}

Inputs make(const Case& c, int64_t B, int64_t T, int64_t H, int64_t Dk, int64_t Dv) {
  Inputs in;
  in.q = random_tensor({B, T, H, Dk}, 1);
  in.k = random_tensor({B, T, H, Dk}, 2);
  in.v = random_tensor({B, T, H, Dv}, 3);
  if (c.gk == Gate::kScalar) in.gk = log_gate({B, T, H}, 4);
  if (c.gk == Gate::kVector) in.gk = log_gate({B, T, H, Dk}, 4);
  if (c.gv) in.gv = log_gate({B, T, H, Dv}, 5);
  in.s = random_tensor({B, H, Dk, Dv}, 6);
  return in;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (Gate g : {Gate::kNone, Gate::kScalar, Gate::kVector})
    for (bool gv : {false, true}) out.push_back({g, gv});
  return out;
}

TEST(StateOutput, IsTheScanFromTheIncomingStateMinusTheScanFromZero) {
  const int64_t B = 2, T = 12, H = 3, Dk = 4, Dv = 5;
  const double scale = 0.7;
  for (const Case& c : cases()) {
    const Inputs in = make(c, B, T, H, Dk, Dv);
    Tensor from_s = Tensor::empty({B, T, H, Dv}, DType::kF64);
    Tensor from_zero = Tensor::empty({B, T, H, Dv}, DType::kF64), none;
    kernels::gated_linear_attention_recurrent_forward(in.q, in.k, in.v, in.gk, in.gv, scale, in.s,
                                                      from_s, none);
    kernels::gated_linear_attention_recurrent_forward(in.q, in.k, in.v, in.gk, in.gv, scale, none,
                                                      from_zero, none);
    kernels::state_output_forward(in.q, in.gk, in.gv, scale, in.s, from_zero);
    EXPECT_LT(max_abs_diff(from_zero, from_s), 1e-12 * std::max(1.0, max_abs(from_s)))
        << "gk " << static_cast<int>(c.gk) << " gv " << c.gv;
  }
}

TEST(StateOutput, StateGradIsTheAdjointOfTheForward) {
  const int64_t B = 2, T = 9, H = 2, Dk = 3, Dv = 4;
  const double scale = 1.3;
  for (const Case& c : cases()) {
    const Inputs in = make(c, B, T, H, Dk, Dv);
    const Tensor d_o = random_tensor({B, T, H, Dv}, 9);
    Tensor o = Tensor::zeros({B, T, H, Dv}, DType::kF64);
    kernels::state_output_forward(in.q, in.gk, in.gv, scale, in.s, o);
    Tensor ds = Tensor::empty({B, H, Dk, Dv}, DType::kF64);
    ds.fill_(std::nan(""));
    kernels::state_output_state_grad(in.q, in.gk, in.gv, scale, d_o, ds);
    // <d_o, o(S)> = <ds, S> for a map linear in S.
    const double lhs = dot(d_o, o), rhs = dot(ds, in.s);
    EXPECT_NEAR(lhs, rhs, 1e-11 * std::max(1.0, std::abs(lhs)))
        << "gk " << static_cast<int>(c.gk) << " gv " << c.gv;
    EXPECT_GT(max_abs(ds), 0.0);
  }
}

TEST(StateOutput, StateOnlyChunkedForwardGivesTheFinalState) {
  const int64_t B = 2, T = 16, H = 2, Dk = 4, Dv = 3;
  for (const Case& c : cases()) {
    const Inputs in = make(c, B, T, H, Dk, Dv);
    Tensor o = Tensor::empty({B, T, H, Dv}, DType::kF64), none;
    Tensor full = Tensor::empty({B, H, Dk, Dv}, DType::kF64);
    Tensor only = Tensor::empty({B, H, Dk, Dv}, DType::kF64);
    kernels::gated_linear_attention_chunked_forward(in.q, in.k, in.v, in.gk, in.gv, 0.5, 4, in.s, o,
                                                    full);
    kernels::gated_linear_attention_chunked_forward(in.q, in.k, in.v, in.gk, in.gv, 0.5, 4, in.s,
                                                    none, only);
    EXPECT_EQ(max_abs_diff(full, only), 0.0);
  }
}

TEST(StateOutput, RefusesMismatchedShapes) {
  const Inputs in = make({Gate::kVector, false}, 1, 4, 2, 3, 5);
  Tensor o = Tensor::zeros({1, 4, 2, 5}, DType::kF64);
  const Tensor bad_s = Tensor::zeros({1, 2, 5, 3}, DType::kF64);
  EXPECT_THROW(kernels::state_output_forward(in.q, in.gk, in.gv, 1.0, bad_s, o), Error);
  const Tensor bad_gk = Tensor::zeros({1, 4, 3}, DType::kF64);
  EXPECT_THROW(kernels::state_output_forward(in.q, bad_gk, in.gv, 1.0, in.s, o), Error);
  Tensor none;
  EXPECT_THROW(kernels::gated_linear_attention_chunked_forward(in.q, in.k, in.v, in.gk, in.gv, 1.0,
                                                               4, in.s, none, none),
               Error);
}

}  // namespace
}  // namespace linea
