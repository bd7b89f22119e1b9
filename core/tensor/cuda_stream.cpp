#include "core/tensor/cuda_stream.h"

#include <mutex>
#include <vector>

#include "core/tensor/cuda_device.h"
#include "core/util/cuda_check.h"

namespace linea::cuda {
namespace {

// Per device: the default Linea stream (created once, never destroyed: the runtime may be torn
// down before static destructors run) and the stream a StreamGuard installed, if any.
struct Streams {
  std::mutex mu;
  std::vector<cudaStream_t> base;
  std::vector<cudaStream_t> current;
};

Streams& streams() {
  static Streams* s = new Streams();
  return *s;
}

}  // namespace

cudaStream_t current_stream(int device) {
  Streams& s = streams();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.base.empty()) {
    check_device(device, "current_stream");
    s.base.assign(device_count(), nullptr);
    s.current.assign(device_count(), nullptr);
  }
  LINEA_CHECK(device >= 0 && device < static_cast<int>(s.base.size()))
      << "current_stream: cuda:" << device << " of " << s.base.size();
  if (s.current[device]) return s.current[device];
  if (!s.base[device]) {
    DeviceGuard guard(device);
    CUDA_CHECK(cudaStreamCreateWithFlags(&s.base[device], cudaStreamNonBlocking));
  }
  return s.base[device];
}

void synchronize(int device) { CUDA_CHECK(cudaStreamSynchronize(current_stream(device))); }

StreamGuard::StreamGuard(int device, cudaStream_t stream)
    : device_(device), previous_(current_stream(device)) {
  Streams& s = streams();
  std::lock_guard<std::mutex> lock(s.mu);
  s.current[device_] = stream;
}

StreamGuard::~StreamGuard() {
  Streams& s = streams();
  std::lock_guard<std::mutex> lock(s.mu);
  s.current[device_] = previous_ == s.base[device_] ? nullptr : previous_;
}

EventTimer::EventTimer(int device) : device_(device) {
  DeviceGuard guard(device);
  CUDA_CHECK(cudaEventCreate(&start_));
  CUDA_CHECK(cudaEventCreate(&stop_));
}

EventTimer::~EventTimer() {
  if (start_) cudaEventDestroy(start_);
  if (stop_) cudaEventDestroy(stop_);
}

void EventTimer::start() { CUDA_CHECK(cudaEventRecord(start_, current_stream(device_))); }

void EventTimer::stop() { CUDA_CHECK(cudaEventRecord(stop_, current_stream(device_))); }

float EventTimer::elapsed_ms() {
  CUDA_CHECK(cudaEventSynchronize(stop_));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
  return ms;
}

}  // namespace linea::cuda
