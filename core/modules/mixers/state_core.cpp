#include "core/modules/mixers/state_core.h"

#include "kernels/delta_rule.h"
#include "kernels/gated_linear_attention.h"
#include "kernels/state_output.h"

namespace linea {

int64_t effective_chunk(int64_t chunk, int64_t T) {
  if (T <= chunk) return T;
  LINEA_USER_CHECK(T % chunk == 0, "choose model.mixer.chunk_size dividing the tokens per rank")
      << "chunk size " << chunk << " does not divide the segment length " << T;
  return chunk;
}

DType state_dtype(const Tensor& q) { return q.device().is_cpu() ? q.dtype() : DType::kF32; }

namespace {
Tensor state_like(const Tensor& q, const Tensor& v) {
  return Tensor::empty({q.dim(0), q.dim(2), q.dim(3), v.dim(3)}, state_dtype(q), q.device());
}

// A = diag(exp(sum_t gk_t)) . diag(exp(sum_t gv_t)) (kernels/gated_linear_attention.h).
Transition diagonal_transition(const Tensor& q, const Tensor& v, const Tensor& gk,
                               const Tensor& gv) {
  Transition tr;
  tr.kind = Transition::Kind::kDiagonal;
  const DType dt = state_dtype(q);
  if (gk.defined())
    tr.log_decay_k = gk.ndim() == 3 ? Tensor::empty({q.dim(0), q.dim(2)}, dt, q.device())
                                    : Tensor::empty({q.dim(0), q.dim(2), q.dim(3)}, dt, q.device());
  if (gv.defined()) tr.log_decay_v = Tensor::empty({q.dim(0), q.dim(2), v.dim(3)}, dt, q.device());
  if (gk.defined() || gv.defined())
    kernels::gated_linear_attention_segment_log_decay(gk, gv, tr.log_decay_k, tr.log_decay_v);
  return tr;
}

void check_exchanged_call(const Tensor& s_in, const Tensor* s_out, const Transition* tr,
                          const char* core) {
  LINEA_CHECK(!s_in.defined() && s_out == nullptr && tr == nullptr)
      << core << ": under a state exchange (LASP-2) the incoming state comes from the exchange; "
      << "s_in, s_out and the transition must be left out";
}
}  // namespace

Tensor GlaCore::forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gk,
                        const Tensor& gv, double scale, const Tensor& s_in, bool recurrent,
                        Tensor* s_out, Transition* tr) {
  if (StateExchange* ex = StateExchange::active()) {
    check_exchanged_call(s_in, s_out, tr, "GlaCore");
    return forward_exchanged(*ex, q, k, v, gk, gv, scale, recurrent);
  }
  q_ = q, k_ = k, v_ = v, gk_ = gk, gv_ = gv, s_in_ = s_in, scale_ = scale, slot_ = -1;
  Tensor o = Tensor::empty({q.dim(0), q.dim(1), q.dim(2), v.dim(3)}, q.dtype(), q.device());
  Tensor fin;
  if (s_out) fin = state_like(q, v);
  if (recurrent) {
    kernels::gated_linear_attention_recurrent_forward(q, k, v, gk, gv, scale, s_in, o, fin);
  } else {
    kernels::gated_linear_attention_chunked_forward(
        q, k, v, gk, gv, scale, effective_chunk(chunk_, q.dim(1)), s_in, o, fin);
  }
  if (s_out) *s_out = fin;
  if (tr) *tr = diagonal_transition(q, v, gk, gv);
  return o;
}

// The state-only scan gives B; its gather then runs while the scan from a zero state makes the
// local outputs, and the incoming state's term is added last (kernels/state_output.h).
Tensor GlaCore::forward_exchanged(StateExchange& ex, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& gk, const Tensor& gv, double scale,
                                  bool recurrent) {
  q_ = q, k_ = k, v_ = v, gk_ = gk, gv_ = gv, scale_ = scale;
  const int64_t chunk = effective_chunk(chunk_, q.dim(1));
  Tensor o = Tensor::empty({q.dim(0), q.dim(1), q.dim(2), v.dim(3)}, q.dtype(), q.device());
  Tensor b = state_like(q, v), none;
  if (recurrent) {
    // The reference: the zero-state outputs come with B, before the gather.
    kernels::gated_linear_attention_recurrent_forward(q, k, v, gk, gv, scale, none, o, b);
    slot_ = ex.post(diagonal_transition(q, v, gk, gv), b);
  } else {
    kernels::gated_linear_attention_chunked_forward(q, k, v, gk, gv, scale, chunk, none, none, b);
    slot_ = ex.post(diagonal_transition(q, v, gk, gv), b);
    kernels::gated_linear_attention_chunked_forward(q, k, v, gk, gv, scale, chunk, none, o, none);
  }
  s_in_ = ex.incoming(slot_);
  if (s_in_.defined()) kernels::state_output_forward(q, gk, gv, scale, s_in_, o);
  return o;
}

GlaCore::Grads GlaCore::backward(const Tensor& d_o, const Tensor& ds_out, bool want_ds_in,
                                 bool want_dgk) {
  Grads g;
  const Device dev = q_.device();
  g.dq = Tensor::empty(q_.shape(), q_.dtype(), dev);
  g.dk = Tensor::empty(k_.shape(), k_.dtype(), dev);
  g.dv = Tensor::empty(v_.shape(), v_.dtype(), dev);
  if (gk_.defined() && want_dgk) g.dgk = Tensor::empty(gk_.shape(), gk_.dtype(), dev);
  if (gv_.defined()) g.dgv = Tensor::empty(gv_.shape(), gv_.dtype(), dev);
  if (want_ds_in) g.ds_in = state_like(q_, v_);
  Tensor ds = ds_out;
  if (slot_ >= 0) {
    // LASP-2: the gradient reaching the final state comes from the later ranks, which need this
    // rank's dS_in of its own outputs, c = scale sum_t (q_t exp(b_t))^T (dO_t exp(bv_t)).
    StateExchange* ex = StateExchange::active();
    LINEA_CHECK(ex != nullptr && !ds_out.defined())
        << "GlaCore: the forward ran under a state exchange, so must the backward";
    Tensor c = state_like(q_, v_);
    kernels::state_output_state_grad(q_, gk_, gv_, scale_, d_o, c);
    ds = ex->d_final(slot_, c);
  }
  kernels::gated_linear_attention_chunked_backward(q_, k_, v_, gk_, gv_, scale_,
                                                   effective_chunk(chunk_, q_.dim(1)), s_in_, d_o,
                                                   ds, g.dq, g.dk, g.dv, g.dgk, g.dgv, g.ds_in);
  release_saved();
  return g;
}

Tensor DeltaCore::forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                          const Tensor& beta, double scale, const Tensor& s_in, bool recurrent,
                          Tensor* s_out, Transition* tr) {
  if (StateExchange* ex = StateExchange::active()) {
    check_exchanged_call(s_in, s_out, tr, "DeltaCore");
    return forward_exchanged(*ex, q, k, v, g, beta, scale, recurrent);
  }
  q_ = q, k_ = k, v_ = v, g_ = g, beta_ = beta, s_in_ = s_in, scale_ = scale, slot_ = -1;
  Tensor o = Tensor::empty({q.dim(0), q.dim(1), q.dim(2), v.dim(3)}, q.dtype(), q.device());
  Tensor fin;
  if (s_out) fin = state_like(q, v);
  const int64_t chunk = effective_chunk(chunk_, q.dim(1));
  if (recurrent) {
    kernels::delta_rule_recurrent_forward(q, k, v, g, beta, scale, s_in, o, fin);
  } else {
    kernels::delta_rule_chunked_forward(q, k, v, g, beta, scale, chunk, s_in, o, fin);
  }
  if (s_out) *s_out = fin;
  if (tr) {
    tr->kind = Transition::Kind::kDense;
    tr->dense = Tensor::empty({q.dim(0), q.dim(2), q.dim(3), q.dim(3)}, state_dtype(q), q.device());
    kernels::delta_rule_chunked_transition(k, g, beta, chunk, tr->dense);
  }
  return o;
}

// The delta rule's outputs depend on S_in through the WY factors, with no cheap closed form: the
// scan from a zero state gives B, and after the gather the scan runs again from S_in.
Tensor DeltaCore::forward_exchanged(StateExchange& ex, const Tensor& q, const Tensor& k,
                                    const Tensor& v, const Tensor& g, const Tensor& beta,
                                    double scale, bool recurrent) {
  const ExchangeScope plain(nullptr);  // the scans below are plain segments
  Transition a;
  Tensor b;
  Tensor o = forward(q, k, v, g, beta, scale, Tensor(), recurrent, &b, &a);
  slot_ = ex.post(a, b);
  s_in_ = ex.incoming(slot_);
  if (s_in_.defined()) {
    const int slot = slot_;
    o = forward(q, k, v, g, beta, scale, s_in_, recurrent, nullptr, nullptr);
    slot_ = slot;
  }
  return o;
}

DeltaCore::Grads DeltaCore::backward(const Tensor& d_o, const Tensor& ds_out, bool want_ds_in) {
  if (slot_ >= 0) {
    // LASP-2: c = dS_in of this rank's own outputs (it depends on neither S_in nor dS_out) goes
    // to the earlier ranks; the later ranks' c give dS_out, and the backward runs with it.
    StateExchange* ex = StateExchange::active();
    LINEA_CHECK(ex != nullptr && !ds_out.defined())
        << "DeltaCore: the forward ran under a state exchange, so must the backward";
    const Tensor q = q_, k = k_, v = v_, g = g_, beta = beta_, s_in = s_in_;
    const int slot = slot_;
    slot_ = -1;
    Grads local = backward(d_o, Tensor(), true);
    Tensor ds = ex->d_final(slot, local.ds_in);
    if (!ds.defined()) {  // the last rank: nothing reaches its final state
      if (!want_ds_in) local.ds_in = Tensor();
      return local;
    }
    q_ = q, k_ = k, v_ = v, g_ = g, beta_ = beta, s_in_ = s_in;
    return backward(d_o, ds, want_ds_in);
  }
  Grads gr;
  const Device dev = q_.device();
  gr.dq = Tensor::empty(q_.shape(), q_.dtype(), dev);
  gr.dk = Tensor::empty(k_.shape(), k_.dtype(), dev);
  gr.dv = Tensor::empty(v_.shape(), v_.dtype(), dev);
  gr.dbeta = Tensor::empty(beta_.shape(), beta_.dtype(), dev);
  if (g_.defined()) gr.dg = Tensor::empty(g_.shape(), g_.dtype(), dev);
  if (want_ds_in) gr.ds_in = state_like(q_, v_);
  kernels::delta_rule_chunked_backward(q_, k_, v_, g_, beta_, scale_,
                                       effective_chunk(chunk_, q_.dim(1)), s_in_, d_o, ds_out,
                                       gr.dq, gr.dk, gr.dv, gr.dg, gr.dbeta, gr.ds_in);
  release_saved();
  return gr;
}

}  // namespace linea
