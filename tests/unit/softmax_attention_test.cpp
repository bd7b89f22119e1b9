#include "kernels/softmax_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/gradcheck.h"

namespace linea {
namespace {

using kernels::CausalMask;
using kernels::softmax_attention_backward;
using kernels::softmax_attention_forward;
using testing::gradcheck;
using testing::max_abs;
using testing::max_abs_diff;
using testing::random_tensor;

struct Setting {
  int64_t Hq, Hkv, Tq, Tk, q_offset, window;
  std::string str() const {
    return "Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) +
           " Tq=" + std::to_string(Tq) + " Tk=" + std::to_string(Tk) +
           " q_offset=" + std::to_string(q_offset) + " window=" + std::to_string(window);
  }
};

// MHA, GQA and MQA, each over: the whole sequence (Tq == Tk), the last rank of a split
// (q_offset = Tk - Tq) and a middle rank (queries end before the keys do); with no window, and a
// window narrower than Tq so that it cuts rows inside one query block.
std::vector<Setting> small_settings() {
  std::vector<Setting> out;
  for (auto [hq, hkv] : {std::pair<int64_t, int64_t>{4, 4}, {4, 2}, {4, 1}})
    for (auto [tq, tk, off] :
         {std::tuple<int64_t, int64_t, int64_t>{12, 12, 0}, {5, 12, 7}, {5, 12, 3}})
      for (int64_t w : {0, 4}) out.push_back({hq, hkv, tq, tk, off, w});
  return out;
}

struct Problem {
  int64_t B = 2, D = 8, Dv = 6;  // Dv != D on purpose
  Setting s;
  double scale = 1.0 / std::sqrt(8.0);
  Tensor q, k, v;

  Problem(const Setting& st, DType dt, uint64_t seed = 1) : s(st) {
    q = random_tensor({B, s.Tq, s.Hq, D}, seed, dt);
    k = random_tensor({B, s.Tk, s.Hkv, D}, seed + 1, dt);
    v = random_tensor({B, s.Tk, s.Hkv, Dv}, seed + 2, dt);
  }
  CausalMask mask() const { return {s.q_offset, s.window}; }
  Shape o_shape() const { return {B, s.Tq, s.Hq, Dv}; }
  Shape lse_shape() const { return {B, s.Hq, s.Tq}; }
};

struct Outputs {
  Tensor o, lse;
};

Outputs run_forward(const Problem& p) {
  Outputs r{Tensor::empty(p.o_shape(), p.q.dtype()), Tensor::empty(p.lse_shape(), p.q.dtype())};
  softmax_attention_forward(p.q, p.k, p.v, p.scale, p.mask(), r.o, r.lse);
  return r;
}

struct Grads {
  Tensor dq, dk, dv;
};

// Outputs are pre-filled with garbage: the contract says `=`, so nothing may leak through.
Grads run_backward(const Problem& p, const Outputs& f, const Tensor& d_o) {
  const DType dt = p.q.dtype();
  Grads g{Tensor::empty(p.q.shape(), dt), Tensor::empty(p.k.shape(), dt),
          Tensor::empty(p.v.shape(), dt)};
  for (Tensor* t : {&g.dq, &g.dk, &g.dv}) t->fill_(123.0);
  softmax_attention_backward(p.q, p.k, p.v, f.o, f.lse, d_o, p.scale, p.mask(), g.dq, g.dk, g.dv);
  return g;
}

// The definition, one query and one key at a time in f64, with the mask written out as the
// header states it.
Outputs naive_forward(const Problem& p) {
  const int64_t B = p.B, Tq = p.s.Tq, Tk = p.s.Tk, Hq = p.s.Hq, Hkv = p.s.Hkv, D = p.D, Dv = p.Dv;
  const std::vector<double> q = p.q.to_vector(), k = p.k.to_vector(), v = p.v.to_vector();
  Outputs r{Tensor::empty(p.o_shape(), DType::kF64), Tensor::empty(p.lse_shape(), DType::kF64)};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / (Hq / Hkv);
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t pos = p.s.q_offset + i;
        std::vector<double> s(Tk, 0.0);
        std::vector<bool> seen(Tk, false);
        double mx = -INFINITY;
        for (int64_t j = 0; j < Tk; ++j) {
          seen[j] = j <= pos && (p.s.window == 0 || j > pos - p.s.window);
          if (!seen[j]) continue;
          for (int64_t c = 0; c < D; ++c)
            s[j] += q[((b * Tq + i) * Hq + h) * D + c] * k[((b * Tk + j) * Hkv + g) * D + c];
          s[j] *= p.scale;
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (int64_t j = 0; j < Tk; ++j)
          if (seen[j]) z += std::exp(s[j] - mx);
        r.lse.set_item((b * Hq + h) * Tq + i, mx + std::log(z));
        for (int64_t c = 0; c < Dv; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < Tk; ++j)
            if (seen[j]) acc += std::exp(s[j] - mx) / z * v[((b * Tk + j) * Hkv + g) * Dv + c];
          r.o.set_item(((b * Tq + i) * Hq + h) * Dv + c, acc);
        }
      }
    }
  return r;
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

// Elements [t0, t1) of the last axis of a [B, H, T] tensor (lse), copied.
Tensor last_slice(const Tensor& x, int64_t t0, int64_t t1) {
  const int64_t rows = x.dim(0) * x.dim(1), T = x.dim(2);
  Tensor out = Tensor::empty({x.dim(0), x.dim(1), t1 - t0}, x.dtype());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = t0; t < t1; ++t) out.set_item(r * (t1 - t0) + t - t0, x.item(r * T + t));
  return out;
}

// acc[:, :Tp] += part for a [B, T, H, D] acc and a [B, Tp, H, D] part, Tp <= T.
void add_time_prefix(const Tensor& part, Tensor& acc) {
  const int64_t B = acc.dim(0), T = acc.dim(1), Tp = part.dim(1), HD = acc.dim(2) * acc.dim(3);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tp * HD; ++i)
      acc.set_item(b * T * HD + i, acc.item(b * T * HD + i) + part.item(b * Tp * HD + i));
}

// ---- 1. forward == the naive definition ----------------------------------------------------

void expect_forward_matches_naive(const Setting& s, DType dt, double tol) {
  SCOPED_TRACE(s.str() + " dtype=" + dtype_name(dt));
  const Problem p(s, dt);
  const Outputs got = run_forward(p), want = naive_forward(p);
  EXPECT_LE(rel_diff(got.o, want.o), tol) << "o";
  EXPECT_LE(rel_diff(got.lse, want.lse), tol) << "lse";
}

TEST(SoftmaxAttention, ForwardMatchesNaiveF64) {
  for (const Setting& s : small_settings()) expect_forward_matches_naive(s, DType::kF64, 1e-13);
}

// f32 against the f64 definition (on the same f32-rounded inputs): scores and P V are f32 sums of
// at most 8 and 12 terms; 2e-6 relative is about 16 f32 ulps.
TEST(SoftmaxAttention, ForwardMatchesNaiveF32) {
  for (const Setting& s : small_settings()) expect_forward_matches_naive(s, DType::kF32, 2e-6);
}

// Several query blocks (the kernel takes 64 queries at a time), a block cut short at the end, and
// windows that start mid-block.
TEST(SoftmaxAttention, ForwardMatchesNaiveAcrossQueryBlocks) {
  for (const Setting& s : {Setting{4, 2, 150, 150, 0, 0}, Setting{4, 2, 150, 200, 30, 0},
                           Setting{2, 1, 150, 200, 50, 37}, Setting{2, 2, 130, 130, 0, 70}}) {
    expect_forward_matches_naive(s, DType::kF64, 1e-13);
    expect_forward_matches_naive(s, DType::kF32, 1e-5);
  }
}

// ---- 2. backward == central finite differences of the forward, in f64 -----------------------

// L = sum(o * w). Softmax is smooth, so central differences carry an O(h^2) truncation error,
// and rounding in L adds O(1e-16 sum|o w| / h); h = 3e-5 balances the two (measured worst
// relative error 2.4e-9, for dk over 150 x 200 keys; 5e-9 with h = 1e-5). A wrong term (dropping
// D_i from dS, say) shows up at 0.3 or more.
void expect_backward_matches_fd(const Setting& s, int64_t max_checks) {
  SCOPED_TRACE(s.str());
  Problem p(s, DType::kF64, 7);
  const Tensor w = random_tensor(p.o_shape(), 11);
  const Grads g = run_backward(p, run_forward(p), w);
  auto loss = [&] { return testing::dot(run_forward(p).o, w); };
  const double h = 3e-5, tol = 3e-8;
  EXPECT_LE(gradcheck(p.q, g.dq, loss, h, max_checks), tol) << "dq";
  EXPECT_LE(gradcheck(p.k, g.dk, loss, h, max_checks), tol) << "dk";
  EXPECT_LE(gradcheck(p.v, g.dv, loss, h, max_checks), tol) << "dv";
}

TEST(SoftmaxAttention, BackwardMatchesFiniteDifferences) {
  for (const Setting& s : small_settings()) expect_backward_matches_fd(s, 150);
}

TEST(SoftmaxAttention, BackwardMatchesFiniteDifferencesAcrossQueryBlocks) {
  expect_backward_matches_fd({4, 2, 150, 200, 50, 37}, 30);
  expect_backward_matches_fd({2, 1, 130, 130, 0, 0}, 30);
}

// f32 backward against the f64 one on the same inputs: dS = P * (dP - D) cancels, so allow more
// than the forward.
TEST(SoftmaxAttention, BackwardF32MatchesF64) {
  for (const Setting& s :
       {Setting{4, 2, 12, 12, 0, 0}, Setting{4, 1, 5, 12, 7, 4}, Setting{4, 2, 150, 200, 50, 37}}) {
    SCOPED_TRACE(s.str());
    const Problem p32(s, DType::kF32, 3);
    Problem p64 = p32;
    p64.q = p32.q.to(DType::kF64), p64.k = p32.k.to(DType::kF64), p64.v = p32.v.to(DType::kF64);
    const Tensor w32 = random_tensor(p32.o_shape(), 5, DType::kF32);
    const Grads g32 = run_backward(p32, run_forward(p32), w32);
    const Grads g64 = run_backward(p64, run_forward(p64), w32.to(DType::kF64));
    EXPECT_LE(rel_diff(g32.dq, g64.dq), 1e-5) << "dq";
    EXPECT_LE(rel_diff(g32.dk, g64.dk), 1e-5) << "dk";
    EXPECT_LE(rel_diff(g32.dv, g64.dv), 1e-5) << "dv";
  }
}

// ---- 3. splitting the queries over ranks (LASP-2H) == the whole sequence --------------------

// Rank r of W takes queries [r*T/W, (r+1)*T/W) with q_offset = r*T/W against the gathered keys
// (all of them, or only those up to its own shard's end); outputs and lse are the rows of the
// whole, dq its rows, and dk, dv summed over ranks (the reduce-scatter) equal the whole's.
void expect_split_equals_whole(int64_t W, int64_t window, bool keys_up_to_own_shard) {
  SCOPED_TRACE("W=" + std::to_string(W) + " window=" + std::to_string(window) +
               " keys_up_to_own_shard=" + std::to_string(keys_up_to_own_shard));
  const int64_t T = 96, local = T / W;
  const Problem whole({4, 2, T, T, 0, window}, DType::kF64, 21);
  const Outputs f_all = run_forward(whole);
  const Tensor w = random_tensor(whole.o_shape(), 31);
  const Grads g_all = run_backward(whole, f_all, w);

  Tensor dk_sum = Tensor::zeros(whole.k.shape(), DType::kF64);
  Tensor dv_sum = Tensor::zeros(whole.v.shape(), DType::kF64);
  for (int64_t r = 0; r < W; ++r) {
    const int64_t t0 = r * local, t1 = t0 + local, Tk = keys_up_to_own_shard ? t1 : T;
    Problem part = whole;
    part.s = {4, 2, local, Tk, t0, window};
    part.q = time_slice(whole.q, t0, t1);
    part.k = time_slice(whole.k, 0, Tk);
    part.v = time_slice(whole.v, 0, Tk);
    const Outputs f = run_forward(part);
    EXPECT_LE(rel_diff(f.o, time_slice(f_all.o, t0, t1)), 1e-13) << "o, rank " << r;
    EXPECT_LE(rel_diff(f.lse, last_slice(f_all.lse, t0, t1)), 1e-13) << "lse, rank " << r;
    const Grads g = run_backward(part, f, time_slice(w, t0, t1));
    EXPECT_LE(rel_diff(g.dq, time_slice(g_all.dq, t0, t1)), 1e-13) << "dq, rank " << r;
    if (Tk > t1) {  // keys after the rank's last query: no gradient, and no garbage left there
      EXPECT_EQ(max_abs(time_slice(g.dk, t1, Tk)), 0.0) << "rank " << r;
      EXPECT_EQ(max_abs(time_slice(g.dv, t1, Tk)), 0.0) << "rank " << r;
    }
    add_time_prefix(g.dk, dk_sum);
    add_time_prefix(g.dv, dv_sum);
  }
  EXPECT_LE(rel_diff(dk_sum, g_all.dk), 1e-13) << "dk summed over ranks";
  EXPECT_LE(rel_diff(dv_sum, g_all.dv), 1e-13) << "dv summed over ranks";
}

TEST(SoftmaxAttention, SecondHalfWithOffsetEqualsWhole) {
  for (int64_t window : {0, 20}) {
    expect_split_equals_whole(2, window, false);
    expect_split_equals_whole(2, window, true);
  }
}

TEST(SoftmaxAttention, FourRanksWithOffsetsEqualWhole) {
  for (int64_t window : {0, 30}) {
    expect_split_equals_whole(4, window, false);
    expect_split_equals_whole(4, window, true);
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

TEST(SoftmaxAttention, HeadsMustGroup) {
  const Problem p({4, 3, 6, 6, 0, 0}, DType::kF64);
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64),
         lse = Tensor::empty(p.lse_shape(), DType::kF64);
  const std::string msg =
      error_of([&] { softmax_attention_forward(p.q, p.k, p.v, p.scale, p.mask(), o, lse); });
  EXPECT_NE(msg.find("Hq = 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Hkv = 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hint:"), std::string::npos) << msg;
}

TEST(SoftmaxAttention, QueriesMustHaveTheirKeys) {
  // Queries at positions [7, 12) need keys up to 11; k holds only 10.
  const Problem p({4, 2, 5, 10, 7, 0}, DType::kF64);
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64),
         lse = Tensor::empty(p.lse_shape(), DType::kF64);
  const std::string msg =
      error_of([&] { softmax_attention_forward(p.q, p.k, p.v, p.scale, p.mask(), o, lse); });
  EXPECT_NE(msg.find("Tk = 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hint:"), std::string::npos) << msg;
  EXPECT_THROW(softmax_attention_forward(p.q, p.k, p.v, p.scale, {-1, 0}, o, lse), Error);
  const Problem ok({4, 2, 5, 10, 5, 0}, DType::kF64);
  EXPECT_THROW(softmax_attention_forward(ok.q, ok.k, ok.v, ok.scale, {5, -2}, o, lse), Error);
}

TEST(SoftmaxAttention, MismatchedShapesAreErrors) {
  const Problem p({4, 2, 6, 8, 2, 0}, DType::kF64);
  const CausalMask m = p.mask();
  Tensor o = Tensor::empty(p.o_shape(), DType::kF64),
         lse = Tensor::empty(p.lse_shape(), DType::kF64);
  const Tensor k_other_d = random_tensor({2, 8, 2, 7}, 3);
  const Tensor v_other_t = random_tensor({2, 7, 2, 6}, 3);
  const Tensor v_other_heads = random_tensor({2, 8, 1, 6}, 3);
  const Tensor k_3d = random_tensor({2, 8, 16}, 3);
  const Tensor k_f32 = p.k.to(DType::kF32);
  Tensor o_bad = Tensor::empty({2, 6, 4, 8}, DType::kF64);
  Tensor lse_bad = Tensor::empty({2, 6, 4}, DType::kF64);

  EXPECT_THROW(softmax_attention_forward(p.q, k_other_d, p.v, p.scale, m, o, lse), Error);
  EXPECT_THROW(softmax_attention_forward(p.q, p.k, v_other_t, p.scale, m, o, lse), Error);
  EXPECT_THROW(softmax_attention_forward(p.q, p.k, v_other_heads, p.scale, m, o, lse), Error);
  EXPECT_THROW(softmax_attention_forward(p.q, k_3d, p.v, p.scale, m, o, lse), Error);
  EXPECT_THROW(softmax_attention_forward(p.q, k_f32, p.v, p.scale, m, o, lse), Error);
  EXPECT_THROW(softmax_attention_forward(p.q, p.k, p.v, p.scale, m, o_bad, lse), Error);
  const std::string msg =
      error_of([&] { softmax_attention_forward(p.q, p.k, p.v, p.scale, m, o, lse_bad); });
  EXPECT_NE(msg.find("lse"), std::string::npos) << msg;

  softmax_attention_forward(p.q, p.k, p.v, p.scale, m, o, lse);
  Tensor dq = Tensor::empty(p.q.shape(), DType::kF64), dk = Tensor::empty(p.k.shape(), DType::kF64);
  Tensor dv = Tensor::empty(p.v.shape(), DType::kF64), none;
  EXPECT_THROW(softmax_attention_backward(p.q, p.k, p.v, o, lse_bad, o, p.scale, m, dq, dk, dv),
               Error);
  EXPECT_THROW(softmax_attention_backward(p.q, p.k, p.v, o, lse, o_bad, p.scale, m, dq, dk, dv),
               Error);
  EXPECT_THROW(softmax_attention_backward(p.q, p.k, p.v, none, lse, o, p.scale, m, dq, dk, dv),
               Error);
  EXPECT_THROW(softmax_attention_backward(p.q, p.k, p.v, o, lse, o, p.scale, m, dk, dq, dv), Error);
  EXPECT_THROW(softmax_attention_backward(p.q, p.k, p.v, o, lse, o, p.scale, m, dq, dk, dk), Error);
}

}  // namespace
}  // namespace linea
