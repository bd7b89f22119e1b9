#include "core/modules/mixers/state_core.h"

#include "kernels/delta_rule.h"
#include "kernels/gated_linear_attention.h"

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
}  // namespace

Tensor GlaCore::forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gk,
                        const Tensor& gv, double scale, const Tensor& s_in, bool recurrent,
                        Tensor* s_out, Transition* tr) {
  q_ = q, k_ = k, v_ = v, gk_ = gk, gv_ = gv, s_in_ = s_in, scale_ = scale;
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
  if (tr) {
    tr->kind = Transition::Kind::kDiagonal;
    tr->log_decay_k = Tensor();
    tr->log_decay_v = Tensor();
    const DType dt = state_dtype(q);
    if (gk.defined())
      tr->log_decay_k = gk.ndim() == 3
                            ? Tensor::empty({q.dim(0), q.dim(2)}, dt, q.device())
                            : Tensor::empty({q.dim(0), q.dim(2), q.dim(3)}, dt, q.device());
    if (gv.defined())
      tr->log_decay_v = Tensor::empty({q.dim(0), q.dim(2), v.dim(3)}, dt, q.device());
    if (gk.defined() || gv.defined())
      kernels::gated_linear_attention_segment_log_decay(gk, gv, tr->log_decay_k, tr->log_decay_v);
  }
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
  kernels::gated_linear_attention_chunked_backward(q_, k_, v_, gk_, gv_, scale_,
                                                   effective_chunk(chunk_, q_.dim(1)), s_in_, d_o,
                                                   ds_out, g.dq, g.dk, g.dv, g.dgk, g.dgv, g.ds_in);
  q_ = k_ = v_ = gk_ = gv_ = s_in_ = Tensor();
  return g;
}

Tensor DeltaCore::forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                          const Tensor& beta, double scale, const Tensor& s_in, bool recurrent,
                          Tensor* s_out, Transition* tr) {
  q_ = q, k_ = k, v_ = v, g_ = g, beta_ = beta, s_in_ = s_in, scale_ = scale;
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

DeltaCore::Grads DeltaCore::backward(const Tensor& d_o, const Tensor& ds_out, bool want_ds_in) {
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
  q_ = k_ = v_ = g_ = beta_ = s_in_ = Tensor();
  return gr;
}

}  // namespace linea
