// Gradient reduction across ranks and the gradient norm over all of them. Replicated parameters are
// averaged over the DP x SP group; expert parameters (ParamSharding::kExpert) over the ranks that
// hold the same experts (ProcessGrid::expert_dp()). Gradients are packed into one flat buffer per
// dtype so that one all-reduce serves them all.
//
// Expert gradients with expert parallelism: the MoE layer of an EP group receives the tokens of
// every rank of the group (parallel/expert_dispatch.h), so the gradient an expert accumulates on a
// rank is already the sum over the whole EP group's tokens. The expert-DP group holds one such
// partial sum per EP group, so summing over expert_dp covers every token of the global batch once.
// The divisor is the DP x SP size (not the expert-DP size): each rank scales its loss by
// dp_sp size / (target tokens of the global batch), exactly as for replicated parameters, and that
// factor must be taken out once per token, not once per holder. With ep = 1, expert_dp == dp_sp and
// expert parameters are reduced like replicated ones.
//
// Call order in a step: sync_gradients, then clip_gradients (which needs the reduced gradients).
#pragma once

#include "core/modules/parameter.h"
#include "parallel/process_grid.h"

namespace linea::parallel {

// Averages the gradients of replicated parameters over grid.dp_sp() (sum / group size).
void average_replicated_gradients(const ParameterList& params, const ProcessGrid& grid);

// Expert parameters: sum over grid.expert_dp(), divided by grid.dp_sp().size() (see above).
void reduce_expert_gradients(const ParameterList& params, const ProcessGrid& grid);

// Both of the above: what the trainer calls after its backward passes.
void sync_gradients(const ParameterList& params, const ProcessGrid& grid);

// The L2 norm of the gradient of the whole model, every parameter counted once: replicated
// gradients (identical on every rank after the averaging) contribute their local sum of squares;
// expert gradients (different experts on each rank of an EP group, identical across expert_dp)
// contribute their sum of squares summed over grid.ep(). Collective over grid.ep(); the result is
// the same on every rank. Call after sync_gradients.
double global_grad_norm(const ParameterList& params, const ProcessGrid& grid);

// The number of parameters of the whole model, every parameter counted once (replicated ones
// locally, expert ones summed over grid.ep()). Collective over grid.ep().
int64_t count_parameters(const ParameterList& params, const ProcessGrid& grid);

// Scales every gradient by max_norm / norm when the global norm exceeds max_norm (0: never);
// returns the norm before scaling. Collective like global_grad_norm.
double clip_gradients(const ParameterList& params, const ProcessGrid& grid, double max_norm);

}  // namespace linea::parallel
