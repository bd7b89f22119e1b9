// AdamW with decoupled weight decay (Loshchilov & Hutter 2019), bias-corrected moments:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + lr * wd * p   (wd where enabled)
// Moments are kept in f64 on CPU when parameters are f64, otherwise f32 (the master precision),
// on the parameter's device; the update itself is kernels::adamw_step (kernels/adamw.h).
#pragma once

#include <vector>

#include "core/modules/parameter.h"
#include "linea.pb.h"

namespace linea {

class AdamW {
 public:
  AdamW(const ParameterList& params, const config::OptimizerConfig& cfg);
  // One update with learning rate lr (from the schedule); increments the step count.
  void step(double lr);
  int64_t steps_taken() const { return t_; }
  // The state a checkpoint saves and restores (core/checkpoint): the first and second moments,
  // in the order of the parameter list, and the step count the bias corrections use.
  const ParameterList& parameters() const { return params_; }
  std::vector<Tensor>& exp_avg() { return m_; }
  std::vector<Tensor>& exp_avg_sq() { return v_; }
  void set_steps_taken(int64_t t) { t_ = t; }

 private:
  ParameterList params_;
  config::OptimizerConfig cfg_;
  std::vector<Tensor> m_, v_;
  int64_t t_ = 0;
};

// Linear warmup from lr/warmup to lr over `warmup_steps`, then cosine decay to min_lr_ratio * lr
// at step `total_steps - 1`. step is 0-based.
double learning_rate(const config::OptimizerConfig& opt, const config::ScheduleConfig& sched,
                     int64_t step, int64_t total_steps);

// Global gradient norm over `params` (each counted once; call after gradients are reduced, so
// every rank sees the same replicated gradients) and, when max_norm > 0 and the norm exceeds it,
// scales every gradient by max_norm / norm. Returns the norm before clipping.
double clip_grad_norm(const ParameterList& params, double max_norm);

}  // namespace linea
