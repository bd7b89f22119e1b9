#include "core/optim/adamw.h"

#include <cmath>

#include "kernels/elementwise.h"

namespace linea {
namespace {

template <typename T>
void adamw_update(T* p, const T* g, T* m, T* v, int64_t n, double lr, double b1, double b2,
                  double eps, double wd, double bc1, double bc2) {
  for (int64_t i = 0; i < n; ++i) {
    const double gi = g[i];
    const double mi = b1 * m[i] + (1 - b1) * gi;
    const double vi = b2 * v[i] + (1 - b2) * gi * gi;
    m[i] = static_cast<T>(mi);
    v[i] = static_cast<T>(vi);
    const double update = (mi / bc1) / (std::sqrt(vi / bc2) + eps) + wd * p[i];
    p[i] = static_cast<T>(p[i] - lr * update);
  }
}

}  // namespace

AdamW::AdamW(const ParameterList& params, const config::OptimizerConfig& cfg)
    : params_(params), cfg_(cfg) {
  for (const Parameter* p : params_) {
    m_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype()));
    v_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype()));
  }
}

void AdamW::step(double lr) {
  ++t_;
  const double b1 = cfg_.beta1(), b2 = cfg_.beta2();
  const double bc1 = 1 - std::pow(b1, double(t_)), bc2 = 1 - std::pow(b2, double(t_));
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = *params_[i];
    const double wd = p.weight_decay ? cfg_.weight_decay() : 0.0;
    const int64_t n = p.value.numel();
    switch (p.value.dtype()) {
      case DType::kF32:
        adamw_update(p.value.data<float>(), p.grad.data<float>(), m_[i].data<float>(),
                     v_[i].data<float>(), n, lr, b1, b2, cfg_.eps(), wd, bc1, bc2);
        break;
      case DType::kF64:
        adamw_update(p.value.data<double>(), p.grad.data<double>(), m_[i].data<double>(),
                     v_[i].data<double>(), n, lr, b1, b2, cfg_.eps(), wd, bc1, bc2);
        break;
      default:
        LINEA_CHECK(false) << p.name << ": AdamW on CPU needs f32 or f64, got "
                           << dtype_name(p.value.dtype());
    }
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
