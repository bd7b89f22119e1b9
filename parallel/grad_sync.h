// Gradient reduction across ranks: replicated parameters are averaged over the DP x SP group,
// expert parameters over the ranks holding the same experts (MoE issue). Gradients are packed
// into one flat buffer per dtype so that one all-reduce serves them all.
#pragma once

#include "core/modules/parameter.h"
#include "parallel/process_grid.h"

namespace linea::parallel {

// Averages the gradients of replicated parameters over grid.dp_sp() (sum / group size).
void average_replicated_gradients(const ParameterList& params, const ProcessGrid& grid);
// Averages the gradients of expert parameters over `expert_dp`, the ranks holding the same
// experts (with parallel.ep = 1 every rank holds every expert: pass grid.dp_sp()).
void average_expert_gradients(const ParameterList& params, Communicator& expert_dp);

}  // namespace linea::parallel
