#include "core/modules/mixers/linear_attention_mixer.h"

#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/linear_attention.h"

namespace linea {

LinearAttentionMixer::LinearAttentionMixer(const std::string& prefix,
                                           const LinearAttentionOptions& opt, DType dtype)
    : opt_(opt),
      q_proj_(prefix + ".q_proj", opt.hidden, opt.heads * opt.head_dim, dtype),
      k_proj_(prefix + ".k_proj", opt.hidden, opt.heads * opt.head_dim, dtype),
      v_proj_(prefix + ".v_proj", opt.hidden, opt.heads * opt.head_dim, dtype),
      o_proj_(prefix + ".o_proj", opt.heads * opt.head_dim, opt.hidden, dtype) {
  if (opt.output_norm) o_norm_.emplace(prefix + ".o_norm", opt.head_dim, opt.norm_eps, dtype);
}

void LinearAttentionMixer::init(uint64_t seed, double std, double out_std) {
  init_normal(q_proj_.weight(), seed, std);
  init_normal(k_proj_.weight(), seed, std);
  init_normal(v_proj_.weight(), seed, std);
  init_normal(o_proj_.weight(), seed, out_std);
}

Tensor LinearAttentionMixer::forward(const Tensor& x) {
  const int64_t B = x.dim(0), T = x.dim(1), H = opt_.heads, Dh = opt_.head_dim;
  q_ = q_proj_.forward(x).view({B, T, H, Dh});
  k_ = k_proj_.forward(x).view({B, T, H, Dh});
  v_ = v_proj_.forward(x).view({B, T, H, Dh});
  fq_ = Tensor::empty(q_.shape(), x.dtype());
  fk_ = Tensor::empty(k_.shape(), x.dtype());
  kernels::feature_map_forward(opt_.feature_map, q_, fq_);
  kernels::feature_map_forward(opt_.feature_map, k_, fk_);
  Tensor o = Tensor::empty({B, T, H, Dh}, x.dtype());
  Tensor no_state;
  kernels::linear_attention_chunked_forward(fq_, fk_, v_, 1.0 / std::sqrt(double(Dh)),
                                            std::min<int64_t>(opt_.chunk, T), no_state, o,
                                            no_state);
  if (o_norm_) o = o_norm_->forward(o);
  return o_proj_.forward(o.view({B, T, H * Dh}));
}

Tensor LinearAttentionMixer::backward(const Tensor& dy) {
  const int64_t B = dy.dim(0), T = dy.dim(1), H = opt_.heads, Dh = opt_.head_dim;
  Tensor d_o = o_proj_.backward(dy).view({B, T, H, Dh});
  if (o_norm_) d_o = o_norm_->backward(d_o);
  Tensor dfq = Tensor::empty(fq_.shape(), dy.dtype());
  Tensor dfk = Tensor::empty(fk_.shape(), dy.dtype());
  Tensor dv = Tensor::empty(v_.shape(), dy.dtype());
  Tensor none;
  kernels::linear_attention_chunked_backward(fq_, fk_, v_, 1.0 / std::sqrt(double(Dh)),
                                             std::min<int64_t>(opt_.chunk, T), none, d_o, none,
                                             dfq, dfk, dv, none);
  Tensor dq = Tensor::empty(q_.shape(), dy.dtype());
  Tensor dk = Tensor::empty(k_.shape(), dy.dtype());
  kernels::feature_map_backward(opt_.feature_map, q_, dfq, dq);
  kernels::feature_map_backward(opt_.feature_map, k_, dfk, dk);
  q_ = k_ = fq_ = fk_ = v_ = Tensor();
  Tensor dx = q_proj_.backward(dq.view({B, T, H * Dh}));
  kernels::add_inplace(dx, k_proj_.backward(dk.view({B, T, H * Dh})));
  kernels::add_inplace(dx, v_proj_.backward(dv.view({B, T, H * Dh})));
  return dx;
}

void LinearAttentionMixer::collect(ParameterList& out) {
  q_proj_.collect(out);
  k_proj_.collect(out);
  v_proj_.collect(out);
  if (o_norm_) o_norm_->collect(out);
  o_proj_.collect(out);
}

}  // namespace linea
