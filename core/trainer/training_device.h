// Where a rank trains (train.device): the CPU, or its GPU (local rank mod the GPUs it sees). For
// cuda, the model must be one the CUDA backend runs end to end today; anything else is refused
// here, before any work, with a message naming the field (docs/cuda.md lists what runs).
#pragma once

#include <memory>

#include "core/tensor/device.h"
#include "linea.pb.h"
#include "parallel/communicator.h"

namespace linea {

// Throws linea::Error (a user error with a hint) when train.device = cuda cannot run here: no
// CUDA backend in this build, no GPU, or a model, dtype or layout the GPU path lacks.
Device training_device(const config::Config& cfg, const parallel::Communicator& world);

// Peak bytes of tensors held on `device` since the last reset (the caching allocator's count; 0 for
// the CPU), and its reset. The trainer reports the peak per step.
size_t device_peak_bytes(Device device);
void reset_device_peak(Device device);

// The dense bf16 peak of the GPUs MFU is counted against: 989 TFLOP/s, the H100/H200 SXM figure
// (the anchors of the project's GPU notes use it too).
constexpr double kGpuBf16PeakFlops = 989e12;

// The world communicator collectives of a GPU run go through (parallel.backend): a NCCL world
// bootstrapped from `world` (MPI), or null to use `world` itself (CPU runs, parallel.backend =
// mpi, or auto where some ranks share a GPU). Collective over `world`.
std::unique_ptr<parallel::Communicator> training_world(const config::Config& cfg,
                                                       parallel::Communicator& world,
                                                       Device device);

}  // namespace linea
