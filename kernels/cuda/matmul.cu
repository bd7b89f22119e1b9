// CUDA gemm / linear (kernels/matmul.h) through cuBLAS: cublasGemmEx with f32 compute, so bf16
// operands accumulate in f32 and f32 operands run in full f32 (no TF32). Row-major products map
// onto column-major cuBLAS as C^T = op(B)^T op(A)^T, so no operand is ever copied.
#include <cublas_v2.h>

#include <climits>
#include <mutex>
#include <vector>

#include "kernels/cuda/blas_handle.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/matmul_shapes.h"

namespace linea::kernels::cuda {
namespace {

// cuBLAS on Hopper wants a 32 MiB workspace for its fastest kernels.
constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// One handle per device, with its workspace from the caching allocator; created on first use
// and kept for the life of the process. cublasSetStream resets the workspace to cuBLAS's own
// pool, so the stream is set (and the workspace set again) only when the stream changes.
struct BlasHandle {
  cublasHandle_t handle = nullptr;
  void* workspace = nullptr;
  cudaStream_t stream = nullptr;
};

}  // namespace

cublasHandle_t handle_on(int device, cudaStream_t stream) {
  static std::mutex mu;
  static std::vector<BlasHandle> handles;
  std::lock_guard<std::mutex> lock(mu);
  if (handles.empty()) handles.resize(::linea::cuda::device_count());
  BlasHandle& h = handles[device];
  if (!h.handle) {
    CUBLAS_CHECK(cublasCreate(&h.handle));
    h.workspace = allocator_for(Device::cuda(device))->allocate(kWorkspaceBytes);
  }
  if (h.stream != stream || !h.stream) {
    CUBLAS_CHECK(cublasSetStream(h.handle, stream));
    CUBLAS_CHECK(cublasSetWorkspace(h.handle, h.workspace, kWorkspaceBytes));
    h.stream = stream;
  }
  return h.handle;
}

namespace {

cudaDataType_t cuda_type(DType t) { return t == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF; }

int blas_int(int64_t v, const char* op, const char* what) {
  LINEA_CHECK(v >= 0 && v <= INT_MAX)
      << op << ": " << what << " = " << v << " does not fit cuBLAS's int";
  return static_cast<int>(v);
}

// C[m, n] = alpha op(A) op(B) + beta C, row-major with leading dimensions lda, ldb, ldc. C is
// the whole tensor c (ldc = n), which lets K = 0 fall back to a scale of c.
void gemm_rows(const OnDevice& dev, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
               const Tensor& a, int64_t lda, const Tensor& b, int64_t ldb, double beta, Tensor& c,
               const char* op) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // beta == 0 overwrites, as BLAS does, so garbage in an `=` output cannot leak through.
    if (beta == 0.0) {
      c.zero_();
    } else {
      scale(c, beta);
    }
    return;
  }
  cublasHandle_t h = handle_on(dev.index, dev.stream);
  const float alpha_f = static_cast<float>(alpha), beta_f = static_cast<float>(beta);
  CUBLAS_CHECK(cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                            blas_int(n, op, "N"), blas_int(m, op, "M"), blas_int(k, op, "K"),
                            &alpha_f, b.raw(), cuda_type(b.dtype()), blas_int(ldb, op, "ldb"),
                            a.raw(), cuda_type(a.dtype()), blas_int(lda, op, "lda"), &beta_f,
                            c.raw(), cuda_type(c.dtype()), blas_int(n, op, "ldc"),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// An output of a product whose operands are `ref`: on its device, in its dtype or in f32.
void check_output(const Tensor& t, const Tensor& ref, const char* op, const char* name,
                  const char* ref_name) {
  check_float(t, op, name);
  check_same_device(t, ref, op, name, ref_name);
  LINEA_CHECK(t.dtype() == ref.dtype() || t.dtype() == DType::kF32)
      << op << ": " << name << " " << describe(t) << " must be " << dtype_name(ref.dtype())
      << " like " << ref_name << ", or f32";
}

struct LinearSizes {
  int64_t out, in, n;
};

LinearSizes check_linear_weight(const Tensor& x, const Tensor& w, const char* op) {
  check_float(x, op, "x");
  check_like(w, x, op, "w", "x");
  LINEA_CHECK(w.ndim() == 2) << op << ": w " << describe(w) << " must be [out, in]";
  const int64_t out = w.dim(0), in = w.dim(1);
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) == in)
      << op << ": x " << shape_str(x.shape()) << " must end in in = " << in << " (w "
      << shape_str(w.shape()) << ")";
  return {out, in, rows_of(x)};
}

}  // namespace

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, double alpha,
          double beta) {
  const char* op = "gemm";
  check_float(a, op, "a");
  check_like(b, a, op, "b", "a");
  check_output(c, a, op, "c", "a");
  const GemmSizes s = check_gemm_shapes(a, trans_a, b, trans_b, c, op);
  const int64_t m = s.m, n = s.n, k = s.k;
  OnDevice dev(a);
  gemm_rows(dev, trans_a, trans_b, m, n, k, alpha, a, a.dim(1), b, b.dim(1), beta, c, op);
}

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y) {
  const char* op = "linear_forward";
  const auto [out, in, n] = check_linear_weight(x, w, op);
  check_output(y, x, op, "y", "x");
  check_linear_operand(y, out, n, op, "y", "out");
  OnDevice dev(x);
  gemm_rows(dev, false, true, n, out, in, 1.0, x, in, w, in, 0.0, y, op);
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx, Tensor& dw) {
  const char* op = "linear_backward";
  const auto [out, in, n] = check_linear_weight(x, w, op);
  check_like(dy, x, op, "dy", "x");
  check_linear_operand(dy, out, n, op, "dy", "out");
  check_output(dw, w, op, "dw", "w");
  LINEA_CHECK(dw.shape() == w.shape()) << op << ": dw " << shape_str(dw.shape())
                                       << " must have the shape of w " << shape_str(w.shape());
  if (dx.defined()) {
    check_output(dx, x, op, "dx", "x");
    check_linear_operand(dx, in, n, op, "dx", "in");
  }
  OnDevice dev(x);
  if (dx.defined()) gemm_rows(dev, false, false, n, in, out, 1.0, dy, out, w, in, 0.0, dx, op);
  gemm_rows(dev, true, false, out, in, n, 1.0, dy, out, x, in, 1.0, dw, op);
}

}  // namespace linea::kernels::cuda
