// CUDA softmax cross-entropy (kernels/cross_entropy.h), streamed over the vocabulary: one block
// per row reads the row once in its storage dtype (16-byte loads where the row allows), keeps
// an online (max, sum of exp) per thread, and merges them over the block. No f32 copy of the
// logits is ever made; lse is f32. The per-row losses are summed in f64 in a fixed order.
// Targets are checked in the same pass (one read-back for loss, count and check); a bad target
// is the CPU's user error, raised after the kernels ran (only lse has been written then).
// The backward is one more pass per row and may write in place (dlogits = logits); it trusts
// the targets its forward checked and waits for nothing.
#include <cmath>

#include "kernels/cross_entropy.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

constexpr int kBlock = 512;

const char* kTargetHint =
    "targets must lie in [0, model.vocab_size) or be -1 (ignored); raise model.vocab_size to "
    "cover the dataset's tokenizer";

// 16 bytes of T: 4 f32 or 8 bf16.
template <typename T>
struct Vec {
  static constexpr int kN = 16 / sizeof(T);
  union {
    uint4 raw;
    T v[kN];
  };
};

struct MaxSum {
  float m, s;
};

__device__ __forceinline__ void online_add(MaxSum& a, float z) {
  if (z > a.m) {
    a.s = a.s * __expf(a.m - z) + 1.0f;  // a.m = -inf at first: exp(-inf) = 0
    a.m = z;
  } else {
    a.s += __expf(z - a.m);
  }
}

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.0f};
  return {m, a.s * __expf(a.m - m) + b.s * __expf(b.m - m)};
}

__device__ __forceinline__ MaxSum block_max_sum(MaxSum v, float* sm, float* ss) {
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)};
    v = merge(v, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) {
    sm[warp] = v.m;
    ss[warp] = v.s;
  }
  __syncthreads();
  MaxSum t = lane < warps ? MaxSum{sm[lane], ss[lane]} : MaxSum{-INFINITY, 0.0f};
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, t.m, o), __shfl_xor_sync(0xffffffffu, t.s, o)};
    t = merge(t, other);
  }
  return t;
}

// lse[r] and the row's loss term (0 for ignored rows). `vec`: rows are whole 16-byte vectors.
template <typename T>
__global__ void ce_forward_kernel(const T* z, const int32_t* targets, int64_t rows, int64_t vocab,
                                  bool vec, float* lse, float* row_loss) {
  __shared__ float sm[32], ss[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* zr = z + r * vocab;
    MaxSum acc{-INFINITY, 0.0f};
    if (vec) {
      const uint4* zv = reinterpret_cast<const uint4*>(zr);
      const int64_t nv = vocab / Vec<T>::kN;
      for (int64_t j = threadIdx.x; j < nv; j += blockDim.x) {
        Vec<T> x;
        x.raw = zv[j];
        // One rescale per pack at most, then a branch-free sum of exp over the pack.
        float f[Vec<T>::kN];
        float pm = -INFINITY;
#pragma unroll
        for (int e = 0; e < Vec<T>::kN; ++e) {
          f[e] = to_float(x.v[e]);
          pm = fmaxf(pm, f[e]);
        }
        if (pm > acc.m) {
          acc.s *= __expf(acc.m - pm);  // acc.m = -inf at first: exp(-inf) = 0
          acc.m = pm;
        }
        float ps = 0;
#pragma unroll
        for (int e = 0; e < Vec<T>::kN; ++e) ps += __expf(f[e] - acc.m);
        acc.s += ps;
      }
    } else {
      for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) online_add(acc, to_float(zr[j]));
    }
    const MaxSum tot = block_max_sum(acc, sm, ss);
    if (threadIdx.x == 0) {
      const float l = tot.m + logf(tot.s);
      lse[r] = l;
      const int32_t t = targets[r];
      row_loss[r] = (t >= 0 && t < vocab) ? l - to_float(zr[t]) : 0.0f;
    }
  }
}

// The forward's one read-back: the loss sum, the first row whose target is out of range
// (UINT64_MAX when none) and the number of rows not ignored.
struct CeTotals {
  double sum;
  unsigned long long first_bad;
  unsigned long long valid;
};

// One block: sums the row losses in f64 in a fixed order and checks every target.
__global__ void ce_totals(const float* row_loss, const int32_t* targets, int64_t rows,
                          int64_t vocab, CeTotals* out) {
  __shared__ double scratch[32];
  __shared__ unsigned long long counts[32];
  double s = 0;
  unsigned long long valid = 0, bad = ~0ull;
  for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) {
    s += row_loss[i];
    const int32_t t = targets[i];
    if (t == kIgnoreIndex) continue;
    if (t >= 0 && t < vocab) {
      ++valid;
    } else if (static_cast<unsigned long long>(i) < bad) {
      bad = static_cast<unsigned long long>(i);
    }
  }
  s = block_sum(s, scratch);
  valid = block_sum(valid, counts);
  if (bad != ~0ull) atomicMin(&out->first_bad, bad);  // first_bad preset to UINT64_MAX
  if (threadIdx.x == 0) {
    out->sum = s;
    out->valid = valid;
  }
}

template <typename T>
__device__ __forceinline__ float ce_grad(float z, float l, float st, int64_t j, int32_t t) {
  const float g = st * __expf(z - l);
  return j == t ? g - st : g;
}

template <typename T>
__global__ void ce_backward_kernel(const T* z, const int32_t* targets, const float* lse,
                                   int64_t rows, int64_t vocab, bool vec, float st, T* dz) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* zr = z + r * vocab;
    T* dr = dz + r * vocab;
    const int32_t t = targets[r];
    const bool valid = t >= 0 && t < vocab;  // invalid targets were refused by the forward
    const float l = lse[r];
    if (vec) {
      const uint4* zv = reinterpret_cast<const uint4*>(zr);
      uint4* dv = reinterpret_cast<uint4*>(dr);
      const int64_t nv = vocab / Vec<T>::kN;
      for (int64_t j = threadIdx.x; j < nv; j += blockDim.x) {
        Vec<T> x, y;
        x.raw = zv[j];
#pragma unroll
        for (int e = 0; e < Vec<T>::kN; ++e) {
          const int64_t col = j * Vec<T>::kN + e;
          y.v[e] = from_float<T>(valid ? ce_grad<T>(to_float(x.v[e]), l, st, col, t) : 0.0f);
        }
        dv[j] = y.raw;
      }
    } else {
      for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
        dr[j] = from_float<T>(valid ? ce_grad<T>(to_float(zr[j]), l, st, j, t) : 0.0f);
      }
    }
  }
}

int64_t check_ce_args(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                      const char* op) {
  check_float(logits, op, "logits");
  LINEA_CHECK(logits.ndim() >= 2 && logits.dim(-1) > 0)
      << op << ": logits " << describe(logits) << " must be [N, V] with V > 0";
  const int64_t rows = logits.numel() / logits.dim(-1);
  check_dtype(targets, DType::kI32, op, "targets");
  check_same_device(targets, logits, op, "targets", "logits");
  LINEA_CHECK(targets.numel() == rows)
      << op << ": targets " << shape_str(targets.shape()) << " must hold one id per row of logits "
      << shape_str(logits.shape()) << " (" << rows << " rows)";
  check_dtype(lse, DType::kF32, op, "lse");
  check_same_device(lse, logits, op, "lse", "logits");
  LINEA_CHECK(lse.numel() == rows)
      << op << ": lse " << shape_str(lse.shape()) << " must hold one value per row of logits "
      << shape_str(logits.shape()) << " (" << rows << " rows)";
  return rows;
}

// Rows made of whole, aligned 16-byte vectors.
bool rows_vectorizable(const Tensor& t) {
  const size_t row_bytes = static_cast<size_t>(t.dim(-1)) * dtype_size(t.dtype());
  return row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(t.raw()) % 16 == 0;
}

int ce_grid(int64_t rows, int device) {
  const int64_t cap = static_cast<int64_t>(multiprocessors(device)) * 4;
  return static_cast<int>(rows < cap ? rows : cap);
}

}  // namespace

double cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& lse,
                             int64_t* n_valid) {
  const char* op = "cross_entropy_forward";
  const int64_t rows = check_ce_args(logits, targets, lse, op);
  const int64_t vocab = logits.dim(-1);
  if (rows == 0) {
    if (n_valid) *n_valid = 0;
    return 0.0;
  }
  OnDevice dev(logits);
  Tensor row_loss = Tensor::empty({rows}, DType::kF32, logits.device());
  static_assert(sizeof(CeTotals) <= 4 * sizeof(int64_t), "CeTotals fits 4 i64");
  Tensor totals_buf = Tensor::empty({4}, DType::kI64, logits.device());
  auto* totals = static_cast<CeTotals*>(totals_buf.raw());
  CUDA_CHECK(cudaMemsetAsync(&totals->first_bad, 0xff, sizeof(unsigned long long), dev.stream));
  const bool vec = rows_vectorizable(logits);
  dispatch(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    ce_forward_kernel<<<ce_grid(rows, dev.index), kBlock, 0, dev.stream>>>(
        ptr<T>(logits), targets.data<int32_t>(), rows, vocab, vec, lse.data<float>(),
        row_loss.data<float>());
  });
  CUDA_CHECK_LAUNCH();
  ce_totals<<<1, 1024, 0, dev.stream>>>(row_loss.data<float>(), targets.data<int32_t>(), rows,
                                        vocab, totals);
  CUDA_CHECK_LAUNCH();
  CeTotals host{};
  CUDA_CHECK(cudaMemcpyAsync(&host, totals, sizeof(CeTotals), cudaMemcpyDeviceToHost, dev.stream));
  CUDA_CHECK(cudaStreamSynchronize(dev.stream));
  if (host.first_bad != ~0ull) {
    const int64_t at = static_cast<int64_t>(host.first_bad);
    LINEA_USER_CHECK(false, kTargetHint)
        << op << ": target id " << static_cast<int64_t>(targets.item(at)) << " at row " << at
        << " is outside [0, " << vocab << ") (vocab size " << vocab << ")";
  }
  const int64_t valid = static_cast<int64_t>(host.valid);
  if (n_valid) *n_valid = valid;
  return valid ? host.sum / static_cast<double>(valid) : 0.0;
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            double dloss, int64_t n_valid, Tensor& dlogits) {
  const char* op = "cross_entropy_backward";
  const int64_t rows = check_ce_args(logits, targets, lse, op);
  check_same_shape(dlogits, logits, op, "dlogits", "logits");
  LINEA_CHECK(n_valid >= 0) << op << ": n_valid = " << n_valid;
  if (rows == 0) return;
  const int64_t vocab = logits.dim(-1);
  const float st = n_valid ? static_cast<float>(dloss / static_cast<double>(n_valid)) : 0.0f;
  OnDevice dev(logits);
  const bool vec = rows_vectorizable(logits) && rows_vectorizable(dlogits);
  dispatch(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    ce_backward_kernel<<<ce_grid(rows, dev.index), kBlock, 0, dev.stream>>>(
        ptr<T>(logits), targets.data<int32_t>(), lse.data<float>(), rows, vocab, vec, st,
        ptr<T>(dlogits));
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
