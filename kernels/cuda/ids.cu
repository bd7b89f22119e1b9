#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ids.h"

namespace linea::kernels::cuda {
namespace {

// out[0]: the first bad position (atomicMin; UINT64_MAX when none); out[1]: ids not ignored.
__global__ void scan_ids(const int32_t* ids, int64_t n, int64_t vocab, bool allow_ignore,
                         int32_t ignore, unsigned long long* out) {
  unsigned long long valid = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int32_t id = ids[i];
    if (allow_ignore && id == ignore) continue;
    if (id < 0 || id >= vocab) {
      atomicMin(out, static_cast<unsigned long long>(i));
    } else {
      ++valid;
    }
  }
  valid = warp_sum(valid);
  if ((threadIdx.x & 31) == 0 && valid) atomicAdd(out + 1, valid);
}

}  // namespace

int64_t check_ids_in_range(const Tensor& ids, int64_t vocab, bool allow_ignore,
                           int32_t ignore_index, const char* op, const char* what,
                           const char* where, const char* hint) {
  check_dtype(ids, DType::kI32, op, what);
  const int64_t n = ids.numel();
  if (n == 0) return 0;
  OnDevice dev(ids);
  Tensor scratch = Tensor::empty({2}, DType::kI64, ids.device());
  auto* out = static_cast<unsigned long long*>(scratch.raw());
  CUDA_CHECK(cudaMemsetAsync(out, 0xff, sizeof(unsigned long long), dev.stream));
  CUDA_CHECK(cudaMemsetAsync(out + 1, 0, sizeof(unsigned long long), dev.stream));
  const int block = 256;
  scan_ids<<<grid_for(n, block, dev.index, 4), block, 0, dev.stream>>>(
      ids.data<int32_t>(), n, vocab, allow_ignore, ignore_index, out);
  CUDA_CHECK_LAUNCH();
  unsigned long long host[2];
  CUDA_CHECK(cudaMemcpyAsync(host, out, sizeof(host), cudaMemcpyDeviceToHost, dev.stream));
  CUDA_CHECK(cudaStreamSynchronize(dev.stream));
  if (host[0] != ~0ull) {
    const int64_t at = static_cast<int64_t>(host[0]);
    const int64_t bad = static_cast<int64_t>(ids.item(at));
    LINEA_USER_CHECK(false, hint) << op << ": " << what << " id " << bad << " at " << where << " "
                                  << at << " is outside [0, " << vocab << ") (vocab size " << vocab
                                  << ")";
  }
  return static_cast<int64_t>(host[1]);
}

}  // namespace linea::kernels::cuda
