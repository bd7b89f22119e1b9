#include "core/modules/mixers/gsa_mixer.h"

#include <cmath>

#include "core/modules/mixers/decay_ops.h"
#include "kernels/elementwise.h"
#include "kernels/gates.h"
#include "kernels/gsa.h"

namespace linea {
namespace {

int64_t slots_of(const config::MixerConfig& m) {
  LINEA_USER_CHECK(m.num_slots() > 0, "set model.mixer.num_slots > 0 (GSA memory slots per head)")
      << "model.mixer.num_slots is " << m.num_slots();
  return m.num_slots();
}

// GSA's damping tau: the paper (and fla's layer) use 8; an explicit model.mixer.
// gate_logit_normalizer overrides it (its proto default, 16, belongs to GLA).
double gsa_gate_normalizer(const config::MixerConfig& m) {
  const double tau = m.has_gate_logit_normalizer() ? m.gate_logit_normalizer() : 8.0;
  LINEA_USER_CHECK(tau > 0, "set model.mixer.gate_logit_normalizer > 0 (GSA's tau, default 8)")
      << "model.mixer.gate_logit_normalizer is " << tau;
  return tau;
}

}  // namespace

GatedSlotAttention::GatedSlotAttention(const MixerContext& ctx, const config::MixerConfig& m)
    : heads_(m.num_heads()),
      dk_(mixer_head_dim(ctx, m)),
      dv_(m.value_dim() > 0 ? m.value_dim() : mixer_head_dim(ctx, m)),
      slots_(slots_of(m)),
      gate_norm_(gsa_gate_normalizer(m)),
      conv_size_(m.short_conv() == config::MixerConfig::ON ? m.conv_size() : 0),
      q_proj_(ctx.prefix + ".q_proj", ctx.hidden, heads_ * dk_, ctx.dtype),
      k_proj_(ctx.prefix + ".k_proj", ctx.hidden, heads_ * dk_, ctx.dtype),
      v_proj_(ctx.prefix + ".v_proj", ctx.hidden, heads_ * dv_, ctx.dtype),
      f_proj_(ctx.prefix + ".f_proj", ctx.hidden, heads_ * slots_, ctx.dtype),
      o_proj_(ctx.prefix + ".o_proj", heads_ * dv_, ctx.hidden, ctx.dtype),
      keys_(m.chunk_size()),
      values_(m.chunk_size()) {
  if (conv_size_ > 0) {
    LINEA_USER_CHECK(conv_size_ >= 2, "set model.mixer.conv_size >= 2 or short_conv: OFF")
        << "model.mixer.conv_size is " << conv_size_;
    q_conv_.emplace(ctx.prefix + ".q_conv1d", heads_ * dk_, conv_size_, /*silu=*/true, ctx.dtype);
    k_conv_.emplace(ctx.prefix + ".k_conv1d", heads_ * dk_, conv_size_, /*silu=*/true, ctx.dtype);
    v_conv_.emplace(ctx.prefix + ".v_conv1d", heads_ * dv_, conv_size_, /*silu=*/true, ctx.dtype);
  }
  if (m.output_gate() != config::MixerConfig::OFF)
    out_gate_.emplace(ctx.prefix, ctx.hidden, heads_, dv_, ctx.dtype);
  if (m.output_norm()) o_norm_.emplace(ctx.prefix + ".o_norm", dv_, ctx.norm_eps, ctx.dtype);
}

void GatedSlotAttention::init(uint64_t seed, double std, double out_std) {
  init_normal(q_proj_.weight(), seed, std);
  init_normal(k_proj_.weight(), seed, std);
  init_normal(v_proj_.weight(), seed, std);
  init_normal(f_proj_.weight(), seed, std);
  if (out_gate_) out_gate_->init(seed, std);
  init_normal(o_proj_.weight(), seed, out_std);
  // PyTorch's Conv1d default (ShortConv::init): a conv at the projections' std would shrink q, k,
  // v by ~std.
  for (auto* c : {&q_conv_, &k_conv_, &v_conv_})
    if (*c) (*c)->init(seed);
}

void GatedSlotAttention::collect(ParameterList& out) {
  q_proj_.collect(out);
  k_proj_.collect(out);
  v_proj_.collect(out);
  f_proj_.collect(out);
  for (auto* c : {&q_conv_, &k_conv_, &v_conv_})
    if (*c) (*c)->collect(out);
  if (out_gate_) out_gate_->collect(out);
  if (o_norm_) o_norm_->collect(out);
  o_proj_.collect(out);
}

void GatedSlotAttention::release_saved() {
  for (Linear* l : {&q_proj_, &k_proj_, &v_proj_, &f_proj_, &o_proj_}) l->release_saved();
  for (auto* c : {&q_conv_, &k_conv_, &v_conv_})
    if (*c) (*c)->release_saved();
  if (out_gate_) out_gate_->release_saved();
  if (o_norm_) o_norm_->release_saved();
  keys_.release_saved();
  values_.release_saved();
  q_pre_ = k_pre_ = v_pre_ = f_ = log_alpha_ = p_ = Tensor();
}

Tensor GatedSlotAttention::forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) {
  const int64_t B = x.dim(0), T = x.dim(1), halo = halo_size();
  T_ = T;
  // Input side: projections (through the short conv over [halo; x] when it is on), then swish.
  Tensor q_pre, k_pre, v_pre;
  if (halo > 0) {
    const Tensor x_ext = prepend_halo(x, in.halo, halo);
    q_pre = q_conv_->forward(q_proj_.forward(x_ext));
    k_pre = k_conv_->forward(k_proj_.forward(x_ext));
    v_pre = v_conv_->forward(v_proj_.forward(x_ext));
  } else {
    q_pre = q_proj_.forward(x);
    k_pre = k_proj_.forward(x);
    v_pre = v_proj_.forward(x);
  }
  q_pre_ = q_pre.view({B, T, heads_, dk_});
  k_pre_ = k_pre.view({B, T, heads_, dk_});
  v_pre_ = v_pre.view({B, T, heads_, dv_});
  const Tensor q = decay_ops::act_forward(kernels::Activation::kSilu, q_pre_);
  const Tensor k = decay_ops::act_forward(kernels::Activation::kSilu, k_pre_);
  const Tensor v = decay_ops::act_forward(kernels::Activation::kSilu, v_pre_);

  // Slot gates: log alpha in log space; 1 - alpha = -expm1(log alpha) keeps precision near 0.
  const double tau = gate_norm_;
  f_ = f_proj_.forward(x).view({B, T, heads_, slots_});
  log_alpha_ = Tensor::empty(f_.shape(), x.dtype(), x.device());
  kernels::log_sigmoid_decay_forward(f_, tau, log_alpha_);
  Tensor one_minus_alpha = Tensor::empty(f_.shape(), x.dtype(), x.device());
  kernels::gsa_slot_write_forward(log_alpha_, one_minus_alpha);

  const Tensor s_in_k = in.states.size() > 0 ? in.states[0] : Tensor();
  const Tensor s_in_v = in.states.size() > 1 ? in.states[1] : Tensor();
  Tensor s_out_k, s_out_v;
  Transition tr_k, tr_v;
  const Tensor scores =
      keys_.forward(q, k, one_minus_alpha, Tensor(), log_alpha_, 1.0 / std::sqrt(double(dk_)),
                    s_in_k, recurrent_reference_, out ? &s_out_k : nullptr, out ? &tr_k : nullptr);
  p_ = Tensor::empty(scores.shape(), scores.dtype(), scores.device());
  kernels::gsa_slot_softmax_forward(scores, p_);
  Tensor o = values_.forward(p_, one_minus_alpha, v, log_alpha_, Tensor(), 1.0, s_in_v,
                             recurrent_reference_, out ? &s_out_v : nullptr, out ? &tr_v : nullptr);
  if (out) {
    out->final_states = {s_out_k, s_out_v};
    out->transitions = {tr_k, tr_v};
  }

  // Output side: per-head norm, swish output gate, projection.
  if (o_norm_) o = o_norm_->forward(o);
  if (out_gate_) o = out_gate_->forward(x, o);
  return o_proj_.forward(o.view({B, T, heads_ * dv_}));
}

Tensor GatedSlotAttention::backward_segment(const Tensor& dy, const SegmentGradIn& in,
                                            SegmentGradOut* out) {
  const int64_t B = dy.dim(0), T = T_, halo = halo_size();
  Tensor d_o = o_proj_.backward(dy).view({B, T, heads_, dv_});
  Tensor dx;
  if (out_gate_) d_o = out_gate_->backward(d_o, dx);
  if (o_norm_) d_o = o_norm_->backward(d_o);

  const Tensor ds_out_k = in.d_final_states.size() > 0 ? in.d_final_states[0] : Tensor();
  const Tensor ds_out_v = in.d_final_states.size() > 1 ? in.d_final_states[1] : Tensor();
  // Pass 2, then the softmax, then pass 1: dp is the gradient of pass 2's query.
  GlaCore::Grads gv = values_.backward(d_o, ds_out_v, out != nullptr);
  Tensor d_scores = Tensor::empty(p_.shape(), p_.dtype(), p_.device());
  kernels::gsa_slot_softmax_backward(p_, gv.dq, d_scores);
  GlaCore::Grads gk = keys_.backward(d_scores, ds_out_k, out != nullptr);
  if (out) out->d_states = {gk.ds_in, gv.ds_in};
  p_ = Tensor();

  // 1 - alpha is pass 1's value and pass 2's key; log alpha is both passes' decay.
  const double tau = gate_norm_;
  Tensor d_la = gk.dgv;
  kernels::add_inplace(d_la, gv.dgk);
  Tensor d_one_minus = gk.dv;
  kernels::add_inplace(d_one_minus, gv.dk);
  Tensor d_total = Tensor::empty(f_.shape(), dy.dtype(), dy.device());
  kernels::gsa_slot_write_backward(log_alpha_, d_la, d_one_minus, d_total);
  Tensor df = Tensor::empty(f_.shape(), dy.dtype(), dy.device());
  kernels::log_sigmoid_decay_backward(f_, d_total, tau, df);
  log_alpha_ = f_ = Tensor();
  kernels::accumulate(dx, f_proj_.backward(df.view({B, T, heads_ * slots_})));

  const Tensor dq = decay_ops::act_backward(kernels::Activation::kSilu, q_pre_, gk.dq);
  const Tensor dk = decay_ops::act_backward(kernels::Activation::kSilu, k_pre_, gk.dk);
  const Tensor dv = decay_ops::act_backward(kernels::Activation::kSilu, v_pre_, gv.dv);
  q_pre_ = k_pre_ = v_pre_ = Tensor();
  if (halo > 0) {
    Tensor dx_ext = q_proj_.backward(q_conv_->backward(dq.view({B, T, -1})));
    kernels::add_inplace(dx_ext, k_proj_.backward(k_conv_->backward(dk.view({B, T, -1}))));
    kernels::add_inplace(dx_ext, v_proj_.backward(v_conv_->backward(dv.view({B, T, -1}))));
    kernels::add_inplace(dx, split_halo(dx_ext, halo, out ? &out->d_halo : nullptr));
  } else {
    kernels::add_inplace(dx, q_proj_.backward(dq.view({B, T, heads_ * dk_})));
    kernels::add_inplace(dx, k_proj_.backward(dk.view({B, T, heads_ * dk_})));
    kernels::add_inplace(dx, v_proj_.backward(dv.view({B, T, heads_ * dv_})));
  }
  return dx;
}

std::unique_ptr<TokenMixer> make_gsa_mixer(const MixerContext& ctx, const config::MixerConfig& m) {
  return std::make_unique<GatedSlotAttention>(ctx, m);
}

}  // namespace linea
