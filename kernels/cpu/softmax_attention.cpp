// CPU causal softmax attention, forward and backward. The contract (shapes, mask, gradient rule)
// is in kernels/softmax_attention.h.
#include "kernels/softmax_attention.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/tiles.h"

namespace linea::kernels {
namespace {

using cpu::check_operand;
using cpu::gather;
using cpu::gemm;
using cpu::head_rows;
using cpu::scatter;

// Queries per block: a [64, Tk] score tile stays small (128 KiB in f32 at Tk = 512) while each
// BLAS call still has enough rows to run at speed.
constexpr int64_t kQueryBlock = 64;

struct Dims {
  int64_t B, Tq, Tk, Hq, Hkv, D, Dv;
  int64_t group() const { return Hq / Hkv; }
};

const char* kOffsetHint =
    "q_offset is the global position of the first local query; with sequence parallelism it is "
    "rank * local_length, and k, v must hold the keys of every position up to the last local query "
    "(all ranks' keys gathered in rank order)";

Dims check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const CausalMask& mask,
                  const char* op) {
  LINEA_CHECK(q.defined() && k.defined() && v.defined()) << op << ": q, k and v are required";
  LINEA_CHECK(q.ndim() == 4) << op << ": q must be [B, Tq, Hq, D], got " << shape_str(q.shape());
  LINEA_CHECK(k.ndim() == 4) << op << ": k must be [B, Tk, Hkv, D], got " << shape_str(k.shape());
  LINEA_CHECK(v.ndim() == 4) << op << ": v must be [B, Tk, Hkv, Dv], got " << shape_str(v.shape());
  LINEA_CHECK(q.dtype() == DType::kF32 || q.dtype() == DType::kF64)
      << op << ": f32 or f64 only, got " << dtype_name(q.dtype());
  LINEA_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype())
      << op << ": q, k, v must share one dtype, got " << dtype_name(q.dtype()) << ", "
      << dtype_name(k.dtype()) << ", " << dtype_name(v.dtype());
  LINEA_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu())
      << op << ": CPU kernel, q, k or v not on CPU";
  const Dims d{q.dim(0), q.dim(1), k.dim(1), q.dim(2), k.dim(2), q.dim(3), v.dim(3)};
  LINEA_CHECK(k.dim(0) == d.B && k.dim(3) == d.D)
      << op << ": k " << shape_str(k.shape()) << " must be [B, Tk, Hkv, D] with q's B and D "
      << shape_str(q.shape());
  LINEA_CHECK(v.dim(0) == d.B && v.dim(1) == d.Tk && v.dim(2) == d.Hkv)
      << op << ": v " << shape_str(v.shape()) << " must be [B, Tk, Hkv, Dv] with k's B, Tk, Hkv "
      << shape_str(k.shape());
  LINEA_USER_CHECK(d.Hkv > 0 && d.Hq % d.Hkv == 0,
                   "the number of query heads must be a multiple of the number of key/value heads")
      << op << ": Hq = " << d.Hq << " query heads cannot be grouped over Hkv = " << d.Hkv
      << " kv heads";
  LINEA_USER_CHECK(mask.q_offset >= 0 && mask.q_offset + d.Tq <= d.Tk, kOffsetHint)
      << op << ": queries at positions [" << mask.q_offset << ", " << mask.q_offset + d.Tq
      << ") need keys up to position " << mask.q_offset + d.Tq - 1 << ", but k holds Tk = " << d.Tk;
  LINEA_CHECK(d.D > 0 && d.Dv > 0) << op << ": empty head dimension in q " << shape_str(q.shape())
                                   << " or v " << shape_str(v.shape());
  LINEA_CHECK(mask.window >= 0) << op << ": window " << mask.window << " must be >= 0 (0 = none)";
  // cblas takes int dimensions.
  LINEA_CHECK(d.Tk <= INT_MAX && d.D <= INT_MAX && d.Dv <= INT_MAX)
      << op << ": dimensions too large for BLAS: k " << shape_str(k.shape());
  return d;
}

void check_like(const Tensor& t, const Shape& want, DType dtype, const char* op, const char* name) {
  LINEA_CHECK(t.defined()) << op << ": " << name << " is required";
  check_operand(t, want, dtype, op, name);
}

// The keys one block of queries [i0, i1) can see, and each row's own visible span inside them.
struct KeySpan {
  int64_t lo, n;  // keys [lo, lo + n) of the block
  int64_t row_first(int64_t p, int64_t window) const {
    return (window > 0 ? std::max<int64_t>(0, p - window + 1) : 0) - lo;
  }
  int64_t row_last(int64_t p) const { return p - lo; }
};

KeySpan block_keys(int64_t i0, int64_t i1, const CausalMask& m) {
  const int64_t first = m.q_offset + i0, last = m.q_offset + i1 - 1;
  const int64_t lo = m.window > 0 ? std::max<int64_t>(0, first - m.window + 1) : 0;
  return {lo, last - lo + 1};
}

// s (a [nb, span.n] tile of scores) becomes p = exp(s - lse) on visible keys and 0 elsewhere.
// With compute_lse the row's lse is reduced here (f64, max-shifted) and written to `lse`;
// otherwise the saved lse is read from it.
template <typename T>
void scores_to_probs(T* s, int64_t nb, int64_t i0, const KeySpan& span, const CausalMask& m,
                     bool compute_lse, T* lse) {
  for (int64_t r = 0; r < nb; ++r) {
    T* row = s + r * span.n;
    const int64_t p = m.q_offset + i0 + r;
    const int64_t a = span.row_first(p, m.window), e = span.row_last(p);
    if (compute_lse) {
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = a; j <= e; ++j) mx = std::max(mx, static_cast<double>(row[j]));
      double sum = 0;
      for (int64_t j = a; j <= e; ++j) sum += std::exp(static_cast<double>(row[j]) - mx);
      lse[r] = static_cast<T>(mx + std::log(sum));
    }
    // The backward must see the same P as the forward's o was made of, so both exponentiate
    // against the lse as stored (rounded to T), not the f64 value.
    const double row_lse = static_cast<double>(lse[r]);
    std::fill(row, row + a, T(0));
    for (int64_t j = a; j <= e; ++j)
      row[j] = static_cast<T>(std::exp(static_cast<double>(row[j]) - row_lse));
    std::fill(row + e + 1, row + span.n, T(0));
  }
}

template <typename T>
void forward(const Tensor& q, const Tensor& k, const Tensor& v, T scale, const CausalMask& m,
             const Dims& d, Tensor& o, Tensor& lse) {
  const int D = static_cast<int>(d.D), Dv = static_cast<int>(d.Dv);
  std::vector<T> K(d.Tk * d.D), V(d.Tk * d.Dv);
  std::vector<T> Q(kQueryBlock * d.D), O(kQueryBlock * d.Dv), S(kQueryBlock * d.Tk);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t g = 0; g < d.Hkv; ++g) {
      // Packed once per kv head, then read by every query head of its group.
      gather(head_rows<T>(k, b, g), 0, d.Tk, d.D, K.data());
      gather(head_rows<T>(v, b, g), 0, d.Tk, d.Dv, V.data());
      for (int64_t h = g * d.group(); h < (g + 1) * d.group(); ++h) {
        const auto Qh = head_rows<T>(q, b, h), Oh = head_rows<T>(o, b, h);
        T* lse_bh = lse.data<T>() + (b * d.Hq + h) * d.Tq;
        for (int64_t i0 = 0; i0 < d.Tq; i0 += kQueryBlock) {
          const int64_t nb = std::min(kQueryBlock, d.Tq - i0);
          const KeySpan span = block_keys(i0, i0 + nb, m);
          const int n = static_cast<int>(span.n), rows = static_cast<int>(nb);
          gather(Qh, i0, nb, d.D, Q.data());
          gemm<T>(false, true, rows, n, D, scale, Q.data(), D, K.data() + span.lo * D, D, T(0),
                  S.data(), n);
          scores_to_probs(S.data(), nb, i0, span, m, true, lse_bh + i0);
          gemm<T>(false, false, rows, Dv, n, T(1), S.data(), n, V.data() + span.lo * Dv, Dv, T(0),
                  O.data(), Dv);
          scatter(O.data(), i0, nb, d.Dv, Oh);
        }
      }
    }
  }
}

template <typename T>
void backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
              const Tensor& d_o, T scale, const CausalMask& m, const Dims& d, Tensor& dq,
              Tensor& dk, Tensor& dv) {
  const int D = static_cast<int>(d.D), Dv = static_cast<int>(d.Dv);
  std::vector<T> K(d.Tk * d.D), V(d.Tk * d.Dv), dK(d.Tk * d.D), dV(d.Tk * d.Dv);
  std::vector<T> Q(kQueryBlock * d.D), O(kQueryBlock * d.Dv), dO(kQueryBlock * d.Dv);
  std::vector<T> dQ(kQueryBlock * d.D), P(kQueryBlock * d.Tk), dS(kQueryBlock * d.Tk);
  std::vector<double> delta(kQueryBlock);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t g = 0; g < d.Hkv; ++g) {
      gather(head_rows<T>(k, b, g), 0, d.Tk, d.D, K.data());
      gather(head_rows<T>(v, b, g), 0, d.Tk, d.Dv, V.data());
      // The group's query heads all add into one dK, dV before it is written out.
      std::fill(dK.begin(), dK.end(), T(0));
      std::fill(dV.begin(), dV.end(), T(0));
      for (int64_t h = g * d.group(); h < (g + 1) * d.group(); ++h) {
        const auto Qh = head_rows<T>(q, b, h), Oh = head_rows<T>(o, b, h);
        const auto dOh = head_rows<T>(d_o, b, h), dQh = head_rows<T>(dq, b, h);
        T* lse_bh = lse.data<T>() + (b * d.Hq + h) * d.Tq;
        for (int64_t i0 = 0; i0 < d.Tq; i0 += kQueryBlock) {
          const int64_t nb = std::min(kQueryBlock, d.Tq - i0);
          const KeySpan span = block_keys(i0, i0 + nb, m);
          const int n = static_cast<int>(span.n), rows = static_cast<int>(nb);
          T* Kb = K.data() + span.lo * D;
          T* Vb = V.data() + span.lo * Dv;
          gather(Qh, i0, nb, d.D, Q.data());
          gather(Oh, i0, nb, d.Dv, O.data());
          gather(dOh, i0, nb, d.Dv, dO.data());

          gemm<T>(false, true, rows, n, D, scale, Q.data(), D, Kb, D, T(0), P.data(), n);
          scores_to_probs(P.data(), nb, i0, span, m, false, lse_bh + i0);
          for (int64_t r = 0; r < nb; ++r) {
            double acc = 0;
            for (int64_t c = 0; c < d.Dv; ++c)
              acc += static_cast<double>(dO[r * Dv + c]) * static_cast<double>(O[r * Dv + c]);
            delta[r] = acc;
          }
          // dS = P * (dO V^T - delta); masked entries stay 0 because P is 0 there.
          gemm<T>(false, true, rows, n, Dv, T(1), dO.data(), Dv, Vb, Dv, T(0), dS.data(), n);
          for (int64_t r = 0; r < nb; ++r)
            for (int64_t j = 0; j < span.n; ++j) {
              const int64_t e = r * span.n + j;
              dS[e] = static_cast<T>(static_cast<double>(P[e]) *
                                     (static_cast<double>(dS[e]) - delta[r]));
            }

          gemm<T>(true, false, n, Dv, rows, T(1), P.data(), n, dO.data(), Dv, T(1),
                  dV.data() + span.lo * Dv, Dv);
          gemm<T>(false, false, rows, D, n, scale, dS.data(), n, Kb, D, T(0), dQ.data(), D);
          gemm<T>(true, false, n, D, rows, scale, dS.data(), n, Q.data(), D, T(1),
                  dK.data() + span.lo * D, D);
          scatter(dQ.data(), i0, nb, d.D, dQh);
        }
      }
      scatter(dK.data(), 0, d.Tk, d.D, head_rows<T>(dk, b, g));
      scatter(dV.data(), 0, d.Tk, d.Dv, head_rows<T>(dv, b, g));
    }
  }
}

}  // namespace

void softmax_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                               const CausalMask& mask, Tensor& o, Tensor& lse) {
  LINEA_ON_CUDA(q, softmax_attention_forward(q, k, v, scale, mask, o, lse));
  const char* op = "softmax_attention_forward";
  const Dims d = check_inputs(q, k, v, mask, op);
  check_like(o, {d.B, d.Tq, d.Hq, d.Dv}, q.dtype(), op, "o");
  check_like(lse, {d.B, d.Hq, d.Tq}, q.dtype(), op, "lse");
  cpu::dispatch_float(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    forward<T>(q, k, v, static_cast<T>(scale), mask, d, o, lse);
  });
}

void softmax_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                                const Tensor& lse, const Tensor& d_o, double scale,
                                const CausalMask& mask, Tensor& dq, Tensor& dk, Tensor& dv) {
  LINEA_ON_CUDA(q, softmax_attention_backward(q, k, v, o, lse, d_o, scale, mask, dq, dk, dv));
  const char* op = "softmax_attention_backward";
  const Dims d = check_inputs(q, k, v, mask, op);
  check_like(o, {d.B, d.Tq, d.Hq, d.Dv}, q.dtype(), op, "o");
  check_like(lse, {d.B, d.Hq, d.Tq}, q.dtype(), op, "lse");
  check_like(d_o, {d.B, d.Tq, d.Hq, d.Dv}, q.dtype(), op, "d_o");
  check_like(dq, q.shape(), q.dtype(), op, "dq");
  check_like(dk, k.shape(), q.dtype(), op, "dk");
  check_like(dv, v.shape(), q.dtype(), op, "dv");
  cpu::dispatch_float(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    backward<T>(q, k, v, o, lse, d_o, static_cast<T>(scale), mask, d, dq, dk, dv);
  });
}

}  // namespace linea::kernels
