// Internal to kernels/cpu: the one BLAS entry the CPU kernels share, typed on the element type.
#pragma once

#include <cblas.h>

#include <type_traits>

namespace linea::kernels::cpu {

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

}  // namespace linea::kernels::cpu
