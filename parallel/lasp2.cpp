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

// The per-core gathers of one wrapped mixer (core/modules/mixers/state_exchange.h). One slot per
// core call of the forward, in call order; the backward finds its slot's transitions there.
class Lasp2Exchange final : public StateExchange {
 public:
  Lasp2Exchange(Communicator& sp, const std::string& name) : sp_(sp), name_(name) {}

  // A new forward: the slots of the last one are dropped.
  void reset() {
    slots_.clear();
    elements_ = 0;
  }
  int64_t forward_elements() const { return elements_; }

  int post(const Transition& a, const Tensor& b) override {
    Slot s;
    s.like = {a};
    s.templates = gather_parts(&s.like, {b});
    const Tensor flat = pack(s.templates);
    s.n = flat.numel();
    s.all = Tensor::empty({sp_.size() * s.n}, flat.dtype(), flat.device());
    s.pending = sp_.all_gather_async(flat, s.all);
    elements_ += s.n;
    slots_.push_back(std::move(s));
    return static_cast<int>(slots_.size()) - 1;
  }

  Tensor incoming(int slot) override {
    Slot& s = at(slot);
    LINEA_CHECK(s.pending) << name_ << ": the incoming state of slot " << slot << " was taken";
    s.pending->wait();
    s.pending.reset();
    const int r = sp_.rank(), W = sp_.size();
    s.transitions.assign(W, Transition());
    Tensor s_in;
    for (int q = 0; q < W; ++q) {
      if (q == r) continue;  // its own block serves neither its prefix nor its backward
      std::vector<Transition> tr;
      std::vector<Tensor> b;
      split_parts(unpack(s.all.slice(q * s.n, (q + 1) * s.n), s.templates), s.like, &tr, &b);
      if (q > r) {
        s.transitions[q] = tr[0];  // for the backward's reverse composition
      } else if (q < r) {
        if (s_in.defined()) {
          s_in = transition_apply(tr[0], s_in);
          kernels::add_inplace(s_in, b[0]);
        } else {
          s_in = b[0];
        }
      }
    }
    s.all = Tensor();
    return s_in;
  }

  Tensor d_final(int slot, const Tensor& c) override {
    Slot& s = at(slot);
    LINEA_CHECK(!s.pending) << name_ << ": slot " << slot << " was never completed by incoming()";
    const int r = sp_.rank(), W = sp_.size();
    const int64_t n = c.numel();
    Tensor all = Tensor::empty({W * n}, c.dtype(), c.device());
    sp_.all_gather(c.view({-1}), all);
    Tensor ds;
    for (int q = W - 1; q > r; --q) {
      const Tensor cq = unpack(all.slice(q * n, (q + 1) * n), {c})[0];
      if (ds.defined()) {
        ds = transition_apply_transpose(s.transitions[q], ds);
        kernels::add_inplace(ds, cq);
      } else {
        ds = cq;
      }
    }
    s.transitions.clear();
    return ds;
  }

 private:
  struct Slot {
    std::vector<Transition> like;   // this rank's transition, the shape of every rank's
    std::vector<Tensor> templates;  // the parts of one rank's block, in gather_parts order
    int64_t n = 0;                  // elements per rank
    Tensor all;                     // the gathered blocks until incoming()
    std::unique_ptr<PendingCollective> pending;
    std::vector<Transition> transitions;  // [rank], defined for the later ranks
  };
  Slot& at(int slot) {
    LINEA_CHECK(slot >= 0 && slot < static_cast<int>(slots_.size()))
        << name_ << ": no exchange slot " << slot << " (" << slots_.size()
        << " in the last forward): the backward must follow the forward that made it";
    return slots_[slot];
  }

  Communicator& sp_;
  std::string name_;
  std::vector<Slot> slots_;
  int64_t elements_ = 0;
};

Lasp2Mixer::Lasp2Mixer(std::unique_ptr<TokenMixer> inner, Communicator& sp, std::string name)
    : inner_(std::move(inner)),
      sp_(sp),
      name_(std::move(name)),
      exchange_(std::make_unique<Lasp2Exchange>(sp_, name_)) {
  LINEA_CHECK(inner_->num_states() > 0)
      << name_ << ": LASP-2 wraps linear mixers (softmax attention uses LASP-2H)";
}

Lasp2Mixer::~Lasp2Mixer() = default;

void Lasp2Mixer::release_saved() {
  inner_->release_saved();
  exchange_->reset();
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
  SegmentIn local;
  local.halo = exchange_halo(x);
  exchange_->reset();
  Tensor y;
  {
    const ExchangeScope scope(exchange_.get());
    y = inner_->forward_segment(x, local, nullptr);
  }
  payload_elements_ = exchange_->forward_elements();
  spdlog::debug("lasp2 {}: gathered {} elements per rank, halo {} rows", name_, payload_elements_,
                inner_->halo_size());
  return y;
}

Tensor Lasp2Mixer::backward_segment(const Tensor& dy, const SegmentGradIn& in,
                                    SegmentGradOut* out) {
  LINEA_CHECK(in.d_final_states.empty() && out == nullptr)
      << name_ << ": a sequence-parallel mixer runs whole sequences";
  SegmentGradOut g;
  Tensor dx;
  {
    const ExchangeScope scope(exchange_.get());
    dx = inner_->backward_segment(dy, SegmentGradIn{}, &g);
  }
  return_halo_grad(g.d_halo, dx);
  exchange_->reset();
  return dx;
}

}  // namespace linea::parallel
