#include "core/modules/mixers/softmax_attention_mixer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/elementwise.h"
#include "kernels/rope.h"
#include "parallel/sequence_collectives.h"

namespace linea {
namespace {

int64_t kv_heads_of(const config::AttentionConfig& a) {
  return a.num_kv_heads() > 0 ? a.num_kv_heads() : a.num_heads();
}

int64_t head_dim_of(const MixerContext& ctx, const config::AttentionConfig& a) {
  return a.head_dim() > 0 ? a.head_dim() : ctx.hidden / std::max(1, a.num_heads());
}

// The reference of recurrent-reference mode: every (query, key) pair visited one by one, in f64,
// with the mask written from its definition rather than the kernel's key spans.
template <typename T>
void naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                     const kernels::CausalMask& m, Tensor& o, Tensor& lse) {
  const int64_t B = q.dim(0), Tq = q.dim(1), Hq = q.dim(2), d = q.dim(3);
  const int64_t Tk = k.dim(1), Hkv = k.dim(2), dv = v.dim(3), group = Hq / Hkv;
  const T* qp = q.data<T>();
  const T* kp = k.data<T>();
  const T* vp = v.data<T>();
  T* op = o.data<T>();
  T* lp = lse.data<T>();
  std::vector<double> s(static_cast<size_t>(Tk));
  std::vector<double> acc(static_cast<size_t>(dv));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / group;
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t pos = m.q_offset + i;
        const T* qi = qp + ((b * Tq + i) * Hq + h) * d;
        double mx = -INFINITY;
        for (int64_t j = 0; j < Tk; ++j) {
          const bool visible = j <= pos && (m.window == 0 || j > pos - m.window);
          if (!visible) {
            s[j] = -INFINITY;
            continue;
          }
          const T* kj = kp + ((b * Tk + j) * Hkv + g) * d;
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += double(qi[c]) * double(kj[c]);
          s[j] = scale * dot;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < Tk; ++j) sum += std::exp(s[j] - mx);  // exp(-inf) = 0
        const double l = mx + std::log(sum);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < Tk; ++j) {
          const double p = std::exp(s[j] - l);
          if (p == 0) continue;
          const T* vj = vp + ((b * Tk + j) * Hkv + g) * dv;
          for (int64_t c = 0; c < dv; ++c) acc[c] += p * double(vj[c]);
        }
        T* oi = op + ((b * Tq + i) * Hq + h) * dv;
        for (int64_t c = 0; c < dv; ++c) oi[c] = static_cast<T>(acc[c]);
        lp[(b * Hq + h) * Tq + i] = static_cast<T>(l);
      }
    }
}

}  // namespace

SoftmaxAttention::SoftmaxAttention(const MixerContext& ctx, const config::AttentionConfig& a)
    : hidden_(ctx.hidden),
      heads_(a.num_heads()),
      kv_heads_(kv_heads_of(a)),
      head_dim_(head_dim_of(ctx, a)),
      rope_theta_(a.rope_theta()),
      window_(a.window_size()),
      q_proj_(ctx.prefix + ".q_proj", ctx.hidden, heads_ * head_dim_, ctx.dtype),
      k_proj_(ctx.prefix + ".k_proj", ctx.hidden, kv_heads_ * head_dim_, ctx.dtype),
      v_proj_(ctx.prefix + ".v_proj", ctx.hidden, kv_heads_ * head_dim_, ctx.dtype),
      o_proj_(ctx.prefix + ".o_proj", heads_ * head_dim_, ctx.hidden, ctx.dtype) {
  // validate.cpp checks these for configs; repeated here because tests and tools build mixers
  // from configs that were never validated.
  LINEA_USER_CHECK(heads_ > 0, "set model.attention.num_heads to 1 or more")
      << "model.attention.num_heads = " << heads_;
  LINEA_USER_CHECK(kv_heads_ > 0 && heads_ % kv_heads_ == 0,
                   "choose model.attention.num_kv_heads dividing model.attention.num_heads")
      << "model.attention.num_kv_heads = " << kv_heads_ << " with num_heads = " << heads_;
  LINEA_USER_CHECK(a.head_dim() > 0 || ctx.hidden % heads_ == 0,
                   "choose model.attention.num_heads dividing model.hidden_size, or set "
                   "model.attention.head_dim")
      << "model.attention.num_heads = " << heads_ << " with model.hidden_size = " << ctx.hidden;
  LINEA_USER_CHECK(head_dim_ > 0 && head_dim_ % 2 == 0,
                   "RoPE rotates pairs: use an even model.attention.head_dim")
      << "model.attention head width " << head_dim_;
  LINEA_USER_CHECK(window_ >= 0, "set model.attention.window_size to 0 (none) or a token count")
      << "model.attention.window_size = " << window_;
  if (a.qk_norm()) {
    q_norm_.emplace(ctx.prefix + ".q_norm", head_dim_, ctx.norm_eps, ctx.dtype);
    k_norm_.emplace(ctx.prefix + ".k_norm", head_dim_, ctx.norm_eps, ctx.dtype);
  }
}

void SoftmaxAttention::init(uint64_t seed, double std, double out_std) {
  init_normal(q_proj_.weight(), seed, std);
  init_normal(k_proj_.weight(), seed, std);
  init_normal(v_proj_.weight(), seed, std);
  init_normal(o_proj_.weight(), seed, out_std);
}

void SoftmaxAttention::collect(ParameterList& out) {
  q_proj_.collect(out);
  k_proj_.collect(out);
  v_proj_.collect(out);
  if (q_norm_) q_norm_->collect(out);
  if (k_norm_) k_norm_->collect(out);
  o_proj_.collect(out);
}

void SoftmaxAttention::set_position_offset(int64_t offset) {
  LINEA_CHECK(offset >= 0) << "softmax attention: position offset " << offset << " must be >= 0";
  position_offset_ = offset;
}

kernels::CausalMask SoftmaxAttention::mask_for(int64_t keys_start, int64_t tq, int64_t tk) const {
  LINEA_CHECK(keys_start >= 0 && keys_start <= position_offset_ &&
              position_offset_ - keys_start + tq <= tk)
      << "softmax attention: " << tq << " queries at global positions " << position_offset_
      << ".. need their keys, got " << tk << " keys from position " << keys_start;
  kernels::CausalMask m;
  m.q_offset = position_offset_ - keys_start;
  m.window = window_;
  return m;
}

// ---- step 1: projections, qk-norm, RoPE ---------------------------------------------------

SoftmaxAttention::Local SoftmaxAttention::project(const Tensor& x) {
  const int64_t B = x.dim(0), T = x.dim(1);
  Local l;
  l.q = q_proj_.forward(x).view({B, T, heads_, head_dim_});
  l.k = k_proj_.forward(x).view({B, T, kv_heads_, head_dim_});
  l.v = v_proj_.forward(x).view({B, T, kv_heads_, head_dim_});
  if (q_norm_) l.q = q_norm_->forward(l.q);
  if (k_norm_) l.k = k_norm_->forward(l.k);
  // The rotation is applied in place: neither the projections nor the norms keep their outputs.
  const kernels::RopeParams rope{rope_theta_, position_offset_};
  kernels::rope_forward(l.q, rope, l.q);
  kernels::rope_forward(l.k, rope, l.k);
  return l;
}

Tensor SoftmaxAttention::project_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  const int64_t B = dq.dim(0), T = dq.dim(1);
  const kernels::RopeParams rope{rope_theta_, position_offset_};
  Tensor dq_pre = Tensor::empty(dq.shape(), dq.dtype(), dq.device());
  Tensor dk_pre = Tensor::empty(dk.shape(), dk.dtype(), dk.device());
  kernels::rope_backward(dq, rope, dq_pre);
  kernels::rope_backward(dk, rope, dk_pre);
  if (q_norm_) dq_pre = q_norm_->backward(dq_pre);
  if (k_norm_) dk_pre = k_norm_->backward(dk_pre);
  Tensor dx = q_proj_.backward(dq_pre.view({B, T, heads_ * head_dim_}));
  kernels::add_inplace(dx, k_proj_.backward(dk_pre.view({B, T, kv_heads_ * head_dim_})));
  kernels::add_inplace(dx, v_proj_.backward(dv.view({B, T, kv_heads_ * head_dim_})));
  return dx;
}

// ---- step 2: attention over (possibly gathered) keys --------------------------------------

Tensor SoftmaxAttention::attend(const Tensor& q, const Tensor& k, const Tensor& v,
                                int64_t keys_start) {
  const int64_t B = q.dim(0), Tq = q.dim(1);
  mask_ = mask_for(keys_start, Tq, k.dim(1));
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  const Device dev = q.device();
  Tensor o = Tensor::empty({B, Tq, heads_, v.dim(3)}, q.dtype(), dev);
  // Saved statistics are f32 on CUDA whatever the storage dtype (docs/cuda.md).
  Tensor lse = Tensor::empty({B, heads_, Tq}, dev.is_cpu() ? q.dtype() : DType::kF32, dev);
  if (recurrent_reference_ && dev.is_cpu()) {
    if (q.dtype() == DType::kF32) {
      naive_attention<float>(q, k, v, scale, mask_, o, lse);
    } else {
      naive_attention<double>(q, k, v, scale, mask_, o, lse);
    }
  } else if (recurrent_reference_) {
    // The reference is a host loop: on a GPU it runs in f64 on host copies of q, k, v.
    const Tensor q64 = q.cpu().to(DType::kF64), k64 = k.cpu().to(DType::kF64);
    const Tensor v64 = v.cpu().to(DType::kF64);
    Tensor o64 = Tensor::empty(o.shape(), DType::kF64, Device::cpu());
    Tensor lse64 = Tensor::empty(lse.shape(), DType::kF64, Device::cpu());
    naive_attention<double>(q64, k64, v64, scale, mask_, o64, lse64);
    o.copy_from(o64);
    lse.copy_from(lse64);
  } else {
    kernels::softmax_attention_forward(q, k, v, scale, mask_, o, lse);
  }
  q_ = q;
  k_ = k;
  v_ = v;
  o_ = o;
  lse_ = lse;
  return o;
}

SoftmaxAttention::AttendGrads SoftmaxAttention::attend_backward(const Tensor& d_o) {
  LINEA_CHECK(o_.defined()) << "softmax attention: attend_backward without attend";
  AttendGrads g;
  g.dq = Tensor::empty(q_.shape(), q_.dtype(), q_.device());
  g.dk = Tensor::empty(k_.shape(), k_.dtype(), k_.device());
  g.dv = Tensor::empty(v_.shape(), v_.dtype(), v_.device());
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  kernels::softmax_attention_backward(q_, k_, v_, o_, lse_, d_o, scale, mask_, g.dq, g.dk, g.dv);
  q_ = k_ = v_ = o_ = lse_ = Tensor();
  return g;
}

// ---- step 3: output projection -------------------------------------------------------------

Tensor SoftmaxAttention::output(const Tensor& o) {
  const int64_t B = o.dim(0), T = o.dim(1);
  return o_proj_.forward(o.view({B, T, heads_ * head_dim_}));
}

Tensor SoftmaxAttention::output_backward(const Tensor& dy) {
  const int64_t B = dy.dim(0), T = dy.dim(1);
  return o_proj_.backward(dy).view({B, T, heads_, head_dim_});
}

// ---- the segment interface: the three steps with no communication ---------------------------

Tensor SoftmaxAttention::forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) {
  LINEA_CHECK(in.states.empty() && !in.halo.defined())
      << "softmax attention carries no state and no halo";
  LINEA_CHECK(x.ndim() == 3 && x.dim(2) == hidden_)
      << "softmax attention: x must be [B, T, " << hidden_ << "], got " << shape_str(x.shape());
  if (sp_) set_position_offset(sp_->rank() * x.dim(1));
  Local l = project(x);
  Tensor o = sp_ ? attend(l.q, parallel::all_gather_time(*sp_, l.k),
                          parallel::all_gather_time(*sp_, l.v), /*keys_start=*/0)
                 : attend(l.q, l.k, l.v, /*keys_start=*/position_offset_);
  if (out) {
    out->final_states.clear();
    out->transitions.clear();
  }
  return output(o);
}

Tensor SoftmaxAttention::backward_segment(const Tensor& dy, const SegmentGradIn& in,
                                          SegmentGradOut* out) {
  LINEA_CHECK(in.d_final_states.empty()) << "softmax attention carries no state";
  AttendGrads g = attend_backward(output_backward(dy));
  if (out) {
    out->d_states.clear();
    out->d_halo = Tensor();
  }
  if (sp_) {
    g.dk = parallel::reduce_scatter_time(*sp_, g.dk);
    g.dv = parallel::reduce_scatter_time(*sp_, g.dv);
  }
  return project_backward(g.dq, g.dk, g.dv);
}

bool SoftmaxAttention::enable_sequence_parallel(parallel::Communicator& sp) {
  sp_ = sp.size() > 1 ? &sp : nullptr;
  return true;
}

std::unique_ptr<TokenMixer> make_softmax_attention(const MixerContext& ctx,
                                                   const config::AttentionConfig& a) {
  return std::make_unique<SoftmaxAttention>(ctx, a);
}

}  // namespace linea
