// A trainable parameter: its checkpoint name (PyTorch-style dotted path, documented in
// docs/checkpoints.md), value, gradient (accumulated with `+=` by backward passes) and how it is
// replicated across ranks (which decides the group its gradient is reduced over).
#pragma once

#include <string>
#include <vector>

#include "core/tensor/tensor.h"

namespace linea {

enum class ParamSharding {
  kReplicated,  // every rank holds it; gradients reduced over DP x SP
  kExpert,      // held by the ranks of one expert group (the MoE issue)
};

struct Parameter {
  std::string name;
  Tensor value;
  Tensor grad;
  bool weight_decay = true;  // AdamW decoupled decay applies (matrices yes, norms no)
  ParamSharding sharding = ParamSharding::kReplicated;
};

using ParameterList = std::vector<Parameter*>;

}  // namespace linea
