// The state-carrying step the linear mixers share: one call of a kernel family (gated linear
// attention, or the delta rule) with its segment I/O. It saves what its backward needs, runs the
// chunked kernels (or the recurrent reference when asked), and produces the final state and the
// segment transition on request. Mixers own the projections, gates, norms around it. Runs where
// its inputs live (CPU or CUDA); on CUDA the states and transitions are f32 (state_dtype).
// Under an ExchangeScope (state_exchange.h, LASP-2) a core takes its incoming state from the
// exchange instead of s_in, and the gradient of its final state from it in the backward; s_in,
// s_out and tr must then be left out (the sequence-parallel group holds whole sequences).
#pragma once

#include "core/modules/mixers/segment.h"
#include "core/modules/mixers/state_exchange.h"

namespace linea {

// S_t = diag(exp(gk_t)) S_{t-1} diag(exp(gv_t)) + k_t^T v_t,  o_t = scale q_t S_t
// (kernels/gated_linear_attention.h; without gates this is basic linear attention).
class GlaCore {
 public:
  explicit GlaCore(int64_t chunk) : chunk_(chunk) {}
  // gk, gv may be undefined; s_in undefined = zero state. Writes *s_out and *tr when non-null.
  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gk,
                 const Tensor& gv, double scale, const Tensor& s_in, bool recurrent, Tensor* s_out,
                 Transition* tr);
  struct Grads {
    Tensor dq, dk, dv, dgk, dgv, ds_in;  // dgk/dgv undefined when the gate was; ds_in when asked
  };
  // ds_out undefined = zero. Releases what the forward saved. want_dgk = false skips the key
  // gate's gradient (a constant decay: Lightning, RetNet); dgk is then undefined.
  Grads backward(const Tensor& d_o, const Tensor& ds_out, bool want_ds_in, bool want_dgk = true);
  void release_saved() {
    q_ = k_ = v_ = gk_ = gv_ = s_in_ = Tensor();
    slot_ = -1;
  }

 private:
  Tensor forward_exchanged(StateExchange& ex, const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& gk, const Tensor& gv, double scale, bool recurrent);

  int64_t chunk_;
  double scale_ = 1;
  Tensor q_, k_, v_, gk_, gv_, s_in_;
  int slot_ = -1;  // the exchange slot of the last forward (-1: none)
};

// The dtype of the states, gates and transitions of a mixer whose q lives on `q`'s device: q's
// own on the CPU (f32 or f64), f32 on CUDA (the scans carry f32 states and read f32 gates).
DType state_dtype(const Tensor& q);

// S_t = exp(g_t) (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,  o_t = scale q_t S_t
// (kernels/delta_rule.h; g undefined = DeltaNet).
class DeltaCore {
 public:
  explicit DeltaCore(int64_t chunk) : chunk_(chunk) {}
  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                 const Tensor& beta, double scale, const Tensor& s_in, bool recurrent,
                 Tensor* s_out, Transition* tr);
  struct Grads {
    Tensor dq, dk, dv, dg, dbeta, ds_in;
  };
  Grads backward(const Tensor& d_o, const Tensor& ds_out, bool want_ds_in);
  void release_saved() {
    q_ = k_ = v_ = g_ = beta_ = s_in_ = Tensor();
    slot_ = -1;
  }

 private:
  Tensor forward_exchanged(StateExchange& ex, const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& g, const Tensor& beta, double scale, bool recurrent);

  int64_t chunk_;
  double scale_ = 1;
  Tensor q_, k_, v_, g_, beta_, s_in_;
  int slot_ = -1;
};

// The chunk used for a segment of T tokens: the configured chunk when it divides T, else T itself
// when T is smaller (short evaluation sequences); anything else is a config error.
int64_t effective_chunk(int64_t chunk, int64_t T);

}  // namespace linea
