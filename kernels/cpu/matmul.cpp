#include "kernels/matmul.h"

#include <climits>
#include <cstdint>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/matmul_shapes.h"

namespace linea::kernels {
namespace {

using cpu::check_float;
using cpu::check_like;
using cpu::describe;

int blas_int(int64_t v, const char* op, const char* what) {
  LINEA_CHECK(v >= 0 && v <= INT_MAX)
      << op << ": " << what << " = " << v << " does not fit the BLAS integer type";
  return static_cast<int>(v);
}

// C[m, n] = alpha * op(A) op(B) + beta * C with row-major leading dimensions. Empty products
// stay out of BLAS, which rejects a leading dimension of 0; K = 0 must still apply beta (a
// weight-gradient `+=` over zero rows is a no-op, an `=` output becomes zeros).
template <typename T>
void gemm_rows(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, double beta, T* c, int64_t ldc,
               const char* op) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) {
      T* row = c + i * ldc;
      // beta == 0 overwrites, as BLAS does, so NaN garbage in an `=` output cannot leak through.
      for (int64_t j = 0; j < n; ++j) row[j] = beta == 0.0 ? T(0) : static_cast<T>(beta * row[j]);
    }
    return;
  }
  cpu::gemm<T>(ta, tb, blas_int(m, op, "M"), blas_int(n, op, "N"), blas_int(k, op, "K"),
               static_cast<T>(alpha), a, blas_int(lda, op, "lda"), b, blas_int(ldb, op, "ldb"),
               static_cast<T>(beta), c, blas_int(ldc, op, "ldc"));
}

// y = x w^T with x [..., in], w [out, in]: the sizes, x's leading dimensions as n rows.
struct LinearSizes {
  int64_t out, in, n;
};

LinearSizes check_linear_weight(const Tensor& x, const Tensor& w, const char* op) {
  LINEA_CHECK(w.ndim() == 2) << op << ": w " << describe(w) << " must be [out, in]";
  const int64_t out = w.dim(0), in = w.dim(1);
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) == in)
      << op << ": x " << shape_str(x.shape()) << " must end in in = " << in << " (w "
      << shape_str(w.shape()) << ")";
  const int64_t n = rows_of(x);
  return {out, in, n};
}

}  // namespace

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, double alpha,
          double beta) {
  LINEA_ON_CUDA(a, gemm(a, trans_a, b, trans_b, c, alpha, beta));
  const char* op = "gemm";
  check_float(a, op, "a");
  check_like(b, a, op, "b", "a");
  check_like(c, a, op, "c", "a");
  const GemmSizes s = check_gemm_shapes(a, trans_a, b, trans_b, c, op);
  const int64_t m = s.m, n = s.n, k = s.k;
  cpu::dispatch_float(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    gemm_rows<T>(trans_a, trans_b, m, n, k, alpha, a.data<T>(), a.dim(1), b.data<T>(), b.dim(1),
                 beta, c.data<T>(), c.dim(1), op);
  });
}

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y) {
  LINEA_ON_CUDA(x, linear_forward(x, w, y));
  const char* op = "linear_forward";
  check_float(x, op, "x");
  check_like(w, x, op, "w", "x");
  check_like(y, x, op, "y", "x");
  const auto [out, in, n] = check_linear_weight(x, w, op);
  check_linear_operand(y, out, n, op, "y", "out");
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    gemm_rows<T>(false, true, n, out, in, 1.0, x.data<T>(), in, w.data<T>(), in, 0.0, y.data<T>(),
                 out, op);
  });
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx, Tensor& dw) {
  LINEA_ON_CUDA(x, linear_backward(x, w, dy, dx, dw));
  const char* op = "linear_backward";
  check_float(x, op, "x");
  check_like(w, x, op, "w", "x");
  check_like(dy, x, op, "dy", "x");
  cpu::check_same_shape(dw, w, op, "dw", "w");
  const auto [out, in, n] = check_linear_weight(x, w, op);
  check_linear_operand(dy, out, n, op, "dy", "out");
  if (dx.defined()) {
    check_like(dx, x, op, "dx", "x");
    check_linear_operand(dx, in, n, op, "dx", "in");
  }
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (dx.defined()) {
      gemm_rows<T>(false, false, n, in, out, 1.0, dy.data<T>(), out, w.data<T>(), in, 0.0,
                   dx.data<T>(), in, op);
    }
    gemm_rows<T>(true, false, out, in, n, 1.0, dy.data<T>(), out, x.data<T>(), in, 1.0,
                 dw.data<T>(), in, op);
  });
}

}  // namespace linea::kernels
