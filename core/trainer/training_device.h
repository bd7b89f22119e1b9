// Where a rank trains (train.device): the CPU, or its GPU (local rank mod the GPUs it sees). For
// cuda, the model must be one the CUDA backend runs end to end today; anything else is refused
// here, before any work, with a message naming the field (docs/cuda.md lists what runs).
#pragma once

#include "core/tensor/device.h"
#include "linea.pb.h"
#include "parallel/communicator.h"

namespace linea {

// Throws linea::Error (a user error with a hint) when train.device = cuda cannot run here: no
// CUDA backend in this build, no GPU, or a model, dtype or layout the GPU path lacks.
Device training_device(const config::Config& cfg, const parallel::Communicator& world);

}  // namespace linea
