#include "core/optim/adamw.h"

#include <cmath>

#include "kernels/adamw.h"
#include "kernels/elementwise.h"

namespace linea {

AdamW::AdamW(const ParameterList& params, const config::OptimizerConfig& cfg)
    : params_(params), cfg_(cfg) {
  for (const Parameter* p : params_) {
    // Moments live beside their parameter (on its GPU for CUDA parameters).
    m_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), p->value.device()));
    v_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), p->value.device()));
  }
}

void AdamW::step(double lr) {
  ++t_;
  const double b1 = cfg_.beta1(), b2 = cfg_.beta2();
  const double bc1 = 1 - std::pow(b1, double(t_)), bc2 = 1 - std::pow(b2, double(t_));
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = *params_[i];
    const double wd = p.weight_decay ? cfg_.weight_decay() : 0.0;
    const bool cpu = p.value.device().is_cpu();
    const DType dt = p.value.dtype();
    LINEA_CHECK(dt == DType::kF32 || (cpu && dt == DType::kF64))
        << p.name << ": AdamW on " << p.value.device().str() << " needs "
        << (cpu ? "f32 or f64" : "f32 master weights") << ", got " << dtype_name(dt);
    kernels::AdamWStep s;
    s.lr = lr;
    s.beta1 = b1;
    s.beta2 = b2;
    s.eps = cfg_.eps();
    s.weight_decay = wd;
    s.bias_correction1 = bc1;
    s.bias_correction2 = bc2;
    kernels::adamw_step(p.value, p.grad, m_[i], v_[i], s);
  }
}

double learning_rate(const config::OptimizerConfig& opt, const config::ScheduleConfig& sched,
                     int64_t step, int64_t total_steps) {
  const double lr = opt.lr();
  const int64_t warmup = sched.warmup_steps();
  if (step < warmup) return lr * double(step + 1) / double(warmup);
  const int64_t decay_steps = total_steps - 1 - warmup;
  if (decay_steps <= 0) return lr;
  const double progress = std::min(1.0, double(step - warmup) / double(decay_steps));
  const double min_lr = lr * sched.min_lr_ratio();
  return min_lr + 0.5 * (lr - min_lr) * (1 + std::cos(M_PI * progress));
}

double clip_grad_norm(const ParameterList& params, double max_norm) {
  double sq = 0;
  for (const Parameter* p : params) sq += kernels::sum_squares(p->grad);
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm && std::isfinite(norm)) {
    const double s = max_norm / (norm + 1e-6);
    for (Parameter* p : params) kernels::scale(p->grad, s);
  }
  return norm;
}

}  // namespace linea
