#include "core/modules/mixers/mom_mixer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/modules/mixers/decay_ops.h"
#include "core/modules/mixers/state_core.h"
#include "core/tensor/dispatch.h"
#include "kernels/elementwise.h"
#include "kernels/gates.h"
#include "kernels/l2norm.h"
#include "kernels/moe_permute.h"

namespace linea {

using MC = config::MixerConfig;

namespace {

constexpr double kL2Eps = 1e-6;  // fla's l2norm inside the gated delta rule kernels

// act over the projections of [halo; x] -> [B, T, C]: the causal short conv + SiLU with the halo
// rows' outputs dropped, or SiLU alone (no conv, no halo).
Tensor activate(const Tensor& p_ext, const ShortConv* conv) {
  return conv ? conv->apply(p_ext) : decay_ops::act_forward(kernels::Activation::kSilu, p_ext);
}

// The gradient of the projections of [halo; x] given that of act's output [B, T, C].
Tensor activate_backward(const Tensor& p_ext, ShortConv* conv, const Tensor& dy) {
  return conv ? conv->apply_backward(p_ext, dy)
              : decay_ops::act_backward(kernels::Activation::kSilu, p_ext, dy);
}

// compact[b, i] = full[b, rows[b][i]] for the routed tokens, zero in the padding.
Tensor gather_time(const Tensor& full, const MemoryRoute& r) {
  if (r.identity) return full;
  Shape s = full.shape();
  const int64_t B = s[0], T = s[1];
  s[1] = r.length;
  Tensor out = Tensor::zeros(s, full.dtype(), full.device());
  const int64_t n = r.full_index.numel();
  if (n == 0) return out;
  Tensor rows = Tensor::empty({n, full.numel() / (B * T)}, full.dtype(), full.device());
  kernels::gather_rows(full.view({B * T, -1}), r.full_index, rows);
  Tensor flat = out.view({B * r.length, -1});
  kernels::scatter_rows(rows, r.compact_index, flat);
  return out;
}

// The adjoint of gather_time: full[b, rows[b][i]] = compact[b, i], zero at tokens not routed.
Tensor scatter_time(const Tensor& compact, const MemoryRoute& r, int64_t T) {
  if (r.identity) return compact;
  Shape s = compact.shape();
  const int64_t B = s[0];
  s[1] = T;
  Tensor out = Tensor::zeros(s, compact.dtype(), compact.device());
  const int64_t n = r.full_index.numel();
  if (n == 0) return out;
  Tensor rows =
      Tensor::empty({n, compact.numel() / (B * r.length)}, compact.dtype(), compact.device());
  kernels::gather_rows(compact.view({B * r.length, -1}), r.compact_index, rows);
  Tensor flat = out.view({B * T, -1});
  kernels::scatter_rows(rows, r.full_index, flat);
  return out;
}

// The index tensors of a route on `device` (MemoryRoute).
void index_route(MemoryRoute& r, int64_t T, Device device) {
  std::vector<double> full, compact;
  for (size_t b = 0; b < r.rows.size(); ++b)
    for (size_t i = 0; i < r.rows[b].size(); ++i) {
      full.push_back(static_cast<double>(static_cast<int64_t>(b) * T + r.rows[b][i]));
      compact.push_back(
          static_cast<double>(static_cast<int64_t>(b) * r.length + static_cast<int64_t>(i)));
    }
  const int64_t n = static_cast<int64_t>(full.size());
  r.full_index = Tensor::from_vector({n}, full, DType::kI64).to(device);
  r.compact_index = Tensor::from_vector({n}, compact, DType::kI64).to(device);
}

// The compact length: every row's tokens fit, and the chunked kernels accept it (a multiple of
// the chunk when longer than one chunk). A memory nobody chose still runs one padded (identity)
// step, so its state and transition come out of the same code path.
int64_t padded_length(int64_t n, int64_t chunk) {
  if (n <= chunk) return std::max<int64_t>(n, 1);
  return (n + chunk - 1) / chunk * chunk;
}

int64_t value_dim_of(const MixerContext& ctx, const MC& m) {
  if (m.value_dim() > 0) return m.value_dim();
  const int64_t dv = std::llround(mixer_head_dim(ctx, m) * m.expand_v());
  LINEA_USER_CHECK(dv > 0, "set model.mixer.expand_v (or value_dim) to give a positive width")
      << "value width " << dv;
  return dv;
}

MC::Kind memory_kind_of(const MC& m) {
  const MC::Kind k = m.memory_kind();
  LINEA_USER_CHECK(k == MC::GATED_DELTANET || k == MC::DELTANET || k == MC::GLA ||
                       k == MC::SIMPLE_GLA || k == MC::LINEAR_ATTENTION,
                   "use GATED_DELTANET, DELTANET, GLA, SIMPLE_GLA or LINEAR_ATTENTION")
      << "model.mixer.memory_kind " << MC::Kind_Name(k) << " cannot be a memory of MOM";
  return k;
}

bool is_delta(MC::Kind k) { return k == MC::GATED_DELTANET || k == MC::DELTANET; }

}  // namespace

// One memory: its key/value projections, the gate and beta projections of its kind, and its state
// core, run on the compact subsequence of the tokens routed to it.
class MomMemory {
 public:
  // What the memories of one layer share (owned by the mixer); null where not used.
  struct Shared {
    ShortConv* k_conv = nullptr;
    ShortConv* v_conv = nullptr;
    Parameter* a_log = nullptr;
    Parameter* dt_bias = nullptr;
  };
  struct Grads {
    Tensor dq;      // [B, T, H, dk], zero at tokens not routed
    Tensor dx_ext;  // gradient of [halo; x] through the k and v projections
    Tensor dx;      // gradient of x through the gate projections (undefined: none)
    Tensor ds_in;
  };

  // index < 0: the shared memory (fla's shared_* names).
  MomMemory(const MixerContext& ctx, const MC& m, MC::Kind kind, int index, int64_t heads,
            int64_t dk, int64_t dv)
      : kind_(kind),
        heads_(heads),
        dk_(dk),
        dv_(dv),
        neg_eigval_(m.allow_neg_eigval()),
        gate_norm_(m.gate_logit_normalizer()),
        k_proj_(name(ctx, index, "k"), ctx.hidden, heads * dk, ctx.dtype),
        v_proj_(name(ctx, index, "v"), ctx.hidden, heads * dv, ctx.dtype),
        delta_(m.chunk_size()),
        gla_(m.chunk_size()) {
    if (is_delta(kind)) b_proj_.emplace(name(ctx, index, "b"), ctx.hidden, heads, ctx.dtype);
    if (kind == MC::GATED_DELTANET)
      a_proj_.emplace(name(ctx, index, "a"), ctx.hidden, heads, ctx.dtype);
    if (kind == MC::SIMPLE_GLA)
      gk_proj_.emplace(name(ctx, index, "gk"), ctx.hidden, heads, ctx.dtype);
    if (kind == MC::GLA) {
      // GLA's low-rank gate: x W1 W2 + b (fla: gk_proj = Sequential(Linear(D, r), Linear(r, .))).
      const std::string base = name(ctx, index, "gk");
      gk_proj_.emplace(base + ".0", ctx.hidden, m.gate_low_rank(), ctx.dtype);
      gk_up_.emplace(base + ".1", m.gate_low_rank(), heads * dk, ctx.dtype);
      gk_bias_ = make_parameter(base + ".1.bias", {heads * dk}, ctx.dtype, false);
    }
  }

  void init(uint64_t seed, double std) {
    for (Linear* l : {&k_proj_, &v_proj_}) init_normal(l->weight(), seed, std);
    for (auto* l : {&b_proj_, &a_proj_, &gk_proj_, &gk_up_})
      if (*l) init_normal((*l)->weight(), seed, std);
    if (gk_bias_) init_constant(*gk_bias_, 0.0);  // fla's GLA: zero bias
  }

  void collect(ParameterList& out) {
    k_proj_.collect(out);
    v_proj_.collect(out);
    for (auto* l : {&b_proj_, &a_proj_, &gk_proj_, &gk_up_})
      if (*l) (*l)->collect(out);
    if (gk_bias_) out.push_back(&*gk_bias_);
  }

  // x_ext = [halo; x]; q [B, T, H, dk] is the shared query (already normalised for delta kinds).
  // Returns the compact outputs [B, route.length, H, dv].
  Tensor forward(const Tensor& x_ext, const Tensor& x, const Tensor& q, const MemoryRoute& route,
                 const Shared& sh, const Tensor& s_in, bool recurrent, Tensor* s_out,
                 Transition* tr) {
    const int64_t B = x.dim(0), T = x.dim(1);
    T_ = T;
    route_ = route;
    kp_ = k_proj_.forward(x_ext);
    vp_ = v_proj_.forward(x_ext);
    Tensor k = gather_time(activate(kp_, sh.k_conv).view({B, T, heads_, dk_}), route);
    const Tensor v = gather_time(activate(vp_, sh.v_conv).view({B, T, heads_, dv_}), route);
    const Tensor qc = gather_time(q, route);
    const double scale = 1.0 / std::sqrt(double(dk_));

    if (is_delta(kind_)) {
      k_c_ = k;
      k_rstd_ = Tensor::empty({B, route.length, heads_}, k.dtype());
      k = Tensor::empty(k_c_.shape(), k_c_.dtype());
      kernels::l2norm_forward(k_c_, kL2Eps, k, k_rstd_);
      b_pre_ = b_proj_->forward(x);
      Tensor beta = Tensor::empty(b_pre_.shape(), x.dtype());
      kernels::delta_beta_forward(b_pre_, beta_scale(), beta);
      beta = gather_time(beta, route);
      Tensor g;
      if (kind_ == MC::GATED_DELTANET) {
        a_pre_ = a_proj_->forward(x);
        g = Tensor::empty(a_pre_.shape(), x.dtype());
        kernels::delta_log_decay_forward(a_pre_, sh.a_log->value, sh.dt_bias->value, g);
        g = gather_time(g, route);
      }
      return delta_.forward(qc, k, v, g, beta, scale, s_in, recurrent, s_out, tr);
    }

    Tensor gk;
    if (kind_ == MC::SIMPLE_GLA || kind_ == MC::GLA) {
      if (kind_ == MC::SIMPLE_GLA) {
        gk_pre_ = gk_proj_->forward(x);  // [B, T, H]: one scalar decay per head
      } else {
        Tensor pre = gk_up_->forward(gk_proj_->forward(x));
        decay_ops::add_bias(pre, gk_bias_->value);
        gk_pre_ = pre.view({B, T, heads_, dk_});
      }
      gk = Tensor::empty(gk_pre_.shape(), x.dtype());
      kernels::log_sigmoid_decay_forward(gk_pre_, gate_norm_, gk);
      gk = gather_time(gk, route);
    }
    return gla_.forward(qc, k, v, gk, Tensor(), scale, s_in, recurrent, s_out, tr);
  }

  Grads backward(const Tensor& d_o, const Tensor& ds_out, bool want_ds_in, const Shared& sh) {
    const int64_t B = d_o.dim(0), T = T_;
    Grads out;
    Tensor dqc, dkc, dvc, dgc, dbc;
    if (is_delta(kind_)) {
      DeltaCore::Grads g = delta_.backward(d_o, ds_out, want_ds_in);
      dqc = g.dq;
      dkc = Tensor::empty(k_c_.shape(), k_c_.dtype());
      kernels::l2norm_backward(k_c_, k_rstd_, g.dk, dkc);
      dvc = g.dv;
      dgc = g.dg;
      dbc = g.dbeta;
      out.ds_in = g.ds_in;
      k_c_ = k_rstd_ = Tensor();
    } else {
      GlaCore::Grads g = gla_.backward(d_o, ds_out, want_ds_in);
      dqc = g.dq;
      dkc = g.dk;
      dvc = g.dv;
      dgc = g.dgk;
      out.ds_in = g.ds_in;
    }
    out.dq = scatter_time(dqc, route_, T);
    const Tensor dk = scatter_time(dkc, route_, T).view({B, T, heads_ * dk_});
    const Tensor dv = scatter_time(dvc, route_, T).view({B, T, heads_ * dv_});
    out.dx_ext = k_proj_.backward(activate_backward(kp_, sh.k_conv, dk));
    kernels::add_inplace(out.dx_ext, v_proj_.backward(activate_backward(vp_, sh.v_conv, dv)));
    kp_ = vp_ = Tensor();

    if (is_delta(kind_)) {
      Tensor db = Tensor::empty(b_pre_.shape(), d_o.dtype());
      kernels::delta_beta_backward(b_pre_, beta_scale(), scatter_time(dbc, route_, T), db);
      kernels::accumulate(out.dx, b_proj_->backward(db));
      b_pre_ = Tensor();
      if (kind_ == MC::GATED_DELTANET) {
        Tensor da = Tensor::empty(a_pre_.shape(), d_o.dtype());
        kernels::delta_log_decay_backward(a_pre_, sh.a_log->value, sh.dt_bias->value,
                                          scatter_time(dgc, route_, T), da, sh.a_log->grad,
                                          sh.dt_bias->grad);
        kernels::accumulate(out.dx, a_proj_->backward(da));
        a_pre_ = Tensor();
      }
    } else if (kind_ == MC::SIMPLE_GLA || kind_ == MC::GLA) {
      Tensor dpre = Tensor::empty(gk_pre_.shape(), d_o.dtype());
      kernels::log_sigmoid_decay_backward(gk_pre_, scatter_time(dgc, route_, T), gate_norm_, dpre);
      gk_pre_ = Tensor();
      if (kind_ == MC::SIMPLE_GLA) {
        kernels::accumulate(out.dx, gk_proj_->backward(dpre));
      } else {
        decay_ops::bias_backward(dpre.view({B * T, heads_ * dk_}), gk_bias_->grad);
        kernels::accumulate(out.dx,
                            gk_proj_->backward(gk_up_->backward(dpre.view({B, T, heads_ * dk_}))));
      }
    }
    return out;
  }

  void release_saved() {
    k_proj_.release_saved();
    v_proj_.release_saved();
    for (auto* l : {&b_proj_, &a_proj_, &gk_proj_, &gk_up_})
      if (*l) (*l)->release_saved();
    delta_.release_saved();
    gla_.release_saved();
    route_ = MemoryRoute{};
    kp_ = vp_ = k_c_ = k_rstd_ = b_pre_ = a_pre_ = gk_pre_ = Tensor();
  }

 private:
  static std::string name(const MixerContext& ctx, int index, const std::string& base) {
    if (index < 0) return ctx.prefix + ".shared_" + base;
    return ctx.prefix + "." + base + "_proj." + std::to_string(index);
  }

  // beta in (0, 2) allows negative eigenvalues.
  double beta_scale() const { return neg_eigval_ ? 2.0 : 1.0; }

  MC::Kind kind_;
  int64_t heads_, dk_, dv_;
  bool neg_eigval_;
  double gate_norm_;
  Linear k_proj_, v_proj_;
  std::optional<Linear> b_proj_, a_proj_, gk_proj_, gk_up_;
  std::optional<Parameter> gk_bias_;
  DeltaCore delta_;
  GlaCore gla_;
  // Saved for the backward.
  MemoryRoute route_;
  int64_t T_ = 0;
  Tensor kp_, vp_, k_c_, k_rstd_, b_pre_, a_pre_, gk_pre_;
};

namespace {
MomMemory::Shared memory_shared(std::optional<ShortConv>& k_conv, std::optional<ShortConv>& v_conv,
                                std::optional<Parameter>& a_log,
                                std::optional<Parameter>& dt_bias) {
  MomMemory::Shared sh;
  sh.k_conv = k_conv ? &*k_conv : nullptr;
  sh.v_conv = v_conv ? &*v_conv : nullptr;
  sh.a_log = a_log ? &*a_log : nullptr;
  sh.dt_bias = dt_bias ? &*dt_bias : nullptr;
  return sh;
}
}  // namespace

MixtureOfMemories::MixtureOfMemories(const MixerContext& ctx, const MC& m)
    : heads_(m.num_heads()),
      dk_(mixer_head_dim(ctx, m)),
      dv_(value_dim_of(ctx, m)),
      num_memories_(m.num_memories()),
      top_k_(m.memory_top_k()),
      chunk_(m.chunk_size()),
      conv_size_(m.short_conv() == MC::OFF ? 0 : m.conv_size()),
      delta_kind_(is_delta(memory_kind_of(m))),
      q_proj_(ctx.prefix + ".q_proj", ctx.hidden, heads_ * dk_, ctx.dtype),
      gate_(ctx.prefix + ".gate", ctx.hidden, std::max<int64_t>(num_memories_, 1), ctx.dtype),
      o_proj_(ctx.prefix + ".o_proj", heads_ * dv_, ctx.hidden, ctx.dtype) {
  LINEA_USER_CHECK(num_memories_ >= 1, "set model.mixer.num_memories >= 1")
      << "model.mixer.num_memories is " << num_memories_;
  LINEA_USER_CHECK(top_k_ >= 1 && top_k_ <= num_memories_,
                   "set model.mixer.memory_top_k between 1 and num_memories")
      << "model.mixer.memory_top_k is " << top_k_ << " with " << num_memories_ << " memories";
  LINEA_USER_CHECK(conv_size_ != 1, "set model.mixer.conv_size >= 2 or short_conv: OFF")
      << "model.mixer.conv_size is 1";
  const MC::Kind kind = memory_kind_of(m);
  if (conv_size_ > 0) {
    q_conv_.emplace(ctx.prefix + ".q_conv1d", heads_ * dk_, conv_size_, /*silu=*/true, ctx.dtype);
    k_conv_.emplace(ctx.prefix + ".k_conv1d", heads_ * dk_, conv_size_, /*silu=*/true, ctx.dtype);
    v_conv_.emplace(ctx.prefix + ".v_conv1d", heads_ * dv_, conv_size_, /*silu=*/true, ctx.dtype);
  }
  if (kind == MC::GATED_DELTANET) {
    a_log_ = make_parameter(ctx.prefix + ".A_log", {heads_}, ctx.dtype, false);
    dt_bias_ = make_parameter(ctx.prefix + ".dt_bias", {heads_}, ctx.dtype, false);
  }
  for (int i = 0; i < num_memories_; ++i)
    memories_.push_back(std::make_unique<MomMemory>(ctx, m, kind, i, heads_, dk_, dv_));
  if (m.shared_memory())
    memories_.push_back(std::make_unique<MomMemory>(ctx, m, kind, -1, heads_, dk_, dv_));
  if (m.output_gate() != MC::OFF) out_gate_.emplace(ctx.prefix, ctx.hidden, heads_, dv_, ctx.dtype);
  if (m.output_norm()) o_norm_.emplace(ctx.prefix + ".o_norm", dv_, ctx.norm_eps, ctx.dtype);
  init_decay();
}

MixtureOfMemories::~MixtureOfMemories() = default;

void MixtureOfMemories::init(uint64_t seed, double std, double out_std) {
  init_normal(q_proj_.weight(), seed, std);
  init_normal(gate_.weight(), seed, std);
  for (auto& mem : memories_) mem->init(seed, std);
  if (out_gate_) out_gate_->init(seed, std);
  init_normal(o_proj_.weight(), seed, out_std);
  // PyTorch's Conv1d default scale (uniform, bound 1/sqrt(K), std 1/sqrt(3K)).
  for (auto* c : {&q_conv_, &k_conv_, &v_conv_})
    if (*c) (*c)->init(seed);
  init_decay();
}

// Gated DeltaNet / Mamba2: A = 1 .. 16 and dt = 1e-3 .. 1e-1 (log-spaced) across heads,
// deterministic in the head index instead of fla's random draws; dt_bias = softplus^-1(dt).
void MixtureOfMemories::init_decay() {
  if (a_log_) {
    for (int64_t h = 0; h < heads_; ++h) {
      const double u = (h + 0.5) / heads_;
      a_log_->value.set_item(h, std::log(1.0 + 15.0 * u));
      const double dt =
          std::max(1e-4, std::exp(std::log(1e-3) + u * (std::log(1e-1) - std::log(1e-3))));
      dt_bias_->value.set_item(h, dt + std::log(-std::expm1(-dt)));
    }
  }
}

void MixtureOfMemories::collect(ParameterList& out) {
  q_proj_.collect(out);
  gate_.collect(out);
  for (auto& mem : memories_) mem->collect(out);
  if (a_log_) out.push_back(&*a_log_);
  if (dt_bias_) out.push_back(&*dt_bias_);
  for (auto* c : {&q_conv_, &k_conv_, &v_conv_})
    if (*c) (*c)->collect(out);
  if (out_gate_) out_gate_->collect(out);
  if (o_norm_) o_norm_->collect(out);
  o_proj_.collect(out);
}

void MixtureOfMemories::release_saved() {
  q_proj_.release_saved();
  gate_.release_saved();
  for (auto& mem : memories_) mem->release_saved();
  for (auto* c : {&q_conv_, &k_conv_, &v_conv_})
    if (*c) (*c)->release_saved();
  if (out_gate_) out_gate_->release_saved();
  if (o_norm_) o_norm_->release_saved();
  o_proj_.release_saved();
  qp_ = q_act_ = q_rstd_ = weights_ = routed_rows_ = copy_row_ = Tensor();
  weights_host_.clear();
  chosen_.clear();
  routes_.clear();
}

Tensor MixtureOfMemories::forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) {
  const int64_t B = x.dim(0), T = x.dim(1), halo = halo_size();
  const int64_t M = num_memories_, K = top_k_;
  T_ = T;
  const Tensor x_ext = prepend_halo(x, in.halo, halo);

  // Router: top-k of the softmax; the renormalised weights equal a softmax over the k chosen
  // logits. Ties go to the lower memory index, so the choice is deterministic. The choice is made
  // on the host from one read-back of the logits (the routes are host lists); the weights and
  // the index tensors then go to the data's device.
  const Tensor logits_host = gate_.forward(x).cpu().to(DType::kF64);
  const double* lg = logits_host.data<double>();
  weights_host_.assign(B * T * K, 0.0);
  chosen_.assign(B * T * K, 0);
  std::vector<int64_t> slot(B * T * K, 0);
  routes_.assign(memories_.size(), MemoryRoute{});
  for (auto& r : routes_) r.rows.assign(B, {});
  std::vector<int> order(M);
  for (int64_t bt = 0; bt < B * T; ++bt) {
    const double* l = lg + bt * M;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + K, order.end(),
                      [&](int a, int b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    double z = 0;
    for (int64_t j = 0; j < K; ++j) z += std::exp(l[order[j]] - l[order[0]]);
    for (int64_t j = 0; j < K; ++j) {
      const int m = order[j];
      auto& rows = routes_[m].rows[bt / T];
      chosen_[bt * K + j] = m;
      slot[bt * K + j] = static_cast<int64_t>(rows.size());
      rows.push_back(bt % T);
      weights_host_[bt * K + j] = std::exp(l[m] - l[order[0]]) / z;
    }
  }
  weights_ = Tensor::from_vector({B * T * K}, weights_host_, x.dtype()).to(x.device());
  row_offset_.assign(M + 1, 0);
  for (int64_t m = 0; m < M; ++m) {
    int64_t n = 0;
    for (const auto& rows : routes_[m].rows) n = std::max<int64_t>(n, rows.size());
    routes_[m].length = padded_length(n, chunk_);
    index_route(routes_[m], T, x.device());
    row_offset_[m + 1] = row_offset_[m] + B * routes_[m].length;
  }
  {
    std::vector<double> copy_row(B * T * K);
    for (int64_t c = 0; c < B * T * K; ++c) {
      const int m = chosen_[c];
      copy_row[c] = static_cast<double>(row_offset_[m] + (c / K / T) * routes_[m].length + slot[c]);
    }
    copy_row_ = Tensor::from_vector({B * T * K}, copy_row, DType::kI32).to(x.device());
  }
  if (static_cast<int64_t>(memories_.size()) > M) {  // the shared memory sees every token
    auto& r = routes_[M];
    for (auto& rows : r.rows) {
      rows.resize(T);
      std::iota(rows.begin(), rows.end(), 0);
    }
    r.length = T;
    r.identity = true;
  }

  // The shared query.
  qp_ = q_proj_.forward(x_ext);
  q_act_ = activate(qp_, q_conv_ ? &*q_conv_ : nullptr).view({B, T, heads_, dk_});
  Tensor q = q_act_;
  if (delta_kind_) {
    q_rstd_ = Tensor::empty({B, T, heads_}, x.dtype());
    q = Tensor::empty(q_act_.shape(), x.dtype());
    kernels::l2norm_forward(q_act_, kL2Eps, q, q_rstd_);
  }

  const MomMemory::Shared sh = memory_shared(k_conv_, v_conv_, a_log_, dt_bias_);
  const size_t n_mem = memories_.size();
  const int64_t F = heads_ * dv_;
  if (out) {
    out->final_states.assign(n_mem, Tensor());
    out->transitions.assign(n_mem, Transition{});
  }
  // The routed memories write their compact outputs into one stack of rows.
  routed_rows_ = Tensor::empty({row_offset_[M], F}, x.dtype(), x.device());
  Tensor o;
  for (size_t i = 0; i < n_mem; ++i) {
    const Tensor s_in = i < in.states.size() ? in.states[i] : Tensor();
    const Tensor mem_out = memories_[i]->forward(
        x_ext, x, q, routes_[i], sh, s_in, recurrent_reference_,
        out ? &out->final_states[i] : nullptr, out ? &out->transitions[i] : nullptr);
    if (static_cast<int64_t>(i) < M) {
      routed_rows_.slice(row_offset_[i], row_offset_[i + 1]).copy_from(mem_out.view({-1, F}));
    } else {
      o = mem_out.clone();  // the shared memory's output, to which the routed mix is added
    }
  }

  // Mix: o_t = sum_j w_tj o^{m_j}_t (+ the shared memory's output).
  Tensor mix = Tensor::empty({B * T, F}, x.dtype(), x.device());
  kernels::moe_unpermute_combine(routed_rows_, copy_row_, weights_, K, mix);
  if (o.defined()) {
    kernels::add_inplace(o, mix.view({B, T, heads_, dv_}));
  } else {
    o = mix.view({B, T, heads_, dv_});
  }

  if (o_norm_) o = o_norm_->forward(o);
  if (out_gate_) o = out_gate_->forward(x, o);
  return o_proj_.forward(o.view({B, T, F}));
}

Tensor MixtureOfMemories::backward_segment(const Tensor& dy, const SegmentGradIn& in,
                                           SegmentGradOut* out) {
  const int64_t B = dy.dim(0), T = T_, halo = halo_size();
  const int64_t M = num_memories_, K = top_k_, F = heads_ * dv_;
  Tensor d_o = o_proj_.backward(dy).view({B, T, heads_, dv_});
  Tensor dx_gate;
  if (out_gate_) d_o = out_gate_->backward(d_o, dx_gate);
  if (o_norm_) d_o = o_norm_->backward(d_o);

  // Gradients of each memory's compact outputs and of the router weights.
  const size_t n_mem = memories_.size();
  Tensor d_rows = Tensor::zeros(routed_rows_.shape(), dy.dtype(), dy.device());
  Tensor d_weight = Tensor::empty({B * T * K}, dy.dtype(), dy.device());
  kernels::moe_unpermute_combine_backward(d_o.view({B * T, F}), routed_rows_, copy_row_, weights_,
                                          K, d_rows, d_weight);
  std::vector<Tensor> d_mem(n_mem);
  for (int64_t m = 0; m < M; ++m)
    d_mem[m] =
        d_rows.slice(row_offset_[m], row_offset_[m + 1]).view({B, routes_[m].length, heads_, dv_});
  if (n_mem > static_cast<size_t>(M)) d_mem[M] = d_o;
  // Softmax over the chosen logits: dl_j = w_j (dw_j - sum_i w_i dw_i); the others get none
  // (on the host, from one read-back of dw).
  const Tensor dw_host = d_weight.cpu().to(DType::kF64);
  const double* dw = dw_host.data<double>();
  std::vector<double> dl(B * T * M, 0.0);
  for (int64_t bt = 0; bt < B * T; ++bt) {
    double wdw = 0;
    for (int64_t j = 0; j < K; ++j) wdw += weights_host_[bt * K + j] * dw[bt * K + j];
    for (int64_t j = 0; j < K; ++j)
      dl[bt * M + chosen_[bt * K + j]] = weights_host_[bt * K + j] * (dw[bt * K + j] - wdw);
  }
  Tensor dx = gate_.backward(Tensor::from_vector({B, T, M}, dl, dy.dtype()).to(dy.device()));
  if (dx_gate.defined()) kernels::add_inplace(dx, dx_gate);
  routed_rows_ = copy_row_ = weights_ = Tensor();
  weights_host_.clear();

  const MomMemory::Shared sh = memory_shared(k_conv_, v_conv_, a_log_, dt_bias_);
  Tensor dq = Tensor::zeros({B, T, heads_, dk_}, dy.dtype());
  Tensor dx_ext = Tensor::zeros({B, T + halo, dy.dim(2)}, dy.dtype());
  if (out) out->d_states.assign(n_mem, Tensor());
  for (size_t i = 0; i < n_mem; ++i) {
    const Tensor ds_out = i < in.d_final_states.size() ? in.d_final_states[i] : Tensor();
    MomMemory::Grads g = memories_[i]->backward(d_mem[i], ds_out, out != nullptr, sh);
    kernels::add_inplace(dq, g.dq);
    kernels::add_inplace(dx_ext, g.dx_ext);
    if (g.dx.defined()) kernels::add_inplace(dx, g.dx);
    if (out) out->d_states[i] = g.ds_in;
  }

  Tensor dq_act = dq;
  if (delta_kind_) {
    dq_act = Tensor::empty(q_act_.shape(), dy.dtype());
    kernels::l2norm_backward(q_act_, q_rstd_, dq, dq_act);
  }
  kernels::add_inplace(dx_ext,
                       q_proj_.backward(activate_backward(qp_, q_conv_ ? &*q_conv_ : nullptr,
                                                          dq_act.view({B, T, heads_ * dk_}))));
  qp_ = q_act_ = q_rstd_ = Tensor();
  kernels::add_inplace(dx, split_halo(dx_ext, halo, out ? &out->d_halo : nullptr));
  return dx;
}

std::unique_ptr<TokenMixer> make_mom_mixer(const MixerContext& ctx, const MC& m) {
  return std::make_unique<MixtureOfMemories>(ctx, m);
}

}  // namespace linea
