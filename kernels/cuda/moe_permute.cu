// CUDA MoE row movement (kernels/moe_permute.h). One block per output row (token, row or copy);
// its threads walk the D columns. Every reduction has a fixed order (the k copies of a token in j
// order, one block sum per dot product), so the results do not depend on scheduling; the
// scatter-add of the permutation's backward goes through the inverse map copy_row instead of
// atomics. f32 arithmetic, f32 weights. The rows of one side may be bf16 and the other f32
// (the MoE layer's bf16 expert rows from and to f32 tokens; kernels/moe_permute.h).
#include <climits>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

constexpr int kBlock = 128;

// Rows beyond the grid's 2^31 - 1 blocks are walked with a stride.
inline int row_grid(int64_t rows) {
  return static_cast<int>(rows < INT_MAX ? (rows < 1 ? 1 : rows) : INT_MAX);
}

// Tin, Tout: the dtypes of the rows read and written (f32 <-> bf16 conversions on the way).
template <typename Tin, typename Tout>
__global__ void permute_kernel(const Tin* x, const int32_t* row_copy, int64_t R, int64_t D, int k,
                               Tout* rows) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const Tin* src = x + static_cast<int64_t>(row_copy[r] / k) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      if constexpr (std::is_same_v<Tin, Tout>)
        rows[r * D + d] = src[d];
      else
        rows[r * D + d] = from_float<Tout>(to_float(src[d]));
    }
  }
}

template <typename Tin, typename T>
__global__ void permute_backward_kernel(const Tin* drows, const int32_t* copy_row, int64_t N,
                                        int64_t D, int k, T* dx) {
  for (int64_t t = blockIdx.x; t < N; t += gridDim.x) {
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      float acc = to_float(dx[t * D + d]);
      for (int j = 0; j < k; ++j) {
        const int32_t r = copy_row[t * k + j];
        if (r >= 0) acc += to_float(drows[static_cast<int64_t>(r) * D + d]);
      }
      dx[t * D + d] = from_float<T>(acc);
    }
  }
}

template <typename T, typename Tout>
__global__ void combine_kernel(const T* rows, const int32_t* copy_row, const float* weight,
                               int64_t N, int64_t D, int k, Tout* out) {
  for (int64_t t = blockIdx.x; t < N; t += gridDim.x) {
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      float acc = 0.0f;
      for (int j = 0; j < k; ++j) {
        const int32_t r = copy_row[t * k + j];
        if (r >= 0) acc += weight[t * k + j] * to_float(rows[static_cast<int64_t>(r) * D + d]);
      }
      out[t * D + d] = from_float<Tout>(acc);
    }
  }
}

// dy in Ty; rows and drows in T.
template <typename Ty, typename T>
__global__ void combine_backward_kernel(const Ty* dy, const T* rows, const int32_t* copy_row,
                                        const float* weight, int64_t copies, int64_t D, int k,
                                        T* drows, float* dweight) {
  __shared__ float scratch[32];
  for (int64_t c = blockIdx.x; c < copies; c += gridDim.x) {
    const int32_t r = copy_row[c];
    if (r < 0) {  // the same branch for the whole block
      if (threadIdx.x == 0) dweight[c] = 0.0f;
      continue;
    }
    const Ty* g = dy + (c / k) * D;
    const T* in = rows + static_cast<int64_t>(r) * D;
    T* dr = drows + static_cast<int64_t>(r) * D;
    const float w = weight[c];
    float acc = 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const float gd = to_float(g[d]);
      acc += gd * to_float(in[d]);
      dr[d] = from_float<T>(w * gd);
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) dweight[c] = acc;
  }
}

__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

template <typename T>
__global__ void gate_add_kernel(const T* logit, const T* s, int64_t N, int64_t D, float* gate,
                                T* y) {
  for (int64_t t = blockIdx.x; t < N; t += gridDim.x) {
    const float g = sigmoid(to_float(logit[t]));
    if (threadIdx.x == 0) gate[t] = g;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
      y[t * D + d] = from_float<T>(to_float(y[t * D + d]) + g * to_float(s[t * D + d]));
  }
}

template <typename T>
__global__ void gate_backward_kernel(const T* dy, const T* s, const float* gate, int64_t N,
                                     int64_t D, T* ds, T* dlogit) {
  __shared__ float scratch[32];
  for (int64_t t = blockIdx.x; t < N; t += gridDim.x) {
    const float g = gate[t];
    float acc = 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const float gd = to_float(dy[t * D + d]);
      acc += gd * to_float(s[t * D + d]);
      ds[t * D + d] = from_float<T>(g * gd);
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) dlogit[t] = from_float<T>(acc * g * (1.0f - g));
  }
}

// Row j of `out` is row src_row(j) of `in`, moved in words of W bytes.
template <typename W, bool kScatter>
__global__ void byte_rows_kernel(const W* in, const int64_t* index, int64_t n, int64_t words,
                                 W* out) {
  for (int64_t j = blockIdx.x; j < n; j += gridDim.x) {
    const int64_t src = kScatter ? j : index[j], dst = kScatter ? index[j] : j;
    for (int64_t w = threadIdx.x; w < words; w += blockDim.x)
      out[dst * words + w] = in[src * words + w];
  }
}

void check_index(const Tensor& t, DType dt, const Tensor& data, const char* op, const char* name) {
  check_dtype(t, dt, op, name);
  check_same_device(t, data, op, name, "the data");
  LINEA_CHECK(t.ndim() == 1) << op << ": " << name << " " << describe(t) << " must be 1-D";
}

void check_rows(const Tensor& t, int64_t rows, int64_t D, const char* op, const char* name) {
  LINEA_CHECK(t.ndim() == 2 && t.dim(0) == rows && t.dim(1) == D)
      << op << ": " << name << " " << shape_str(t.shape()) << ", expected [" << rows << ", " << D
      << "]";
}

int64_t tokens_of(const Tensor& copy_row, int64_t top_k, const char* op) {
  LINEA_CHECK(top_k >= 1 && top_k <= INT_MAX && copy_row.numel() % top_k == 0)
      << op << ": " << copy_row.numel() << " copies for top_k " << top_k;
  return copy_row.numel() / top_k;
}

void check_weight(const Tensor& w, const Tensor& data, int64_t copies, const char* op,
                  const char* name) {
  check_dtype(w, DType::kF32, op, name);
  check_same_device(w, data, op, name, "the data");
  LINEA_CHECK(w.numel() == copies)
      << op << ": " << name << " " << describe(w) << " for " << copies << " copies";
}

void byte_rows(const Tensor& in, const Tensor& index, Tensor& out, bool scatter, const char* op) {
  LINEA_CHECK(in.defined() && out.defined() && in.ndim() >= 1 && out.ndim() >= 1)
      << op << ": rows are undefined or 0-D";
  check_cuda(in, op, "in");
  check_same_device(out, in, op, "out", "in");
  check_index(index, DType::kI64, in, op, "index");
  Shape a = in.shape(), b = out.shape();
  a[0] = b[0] = 0;
  LINEA_CHECK(a == b && in.dtype() == out.dtype())
      << op << ": in " << describe(in) << " and out " << describe(out)
      << " must have one row shape and dtype";
  LINEA_CHECK((scatter ? in.dim(0) : out.dim(0)) == index.numel())
      << op << ": " << index.numel() << " indices for " << (scatter ? "in " : "out ")
      << describe(scatter ? in : out);
  const int64_t n = index.numel();
  const int64_t rb = in.dim(0) ? static_cast<int64_t>(in.nbytes()) / in.dim(0) : 0;
  if (n == 0 || rb == 0) return;
  OnDevice dev(in);
  const bool a16 = rb % 16 == 0 && aligned16(in.raw()) && aligned16(out.raw());
  const bool a4 = rb % 4 == 0 && reinterpret_cast<uintptr_t>(in.raw()) % 4 == 0 &&
                  reinterpret_cast<uintptr_t>(out.raw()) % 4 == 0;
  const int grid = row_grid(n);
  const int64_t* ix = index.data<int64_t>();
  auto launch = [&](auto word) {
    using W = decltype(word);
    const auto* src = static_cast<const W*>(in.raw());
    auto* dst = static_cast<W*>(out.raw());
    const int64_t words = rb / static_cast<int64_t>(sizeof(W));
    if (scatter)
      byte_rows_kernel<W, true><<<grid, kBlock, 0, dev.stream>>>(src, ix, n, words, dst);
    else
      byte_rows_kernel<W, false><<<grid, kBlock, 0, dev.stream>>>(src, ix, n, words, dst);
  };
  if (a16)
    launch(uint4{});
  else if (a4)
    launch(uint32_t{});
  else
    launch(uint8_t{});
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void moe_permute(const Tensor& x, const Tensor& row_copy, int64_t top_k, Tensor& rows) {
  const char* op = "moe_permute";
  check_float(x, op, "x");
  check_float(rows, op, "rows");
  check_same_device(rows, x, op, "rows", "x");
  check_index(row_copy, DType::kI32, x, op, "row_copy");
  LINEA_CHECK(top_k >= 1 && top_k <= INT_MAX) << op << ": top_k " << top_k;
  const int64_t D = x.dim(-1), R = row_copy.numel();
  check_rows(rows, R, D, op, "rows");
  if (R == 0 || D == 0) return;
  OnDevice dev(x);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    dispatch(rows.dtype(), [&](auto out_tag) {
      using U = decltype(out_tag);
      permute_kernel<T, U><<<row_grid(R), kBlock, 0, dev.stream>>>(
          ptr<T>(x), row_copy.data<int32_t>(), R, D, static_cast<int>(top_k), ptr<U>(rows));
    });
  });
  CUDA_CHECK_LAUNCH();
}

void moe_permute_backward(const Tensor& drows, const Tensor& copy_row, int64_t top_k, Tensor& dx) {
  const char* op = "moe_permute_backward";
  check_float(drows, op, "drows");
  check_float(dx, op, "dx");
  check_same_device(dx, drows, op, "dx", "drows");
  check_index(copy_row, DType::kI32, drows, op, "copy_row");
  const int64_t N = tokens_of(copy_row, top_k, op), D = drows.dim(-1);
  check_rows(dx, N, D, op, "dx");
  if (N == 0 || D == 0) return;
  OnDevice dev(drows);
  dispatch(dx.dtype(), [&](auto tag) {
    using T = decltype(tag);
    dispatch(drows.dtype(), [&](auto in_tag) {
      using U = decltype(in_tag);
      permute_backward_kernel<U, T><<<row_grid(N), kBlock, 0, dev.stream>>>(
          ptr<U>(drows), copy_row.data<int32_t>(), N, D, static_cast<int>(top_k), ptr<T>(dx));
    });
  });
  CUDA_CHECK_LAUNCH();
}

void moe_unpermute_combine(const Tensor& rows, const Tensor& copy_row, const Tensor& weight,
                           int64_t top_k, Tensor& out) {
  const char* op = "moe_unpermute_combine";
  check_float(rows, op, "rows");
  check_float(out, op, "out");
  check_same_device(out, rows, op, "out", "rows");
  check_index(copy_row, DType::kI32, rows, op, "copy_row");
  const int64_t N = tokens_of(copy_row, top_k, op), D = rows.dim(-1);
  check_weight(weight, rows, N * top_k, op, "weight");
  check_rows(out, N, D, op, "out");
  if (N == 0 || D == 0) return;
  OnDevice dev(rows);
  dispatch(rows.dtype(), [&](auto tag) {
    using T = decltype(tag);
    dispatch(out.dtype(), [&](auto out_tag) {
      using U = decltype(out_tag);
      combine_kernel<T, U><<<row_grid(N), kBlock, 0, dev.stream>>>(
          ptr<T>(rows), copy_row.data<int32_t>(), weight.data<float>(), N, D,
          static_cast<int>(top_k), ptr<U>(out));
    });
  });
  CUDA_CHECK_LAUNCH();
}

void moe_unpermute_combine_backward(const Tensor& dy, const Tensor& rows, const Tensor& copy_row,
                                    const Tensor& weight, int64_t top_k, Tensor& drows,
                                    Tensor& dweight) {
  const char* op = "moe_unpermute_combine_backward";
  check_float(dy, op, "dy");
  check_float(rows, op, "rows");
  check_same_device(rows, dy, op, "rows", "dy");
  check_like(drows, rows, op, "drows", "rows");
  check_index(copy_row, DType::kI32, dy, op, "copy_row");
  const int64_t N = tokens_of(copy_row, top_k, op), D = dy.dim(-1), R = rows.dim(0);
  check_weight(weight, dy, N * top_k, op, "weight");
  check_weight(dweight, dy, N * top_k, op, "dweight");
  check_rows(dy, N, D, op, "dy");
  check_rows(rows, R, D, op, "rows");
  check_rows(drows, R, D, op, "drows");
  if (N == 0) return;
  OnDevice dev(dy);
  dispatch(dy.dtype(), [&](auto tag) {
    using Ty = decltype(tag);
    dispatch(rows.dtype(), [&](auto rows_tag) {
      using T = decltype(rows_tag);
      combine_backward_kernel<Ty, T><<<row_grid(N * top_k), kBlock, 0, dev.stream>>>(
          ptr<Ty>(dy), ptr<T>(rows), copy_row.data<int32_t>(), weight.data<float>(), N * top_k, D,
          static_cast<int>(top_k), ptr<T>(drows), dweight.data<float>());
    });
  });
  CUDA_CHECK_LAUNCH();
}

void moe_gate_add(const Tensor& logit, const Tensor& s, Tensor& gate, Tensor& y) {
  const char* op = "moe_gate_add";
  check_float(s, op, "s");
  check_same_shape(y, s, op, "y", "s");
  check_like(logit, s, op, "logit", "s");
  check_dtype(gate, DType::kF32, op, "gate");
  check_same_device(gate, s, op, "gate", "s");
  const int64_t N = s.dim(0), D = s.dim(-1);
  LINEA_CHECK(s.ndim() == 2 && logit.numel() == N && gate.numel() == N)
      << op << ": s " << describe(s) << ", logit " << describe(logit) << ", gate " << describe(gate)
      << " (one logit and gate per row of s)";
  if (N == 0) return;
  OnDevice dev(s);
  dispatch(s.dtype(), [&](auto tag) {
    using T = decltype(tag);
    gate_add_kernel<T><<<row_grid(N), kBlock, 0, dev.stream>>>(ptr<T>(logit), ptr<T>(s), N, D,
                                                               gate.data<float>(), ptr<T>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void moe_gate_backward(const Tensor& dy, const Tensor& s, const Tensor& gate, Tensor& ds,
                       Tensor& dlogit) {
  const char* op = "moe_gate_backward";
  check_float(dy, op, "dy");
  check_same_shape(s, dy, op, "s", "dy");
  check_same_shape(ds, dy, op, "ds", "dy");
  check_like(dlogit, dy, op, "dlogit", "dy");
  check_dtype(gate, DType::kF32, op, "gate");
  check_same_device(gate, dy, op, "gate", "dy");
  const int64_t N = dy.dim(0), D = dy.dim(-1);
  LINEA_CHECK(dy.ndim() == 2 && dlogit.numel() == N && gate.numel() == N)
      << op << ": dy " << describe(dy) << ", dlogit " << describe(dlogit) << ", gate "
      << describe(gate) << " (one logit and gate per row of dy)";
  if (N == 0) return;
  OnDevice dev(dy);
  dispatch(dy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    gate_backward_kernel<T><<<row_grid(N), kBlock, 0, dev.stream>>>(
        ptr<T>(dy), ptr<T>(s), gate.data<float>(), N, D, ptr<T>(ds), ptr<T>(dlogit));
  });
  CUDA_CHECK_LAUNCH();
}

void gather_rows(const Tensor& in, const Tensor& index, Tensor& out) {
  byte_rows(in, index, out, false, "gather_rows");
}

void scatter_rows(const Tensor& in, const Tensor& index, Tensor& out) {
  byte_rows(in, index, out, true, "scatter_rows");
}

}  // namespace linea::kernels::cuda
