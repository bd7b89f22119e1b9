// CPU linear attention: the token-by-token reference and the chunked forward/backward.
// The contract (shapes, gradient rule) is in kernels/linear_attention.h.
#include "kernels/linear_attention.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <type_traits>
#include <vector>

#include "core/util/check.h"

namespace linea::kernels {
namespace {

struct Dims {
  int64_t B, T, H, Dk, Dv;
};

const char* kChunkHint =
    "choose a chunk size that divides the sequence length (for example a power of two no larger "
    "than it), or pad the sequence to a multiple of the chunk";

// Checks q, k and v; every other tensor is checked against the returned dims.
Dims check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const char* op) {
  LINEA_CHECK(q.defined() && k.defined() && v.defined()) << op << ": q, k and v are required";
  LINEA_CHECK(q.ndim() == 4) << op << ": q must be [B, T, H, Dk], got " << shape_str(q.shape());
  LINEA_CHECK(q.dtype() == DType::kF32 || q.dtype() == DType::kF64)
      << op << ": f32 or f64 only, got " << dtype_name(q.dtype());
  LINEA_CHECK(q.device().is_cpu()) << op << ": CPU kernel got a tensor on " << q.device().str();
  Dims d{q.dim(0), q.dim(1), q.dim(2), q.dim(3), v.ndim() == 4 ? v.dim(3) : -1};
  LINEA_CHECK(k.shape() == q.shape())
      << op << ": k " << shape_str(k.shape()) << " must match q " << shape_str(q.shape());
  LINEA_CHECK(v.ndim() == 4 && v.dim(0) == d.B && v.dim(1) == d.T && v.dim(2) == d.H)
      << op << ": v must be [B, T, H, Dv] with q's B, T, H " << shape_str(q.shape()) << ", got "
      << shape_str(v.shape());
  LINEA_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype())
      << op << ": q, k, v must share one dtype, got " << dtype_name(q.dtype()) << ", "
      << dtype_name(k.dtype()) << ", " << dtype_name(v.dtype());
  LINEA_CHECK(k.device().is_cpu() && v.device().is_cpu())
      << op << ": CPU kernel, k or v not on CPU";
  // cblas takes int dimensions.
  LINEA_CHECK(d.T <= INT_MAX && d.Dk <= INT_MAX && d.Dv <= INT_MAX)
      << op << ": dimensions too large for BLAS: " << shape_str(q.shape());
  return d;
}

// A tensor the kernel reads or writes alongside q: same dtype, CPU, the given shape.
void check_like(const Tensor& t, const Shape& want, DType dtype, const char* op, const char* name) {
  LINEA_CHECK(t.shape() == want) << op << ": " << name << " must be " << shape_str(want) << ", got "
                                 << shape_str(t.shape());
  LINEA_CHECK(t.dtype() == dtype) << op << ": " << name << " is " << dtype_name(t.dtype())
                                  << ", inputs are " << dtype_name(dtype);
  LINEA_CHECK(t.device().is_cpu()) << op << ": " << name << " is on " << t.device().str();
}

void check_optional_state(const Tensor& s, const Dims& d, DType dtype, const char* op,
                          const char* name) {
  if (s.defined()) check_like(s, {d.B, d.H, d.Dk, d.Dv}, dtype, op, name);
}

void check_chunk(int64_t chunk, const Dims& d, const char* op) {
  LINEA_USER_CHECK(chunk > 0 && d.T % chunk == 0, kChunkHint)
      << op << ": chunk " << chunk
      << " must be positive and divide the sequence length T = " << d.T;
}

// Row-major C = alpha * op(A) op(B) + beta * C; lda/ldb/ldc are the stored row lengths.
template <typename T>
void gemm(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb,
          T beta, T* c, int ldc) {
  const auto opa = ta ? CblasTrans : CblasNoTrans;
  const auto opb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    cblas_dgemm(CblasRowMajor, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

// One (b, h) stream of a [B, T, H, D] tensor: rows of D values, `stride` apart.
template <typename T>
struct HeadRows {
  T* base;
  int64_t stride;
  T* row(int64_t t) const { return base + t * stride; }
};

template <typename T>
HeadRows<T> head_rows(const Tensor& x, const Dims& d, int64_t b, int64_t h) {
  const int64_t D = x.dim(3);
  return {x.data<T>() + (b * d.T * d.H + h) * D, d.H * D};
}

// BLAS runs on contiguous [C, D] tiles; the head's rows in [B, T, H, D] are H*D apart, and a
// packed tile keeps every product's operands in a few cache lines.
template <typename T>
void gather(const HeadRows<T>& src, int64_t t0, int64_t C, int64_t D, T* dst) {
  for (int64_t i = 0; i < C; ++i) std::copy_n(src.row(t0 + i), D, dst + i * D);
}

template <typename T>
void scatter(const T* src, int64_t t0, int64_t C, int64_t D, const HeadRows<T>& dst) {
  for (int64_t i = 0; i < C; ++i) std::copy_n(src + i * D, D, dst.row(t0 + i));
}

// Causal mask including the diagonal: token i sees keys j <= i (S_t already holds token t).
template <typename T>
void zero_above_diagonal(T* a, int64_t C) {
  for (int64_t i = 0; i < C; ++i) std::fill(a + i * C + i + 1, a + (i + 1) * C, T(0));
}

template <typename T>
void load_state(const Tensor& s, const Dims& d, int64_t b, int64_t h, std::vector<T>& out) {
  if (!s.defined()) {
    std::fill(out.begin(), out.end(), T(0));
    return;
  }
  const T* p = s.data<T>() + (b * d.H + h) * d.Dk * d.Dv;
  std::copy_n(p, d.Dk * d.Dv, out.begin());
}

template <typename T>
void store_state(const std::vector<T>& in, const Dims& d, int64_t b, int64_t h, Tensor& s) {
  std::copy_n(in.begin(), d.Dk * d.Dv, s.data<T>() + (b * d.H + h) * d.Dk * d.Dv);
}

// ---- recurrent forward (the reference) -----------------------------------------------------

template <typename T>
void recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v, T scale, const Dims& d,
                       const Tensor& initial_state, Tensor& o, Tensor& final_state) {
  std::vector<T> S(d.Dk * d.Dv);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto Q = head_rows<T>(q, d, b, h), K = head_rows<T>(k, d, b, h);
      const auto V = head_rows<T>(v, d, b, h), O = head_rows<T>(o, d, b, h);
      load_state(initial_state, d, b, h, S);
      for (int64_t t = 0; t < d.T; ++t) {
        const T *qt = Q.row(t), *kt = K.row(t), *vt = V.row(t);
        for (int64_t i = 0; i < d.Dk; ++i)
          for (int64_t j = 0; j < d.Dv; ++j) S[i * d.Dv + j] += kt[i] * vt[j];
        T* ot = O.row(t);
        for (int64_t j = 0; j < d.Dv; ++j) {
          T acc = 0;
          for (int64_t i = 0; i < d.Dk; ++i) acc += qt[i] * S[i * d.Dv + j];
          ot[j] = scale * acc;
        }
      }
      if (final_state.defined()) store_state(S, d, b, h, final_state);
    }
  }
}

// ---- chunked forward and backward ----------------------------------------------------------

template <typename T>
struct ChunkTiles {
  ChunkTiles(int64_t C, const Dims& d)
      : q(C * d.Dk),
        k(C * d.Dk),
        v(C * d.Dv),
        d_o(C * d.Dv),
        o(C * d.Dv),
        dq(C * d.Dk),
        dk(C * d.Dk),
        dv(C * d.Dv),
        a(C * C),
        p(C * C) {}
  std::vector<T> q, k, v, d_o, o, dq, dk, dv;
  std::vector<T> a, p;  // [C, C] masked score tiles
};

template <typename T>
void chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v, T scale, int64_t chunk,
                     const Dims& d, const Tensor& initial_state, Tensor& o, Tensor& final_state) {
  const int C = static_cast<int>(chunk), Dk = static_cast<int>(d.Dk), Dv = static_cast<int>(d.Dv);
  ChunkTiles<T> tl(C, d);
  std::vector<T> S(d.Dk * d.Dv);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto Q = head_rows<T>(q, d, b, h), K = head_rows<T>(k, d, b, h);
      const auto V = head_rows<T>(v, d, b, h), O = head_rows<T>(o, d, b, h);
      load_state(initial_state, d, b, h, S);
      for (int64_t t0 = 0; t0 < d.T; t0 += C) {
        gather(Q, t0, C, Dk, tl.q.data());
        gather(K, t0, C, Dk, tl.k.data());
        gather(V, t0, C, Dv, tl.v.data());
        // Inter-chunk: o = scale * q S_prev.
        gemm<T>(false, false, C, Dv, Dk, scale, tl.q.data(), Dk, S.data(), Dv, T(0), tl.o.data(),
                Dv);
        // Intra-chunk: o += (scale * tril(q k^T)) v.
        gemm<T>(false, true, C, C, Dk, scale, tl.q.data(), Dk, tl.k.data(), Dk, T(0), tl.a.data(),
                C);
        zero_above_diagonal(tl.a.data(), C);
        gemm<T>(false, false, C, Dv, C, T(1), tl.a.data(), C, tl.v.data(), Dv, T(1), tl.o.data(),
                Dv);
        // S_next = S_prev + k^T v.
        gemm<T>(true, false, Dk, Dv, C, T(1), tl.k.data(), Dk, tl.v.data(), Dv, T(1), S.data(), Dv);
        scatter(tl.o.data(), t0, C, Dv, O);
      }
      if (final_state.defined()) store_state(S, d, b, h, final_state);
    }
  }
}

// Per chunk with incoming state S_c and dS = the gradient reaching the chunk's outgoing state:
//   P = scale * tril(dO v^T),  A = scale * tril(q k^T),
//   dq = scale * dO S_c^T + P k,  dk = P^T q + v dS^T,  dv = A^T dO + k dS,
//   dS_c = dS + scale * q^T dO.
template <typename T>
void chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v, T scale, int64_t chunk,
                      const Dims& d, const Tensor& initial_state, const Tensor& d_o,
                      const Tensor& d_final_state, Tensor& dq, Tensor& dk, Tensor& dv,
                      Tensor& d_initial_state) {
  const int C = static_cast<int>(chunk), Dk = static_cast<int>(d.Dk), Dv = static_cast<int>(d.Dv);
  const int64_t n_chunks = d.T / chunk, state_size = d.Dk * d.Dv;
  ChunkTiles<T> tl(C, d);
  // Incoming state of every chunk of one (b, h), recomputed here so that the forward needs to
  // keep nothing but its inputs: n_chunks * Dk * Dv values, small next to q, k, v.
  std::vector<T> states(n_chunks * state_size);
  std::vector<T> S(state_size), dS(state_size);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto Q = head_rows<T>(q, d, b, h), K = head_rows<T>(k, d, b, h);
      const auto V = head_rows<T>(v, d, b, h), dO = head_rows<T>(d_o, d, b, h);
      const auto dQ = head_rows<T>(dq, d, b, h), dK = head_rows<T>(dk, d, b, h);
      const auto dV = head_rows<T>(dv, d, b, h);

      load_state(initial_state, d, b, h, S);
      for (int64_t c = 0; c < n_chunks; ++c) {
        std::copy(S.begin(), S.end(), states.begin() + c * state_size);
        if (c + 1 == n_chunks) break;
        gather(K, c * C, C, Dk, tl.k.data());
        gather(V, c * C, C, Dv, tl.v.data());
        gemm<T>(true, false, Dk, Dv, C, T(1), tl.k.data(), Dk, tl.v.data(), Dv, T(1), S.data(), Dv);
      }

      load_state(d_final_state, d, b, h, dS);
      for (int64_t c = n_chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * C;
        const T* Sc = states.data() + c * state_size;
        gather(Q, t0, C, Dk, tl.q.data());
        gather(K, t0, C, Dk, tl.k.data());
        gather(V, t0, C, Dv, tl.v.data());
        gather(dO, t0, C, Dv, tl.d_o.data());

        gemm<T>(false, true, C, C, Dv, scale, tl.d_o.data(), Dv, tl.v.data(), Dv, T(0), tl.p.data(),
                C);
        zero_above_diagonal(tl.p.data(), C);
        gemm<T>(false, true, C, C, Dk, scale, tl.q.data(), Dk, tl.k.data(), Dk, T(0), tl.a.data(),
                C);
        zero_above_diagonal(tl.a.data(), C);

        gemm<T>(false, true, C, Dk, Dv, scale, tl.d_o.data(), Dv, Sc, Dv, T(0), tl.dq.data(), Dk);
        gemm<T>(false, false, C, Dk, C, T(1), tl.p.data(), C, tl.k.data(), Dk, T(1), tl.dq.data(),
                Dk);

        gemm<T>(true, false, C, Dk, C, T(1), tl.p.data(), C, tl.q.data(), Dk, T(0), tl.dk.data(),
                Dk);
        gemm<T>(false, true, C, Dk, Dv, T(1), tl.v.data(), Dv, dS.data(), Dv, T(1), tl.dk.data(),
                Dk);

        gemm<T>(true, false, C, Dv, C, T(1), tl.a.data(), C, tl.d_o.data(), Dv, T(0), tl.dv.data(),
                Dv);
        gemm<T>(false, false, C, Dv, Dk, T(1), tl.k.data(), Dk, dS.data(), Dv, T(1), tl.dv.data(),
                Dv);

        // Only now may dS move to the chunk's incoming state: dk and dv above needed the outgoing.
        gemm<T>(true, false, Dk, Dv, C, scale, tl.q.data(), Dk, tl.d_o.data(), Dv, T(1), dS.data(),
                Dv);

        scatter(tl.dq.data(), t0, C, Dk, dQ);
        scatter(tl.dk.data(), t0, C, Dk, dK);
        scatter(tl.dv.data(), t0, C, Dv, dV);
      }
      if (d_initial_state.defined()) store_state(dS, d, b, h, d_initial_state);
    }
  }
}

}  // namespace

void linear_attention_recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                        double scale, const Tensor& initial_state, Tensor& o,
                                        Tensor& final_state) {
  const char* op = "linear_attention_recurrent_forward";
  const Dims d = check_inputs(q, k, v, op);
  check_optional_state(initial_state, d, q.dtype(), op, "initial_state");
  check_like(o, v.shape(), q.dtype(), op, "o");
  check_optional_state(final_state, d, q.dtype(), op, "final_state");
  if (q.dtype() == DType::kF32) {
    recurrent_forward<float>(q, k, v, static_cast<float>(scale), d, initial_state, o, final_state);
  } else {
    recurrent_forward<double>(q, k, v, scale, d, initial_state, o, final_state);
  }
}

void linear_attention_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                      double scale, int64_t chunk, const Tensor& initial_state,
                                      Tensor& o, Tensor& final_state) {
  const char* op = "linear_attention_chunked_forward";
  const Dims d = check_inputs(q, k, v, op);
  check_chunk(chunk, d, op);
  check_optional_state(initial_state, d, q.dtype(), op, "initial_state");
  check_like(o, v.shape(), q.dtype(), op, "o");
  check_optional_state(final_state, d, q.dtype(), op, "final_state");
  if (q.dtype() == DType::kF32) {
    chunked_forward<float>(q, k, v, static_cast<float>(scale), chunk, d, initial_state, o,
                           final_state);
  } else {
    chunked_forward<double>(q, k, v, scale, chunk, d, initial_state, o, final_state);
  }
}

void linear_attention_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       double scale, int64_t chunk, const Tensor& initial_state,
                                       const Tensor& d_o, const Tensor& d_final_state, Tensor& dq,
                                       Tensor& dk, Tensor& dv, Tensor& d_initial_state) {
  const char* op = "linear_attention_chunked_backward";
  const Dims d = check_inputs(q, k, v, op);
  check_chunk(chunk, d, op);
  check_optional_state(initial_state, d, q.dtype(), op, "initial_state");
  check_like(d_o, v.shape(), q.dtype(), op, "d_o");
  check_optional_state(d_final_state, d, q.dtype(), op, "d_final_state");
  check_like(dq, q.shape(), q.dtype(), op, "dq");
  check_like(dk, k.shape(), q.dtype(), op, "dk");
  check_like(dv, v.shape(), q.dtype(), op, "dv");
  check_optional_state(d_initial_state, d, q.dtype(), op, "d_initial_state");
  if (q.dtype() == DType::kF32) {
    chunked_backward<float>(q, k, v, static_cast<float>(scale), chunk, d, initial_state, d_o,
                            d_final_state, dq, dk, dv, d_initial_state);
  } else {
    chunked_backward<double>(q, k, v, scale, chunk, d, initial_state, d_o, d_final_state, dq, dk,
                             dv, d_initial_state);
  }
}

}  // namespace linea::kernels
