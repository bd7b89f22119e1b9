#include "kernels/linear_attention.h"

#include <gtest/gtest.h>

#include <string>

#include "common/gradcheck.h"

namespace linea {
namespace {

using kernels::linear_attention_chunked_backward;
using kernels::linear_attention_chunked_forward;
using kernels::linear_attention_recurrent_forward;
using testing::gradcheck;
using testing::max_abs;
using testing::max_abs_diff;
using testing::random_tensor;

struct Problem {
  int64_t B = 2, T = 16, H = 2, Dk = 4, Dv = 3;
  double scale = 0.5;  // 1/sqrt(Dk)
  Tensor q, k, v, s0;  // s0 stays undefined unless asked for

  Problem(int64_t t, DType dt, bool with_initial_state, uint64_t seed = 1) : T(t) {
    q = random_tensor({B, T, H, Dk}, seed, dt);
    k = random_tensor({B, T, H, Dk}, seed + 1, dt);
    v = random_tensor({B, T, H, Dv}, seed + 2, dt);
    if (with_initial_state) s0 = random_tensor(state_shape(), seed + 3, dt);
  }
  Shape state_shape() const { return {B, H, Dk, Dv}; }
  Shape o_shape() const { return {B, T, H, Dv}; }
};

struct Outputs {
  Tensor o, s;
};

Outputs run_recurrent(const Problem& p) {
  Outputs r{Tensor::empty(p.o_shape(), p.q.dtype()), Tensor::empty(p.state_shape(), p.q.dtype())};
  linear_attention_recurrent_forward(p.q, p.k, p.v, p.scale, p.s0, r.o, r.s);
  return r;
}

Outputs run_chunked(const Problem& p, int64_t chunk) {
  Outputs r{Tensor::empty(p.o_shape(), p.q.dtype()), Tensor::empty(p.state_shape(), p.q.dtype())};
  linear_attention_chunked_forward(p.q, p.k, p.v, p.scale, chunk, p.s0, r.o, r.s);
  return r;
}

struct Grads {
  Tensor dq, dk, dv, ds0;
};

// Outputs are pre-filled with garbage: the contract says `=`, so nothing may leak through.
Grads run_backward(const Problem& p, int64_t chunk, const Tensor& d_o, const Tensor& d_final) {
  Grads g{Tensor::empty(p.q.shape(), p.q.dtype()), Tensor::empty(p.k.shape(), p.q.dtype()),
          Tensor::empty(p.v.shape(), p.q.dtype()), Tensor::empty(p.state_shape(), p.q.dtype())};
  for (Tensor* t : {&g.dq, &g.dk, &g.dv, &g.ds0}) t->fill_(123.0);
  linear_attention_chunked_backward(p.q, p.k, p.v, p.scale, chunk, p.s0, d_o, d_final, g.dq, g.dk,
                                    g.dv, g.ds0);
  return g;
}

// Largest difference relative to the reference's magnitude (at least 1).
double rel_diff(const Tensor& got, const Tensor& want) {
  return max_abs_diff(got, want) / std::max(1.0, max_abs(want));
}

// Rows [t0, t1) of the time axis of a [B, T, H, D] tensor, copied.
Tensor time_slice(const Tensor& x, int64_t t0, int64_t t1) {
  const int64_t B = x.dim(0), T = x.dim(1), HD = x.dim(2) * x.dim(3);
  Tensor out = Tensor::empty({B, t1 - t0, x.dim(2), x.dim(3)}, x.dtype());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t i = 0; i < HD; ++i)
        out.set_item((b * (t1 - t0) + t - t0) * HD + i, x.item((b * T + t) * HD + i));
  return out;
}

// Joins two [B, T_i, H, D] tensors along time.
Tensor time_concat(const Tensor& a, const Tensor& b) {
  const int64_t B = a.dim(0), Ta = a.dim(1), Tb = b.dim(1), HD = a.dim(2) * a.dim(3);
  Tensor out = Tensor::empty({B, Ta + Tb, a.dim(2), a.dim(3)}, a.dtype());
  for (int64_t n = 0; n < B; ++n)
    for (int64_t t = 0; t < Ta + Tb; ++t)
      for (int64_t i = 0; i < HD; ++i)
        out.set_item((n * (Ta + Tb) + t) * HD + i,
                     t < Ta ? a.item((n * Ta + t) * HD + i) : b.item((n * Tb + t - Ta) * HD + i));
  return out;
}

// ---- 1. chunked forward == recurrent forward ------------------------------------------------

void expect_chunked_matches_recurrent(DType dt, double tol) {
  for (int64_t T : {16, 24}) {
    for (bool with_s0 : {false, true}) {
      Problem p(T, dt, with_s0);
      const Outputs ref = run_recurrent(p);
      for (int64_t chunk : {int64_t{1}, int64_t{4}, int64_t{8}, T}) {
        SCOPED_TRACE("T=" + std::to_string(T) + " chunk=" + std::to_string(chunk) +
                     " initial_state=" + std::to_string(with_s0));
        const Outputs got = run_chunked(p, chunk);
        EXPECT_LE(rel_diff(got.o, ref.o), tol);
        EXPECT_LE(rel_diff(got.s, ref.s), tol);
      }
    }
  }
}

TEST(LinearAttention, ChunkedForwardMatchesRecurrentF64) {
  expect_chunked_matches_recurrent(DType::kF64, 1e-12);
}

// f32: a chunk sums up to T products in a different order from the token loop; with N(0, 1)
// inputs the outputs reach ~10, so 1e-5 relative leaves two orders of magnitude over rounding.
TEST(LinearAttention, ChunkedForwardMatchesRecurrentF32) {
  expect_chunked_matches_recurrent(DType::kF32, 1e-5);
}

TEST(LinearAttention, FinalStateIsOptional) {
  Problem p(16, DType::kF64, true);
  const Outputs ref = run_recurrent(p);
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64), none;
  linear_attention_chunked_forward(p.q, p.k, p.v, p.scale, 4, p.s0, o, none);
  EXPECT_LE(rel_diff(o, ref.o), 1e-12);
  linear_attention_recurrent_forward(p.q, p.k, p.v, p.scale, p.s0, o, none);
  EXPECT_LE(rel_diff(o, ref.o), 1e-12);
}

// ---- 2. chunked backward == finite differences of the recurrent forward ---------------------

// L = sum(o * w) + sum(S_final * w2) through the recurrent reference. L is affine in any single
// input coordinate (o and S_final are multilinear in q, k, v, S_0), so central differences have
// no truncation error and a large step only reduces rounding.
void expect_backward_matches_fd(int64_t chunk, bool with_s0, bool with_d_final) {
  SCOPED_TRACE("chunk=" + std::to_string(chunk) + " initial_state=" + std::to_string(with_s0) +
               " d_final_state=" + std::to_string(with_d_final));
  Problem p(16, DType::kF64, with_s0, 7);
  const Tensor w = random_tensor(p.o_shape(), 11);
  const Tensor w2 = with_d_final ? random_tensor(p.state_shape(), 12) : Tensor();
  const Grads g = run_backward(p, chunk, w, w2);
  // An undefined initial state is zero; make it a tensor only now, to differentiate against.
  if (!with_s0) p.s0 = Tensor::zeros(p.state_shape(), DType::kF64);
  auto loss = [&] {
    const Outputs r = run_recurrent(p);
    return testing::dot(r.o, w) + (with_d_final ? testing::dot(r.s, w2) : 0.0);
  };
  const double h = 1e-3, tol = 1e-9;
  EXPECT_LE(gradcheck(p.q, g.dq, loss, h), tol) << "dq";
  EXPECT_LE(gradcheck(p.k, g.dk, loss, h), tol) << "dk";
  EXPECT_LE(gradcheck(p.v, g.dv, loss, h), tol) << "dv";
  EXPECT_LE(gradcheck(p.s0, g.ds0, loss, h), tol) << "d_initial_state";
}

TEST(LinearAttention, ChunkedBackwardMatchesFiniteDifferences) {
  for (int64_t chunk : {1, 4, 16}) expect_backward_matches_fd(chunk, true, true);
  expect_backward_matches_fd(4, false, false);  // undefined d_final_state counts as zero
  expect_backward_matches_fd(8, false, true);
}

TEST(LinearAttention, ChunkedBackwardIndependentOfChunkF32) {
  Problem p(16, DType::kF32, true, 5);
  const Tensor w = random_tensor(p.o_shape(), 11, DType::kF32);
  const Tensor w2 = random_tensor(p.state_shape(), 12, DType::kF32);
  const Grads ref = run_backward(p, 1, w, w2);
  for (int64_t chunk : {4, 16}) {
    const Grads g = run_backward(p, chunk, w, w2);
    EXPECT_LE(rel_diff(g.dq, ref.dq), 1e-5) << "chunk " << chunk;
    EXPECT_LE(rel_diff(g.dk, ref.dk), 1e-5) << "chunk " << chunk;
    EXPECT_LE(rel_diff(g.dv, ref.dv), 1e-5) << "chunk " << chunk;
    EXPECT_LE(rel_diff(g.ds0, ref.ds0), 1e-5) << "chunk " << chunk;
  }
}

// ---- 3. two halves with the state carried == the whole sequence -----------------------------

TEST(LinearAttention, HalvesWithCarriedStateEqualWhole) {
  const int64_t T = 24, half = 12, chunk = 4;
  Problem whole(T, DType::kF64, true, 21);
  Problem first = whole, second = whole;
  first.T = second.T = half;
  for (auto [part, t0] : {std::pair{&first, int64_t{0}}, std::pair{&second, half}}) {
    part->q = time_slice(whole.q, t0, t0 + half);
    part->k = time_slice(whole.k, t0, t0 + half);
    part->v = time_slice(whole.v, t0, t0 + half);
  }

  const Outputs all = run_chunked(whole, chunk);
  const Outputs a = run_chunked(first, chunk);
  second.s0 = a.s;  // the LASP-2 hand-off: one segment's outgoing state is the next one's S_in
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

TEST(LinearAttention, ChunkMustDivideSequenceLength) {
  Problem p(16, DType::kF64, false);
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64), none;
  const std::string msg =
      error_of([&] { linear_attention_chunked_forward(p.q, p.k, p.v, p.scale, 5, none, o, none); });
  EXPECT_NE(msg.find("chunk 5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("T = 16"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hint:"), std::string::npos) << msg;
  EXPECT_THROW(linear_attention_chunked_forward(p.q, p.k, p.v, p.scale, 0, none, o, none), Error);
  Tensor dq = Tensor::empty(p.q.shape(), DType::kF64), dk = dq.clone();
  Tensor dv = Tensor::empty(p.v.shape(), DType::kF64);
  EXPECT_THROW(
      linear_attention_chunked_backward(p.q, p.k, p.v, p.scale, 3, none, o, none, dq, dk, dv, none),
      Error);
}

TEST(LinearAttention, MismatchedShapesAreErrors) {
  Problem p(16, DType::kF64, true);
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64);
  Tensor s = Tensor::empty(p.state_shape(), DType::kF64), none;
  const Tensor k_short = random_tensor({2, 8, 2, 4}, 3);
  const Tensor v_other_heads = random_tensor({2, 16, 1, 3}, 3);
  const Tensor bad_state = random_tensor({2, 2, 3, 4}, 3);
  const Tensor k_f32 = p.k.to(DType::kF32);
  Tensor o_bad = Tensor::empty({2, 16, 2, 4}, DType::kF64);

  EXPECT_THROW(linear_attention_chunked_forward(p.q, k_short, p.v, p.scale, 4, none, o, none),
               Error);
  EXPECT_THROW(linear_attention_chunked_forward(p.q, p.k, v_other_heads, p.scale, 4, none, o, none),
               Error);
  EXPECT_THROW(linear_attention_chunked_forward(p.q, k_f32, p.v, p.scale, 4, none, o, none), Error);
  EXPECT_THROW(linear_attention_chunked_forward(p.q, p.k, p.v, p.scale, 4, bad_state, o, none),
               Error);
  EXPECT_THROW(linear_attention_chunked_forward(p.q, p.k, p.v, p.scale, 4, none, o_bad, none),
               Error);
  Tensor s_bad = bad_state.clone();
  EXPECT_THROW(linear_attention_chunked_forward(p.q, p.k, p.v, p.scale, 4, none, o, s_bad), Error);
  EXPECT_THROW(linear_attention_recurrent_forward(p.q, k_short, p.v, p.scale, none, o, none),
               Error);
  EXPECT_THROW(linear_attention_recurrent_forward(p.q, p.k, p.v, p.scale, none, o_bad, none),
               Error);
  const std::string msg =
      error_of([&] { linear_attention_recurrent_forward(p.q, p.k, p.v, p.scale, none, o, s_bad); });
  EXPECT_NE(msg.find("final_state"), std::string::npos) << msg;

  Tensor dq = Tensor::empty(p.q.shape(), DType::kF64), dk = dq.clone();
  Tensor dv = Tensor::empty(p.v.shape(), DType::kF64), ds = s.clone();
  Tensor dq_bad = Tensor::empty({2, 16, 2, 3}, DType::kF64);
  EXPECT_THROW(
      linear_attention_chunked_backward(p.q, p.k, p.v, p.scale, 4, p.s0, o_bad, s, dq, dk, dv, ds),
      Error);
  EXPECT_THROW(linear_attention_chunked_backward(p.q, p.k, p.v, p.scale, 4, p.s0, o, bad_state, dq,
                                                 dk, dv, ds),
               Error);
  EXPECT_THROW(
      linear_attention_chunked_backward(p.q, p.k, p.v, p.scale, 4, p.s0, o, s, dq_bad, dk, dv, ds),
      Error);
  EXPECT_THROW(
      linear_attention_chunked_backward(p.q, p.k, p.v, p.scale, 4, p.s0, o, s, dq, dk, dv, s_bad),
      Error);
}

}  // namespace
}  // namespace linea
