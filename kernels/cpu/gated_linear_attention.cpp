// CPU gated linear attention: the token-by-token reference, the chunked forward/backward and the
// segment log decay. The contract (shapes, gate rules, gradient rule) is in
// kernels/gated_linear_attention.h.
#include "kernels/gated_linear_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/tiles.h"

namespace linea::kernels {
namespace {

using cpu::check_chunk;
using cpu::check_operand;
using cpu::check_optional_state;
using cpu::check_qkv;
using cpu::gather;
using cpu::gemm;
using cpu::head_rows;
using cpu::HeadDims;
using cpu::HeadRows;
using cpu::load_state;
using cpu::read_state;
using cpu::scatter;
using cpu::store_state;
using cpu::zero_above_diagonal;

// How one side of the state decays: not at all, by one scalar a head, or per row/column.
enum class Decay { kNone, kScalar, kVector };

Decay check_key_gate(const Tensor& gk, const HeadDims& d, DType dtype, const char* op) {
  if (!gk.defined()) return Decay::kNone;
  const Shape vector{d.B, d.T, d.H, d.Dk}, scalar{d.B, d.T, d.H};
  LINEA_CHECK(gk.shape() == vector || gk.shape() == scalar)
      << op << ": gk must be " << shape_str(vector) << " (vector decay) or " << shape_str(scalar)
      << " (one scalar a head), got " << shape_str(gk.shape());
  check_operand(gk, gk.shape(), dtype, op, "gk");
  return gk.ndim() == 4 ? Decay::kVector : Decay::kScalar;
}

Decay check_value_gate(const Tensor& gv, const HeadDims& d, DType dtype, const char* op) {
  if (!gv.defined()) return Decay::kNone;
  check_operand(gv, {d.B, d.T, d.H, d.Dv}, dtype, op, "gv");
  return Decay::kVector;
}

// A gate's gradient is wanted when defined, and then has the gate's shape.
void check_optional_gate_grad(const Tensor& dg, const Tensor& g, DType dtype, const char* op,
                              const char* name, const char* gate) {
  if (!dg.defined()) return;
  LINEA_CHECK(g.defined()) << op << ": " << name << " given but " << gate
                           << " is undefined (no decay on that side to differentiate)";
  check_operand(dg, g.shape(), dtype, op, name);
}

// ---- recurrent forward (the reference) -----------------------------------------------------

// The per-coordinate decay factor of one token: exp(g) broadcast for a scalar gate, 1 for none.
template <typename T>
void token_decay(Decay kind, const T* g, int64_t D, T* out) {
  for (int64_t i = 0; i < D; ++i) {
    out[i] = kind == Decay::kNone ? T(1) : kind == Decay::kScalar ? std::exp(g[0]) : std::exp(g[i]);
  }
}

template <typename T>
void recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gk,
                       const Tensor& gv, Decay gk_kind, Decay gv_kind, T scale, const HeadDims& d,
                       const Tensor& initial_state, Tensor& o, Tensor& final_state) {
  std::vector<T> S(d.Dk * d.Dv), ek(d.Dk), ev(d.Dv);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto Q = head_rows<T>(q, b, h), K = head_rows<T>(k, b, h);
      const auto V = head_rows<T>(v, b, h), O = head_rows<T>(o, b, h);
      const auto Gk = head_rows<T>(gk, b, h), Gv = head_rows<T>(gv, b, h);
      load_state(initial_state, b, h, d.Dk * d.Dv, S.data());
      for (int64_t t = 0; t < d.T; ++t) {
        const T *qt = Q.row(t), *kt = K.row(t), *vt = V.row(t);
        token_decay(gk_kind, Gk.base ? Gk.row(t) : nullptr, d.Dk, ek.data());
        token_decay(gv_kind, Gv.base ? Gv.row(t) : nullptr, d.Dv, ev.data());
        for (int64_t i = 0; i < d.Dk; ++i)
          for (int64_t j = 0; j < d.Dv; ++j)
            S[i * d.Dv + j] = ek[i] * S[i * d.Dv + j] * ev[j] + kt[i] * vt[j];
        read_state(qt, S.data(), d.Dk, d.Dv, scale, O.row(t));
      }
      if (final_state.defined()) store_state(S.data(), b, h, d.Dk * d.Dv, final_state);
    }
  }
}

// ---- decay within a chunk ------------------------------------------------------------------

// The in-chunk cumulative log decay of one side, c_t = g_{t0} + ... + g_{t0+t}: inclusive, since
// S_t already carries token t's decay. Every exponent below is c_t - c_s with s <= t (or c_t
// itself), a sum of gates, so never positive.
template <typename T>
struct ChunkDecay {
  ChunkDecay(Decay kind, int64_t C, int64_t D)
      : kind(kind),
        width(kind == Decay::kVector ? D : 1),
        cum(kind == Decay::kNone ? 0 : C * width) {}
  // Log decay of coordinate i from the chunk start to token t.
  T at(int64_t t, int64_t i) const {
    return kind == Decay::kNone ? T(0) : cum[t * width + (kind == Decay::kVector ? i : 0)];
  }
  Decay kind;
  int64_t width;
  std::vector<T> cum;  // [C, width]
};

template <typename T>
void load_decay(const HeadRows<T>& g, int64_t t0, int64_t C, ChunkDecay<T>& c) {
  if (c.kind == Decay::kNone) return;
  const int64_t w = c.width;
  for (int64_t t = 0; t < C; ++t) {
    const T* gt = g.row(t0 + t);
    for (int64_t i = 0; i < w; ++i) c.cum[t * w + i] = gt[i] + (t ? c.cum[(t - 1) * w + i] : T(0));
  }
}

// Rows of x ([C, D]) times exp(c_t) (from the chunk start to t) or, with to_end, exp(c_last - c_t)
// (from t to the chunk end).
template <typename T>
void times_row_decay(const ChunkDecay<T>& c, int64_t C, int64_t D, bool to_end, T* x) {
  if (c.kind == Decay::kNone) return;
  for (int64_t t = 0; t < C; ++t)
    for (int64_t i = 0; i < D; ++i)
      x[t * D + i] *= std::exp(to_end ? c.at(C - 1, i) - c.at(t, i) : c.at(t, i));
}

// S (or dS) times the whole chunk's decay on both sides: diag(exp(ck_last)) S diag(exp(cv_last)).
template <typename T>
void times_chunk_decay(const ChunkDecay<T>& ck, const ChunkDecay<T>& cv, int64_t C, int64_t Dk,
                       int64_t Dv, T* S) {
  for (int64_t i = 0; i < Dk; ++i)
    for (int64_t j = 0; j < Dv; ++j) S[i * Dv + j] *= std::exp(ck.at(C - 1, i) + cv.at(C - 1, j));
}

// m[t, s] *= exp(c_t - c_s) on and below the diagonal (scalar decay: one matrix for all coords).
template <typename T>
void times_decay_matrix(const ChunkDecay<T>& c, int64_t C, T* m) {
  for (int64_t t = 0; t < C; ++t)
    for (int64_t s = 0; s <= t; ++s) m[t * C + s] *= std::exp(c.cum[t] - c.cum[s]);
}

// Masked scores with the relative decay of their contracted side:
//   out[t, s] = alpha * sum_i x_t[i] y_s[i] exp(c_t[i] - c_s[i])  for s <= t, 0 above.
// A vector decay differs per contracted coordinate, so it cannot leave the sum: an explicit loop.
template <typename T>
void decayed_scores(const T* x, const T* y, int D, const ChunkDecay<T>& c, int C, T alpha, T* out) {
  if (c.kind == Decay::kVector) {
    for (int t = 0; t < C; ++t) {
      const T* ct = c.cum.data() + t * D;
      for (int s = 0; s <= t; ++s) {
        const T* cs = c.cum.data() + s * D;
        T acc = 0;
        for (int i = 0; i < D; ++i) acc += x[t * D + i] * y[s * D + i] * std::exp(ct[i] - cs[i]);
        out[t * C + s] = alpha * acc;
      }
      std::fill(out + t * C + t + 1, out + (t + 1) * C, T(0));
    }
    return;
  }
  gemm<T>(false, true, C, C, D, alpha, x, D, y, D, T(0), out, C);
  zero_above_diagonal(out, C);
  if (c.kind == Decay::kScalar) times_decay_matrix(c, C, out);
}

// out_t += sum_{s <= t} m[t, s] y_s (.) exp(c_t - c_s): masked m ([C, C]) applied to rows y
// ([C, D]) with the relative decay of the output side. `work` holds C*C values.
template <typename T>
void decayed_apply(const T* m, const T* y, int D, const ChunkDecay<T>& c, int C, T* out, T* work) {
  if (c.kind == Decay::kVector) {
    for (int t = 0; t < C; ++t) {
      const T* ct = c.cum.data() + t * D;
      for (int s = 0; s <= t; ++s) {
        const T* cs = c.cum.data() + s * D;
        const T mts = m[t * C + s];
        for (int i = 0; i < D; ++i) out[t * D + i] += mts * y[s * D + i] * std::exp(ct[i] - cs[i]);
      }
    }
    return;
  }
  if (c.kind == Decay::kScalar) {
    std::copy_n(m, C * C, work);
    times_decay_matrix(c, C, work);
    m = work;
  }
  gemm<T>(false, false, C, D, C, T(1), m, C, y, D, T(1), out, D);
}

// The transpose: out_s += sum_{t >= s} m[t, s] x_t (.) exp(c_t - c_s).
template <typename T>
void decayed_apply_transposed(const T* m, const T* x, int D, const ChunkDecay<T>& c, int C, T* out,
                              T* work) {
  if (c.kind == Decay::kVector) {
    for (int s = 0; s < C; ++s) {
      const T* cs = c.cum.data() + s * D;
      for (int t = s; t < C; ++t) {
        const T* ct = c.cum.data() + t * D;
        const T mts = m[t * C + s];
        for (int i = 0; i < D; ++i) out[s * D + i] += mts * x[t * D + i] * std::exp(ct[i] - cs[i]);
      }
    }
    return;
  }
  if (c.kind == Decay::kScalar) {
    std::copy_n(m, C * C, work);
    times_decay_matrix(c, C, work);
    m = work;
  }
  gemm<T>(true, false, C, D, C, T(1), m, C, x, D, T(1), out, D);
}

// ---- chunked forward and backward ----------------------------------------------------------

template <typename T>
struct ChunkTiles {
  ChunkTiles(int64_t C, const HeadDims& d)
      : q(C * d.Dk),
        k(C * d.Dk),
        v(C * d.Dv),
        d_o(C * d.Dv),
        o(C * d.Dv),
        dq(C * d.Dk),
        dk(C * d.Dk),
        dv(C * d.Dv),
        qe(C * d.Dk),
        ke(C * d.Dk),
        ve(C * d.Dv),
        doe(C * d.Dv),
        dgk(C * d.Dk),
        dgv(C * d.Dv),
        a(C * C),
        p(C * C),
        work(C * C) {}
  std::vector<T> q, k, v, d_o, o, dq, dk, dv;
  std::vector<T> qe, ke, ve, doe;  // rows times their decay to the chunk start or end
  std::vector<T> dgk, dgv;         // the chunk's gate gradients
  std::vector<T> a, p, work;       // [C, C] masked score tiles
};

// o of one chunk from its incoming state S and the gathered q, k, v:
//   o = scale * ((q (.) exp(ck_t)) S) (.) exp(cv_t) + decayed_apply(A, v),
//   A = scale * decayed_scores(q, k).
// Leaves q (.) exp(ck_t) in tl.qe and A in tl.a for the backward.
template <typename T>
void chunk_output(ChunkTiles<T>& tl, const ChunkDecay<T>& ck, const ChunkDecay<T>& cv, const T* S,
                  T scale, int C, int Dk, int Dv) {
  std::copy(tl.q.begin(), tl.q.end(), tl.qe.begin());
  times_row_decay(ck, C, Dk, false, tl.qe.data());
  gemm<T>(false, false, C, Dv, Dk, scale, tl.qe.data(), Dk, S, Dv, T(0), tl.o.data(), Dv);
  times_row_decay(cv, C, Dv, false, tl.o.data());
  decayed_scores(tl.q.data(), tl.k.data(), Dk, ck, C, scale, tl.a.data());
  decayed_apply(tl.a.data(), tl.v.data(), Dv, cv, C, tl.o.data(), tl.work.data());
}

// S <- diag(exp(ck_last)) S diag(exp(cv_last)) + ke^T ve, with ke = k (.) exp(ck_last - ck_s) and
// ve = v (.) exp(cv_last - cv_s), left in the tiles for the backward.
template <typename T>
void chunk_advance_state(ChunkTiles<T>& tl, const ChunkDecay<T>& ck, const ChunkDecay<T>& cv, int C,
                         int Dk, int Dv, T* S) {
  times_chunk_decay(ck, cv, C, Dk, Dv, S);
  std::copy(tl.k.begin(), tl.k.end(), tl.ke.begin());
  times_row_decay(ck, C, Dk, true, tl.ke.data());
  std::copy(tl.v.begin(), tl.v.end(), tl.ve.begin());
  times_row_decay(cv, C, Dv, true, tl.ve.data());
  gemm<T>(true, false, Dk, Dv, C, T(1), tl.ke.data(), Dk, tl.ve.data(), Dv, T(1), S, Dv);
}

template <typename T>
void chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gk,
                     const Tensor& gv, Decay gk_kind, Decay gv_kind, T scale, int64_t chunk,
                     const HeadDims& d, const Tensor& initial_state, Tensor& o,
                     Tensor& final_state) {
  const int C = static_cast<int>(chunk), Dk = static_cast<int>(d.Dk), Dv = static_cast<int>(d.Dv);
  ChunkTiles<T> tl(C, d);
  ChunkDecay<T> ck(gk_kind, C, Dk), cv(gv_kind, C, Dv);
  std::vector<T> S(d.Dk * d.Dv);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto Q = head_rows<T>(q, b, h), K = head_rows<T>(k, b, h);
      const auto V = head_rows<T>(v, b, h), O = head_rows<T>(o, b, h);
      const auto Gk = head_rows<T>(gk, b, h), Gv = head_rows<T>(gv, b, h);
      load_state(initial_state, b, h, d.Dk * d.Dv, S.data());
      for (int64_t t0 = 0; t0 < d.T; t0 += C) {
        gather(Q, t0, C, Dk, tl.q.data());
        gather(K, t0, C, Dk, tl.k.data());
        gather(V, t0, C, Dv, tl.v.data());
        load_decay(Gk, t0, C, ck);
        load_decay(Gv, t0, C, cv);
        if (o.defined()) chunk_output(tl, ck, cv, S.data(), scale, C, Dk, Dv);
        chunk_advance_state(tl, ck, cv, C, Dk, Dv, S.data());
        if (o.defined()) scatter(tl.o.data(), t0, C, Dv, O);
      }
      if (final_state.defined()) store_state(S.data(), b, h, d.Dk * d.Dv, final_state);
    }
  }
}

// The gradient of one chunk's log gates (header rule): r_t = x_t (.) dx_t - y_t (.) dy_t, plus
// `last` (the outgoing state's term) at the last token, summed from t to the chunk end; a scalar
// gate sums its row. out is [C, width]. x (.) dx - y (.) dy is what moving the cumulative log decay
// at t does to q_t exp(c_t) and k_t exp(-c_t) (o_t exp(-cv_t) and v_t exp(-cv_t) for gv), and a
// gate at r moves every c_t with t >= r.
template <typename T>
void chunk_gate_grad(const T* x, const T* dx, const T* y, const T* dy, const T* last, int64_t C,
                     int64_t D, Decay kind, T* out) {
  const bool vector = kind == Decay::kVector;
  for (int64_t t = C - 1; t >= 0; --t) {
    T row_sum = 0;
    for (int64_t i = 0; i < D; ++i) {
      const T r = x[t * D + i] * dx[t * D + i] - y[t * D + i] * dy[t * D + i] +
                  (t == C - 1 ? last[i] : T(0));
      if (vector) {
        out[t * D + i] = r + (t + 1 < C ? out[(t + 1) * D + i] : T(0));
      } else {
        row_sum += r;
      }
    }
    if (!vector) out[t] = row_sum + (t + 1 < C ? out[t + 1] : T(0));
  }
}

// Per chunk with incoming state S_c, outgoing S_n and dS = the gradient reaching S_n
// (ck/cv the chunk's cumulative log decays, .e the rows times their decay as in the forward):
//   A = scale * decayed_scores(q, k; ck),  P = scale * decayed_scores(dO, v; cv),
//   dq = scale * (doe S_c^T) (.) exp(ck_t) + decayed_apply(P, k; ck),
//   dk = (ve dS^T) (.) exp(ck_last - ck_s) + decayed_apply_transposed(P, q; ck),
//   dv = (ke dS) (.) exp(cv_last - cv_s) + decayed_apply_transposed(A, dO; cv),
//   dS_c = diag(exp(ck_last)) dS diag(exp(cv_last)) + scale * qe^T doe.
template <typename T>
void chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gk,
                      const Tensor& gv, Decay gk_kind, Decay gv_kind, T scale, int64_t chunk,
                      const HeadDims& d, const Tensor& initial_state, const Tensor& d_o,
                      const Tensor& d_final_state, Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dgk,
                      Tensor& dgv, Tensor& d_initial_state) {
  const int C = static_cast<int>(chunk), Dk = static_cast<int>(d.Dk), Dv = static_cast<int>(d.Dv);
  const int64_t n_chunks = d.T / chunk, state_size = d.Dk * d.Dv;
  ChunkTiles<T> tl(C, d);
  ChunkDecay<T> ck(gk_kind, C, Dk), cv(gv_kind, C, Dv);
  // Every chunk boundary's state of one (b, h), recomputed here so that the forward needs to keep
  // nothing but its inputs: (n_chunks + 1) * Dk * Dv values, small next to q, k, v. The gate
  // gradients read the outgoing state of each chunk, the final one included.
  std::vector<T> states((n_chunks + 1) * state_size);
  std::vector<T> dS(state_size), last_k(d.Dk), last_v(d.Dv);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto Q = head_rows<T>(q, b, h), K = head_rows<T>(k, b, h);
      const auto V = head_rows<T>(v, b, h), dO = head_rows<T>(d_o, b, h);
      const auto Gk = head_rows<T>(gk, b, h), Gv = head_rows<T>(gv, b, h);
      const auto dQ = head_rows<T>(dq, b, h), dK = head_rows<T>(dk, b, h);
      const auto dV = head_rows<T>(dv, b, h);
      const auto dGk = head_rows<T>(dgk, b, h), dGv = head_rows<T>(dgv, b, h);

      load_state(initial_state, b, h, state_size, states.data());
      for (int64_t c = 0; c < n_chunks; ++c) {
        T* S = states.data() + (c + 1) * state_size;
        std::copy_n(S - state_size, state_size, S);
        gather(K, c * C, C, Dk, tl.k.data());
        gather(V, c * C, C, Dv, tl.v.data());
        load_decay(Gk, c * C, C, ck);
        load_decay(Gv, c * C, C, cv);
        chunk_advance_state(tl, ck, cv, C, Dk, Dv, S);
      }

      load_state(d_final_state, b, h, state_size, dS.data());
      for (int64_t c = n_chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * C;
        const T* Sc = states.data() + c * state_size;
        const T* Sn = Sc + state_size;
        gather(Q, t0, C, Dk, tl.q.data());
        gather(K, t0, C, Dk, tl.k.data());
        gather(V, t0, C, Dv, tl.v.data());
        gather(dO, t0, C, Dv, tl.d_o.data());
        load_decay(Gk, t0, C, ck);
        load_decay(Gv, t0, C, cv);

        // Recomputes qe and A, and o, which only dgv needs.
        chunk_output(tl, ck, cv, Sc, scale, C, Dk, Dv);
        std::copy(tl.k.begin(), tl.k.end(), tl.ke.begin());
        times_row_decay(ck, C, Dk, true, tl.ke.data());
        std::copy(tl.v.begin(), tl.v.end(), tl.ve.begin());
        times_row_decay(cv, C, Dv, true, tl.ve.data());
        std::copy(tl.d_o.begin(), tl.d_o.end(), tl.doe.begin());
        times_row_decay(cv, C, Dv, false, tl.doe.data());
        decayed_scores(tl.d_o.data(), tl.v.data(), Dv, cv, C, scale, tl.p.data());

        gemm<T>(false, true, C, Dk, Dv, scale, tl.doe.data(), Dv, Sc, Dv, T(0), tl.dq.data(), Dk);
        times_row_decay(ck, C, Dk, false, tl.dq.data());
        decayed_apply(tl.p.data(), tl.k.data(), Dk, ck, C, tl.dq.data(), tl.work.data());

        gemm<T>(false, true, C, Dk, Dv, T(1), tl.ve.data(), Dv, dS.data(), Dv, T(0), tl.dk.data(),
                Dk);
        times_row_decay(ck, C, Dk, true, tl.dk.data());
        decayed_apply_transposed(tl.p.data(), tl.q.data(), Dk, ck, C, tl.dk.data(), tl.work.data());

        gemm<T>(false, false, C, Dv, Dk, T(1), tl.ke.data(), Dk, dS.data(), Dv, T(0), tl.dv.data(),
                Dv);
        times_row_decay(cv, C, Dv, true, tl.dv.data());
        decayed_apply_transposed(tl.a.data(), tl.d_o.data(), Dv, cv, C, tl.dv.data(),
                                 tl.work.data());

        // Gate gradients read the outgoing dS, so they come before dS moves to the chunk start.
        if (dgk.defined() || dgv.defined()) {
          std::fill(last_k.begin(), last_k.end(), T(0));
          std::fill(last_v.begin(), last_v.end(), T(0));
          for (int64_t i = 0; i < d.Dk; ++i) {
            for (int64_t j = 0; j < d.Dv; ++j) {
              const T e = dS[i * d.Dv + j] * Sn[i * d.Dv + j];
              last_k[i] += e;
              last_v[j] += e;
            }
          }
        }
        if (dgk.defined()) {
          chunk_gate_grad(tl.q.data(), tl.dq.data(), tl.k.data(), tl.dk.data(), last_k.data(), C,
                          d.Dk, gk_kind, tl.dgk.data());
          scatter(tl.dgk.data(), t0, C, ck.width, dGk);
        }
        if (dgv.defined()) {
          chunk_gate_grad(tl.o.data(), tl.d_o.data(), tl.v.data(), tl.dv.data(), last_v.data(), C,
                          d.Dv, gv_kind, tl.dgv.data());
          scatter(tl.dgv.data(), t0, C, cv.width, dGv);
        }

        times_chunk_decay(ck, cv, C, Dk, Dv, dS.data());
        gemm<T>(true, false, Dk, Dv, C, scale, tl.qe.data(), Dk, tl.doe.data(), Dv, T(1), dS.data(),
                Dv);

        scatter(tl.dq.data(), t0, C, Dk, dQ);
        scatter(tl.dk.data(), t0, C, Dk, dK);
        scatter(tl.dv.data(), t0, C, Dv, dV);
      }
      if (d_initial_state.defined()) store_state(dS.data(), b, h, state_size, d_initial_state);
    }
  }
}

// ---- segment log decay ---------------------------------------------------------------------

// out[b, h, i] = sum_t g[b, t, h, i]; a [B, T, H] gate reads as width 1.
template <typename T>
void sum_over_time(const Tensor& g, Tensor& out) {
  const int64_t B = g.dim(0), T_ = g.dim(1), H = g.dim(2), w = g.ndim() == 4 ? g.dim(3) : 1;
  const T* src = g.data<T>();
  T* dst = out.data<T>();
  std::fill_n(dst, B * H * w, T(0));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T_; ++t)
      for (int64_t hi = 0; hi < H * w; ++hi) dst[b * H * w + hi] += src[(b * T_ + t) * H * w + hi];
}

void segment_log_decay(const Tensor& g, Tensor& out, const char* op, const char* gate,
                       const char* name) {
  if (!out.defined()) return;
  LINEA_CHECK(g.defined()) << op << ": " << name << " given but " << gate
                           << " is undefined (that side does not decay)";
  LINEA_CHECK(g.ndim() == 3 || g.ndim() == 4)
      << op << ": " << gate << " must be [B, T, H] or [B, T, H, D], got " << shape_str(g.shape());
  LINEA_CHECK(g.dtype() == DType::kF32 || g.dtype() == DType::kF64)
      << op << ": f32 or f64 only, got " << dtype_name(g.dtype());
  LINEA_CHECK(g.device().is_cpu()) << op << ": CPU kernel got a tensor on " << g.device().str();
  Shape want{g.dim(0), g.dim(2)};
  if (g.ndim() == 4) want.push_back(g.dim(3));
  check_operand(out, want, g.dtype(), op, name);
  cpu::dispatch_float(g.dtype(), [&](auto zero) {
    using T = decltype(zero);
    sum_over_time<T>(g, out);
  });
}

}  // namespace

void gated_linear_attention_recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                              const Tensor& gk, const Tensor& gv, double scale,
                                              const Tensor& initial_state, Tensor& o,
                                              Tensor& final_state) {
  const char* op = "gated_linear_attention_recurrent_forward";
  const HeadDims d = check_qkv(q, k, v, op);
  const Decay gk_kind = check_key_gate(gk, d, q.dtype(), op);
  const Decay gv_kind = check_value_gate(gv, d, q.dtype(), op);
  check_optional_state(initial_state, d, q.dtype(), op, "initial_state");
  check_operand(o, v.shape(), q.dtype(), op, "o");
  check_optional_state(final_state, d, q.dtype(), op, "final_state");
  cpu::dispatch_float(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    recurrent_forward<T>(q, k, v, gk, gv, gk_kind, gv_kind, static_cast<T>(scale), d, initial_state,
                         o, final_state);
  });
}

void gated_linear_attention_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                            const Tensor& gk, const Tensor& gv, double scale,
                                            int64_t chunk, const Tensor& initial_state, Tensor& o,
                                            Tensor& final_state) {
  LINEA_ON_CUDA(q, gated_linear_attention_chunked_forward(q, k, v, gk, gv, scale, chunk,
                                                          initial_state, o, final_state));
  const char* op = "gated_linear_attention_chunked_forward";
  const HeadDims d = check_qkv(q, k, v, op);
  check_chunk(chunk, d, op);
  const Decay gk_kind = check_key_gate(gk, d, q.dtype(), op);
  const Decay gv_kind = check_value_gate(gv, d, q.dtype(), op);
  check_optional_state(initial_state, d, q.dtype(), op, "initial_state");
  if (o.defined()) check_operand(o, v.shape(), q.dtype(), op, "o");
  check_optional_state(final_state, d, q.dtype(), op, "final_state");
  LINEA_CHECK(o.defined() || final_state.defined())
      << op << ": neither o nor final_state is wanted";
  cpu::dispatch_float(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    chunked_forward<T>(q, k, v, gk, gv, gk_kind, gv_kind, static_cast<T>(scale), chunk, d,
                       initial_state, o, final_state);
  });
}

void gated_linear_attention_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const Tensor& gk, const Tensor& gv, double scale,
                                             int64_t chunk, const Tensor& initial_state,
                                             const Tensor& d_o, const Tensor& d_final_state,
                                             Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dgk,
                                             Tensor& dgv, Tensor& d_initial_state) {
  LINEA_ON_CUDA(q, gated_linear_attention_chunked_backward(q, k, v, gk, gv, scale, chunk,
                                                           initial_state, d_o, d_final_state, dq,
                                                           dk, dv, dgk, dgv, d_initial_state));
  const char* op = "gated_linear_attention_chunked_backward";
  const HeadDims d = check_qkv(q, k, v, op);
  check_chunk(chunk, d, op);
  const Decay gk_kind = check_key_gate(gk, d, q.dtype(), op);
  const Decay gv_kind = check_value_gate(gv, d, q.dtype(), op);
  check_optional_state(initial_state, d, q.dtype(), op, "initial_state");
  check_operand(d_o, v.shape(), q.dtype(), op, "d_o");
  check_optional_state(d_final_state, d, q.dtype(), op, "d_final_state");
  check_operand(dq, q.shape(), q.dtype(), op, "dq");
  check_operand(dk, k.shape(), q.dtype(), op, "dk");
  check_operand(dv, v.shape(), q.dtype(), op, "dv");
  check_optional_gate_grad(dgk, gk, q.dtype(), op, "dgk", "gk");
  check_optional_gate_grad(dgv, gv, q.dtype(), op, "dgv", "gv");
  check_optional_state(d_initial_state, d, q.dtype(), op, "d_initial_state");
  cpu::dispatch_float(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    chunked_backward<T>(q, k, v, gk, gv, gk_kind, gv_kind, static_cast<T>(scale), chunk, d,
                        initial_state, d_o, d_final_state, dq, dk, dv, dgk, dgv, d_initial_state);
  });
}

void gated_linear_attention_segment_log_decay(const Tensor& gk, const Tensor& gv,
                                              Tensor& log_decay_k, Tensor& log_decay_v) {
  LINEA_ON_CUDA(gk.defined() ? gk : gv,
                gated_linear_attention_segment_log_decay(gk, gv, log_decay_k, log_decay_v));
  const char* op = "gated_linear_attention_segment_log_decay";
  segment_log_decay(gk, log_decay_k, op, "gk", "log_decay_k");
  segment_log_decay(gv, log_decay_v, op, "gv", "log_decay_v");
}

void gated_linear_attention_apply_transition(const Tensor& log_decay_k, const Tensor& log_decay_v,
                                             const Tensor& s, Tensor& out) {
  LINEA_ON_CUDA(s, gated_linear_attention_apply_transition(log_decay_k, log_decay_v, s, out));
  const char* op = "gated_linear_attention_apply_transition";
  cpu::check_float(s, op, "s");
  LINEA_CHECK(s.ndim() == 4) << op << ": s " << shape_str(s.shape()) << " must be [B, H, Dk, Dv]";
  const int64_t B = s.dim(0), H = s.dim(1), Dk = s.dim(2), Dv = s.dim(3);
  const bool scalar_k = log_decay_k.defined() && log_decay_k.ndim() == 2;
  if (log_decay_k.defined())
    check_operand(log_decay_k, scalar_k ? Shape{B, H} : Shape{B, H, Dk}, s.dtype(), op,
                  "log_decay_k");
  if (log_decay_v.defined()) check_operand(log_decay_v, {B, H, Dv}, s.dtype(), op, "log_decay_v");
  check_operand(out, s.shape(), s.dtype(), op, "out");
  cpu::dispatch_float(s.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* ak = log_decay_k.defined() ? log_decay_k.data<T>() : nullptr;
    const T* av = log_decay_v.defined() ? log_decay_v.data<T>() : nullptr;
    const T* src = s.data<T>();
    T* dst = out.data<T>();
    for (int64_t bh = 0; bh < B * H; ++bh)
      for (int64_t i = 0; i < Dk; ++i) {
        const double fk = ak ? double(ak[scalar_k ? bh : bh * Dk + i]) : 0.0;
        for (int64_t j = 0; j < Dv; ++j) {
          const int64_t idx = (bh * Dk + i) * Dv + j;
          const double f = fk + (av ? double(av[bh * Dv + j]) : 0.0);
          dst[idx] = static_cast<T>(double(src[idx]) * std::exp(f));
        }
      }
  });
}

}  // namespace linea::kernels
