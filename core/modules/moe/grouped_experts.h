// The routed experts of one MoE layer as one grouped computation: expert l (global index
// first + l) is a SwiGLU y = down(silu(gate(x)) * up(x)) on its contiguous block of counts[l]
// rows, and all experts run together through the grouped products of kernels/grouped_gemm.h:
//   gu = x [gate_l | up_l]^T (one [2F, D] operand per expert), h = silu(g) * u, y = h down_l^T.
//
// Parameters: one per expert and matrix, with the names and shapes of SwiGLUMLP
// ("<prefix>.<e>.gate_proj.weight" [F, D], ".up_proj.weight" [F, D], ".down_proj.weight" [D, F];
// ParamSharding::kExpert, weight decay), collected in expert order gate, up, down, so
// checkpoints and the EP layout are those of a list of SwiGLUMLPs.
//
// The operands are stacked copies of the weights ([E, 2F, D] and [E, D, F]) in the rows' dtype,
// made for each forward and again in backward (like Linear's bf16 copy, never kept between them):
// under train.precision bf16 the MoE layer hands bf16 rows on a GPU, and the copies are bf16.
// Forward saves the input rows and gu (the backward recomputes h from gu and writes dgu over it);
// the weight gradients accumulate (`+=`) into the f32 (or storage dtype) grads.
#pragma once

#include <string>
#include <vector>

#include "core/modules/module.h"
#include "core/modules/parameter.h"

namespace linea {

class GroupedExperts {
 public:
  GroupedExperts(const std::string& prefix, int64_t first, int64_t count, int64_t hidden,
                 int64_t intermediate, DType dtype);
  void init(uint64_t seed, double std, double out_std);
  // rows [R, D] (f32/f64, or bf16 on a GPU), R = sum of counts -> [R, D] in the rows' dtype.
  Tensor forward(const Tensor& rows, const std::vector<int64_t>& counts);
  // dy [R, D] -> d(rows) in the forward rows' dtype; the same counts as the forward.
  Tensor backward(const Tensor& dy, const std::vector<int64_t>& counts);
  void collect(ParameterList& out);
  void release_saved() { x_ = gu_ = Tensor(); }
  int64_t size() const { return static_cast<int64_t>(params_.size() / 3); }

  Parameter& gate(int64_t l) { return params_[3 * l]; }
  Parameter& up(int64_t l) { return params_[3 * l + 1]; }
  Parameter& down(int64_t l) { return params_[3 * l + 2]; }

 private:
  // The stacked operands [E, 2F, D] (gate rows, then up rows) and [E, D, F] in `dt` on `device`.
  void stack(DType dt, Device device, Tensor& gate_up, Tensor& down_w);

  int64_t hidden_, inter_;
  std::vector<Parameter> params_;  // 3 per expert; never resized after construction
  Tensor x_, gu_;
};

}  // namespace linea
