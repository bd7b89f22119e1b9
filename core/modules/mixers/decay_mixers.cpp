// LIGHTNING, RETNET, SIMPLE_GLA, GLA and HGRN2 (DecayAttention), and the factory of the family.
// Mamba2 lives in mamba2_mixer.cpp. The math, parameter names and papers:
// docs/model/decay_mixers.md.
#include "core/modules/mixers/decay_mixers.h"

#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/gates.h"

namespace linea {
namespace {

using MC = config::MixerConfig;
using kernels::Activation;

// HGRN2 keeps fla's names: its key projection feeds the forget gate, its value is the "input".
std::string key_name(MC::Kind k) { return k == MC::HGRN2 ? "f" : "k"; }
std::string value_name(MC::Kind k) { return k == MC::HGRN2 ? "i" : "v"; }

bool toggle_on(MC::Toggle t, bool paper_default) {
  return t == MC::ON || (t == MC::DEFAULT && paper_default);
}

// Per-head log decay of the constant-decay kinds.
std::vector<double> constant_log_decay_of(const MixerContext& ctx, const MC& m) {
  std::vector<double> out;
  const int H = m.num_heads();
  if (m.kind() == MC::LIGHTNING) {
    // ALiBi slopes s_h = 2^(-8 (h + 1) / H), scaled down with depth as TransNormerLLM does, so
    // that lower layers look locally and upper layers keep a longer memory.
    const double depth =
        ctx.num_layers > 1 ? 1 - double(ctx.layer) / double(ctx.num_layers - 1) + 1e-5 : 1.0;
    for (int h = 0; h < H; ++h) out.push_back(-std::exp2(-8.0 * (h + 1) / H) * depth);
  } else if (m.kind() == MC::RETNET) {
    // gamma_h = 1 - 2^(-5 - h); log1p keeps the slowest heads' log decay exact.
    for (int h = 0; h < H; ++h) out.push_back(std::log1p(-std::exp2(-5.0 - h)));
  }
  return out;
}

}  // namespace

DecayAttention::DecayAttention(const MixerContext& ctx, const MC& m)
    : kind_(m.kind()),
      heads_(m.num_heads()),
      dk_(mixer_head_dim(ctx, m)),
      dv_(m.value_dim() > 0 ? m.value_dim() : mixer_head_dim(ctx, m)),
      scale_(m.kind() == MC::LIGHTNING ? 1.0 : 1.0 / std::sqrt(double(mixer_head_dim(ctx, m)))),
      q_proj_(ctx.prefix + ".q_proj", ctx.hidden, heads_ * dk_, ctx.dtype),
      k_proj_(ctx.prefix + "." + key_name(kind_) + "_proj", ctx.hidden, heads_ * dk_, ctx.dtype),
      v_proj_(ctx.prefix + "." + value_name(kind_) + "_proj", ctx.hidden, heads_ * dv_, ctx.dtype),
      o_proj_(ctx.prefix + ".o_proj", heads_ * dv_, ctx.hidden, ctx.dtype),
      core_(m.chunk_size()),
      log_lambda_(constant_log_decay_of(ctx, m)) {
  LINEA_CHECK(kind_ == MC::LIGHTNING || kind_ == MC::RETNET || kind_ == MC::SIMPLE_GLA ||
              kind_ == MC::GLA || kind_ == MC::HGRN2)
      << MC::Kind_Name(kind_) << " is not a DecayAttention kind";
  if (toggle_on(m.short_conv(), false)) {
    LINEA_USER_CHECK(m.conv_size() >= 2, "set model.mixer.conv_size >= 2, or short_conv: OFF")
        << "model.mixer.conv_size = " << m.conv_size() << " leaves nothing to convolve";
    // HGRN2 convolves without activation (fla); Lightning's SiLU feature map follows the conv
    // anyway; the others use fla's SiLU convolution.
    const bool silu = kind_ != MC::HGRN2 && kind_ != MC::LIGHTNING;
    q_conv_.emplace(ctx.prefix + ".q_conv1d", heads_ * dk_, m.conv_size(), silu, ctx.dtype);
    k_conv_.emplace(ctx.prefix + "." + key_name(kind_) + "_conv1d", heads_ * dk_, m.conv_size(),
                    silu, ctx.dtype);
    v_conv_.emplace(ctx.prefix + "." + value_name(kind_) + "_conv1d", heads_ * dv_, m.conv_size(),
                    silu, ctx.dtype);
  }
  switch (kind_) {
    case MC::LIGHTNING:
      qk_act_ = Activation::kSilu;
      out_gate_act_ = Activation::kSigmoid;
      break;
    case MC::HGRN2:
      qk_act_ = Activation::kSilu;  // the query: HGRN's output gate, swish in fla's HGRN2
      lower_bound_ = m.forget_lower_bound();
      break;
    case MC::SIMPLE_GLA:
      gate_normalizer_ = m.gate_logit_normalizer();
      gk_proj_.emplace(ctx.prefix + ".gk_proj", ctx.hidden, heads_, ctx.dtype);
      gk_bias_ = make_parameter(ctx.prefix + ".gk_proj.bias", {heads_}, ctx.dtype, false);
      break;
    case MC::GLA:
      gate_normalizer_ = m.gate_logit_normalizer();
      gk_proj_.emplace(ctx.prefix + ".gk_proj.0", ctx.hidden, m.gate_low_rank(), ctx.dtype);
      gk_up_.emplace(ctx.prefix + ".gk_proj.1", m.gate_low_rank(), heads_ * dk_, ctx.dtype);
      gk_bias_ = make_parameter(ctx.prefix + ".gk_proj.1.bias", {heads_ * dk_}, ctx.dtype, false);
      break;
    default:
      break;
  }
  // HGRN2's output gate became its query (fla has no separate gate); the others gate the output.
  if (toggle_on(m.output_gate(), kind_ != MC::HGRN2))
    g_proj_.emplace(ctx.prefix + ".g_proj", ctx.hidden, heads_ * dv_, ctx.dtype);
  if (m.output_norm()) o_norm_.emplace(ctx.prefix + ".o_norm", dv_, ctx.norm_eps, ctx.dtype);
}

void DecayAttention::init(uint64_t seed, double std, double out_std) {
  init_normal(q_proj_.weight(), seed, std);
  init_normal(k_proj_.weight(), seed, std);
  init_normal(v_proj_.weight(), seed, std);
  for (auto* c : {&q_conv_, &k_conv_, &v_conv_})
    if (*c) (*c)->init(seed);
  if (gk_proj_) init_normal(gk_proj_->weight(), seed, std);
  if (gk_up_) init_normal(gk_up_->weight(), seed, std);
  // Zero gate bias: every decay starts at sigmoid(0)^(1/normalizer), as in fla.
  if (gk_bias_) init_constant(*gk_bias_, 0.0);
  if (g_proj_) init_normal(g_proj_->weight(), seed, std);
  init_normal(o_proj_.weight(), seed, out_std);
}

void DecayAttention::collect(ParameterList& out) {
  q_proj_.collect(out);
  k_proj_.collect(out);
  v_proj_.collect(out);
  for (auto* c : {&q_conv_, &k_conv_, &v_conv_})
    if (*c) (*c)->collect(out);
  if (gk_proj_) gk_proj_->collect(out);
  if (gk_up_) gk_up_->collect(out);
  if (gk_bias_) out.push_back(&*gk_bias_);
  if (g_proj_) g_proj_->collect(out);
  if (o_norm_) o_norm_->collect(out);
  o_proj_.collect(out);
}

// x W (and the short convolution when on; xs then carries the halo rows).
Tensor DecayAttention::project(Linear& proj, std::optional<ShortConv>& conv, const Tensor& xs) {
  Tensor p = proj.forward(xs);
  return conv ? conv->forward(p) : p;
}

Tensor DecayAttention::project_backward(Linear& proj, std::optional<ShortConv>& conv,
                                        const Tensor& d) {
  return proj.backward(conv ? conv->backward(d) : d);
}

Tensor DecayAttention::forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) {
  const int64_t B = x.dim(0), T = x.dim(1), halo = halo_size();
  const Tensor xs = prepend_halo(x, in.halo, halo);
  q_pre_ = project(q_proj_, q_conv_, xs).view({B, T, heads_, dk_});
  k_pre_ = project(k_proj_, k_conv_, xs).view({B, T, heads_, dk_});
  Tensor v = project(v_proj_, v_conv_, xs).view({B, T, heads_, dv_});

  Tensor q = decay_ops::act_forward(qk_act_, q_pre_), k, gk;
  // The gates in the dtype the scan reads: the activations' on the CPU, f32 on CUDA.
  const Device dev = x.device();
  const DType gate_dtype = state_dtype(q);
  switch (kind_) {
    case MC::LIGHTNING:
    case MC::RETNET: {
      k = decay_ops::act_forward(qk_act_, k_pre_);
      // log(lambda_h) broadcast over the tokens: a zero [B, T, H] plus the per-head row, made
      // where the mixer runs (no host loop, no upload a step).
      gk = Tensor::zeros({B, T, heads_}, gate_dtype, dev);
      decay_ops::add_bias(gk, constant_log_decay_tensor(dev, gate_dtype));
      break;
    }
    case MC::SIMPLE_GLA:
    case MC::GLA: {
      k = k_pre_;
      gate_logits_ = gk_proj_->forward(x);
      if (gk_up_) gate_logits_ = gk_up_->forward(gate_logits_);
      decay_ops::add_bias(gate_logits_, gk_bias_->value);
      gk = Tensor::empty(gate_logits_.shape(), gate_logits_.dtype(), dev);
      kernels::log_sigmoid_decay_forward(gate_logits_, gate_normalizer_, gk);
      if (gk.dtype() != gate_dtype) gk = gk.to(gate_dtype);
      gk = kind_ == MC::GLA ? gk.view({B, T, heads_, dk_}) : gk.view({B, T, heads_});
      break;
    }
    case MC::HGRN2:
      gk = Tensor::empty(k_pre_.shape(), k_pre_.dtype(), dev);
      k = Tensor::empty(k_pre_.shape(), k_pre_.dtype(), dev);
      kernels::forget_gate_forward(k_pre_, lower_bound_, gk, k);
      if (gk.dtype() != gate_dtype) gk = gk.to(gate_dtype);
      break;
    default:
      break;
  }

  const Tensor s_in = in.states.empty() ? Tensor() : in.states[0];
  Tensor s_out;
  Transition tr;
  Tensor o = core_.forward(q, k, v, gk, Tensor(), scale_, s_in, recurrent_reference_,
                           out ? &s_out : nullptr, out ? &tr : nullptr);
  if (out) {
    out->final_states = {s_out};
    out->transitions = {tr};
  }
  if (o_norm_) o = o_norm_->forward(o);
  o = o.view({B, T, heads_ * dv_});
  if (g_proj_) {
    gate_in_ = g_proj_->forward(x);
    normed_ = o;
    o = Tensor::empty(normed_.shape(), x.dtype(), dev);
    kernels::output_gate_forward(out_gate_act_, gate_in_, normed_, o);
  }
  return o_proj_.forward(o);
}

Tensor DecayAttention::backward_segment(const Tensor& dy, const SegmentGradIn& in,
                                        SegmentGradOut* out) {
  const int64_t B = dy.dim(0), T = dy.dim(1), halo = halo_size();
  Tensor d_o = o_proj_.backward(dy);
  Tensor dx;  // the gradient reaching x through the paths that bypass the halo (gates)
  const Device dev = dy.device();
  if (g_proj_) {
    Tensor dg = Tensor::empty(gate_in_.shape(), dy.dtype(), dev);
    Tensor dn = Tensor::empty(normed_.shape(), dy.dtype(), dev);
    kernels::output_gate_backward(out_gate_act_, gate_in_, normed_, d_o, dg, dn);
    kernels::accumulate(dx, g_proj_->backward(dg));
    d_o = dn;
    gate_in_ = normed_ = Tensor();
  }
  d_o = d_o.view({B, T, heads_, dv_});
  if (o_norm_) d_o = o_norm_->backward(d_o);
  const Tensor ds_out = in.d_final_states.empty() ? Tensor() : in.d_final_states[0];
  // The constant decays of Lightning and RetNet take no gradient.
  const bool constant_decay = kind_ == MC::LIGHTNING || kind_ == MC::RETNET;
  GlaCore::Grads g = core_.backward(d_o, ds_out, out != nullptr, !constant_decay);
  if (out) out->d_states = {g.ds_in};

  Tensor dq = decay_ops::act_backward(qk_act_, q_pre_, g.dq), dk;
  switch (kind_) {
    case MC::LIGHTNING:
    case MC::RETNET:
      dk = decay_ops::act_backward(qk_act_, k_pre_, g.dk);  // the decays are constants
      break;
    case MC::SIMPLE_GLA:
    case MC::GLA: {
      dk = g.dk;
      Tensor dz = Tensor::empty(gate_logits_.shape(), gate_logits_.dtype(), dev);
      const Tensor dgk = g.dgk.dtype() == dz.dtype() ? g.dgk : g.dgk.to(dz.dtype());
      kernels::log_sigmoid_decay_backward(gate_logits_, dgk.view(gate_logits_.shape()),
                                          gate_normalizer_, dz);
      decay_ops::bias_backward(dz, gk_bias_->grad);
      if (gk_up_) dz = gk_up_->backward(dz);
      kernels::accumulate(dx, gk_proj_->backward(dz));
      gate_logits_ = Tensor();
      break;
    }
    case MC::HGRN2:
      dk = Tensor::empty(k_pre_.shape(), k_pre_.dtype(), dev);
      kernels::forget_gate_backward(k_pre_, lower_bound_,
                                    g.dgk.dtype() == dk.dtype() ? g.dgk : g.dgk.to(dk.dtype()),
                                    g.dk, dk);
      break;
    default:
      break;
  }
  q_pre_ = k_pre_ = Tensor();

  Tensor dxs = project_backward(q_proj_, q_conv_, dq.view({B, T, heads_ * dk_}));
  kernels::add_inplace(dxs, project_backward(k_proj_, k_conv_, dk.view({B, T, heads_ * dk_})));
  kernels::add_inplace(dxs, project_backward(v_proj_, v_conv_, g.dv.view({B, T, heads_ * dv_})));
  dxs = split_halo(dxs, halo, out ? &out->d_halo : nullptr);
  if (dx.defined()) kernels::add_inplace(dxs, dx);
  return dxs;
}

const Tensor& DecayAttention::constant_log_decay_tensor(Device device, DType dtype) {
  if (!log_lambda_tensor_.defined() || log_lambda_tensor_.device() != device ||
      log_lambda_tensor_.dtype() != dtype) {
    log_lambda_tensor_ = Tensor::from_vector({heads_}, log_lambda_, dtype).to(device);
  }
  return log_lambda_tensor_;
}

std::unique_ptr<TokenMixer> make_decay_mixer(const MixerContext& ctx, const MC& m) {
  switch (m.kind()) {
    case MC::LIGHTNING:
    case MC::RETNET:
    case MC::SIMPLE_GLA:
    case MC::GLA:
    case MC::HGRN2:
      return std::make_unique<DecayAttention>(ctx, m);
    case MC::MAMBA2:
      return std::make_unique<Mamba2>(ctx, m);
    default:
      break;
  }
  LINEA_CHECK(false) << "make_decay_mixer called for " << MC::Kind_Name(m.kind());
  return nullptr;
}

}  // namespace linea
