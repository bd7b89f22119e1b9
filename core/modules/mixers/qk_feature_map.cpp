#include "core/modules/mixers/qk_feature_map.h"

#include <cmath>
#include <vector>

#include "kernels/hedgehog_feature_map.h"
#include "kernels/l2norm.h"
#include "kernels/layernorm.h"
#include "kernels/quadratic_feature_map.h"

namespace linea {
namespace {

using MC = config::MixerConfig;

kernels::FeatureMap elementwise_map(MC::FeatureMap f) {
  switch (f) {
    case MC::ELU_PLUS_ONE:
      return kernels::FeatureMap::kEluPlusOne;
    case MC::RELU:
      return kernels::FeatureMap::kRelu;
    default:
      return kernels::FeatureMap::kIdentity;
  }
}

// Based (Arora et al. 2024): phi(q) . phi(k) = 1 + q.k / sqrt(f) + (q.k)^2 / (2 f), the
// 2nd-order Taylor expansion of exp(q.k / sqrt(f)).
kernels::QuadraticFeatureMap taylor_map(int64_t f) {
  const double rd = std::sqrt(double(f));
  return {.constant = true, .linear = 1 / std::sqrt(rd), .quadratic = 1 / (std::sqrt(2.0) * rd)};
}

// ReBased (Aksenov et al. 2024): phi(q) . phi(k) = (q' . k')^2 / f with q' the normalised, affine
// query; the 1/f keeps the kernel O(f) for unit-variance q' (fla scales q by f^-1/2 likewise).
kernels::QuadraticFeatureMap rebased_map(int64_t f) {
  return {.constant = false, .linear = 0, .quadratic = 1 / std::sqrt(double(f))};
}

Shape with_last(Shape s, int64_t last) {
  s.back() = last;
  return s;
}

Shape rows_of(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 1); }

// The norms' saved row statistics: x's dtype on the CPU, f32 on CUDA (the kernels' contract).
Tensor row_stats(const Tensor& x) {
  return Tensor::empty(rows_of(x), x.device().is_cpu() ? x.dtype() : DType::kF32, x.device());
}

}  // namespace

QKFeatureMap::QKFeatureMap(const std::string& prefix, const config::MixerConfig& m, int64_t heads,
                           int64_t head_dim, double eps, DType dtype)
    : map_(m.feature_map()), eps_(eps) {
  const int64_t f = m.feature_dim();
  switch (map_) {
    case MC::IDENTITY:
    case MC::ELU_PLUS_ONE:
    case MC::RELU:
      in_dim_ = out_dim_ = head_dim;
      scale_ = 1 / std::sqrt(double(head_dim));
      return;
    case MC::HEDGEHOG:
      in_dim_ = head_dim;
      out_dim_ = 2 * f;
      scale_ = 1;
      // Separate maps for queries and keys, as in the paper. No weight decay: decaying W to zero
      // would flatten both softmaxes to uniform, the opposite of the spiky maps Hedgehog learns.
      hedgehog_[kQuery].emplace(
          make_parameter(prefix + ".feature_map_q.weight", {heads, head_dim, f}, dtype, false));
      hedgehog_[kKey].emplace(
          make_parameter(prefix + ".feature_map_k.weight", {heads, head_dim, f}, dtype, false));
      return;
    case MC::BASED:
      in_dim_ = f;
      out_dim_ = kernels::quadratic_feature_dim(taylor_map(f), f);
      scale_ = 1;
      return;
    case MC::REBASED:
      in_dim_ = f;
      out_dim_ = kernels::quadratic_feature_dim(rebased_map(f), f);
      scale_ = 1;
      // One affine shared by q and k and by the heads, as in the ReBased reference layer; a
      // normalisation's scale and shift: no weight decay.
      gamma_.emplace(make_parameter(prefix + ".feature_map.gamma", {f}, dtype, false));
      beta_.emplace(make_parameter(prefix + ".feature_map.beta", {f}, dtype, false));
      init_constant(*gamma_, 1.0);
      return;
    case MC::COSINE:
      in_dim_ = out_dim_ = head_dim;
      scale_ = 1;
      return;
  }
  LINEA_USER_CHECK(false, "use IDENTITY, ELU_PLUS_ONE, RELU, HEDGEHOG, BASED, REBASED or COSINE")
      << "model.mixer.feature_map " << static_cast<int>(map_) << " is not supported";
}

void QKFeatureMap::init(uint64_t seed) {
  for (auto& w : hedgehog_) {
    if (!w) continue;
    const int64_t H = w->value.dim(0), d = w->value.dim(1), f = w->value.dim(2);
    if (d == f) {
      // Identity: at init phi(x) = [softmax(x), softmax(-x)], the paper's starting point.
      std::vector<double> eye(H * d * f, 0.0);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < d; ++i) eye[(h * d + i) * f + i] = 1.0;
      w->value.copy_from(Tensor::from_vector({H, d, f}, eye, DType::kF64));  // host or device
    } else {
      // Unit-variance logits for unit-variance inputs: neither uniform nor one-hot softmaxes.
      init_normal(*w, seed, 1 / std::sqrt(double(d)));
    }
  }
  if (gamma_) init_constant(*gamma_, 1.0);
  if (beta_) init_constant(*beta_, 0.0);
}

void QKFeatureMap::collect(ParameterList& out) {
  for (auto& w : hedgehog_)
    if (w) out.push_back(&*w);
  if (gamma_) out.push_back(&*gamma_);
  if (beta_) out.push_back(&*beta_);
}

Tensor QKFeatureMap::forward(Side side, const Tensor& x) {
  LINEA_CHECK(x.dim(-1) == in_dim_)
      << "feature map input " << shape_str(x.shape()) << " must end in " << in_dim_;
  Saved& s = saved_[side];
  s.x = x;
  Tensor y = Tensor::empty(with_last(x.shape(), out_dim_), x.dtype(), x.device());
  switch (map_) {
    case MC::HEDGEHOG:
      kernels::hedgehog_feature_map_forward(x, hedgehog_[side]->value, y);
      s.y = y;
      break;
    case MC::BASED:
      kernels::quadratic_feature_map_forward(taylor_map(in_dim_), x, y);
      break;
    case MC::REBASED:
      s.u = Tensor::empty(x.shape(), x.dtype(), x.device());
      s.mean = row_stats(x);
      s.rstd = row_stats(x);
      kernels::layernorm_forward(x, gamma_->value, beta_->value, eps_, s.u, s.mean, s.rstd);
      kernels::quadratic_feature_map_forward(rebased_map(in_dim_), s.u, y);
      break;
    case MC::COSINE:
      s.rstd = row_stats(x);
      kernels::l2norm_forward(x, eps_, y, s.rstd);
      break;
    default:
      kernels::feature_map_forward(elementwise_map(map_), x, y);
      break;
  }
  return y;
}

Tensor QKFeatureMap::backward(Side side, const Tensor& dy) {
  Saved& s = saved_[side];
  LINEA_CHECK(s.x.defined()) << "feature map backward without a forward";
  Tensor dx = Tensor::empty(s.x.shape(), dy.dtype(), dy.device());
  switch (map_) {
    case MC::HEDGEHOG:
      kernels::hedgehog_feature_map_backward(s.x, hedgehog_[side]->value, s.y, dy, dx,
                                             hedgehog_[side]->grad);
      break;
    case MC::BASED:
      kernels::quadratic_feature_map_backward(taylor_map(in_dim_), s.x, dy, dx);
      break;
    case MC::REBASED: {
      Tensor du = Tensor::empty(s.x.shape(), dy.dtype(), dy.device());
      kernels::quadratic_feature_map_backward(rebased_map(in_dim_), s.u, dy, du);
      kernels::layernorm_backward(s.x, gamma_->value, s.mean, s.rstd, du, dx, gamma_->grad,
                                  beta_->grad);
      break;
    }
    case MC::COSINE:
      kernels::l2norm_backward(s.x, s.rstd, dy, dx);
      break;
    default:
      kernels::feature_map_backward(elementwise_map(map_), s.x, dy, dx);
      break;
  }
  s = Saved{};
  return dx;
}

}  // namespace linea
