// How a state core (state_core.h) learns its incoming state from the earlier ranks of a
// sequence-parallel group, and the gradient of its final state from the later ones: LASP-2 at
// the level of the state-carrying kernel (parallel/lasp2.h implements it over a Communicator).
//
// A core with an exchange runs, per call, in the order the mixer calls its cores (the same on
// every rank of the group, so the collectives match):
//   forward:  post(A, B)      its segment transition A and its final state from a zero state B;
//                             the gather of every rank's (A, B) starts (on NCCL, on the
//                             communicator's own stream) and the core goes on with the work that
//                             needs no incoming state (the scan from a zero state);
//             incoming(slot)  waits for the gather and returns S_in = the composition of the
//                             earlier ranks' (A, B), undefined on the first rank;
//   backward: d_final(slot, c)  gathers every rank's c = dS_in of its own outputs and returns
//                             dS_out = c_(r+1) + A_(r+1)^T (c_(r+2) + ...), undefined on the last.
// The exchange is installed for the duration of the wrapped mixer's forward or backward by an
// ExchangeScope on the calling thread (parallel::Lasp2Mixer does this); cores without one run as
// a plain segment.
#pragma once

#include "core/modules/mixers/segment.h"

namespace linea {

class StateExchange {
 public:
  virtual ~StateExchange() = default;
  virtual int post(const Transition& a, const Tensor& b) = 0;
  virtual Tensor incoming(int slot) = 0;
  virtual Tensor d_final(int slot, const Tensor& c) = 0;

  // The exchange installed on this thread, or null.
  static StateExchange* active();
};

class ExchangeScope {
 public:
  explicit ExchangeScope(StateExchange* e);
  ~ExchangeScope();
  ExchangeScope(const ExchangeScope&) = delete;
  ExchangeScope& operator=(const ExchangeScope&) = delete;

 private:
  StateExchange* previous_;
};

}  // namespace linea
