// CPU linear attention: the token-by-token reference and the chunked forward/backward.
// The contract (shapes, gradient rule) is in kernels/linear_attention.h.
#include "kernels/linear_attention.h"

#include <algorithm>
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
using cpu::load_state;
using cpu::read_state;
using cpu::scatter;
using cpu::store_state;
using cpu::zero_above_diagonal;

// ---- recurrent forward (the reference) -----------------------------------------------------

template <typename T>
void recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v, T scale,
                       const HeadDims& d, const Tensor& initial_state, Tensor& o,
                       Tensor& final_state) {
  std::vector<T> S(d.Dk * d.Dv);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto Q = head_rows<T>(q, b, h), K = head_rows<T>(k, b, h);
      const auto V = head_rows<T>(v, b, h), O = head_rows<T>(o, b, h);
      load_state(initial_state, b, h, d.Dk * d.Dv, S.data());
      for (int64_t t = 0; t < d.T; ++t) {
        const T *qt = Q.row(t), *kt = K.row(t), *vt = V.row(t);
        for (int64_t i = 0; i < d.Dk; ++i)
          for (int64_t j = 0; j < d.Dv; ++j) S[i * d.Dv + j] += kt[i] * vt[j];
        read_state(qt, S.data(), d.Dk, d.Dv, scale, O.row(t));
      }
      if (final_state.defined()) store_state(S.data(), b, h, d.Dk * d.Dv, final_state);
    }
  }
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
        a(C * C),
        p(C * C) {}
  std::vector<T> q, k, v, d_o, o, dq, dk, dv;
  std::vector<T> a, p;  // [C, C] masked score tiles
};

template <typename T>
void chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v, T scale, int64_t chunk,
                     const HeadDims& d, const Tensor& initial_state, Tensor& o,
                     Tensor& final_state) {
  const int C = static_cast<int>(chunk), Dk = static_cast<int>(d.Dk), Dv = static_cast<int>(d.Dv);
  ChunkTiles<T> tl(C, d);
  std::vector<T> S(d.Dk * d.Dv);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.H; ++h) {
      const auto Q = head_rows<T>(q, b, h), K = head_rows<T>(k, b, h);
      const auto V = head_rows<T>(v, b, h), O = head_rows<T>(o, b, h);
      load_state(initial_state, b, h, d.Dk * d.Dv, S.data());
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
      if (final_state.defined()) store_state(S.data(), b, h, d.Dk * d.Dv, final_state);
    }
  }
}

// Per chunk with incoming state S_c and dS = the gradient reaching the chunk's outgoing state:
//   P = scale * tril(dO v^T),  A = scale * tril(q k^T),
//   dq = scale * dO S_c^T + P k,  dk = P^T q + v dS^T,  dv = A^T dO + k dS,
//   dS_c = dS + scale * q^T dO.
template <typename T>
void chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v, T scale, int64_t chunk,
                      const HeadDims& d, const Tensor& initial_state, const Tensor& d_o,
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
      const auto Q = head_rows<T>(q, b, h), K = head_rows<T>(k, b, h);
      const auto V = head_rows<T>(v, b, h), dO = head_rows<T>(d_o, b, h);
      const auto dQ = head_rows<T>(dq, b, h), dK = head_rows<T>(dk, b, h);
      const auto dV = head_rows<T>(dv, b, h);

      load_state(initial_state, b, h, state_size, S.data());
      for (int64_t c = 0; c < n_chunks; ++c) {
        std::copy(S.begin(), S.end(), states.begin() + c * state_size);
        if (c + 1 == n_chunks) break;
        gather(K, c * C, C, Dk, tl.k.data());
        gather(V, c * C, C, Dv, tl.v.data());
        gemm<T>(true, false, Dk, Dv, C, T(1), tl.k.data(), Dk, tl.v.data(), Dv, T(1), S.data(), Dv);
      }

      load_state(d_final_state, b, h, state_size, dS.data());
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
      if (d_initial_state.defined()) store_state(dS.data(), b, h, state_size, d_initial_state);
    }
  }
}

}  // namespace

void linear_attention_recurrent_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                        double scale, const Tensor& initial_state, Tensor& o,
                                        Tensor& final_state) {
  const char* op = "linear_attention_recurrent_forward";
  const HeadDims d = check_qkv(q, k, v, op);
  check_optional_state(initial_state, d, q.dtype(), op, "initial_state");
  check_operand(o, v.shape(), q.dtype(), op, "o");
  check_optional_state(final_state, d, q.dtype(), op, "final_state");
  cpu::dispatch_float(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    recurrent_forward<T>(q, k, v, static_cast<T>(scale), d, initial_state, o, final_state);
  });
}

void linear_attention_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                      double scale, int64_t chunk, const Tensor& initial_state,
                                      Tensor& o, Tensor& final_state) {
  LINEA_ON_CUDA(
      q, linear_attention_chunked_forward(q, k, v, scale, chunk, initial_state, o, final_state));
  const char* op = "linear_attention_chunked_forward";
  const HeadDims d = check_qkv(q, k, v, op);
  check_chunk(chunk, d, op);
  check_optional_state(initial_state, d, q.dtype(), op, "initial_state");
  check_operand(o, v.shape(), q.dtype(), op, "o");
  check_optional_state(final_state, d, q.dtype(), op, "final_state");
  cpu::dispatch_float(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    chunked_forward<T>(q, k, v, static_cast<T>(scale), chunk, d, initial_state, o, final_state);
  });
}

void linear_attention_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       double scale, int64_t chunk, const Tensor& initial_state,
                                       const Tensor& d_o, const Tensor& d_final_state, Tensor& dq,
                                       Tensor& dk, Tensor& dv, Tensor& d_initial_state) {
  LINEA_ON_CUDA(q, linear_attention_chunked_backward(q, k, v, scale, chunk, initial_state, d_o,
                                                     d_final_state, dq, dk, dv, d_initial_state));
  const char* op = "linear_attention_chunked_backward";
  const HeadDims d = check_qkv(q, k, v, op);
  check_chunk(chunk, d, op);
  check_optional_state(initial_state, d, q.dtype(), op, "initial_state");
  check_operand(d_o, v.shape(), q.dtype(), op, "d_o");
  check_optional_state(d_final_state, d, q.dtype(), op, "d_final_state");
  check_operand(dq, q.shape(), q.dtype(), op, "dq");
  check_operand(dk, k.shape(), q.dtype(), op, "dk");
  check_operand(dv, v.shape(), q.dtype(), op, "dv");
  check_optional_state(d_initial_state, d, q.dtype(), op, "d_initial_state");
  cpu::dispatch_float(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    chunked_backward<T>(q, k, v, static_cast<T>(scale), chunk, d, initial_state, d_o, d_final_state,
                        dq, dk, dv, d_initial_state);
  });
}

}  // namespace linea::kernels
