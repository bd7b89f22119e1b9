#include "core/tensor/cuda_device.h"

#include <cuda_runtime_api.h>

#include "core/util/cuda_check.h"

namespace linea::cuda {
namespace {

struct Probe {
  int count = 0;
  std::string reason;
};

// Asked once: cudaGetDeviceCount is cheap, but the answer cannot change within a process.
const Probe& probe() {
  static const Probe p = [] {
    Probe r;
    const cudaError_t e = cudaGetDeviceCount(&r.count);
    if (e != cudaSuccess) {
      r.count = 0;
      r.reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(e);
      cudaGetLastError();  // clear the sticky launch error state of the failed probe
    } else if (r.count == 0) {
      r.reason = "cudaGetDeviceCount found 0 devices";
    }
    return r;
  }();
  return p;
}

}  // namespace

int device_count() { return probe().count; }

std::string unavailable_reason() { return probe().reason; }

void check_device(int index, const char* what) {
  LINEA_USER_CHECK(device_count() > 0,
                   "this machine has no usable GPU; run on CPU or check nvidia-smi")
      << what << ": cuda:" << index << " requested but " << unavailable_reason();
  LINEA_USER_CHECK(index >= 0 && index < device_count(),
                   "one GPU per rank: the local rank must be below the GPUs per node")
      << what << ": cuda:" << index << " requested, " << device_count() << " device(s) present";
}

DeviceGuard::DeviceGuard(int index) {
  CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != index) CUDA_CHECK(cudaSetDevice(index));
}

DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

}  // namespace linea::cuda
