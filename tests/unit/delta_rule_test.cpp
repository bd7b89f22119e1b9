#include "kernels/delta_rule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "common/gradcheck.h"

namespace linea {
namespace {

using kernels::delta_rule_chunked_backward;
using kernels::delta_rule_chunked_forward;
using kernels::delta_rule_chunked_transition;
using kernels::delta_rule_recurrent_forward;
using testing::gradcheck;
using testing::max_abs;
using testing::max_abs_diff;
using testing::random_tensor;

// The ranges of beta the kernel must handle: DeltaNet's sigmoid, the (0, 2) variant that allows
// negative eigenvalues, and any real (nothing in the WY form needs beta > 0).
enum class BetaRange { kUnit, kTwo, kAnyReal };

std::string beta_name(BetaRange r) {
  return r == BetaRange::kUnit ? "(0,1)" : r == BetaRange::kTwo ? "(0,2)" : "R";
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

template <typename F>
void map_(Tensor& t, F f) {
  for (int64_t i = 0; i < t.numel(); ++i) t.set_item(i, f(t.item(i)));
}

// L2-normalises every D-row of a [..., D] tensor, as the module does for k.
void normalize_rows_(Tensor& t) {
  const int64_t D = t.dim(-1);
  for (int64_t r = 0; r < t.numel() / D; ++r) {
    double n = 0;
    for (int64_t i = 0; i < D; ++i) n += t.item(r * D + i) * t.item(r * D + i);
    for (int64_t i = 0; i < D; ++i) t.set_item(r * D + i, t.item(r * D + i) / std::sqrt(n));
  }
}

struct Problem {
  int64_t B = 2, T = 16, H = 2, Dk = 4, Dv = 3;
  double scale = 0.5;           // 1/sqrt(Dk)
  Tensor q, k, v, g, beta, s0;  // g and s0 stay undefined unless asked for

  Problem(int64_t t, DType dt, bool gated, BetaRange range, bool with_initial_state,
          uint64_t seed = 1)
      : T(t) {
    q = random_tensor({B, T, H, Dk}, seed, dt);
    k = random_tensor({B, T, H, Dk}, seed + 1, dt);
    normalize_rows_(k);
    v = random_tensor({B, T, H, Dv}, seed + 2, dt);
    beta = random_tensor(gate_shape(), seed + 3, dt);
    if (range == BetaRange::kUnit) map_(beta, [](double x) { return sigmoid(x); });
    if (range == BetaRange::kTwo) map_(beta, [](double x) { return 2 * sigmoid(x); });
    if (range == BetaRange::kAnyReal) map_(beta, [](double x) { return 1.5 * x; });
    if (gated) {
      // log sigmoid of N(2, 1): decays around 0.85 per token, so a 16-token chunk keeps ~e^-2.5
      // of its incoming state and every gradient stays well above rounding.
      g = random_tensor(gate_shape(), seed + 4, dt);
      map_(g, [](double x) { return std::log(sigmoid(x + 2)); });
    }
    if (with_initial_state) s0 = random_tensor(state_shape(), seed + 5, dt);
  }
  Shape gate_shape() const { return {B, T, H}; }
  Shape state_shape() const { return {B, H, Dk, Dv}; }
  Shape transition_shape() const { return {B, H, Dk, Dk}; }
  Shape o_shape() const { return {B, T, H, Dv}; }
  DType dtype() const { return q.dtype(); }
};

struct Outputs {
  Tensor o, s;
};

Outputs run_recurrent(const Problem& p) {
  Outputs r{Tensor::empty(p.o_shape(), p.dtype()), Tensor::empty(p.state_shape(), p.dtype())};
  delta_rule_recurrent_forward(p.q, p.k, p.v, p.g, p.beta, p.scale, p.s0, r.o, r.s);
  return r;
}

Outputs run_chunked(const Problem& p, int64_t chunk) {
  Outputs r{Tensor::empty(p.o_shape(), p.dtype()), Tensor::empty(p.state_shape(), p.dtype())};
  delta_rule_chunked_forward(p.q, p.k, p.v, p.g, p.beta, p.scale, chunk, p.s0, r.o, r.s);
  return r;
}

Tensor run_transition(const Problem& p, int64_t chunk) {
  Tensor a = Tensor::empty(p.transition_shape(), p.dtype());
  a.fill_(123.0);
  delta_rule_chunked_transition(p.k, p.g, p.beta, chunk, a);
  return a;
}

struct Grads {
  Tensor dq, dk, dv, dg, dbeta, ds0;
};

// Outputs are pre-filled with garbage: the contract says `=`, so nothing may leak through.
Grads run_backward(const Problem& p, int64_t chunk, const Tensor& d_o, const Tensor& d_final) {
  const DType dt = p.dtype();
  Grads g{Tensor::empty(p.q.shape(), dt),    Tensor::empty(p.k.shape(), dt),
          Tensor::empty(p.v.shape(), dt),    Tensor(),
          Tensor::empty(p.gate_shape(), dt), Tensor::empty(p.state_shape(), dt)};
  if (p.g.defined()) g.dg = Tensor::empty(p.gate_shape(), dt);
  for (Tensor* t : {&g.dq, &g.dk, &g.dv, &g.dg, &g.dbeta, &g.ds0})
    if (t->defined()) t->fill_(123.0);
  delta_rule_chunked_backward(p.q, p.k, p.v, p.g, p.beta, p.scale, chunk, p.s0, d_o, d_final, g.dq,
                              g.dk, g.dv, g.dg, g.dbeta, g.ds0);
  return g;
}

// Largest difference relative to the reference's magnitude (at least 1).
double rel_diff(const Tensor& got, const Tensor& want) {
  return max_abs_diff(got, want) / std::max(1.0, max_abs(want));
}

// Time steps [t0, t1) of a [B, T, H, ...] tensor, copied.
Tensor time_slice(const Tensor& x, int64_t t0, int64_t t1) {
  const int64_t B = x.dim(0), T = x.dim(1), row = x.numel() / (B * T);
  Shape s = x.shape();
  s[1] = t1 - t0;
  Tensor out = Tensor::empty(s, x.dtype());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t i = 0; i < row; ++i)
        out.set_item((b * (t1 - t0) + t - t0) * row + i, x.item((b * T + t) * row + i));
  return out;
}

// Joins two [B, T_i, H, ...] tensors along time.
Tensor time_concat(const Tensor& a, const Tensor& b) {
  const int64_t B = a.dim(0), Ta = a.dim(1), Tb = b.dim(1), row = a.numel() / (B * Ta);
  Shape s = a.shape();
  s[1] = Ta + Tb;
  Tensor out = Tensor::empty(s, a.dtype());
  for (int64_t n = 0; n < B; ++n)
    for (int64_t t = 0; t < Ta + Tb; ++t)
      for (int64_t i = 0; i < row; ++i)
        out.set_item((n * (Ta + Tb) + t) * row + i,
                     t < Ta ? a.item((n * Ta + t) * row + i) : b.item((n * Tb + t - Ta) * row + i));
  return out;
}

// The problem restricted to time steps [t0, t1), without initial state.
Problem time_part(const Problem& p, int64_t t0, int64_t t1) {
  Problem r = p;
  r.T = t1 - t0;
  r.q = time_slice(p.q, t0, t1);
  r.k = time_slice(p.k, t0, t1);
  r.v = time_slice(p.v, t0, t1);
  r.beta = time_slice(p.beta, t0, t1);
  if (p.g.defined()) r.g = time_slice(p.g, t0, t1);
  r.s0 = Tensor();
  return r;
}

// Per (b, h): A X (or A^T X), with A [B, H, Dk, Dk] and X [B, H, Dk, N].
Tensor apply(const Tensor& a, const Tensor& x, bool transpose_a) {
  const int64_t BH = a.dim(0) * a.dim(1), Dk = a.dim(2), N = x.dim(3);
  Tensor out = Tensor::zeros(x.shape(), x.dtype());
  for (int64_t n = 0; n < BH; ++n)
    for (int64_t i = 0; i < Dk; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t l = 0; l < Dk; ++l)
          acc += (transpose_a ? a.item((n * Dk + l) * Dk + i) : a.item((n * Dk + i) * Dk + l)) *
                 x.item((n * Dk + l) * N + j);
        out.set_item((n * Dk + i) * N + j, acc);
      }
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = a.clone();
  for (int64_t i = 0; i < a.numel(); ++i) out.set_item(i, a.item(i) + b.item(i));
  return out;
}

// prod_t exp(g_t) (I - beta_t k_t^T k_t), later tokens on the left, one token at a time: the
// definition the chunk-wise export must reproduce.
Tensor token_product_transition(const Problem& p) {
  const int64_t Dk = p.Dk;
  Tensor a = Tensor::zeros(p.transition_shape(), DType::kF64);
  std::vector<double> A(Dk * Dk), next(Dk * Dk);
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h) {
      std::fill(A.begin(), A.end(), 0.0);
      for (int64_t i = 0; i < Dk; ++i) A[i * Dk + i] = 1;
      for (int64_t t = 0; t < p.T; ++t) {
        const int64_t gi = (b * p.T + t) * p.H + h;
        const double decay = p.g.defined() ? std::exp(p.g.item(gi)) : 1.0, bt = p.beta.item(gi);
        auto kt = [&](int64_t i) { return p.k.item(gi * Dk + i); };
        for (int64_t i = 0; i < Dk; ++i)
          for (int64_t j = 0; j < Dk; ++j) {
            double acc = A[i * Dk + j];
            for (int64_t l = 0; l < Dk; ++l) acc -= bt * kt(i) * kt(l) * A[l * Dk + j];
            next[i * Dk + j] = decay * acc;
          }
        A.swap(next);
      }
      for (int64_t i = 0; i < Dk * Dk; ++i) a.set_item((b * p.H + h) * Dk * Dk + i, A[i]);
    }
  return a;
}

// ---- 1. chunked forward == recurrent forward ------------------------------------------------

void expect_chunked_matches_recurrent(DType dt, double tol) {
  for (bool gated : {false, true}) {
    for (BetaRange range : {BetaRange::kUnit, BetaRange::kTwo, BetaRange::kAnyReal}) {
      for (int64_t T : {16, 24}) {
        for (bool with_s0 : {false, true}) {
          Problem p(T, dt, gated, range, with_s0);
          const Outputs ref = run_recurrent(p);
          for (int64_t chunk : {int64_t{1}, int64_t{4}, int64_t{8}, T}) {
            SCOPED_TRACE("gated=" + std::to_string(gated) + " beta in " + beta_name(range) +
                         " T=" + std::to_string(T) + " chunk=" + std::to_string(chunk) +
                         " initial_state=" + std::to_string(with_s0));
            const Outputs got = run_chunked(p, chunk);
            EXPECT_LE(rel_diff(got.o, ref.o), tol);
            EXPECT_LE(rel_diff(got.s, ref.s), tol);
          }
        }
      }
    }
  }
}

TEST(DeltaRule, ChunkedForwardMatchesRecurrentF64) {
  expect_chunked_matches_recurrent(DType::kF64, 1e-11);
}

// f32: the chunked form sums in another order than the token loop, through a triangular solve;
// the largest difference seen is ~7e-7 relative, and 1e-5 (~80 f32 ulps) leaves a margin of ten.
TEST(DeltaRule, ChunkedForwardMatchesRecurrentF32) {
  expect_chunked_matches_recurrent(DType::kF32, 1e-5);
}

TEST(DeltaRule, FinalStateIsOptional) {
  Problem p(16, DType::kF64, true, BetaRange::kTwo, true);
  const Outputs ref = run_recurrent(p);
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64), none;
  delta_rule_chunked_forward(p.q, p.k, p.v, p.g, p.beta, p.scale, 4, p.s0, o, none);
  EXPECT_LE(rel_diff(o, ref.o), 1e-12);
  delta_rule_recurrent_forward(p.q, p.k, p.v, p.g, p.beta, p.scale, p.s0, o, none);
  EXPECT_LE(rel_diff(o, ref.o), 1e-12);
}

// ---- 2. chunked backward == finite differences of the recurrent forward ---------------------

// L = sum(o * w) + sum(S_final * w2) through the recurrent reference. L is affine in q, v and
// S_0 coordinates but not in k, beta or g, so the step balances truncation (~h^2) against rounding
// (~1e-16 / h): with h = 1e-5 the worst error seen is ~1e-9, under the 1e-8 tolerance.
void expect_backward_matches_fd(bool gated, BetaRange range, int64_t chunk, bool with_s0,
                                bool with_d_final) {
  SCOPED_TRACE("gated=" + std::to_string(gated) + " beta in " + beta_name(range) +
               " chunk=" + std::to_string(chunk) + " initial_state=" + std::to_string(with_s0) +
               " d_final_state=" + std::to_string(with_d_final));
  Problem p(16, DType::kF64, gated, range, with_s0, 7);
  const Tensor w = random_tensor(p.o_shape(), 11);
  const Tensor w2 = with_d_final ? random_tensor(p.state_shape(), 12) : Tensor();
  const Grads g = run_backward(p, chunk, w, w2);
  // An undefined initial state is zero; make it a tensor only now, to differentiate against.
  if (!with_s0) p.s0 = Tensor::zeros(p.state_shape(), DType::kF64);
  auto loss = [&] {
    const Outputs r = run_recurrent(p);
    return testing::dot(r.o, w) + (with_d_final ? testing::dot(r.s, w2) : 0.0);
  };
  const double h = 1e-5, tol = 1e-8;
  EXPECT_LE(gradcheck(p.q, g.dq, loss, h), tol) << "dq";
  EXPECT_LE(gradcheck(p.k, g.dk, loss, h), tol) << "dk";
  EXPECT_LE(gradcheck(p.v, g.dv, loss, h), tol) << "dv";
  EXPECT_LE(gradcheck(p.beta, g.dbeta, loss, h), tol) << "dbeta";
  if (gated) {
    EXPECT_LE(gradcheck(p.g, g.dg, loss, h), tol) << "dg";
  }
  EXPECT_LE(gradcheck(p.s0, g.ds0, loss, h), tol) << "d_initial_state";
}

TEST(DeltaRule, ChunkedBackwardMatchesFiniteDifferencesGated) {
  for (int64_t chunk : {1, 4, 16})
    expect_backward_matches_fd(true, BetaRange::kTwo, chunk, true, true);
  expect_backward_matches_fd(true, BetaRange::kUnit, 8, true, true);
  expect_backward_matches_fd(true, BetaRange::kAnyReal, 4, true, true);
  expect_backward_matches_fd(true, BetaRange::kUnit, 4, false, false);  // undefined dS_final = 0
}

TEST(DeltaRule, ChunkedBackwardMatchesFiniteDifferencesUngated) {
  for (int64_t chunk : {1, 4, 16})
    expect_backward_matches_fd(false, BetaRange::kUnit, chunk, true, true);
  expect_backward_matches_fd(false, BetaRange::kTwo, 8, false, true);
}

TEST(DeltaRule, ChunkedBackwardIndependentOfChunkF32) {
  Problem p(16, DType::kF32, true, BetaRange::kTwo, true, 5);
  const Tensor w = random_tensor(p.o_shape(), 11, DType::kF32);
  const Tensor w2 = random_tensor(p.state_shape(), 12, DType::kF32);
  const Grads ref = run_backward(p, 1, w, w2);
  for (int64_t chunk : {4, 16}) {
    const Grads g = run_backward(p, chunk, w, w2);
    EXPECT_LE(rel_diff(g.dq, ref.dq), 1e-5) << "chunk " << chunk;
    EXPECT_LE(rel_diff(g.dk, ref.dk), 1e-5) << "chunk " << chunk;
    EXPECT_LE(rel_diff(g.dv, ref.dv), 1e-5) << "chunk " << chunk;
    EXPECT_LE(rel_diff(g.dg, ref.dg), 1e-5) << "chunk " << chunk;
    EXPECT_LE(rel_diff(g.dbeta, ref.dbeta), 1e-5) << "chunk " << chunk;
    EXPECT_LE(rel_diff(g.ds0, ref.ds0), 1e-5) << "chunk " << chunk;
  }
}

// ---- 3. segments: carried state, exported transition, composed backward --------------------

void expect_halves_equal_whole(bool gated) {
  SCOPED_TRACE("gated=" + std::to_string(gated));
  const int64_t T = 24, half = 12, chunk = 4;
  const double tol = 1e-12;
  Problem whole(T, DType::kF64, gated, BetaRange::kTwo, true, 21);
  Problem first = time_part(whole, 0, half), second = time_part(whole, half, T);
  first.s0 = whole.s0;

  const Outputs all = run_chunked(whole, chunk);
  const Outputs a = run_chunked(first, chunk);
  second.s0 = a.s;  // the LASP-2 hand-off: one segment's outgoing state is the next one's S_in
  const Outputs b = run_chunked(second, chunk);
  EXPECT_LE(rel_diff(time_concat(a.o, b.o), all.o), tol);
  EXPECT_LE(rel_diff(b.s, all.s), tol);

  const Tensor w = random_tensor(whole.o_shape(), 31);
  const Tensor w2 = random_tensor(whole.state_shape(), 32);
  const Grads g_all = run_backward(whole, chunk, w, w2);
  const Grads g_b = run_backward(second, chunk, time_slice(w, half, T), w2);
  const Grads g_a = run_backward(first, chunk, time_slice(w, 0, half), g_b.ds0);
  EXPECT_LE(rel_diff(time_concat(g_a.dq, g_b.dq), g_all.dq), tol);
  EXPECT_LE(rel_diff(time_concat(g_a.dk, g_b.dk), g_all.dk), tol);
  EXPECT_LE(rel_diff(time_concat(g_a.dv, g_b.dv), g_all.dv), tol);
  EXPECT_LE(rel_diff(time_concat(g_a.dbeta, g_b.dbeta), g_all.dbeta), tol);
  if (gated) {
    EXPECT_LE(rel_diff(time_concat(g_a.dg, g_b.dg), g_all.dg), tol);
  }
  EXPECT_LE(rel_diff(g_a.ds0, g_all.ds0), tol);
}

TEST(DeltaRule, HalvesWithCarriedStateEqualWhole) {
  expect_halves_equal_whole(true);
  expect_halves_equal_whole(false);
}

TEST(DeltaRule, TransitionMatchesTokenProduct) {
  for (bool gated : {false, true}) {
    for (BetaRange range : {BetaRange::kUnit, BetaRange::kTwo, BetaRange::kAnyReal}) {
      Problem p(16, DType::kF64, gated, range, false, 41);
      const Tensor ref = token_product_transition(p);
      for (int64_t chunk : {1, 4, 16}) {
        SCOPED_TRACE("gated=" + std::to_string(gated) + " beta in " + beta_name(range) +
                     " chunk=" + std::to_string(chunk));
        EXPECT_LE(rel_diff(run_transition(p, chunk), ref), 1e-12);
      }
      Problem p32(16, DType::kF32, gated, range, false, 41);
      EXPECT_LE(rel_diff(run_transition(p32, 4), ref), 1e-5) << "f32";
    }
  }
}

// The LASP-2 composition over two segments with their exported (A, B) and (A, c): forward
// S_out = A2 (A1 S_0 + B1) + B2, backward dS_in(first) = c1 + A1^T (c2 + A2^T dS_final).
void expect_segments_compose(bool gated) {
  SCOPED_TRACE("gated=" + std::to_string(gated));
  const int64_t T = 24, half = 12, chunk = 4;
  const double tol = 1e-12;
  Problem whole(T, DType::kF64, gated, BetaRange::kTwo, true, 51);
  const Problem first = time_part(whole, 0, half), second = time_part(whole, half, T);

  const Tensor A1 = run_transition(first, chunk), A2 = run_transition(second, chunk);
  const Tensor B1 = run_chunked(first, chunk).s, B2 = run_chunked(second, chunk).s;
  const Tensor composed = add(apply(A2, add(apply(A1, whole.s0, false), B1), false), B2);
  EXPECT_LE(rel_diff(composed, run_chunked(whole, chunk).s), tol);

  const Tensor w = random_tensor(whole.o_shape(), 61);
  const Tensor w2 = random_tensor(whole.state_shape(), 62);
  const Tensor none;
  // c of each segment: the gradient reaching its S_in from its own outputs, given its S_in.
  Problem second_in = second;
  second_in.s0 = add(apply(A1, whole.s0, false), B1);
  Problem first_in = first;
  first_in.s0 = whole.s0;
  const Tensor c2 = run_backward(second_in, chunk, time_slice(w, half, T), none).ds0;
  const Tensor c1 = run_backward(first_in, chunk, time_slice(w, 0, half), none).ds0;
  // c does not depend on S_in (the outputs are affine in it), so LASP-2 may compute it before
  // the forward exchange has delivered S_in.
  EXPECT_LE(rel_diff(run_backward(second, chunk, time_slice(w, half, T), none).ds0, c2), tol);
  const Tensor dS_out_first = add(c2, apply(A2, w2, true));
  EXPECT_LE(rel_diff(dS_out_first, run_backward(second_in, chunk, time_slice(w, half, T), w2).ds0),
            tol);
  const Tensor dS_in = add(c1, apply(A1, dS_out_first, true));
  EXPECT_LE(rel_diff(dS_in, run_backward(whole, chunk, w, w2).ds0), tol);
}

TEST(DeltaRule, ExportedTransitionComposesSegments) {
  expect_segments_compose(true);
  expect_segments_compose(false);
}

// ---- 4. error paths -------------------------------------------------------------------------

// Runs f, expects linea::Error and returns its message.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected linea::Error";
  return "";
}

TEST(DeltaRule, ChunkMustDivideSequenceLength) {
  Problem p(16, DType::kF64, true, BetaRange::kUnit, false);
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64), none;
  const std::string msg = error_of(
      [&] { delta_rule_chunked_forward(p.q, p.k, p.v, p.g, p.beta, p.scale, 5, none, o, none); });
  EXPECT_NE(msg.find("chunk 5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("T = 16"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hint:"), std::string::npos) << msg;
  EXPECT_THROW(delta_rule_chunked_forward(p.q, p.k, p.v, p.g, p.beta, p.scale, 0, none, o, none),
               Error);
  Tensor dq = Tensor::empty(p.q.shape(), DType::kF64), dk = dq.clone();
  Tensor dv = Tensor::empty(p.v.shape(), DType::kF64);
  Tensor dg = Tensor::empty(p.gate_shape(), DType::kF64), dbeta = dg.clone();
  EXPECT_THROW(delta_rule_chunked_backward(p.q, p.k, p.v, p.g, p.beta, p.scale, 3, none, o, none,
                                           dq, dk, dv, dg, dbeta, none),
               Error);
  Tensor a = Tensor::empty(p.transition_shape(), DType::kF64);
  EXPECT_THROW(delta_rule_chunked_transition(p.k, p.g, p.beta, 6, a), Error);
}

TEST(DeltaRule, MismatchedShapesAreErrors) {
  Problem p(16, DType::kF64, true, BetaRange::kUnit, true);
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64);
  Tensor s = Tensor::empty(p.state_shape(), DType::kF64), none;
  const Tensor k_short = random_tensor({2, 8, 2, 4}, 3);
  const Tensor v_other_heads = random_tensor({2, 16, 1, 3}, 3);
  const Tensor gate_short = random_tensor({2, 8, 2}, 3);
  const Tensor gate_4d = random_tensor({2, 16, 2, 1}, 3);
  const Tensor bad_state = random_tensor({2, 2, 3, 4}, 3);
  const Tensor beta_f32 = p.beta.to(DType::kF32);
  Tensor o_bad = Tensor::empty({2, 16, 2, 4}, DType::kF64);

  auto forward = [&](const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& beta,
                     const Tensor& s0, Tensor& out, Tensor& fs) {
    delta_rule_chunked_forward(p.q, k, v, g, beta, p.scale, 4, s0, out, fs);
  };
  EXPECT_THROW(forward(k_short, p.v, p.g, p.beta, none, o, none), Error);
  EXPECT_THROW(forward(p.k, v_other_heads, p.g, p.beta, none, o, none), Error);
  EXPECT_THROW(forward(p.k, p.v, gate_short, p.beta, none, o, none), Error);
  EXPECT_THROW(forward(p.k, p.v, p.g, gate_4d, none, o, none), Error);
  EXPECT_THROW(forward(p.k, p.v, p.g, beta_f32, none, o, none), Error);
  EXPECT_THROW(forward(p.k, p.v, p.g, bad_state, bad_state, o, none), Error);
  EXPECT_THROW(forward(p.k, p.v, p.g, p.beta, bad_state, o, none), Error);
  EXPECT_THROW(forward(p.k, p.v, p.g, p.beta, none, o_bad, none), Error);
  Tensor s_bad = bad_state.clone();
  EXPECT_THROW(forward(p.k, p.v, p.g, p.beta, none, o, s_bad), Error);
  const std::string beta_msg = error_of([&] { forward(p.k, p.v, p.g, none, none, o, none); });
  EXPECT_NE(beta_msg.find("beta is required"), std::string::npos) << beta_msg;
  EXPECT_THROW(delta_rule_recurrent_forward(p.q, k_short, p.v, p.g, p.beta, p.scale, none, o, none),
               Error);
  const std::string msg = error_of(
      [&] { delta_rule_recurrent_forward(p.q, p.k, p.v, p.g, p.beta, p.scale, none, o, s_bad); });
  EXPECT_NE(msg.find("final_state"), std::string::npos) << msg;

  Tensor dq = Tensor::empty(p.q.shape(), DType::kF64), dk = dq.clone();
  Tensor dv = Tensor::empty(p.v.shape(), DType::kF64), ds = s.clone();
  Tensor dg = Tensor::empty(p.gate_shape(), DType::kF64), dbeta = dg.clone();
  Tensor dq_bad = Tensor::empty({2, 16, 2, 3}, DType::kF64), dg_bad = gate_short.clone();
  auto backward = [&](const Tensor& g, const Tensor& d_o, const Tensor& d_final, Tensor& dq_,
                      Tensor& dg_, Tensor& dbeta_, Tensor& ds_) {
    delta_rule_chunked_backward(p.q, p.k, p.v, g, p.beta, p.scale, 4, p.s0, d_o, d_final, dq_, dk,
                                dv, dg_, dbeta_, ds_);
  };
  EXPECT_THROW(backward(p.g, o_bad, s, dq, dg, dbeta, ds), Error);
  EXPECT_THROW(backward(p.g, o, bad_state, dq, dg, dbeta, ds), Error);
  EXPECT_THROW(backward(p.g, o, s, dq_bad, dg, dbeta, ds), Error);
  EXPECT_THROW(backward(p.g, o, s, dq, dg_bad, dbeta, ds), Error);
  EXPECT_THROW(backward(p.g, o, s, dq, dg, dg_bad, ds), Error);
  EXPECT_THROW(backward(p.g, o, s, dq, dg, dbeta, s_bad), Error);
  // dg must be given exactly when g is: a missing dg would leave the gate untrained silently.
  const std::string dg_missing = error_of([&] { backward(p.g, o, s, dq, none, dbeta, ds); });
  EXPECT_NE(dg_missing.find("dg is required"), std::string::npos) << dg_missing;
  const std::string dg_extra = error_of([&] { backward(none, o, s, dq, dg, dbeta, ds); });
  EXPECT_NE(dg_extra.find("g is undefined"), std::string::npos) << dg_extra;
  EXPECT_NO_THROW(backward(none, o, s, dq, none, dbeta, ds));

  Tensor a = Tensor::empty(p.transition_shape(), DType::kF64);
  Tensor a_bad = Tensor::empty(p.state_shape(), DType::kF64);
  EXPECT_THROW(delta_rule_chunked_transition(p.k, p.g, p.beta, 4, a_bad), Error);
  EXPECT_THROW(delta_rule_chunked_transition(p.k, gate_short, p.beta, 4, a), Error);
  EXPECT_THROW(delta_rule_chunked_transition(p.k, p.g, none, 4, a), Error);
}

}  // namespace
}  // namespace linea
