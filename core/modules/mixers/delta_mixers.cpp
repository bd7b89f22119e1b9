#include "core/modules/mixers/delta_mixers.h"

#include <algorithm>
#include <cmath>

#include "kernels/elementwise.h"  // gradient sums
#include "kernels/gates.h"        // beta = sigmoid, Mamba2 log decay
#include "kernels/l2norm.h"       // q, k normalisation

namespace linea {
namespace {

using MC = config::MixerConfig;

// Inside the root of the L2 norm, as fla's l2norm: keeps a zero row finite.
constexpr double kL2NormEps = 1e-6;

int64_t value_dim_of(const MC& m, int64_t dk) {
  if (m.value_dim() > 0) return m.value_dim();
  const double dv = m.expand_v() * double(dk);
  LINEA_USER_CHECK(dv >= 1 && std::abs(dv - std::round(dv)) < 1e-9,
                   "choose model.mixer.expand_v so that expand_v * head_dim is a whole number, or "
                   "set model.mixer.value_dim")
      << "model.mixer.expand_v = " << m.expand_v() << " times the head width " << dk << " is " << dv
      << " for " << MC::Kind_Name(m.kind());
  return static_cast<int64_t>(std::round(dv));
}

bool toggle(MC::Toggle t, bool paper_default) {
  return t == MC::ON || (t == MC::DEFAULT && paper_default);
}

// Conv width, or 0 when the conv is off (on by default in both papers).
int64_t conv_size_of(const MC& m) { return toggle(m.short_conv(), true) ? m.conv_size() : 0; }

}  // namespace

// ---- ConvProjection ---------------------------------------------------------------------------

ConvProjection::ConvProjection(const std::string& prefix, const std::string& name, int64_t in,
                               int64_t out, int64_t conv_size, DType dtype)
    : proj_(prefix + "." + name + "_proj", in, out, dtype) {
  // The conv weights decay like fla's (only norms and decay scalars are exempt).
  if (conv_size > 0) conv_.emplace(prefix + "." + name + "_conv1d", out, conv_size, true, dtype);
}

void ConvProjection::init(uint64_t seed, double std) {
  init_normal(proj_.weight(), seed, std);
  if (conv_) conv_->init(seed, std);  // fla initialises Conv1d like Linear
}

void ConvProjection::collect_conv(ParameterList& out) {
  if (conv_) conv_->collect(out);
}

void ConvProjection::release_saved() {
  proj_.release_saved();
  if (conv_) conv_->release_saved();
  pre_ = Tensor();
}

Tensor ConvProjection::forward(const Tensor& xe) {
  const Tensor pre = proj_.forward(xe);
  if (conv_) return conv_->forward(pre);
  pre_ = pre;
  Tensor y = Tensor::empty(pre.shape(), pre.dtype(), pre.device());
  kernels::activation_forward(kernels::Activation::kSilu, pre_, y);
  return y;
}

Tensor ConvProjection::backward(const Tensor& dy) {
  if (conv_) return proj_.backward(conv_->backward(dy));
  Tensor dpre = Tensor::empty(pre_.shape(), pre_.dtype(), pre_.device());
  kernels::activation_backward(kernels::Activation::kSilu, pre_, dy, dpre);
  pre_ = Tensor();
  return proj_.backward(dpre);
}

// ---- DeltaMixer -------------------------------------------------------------------------------

DeltaMixer::DeltaMixer(const MixerContext& ctx, const MC& m)
    : gated_(m.kind() == MC::GATED_DELTANET),
      heads_(m.num_heads()),
      dk_(mixer_head_dim(ctx, m)),
      dv_(value_dim_of(m, dk_)),
      halo_(std::max<int64_t>(conv_size_of(m) - 1, 0)),
      beta_scale_(m.allow_neg_eigval() ? 2.0 : 1.0),
      q_branch_(ctx.prefix, "q", ctx.hidden, heads_ * dk_, conv_size_of(m), ctx.dtype),
      k_branch_(ctx.prefix, "k", ctx.hidden, heads_ * dk_, conv_size_of(m), ctx.dtype),
      v_branch_(ctx.prefix, "v", ctx.hidden, heads_ * dv_, conv_size_of(m), ctx.dtype),
      b_proj_(ctx.prefix + ".b_proj", ctx.hidden, heads_, ctx.dtype),
      o_proj_(ctx.prefix + ".o_proj", heads_ * dv_, ctx.hidden, ctx.dtype),
      core_(m.chunk_size()) {
  LINEA_CHECK(m.kind() == MC::DELTANET || m.kind() == MC::GATED_DELTANET)
      << "make_delta_mixer got " << MC::Kind_Name(m.kind());
  if (gated_) {
    a_proj_.emplace(ctx.prefix + ".a_proj", ctx.hidden, heads_, ctx.dtype);
    A_log_ = make_parameter(ctx.prefix + ".A_log", {heads_}, ctx.dtype, /*weight_decay=*/false);
    dt_bias_ = make_parameter(ctx.prefix + ".dt_bias", {heads_}, ctx.dtype, /*weight_decay=*/false);
    init_decay_parameters();
  }
  // The output gate is part of Gated DeltaNet's output layer; DeltaNet has it as an option.
  if (toggle(m.output_gate(), gated_))
    out_gate_.emplace(ctx.prefix, ctx.hidden, heads_, dv_, ctx.dtype);
  if (m.output_norm()) o_norm_.emplace(ctx.prefix + ".o_norm", dv_, ctx.norm_eps, ctx.dtype);
}

// Mamba2's decay init made deterministic: head h sits at fraction t_h = h / (H - 1) of both
// ranges, A = 1 + 15 t_h (the uniform [1, 16] of Mamba2/fla, evenly spaced) and
// softplus(dt_bias) = dt = 1e-3 * 100^t_h (log-uniform in [1e-3, 1e-1]). Both increase with h, so
// the per-token decay rate A dt spans 1e-3 .. 1.6 across heads: some heads keep a long memory,
// others a short one, as random draws give on average.
void DeltaMixer::init_decay_parameters() {
  for (int64_t h = 0; h < heads_; ++h) {
    const double t = heads_ > 1 ? double(h) / double(heads_ - 1) : 0.5;
    A_log_->value.set_item(h, std::log(1.0 + 15.0 * t));
    const double dt = std::exp(std::log(1e-3) + t * (std::log(1e-1) - std::log(1e-3)));
    dt_bias_->value.set_item(h, dt + std::log(-std::expm1(-dt)));  // softplus^-1(dt)
  }
}

void DeltaMixer::init(uint64_t seed, double std, double out_std) {
  q_branch_.init(seed, std);
  k_branch_.init(seed, std);
  v_branch_.init(seed, std);
  init_normal(b_proj_.weight(), seed, std);
  if (a_proj_) init_normal(a_proj_->weight(), seed, std);
  if (out_gate_) out_gate_->init(seed, std);
  if (gated_) init_decay_parameters();
  init_normal(o_proj_.weight(), seed, out_std);
}

void DeltaMixer::collect(ParameterList& out) {
  q_branch_.collect_projection(out);
  k_branch_.collect_projection(out);
  v_branch_.collect_projection(out);
  if (a_proj_) a_proj_->collect(out);
  b_proj_.collect(out);
  if (A_log_) out.push_back(&*A_log_);
  if (dt_bias_) out.push_back(&*dt_bias_);
  if (out_gate_) out_gate_->collect(out);
  q_branch_.collect_conv(out);
  k_branch_.collect_conv(out);
  v_branch_.collect_conv(out);
  if (o_norm_) o_norm_->collect(out);
  o_proj_.collect(out);
}

void DeltaMixer::release_saved() {
  for (ConvProjection* b : {&q_branch_, &k_branch_, &v_branch_}) b->release_saved();
  b_proj_.release_saved();
  if (a_proj_) a_proj_->release_saved();
  if (out_gate_) out_gate_->release_saved();
  if (o_norm_) o_norm_->release_saved();
  o_proj_.release_saved();
  core_.release_saved();
  q_raw_ = k_raw_ = q_rstd_ = k_rstd_ = q_ = k_ = b_ = beta_ = a_ = g_ = Tensor();
}

Tensor DeltaMixer::forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) {
  const int64_t B = x.dim(0), T = x.dim(1);
  LINEA_CHECK(in.states.size() <= 1) << "a delta mixer has one state, got " << in.states.size();

  // q, k, v see the halo (zeros at the start of a sequence: the conv's zero padding).
  const Tensor xe = prepend_halo(x, in.halo, halo_);
  q_raw_ = q_branch_.forward(xe).view({B, T, heads_, dk_});
  k_raw_ = k_branch_.forward(xe).view({B, T, heads_, dk_});
  Tensor v = v_branch_.forward(xe).view({B, T, heads_, dv_});
  const Device dev = x.device();
  q_ = Tensor::empty(q_raw_.shape(), x.dtype(), dev);
  k_ = Tensor::empty(k_raw_.shape(), x.dtype(), dev);
  q_rstd_ = Tensor::empty({B, T, heads_}, x.dtype(), dev);
  k_rstd_ = Tensor::empty({B, T, heads_}, x.dtype(), dev);
  kernels::l2norm_forward(q_raw_, kL2NormEps, q_, q_rstd_);
  kernels::l2norm_forward(k_raw_, kL2NormEps, k_, k_rstd_);

  b_ = b_proj_.forward(x);  // [B, T, H]
  beta_ = Tensor::empty(b_.shape(), x.dtype(), dev);
  kernels::delta_beta_forward(b_, beta_scale_, beta_);
  g_ = Tensor();
  if (gated_) {
    a_ = a_proj_->forward(x);
    g_ = Tensor::empty(a_.shape(), x.dtype(), dev);
    kernels::delta_log_decay_forward(a_, A_log_->value, dt_bias_->value, g_);
  }

  const Tensor s_in = in.states.empty() ? Tensor() : in.states[0];
  Tensor s_out;
  Transition tr;
  Tensor o = core_.forward(q_, k_, v, g_, beta_, 1.0 / std::sqrt(double(dk_)), s_in,
                           recurrent_reference_, out ? &s_out : nullptr, out ? &tr : nullptr);
  if (out) {
    out->final_states = {s_out};
    out->transitions = {tr};
  }
  if (o_norm_) o = o_norm_->forward(o);
  if (out_gate_) o = out_gate_->forward(x, o);
  return o_proj_.forward(o.view({B, T, heads_ * dv_}));
}

Tensor DeltaMixer::backward_segment(const Tensor& dy, const SegmentGradIn& in,
                                    SegmentGradOut* out) {
  const int64_t B = dy.dim(0), T = dy.dim(1);
  Tensor dx;  // the gradient reaching x through the projections that do not see the halo
  Tensor d_o = o_proj_.backward(dy).view({B, T, heads_, dv_});
  if (out_gate_) {
    Tensor dx_gate;
    d_o = out_gate_->backward(d_o, dx_gate);
    kernels::accumulate(dx, dx_gate);
  }
  if (o_norm_) d_o = o_norm_->backward(d_o);

  const Tensor ds_out = in.d_final_states.empty() ? Tensor() : in.d_final_states[0];
  DeltaCore::Grads gr = core_.backward(d_o, ds_out, out != nullptr);
  if (out) out->d_states = {gr.ds_in};

  const Device dev = dy.device();
  Tensor db = Tensor::empty(b_.shape(), dy.dtype(), dev);
  kernels::delta_beta_backward(b_, beta_scale_, gr.dbeta, db);
  kernels::accumulate(dx, b_proj_.backward(db));
  if (gated_) {
    Tensor da = Tensor::empty(a_.shape(), dy.dtype(), dev);
    kernels::delta_log_decay_backward(a_, A_log_->value, dt_bias_->value, gr.dg, da, A_log_->grad,
                                      dt_bias_->grad);
    kernels::accumulate(dx, a_proj_->backward(da));
  }
  b_ = beta_ = a_ = g_ = Tensor();

  Tensor dq = Tensor::empty(q_raw_.shape(), dy.dtype(), dev);
  Tensor dk = Tensor::empty(k_raw_.shape(), dy.dtype(), dev);
  kernels::l2norm_backward(q_raw_, q_rstd_, gr.dq, dq);
  kernels::l2norm_backward(k_raw_, k_rstd_, gr.dk, dk);
  q_raw_ = k_raw_ = q_rstd_ = k_rstd_ = q_ = k_ = Tensor();

  Tensor dxe = q_branch_.backward(dq.view({B, T, heads_ * dk_}));
  kernels::add_inplace(dxe, k_branch_.backward(dk.view({B, T, heads_ * dk_})));
  kernels::add_inplace(dxe, v_branch_.backward(gr.dv.view({B, T, heads_ * dv_})));
  kernels::add_inplace(dx, split_halo(dxe, halo_, out ? &out->d_halo : nullptr));
  return dx;
}

std::unique_ptr<TokenMixer> make_delta_mixer(const MixerContext& ctx, const MC& m) {
  return std::make_unique<DeltaMixer>(ctx, m);
}

}  // namespace linea
