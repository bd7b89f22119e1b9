// CUDA embedding (kernels/embedding.h): one block per token row (grid-stride), a row copied by
// the block's threads in 16-byte pieces where the rows allow. The backward sorts the ids stably
// (cub radix sort) and lets one block per distinct id sum its rows in position order into the f32
// dtable: deterministic, no atomics.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ids.h"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

const char* kIdHint =
    "token ids must lie in [0, model.vocab_size); raise model.vocab_size to cover the dataset's "
    "tokenizer";

// Rows of D = packs * N elements; N = kVec<T> (16-byte copies) where D and the pointers allow.
template <typename T, int N>
__global__ void embedding_forward_kernel(const int32_t* ids, const T* table, int64_t n,
                                         int64_t packs, T* y) {
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const T* src = table + static_cast<int64_t>(ids[row]) * packs * N;
    T* dst = y + row * packs * N;
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      store_pack<T, N>(dst, j, load_pack<T, N>(src, j));
    }
  }
}

__global__ void iota_kernel(int32_t* p, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    p[i] = static_cast<int32_t>(i);
  }
}

// sorted_ids / order: the ids sorted stably and the positions they came from. The block at the
// start of each run of one id sums that id's dy rows in position order and adds the sum to its
// dtable row: no atomics, the same bits every run.
template <typename T>
__global__ void embedding_backward_kernel(const int32_t* sorted_ids, const int32_t* order,
                                          const T* dy, int64_t n, int64_t d, float* dtable) {
  for (int64_t s = blockIdx.x; s < n; s += gridDim.x) {
    const int32_t id = sorted_ids[s];
    if (s > 0 && sorted_ids[s - 1] == id) continue;  // the same for the whole block
    float* dst = dtable + static_cast<int64_t>(id) * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      float acc = 0;
      for (int64_t r = s; r < n && sorted_ids[r] == id; ++r) {
        acc += to_float(dy[static_cast<int64_t>(order[r]) * d + j]);
      }
      dst[j] += acc;
    }
  }
}

int row_block(int64_t d) { return d >= 512 ? 256 : (d >= 128 ? 128 : 32); }  // d: items a row

void check_rows(const Tensor& ids, const Tensor& table, const Tensor& act, const char* op,
                const char* table_name, const char* act_name) {
  check_dtype(ids, DType::kI32, op, "ids");
  check_same_device(ids, table, op, "ids", table_name);
  check_float(act, op, act_name);
  check_same_device(act, table, op, act_name, table_name);
  LINEA_CHECK(table.ndim() == 2) << op << ": " << table_name << " " << describe(table)
                                 << " must be [V, D]";
  const int64_t d = table.dim(1);
  LINEA_CHECK(act.ndim() >= 1 && act.dim(-1) == d && act.numel() == ids.numel() * d)
      << op << ": " << act_name << " " << shape_str(act.shape())
      << " must hold one row of D = " << d << " per id of ids " << shape_str(ids.shape());
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& y) {
  const char* op = "embedding_forward";
  check_float(table, op, "table");
  check_rows(ids, table, y, op, "table", "y");
  check_like(y, table, op, "y", "table");
  const int64_t n = ids.numel(), vocab = table.dim(0), d = table.dim(1);
  check_ids_in_range(ids, vocab, false, 0, op, "token", "position", kIdHint);
  if (n == 0 || d == 0) return;
  OnDevice dev(table);
  const int grid = static_cast<int>(n < 65536 ? n : 65536);
  dispatch(table.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    if (d % V == 0 && aligned16(table.raw()) && aligned16(y.raw())) {
      embedding_forward_kernel<T, V><<<grid, row_block(d / V), 0, dev.stream>>>(
          ids.data<int32_t>(), ptr<T>(table), n, d / V, ptr<T>(y));
    } else {
      embedding_forward_kernel<T, 1><<<grid, row_block(d), 0, dev.stream>>>(
          ids.data<int32_t>(), ptr<T>(table), n, d, ptr<T>(y));
    }
  });
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) {
  const char* op = "embedding_backward";
  check_dtype(dtable, DType::kF32, op, "dtable");
  check_rows(ids, dtable, dy, op, "dtable", "dy");
  const int64_t n = ids.numel(), vocab = dtable.dim(0), d = dtable.dim(1);
  check_ids_in_range(ids, vocab, false, 0, op, "token", "position", kIdHint);
  if (n == 0 || d == 0) return;
  LINEA_CHECK(n < (int64_t(1) << 31)) << op << ": " << n << " ids in one call";
  OnDevice dev(dtable);
  // Sort (id, position) pairs by id, stably, over the bits that ids < vocab can use.
  int bits = 1;
  while (bits < 31 && (int64_t(1) << bits) < vocab) ++bits;
  Tensor positions = Tensor::empty({n}, DType::kI32, dtable.device());
  Tensor sorted_ids = Tensor::empty({n}, DType::kI32, dtable.device());
  Tensor order = Tensor::empty({n}, DType::kI32, dtable.device());
  iota_kernel<<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(positions.data<int32_t>(), n);
  CUDA_CHECK_LAUNCH();
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, temp_bytes, ids.data<int32_t>(), sorted_ids.data<int32_t>(),
      positions.data<int32_t>(), order.data<int32_t>(), static_cast<int>(n), 0, bits, dev.stream));
  Tensor temp =
      Tensor::empty({static_cast<int64_t>(temp_bytes / 4 + 1)}, DType::kI32, dtable.device());
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      temp.raw(), temp_bytes, ids.data<int32_t>(), sorted_ids.data<int32_t>(),
      positions.data<int32_t>(), order.data<int32_t>(), static_cast<int>(n), 0, bits, dev.stream));
  const int block = row_block(d);
  const int grid = static_cast<int>(n < 65536 ? n : 65536);
  dispatch(dy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    embedding_backward_kernel<<<grid, block, 0, dev.stream>>>(
        sorted_ids.data<int32_t>(), order.data<int32_t>(), ptr<T>(dy), n, d, dtable.data<float>());
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
