#include "core/modules/moe/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "core/modules/matmul_precision.h"
#include "core/util/phase_times.h"
#include "kernels/elementwise.h"
#include "kernels/moe_permute.h"

namespace linea {
namespace {

// out[t] = g[t] * s[t] over rows of D; dlogit[t] = <dy[t], s[t]> * g (1 - g).
template <typename T>
void gate_rows(T* s, const std::vector<double>& g, int64_t D) {
  for (size_t t = 0; t < g.size(); ++t)
    for (int64_t d = 0; d < D; ++d) s[t * D + d] *= static_cast<T>(g[t]);
}

template <typename T>
double row_dot(const T* a, const T* b, int64_t D) {
  double acc = 0;
  for (int64_t d = 0; d < D; ++d) acc += static_cast<double>(a[d]) * static_cast<double>(b[d]);
  return acc;
}

void scale_rows(Tensor& t, const std::vector<double>& g) {
  const int64_t D = t.dim(-1);
  if (t.dtype() == DType::kF32)
    gate_rows(t.data<float>(), g, D);
  else
    gate_rows(t.data<double>(), g, D);
}

double dot_row(const Tensor& a, const Tensor& b, int64_t t) {
  const int64_t D = a.dim(-1);
  if (a.dtype() == DType::kF32) return row_dot(a.data<float>() + t * D, b.data<float>() + t * D, D);
  return row_dot(a.data<double>() + t * D, b.data<double>() + t * D, D);
}

}  // namespace

MoeLayer::MoeLayer(const std::string& name, int64_t hidden, const config::MoeConfig& cfg,
                   DType dtype, parallel::Communicator* ep, parallel::Communicator* seq)
    : cfg_(cfg),
      hidden_(hidden),
      dtype_(dtype),
      router_(name + ".gate", hidden, cfg, dtype, seq),
      dispatcher_(ep && ep->size() > 1
                      ? std::make_unique<parallel::ExpertDispatcher>(*ep, cfg.num_experts())
                      : nullptr),
      first_local_(dispatcher_ ? dispatcher_->first_local_expert() : 0),
      // Experts keep their global index in their names (and so in their initial values).
      experts_(name + ".experts", first_local_,
               dispatcher_ ? dispatcher_->num_local_experts() : cfg.num_experts(), hidden,
               cfg.expert_intermediate_size(), dtype),
      step_load_(cfg.num_experts(), 0.0) {
  if (cfg.num_shared_experts() > 0) {
    shared_ = std::make_unique<SwiGLUMLP>(
        name + ".shared_experts", hidden,
        int64_t(cfg.num_shared_experts()) * cfg.shared_intermediate_size(), dtype);
    if (cfg.shared_expert_gate())
      shared_gate_ = std::make_unique<Linear>(name + ".shared_expert_gate", hidden, 1, dtype);
  }
}

void MoeLayer::init(uint64_t seed, double std, double out_std) {
  router_.init(seed, std);
  experts_.init(seed, std, out_std);
  if (shared_) shared_->init(seed, std, out_std);
  if (shared_gate_) init_normal(shared_gate_->weight(), seed, std);
}

std::vector<int64_t> MoeLayer::local_counts() const {
  if (dispatcher_) return dispatcher_->local_expert_counts();
  std::vector<int64_t> counts(num_local_experts());
  for (size_t e = 0; e < counts.size(); ++e) counts[e] = plan_.offsets[e + 1] - plan_.offsets[e];
  return counts;
}

Tensor MoeLayer::forward(const Tensor& x) {
  const Shape shape = x.shape();
  const int64_t N = x.numel() / hidden_;
  const Tensor xf = x.view({N, hidden_});
  const bool gpu = !x.device().is_cpu();
  const DefaultDeviceScope on(x.device());

  // route -> prepare
  const bool reuse = replaying_ && routing_kept_;
  routing_kept_ = false;
  std::optional<Phase> phase(std::in_place, "moe: router");
  const Routing& r = reuse ? router_.routing() : router_.forward(xf);
  phase.emplace("moe: plan");
  if (!reuse) {
    plan_ = plan_dispatch(r.expert, N, r.top_k, num_experts(),
                          expert_capacity(cfg_.capacity_factor(), N, r.top_k, num_experts()));
    if (gpu) upload_plan(plan_, x.device());
  }
  phase.emplace("moe: permute");
  // The expert rows: bf16 from here to the combine under bf16 precision on a GPU.
  Tensor rows = permute_tokens(xf, plan_, matmul_operand_dtype(xf));
  phase.emplace("moe: experts");
  if (dispatcher_) {
    // The plan's rows are already grouped by global expert; dispatch keeps that order per source.
    std::vector<int32_t> expert_of_row(static_cast<size_t>(plan_.rows()));
    for (int64_t e = 0; e < num_experts(); ++e)
      std::fill(expert_of_row.begin() + plan_.offsets[e],
                expert_of_row.begin() + plan_.offsets[e + 1], static_cast<int32_t>(e));
    dispatcher_->prepare(expert_of_row, x.device());
    // dispatch -> this rank's experts on every source's rows -> combine back to plan order
    expert_out_ =
        dispatcher_->combine(experts_.forward(dispatcher_->dispatch(rows), local_counts()));
  } else {
    expert_out_ = experts_.forward(rows, local_counts());
  }
  // finish: un-permute and combine with the router weights
  phase.emplace("moe: combine");
  Tensor y = gpu ? unpermute_combine(expert_out_, plan_, r.weights, x.dtype())
                 : unpermute_combine(expert_out_, plan_, r.weight);

  phase.reset();
  if (shared_) {
    Tensor s = shared_->forward(xf);
    if (shared_gate_ && gpu) {
      shared_gate_dev_ = Tensor::empty({N}, DType::kF32, x.device());
      kernels::moe_gate_add(shared_gate_->forward(xf), s, shared_gate_dev_, y);
      shared_out_ = s;
    } else if (shared_gate_) {
      const std::vector<double> logit = shared_gate_->forward(xf).to_vector();
      shared_gate_value_.resize(N);
      for (int64_t t = 0; t < N; ++t) shared_gate_value_[t] = 1.0 / (1.0 + std::exp(-logit[t]));
      shared_out_ = s.clone();
      scale_rows(s, shared_gate_value_);
      kernels::add_inplace(y, s);
    } else {
      kernels::add_inplace(y, s);
    }
  }

  stats_.aux_loss = router_.aux_loss();
  stats_.z_loss = router_.z_loss();
  stats_.load = router_.load();
  stats_.max_load = *std::max_element(stats_.load.begin(), stats_.load.end());
  stats_.mean_load = static_cast<double>(N * r.top_k) / static_cast<double>(num_experts());
  stats_.dropped = plan_.dropped;
  if (!replaying_)
    for (int64_t e = 0; e < num_experts(); ++e)
      step_load_[e] += static_cast<double>(stats_.load[e]);
  return y.view(shape);
}

Tensor MoeLayer::backward(const Tensor& dy) {
  const Shape shape = dy.shape();
  const int64_t N = dy.numel() / hidden_;
  const Tensor dyf = dy.view({N, hidden_});
  const bool gpu = !dy.device().is_cpu();
  const DefaultDeviceScope on(dy.device());
  Tensor dx = Tensor::zeros({N, hidden_}, dtype_, dy.device());

  if (shared_ && shared_gate_ && gpu) {
    Tensor ds = Tensor::empty({N, hidden_}, dyf.dtype(), dy.device());
    Tensor dlogit = Tensor::empty({N, 1}, dyf.dtype(), dy.device());
    kernels::moe_gate_backward(dyf, shared_out_, shared_gate_dev_, ds, dlogit);
    shared_out_ = Tensor();
    kernels::add_inplace(dx, shared_gate_->backward(dlogit));
    kernels::add_inplace(dx, shared_->backward(ds));
  } else if (shared_) {
    Tensor ds = dyf.clone();
    if (shared_gate_) {
      std::vector<double> dlogit(N);
      for (int64_t t = 0; t < N; ++t) {
        const double g = shared_gate_value_[t];
        dlogit[t] = dot_row(dyf, shared_out_, t) * g * (1.0 - g);
      }
      scale_rows(ds, shared_gate_value_);
      kernels::add_inplace(dx, shared_gate_->backward(Tensor::from_vector({N, 1}, dlogit, dtype_)));
      shared_out_ = Tensor();
    }
    kernels::add_inplace(dx, shared_->backward(ds));
  }

  Tensor drows;
  std::vector<double> dweight;
  Tensor dweight_dev;
  std::optional<Phase> phase(std::in_place, "moe: combine bwd");
  if (gpu)
    unpermute_combine_backward(dyf, expert_out_, plan_, router_.combine_weight_tensor(), drows,
                               dweight_dev);
  else
    unpermute_combine_backward(dyf, expert_out_, plan_, router_.combine_weights(), drows, dweight);
  expert_out_ = Tensor();
  phase.emplace("moe: experts bwd");
  if (dispatcher_) {
    // combine's backward is dispatch; dispatch's backward is combine (expert_dispatch.h).
    const Tensor d_received = dispatcher_->combine_backward(drows);
    drows = dispatcher_->dispatch_backward(experts_.backward(d_received, local_counts()));
  } else {
    drows = experts_.backward(drows, local_counts());
  }
  phase.emplace("moe: permute bwd");
  permute_tokens_backward(drows, plan_, dx);
  phase.emplace("moe: router bwd");
  kernels::add_inplace(dx, gpu ? router_.backward(dweight_dev, aux_grad_scale_)
                               : router_.backward(dweight, aux_grad_scale_));
  return dx.view(shape);
}

void MoeLayer::collect(ParameterList& out) {
  router_.collect(out);
  experts_.collect(out);
  if (shared_) shared_->collect(out);
  if (shared_gate_) shared_gate_->collect(out);
}

}  // namespace linea
