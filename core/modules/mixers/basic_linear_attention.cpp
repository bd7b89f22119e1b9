#include "core/modules/mixers/basic_linear_attention.h"

#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/rope.h"
#include "kernels/sequence.h"

namespace linea {
namespace {

// RoPE base of the window branch. MixerConfig has no field for it; Based's attention layers use
// the usual 10000 (model.attention.rope_theta belongs to the N layers).
constexpr double kWindowRopeTheta = 10000.0;

int64_t window_of(const config::MixerConfig& m) {
  LINEA_USER_CHECK(m.window_size() == 0 || m.feature_map() == config::MixerConfig::BASED,
                   "set model.mixer.window_size = 0, or feature_map = BASED")
      << "model.mixer.window_size = " << m.window_size()
      << ": the sliding-window branch belongs to Based (feature_map BASED), not to feature_map "
      << config::MixerConfig::FeatureMap_Name(m.feature_map());
  return m.window_size();
}

}  // namespace

BasicLinearAttention::BasicLinearAttention(const MixerContext& ctx, const config::MixerConfig& m)
    : heads_(m.num_heads()),
      dk_(mixer_head_dim(ctx, m)),
      dv_(m.value_dim() > 0 ? m.value_dim() : mixer_head_dim(ctx, m)),
      window_(window_of(m)),
      phi_(ctx.prefix, m, heads_, dk_, ctx.norm_eps, ctx.dtype),
      q_proj_(ctx.prefix + ".q_proj", ctx.hidden, heads_ * phi_.in_dim(), ctx.dtype),
      k_proj_(ctx.prefix + ".k_proj", ctx.hidden, heads_ * phi_.in_dim(), ctx.dtype),
      v_proj_(ctx.prefix + ".v_proj", ctx.hidden, heads_ * dv_, ctx.dtype),
      o_proj_(ctx.prefix + ".o_proj", heads_ * dv_, ctx.hidden, ctx.dtype),
      core_(m.chunk_size()) {
  if (m.output_norm()) o_norm_.emplace(ctx.prefix + ".o_norm", dv_, ctx.norm_eps, ctx.dtype);
  if (window_ > 0) {
    LINEA_USER_CHECK(dk_ % 2 == 0, "choose an even model.mixer.head_dim (RoPE rotates pairs)")
        << "model.mixer.head_dim = " << dk_
        << " is odd; Based's sliding-window branch (window_size > 0) applies RoPE to it";
    win_.emplace(ctx.prefix, ctx.hidden, heads_ * dk_, heads_ * dv_, ctx.dtype);
  }
}

BasicLinearAttention::Window::Window(const std::string& prefix, int64_t hidden, int64_t qk_width,
                                     int64_t v_width, DType dtype)
    : q_proj(prefix + ".window_q_proj", hidden, qk_width, dtype),
      k_proj(prefix + ".window_k_proj", hidden, qk_width, dtype),
      v_proj(prefix + ".window_v_proj", hidden, v_width, dtype) {}

void BasicLinearAttention::init(uint64_t seed, double std, double out_std) {
  init_normal(q_proj_.weight(), seed, std);
  init_normal(k_proj_.weight(), seed, std);
  init_normal(v_proj_.weight(), seed, std);
  phi_.init(seed);
  if (win_) {
    init_normal(win_->q_proj.weight(), seed, std);
    init_normal(win_->k_proj.weight(), seed, std);
    init_normal(win_->v_proj.weight(), seed, std);
  }
  init_normal(o_proj_.weight(), seed, out_std);
}

void BasicLinearAttention::collect(ParameterList& out) {
  q_proj_.collect(out);
  k_proj_.collect(out);
  v_proj_.collect(out);
  phi_.collect(out);
  if (win_) {
    win_->q_proj.collect(out);
    win_->k_proj.collect(out);
    win_->v_proj.collect(out);
  }
  if (o_norm_) o_norm_->collect(out);
  o_proj_.collect(out);
}

Tensor BasicLinearAttention::forward_segment(const Tensor& x, const SegmentIn& in,
                                             SegmentOut* out) {
  const int64_t B = x.dim(0), T = x.dim(1), dq = phi_.in_dim();
  Tensor fq = phi_.forward(QKFeatureMap::kQuery, q_proj_.forward(x).view({B, T, heads_, dq}));
  Tensor fk = phi_.forward(QKFeatureMap::kKey, k_proj_.forward(x).view({B, T, heads_, dq}));
  Tensor v = v_proj_.forward(x).view({B, T, heads_, dv_});
  const Tensor s_in = in.states.empty() ? Tensor() : in.states[0];
  Tensor s_out;
  Transition tr;
  Tensor o = core_.forward(fq, fk, v, Tensor(), Tensor(), phi_.scale(), s_in, recurrent_reference_,
                           out ? &s_out : nullptr, out ? &tr : nullptr);
  if (out) {
    out->final_states = {s_out};
    out->transitions = {tr};
  }
  if (o_norm_) o = o_norm_->forward(o);
  if (win_) kernels::add_inplace(o, window_forward(x, in.halo));
  return o_proj_.forward(o.view({B, T, heads_ * dv_}));
}

Tensor BasicLinearAttention::backward_segment(const Tensor& dy, const SegmentGradIn& in,
                                              SegmentGradOut* out) {
  const int64_t B = dy.dim(0), T = dy.dim(1), dq = phi_.in_dim();
  const Tensor d_sum = o_proj_.backward(dy).view({B, T, heads_, dv_});
  Tensor d_o = o_norm_ ? o_norm_->backward(d_sum) : d_sum;
  const Tensor ds_out = in.d_final_states.empty() ? Tensor() : in.d_final_states[0];
  GlaCore::Grads g = core_.backward(d_o, ds_out, out != nullptr);
  if (out) out->d_states = {g.ds_in};
  Tensor dq_in = phi_.backward(QKFeatureMap::kQuery, g.dq);
  Tensor dk_in = phi_.backward(QKFeatureMap::kKey, g.dk);
  Tensor dx = q_proj_.backward(dq_in.view({B, T, heads_ * dq}));
  kernels::add_inplace(dx, k_proj_.backward(dk_in.view({B, T, heads_ * dq})));
  kernels::add_inplace(dx, v_proj_.backward(g.dv.view({B, T, heads_ * dv_})));
  if (win_) {
    Tensor d_halo = window_backward(d_sum, dx);
    if (out) out->d_halo = d_halo;
  }
  return dx;
}

// Queries are the segment's rows; keys and values also cover the halo rows in front of them, so
// query i sits at position h + i of the extended segment (CausalMask.q_offset = h). Only relative
// positions enter RoPE's q.k, so positions local to the extended segment give the same scores as
// global ones. An undefined halo (sequence start) adds no rows: unlike the zero padding of a
// convolution, zero rows would be keys with score 0 and take softmax weight.
Tensor BasicLinearAttention::window_forward(const Tensor& x, const Tensor& halo) {
  const int64_t B = x.dim(0), T = x.dim(1);
  const int64_t h = halo.defined() ? halo.dim(1) : 0;
  LINEA_CHECK(h <= halo_size()) << "halo of " << h << " rows, the window needs " << halo_size();
  const Tensor xe = h > 0 ? kernels::concat_time(halo, x) : x;
  Window& w = *win_;
  w.mask = kernels::CausalMask{.q_offset = h, .window = window_};
  w.q = w.q_proj.forward(x).view({B, T, heads_, dk_});
  w.k = w.k_proj.forward(xe).view({B, T + h, heads_, dk_});
  w.v = w.v_proj.forward(xe).view({B, T + h, heads_, dv_});
  kernels::rope_forward(w.q, {.theta = kWindowRopeTheta, .pos_offset = h}, w.q);
  kernels::rope_forward(w.k, {.theta = kWindowRopeTheta, .pos_offset = 0}, w.k);
  w.o = Tensor::empty({B, T, heads_, dv_}, x.dtype());
  w.lse = Tensor::empty({B, heads_, T}, x.dtype());
  kernels::softmax_attention_forward(w.q, w.k, w.v, 1 / std::sqrt(double(dk_)), w.mask, w.o, w.lse);
  return w.o;
}

Tensor BasicLinearAttention::window_backward(const Tensor& d_o, Tensor& dx) {
  Window& w = *win_;
  const int64_t B = d_o.dim(0), T = d_o.dim(1), h = w.mask.q_offset;
  Tensor dq = Tensor::empty(w.q.shape(), d_o.dtype()), dk = Tensor::empty(w.k.shape(), d_o.dtype());
  Tensor dv = Tensor::empty(w.v.shape(), d_o.dtype());
  kernels::softmax_attention_backward(w.q, w.k, w.v, w.o, w.lse, d_o, 1 / std::sqrt(double(dk_)),
                                      w.mask, dq, dk, dv);
  kernels::rope_backward(dq, {.theta = kWindowRopeTheta, .pos_offset = h}, dq);
  kernels::rope_backward(dk, {.theta = kWindowRopeTheta, .pos_offset = 0}, dk);
  w.q = w.k = w.v = w.o = w.lse = Tensor();
  kernels::add_inplace(dx, w.q_proj.backward(dq.view({B, T, heads_ * dk_})));
  Tensor dxe = w.k_proj.backward(dk.view({B, T + h, heads_ * dk_}));
  kernels::add_inplace(dxe, w.v_proj.backward(dv.view({B, T + h, heads_ * dv_})));
  if (h == 0) {
    kernels::add_inplace(dx, dxe);
    return Tensor();
  }
  kernels::add_inplace(dx, kernels::slice_time(dxe, h, h + T));
  return kernels::slice_time(dxe, 0, h);
}

std::unique_ptr<TokenMixer> make_basic_linear_attention(const MixerContext& ctx,
                                                        const config::MixerConfig& m) {
  return std::make_unique<BasicLinearAttention>(ctx, m);
}

}  // namespace linea
