#include "kernels/gated_linear_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/gradcheck.h"
#include "kernels/linear_attention.h"

namespace linea {
namespace {

using kernels::gated_linear_attention_chunked_backward;
using kernels::gated_linear_attention_chunked_forward;
using kernels::gated_linear_attention_recurrent_forward;
using kernels::gated_linear_attention_segment_log_decay;
using testing::gradcheck;
using testing::max_abs;
using testing::max_abs_diff;
using testing::random_tensor;

// The gate layouts of the mixers this kernel serves.
enum class KeyGate { kNone, kScalar, kVector };

struct GateCase {
  const char* name;
  KeyGate gk;
  bool gv;
};

const GateCase kGateCases[] = {
    {"vector gk (GLA)", KeyGate::kVector, false},
    {"scalar gk (Mamba2)", KeyGate::kScalar, false},
    {"gv only (GSA first pass)", KeyGate::kNone, true},
    {"vector gk + gv", KeyGate::kVector, true},
    {"scalar gk + gv", KeyGate::kScalar, true},
    {"no gates", KeyGate::kNone, false},
};

// log(sigmoid(x + shift)) of N(0, 1) draws: shift 0 gives gates in about [-3, 0], as a model's
// gate projections produce; shift -8 gives about -8 a token, a state that forgets at once.
Tensor log_sigmoid_gate(const Shape& s, uint64_t seed, DType dt, double shift) {
  Tensor g = random_tensor(s, seed);
  for (int64_t i = 0; i < g.numel(); ++i)
    g.set_item(i, -std::log1p(std::exp(-(g.item(i) + shift))));
  return g.to(dt);
}

struct Problem {
  int64_t B = 2, T = 16, H = 2, Dk = 4, Dv = 3;
  double scale = 0.5;          // 1/sqrt(Dk)
  Tensor q, k, v, gk, gv, s0;  // gates and s0 stay undefined unless asked for

  Problem(int64_t t, DType dt, const GateCase& gates, bool with_initial_state, uint64_t seed = 1,
          double gate_shift = 0)
      : T(t) {
    q = random_tensor({B, T, H, Dk}, seed, dt);
    k = random_tensor({B, T, H, Dk}, seed + 1, dt);
    v = random_tensor({B, T, H, Dv}, seed + 2, dt);
    if (with_initial_state) s0 = random_tensor(state_shape(), seed + 3, dt);
    if (gates.gk == KeyGate::kVector)
      gk = log_sigmoid_gate({B, T, H, Dk}, seed + 4, dt, gate_shift);
    if (gates.gk == KeyGate::kScalar) gk = log_sigmoid_gate({B, T, H}, seed + 4, dt, gate_shift);
    if (gates.gv) gv = log_sigmoid_gate({B, T, H, Dv}, seed + 5, dt, gate_shift);
  }
  Shape state_shape() const { return {B, H, Dk, Dv}; }
  Shape o_shape() const { return {B, T, H, Dv}; }
  DType dtype() const { return q.dtype(); }
};

struct Outputs {
  Tensor o, s;
};

Outputs run_recurrent(const Problem& p) {
  Outputs r{Tensor::empty(p.o_shape(), p.dtype()), Tensor::empty(p.state_shape(), p.dtype())};
  gated_linear_attention_recurrent_forward(p.q, p.k, p.v, p.gk, p.gv, p.scale, p.s0, r.o, r.s);
  return r;
}

Outputs run_chunked(const Problem& p, int64_t chunk) {
  Outputs r{Tensor::empty(p.o_shape(), p.dtype()), Tensor::empty(p.state_shape(), p.dtype())};
  gated_linear_attention_chunked_forward(p.q, p.k, p.v, p.gk, p.gv, p.scale, chunk, p.s0, r.o, r.s);
  return r;
}

struct Grads {
  Tensor dq, dk, dv, dgk, dgv, ds0;
};

Tensor like(const Tensor& t) {
  return t.defined() ? Tensor::empty(t.shape(), t.dtype()) : Tensor();
}

// Outputs are pre-filled with garbage: the contract says `=`, so nothing may leak through.
Grads run_backward(const Problem& p, int64_t chunk, const Tensor& d_o, const Tensor& d_final) {
  Grads g{like(p.q),  like(p.k),  like(p.v),
          like(p.gk), like(p.gv), Tensor::empty(p.state_shape(), p.dtype())};
  for (Tensor* t : {&g.dq, &g.dk, &g.dv, &g.dgk, &g.dgv, &g.ds0})
    if (t->defined()) t->fill_(123.0);
  gated_linear_attention_chunked_backward(p.q, p.k, p.v, p.gk, p.gv, p.scale, chunk, p.s0, d_o,
                                          d_final, g.dq, g.dk, g.dv, g.dgk, g.dgv, g.ds0);
  return g;
}

// Largest difference relative to the reference's magnitude (at least 1).
double rel_diff(const Tensor& got, const Tensor& want) {
  return max_abs_diff(got, want) / std::max(1.0, max_abs(want));
}

bool all_finite(const Tensor& t) {
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(t.item(i))) return false;
  return true;
}

// Rows [t0, t1) of the time axis of a [B, T, ...] tensor, copied (undefined stays undefined).
Tensor time_slice(const Tensor& x, int64_t t0, int64_t t1) {
  if (!x.defined()) return x;
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

// Joins two [B, T_i, ...] tensors along time.
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

// p restricted to tokens [t0, t1), starting from `s0`.
Problem segment(const Problem& whole, int64_t t0, int64_t t1, const Tensor& s0) {
  Problem part = whole;
  part.T = t1 - t0;
  part.q = time_slice(whole.q, t0, t1);
  part.k = time_slice(whole.k, t0, t1);
  part.v = time_slice(whole.v, t0, t1);
  part.gk = time_slice(whole.gk, t0, t1);
  part.gv = time_slice(whole.gv, t0, t1);
  part.s0 = s0;
  return part;
}

// ---- 1. chunked forward == recurrent forward ------------------------------------------------

void expect_chunked_matches_recurrent(DType dt, double tol) {
  for (const GateCase& gates : kGateCases) {
    for (double shift : {0.0, -8.0}) {
      for (int64_t T : {16, 24}) {
        for (bool with_s0 : {false, true}) {
          Problem p(T, dt, gates, with_s0, 1, shift);
          const Outputs ref = run_recurrent(p);
          for (int64_t chunk : {int64_t{1}, int64_t{4}, int64_t{8}, T}) {
            SCOPED_TRACE(std::string(gates.name) + " shift=" + std::to_string(shift) +
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

TEST(GatedLinearAttention, ChunkedForwardMatchesRecurrentF64) {
  expect_chunked_matches_recurrent(DType::kF64, 1e-12);
}

// f32: as for the ungated kernel, a chunk sums its products in another order than the token loop
// and the outputs reach ~10; the decays only shrink terms, so 1e-5 relative keeps the margin.
TEST(GatedLinearAttention, ChunkedForwardMatchesRecurrentF32) {
  expect_chunked_matches_recurrent(DType::kF32, 1e-5);
}

// Gates of about -50 a token: over a 64-token chunk the cumulative log decay reaches -3200, so
// exp(-b_s) on its own would be inf and exp(b_t) 0; only relative decays keep the result finite.
TEST(GatedLinearAttention, StrongDecayStaysFiniteAndExact) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (const GateCase& gates : kGateCases) {
      SCOPED_TRACE(std::string(gates.name) + " " + dtype_name(dt));
      Problem p(64, dt, gates, true, 3, -50.0);
      const Outputs ref = run_recurrent(p);
      const Outputs got = run_chunked(p, 64);
      EXPECT_TRUE(all_finite(got.o) && all_finite(got.s));
      EXPECT_LE(rel_diff(got.o, ref.o), dt == DType::kF32 ? 1e-5 : 1e-12);
      EXPECT_LE(rel_diff(got.s, ref.s), dt == DType::kF32 ? 1e-5 : 1e-12);
      const Grads g = run_backward(p, 64, random_tensor(p.o_shape(), 9, dt),
                                   random_tensor(p.state_shape(), 10, dt));
      for (const Tensor* t : {&g.dq, &g.dk, &g.dv, &g.dgk, &g.dgv, &g.ds0}) {
        if (t->defined()) {
          EXPECT_TRUE(all_finite(*t));
        }
      }
    }
  }
}

TEST(GatedLinearAttention, WithoutGatesEqualsLinearAttention) {
  Problem p(16, DType::kF64, kGateCases[5], true, 4);
  ASSERT_FALSE(p.gk.defined() || p.gv.defined());
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64), s = Tensor::empty(p.state_shape(), p.dtype());
  kernels::linear_attention_chunked_forward(p.q, p.k, p.v, p.scale, 4, p.s0, o, s);
  const Outputs got = run_chunked(p, 4);
  EXPECT_LE(rel_diff(got.o, o), 1e-12);
  EXPECT_LE(rel_diff(got.s, s), 1e-12);

  const Tensor w = random_tensor(p.o_shape(), 11), w2 = random_tensor(p.state_shape(), 12);
  Tensor dq = like(p.q), dk = like(p.k), dv = like(p.v), ds0 = like(p.s0);
  kernels::linear_attention_chunked_backward(p.q, p.k, p.v, p.scale, 4, p.s0, w, w2, dq, dk, dv,
                                             ds0);
  const Grads g = run_backward(p, 4, w, w2);
  EXPECT_LE(rel_diff(g.dq, dq), 1e-12);
  EXPECT_LE(rel_diff(g.dk, dk), 1e-12);
  EXPECT_LE(rel_diff(g.dv, dv), 1e-12);
  EXPECT_LE(rel_diff(g.ds0, ds0), 1e-12);
}

TEST(GatedLinearAttention, FinalStateAndGateGradsAreOptional) {
  Problem p(16, DType::kF64, kGateCases[3], true);
  const Outputs ref = run_recurrent(p);
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64), none;
  gated_linear_attention_chunked_forward(p.q, p.k, p.v, p.gk, p.gv, p.scale, 4, p.s0, o, none);
  EXPECT_LE(rel_diff(o, ref.o), 1e-12);
  gated_linear_attention_recurrent_forward(p.q, p.k, p.v, p.gk, p.gv, p.scale, p.s0, o, none);
  EXPECT_LE(rel_diff(o, ref.o), 1e-12);

  const Tensor w = random_tensor(p.o_shape(), 11);
  const Grads full = run_backward(p, 4, w, none);
  Tensor dq = like(p.q), dk = like(p.k), dv = like(p.v);
  gated_linear_attention_chunked_backward(p.q, p.k, p.v, p.gk, p.gv, p.scale, 4, p.s0, w, none, dq,
                                          dk, dv, none, none, none);
  EXPECT_LE(rel_diff(dq, full.dq), 1e-12);
  EXPECT_LE(rel_diff(dk, full.dk), 1e-12);
  EXPECT_LE(rel_diff(dv, full.dv), 1e-12);
}

// ---- 2. chunked backward == finite differences of the recurrent forward ---------------------

// L = sum(o * w) + sum(S_final * w2) through the recurrent reference. L is affine in any single
// coordinate of q, k, v, S_0, so a large step there only reduces rounding; it is smooth but not
// polynomial in a gate, so there the step trades truncation (h^2) against rounding (eps / h).
void expect_backward_matches_fd(const GateCase& gates, int64_t chunk, bool with_s0,
                                bool with_d_final) {
  SCOPED_TRACE(std::string(gates.name) + " chunk=" + std::to_string(chunk) + " initial_state=" +
               std::to_string(with_s0) + " d_final_state=" + std::to_string(with_d_final));
  Problem p(16, DType::kF64, gates, with_s0, 7);
  const Tensor w = random_tensor(p.o_shape(), 11);
  const Tensor w2 = with_d_final ? random_tensor(p.state_shape(), 12) : Tensor();
  const Grads g = run_backward(p, chunk, w, w2);
  // An undefined initial state is zero; make it a tensor only now, to differentiate against.
  if (!with_s0) p.s0 = Tensor::zeros(p.state_shape(), DType::kF64);
  auto loss = [&] {
    const Outputs r = run_recurrent(p);
    return testing::dot(r.o, w) + (with_d_final ? testing::dot(r.s, w2) : 0.0);
  };
  const double h = 1e-3, tol = 1e-9, h_gate = 1e-5, tol_gate = 1e-7;
  EXPECT_LE(gradcheck(p.q, g.dq, loss, h), tol) << "dq";
  EXPECT_LE(gradcheck(p.k, g.dk, loss, h), tol) << "dk";
  EXPECT_LE(gradcheck(p.v, g.dv, loss, h), tol) << "dv";
  EXPECT_LE(gradcheck(p.s0, g.ds0, loss, h), tol) << "d_initial_state";
  if (p.gk.defined()) {
    EXPECT_LE(gradcheck(p.gk, g.dgk, loss, h_gate), tol_gate) << "dgk";
  }
  if (p.gv.defined()) {
    EXPECT_LE(gradcheck(p.gv, g.dgv, loss, h_gate), tol_gate) << "dgv";
  }
}

TEST(GatedLinearAttention, ChunkedBackwardMatchesFiniteDifferences) {
  for (const GateCase& gates : kGateCases) expect_backward_matches_fd(gates, 4, true, true);
  for (int64_t chunk : {1, 16}) {
    expect_backward_matches_fd(kGateCases[3], chunk, true, true);  // vector gk + gv
    expect_backward_matches_fd(kGateCases[4], chunk, true, true);  // scalar gk + gv
  }
  expect_backward_matches_fd(kGateCases[0], 8, false, false);  // undefined d_final counts as zero
  expect_backward_matches_fd(kGateCases[4], 8, false, true);
}

TEST(GatedLinearAttention, ChunkedBackwardIndependentOfChunkF32) {
  for (const GateCase& gates : kGateCases) {
    SCOPED_TRACE(gates.name);
    Problem p(16, DType::kF32, gates, true, 5);
    const Tensor w = random_tensor(p.o_shape(), 11, DType::kF32);
    const Tensor w2 = random_tensor(p.state_shape(), 12, DType::kF32);
    const Grads ref = run_backward(p, 1, w, w2);
    for (int64_t chunk : {4, 16}) {
      const Grads g = run_backward(p, chunk, w, w2);
      EXPECT_LE(rel_diff(g.dq, ref.dq), 1e-5) << "chunk " << chunk;
      EXPECT_LE(rel_diff(g.dk, ref.dk), 1e-5) << "chunk " << chunk;
      EXPECT_LE(rel_diff(g.dv, ref.dv), 1e-5) << "chunk " << chunk;
      EXPECT_LE(rel_diff(g.ds0, ref.ds0), 1e-5) << "chunk " << chunk;
      if (g.dgk.defined()) {
        EXPECT_LE(rel_diff(g.dgk, ref.dgk), 1e-5) << "chunk " << chunk;
      }
      if (g.dgv.defined()) {
        EXPECT_LE(rel_diff(g.dgv, ref.dgv), 1e-5) << "chunk " << chunk;
      }
    }
  }
}

// ---- 3. segments: carried state and exported transitions ------------------------------------

TEST(GatedLinearAttention, HalvesWithCarriedStateEqualWhole) {
  const int64_t T = 24, half = 12, chunk = 4;
  for (const GateCase& gates : kGateCases) {
    SCOPED_TRACE(gates.name);
    const Problem whole(T, DType::kF64, gates, true, 21);
    const Outputs all = run_chunked(whole, chunk);
    const Problem first = segment(whole, 0, half, whole.s0);
    const Outputs a = run_chunked(first, chunk);
    // The LASP-2 hand-off: one segment's outgoing state is the next one's S_in.
    const Problem second = segment(whole, half, T, a.s);
    const Outputs b = run_chunked(second, chunk);
    EXPECT_LE(rel_diff(time_concat(a.o, b.o), all.o), 1e-12);
    EXPECT_LE(rel_diff(b.s, all.s), 1e-12);

    const Tensor w = random_tensor(whole.o_shape(), 31);
    const Tensor w2 = random_tensor(whole.state_shape(), 32);
    const Grads g_all = run_backward(whole, chunk, w, w2);
    const Grads g_b = run_backward(second, chunk, time_slice(w, half, T), w2);
    const Grads g_a = run_backward(first, chunk, time_slice(w, 0, half), g_b.ds0);
    EXPECT_LE(rel_diff(time_concat(g_a.dq, g_b.dq), g_all.dq), 1e-12);
    EXPECT_LE(rel_diff(time_concat(g_a.dk, g_b.dk), g_all.dk), 1e-12);
    EXPECT_LE(rel_diff(time_concat(g_a.dv, g_b.dv), g_all.dv), 1e-12);
    EXPECT_LE(rel_diff(g_a.ds0, g_all.ds0), 1e-12);
    if (whole.gk.defined()) {
      EXPECT_LE(rel_diff(time_concat(g_a.dgk, g_b.dgk), g_all.dgk), 1e-12) << "dgk";
    }
    if (whole.gv.defined()) {
      EXPECT_LE(rel_diff(time_concat(g_a.dgv, g_b.dgv), g_all.dgv), 1e-12) << "dgv";
    }
  }
}

// The segment's log decay (A_k, A_v) for p's gates; undefined where p has no gate.
struct LogDecay {
  Tensor k, v;
};

LogDecay segment_log_decay(const Problem& p) {
  LogDecay a;
  if (p.gk.ndim() == 4) a.k = Tensor::empty({p.B, p.H, p.Dk}, p.dtype());
  if (p.gk.ndim() == 3) a.k = Tensor::empty({p.B, p.H}, p.dtype());
  if (p.gv.defined()) a.v = Tensor::empty({p.B, p.H, p.Dv}, p.dtype());
  gated_linear_attention_segment_log_decay(p.gk, p.gv, a.k, a.v);
  return a;
}

// diag(exp(A_k)) S diag(exp(A_v)) + B for [B, H, Dk, Dv] states, written independently of the
// kernel from the header's rule.
Tensor apply_transition(const LogDecay& a, const Tensor& S, const Tensor& B_or_none) {
  const int64_t Bn = S.dim(0), H = S.dim(1), Dk = S.dim(2), Dv = S.dim(3);
  Tensor out = Tensor::empty(S.shape(), S.dtype());
  for (int64_t bh = 0; bh < Bn * H; ++bh) {
    for (int64_t i = 0; i < Dk; ++i) {
      for (int64_t j = 0; j < Dv; ++j) {
        double log_decay = 0;
        if (a.k.defined()) log_decay += a.k.ndim() == 3 ? a.k.item(bh * Dk + i) : a.k.item(bh);
        if (a.v.defined()) log_decay += a.v.item(bh * Dv + j);
        const int64_t e = (bh * Dk + i) * Dv + j;
        out.set_item(
            e, std::exp(log_decay) * S.item(e) + (B_or_none.defined() ? B_or_none.item(e) : 0.0));
      }
    }
  }
  return out;
}

TEST(GatedLinearAttention, ExportedTransitionsComposeToWholeFinalState) {
  const int64_t T = 24, seg = 8, chunk = 4;
  for (const GateCase& gates : kGateCases) {
    for (bool with_s0 : {false, true}) {
      SCOPED_TRACE(std::string(gates.name) + " initial_state=" + std::to_string(with_s0));
      const Problem whole(T, DType::kF64, gates, with_s0, 41);
      const Outputs all = run_chunked(whole, chunk);
      Tensor S = with_s0 ? whole.s0 : Tensor::zeros(whole.state_shape(), DType::kF64);
      for (int64_t t0 = 0; t0 < T; t0 += seg) {
        // (A, B) from the segment's own tokens only: B is its final state from a zero S_in.
        const Problem part = segment(whole, t0, t0 + seg, Tensor());
        const LogDecay a = segment_log_decay(part);
        const Outputs local = run_chunked(part, chunk);
        S = apply_transition(a, S, local.s);

        // Backward dual: with no output gradient, dS_in = diag(exp(A_k)) dS_out diag(exp(A_v)).
        const Tensor d_out = random_tensor(whole.state_shape(), 50 + t0);
        const Grads g =
            run_backward(part, chunk, Tensor::zeros(part.o_shape(), DType::kF64), d_out);
        EXPECT_LE(rel_diff(g.ds0, apply_transition(a, d_out, Tensor())), 1e-12);
      }
      EXPECT_LE(rel_diff(S, all.s), 1e-12);
    }
  }
}

// The header's LASP-2 claim: o = o(S_in = 0) + scale * ((q_t exp(b_t)) S_in) exp(bv_t), with b, bv
// the log decays cumulated from the segment start, written here from the rule token by token.
TEST(GatedLinearAttention, OutputsAreAffineInInitialState) {
  for (const GateCase& gates : kGateCases) {
    SCOPED_TRACE(gates.name);
    const Problem p(12, DType::kF64, gates, true, 61);
    Problem from_zero = p;
    from_zero.s0 = Tensor();
    const Tensor o = run_chunked(p, 4).o, o0 = run_chunked(from_zero, 4).o;
    Tensor want = o0.clone();
    for (int64_t b = 0; b < p.B; ++b) {
      for (int64_t h = 0; h < p.H; ++h) {
        std::vector<double> bk(p.Dk, 0.0), bv(p.Dv, 0.0);
        for (int64_t t = 0; t < p.T; ++t) {
          const int64_t row = (b * p.T + t) * p.H + h;
          for (int64_t i = 0; i < p.Dk; ++i) {
            if (p.gk.ndim() == 4) bk[i] += p.gk.item(row * p.Dk + i);
            if (p.gk.ndim() == 3) bk[i] += p.gk.item(row);
          }
          for (int64_t j = 0; j < p.Dv; ++j) {
            if (p.gv.defined()) bv[j] += p.gv.item(row * p.Dv + j);
            double acc = 0;
            for (int64_t i = 0; i < p.Dk; ++i) {
              acc += p.q.item(row * p.Dk + i) * std::exp(bk[i]) *
                     p.s0.item(((b * p.H + h) * p.Dk + i) * p.Dv + j);
            }
            want.set_item(row * p.Dv + j,
                          want.item(row * p.Dv + j) + p.scale * acc * std::exp(bv[j]));
          }
        }
      }
    }
    EXPECT_LE(rel_diff(o, want), 1e-12);
  }
}

TEST(GatedLinearAttention, SegmentLogDecaySumsOverTime) {
  const Problem p(8, DType::kF32, kGateCases[4], false, 2);  // scalar gk + gv
  const LogDecay a = segment_log_decay(p);
  ASSERT_EQ(a.k.shape(), (Shape{p.B, p.H}));
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t h = 0; h < p.H; ++h) {
      double want_k = 0, want_v0 = 0;
      for (int64_t t = 0; t < p.T; ++t) {
        want_k += p.gk.item((b * p.T + t) * p.H + h);
        want_v0 += p.gv.item(((b * p.T + t) * p.H + h) * p.Dv);
      }
      EXPECT_NEAR(a.k.item(b * p.H + h), want_k, 1e-5);
      EXPECT_NEAR(a.v.item((b * p.H + h) * p.Dv), want_v0, 1e-5);
    }
  }
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

TEST(GatedLinearAttention, ChunkMustDivideSequenceLength) {
  Problem p(16, DType::kF64, kGateCases[3], false);
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64), none;
  const std::string msg = error_of([&] {
    gated_linear_attention_chunked_forward(p.q, p.k, p.v, p.gk, p.gv, p.scale, 5, none, o, none);
  });
  EXPECT_NE(msg.find("chunk 5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("T = 16"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hint:"), std::string::npos) << msg;
  EXPECT_THROW(
      gated_linear_attention_chunked_forward(p.q, p.k, p.v, p.gk, p.gv, p.scale, 0, none, o, none),
      Error);
  Tensor dq = like(p.q), dk = like(p.k), dv = like(p.v);
  EXPECT_THROW(gated_linear_attention_chunked_backward(p.q, p.k, p.v, p.gk, p.gv, p.scale, 3, none,
                                                       o, none, dq, dk, dv, none, none, none),
               Error);
}

TEST(GatedLinearAttention, MismatchedGateShapesAreErrors) {
  Problem p(16, DType::kF64, kGateCases[3], false);  // Dk = 4, Dv = 3
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64), none;
  const Tensor gk_value_width = random_tensor({2, 16, 2, 3}, 3);
  const Tensor gk_no_heads = random_tensor({2, 16}, 3);
  const Tensor gk_short = random_tensor({2, 8, 2}, 3);
  const Tensor gk_f32 = p.gk.to(DType::kF32);
  const Tensor gv_key_width = random_tensor({2, 16, 2, 4}, 3);

  const std::string msg = error_of([&] {
    gated_linear_attention_chunked_forward(p.q, p.k, p.v, gk_value_width, p.gv, p.scale, 4, none, o,
                                           none);
  });
  EXPECT_NE(msg.find("gk must be [2, 16, 2, 4]"), std::string::npos) << msg;
  for (const Tensor* bad : {&gk_no_heads, &gk_short, &gk_f32}) {
    EXPECT_THROW(gated_linear_attention_chunked_forward(p.q, p.k, p.v, *bad, p.gv, p.scale, 4, none,
                                                        o, none),
                 Error);
    EXPECT_THROW(
        gated_linear_attention_recurrent_forward(p.q, p.k, p.v, *bad, p.gv, p.scale, none, o, none),
        Error);
  }
  EXPECT_THROW(gated_linear_attention_chunked_forward(p.q, p.k, p.v, p.gk, gv_key_width, p.scale, 4,
                                                      none, o, none),
               Error);
  EXPECT_THROW(gated_linear_attention_recurrent_forward(p.q, p.k, p.v, p.gk, gv_key_width, p.scale,
                                                        none, o, none),
               Error);

  // Gate gradients: the gate's own shape, and only for a gate that exists.
  Tensor dq = like(p.q), dk = like(p.k), dv = like(p.v);
  Tensor dgk = like(p.gk), dgv = like(p.gv), dgk_scalar = Tensor::empty({2, 16, 2}, DType::kF64);
  EXPECT_THROW(gated_linear_attention_chunked_backward(p.q, p.k, p.v, p.gk, p.gv, p.scale, 4, none,
                                                       o, none, dq, dk, dv, dgk_scalar, dgv, none),
               Error);
  const std::string msg2 = error_of([&] {
    gated_linear_attention_chunked_backward(p.q, p.k, p.v, none, p.gv, p.scale, 4, none, o, none,
                                            dq, dk, dv, dgk, dgv, none);
  });
  EXPECT_NE(msg2.find("dgk given but gk is undefined"), std::string::npos) << msg2;
  EXPECT_THROW(gated_linear_attention_chunked_backward(p.q, p.k, p.v, p.gk, none, p.scale, 4, none,
                                                       o, none, dq, dk, dv, dgk, dgv, none),
               Error);

  // Segment log decay: [B, H, Dk] for a vector gate, [B, H] for a scalar one.
  Tensor a_k = Tensor::empty({2, 2, 4}, DType::kF64), a_v = Tensor::empty({2, 2, 3}, DType::kF64);
  Tensor a_k_scalar = Tensor::empty({2, 2}, DType::kF64);
  EXPECT_NO_THROW(gated_linear_attention_segment_log_decay(p.gk, p.gv, a_k, a_v));
  EXPECT_THROW(gated_linear_attention_segment_log_decay(p.gk, p.gv, a_k_scalar, a_v), Error);
  EXPECT_THROW(gated_linear_attention_segment_log_decay(p.gk, p.gv, a_v, a_k), Error);
  EXPECT_THROW(gated_linear_attention_segment_log_decay(none, p.gv, a_k, a_v), Error);
  Tensor a_k_f32 = a_k.to(DType::kF32);
  EXPECT_THROW(gated_linear_attention_segment_log_decay(p.gk, none, a_k_f32, none), Error);
}

TEST(GatedLinearAttention, MismatchedShapesAreErrors) {
  Problem p(16, DType::kF64, kGateCases[0], true);
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64), none;
  const Tensor k_short = random_tensor({2, 8, 2, 4}, 3);
  const Tensor bad_state = random_tensor({2, 2, 3, 4}, 3);
  Tensor o_bad = Tensor::empty({2, 16, 2, 4}, DType::kF64);
  EXPECT_THROW(gated_linear_attention_chunked_forward(p.q, k_short, p.v, p.gk, none, p.scale, 4,
                                                      none, o, none),
               Error);
  EXPECT_THROW(gated_linear_attention_chunked_forward(p.q, p.k, p.v, p.gk, none, p.scale, 4,
                                                      bad_state, o, none),
               Error);
  EXPECT_THROW(gated_linear_attention_chunked_forward(p.q, p.k, p.v, p.gk, none, p.scale, 4, none,
                                                      o_bad, none),
               Error);
  Tensor s_bad = bad_state.clone();
  const std::string msg = error_of([&] {
    gated_linear_attention_recurrent_forward(p.q, p.k, p.v, p.gk, none, p.scale, none, o, s_bad);
  });
  EXPECT_NE(msg.find("final_state"), std::string::npos) << msg;

  Tensor dq = like(p.q), dk = like(p.k), dv = like(p.v), dgk = like(p.gk);
  Tensor dq_bad = Tensor::empty({2, 16, 2, 3}, DType::kF64);
  EXPECT_THROW(gated_linear_attention_chunked_backward(p.q, p.k, p.v, p.gk, none, p.scale, 4, p.s0,
                                                       o_bad, none, dq, dk, dv, dgk, none, none),
               Error);
  EXPECT_THROW(gated_linear_attention_chunked_backward(p.q, p.k, p.v, p.gk, none, p.scale, 4, p.s0,
                                                       o, none, dq_bad, dk, dv, dgk, none, none),
               Error);
  EXPECT_THROW(gated_linear_attention_chunked_backward(p.q, p.k, p.v, p.gk, none, p.scale, 4, p.s0,
                                                       o, bad_state, dq, dk, dv, dgk, none, none),
               Error);
}

}  // namespace
}  // namespace linea
