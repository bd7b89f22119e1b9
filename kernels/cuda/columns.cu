// CUDA biases and column blocks (kernels/columns.h): grid-stride element loops in f32 arithmetic;
// bias_backward's row sums through column_sum.cuh (f64 partials in a fixed order, f32 db).
#include "kernels/cuda/column_sum.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

template <typename T, typename TB>
__global__ void add_bias_kernel(T* y, const TB* b, int64_t n, int C) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride)
    y[i] = from_float<T>(to_float(y[i]) + to_float(b[i % C]));
}

// The block [B, R, w] at (row0, c0) of whole [B, T, W]: part = whole (gather) or whole += part.
template <typename T, bool kAdd>
__global__ void column_block_kernel(T* whole, T* part, int64_t B, int64_t T_, int64_t W,
                                    int64_t row0, int64_t c0, int64_t w) {
  const int64_t R = T_ - row0, n = B * R * w, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t c = i % w, br = i / w, r = br % R, b = br / R;
    T* x = whole + (b * T_ + row0 + r) * W + c0 + c;
    if constexpr (kAdd) {
      *x = from_float<T>(to_float(*x) + to_float(part[i]));
    } else {
      part[i] = *x;
    }
  }
}

void check_block(const Tensor& whole, int64_t row0, int64_t c0, const Tensor& part, const char* op,
                 const char* whole_name, const char* part_name) {
  check_float(whole, op, whole_name);
  check_like(part, whole, op, part_name, whole_name);
  LINEA_CHECK(whole.ndim() == 3 && part.ndim() == 3 && part.dim(0) == whole.dim(0) && row0 >= 0 &&
              part.dim(1) == whole.dim(1) - row0 && c0 >= 0 && c0 + part.dim(2) <= whole.dim(2))
      << op << ": " << part_name << " " << describe(part) << " at row " << row0 << ", column " << c0
      << " of " << describe(whole) << " (needs [B, T - row0, w] with c0 + w <= W)";
}

void check_bias(const Tensor& y, const Tensor& b, const char* op, const char* name) {
  LINEA_CHECK(y.ndim() >= 1 && b.ndim() == 1 && b.dim(0) == y.dim(-1))
      << op << ": " << name << " " << describe(b) << " must be [C] for " << describe(y)
      << " (C its last dimension)";
}

template <bool kAdd>
void column_block(const Tensor& whole, int64_t row0, int64_t c0, const Tensor& part) {
  const int64_t n = part.numel();
  if (n == 0) return;
  OnDevice dev(whole);
  dispatch(whole.dtype(), [&](auto tag) {
    using T = decltype(tag);
    column_block_kernel<T, kAdd><<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(whole), ptr<T>(part), whole.dim(0), whole.dim(1), whole.dim(2), row0, c0,
        part.dim(2));
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void add_bias(Tensor& y, const Tensor& b) {
  const char* op = "add_bias";
  check_float(y, op, "y");
  check_float(b, op, "b");
  check_same_device(b, y, op, "b", "y");
  LINEA_CHECK(b.dtype() == y.dtype() || b.dtype() == DType::kF32)
      << op << ": b " << describe(b) << " must be f32 or the dtype of y " << describe(y);
  check_bias(y, b, op, "b");
  const int64_t n = y.numel(), C = b.dim(0);
  if (n == 0) return;
  OnDevice dev(y);
  dispatch(y.dtype(), [&](auto ty) {
    using T = decltype(ty);
    dispatch(b.dtype(), [&](auto tb) {
      using TB = decltype(tb);
      add_bias_kernel<T, TB><<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(
          ptr<T>(y), ptr<TB>(b), n, static_cast<int>(C));
    });
  });
  CUDA_CHECK_LAUNCH();
}

void bias_backward(const Tensor& dy, Tensor& db) {
  const char* op = "bias_backward";
  check_float(dy, op, "dy");
  check_dtype(db, DType::kF32, op, "db");
  check_same_device(db, dy, op, "db", "dy");
  check_bias(dy, db, op, "db");
  const int64_t C = db.dim(0);
  if (C == 0) return;
  OnDevice dev(dy);
  dispatch(dy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    column_sums<T>(ptr<T>(dy), 1, dy.numel() / C, static_cast<int>(C), db.data<float>(), true, dev);
  });
}

void gather_columns(const Tensor& t, int64_t row0, int64_t c0, Tensor& out) {
  check_block(t, row0, c0, out, "gather_columns", "t", "out");
  column_block<false>(t, row0, c0, out);
}

void scatter_add_columns(Tensor& dst, int64_t row0, int64_t c0, const Tensor& src) {
  check_block(dst, row0, c0, src, "scatter_add_columns", "dst", "src");
  column_block<true>(dst, row0, c0, src);
}

}  // namespace linea::kernels::cuda
