#include "core/modules/moe/grouped_experts.h"

#include "kernels/grouped_gemm.h"
#include "kernels/swiglu.h"

namespace linea {

GroupedExperts::GroupedExperts(const std::string& prefix, int64_t first, int64_t count,
                               int64_t hidden, int64_t intermediate, DType dtype)
    : hidden_(hidden), inter_(intermediate) {
  params_.reserve(3 * count);
  for (int64_t e = first; e < first + count; ++e) {
    const std::string name = prefix + "." + std::to_string(e);
    params_.push_back(make_parameter(name + ".gate_proj.weight", {intermediate, hidden}, dtype,
                                     /*weight_decay=*/true));
    params_.push_back(make_parameter(name + ".up_proj.weight", {intermediate, hidden}, dtype,
                                     /*weight_decay=*/true));
    params_.push_back(make_parameter(name + ".down_proj.weight", {hidden, intermediate}, dtype,
                                     /*weight_decay=*/true));
  }
  for (Parameter& p : params_) p.sharding = ParamSharding::kExpert;
}

void GroupedExperts::init(uint64_t seed, double std, double out_std) {
  for (int64_t l = 0; l < size(); ++l) {
    init_normal(gate(l), seed, std);
    init_normal(up(l), seed, std);
    init_normal(down(l), seed, out_std);
  }
}

void GroupedExperts::collect(ParameterList& out) {
  for (Parameter& p : params_) out.push_back(&p);
}

void GroupedExperts::stack(DType dt, Device device, Tensor& gate_up, Tensor& down_w) {
  const int64_t E = size(), F = inter_, D = hidden_;
  gate_up = Tensor::empty({E, 2 * F, D}, dt, device);
  down_w = Tensor::empty({E, D, F}, dt, device);
  for (int64_t l = 0; l < E; ++l) {
    const Tensor gu = gate_up.slice(l, l + 1).view({2 * F, D});
    gu.slice(0, F).copy_from(gate(l).value);
    gu.slice(F, 2 * F).copy_from(up(l).value);
    down_w.slice(l, l + 1).view({D, F}).copy_from(down(l).value);
  }
}

Tensor GroupedExperts::forward(const Tensor& rows, const std::vector<int64_t>& counts) {
  LINEA_CHECK(static_cast<int64_t>(counts.size()) == size())
      << "GroupedExperts: " << counts.size() << " row counts for " << size() << " experts";
  LINEA_CHECK(rows.ndim() == 2 && rows.dim(1) == hidden_)
      << "GroupedExperts: rows " << shape_str(rows.shape()) << " must be [R, " << hidden_ << "]";
  const int64_t R = rows.dim(0), F = inter_;
  const Device dev = rows.device();
  Tensor w_gu, w_down;
  stack(rows.dtype(), dev, w_gu, w_down);
  Tensor gu = Tensor::empty({R, 2 * F}, rows.dtype(), dev);
  kernels::grouped_linear_forward(rows, w_gu, counts, gu);
  Tensor h = Tensor::empty({R, F}, rows.dtype(), dev);
  kernels::swiglu_packed_forward(gu, h);
  Tensor y = Tensor::empty({R, hidden_}, rows.dtype(), dev);
  kernels::grouped_linear_forward(h, w_down, counts, y);
  x_ = rows;
  gu_ = gu;
  return y;
}

Tensor GroupedExperts::backward(const Tensor& dy_in, const std::vector<int64_t>& counts) {
  LINEA_CHECK(x_.defined() && gu_.defined())
      << "GroupedExperts: backward without a saved forward (released, or never run)";
  const DType dt = x_.dtype();
  const Tensor dy = dy_in.dtype() == dt ? dy_in : dy_in.to(dt);
  const int64_t R = x_.dim(0), F = inter_, E = size();
  const Device dev = x_.device();
  Tensor w_gu, w_down;
  stack(dt, dev, w_gu, w_down);

  // down: dh = dy down_l, d(down_l) += dy^T h, with h recomputed from gu.
  Tensor h = Tensor::empty({R, F}, dt, dev);
  kernels::swiglu_packed_forward(gu_, h);
  std::vector<Tensor> d_down(E);
  for (int64_t l = 0; l < E; ++l) d_down[l] = down(l).grad;
  Tensor dh = Tensor::empty({R, F}, dt, dev);
  kernels::grouped_linear_backward(h, w_down, dy, counts, dh, d_down);
  h = Tensor();
  w_down = Tensor();

  // SwiGLU, in place over gu, then gate/up: dx = dgu [gate_l | up_l], two gradient parts.
  Tensor dgu = gu_;
  kernels::swiglu_packed_backward(gu_, dh, dgu);
  gu_ = Tensor();
  dh = Tensor();
  std::vector<Tensor> d_gu(2 * E);
  for (int64_t l = 0; l < E; ++l) {
    d_gu[2 * l] = gate(l).grad;
    d_gu[2 * l + 1] = up(l).grad;
  }
  Tensor dx = Tensor::empty({R, hidden_}, dt, dev);
  kernels::grouped_linear_backward(x_, w_gu, dgu, counts, dx, d_gu);
  x_ = Tensor();
  return dx;
}

}  // namespace linea
