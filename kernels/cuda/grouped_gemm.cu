// CUDA grouped linear products (kernels/grouped_gemm.h). Every group is one column-major cuBLAS
// problem (row-major C = A B^T maps onto C^T = B A^T, as in matmul.cu): y and dx of all
// non-empty groups go to one cublasGemmGroupedBatchedEx call per 128 groups, each group a
// group of size 1 (the row counts differ); the weight gradients, f32 from bf16 operands, one
// cublasGemmEx per group and part. The grouped call reads its A/B/C pointer arrays from device
// memory: a one-block kernel writes them there from its parameters, so no host copy waits.
#include <cublas_v2.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cuda/blas_handle.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/grouped_gemm_shapes.h"

namespace linea::kernels::cuda {
namespace {

// 3 pointers a group, 128 groups: 3 KiB of kernel parameters (the limit is 4 KiB).
constexpr int kMaxGroups = 128;

struct PointerBatch {
  const void* p[3 * kMaxGroups];
};

__global__ void write_pointers_kernel(PointerBatch b, int n, const void** out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = b.p[i];
}

// One column-major problem: C[m, n] = op(A) op(B) + beta C.
struct Problem {
  cublasOperation_t ta, tb;
  int m, n, k;
  const void* a;
  int lda;
  const void* b;
  int ldb;
  void* c;
  int ldc;
  float beta;
};

cudaDataType_t cuda_type(DType t) { return t == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF; }

int blas_int(int64_t v, const char* op, const char* what) {
  LINEA_CHECK(v >= 0 && v <= INT_MAX)
      << op << ": " << what << " = " << v << " does not fit cuBLAS's int";
  return static_cast<int>(v);
}

bool loop_mode() {
  const char* v = std::getenv("LINEA_GROUPED_GEMM");
  return v && std::strcmp(v, "loop") == 0;
}

void run_loop(cublasHandle_t h, const Problem* ps, size_t n, cudaDataType_t ab, cudaDataType_t c) {
  const float one = 1.0f;
  for (size_t i = 0; i < n; ++i) {
    const Problem& p = ps[i];
    CUBLAS_CHECK(cublasGemmEx(h, p.ta, p.tb, p.m, p.n, p.k, &one, p.a, ab, p.lda, p.b, ab, p.ldb,
                              &p.beta, p.c, c, p.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

// The problems as grouped calls of at most kMaxGroups; where cuBLAS does not support the types
// (CUBLAS_STATUS_NOT_SUPPORTED), the same problems one by one.
void run_grouped(const OnDevice& dev, cublasHandle_t h, const std::vector<Problem>& ps,
                 cudaDataType_t ab, cudaDataType_t c) {
  for (size_t first = 0; first < ps.size(); first += kMaxGroups) {
    const int g = static_cast<int>(std::min<size_t>(kMaxGroups, ps.size() - first));
    const Problem* chunk = ps.data() + first;
    PointerBatch batch;
    std::vector<cublasOperation_t> ta(g), tb(g);
    std::vector<int> m(g), n(g), k(g), lda(g), ldb(g), ldc(g), size(g, 1);
    std::vector<float> alpha(g, 1.0f), beta(g);
    for (int i = 0; i < g; ++i) {
      const Problem& p = chunk[i];
      batch.p[i] = p.a;
      batch.p[g + i] = p.b;
      batch.p[2 * g + i] = p.c;
      ta[i] = p.ta;
      tb[i] = p.tb;
      m[i] = p.m;
      n[i] = p.n;
      k[i] = p.k;
      lda[i] = p.lda;
      ldb[i] = p.ldb;
      ldc[i] = p.ldc;
      beta[i] = p.beta;
    }
    Tensor pointers = Tensor::empty({3 * g}, DType::kI64, Device::cuda(dev.index));
    const void** dp = static_cast<const void**>(pointers.raw());
    write_pointers_kernel<<<(3 * g + 127) / 128, 128, 0, dev.stream>>>(batch, 3 * g, dp);
    CUDA_CHECK_LAUNCH();
    const cublasStatus_t st = cublasGemmGroupedBatchedEx(
        h, ta.data(), tb.data(), m.data(), n.data(), k.data(), alpha.data(), dp, ab, lda.data(),
        dp + g, ab, ldb.data(), beta.data(), const_cast<void* const*>(dp + 2 * g), c, ldc.data(), g,
        size.data(), CUBLAS_COMPUTE_32F);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
      run_loop(h, chunk, g, ab, c);
    } else {
      CUBLAS_CHECK(st);
    }
    // `pointers` goes back to the caching allocator, ordered by the stream after the call.
  }
}

void run(const OnDevice& dev, const std::vector<Problem>& ps, DType ab, DType c, bool grouped) {
  if (ps.empty()) return;
  cublasHandle_t h = handle_on(dev.index, dev.stream);
  if (grouped && !loop_mode())
    run_grouped(dev, h, ps, cuda_type(ab), cuda_type(c));
  else
    run_loop(h, ps.data(), ps.size(), cuda_type(ab), cuda_type(c));
}

const char* bytes_at(const Tensor& t, int64_t elements) {
  return static_cast<const char*>(t.raw()) + elements * static_cast<int64_t>(dtype_size(t.dtype()));
}

}  // namespace

void grouped_linear_forward(const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts,
                            Tensor& y) {
  const char* op = "grouped_linear_forward";
  check_float(x, op, "x");
  check_like(w, x, op, "w", "x");
  check_like(y, x, op, "y", "x");
  const GroupedSizes s = check_grouped_shapes(x, w, counts, op);
  check_grouped_rows(y, s.rows, s.out, op, "y");
  if (s.rows == 0 || s.out == 0) return;
  if (s.in == 0) {
    y.zero_();
    return;
  }
  OnDevice dev(x);
  const int out = blas_int(s.out, op, "out"), in = blas_int(s.in, op, "in");
  std::vector<Problem> ps;
  for (int64_t e = 0; e < s.groups; ++e) {
    if (counts[e] == 0) continue;
    ps.push_back({CUBLAS_OP_T, CUBLAS_OP_N, out, blas_int(counts[e], op, "rows"), in,
                  bytes_at(w, e * s.out * s.in), in, bytes_at(x, s.first[e] * s.in), in,
                  const_cast<char*>(bytes_at(y, s.first[e] * s.out)), out, 0.0f});
  }
  run(dev, ps, x.dtype(), y.dtype(), /*grouped=*/true);
}

void grouped_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy,
                             const std::vector<int64_t>& counts, Tensor& dx,
                             const std::vector<Tensor>& dw) {
  const char* op = "grouped_linear_backward";
  check_float(x, op, "x");
  check_like(w, x, op, "w", "x");
  check_like(dy, x, op, "dy", "x");
  const GroupedSizes s = check_grouped_shapes(x, w, counts, op);
  check_grouped_rows(dy, s.rows, s.out, op, "dy");
  if (dx.defined()) {
    check_like(dx, x, op, "dx", "x");
    check_grouped_rows(dx, s.rows, s.in, op, "dx");
  }
  const int64_t parts = check_grouped_dw(dw, s, op);
  for (const Tensor& t : dw) {
    check_float(t, op, "dw");
    check_same_device(t, x, op, "dw", "x");
    LINEA_CHECK(t.dtype() == x.dtype() || t.dtype() == DType::kF32)
        << op << ": dw " << describe(t) << " must be f32 or " << dtype_name(x.dtype());
    LINEA_CHECK(t.dtype() == dw[0].dtype()) << op << ": every dw part needs one dtype";
  }
  if (s.rows == 0 || s.in == 0) return;
  OnDevice dev(x);
  if (s.out == 0) {
    if (dx.defined()) dx.zero_();
    return;
  }
  const int out = blas_int(s.out, op, "out"), in = blas_int(s.in, op, "in");
  if (dx.defined()) {
    std::vector<Problem> ps;
    for (int64_t e = 0; e < s.groups; ++e) {
      if (counts[e] == 0) continue;
      ps.push_back({CUBLAS_OP_N, CUBLAS_OP_N, in, blas_int(counts[e], op, "rows"), out,
                    bytes_at(w, e * s.out * s.in), in, bytes_at(dy, s.first[e] * s.out), out,
                    const_cast<char*>(bytes_at(dx, s.first[e] * s.in)), in, 0.0f});
    }
    run(dev, ps, x.dtype(), dx.dtype(), /*grouped=*/true);
  }
  if (parts == 0) return;
  const int64_t o = s.out / parts;
  std::vector<Problem> ps;
  for (int64_t e = 0; e < s.groups; ++e) {
    if (counts[e] == 0) continue;
    for (int64_t p = 0; p < parts; ++p) {
      const Tensor& g = dw[e * parts + p];
      ps.push_back({CUBLAS_OP_N, CUBLAS_OP_T, in, blas_int(o, op, "out / parts"),
                    blas_int(counts[e], op, "rows"), bytes_at(x, s.first[e] * s.in), in,
                    bytes_at(dy, s.first[e] * s.out + p * o), out, g.raw(), in, 1.0f});
    }
  }
  run(dev, ps, x.dtype(), dw[0].dtype(), /*grouped=*/false);
}

}  // namespace linea::kernels::cuda
