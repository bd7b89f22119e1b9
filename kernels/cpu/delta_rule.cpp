// CPU delta rule: the token-by-token reference, and the chunked (WY / UT-transform) forward,
// backward and segment transition. The contract and the chunk formulas are in
// kernels/delta_rule.h; the names below (b, gamma, Gamma, W, U, U~) are the header's.
#include "kernels/delta_rule.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/tiles.h"

namespace linea::kernels {
namespace {

using cpu::gather;
using cpu::gemm;
using cpu::head_rows;
using cpu::HeadDims;
using cpu::HeadRows;
using cpu::load_state;
using cpu::read_state;
using cpu::scatter;
using cpu::store_state;

void check_dtype_device(const Tensor& t, DType dtype, const char* op, const char* name) {
  LINEA_CHECK(t.dtype() == dtype) << op << ": " << name << " is " << dtype_name(t.dtype())
                                  << ", inputs are " << dtype_name(dtype);
  LINEA_CHECK(t.device().is_cpu())
      << op << ": CPU kernel got " << name << " on " << t.device().str();
}

// A tensor the kernel reads or writes alongside k: same dtype, CPU, the given shape.
void check_like(const Tensor& t, const Shape& want, DType dtype, const char* op, const char* name) {
  LINEA_CHECK(t.defined()) << op << ": " << name << " is required, shape " << shape_str(want);
  LINEA_CHECK(t.shape() == want) << op << ": " << name << " must be " << shape_str(want) << ", got "
                                 << shape_str(t.shape());
  check_dtype_device(t, dtype, op, name);
}

void check_optional(const Tensor& t, const Shape& want, DType dtype, const char* op,
                    const char* name) {
  if (t.defined()) check_like(t, want, dtype, op, name);
}

Shape state_shape(const HeadDims& d) { return {d.B, d.H, d.Dk, d.Dv}; }
Shape gate_shape(const HeadDims& d) { return {d.B, d.T, d.H}; }

// Checks k, beta and the optional g; v (when given) and q are checked by check_inputs.
HeadDims check_keys_and_gates(const Tensor& k, const Tensor& g, const Tensor& beta,
                              const char* op) {
  LINEA_CHECK(k.defined()) << op << ": k is required";
  LINEA_CHECK(k.ndim() == 4) << op << ": k must be [B, T, H, Dk], got " << shape_str(k.shape());
  LINEA_CHECK(k.dtype() == DType::kF32 || k.dtype() == DType::kF64)
      << op << ": f32 or f64 only, got " << dtype_name(k.dtype());
  LINEA_CHECK(k.device().is_cpu()) << op << ": CPU kernel got a tensor on " << k.device().str();
  const HeadDims d{k.dim(0), k.dim(1), k.dim(2), k.dim(3), 0};
  // cblas takes int dimensions.
  LINEA_CHECK(d.T <= INT_MAX && d.Dk <= INT_MAX)
      << op << ": dimensions too large for BLAS: " << shape_str(k.shape());
  check_like(beta, gate_shape(d), k.dtype(), op, "beta");
  check_optional(g, gate_shape(d), k.dtype(), op, "g");
  return d;
}

HeadDims check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                      const Tensor& beta, const char* op) {
  HeadDims d = check_keys_and_gates(k, g, beta, op);
  LINEA_CHECK(q.defined() && v.defined()) << op << ": q and v are required";
  LINEA_CHECK(q.shape() == k.shape())
      << op << ": q " << shape_str(q.shape()) << " must match k " << shape_str(k.shape());
  LINEA_CHECK(v.ndim() == 4 && v.dim(0) == d.B && v.dim(1) == d.T && v.dim(2) == d.H)
      << op << ": v must be [B, T, H, Dv] with k's B, T, H " << shape_str(k.shape()) << ", got "
      << shape_str(v.shape());
  check_dtype_device(q, k.dtype(), op, "q");
  check_dtype_device(v, k.dtype(), op, "v");
  d.Dv = v.dim(3);
  LINEA_CHECK(d.Dv <= INT_MAX) << op << ": Dv too large for BLAS: " << shape_str(v.shape());
  return d;
}

void check_delta_chunk(int64_t chunk, const HeadDims& d, const char* op) {
  cpu::check_chunk(chunk, d, op);
  // The [C, C] tiles are indexed in int (BLAS's type); a chunk this long would also cost C^2
  // memory and intra-chunk work far past any speed-up.
  LINEA_USER_CHECK(chunk <= 32768, "use a chunk of at most a few hundred tokens (64 is typical)")
      << op << ": chunk " << chunk << " is too large for the [C, C] intra-chunk tiles";
}

// Solves (I + L) X = X in place (or (I + L)^T X = X when `transposed`), with L the strictly
// lower part of l: a forward (back) substitution. The unit diagonal is implied, never read.
template <typename T>
void unit_lower_solve(bool transposed, int n, int nrhs, const T* l, T* x) {
  const auto op = transposed ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, op, CblasUnit, n, nrhs, 1.0f, l, n, x, nrhs);
  } else {
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, op, CblasUnit, n, nrhs, 1.0, l, n, x, nrhs);
  }
}

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// ---- recurrent forward (the reference) -----------------------------------------------------

template <typename T>
void recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                       const Tensor& beta, T scale, const HeadDims& d, const Tensor& initial_state,
                       Tensor& o, Tensor& final_state) {
  const int64_t Dk = d.Dk, Dv = d.Dv;
  std::vector<T> S(Dk * Dv), kS(Dv);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto Q = head_rows<T>(q, b, h), K = head_rows<T>(k, b, h);
      const auto V = head_rows<T>(v, b, h), O = head_rows<T>(o, b, h);
      const auto G = head_rows<T>(g, b, h), Beta = head_rows<T>(beta, b, h);
      load_state(initial_state, b, h, Dk * Dv, S.data());
      for (int64_t t = 0; t < d.T; ++t) {
        const T *qt = Q.row(t), *kt = K.row(t), *vt = V.row(t);
        const T a = G.base ? std::exp(*G.row(t)) : T(1), bt = *Beta.row(t);
        std::fill(kS.begin(), kS.end(), T(0));
        for (int64_t i = 0; i < Dk; ++i)
          for (int64_t j = 0; j < Dv; ++j) kS[j] += kt[i] * S[i * Dv + j];
        for (int64_t i = 0; i < Dk; ++i)
          for (int64_t j = 0; j < Dv; ++j)
            S[i * Dv + j] = a * (S[i * Dv + j] - bt * kt[i] * kS[j]) + bt * kt[i] * vt[j];
        read_state(qt, S.data(), Dk, Dv, scale, O.row(t));
      }
      if (final_state.defined()) store_state(S.data(), b, h, Dk * Dv, final_state);
    }
  }
}

// ---- one chunk's WY factors ----------------------------------------------------------------

// The (b, h) streams a chunk is read from; g.base is null without decay, q/v unused by the
// transition.
template <typename T>
struct HeadStreams {
  HeadRows<T> q, k, v, g, beta;
};

template <typename T>
HeadStreams<T> head_streams(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                            const Tensor& beta, int64_t b, int64_t h) {
  return {head_rows<T>(q, b, h), head_rows<T>(k, b, h), head_rows<T>(v, b, h),
          head_rows<T>(g, b, h), head_rows<T>(beta, b, h)};
}

// Everything one chunk's forward builds, kept so that the backward can reuse it. [C, C] tiles are
// row-major with row i the later token.
template <typename T>
struct ChunkFactors {
  ChunkFactors(int c, int dk, int dv)
      : C(c),
        Dk(dk),
        Dv(dv),
        q(C * Dk),
        k(C * Dk),
        v(C * Dv),
        beta(C),
        b(C),
        gamma(C),
        tail(C),
        decay(C * C),
        kk(C * C),
        lower(C * C),
        qk(C * C),
        p(C * C),
        w(C * Dk),
        u(C * Dv),
        u_new(C * Dv),
        qg(C * Dk),
        k_tail(C * Dk) {}

  int C, Dk, Dv;
  std::vector<T> q, k, v, beta;
  std::vector<T> b;       // b_i = g_0 + ... + g_i, the chunk's cumulative log decay
  std::vector<T> gamma;   // gamma_i = exp(b_i)
  std::vector<T> tail;    // exp(b_{C-1} - b_i): decay from token i to the chunk's end
  std::vector<T> decay;   // Gamma_ij = exp(b_i - b_j) for j <= i, 0 above the diagonal
  std::vector<T> kk;      // K K^T
  std::vector<T> lower;   // strictly_lower(diag(beta) (K K^T ⊙ Gamma)); diagonal unused
  std::vector<T> qk, p;   // Q K^T and tril(Q K^T) ⊙ Gamma
  std::vector<T> w, u;    // W = Tr (gamma ⊙ K), U = Tr V
  std::vector<T> u_new;   // U~ = U - W S
  std::vector<T> qg;      // gamma ⊙ Q
  std::vector<T> k_tail;  // K ⊙ tail
  T gamma_last = 1;       // gamma_{C-1}: the whole chunk's decay

  // Reads tokens [t0, t0 + C) and builds the WY factors (U only when `with_values`).
  void build(const HeadStreams<T>& s, int64_t t0, bool with_values) {
    gather(s.k, t0, C, Dk, k.data());
    gather(s.beta, t0, C, 1, beta.data());
    T acc = 0;
    for (int i = 0; i < C; ++i) b[i] = acc += s.g.base ? *s.g.row(t0 + i) : T(0);
    for (int i = 0; i < C; ++i) {
      gamma[i] = std::exp(b[i]);
      tail[i] = std::exp(b[C - 1] - b[i]);
      for (int j = 0; j < C; ++j) decay[i * C + j] = j <= i ? std::exp(b[i] - b[j]) : T(0);
    }
    gamma_last = gamma[C - 1];

    gemm<T>(false, true, C, C, Dk, T(1), k.data(), Dk, k.data(), Dk, T(0), kk.data(), C);
    for (int i = 0; i < C; ++i)
      for (int j = 0; j < C; ++j)
        lower[i * C + j] = j < i ? beta[i] * kk[i * C + j] * decay[i * C + j] : T(0);
    for (int i = 0; i < C; ++i) {
      for (int c = 0; c < Dk; ++c) {
        w[i * Dk + c] = beta[i] * gamma[i] * k[i * Dk + c];
        k_tail[i * Dk + c] = tail[i] * k[i * Dk + c];
      }
    }
    unit_lower_solve<T>(false, C, Dk, lower.data(), w.data());
    if (!with_values) return;
    gather(s.v, t0, C, Dv, v.data());
    for (int i = 0; i < C; ++i)
      for (int c = 0; c < Dv; ++c) u[i * Dv + c] = beta[i] * v[i * Dv + c];
    unit_lower_solve<T>(false, C, Dv, lower.data(), u.data());
  }

  // U~ = U - W S for the incoming state S [Dk, Dv].
  void correct_values(const T* S) {
    u_new = u;
    gemm<T>(false, false, C, Dv, Dk, T(-1), w.data(), Dk, S, Dv, T(1), u_new.data(), Dv);
  }

  // Reads the chunk's queries and forms gamma ⊙ Q, Q K^T and the masked, decayed scores P.
  void build_scores(const HeadStreams<T>& s, int64_t t0) {
    gather(s.q, t0, C, Dk, q.data());
    for (int i = 0; i < C; ++i)
      for (int c = 0; c < Dk; ++c) qg[i * Dk + c] = gamma[i] * q[i * Dk + c];
    gemm<T>(false, true, C, C, Dk, T(1), q.data(), Dk, k.data(), Dk, T(0), qk.data(), C);
    for (int i = 0; i < C * C; ++i) p[i] = qk[i] * decay[i];  // decay is 0 above the diagonal
  }

  // O = scale ((gamma ⊙ Q) S + P U~), before S moves on.
  void outputs(const T* S, T scale, T* o) const {
    gemm<T>(false, false, C, Dv, Dk, scale, qg.data(), Dk, S, Dv, T(0), o, Dv);
    gemm<T>(false, false, C, Dv, C, scale, p.data(), C, u_new.data(), Dv, T(1), o, Dv);
  }

  // S <- gamma_{C-1} S + (K ⊙ tail)^T U~.
  void advance(T* S) const {
    for (int i = 0; i < Dk * Dv; ++i) S[i] *= gamma_last;
    gemm<T>(true, false, Dk, Dv, C, T(1), k_tail.data(), Dk, u_new.data(), Dv, T(1), S, Dv);
  }
};

// ---- chunked forward -----------------------------------------------------------------------

template <typename T>
void chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                     const Tensor& beta, T scale, int64_t chunk, const HeadDims& d,
                     const Tensor& initial_state, Tensor& o, Tensor& final_state) {
  const int C = static_cast<int>(chunk), Dk = static_cast<int>(d.Dk), Dv = static_cast<int>(d.Dv);
  ChunkFactors<T> f(C, Dk, Dv);
  std::vector<T> S(d.Dk * d.Dv), out(C * d.Dv);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto s = head_streams<T>(q, k, v, g, beta, b, h);
      const auto O = head_rows<T>(o, b, h);
      load_state(initial_state, b, h, d.Dk * d.Dv, S.data());
      for (int64_t t0 = 0; t0 < d.T; t0 += C) {
        f.build(s, t0, true);
        f.correct_values(S.data());
        f.build_scores(s, t0);
        f.outputs(S.data(), scale, out.data());
        f.advance(S.data());
        scatter(out.data(), t0, C, Dv, O);
      }
      if (final_state.defined()) store_state(S.data(), b, h, d.Dk * d.Dv, final_state);
    }
  }
}

// ---- segment transition --------------------------------------------------------------------

template <typename T>
void chunked_transition(const Tensor& k, const Tensor& g, const Tensor& beta, int64_t chunk,
                        const HeadDims& d, Tensor& transition) {
  const int C = static_cast<int>(chunk), Dk = static_cast<int>(d.Dk);
  ChunkFactors<T> f(C, Dk, 0);
  std::vector<T> A(d.Dk * d.Dk), A_chunk(d.Dk * d.Dk), next(d.Dk * d.Dk);
  const Tensor none;
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto s = head_streams<T>(none, k, none, g, beta, b, h);
      std::fill(A.begin(), A.end(), T(0));
      for (int i = 0; i < Dk; ++i) A[i * Dk + i] = 1;
      for (int64_t t0 = 0; t0 < d.T; t0 += C) {
        f.build(s, t0, false);
        // A_chunk = gamma_{C-1} I - (K ⊙ tail)^T W: advance() with U~ = -W S, as a matrix.
        gemm<T>(true, false, Dk, Dk, C, T(-1), f.k_tail.data(), Dk, f.w.data(), Dk, T(0),
                A_chunk.data(), Dk);
        for (int i = 0; i < Dk; ++i) A_chunk[i * Dk + i] += f.gamma_last;
        gemm<T>(false, false, Dk, Dk, Dk, T(1), A_chunk.data(), Dk, A.data(), Dk, T(0), next.data(),
                Dk);
        A.swap(next);
      }
      store_state(A.data(), b, h, d.Dk * d.Dk, transition);
    }
  }
}

// ---- chunked backward ----------------------------------------------------------------------

template <typename T>
struct ChunkGrads {
  ChunkGrads(int C, int Dk, int Dv)
      : d_o(C * Dv),
        du(C * Dv),
        dw(C * Dk),
        dqg(C * Dk),
        dk_tail(C * Dk),
        dp(C * C),
        dl(C * C),
        dqk(C * C),
        dkk(C * C),
        db(C),
        dq(C * Dk),
        dk(C * Dk),
        dv(C * Dv),
        dbeta(C),
        dg(C) {}
  std::vector<T> d_o;
  std::vector<T> du;                // dU~, then after the adjoint solve dY_U = d(beta ⊙ V)
  std::vector<T> dw;                // dW, then dY_W = d(beta ⊙ gamma ⊙ K)
  std::vector<T> dqg;               // d(gamma ⊙ Q)
  std::vector<T> dk_tail;           // d(K ⊙ tail)
  std::vector<T> dp, dl, dqk, dkk;  // [C, C]: dP, d(lower), d(Q K^T), d(K K^T)
  std::vector<T> db;                // d(cumulative log decay b)
  std::vector<T> dq, dk, dv, dbeta, dg;
};

// Backward through one chunk, given its factors (built with the incoming state S) and dS, the
// gradient reaching the outgoing state; dS becomes the gradient reaching S.
template <typename T>
void chunk_backward(const ChunkFactors<T>& f, const T* S, T scale, bool gated, std::vector<T>& dS,
                    ChunkGrads<T>& gr) {
  const int C = f.C, Dk = f.Dk, Dv = f.Dv;
  // Through O = scale ((gamma ⊙ Q) S + P U~) and S_next = gamma_{C-1} S + (K ⊙ tail)^T U~.
  gemm<T>(true, false, C, Dv, C, scale, f.p.data(), C, gr.d_o.data(), Dv, T(0), gr.du.data(), Dv);
  gemm<T>(false, false, C, Dv, Dk, T(1), f.k_tail.data(), Dk, dS.data(), Dv, T(1), gr.du.data(),
          Dv);
  gemm<T>(false, true, C, C, Dv, scale, gr.d_o.data(), Dv, f.u_new.data(), Dv, T(0), gr.dp.data(),
          C);
  gemm<T>(false, true, C, Dk, Dv, T(1), f.u_new.data(), Dv, dS.data(), Dv, T(0), gr.dk_tail.data(),
          Dk);
  gemm<T>(false, true, C, Dk, Dv, scale, gr.d_o.data(), Dv, S, Dv, T(0), gr.dqg.data(), Dk);
  std::fill(gr.db.begin(), gr.db.end(), T(0));
  if (gated) gr.db[C - 1] += f.gamma_last * dot(dS.data(), S, Dk * Dv);
  // Through U~ = U - W S.
  gemm<T>(false, true, C, Dk, Dv, T(-1), gr.du.data(), Dv, S, Dv, T(0), gr.dw.data(), Dk);

  // dS now moves to the incoming state; every use of the outgoing one is above.
  for (T& x : dS) x *= f.gamma_last;
  gemm<T>(true, false, Dk, Dv, C, scale, f.qg.data(), Dk, gr.d_o.data(), Dv, T(1), dS.data(), Dv);
  gemm<T>(true, false, Dk, Dv, C, T(-1), f.w.data(), Dk, gr.du.data(), Dv, T(1), dS.data(), Dv);

  // Through the solves (I + L) [U W] = [beta ⊙ V, beta ⊙ gamma ⊙ K]: the adjoint solve, then
  // dL = -[dY_U dY_W] [U W]^T (only its strictly lower part is used).
  unit_lower_solve<T>(true, C, Dv, f.lower.data(), gr.du.data());
  unit_lower_solve<T>(true, C, Dk, f.lower.data(), gr.dw.data());
  gemm<T>(false, true, C, C, Dv, T(-1), gr.du.data(), Dv, f.u.data(), Dv, T(0), gr.dl.data(), C);
  gemm<T>(false, true, C, C, Dk, T(-1), gr.dw.data(), Dk, f.w.data(), Dk, T(1), gr.dl.data(), C);

  // Per-token terms: the right-hand sides, gamma ⊙ Q and K ⊙ tail.
  for (int i = 0; i < C; ++i) {
    const T* qi = f.q.data() + i * Dk;
    const T* ki = f.k.data() + i * Dk;
    const T* dyw = gr.dw.data() + i * Dk;
    const T* dkt = gr.dk_tail.data() + i * Dk;
    const T* dqg = gr.dqg.data() + i * Dk;
    const T dyw_k = dot(dyw, ki, Dk);
    gr.dbeta[i] = dot(gr.du.data() + i * Dv, f.v.data() + i * Dv, Dv) + f.gamma[i] * dyw_k;
    for (int c = 0; c < Dv; ++c) gr.dv[i * Dv + c] = f.beta[i] * gr.du[i * Dv + c];
    for (int c = 0; c < Dk; ++c) {
      gr.dk[i * Dk + c] = f.beta[i] * f.gamma[i] * dyw[c] + f.tail[i] * dkt[c];
      gr.dq[i * Dk + c] = f.gamma[i] * dqg[c];
    }
    if (gated) {
      const T to_end = f.tail[i] * dot(dkt, ki, Dk);  // d/d(b_{C-1} - b_i) of K ⊙ tail
      gr.db[i] += f.beta[i] * f.gamma[i] * dyw_k + f.gamma[i] * dot(dqg, qi, Dk) - to_end;
      gr.db[C - 1] += to_end;
    }
  }

  // Pairwise terms: L_ij = beta_i (K K^T)_ij Gamma_ij (j < i), P_ij = (Q K^T)_ij Gamma_ij (j <= i).
  for (int i = 0; i < C; ++i) {
    for (int j = 0; j < C; ++j) {
      const int ij = i * C + j;
      gr.dkk[ij] = gr.dqk[ij] = 0;
      if (j > i) continue;
      gr.dqk[ij] = gr.dp[ij] * f.decay[ij];
      if (j == i) continue;  // Gamma_ii = 1 whatever b is, and L has no diagonal
      gr.dbeta[i] += gr.dl[ij] * f.kk[ij] * f.decay[ij];
      gr.dkk[ij] = gr.dl[ij] * f.beta[i] * f.decay[ij];
      if (gated) {
        const T d_exponent =
            (gr.dl[ij] * f.beta[i] * f.kk[ij] + gr.dp[ij] * f.qk[ij]) * f.decay[ij];
        gr.db[i] += d_exponent;
        gr.db[j] -= d_exponent;
      }
    }
  }
  gemm<T>(false, false, C, Dk, C, T(1), gr.dqk.data(), C, f.k.data(), Dk, T(1), gr.dq.data(), Dk);
  gemm<T>(true, false, C, Dk, C, T(1), gr.dqk.data(), C, f.q.data(), Dk, T(1), gr.dk.data(), Dk);
  // K K^T is symmetric in its two K factors: both receive dKK's contribution.
  gemm<T>(false, false, C, Dk, C, T(1), gr.dkk.data(), C, f.k.data(), Dk, T(1), gr.dk.data(), Dk);
  gemm<T>(true, false, C, Dk, C, T(1), gr.dkk.data(), C, f.k.data(), Dk, T(1), gr.dk.data(), Dk);

  // b_i = g_0 + ... + g_i within the chunk, so dg_j = sum_{i >= j} db_i.
  if (gated) {
    T acc = 0;
    for (int i = C - 1; i >= 0; --i) gr.dg[i] = acc += gr.db[i];
  }
}

template <typename T>
void chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                      const Tensor& beta, T scale, int64_t chunk, const HeadDims& d,
                      const Tensor& initial_state, const Tensor& d_o, const Tensor& d_final_state,
                      Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dg, Tensor& dbeta,
                      Tensor& d_initial_state) {
  const int C = static_cast<int>(chunk), Dk = static_cast<int>(d.Dk), Dv = static_cast<int>(d.Dv);
  const int64_t n_chunks = d.T / chunk, state_size = d.Dk * d.Dv;
  const bool gated = g.defined();
  ChunkFactors<T> f(C, Dk, Dv);
  ChunkGrads<T> gr(C, Dk, Dv);
  // Incoming state of every chunk of one (b, h), recomputed so that the forward keeps nothing but
  // its inputs: n_chunks * Dk * Dv values, small next to q, k, v.
  std::vector<T> states(n_chunks * state_size);
  std::vector<T> S(state_size), dS(state_size);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto s = head_streams<T>(q, k, v, g, beta, b, h);
      const auto dO = head_rows<T>(d_o, b, h);
      const auto dQ = head_rows<T>(dq, b, h), dK = head_rows<T>(dk, b, h);
      const auto dV = head_rows<T>(dv, b, h), dG = head_rows<T>(dg, b, h);
      const auto dBeta = head_rows<T>(dbeta, b, h);

      load_state(initial_state, b, h, state_size, S.data());
      for (int64_t c = 0; c < n_chunks; ++c) {
        std::copy(S.begin(), S.end(), states.begin() + c * state_size);
        if (c + 1 == n_chunks) break;
        f.build(s, c * C, true);
        f.correct_values(S.data());
        f.advance(S.data());
      }

      load_state(d_final_state, b, h, state_size, dS.data());
      for (int64_t c = n_chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * C;
        const T* Sc = states.data() + c * state_size;
        f.build(s, t0, true);
        f.correct_values(Sc);
        f.build_scores(s, t0);
        gather(dO, t0, C, Dv, gr.d_o.data());
        chunk_backward(f, Sc, scale, gated, dS, gr);
        scatter(gr.dq.data(), t0, C, Dk, dQ);
        scatter(gr.dk.data(), t0, C, Dk, dK);
        scatter(gr.dv.data(), t0, C, Dv, dV);
        scatter(gr.dbeta.data(), t0, C, 1, dBeta);
        if (gated) scatter(gr.dg.data(), t0, C, 1, dG);
      }
      if (d_initial_state.defined()) store_state(dS.data(), b, h, state_size, d_initial_state);
    }
  }
}

}  // namespace

void delta_rule_recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& g, const Tensor& beta, double scale,
                                  const Tensor& initial_state, Tensor& o, Tensor& final_state) {
  const char* op = "delta_rule_recurrent_forward";
  const HeadDims d = check_inputs(q, k, v, g, beta, op);
  check_optional(initial_state, state_shape(d), k.dtype(), op, "initial_state");
  check_like(o, v.shape(), k.dtype(), op, "o");
  check_optional(final_state, state_shape(d), k.dtype(), op, "final_state");
  cpu::dispatch_float(k.dtype(), [&](auto zero) {
    using T = decltype(zero);
    recurrent_forward<T>(q, k, v, g, beta, static_cast<T>(scale), d, initial_state, o, final_state);
  });
}

void delta_rule_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                const Tensor& beta, double scale, int64_t chunk,
                                const Tensor& initial_state, Tensor& o, Tensor& final_state) {
  LINEA_ON_CUDA(
      k, delta_rule_chunked_forward(q, k, v, g, beta, scale, chunk, initial_state, o, final_state));
  const char* op = "delta_rule_chunked_forward";
  const HeadDims d = check_inputs(q, k, v, g, beta, op);
  check_delta_chunk(chunk, d, op);
  check_optional(initial_state, state_shape(d), k.dtype(), op, "initial_state");
  check_like(o, v.shape(), k.dtype(), op, "o");
  check_optional(final_state, state_shape(d), k.dtype(), op, "final_state");
  cpu::dispatch_float(k.dtype(), [&](auto zero) {
    using T = decltype(zero);
    chunked_forward<T>(q, k, v, g, beta, static_cast<T>(scale), chunk, d, initial_state, o,
                       final_state);
  });
}

void delta_rule_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                 const Tensor& beta, double scale, int64_t chunk,
                                 const Tensor& initial_state, const Tensor& d_o,
                                 const Tensor& d_final_state, Tensor& dq, Tensor& dk, Tensor& dv,
                                 Tensor& dg, Tensor& dbeta, Tensor& d_initial_state) {
  LINEA_ON_CUDA(k,
                delta_rule_chunked_backward(q, k, v, g, beta, scale, chunk, initial_state, d_o,
                                            d_final_state, dq, dk, dv, dg, dbeta, d_initial_state));
  const char* op = "delta_rule_chunked_backward";
  const HeadDims d = check_inputs(q, k, v, g, beta, op);
  const DType dt = k.dtype();
  check_delta_chunk(chunk, d, op);
  check_optional(initial_state, state_shape(d), dt, op, "initial_state");
  check_like(d_o, v.shape(), dt, op, "d_o");
  check_optional(d_final_state, state_shape(d), dt, op, "d_final_state");
  check_like(dq, q.shape(), dt, op, "dq");
  check_like(dk, k.shape(), dt, op, "dk");
  check_like(dv, v.shape(), dt, op, "dv");
  check_like(dbeta, beta.shape(), dt, op, "dbeta");
  if (g.defined()) {
    check_like(dg, g.shape(), dt, op, "dg");
  } else {
    LINEA_CHECK(!dg.defined()) << op << ": dg given but g is undefined (no decay, nothing to "
                               << "differentiate); pass an undefined dg";
  }
  check_optional(d_initial_state, state_shape(d), dt, op, "d_initial_state");
  cpu::dispatch_float(dt, [&](auto zero) {
    using T = decltype(zero);
    chunked_backward<T>(q, k, v, g, beta, static_cast<T>(scale), chunk, d, initial_state, d_o,
                        d_final_state, dq, dk, dv, dg, dbeta, d_initial_state);
  });
}

void delta_rule_chunked_transition(const Tensor& k, const Tensor& g, const Tensor& beta,
                                   int64_t chunk, Tensor& transition) {
  LINEA_ON_CUDA(k, delta_rule_chunked_transition(k, g, beta, chunk, transition));
  const char* op = "delta_rule_chunked_transition";
  const HeadDims d = check_keys_and_gates(k, g, beta, op);
  check_delta_chunk(chunk, d, op);
  check_like(transition, {d.B, d.H, d.Dk, d.Dk}, k.dtype(), op, "transition");
  cpu::dispatch_float(k.dtype(), [&](auto zero) {
    using T = decltype(zero);
    chunked_transition<T>(k, g, beta, chunk, d, transition);
  });
}

}  // namespace linea::kernels
