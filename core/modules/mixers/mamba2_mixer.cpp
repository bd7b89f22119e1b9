// Mamba2 (Dao & Gu 2024, "Transformers are SSMs", the SSD layer) as a scalar-decay GlaCore pass.
// SSD per head h with the state S [N, P]:  S_t = exp(dt_t A_h) S_{t-1} + B_t^T (dt_t x_t),
// o_t = C_t S_t + D_h x_t: the key is B, the query C, the value the discretised x dt, the log
// decay g_t = dt_t A_h with A_h = -exp(A_log_h) < 0 and dt_t = softplus(.) > 0, so 0 < exp(g) < 1.
// docs/model/decay_mixers.md has the full layer and the parameter names.
#include <cmath>
#include <vector>

#include "core/modules/mixers/decay_mixers.h"
#include "kernels/elementwise.h"
#include "kernels/gates.h"
#include "kernels/ssd.h"

namespace linea {
namespace {

using MC = config::MixerConfig;
using kernels::Activation;

int64_t inner_width(const MixerContext& ctx, const MC& m) {
  const double w = m.expand_v() * double(ctx.hidden);
  LINEA_USER_CHECK(std::abs(w - std::round(w)) < 1e-9 && w >= 1,
                   "choose model.mixer.expand_v so that expand_v * model.hidden_size is a whole "
                   "number")
      << "MAMBA2: model.mixer.expand_v = " << m.expand_v() << " times hidden_size " << ctx.hidden
      << " = " << w;
  const int64_t inner = std::llround(w);
  LINEA_USER_CHECK(inner % m.num_heads() == 0,
                   "choose model.mixer.num_heads dividing expand_v * model.hidden_size")
      << "MAMBA2: the value width expand_v * hidden_size = " << inner
      << " is not divisible by model.mixer.num_heads = " << m.num_heads();
  const int64_t head_v = inner / m.num_heads();
  LINEA_USER_CHECK(m.value_dim() == 0 || m.value_dim() == head_v,
                   "leave model.mixer.value_dim at 0 for MAMBA2 (expand_v sets the value width)")
      << "MAMBA2: model.mixer.value_dim = " << m.value_dim() << " but expand_v * hidden_size / "
      << "num_heads = " << head_v;
  return inner;
}

bool gate_on(const MC& m) { return m.output_gate() != MC::OFF; }  // Mamba2 has the z gate

// [B, T, N] -> [B, T, H, N]: the one group of B (or C) every head reads.
Tensor heads_broadcast(const Tensor& m, int64_t H) {
  Tensor out = Tensor::empty({m.dim(0), m.dim(1), H, m.dim(2)}, m.dtype(), m.device());
  kernels::ssd_heads_broadcast(m, out);
  return out;
}

// Its gradient partner: [B, T, H, N] -> [B, T, N] summed over heads.
Tensor heads_sum(const Tensor& d) {
  Tensor out = Tensor::empty({d.dim(0), d.dim(1), d.dim(3)}, d.dtype(), d.device());
  kernels::ssd_heads_sum(d, out);
  return out;
}

}  // namespace

Mamba2::Mamba2(const MixerContext& ctx, const MC& m)
    : heads_(m.num_heads()),
      head_v_(inner_width(ctx, m) / m.num_heads()),
      state_(mixer_head_dim(ctx, m)),  // N: head_dim sets the state width
      inner_(inner_width(ctx, m)),
      gate_(gate_on(m)),
      col_x_(gate_ ? inner_ : 0),
      col_dt_(col_x_ + inner_ + 2 * state_),
      proj_width_(col_dt_ + heads_),
      in_proj_(ctx.prefix + ".in_proj", ctx.hidden, proj_width_, ctx.dtype),
      out_proj_(ctx.prefix + ".out_proj", inner_, ctx.hidden, ctx.dtype),
      A_log_(make_parameter(ctx.prefix + ".A_log", {heads_}, ctx.dtype, false)),
      dt_bias_(make_parameter(ctx.prefix + ".dt_bias", {heads_}, ctx.dtype, false)),
      D_(make_parameter(ctx.prefix + ".D", {heads_}, ctx.dtype, false)),
      core_(m.chunk_size()) {
  if (m.short_conv() != MC::OFF) {
    LINEA_USER_CHECK(m.conv_size() >= 2, "set model.mixer.conv_size >= 2, or short_conv: OFF")
        << "MAMBA2: model.mixer.conv_size = " << m.conv_size() << " leaves nothing to convolve";
    conv_.emplace(ctx.prefix + ".conv1d", inner_ + 2 * state_, m.conv_size(), /*silu=*/true,
                  ctx.dtype);
  }
  // Over the whole inner width: mamba_ssm's RMSNormGated with one group.
  if (m.output_norm()) norm_.emplace(ctx.prefix + ".norm", inner_, ctx.norm_eps, ctx.dtype);
}

void Mamba2::init(uint64_t seed, double std, double out_std) {
  init_normal(in_proj_.weight(), seed, std);
  init_normal(out_proj_.weight(), seed, out_std);
  if (conv_) conv_->init(seed);
  // mamba_ssm draws A ~ U[1, 16] and dt ~ logU[1e-3, 1e-1] at random; we take the same ranges at
  // evenly spaced quantiles of the heads, so every rank and seed agrees and the heads still span
  // short to long memories.
  const double dt_min = 1e-3, dt_max = 1e-1, dt_floor = 1e-4;
  std::vector<double> a_log(heads_), dt_bias(heads_);
  for (int64_t h = 0; h < heads_; ++h) {
    const double u = (h + 0.5) / double(heads_);
    a_log[h] = std::log(1 + 15 * u);
    const double dt =
        std::max(dt_floor, std::exp(std::log(dt_min) + u * (std::log(dt_max) - std::log(dt_min))));
    dt_bias[h] = dt + std::log(-std::expm1(-dt));  // softplus^-1(dt)
  }
  // Made on the host, copied to wherever the parameters live.
  A_log_.value.copy_from(Tensor::from_vector({heads_}, a_log, DType::kF64));
  dt_bias_.value.copy_from(Tensor::from_vector({heads_}, dt_bias, DType::kF64));
  init_constant(D_, 1.0);
}

void Mamba2::collect(ParameterList& out) {
  in_proj_.collect(out);
  if (conv_) conv_->collect(out);
  out.push_back(&dt_bias_);
  out.push_back(&A_log_);
  out.push_back(&D_);
  if (norm_) norm_->collect(out);
  out_proj_.collect(out);
}

Tensor Mamba2::forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) {
  const int64_t B = x.dim(0), T = x.dim(1), halo = halo_size();
  const Tensor proj = in_proj_.forward(prepend_halo(x, in.halo, halo));  // [B, halo + T, W]
  // Only x, B and C pass through the convolution, so only they use the halo rows.
  Tensor xbc_raw = decay_ops::columns(proj, 0, col_x_, col_x_ + inner_ + 2 * state_);
  Tensor xbc;
  if (conv_) {
    xbc = conv_->forward(xbc_raw);
  } else {
    xbc = decay_ops::act_forward(Activation::kSilu, xbc_raw);
    xbc_raw_ = xbc_raw;
  }
  xs_ = decay_ops::columns(xbc, 0, 0, inner_).view({B, T, heads_, head_v_});
  const Tensor b_mat = decay_ops::columns(xbc, 0, inner_, inner_ + state_);
  const Tensor c_mat = decay_ops::columns(xbc, 0, inner_ + state_, inner_ + 2 * state_);
  dt_in_ = decay_ops::columns(proj, halo, col_dt_, col_dt_ + heads_);
  decay_ops::add_bias(dt_in_, dt_bias_.value);
  dt_ = Tensor::empty(dt_in_.shape(), x.dtype(), x.device());
  kernels::softplus_forward(dt_in_, dt_);
  g_ = Tensor::empty(dt_.shape(), dt_.dtype(), dt_.device());
  Tensor v = Tensor::empty(xs_.shape(), xs_.dtype(), xs_.device());
  kernels::ssd_discretise(xs_, dt_, A_log_.value, g_, v);

  const Tensor s_in = in.states.empty() ? Tensor() : in.states[0];
  Tensor s_out;
  Transition tr;
  Tensor o =
      core_.forward(heads_broadcast(c_mat, heads_), heads_broadcast(b_mat, heads_), v, g_, Tensor(),
                    1.0, s_in, recurrent_reference_, out ? &s_out : nullptr, out ? &tr : nullptr);
  if (out) {
    out->final_states = {s_out};
    out->transitions = {tr};
  }
  kernels::ssd_add_skip(xs_, D_.value, o);
  Tensor u = o.view({B, T, inner_});
  if (gate_) {
    z_ = decay_ops::columns(proj, halo, 0, inner_);
    o_ = u;
    u = Tensor::empty(o_.shape(), x.dtype(), x.device());
    kernels::output_gate_forward(Activation::kSilu, z_, o_, u);
  }
  if (norm_) u = norm_->forward(u);
  return out_proj_.forward(u);
}

Tensor Mamba2::backward_segment(const Tensor& dy, const SegmentGradIn& in, SegmentGradOut* out) {
  const int64_t B = dy.dim(0), T = dy.dim(1), halo = halo_size();
  Tensor du = out_proj_.backward(dy);
  if (norm_) du = norm_->backward(du);
  Tensor d_o = du, dz;
  if (gate_) {
    dz = Tensor::empty(z_.shape(), dy.dtype(), dy.device());
    d_o = Tensor::empty(o_.shape(), dy.dtype(), dy.device());
    kernels::output_gate_backward(Activation::kSilu, z_, o_, du, dz, d_o);
    z_ = o_ = Tensor();
  }
  d_o = d_o.view({B, T, heads_, head_v_});
  const Tensor ds_out = in.d_final_states.empty() ? Tensor() : in.d_final_states[0];
  GlaCore::Grads g = core_.backward(d_o, ds_out, out != nullptr);
  if (out) out->d_states = {g.ds_in};

  Tensor dxs = Tensor::empty(xs_.shape(), dy.dtype(), dy.device());
  Tensor ddt = Tensor::empty(dt_.shape(), dy.dtype(), dy.device());
  kernels::ssd_discretise_backward(xs_, dt_, g_, A_log_.value, D_.value, g.dv, g.dgk, d_o, dxs, ddt,
                                   A_log_.grad, D_.grad);
  Tensor d_dt_in = Tensor::empty(dt_in_.shape(), dy.dtype(), dy.device());
  kernels::softplus_backward(dt_in_, ddt, d_dt_in);
  decay_ops::bias_backward(d_dt_in, dt_bias_.grad);
  const Tensor dxbc = decay_ops::concat_columns(
      {dxs.view({B, T, inner_}), heads_sum(g.dk), heads_sum(g.dq)});  // x, B (key), C (query)
  const Tensor dxbc_raw =
      conv_ ? conv_->backward(dxbc) : decay_ops::act_backward(Activation::kSilu, xbc_raw_, dxbc);
  xbc_raw_ = xs_ = dt_in_ = dt_ = g_ = Tensor();

  Tensor dproj = Tensor::zeros({B, halo + T, proj_width_}, dy.dtype(), dy.device());
  decay_ops::add_columns(dproj, 0, col_x_, dxbc_raw);
  if (gate_) decay_ops::add_columns(dproj, halo, 0, dz);
  decay_ops::add_columns(dproj, halo, col_dt_, d_dt_in);
  return split_halo(in_proj_.backward(dproj), halo, out ? &out->d_halo : nullptr);
}

}  // namespace linea
