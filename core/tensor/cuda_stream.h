// Streams and events. Every CUDA op of Linea runs on the current stream of its tensors' device:
// one non-blocking stream per device, created on first use, unless a StreamGuard installs
// another for a scope. The caching allocator reuses blocks in this stream's order, so work put
// on other streams must synchronise with it first (docs/cuda.md).
#pragma once

#include <cuda_runtime_api.h>

namespace linea::cuda {

cudaStream_t current_stream(int device);
// Waits for all work queued on the current stream of `device`.
void synchronize(int device);

// Makes `stream` the current stream of `device` for the scope. The current stream is process-wide
// (not per thread): one thread drives a device.
class StreamGuard {
 public:
  StreamGuard(int device, cudaStream_t stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_;
  cudaStream_t previous_;
};

// Times device work between start() and stop() on one stream with CUDA events; elapsed_ms()
// waits for the stop event. For benchmarks: warm up first, repeat, take the median.
class EventTimer {
 public:
  explicit EventTimer(int device);
  ~EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  void start();
  void stop();
  float elapsed_ms();

 private:
  int device_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

}  // namespace linea::cuda
