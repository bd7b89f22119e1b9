#include "parallel/lasp2.h"

#include <spdlog/spdlog.h>

#include "kernels/elementwise.h"
#include "kernels/sequence.h"

namespace linea::parallel {
namespace {

constexpr int kHaloTag = 7101;
constexpr int kHaloGradTag = 7102;

// The tensors one rank contributes to a gather, in a fixed order: for each state, the defined
// parts of its transition, then the state-shaped tensor (B in the forward, c in the backward).
std::vector<Tensor> gather_parts(const std::vector<Transition>* transitions,
                                 const std::vector<Tensor>& states) {
  std::vector<Tensor> parts;
  for (size_t i = 0; i < states.size(); ++i) {
    if (transitions) {
      const Transition& t = (*transitions)[i];
      for (const Tensor* p : {&t.log_decay_k, &t.log_decay_v, &t.dense})
        if (p->defined()) parts.push_back(*p);
    }
    parts.push_back(states[i]);
  }
  return parts;
}

// One flat buffer of every part, in the dtype and on the device of the first (the states, their
// transitions and gradients share both: the input's dtype on the CPU, f32 on CUDA).
Tensor pack(const std::vector<Tensor>& parts) {
  int64_t n = 0;
  for (const Tensor& p : parts) {
    LINEA_CHECK(p.dtype() == parts[0].dtype() && p.device() == parts[0].device())
        << "lasp2: gathered parts of " << dtype_name(p.dtype()) << " on " << p.device().str()
        << " and " << dtype_name(parts[0].dtype()) << " on " << parts[0].device().str();
    n += p.numel();
  }
  Tensor flat = Tensor::empty({n}, parts[0].dtype(), parts[0].device());
  int64_t off = 0;
  for (const Tensor& p : parts) {
    flat.slice(off, off + p.numel()).copy_from(p.view({-1}));
    off += p.numel();
  }
  return flat;
}

// Copies rank q's block of a gathered buffer into fresh tensors shaped like `templates`.
std::vector<Tensor> unpack(const Tensor& block, const std::vector<Tensor>& templates) {
  std::vector<Tensor> out;
  int64_t off = 0;
  for (const Tensor& t : templates) {
    Tensor p = Tensor::empty(t.shape(), t.dtype(), t.device());
    p.view({-1}).copy_from(block.slice(off, off + t.numel()));
    off += t.numel();
    out.push_back(p);
  }
  return out;
}

// Rebuilds transitions and states from unpacked parts, in gather_parts order.
void split_parts(const std::vector<Tensor>& parts, const std::vector<Transition>& like,
                 std::vector<Transition>* transitions, std::vector<Tensor>* states) {
  size_t k = 0;
  for (size_t i = 0; i < like.size(); ++i) {
    if (transitions) {
      Transition t;
      t.kind = like[i].kind;
      if (like[i].log_decay_k.defined()) t.log_decay_k = parts[k++];
      if (like[i].log_decay_v.defined()) t.log_decay_v = parts[k++];
      if (like[i].dense.defined()) t.dense = parts[k++];
      transitions->push_back(t);
    }
    states->push_back(parts[k++]);
  }
}

// x with d added to its last d.dim(1) time steps.
Tensor add_to_tail(const Tensor& x, const Tensor& d) {
  const int64_t T = x.dim(1), h = d.dim(1);
  Tensor tail = kernels::slice_time(x, T - h, T);
  kernels::add_inplace(tail, d);
  return kernels::concat_time(kernels::slice_time(x, 0, T - h), tail);
}

}  // namespace

Lasp2Mixer::Lasp2Mixer(std::unique_ptr<TokenMixer> inner, Communicator& sp, std::string name)
    : inner_(std::move(inner)), sp_(sp), name_(std::move(name)) {
  LINEA_CHECK(inner_->num_states() > 0)
      << name_ << ": LASP-2 wraps linear mixers (softmax attention uses LASP-2H)";
}

SegmentIn Lasp2Mixer::segment_in(const std::vector<Tensor>& states) const {
  SegmentIn in;
  in.states = states;
  in.halo = halo_;
  return in;
}

Tensor Lasp2Mixer::exchange_halo(const Tensor& x) {
  const int64_t h = inner_->halo_size();
  if (h == 0) return Tensor();
  LINEA_USER_CHECK(x.dim(1) >= h, "use fewer sequence-parallel ranks or longer sequences")
      << name_ << ": each rank holds " << x.dim(1) << " tokens but the mixer's local window needs "
      << h << " tokens of the previous rank";
  const int r = sp_.rank(), W = sp_.size();
  Tensor halo;
  // A chain from rank 0 upwards: never two ranks waiting on each other.
  if (r > 0) {
    halo = Tensor::empty({x.dim(0), h, x.dim(2)}, x.dtype(), x.device());
    sp_.recv(halo, r - 1, kHaloTag);
  }
  if (r < W - 1) sp_.send(kernels::slice_time(x, x.dim(1) - h, x.dim(1)), r + 1, kHaloTag);
  return halo;
}

void Lasp2Mixer::return_halo_grad(const Tensor& d_halo, Tensor& dx) {
  const int64_t h = inner_->halo_size();
  if (h == 0) return;
  const int r = sp_.rank(), W = sp_.size();
  // The dual chain, from the last rank downwards.
  if (r < W - 1) {
    Tensor d = Tensor::empty({dx.dim(0), h, dx.dim(2)}, dx.dtype(), dx.device());
    sp_.recv(d, r + 1, kHaloGradTag);
    dx = add_to_tail(dx, d);
  }
  if (r > 0) sp_.send(d_halo, r - 1, kHaloGradTag);
}

Tensor Lasp2Mixer::forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) {
  LINEA_CHECK(in.states.empty() && !in.halo.defined() && out == nullptr)
      << name_ << ": a sequence-parallel mixer runs whole sequences";
  const int r = sp_.rank(), W = sp_.size();
  x_ = x;
  halo_ = exchange_halo(x);
  SegmentOut local;
  Tensor y = inner_->forward_segment(x, segment_in({}), &local);

  const Tensor flat = pack(gather_parts(&local.transitions, local.final_states));
  const int64_t n = flat.numel();
  payload_elements_ = n;
  Tensor all = Tensor::empty({W * n}, flat.dtype(), flat.device());
  sp_.all_gather(flat, all);
  const std::vector<Tensor> templates = gather_parts(&local.transitions, local.final_states);
  all_transitions_.assign(W, {});
  std::vector<std::vector<Tensor>> b(W);
  for (int q = 0; q < W; ++q)
    split_parts(unpack(all.slice(q * n, (q + 1) * n), templates), local.transitions,
                &all_transitions_[q], &b[q]);

  s_in_.clear();
  if (r > 0) {
    s_in_ = b[0];
    for (int q = 1; q < r; ++q)
      for (size_t i = 0; i < s_in_.size(); ++i) {
        s_in_[i] = transition_apply(all_transitions_[q][i], s_in_[i]);
        kernels::add_inplace(s_in_[i], b[q][i]);
      }
    y = inner_->forward_segment(x, segment_in(s_in_), nullptr);
  }
  spdlog::debug("lasp2 {}: gathered {} elements per rank ({} bytes), halo {} rows", name_, n,
                n * static_cast<int64_t>(dtype_size(flat.dtype())), inner_->halo_size());
  return y;
}

Tensor Lasp2Mixer::backward_segment(const Tensor& dy, const SegmentGradIn& in,
                                    SegmentGradOut* out) {
  LINEA_CHECK(in.d_final_states.empty() && out == nullptr)
      << name_ << ": a sequence-parallel mixer runs whole sequences";
  const int r = sp_.rank(), W = sp_.size();
  SegmentGradOut g1;
  Tensor dx = inner_->backward_segment(dy, SegmentGradIn{}, &g1);
  Tensor d_halo = g1.d_halo;

  const Tensor flat = pack(gather_parts(nullptr, g1.d_states));
  const int64_t n = flat.numel();
  Tensor all = Tensor::empty({W * n}, flat.dtype(), flat.device());
  sp_.all_gather(flat, all);

  if (r < W - 1) {
    std::vector<std::vector<Tensor>> c(W);
    for (int q = r + 1; q < W; ++q)
      split_parts(unpack(all.slice(q * n, (q + 1) * n), g1.d_states), all_transitions_[q], nullptr,
                  &c[q]);
    std::vector<Tensor> ds = c[W - 1];
    for (int q = W - 2; q > r; --q)
      for (size_t i = 0; i < ds.size(); ++i) {
        ds[i] = transition_apply_transpose(all_transitions_[q][i], ds[i]);
        kernels::add_inplace(ds[i], c[q][i]);
      }
    inner_->forward_segment(x_, segment_in(s_in_), nullptr);
    SegmentGradIn gin;
    gin.d_final_states = ds;
    SegmentGradOut g2;
    kernels::add_inplace(
        dx, inner_->backward_segment(Tensor::zeros(dy.shape(), dy.dtype(), dy.device()), gin, &g2));
    if (d_halo.defined()) kernels::add_inplace(d_halo, g2.d_halo);
  }
  return_halo_grad(d_halo, dx);
  x_ = halo_ = Tensor();
  s_in_.clear();
  all_transitions_.clear();
  return dx;
}

}  // namespace linea::parallel
