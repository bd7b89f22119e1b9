// Mixture of SwiGLU experts (the MOE channel mixer), with optional shared experts.
//
//   y = sum_{j < k} w_{t,j} Expert_{e_{t,j}}(x_t) + g_t * Shared(x_t)
// where the router (router.h) chooses e_{t,j} and w_{t,j}, Shared is one SwiGLU of width
// num_shared_experts * shared_intermediate_size, and g_t = sigmoid(x_t w_g) with
// shared_expert_gate (Qwen2-MoE) or 1 without.
//
// Data flow (dispatch splits at the brackets; identity without an EP group):
//   route -> plan_dispatch + permute_tokens -> [dispatch] -> the local experts' SwiGLUs on their
//   contiguous row blocks, all at once (grouped_experts.h) -> [combine] -> unpermute_combine
//   (+ shared experts).
// Dropless unless capacity_factor > 0 (token_permutation.h says which copies are dropped).
//
// Expert parallelism: with an EP group of P ranks (parallel/expert_dispatch.h) this rank holds
// only the experts [r E / P, (r + 1) E / P) and runs them on the rows every rank of the group
// routed to them; the router and the shared experts stay replicated. The capacity is applied
// per source rank before dispatch (its own tokens), so EP = P computes exactly what EP = 1 does
// on the same ranks. Every forward and backward is collective over the EP group.
//
// Parameter names (prefix "layers.<l>.mlp"): gate.weight [E, D]; experts.<e>.{gate,up}_proj.weight
// [F, D], experts.<e>.down_proj.weight [D, F] (ParamSharding::kExpert);
// shared_experts.*_proj.weight; shared_expert_gate.weight [1, D]. All matrices take weight decay.
//
// The aux and z losses enter the backward multiplied by aux_grad_scale (set by the model: the
// weight of this micro-batch's aux losses in the step's objective, docs/moe.md).
//
// On a GPU (parameters moved with Model::to, x a CUDA tensor) the same steps run there: the
// router's kernels, the plan built on the host from the one read-back of the chosen experts and
// uploaded once, the permutation and combine kernels (kernels/moe_permute.h), the experts as
// grouped cuBLAS products (kernels/grouped_gemm.h), the shared gate as one kernel. Under
// train.precision bf16 the expert rows are bf16 from the permutation to the combine (dispatched
// rows, gate/up outputs, expert outputs, their gradients; the combine sums in f32 into f32
// tokens), otherwise they keep x's dtype. forward and backward allocate on x's device (a
// DefaultDeviceScope of their own). docs/moe.md lists the host syncs.
#pragma once

#include <memory>
#include <vector>

#include "core/modules/channel_mixer.h"
#include "core/modules/moe/grouped_experts.h"
#include "core/modules/moe/router.h"
#include "core/modules/moe/token_permutation.h"
#include "core/modules/swiglu_mlp.h"
#include "parallel/expert_dispatch.h"

namespace linea {

// What one forward saw (one micro-batch on this rank).
struct MoeStats {
  double aux_loss = 0, z_loss = 0;  // coefficients included
  std::vector<int64_t> load;        // routed copies per expert, before capacity
  int64_t max_load = 0;
  double mean_load = 0;
  int64_t dropped = 0;  // copies dropped by the capacity
};

class MoeLayer : public ChannelMixer {
 public:
  // ep: the EP group (borrowed; null or size 1: every expert on this rank). seq: the sequence
  // group whose ranks share the aux and z losses of their micro-batch (router.h; the SP group).
  MoeLayer(const std::string& name, int64_t hidden, const config::MoeConfig& cfg, DType dtype,
           parallel::Communicator* ep = nullptr, parallel::Communicator* seq = nullptr);
  void init(uint64_t seed, double std, double out_std) override;
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  void collect(ParameterList& out) override;
  void release_saved() override {
    routing_kept_ = false;
    router_.release_saved();
    experts_.release_saved();
    if (shared_) shared_->release_saved();
    if (shared_gate_) shared_gate_->release_saved();
    plan_ = DispatchPlan{};
    expert_out_ = shared_out_ = Tensor();
    shared_gate_value_.clear();
    shared_gate_dev_ = Tensor();
  }
  // Drops the activations (rows, expert intermediates, outputs) but keeps the router's state and
  // the dispatch plan: about (N k + 2 N E) numbers and the router's input, against N k D floats.
  void release_for_replay() override {
    experts_.release_saved();
    if (shared_) shared_->release_saved();
    if (shared_gate_) shared_gate_->release_saved();
    expert_out_ = shared_out_ = Tensor();
    shared_gate_value_.clear();
    shared_gate_dev_ = Tensor();
    routing_kept_ = true;
  }
  // While on, forward is a recomputation of a forward already counted: it leaves step_load()
  // alone (activation recomputation replays each forward once before its backward), and after
  // release_for_replay it reuses the kept routing and plan instead of routing again (the input is
  // the same, so the routing would be too).
  void set_replaying(bool on) { replaying_ = on; }
  MoeLayer* moe() override { return this; }

  const MoeStats& stats() const { return stats_; }
  void set_aux_grad_scale(double s) { aux_grad_scale_ = s; }
  // Routed copies per expert summed over the forwards since reset_step_load (a step's load).
  const std::vector<double>& step_load() const { return step_load_; }
  void reset_step_load() { std::fill(step_load_.begin(), step_load_.end(), 0.0); }
  Router& router() { return router_; }
  const DispatchPlan& plan() const { return plan_; }
  // Every expert of the layer (all EP ranks together).
  int64_t num_experts() const { return cfg_.num_experts(); }
  // The experts this rank holds: global indices [first_local_expert, + num_local_experts).
  int64_t num_local_experts() const { return experts_.size(); }
  int64_t first_local_expert() const { return first_local_; }

 private:
  // Rows per local expert of the current plan (no EP group: the plan's own blocks).
  std::vector<int64_t> local_counts() const;

  config::MoeConfig cfg_;
  int64_t hidden_;
  DType dtype_;
  Router router_;
  std::unique_ptr<SwiGLUMLP> shared_;
  std::unique_ptr<Linear> shared_gate_;
  std::unique_ptr<parallel::ExpertDispatcher> dispatcher_;  // null without an EP group
  int64_t first_local_ = 0;
  GroupedExperts experts_;  // after dispatcher_ and first_local_, which its construction reads
  double aux_grad_scale_ = 1.0;

  DispatchPlan plan_;
  Tensor expert_out_;                      // [rows, D] in plan order, for the combine backward
  Tensor shared_out_;                      // [N, D], with the shared gate
  std::vector<double> shared_gate_value_;  // [N] sigmoid gate
  Tensor shared_gate_dev_;                 // the same on a GPU: [N] f32
  MoeStats stats_;
  std::vector<double> step_load_;
  bool replaying_ = false;
  bool routing_kept_ = false;  // release_for_replay kept the router state and plan_
};

}  // namespace linea
