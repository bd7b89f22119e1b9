#include "core/modules/mixers/basic_linear_attention.h"

#include <cmath>

#include "kernels/elementwise.h"

namespace linea {
namespace {

kernels::FeatureMap feature_map_of(config::MixerConfig::FeatureMap f) {
  switch (f) {
    case config::MixerConfig::IDENTITY:
      return kernels::FeatureMap::kIdentity;
    case config::MixerConfig::ELU_PLUS_ONE:
      return kernels::FeatureMap::kEluPlusOne;
    case config::MixerConfig::RELU:
      return kernels::FeatureMap::kRelu;
    default:
      break;
  }
  LINEA_USER_CHECK(false, "use IDENTITY, ELU_PLUS_ONE or RELU")
      << "model.mixer.feature_map " << config::MixerConfig::FeatureMap_Name(f)
      << " is not supported by this build";
  return kernels::FeatureMap::kIdentity;
}

int64_t head_dim_of(const MixerContext& ctx, const config::MixerConfig& m) {
  return m.head_dim() > 0 ? m.head_dim() : ctx.hidden / m.num_heads();
}

}  // namespace

BasicLinearAttention::BasicLinearAttention(const MixerContext& ctx, const config::MixerConfig& m)
    : heads_(m.num_heads()),
      dk_(head_dim_of(ctx, m)),
      dv_(m.value_dim() > 0 ? m.value_dim() : head_dim_of(ctx, m)),
      feature_map_(feature_map_of(m.feature_map())),
      q_proj_(ctx.prefix + ".q_proj", ctx.hidden, heads_ * dk_, ctx.dtype),
      k_proj_(ctx.prefix + ".k_proj", ctx.hidden, heads_ * dk_, ctx.dtype),
      v_proj_(ctx.prefix + ".v_proj", ctx.hidden, heads_ * dv_, ctx.dtype),
      o_proj_(ctx.prefix + ".o_proj", heads_ * dv_, ctx.hidden, ctx.dtype),
      core_(m.chunk_size()) {
  if (m.output_norm()) o_norm_.emplace(ctx.prefix + ".o_norm", dv_, ctx.norm_eps, ctx.dtype);
}

void BasicLinearAttention::init(uint64_t seed, double std, double out_std) {
  init_normal(q_proj_.weight(), seed, std);
  init_normal(k_proj_.weight(), seed, std);
  init_normal(v_proj_.weight(), seed, std);
  init_normal(o_proj_.weight(), seed, out_std);
}

void BasicLinearAttention::collect(ParameterList& out) {
  q_proj_.collect(out);
  k_proj_.collect(out);
  v_proj_.collect(out);
  if (o_norm_) o_norm_->collect(out);
  o_proj_.collect(out);
}

Tensor BasicLinearAttention::forward_segment(const Tensor& x, const SegmentIn& in,
                                             SegmentOut* out) {
  const int64_t B = x.dim(0), T = x.dim(1);
  q_ = q_proj_.forward(x).view({B, T, heads_, dk_});
  k_ = k_proj_.forward(x).view({B, T, heads_, dk_});
  Tensor v = v_proj_.forward(x).view({B, T, heads_, dv_});
  Tensor fq = Tensor::empty(q_.shape(), x.dtype()), fk = Tensor::empty(k_.shape(), x.dtype());
  kernels::feature_map_forward(feature_map_, q_, fq);
  kernels::feature_map_forward(feature_map_, k_, fk);
  const Tensor s_in = in.states.empty() ? Tensor() : in.states[0];
  Tensor s_out;
  Transition tr;
  Tensor o = core_.forward(fq, fk, v, Tensor(), Tensor(), 1.0 / std::sqrt(double(dk_)), s_in,
                           recurrent_reference_, out ? &s_out : nullptr, out ? &tr : nullptr);
  if (out) {
    out->final_states = {s_out};
    out->transitions = {tr};
  }
  if (o_norm_) o = o_norm_->forward(o);
  return o_proj_.forward(o.view({B, T, heads_ * dv_}));
}

Tensor BasicLinearAttention::backward_segment(const Tensor& dy, const SegmentGradIn& in,
                                              SegmentGradOut* out) {
  const int64_t B = dy.dim(0), T = dy.dim(1);
  Tensor d_o = o_proj_.backward(dy).view({B, T, heads_, dv_});
  if (o_norm_) d_o = o_norm_->backward(d_o);
  const Tensor ds_out = in.d_final_states.empty() ? Tensor() : in.d_final_states[0];
  GlaCore::Grads g = core_.backward(d_o, ds_out, out != nullptr);
  if (out) out->d_states = {g.ds_in};
  Tensor dq = Tensor::empty(q_.shape(), dy.dtype()), dk = Tensor::empty(k_.shape(), dy.dtype());
  kernels::feature_map_backward(feature_map_, q_, g.dq, dq);
  kernels::feature_map_backward(feature_map_, k_, g.dk, dk);
  q_ = k_ = Tensor();
  Tensor dx = q_proj_.backward(dq.view({B, T, heads_ * dk_}));
  kernels::add_inplace(dx, k_proj_.backward(dk.view({B, T, heads_ * dk_})));
  kernels::add_inplace(dx, v_proj_.backward(g.dv.view({B, T, heads_ * dv_})));
  return dx;
}

std::unique_ptr<TokenMixer> make_basic_linear_attention(const MixerContext& ctx,
                                                        const config::MixerConfig& m) {
  return std::make_unique<BasicLinearAttention>(ctx, m);
}

}  // namespace linea
