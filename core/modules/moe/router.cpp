#include "core/modules/moe/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#ifdef LINEA_HAS_CUDA
#include "kernels/cuda/ops.h"
#endif

namespace linea {

Router::Router(const std::string& name, int64_t hidden, const config::MoeConfig& cfg, DType dtype,
               parallel::Communicator* seq)
    : cfg_(cfg),
      experts_(cfg.num_experts()),
      proj_(name, hidden, cfg.num_experts(), dtype),
      bias_(cfg.num_experts(), 0.0),
      seq_(seq && seq->size() > 1 ? seq : nullptr),
      dtype_(dtype) {}

const Routing& Router::forward(const Tensor& x) {
  if (!x.device().is_cpu()) return forward_cuda(x);
  const int64_t N = x.dim(0), E = experts_, k = cfg_.top_k();
  const std::vector<double> z = proj_.forward(x).to_vector();
  const bool sigmoid = cfg_.router() == config::MoeConfig::SIGMOID_BIAS;
  score_.assign(N * E, 0.0);
  softmax_.assign(N * E, 0.0);
  lse_.assign(N, 0.0);
  routing_ = {N, k, std::vector<int32_t>(N * k), std::vector<double>(N * k), Tensor(), Tensor()};
  load_.assign(E, 0);
  std::vector<double> prob_sum(E, 0.0), key(E);
  std::vector<int32_t> order(E);
  double z_sum = 0;
  for (int64_t t = 0; t < N; ++t) {
    const double* zt = &z[t * E];
    double* st = &score_[t * E];
    double* pt = &softmax_[t * E];
    const double m = *std::max_element(zt, zt + E);
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += pt[e] = std::exp(zt[e] - m);
    for (int64_t e = 0; e < E; ++e) pt[e] /= sum;
    lse_[t] = m + std::log(sum);
    z_sum += lse_[t] * lse_[t];
    double s_total = 0;
    for (int64_t e = 0; e < E; ++e) {
      st[e] = sigmoid ? 1.0 / (1.0 + std::exp(-zt[e])) : pt[e];
      key[e] = sigmoid ? st[e] + bias_[e] : st[e];
      s_total += st[e];
    }
    // P_e: the mean router probability (sigmoid scores normalised over the experts).
    for (int64_t e = 0; e < E; ++e) prob_sum[e] += sigmoid ? st[e] / s_total : st[e];
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      return key[a] > key[b] || (key[a] == key[b] && a < b);
    });
    double chosen = 0;
    for (int64_t j = 0; j < k; ++j) chosen += st[order[j]];
    const bool normalise = sigmoid || cfg_.renormalize();
    for (int64_t j = 0; j < k; ++j) {
      routing_.expert[t * k + j] = order[j];
      routing_.weight[t * k + j] =
          cfg_.routed_scaling() * st[order[j]] / (normalise ? chosen : 1.0);
      ++load_[order[j]];
    }
  }
  finish_losses(prob_sum, z_sum, N);
  return routing_;
}

void Router::finish_losses(const std::vector<double>& prob_sum, double z_sum, int64_t N) {
  const int64_t E = experts_, k = cfg_.top_k();
  // The statistics of the losses, over the sequence group: [load (E), prob_sum (E), z_sum, N].
  std::vector<double> g(2 * E + 2);
  for (int64_t e = 0; e < E; ++e) g[e] = static_cast<double>(load_[e]), g[E + e] = prob_sum[e];
  g[2 * E] = z_sum, g[2 * E + 1] = static_cast<double>(N);
  group_size_ = 1;
  if (seq_) {
    Tensor t = Tensor::from_vector({2 * E + 2}, g, DType::kF64);
    seq_->all_reduce(t);
    g = t.to_vector();
    group_size_ = seq_->size();
  }
  group_load_.assign(g.begin(), g.begin() + E);
  group_tokens_ = g[2 * E + 1];
  aux_loss_ = 0;
  z_loss_ = 0;
  if (group_tokens_ > 0) {
    for (int64_t e = 0; e < E; ++e)
      aux_loss_ += group_load_[e] / (group_tokens_ * k) * (g[E + e] / group_tokens_);
    aux_loss_ *= cfg_.aux_loss_coeff() * static_cast<double>(E);
    z_loss_ = cfg_.z_loss_coeff() * g[2 * E] / group_tokens_;
  }
}

const Routing& Router::forward_cuda(const Tensor& x) {
#ifdef LINEA_HAS_CUDA
  const int64_t N = x.dim(0), E = experts_, k = cfg_.top_k();
  const Device dev = x.device();
  const bool sigmoid = cfg_.router() == config::MoeConfig::SIGMOID_BIAS;
  const Tensor z = proj_.forward(x);
  if (sigmoid &&
      (!bias_dev_.defined() || !(bias_dev_.device() == dev) || bias_on_device_ != bias_)) {
    Tensor h = Tensor::empty({E}, DType::kF32, Device::cpu());
    for (int64_t e = 0; e < E; ++e) h.data<float>()[e] = static_cast<float>(bias_[e]);
    bias_dev_ = h.to(dev);
    bias_on_device_ = bias_;
  }
  routing_ = {N,
              k,
              std::vector<int32_t>(N * k),
              {},
              Tensor::empty({N * k}, DType::kI32, dev),
              Tensor::empty({N * k}, DType::kF32, dev)};
  score_dev_ = Tensor::empty({N, E}, DType::kF32, dev);
  prob_dev_ = Tensor::empty({N, E}, DType::kF32, dev);
  lse_dev_ = Tensor::empty({N}, DType::kF32, dev);
  Tensor stats = Tensor::empty({N * k + E + 1}, DType::kF64, dev);
  kernels::cuda::moe_route_forward(z, bias_dev_, k, sigmoid, sigmoid || cfg_.renormalize(),
                                   cfg_.routed_scaling(), routing_.expert_index, routing_.weights,
                                   score_dev_, prob_dev_, lse_dev_, stats);
  // The one read-back of the layer's forward.
  const std::vector<double> h = stats.to_vector();
  load_.assign(E, 0);
  for (int64_t c = 0; c < N * k; ++c) {
    routing_.expert[c] = static_cast<int32_t>(h[c]);
    ++load_[routing_.expert[c]];
  }
  finish_losses(std::vector<double>(h.begin() + N * k, h.begin() + N * k + E), h[N * k + E], N);
  // d(aux)/dq per expert without the backward's scale, uploaded while the stream is idle.
  const double n_group = std::max(group_tokens_, 1.0);
  Tensor daux = Tensor::empty({E}, DType::kF32, Device::cpu());
  for (int64_t e = 0; e < E; ++e)
    daux.data<float>()[e] =
        static_cast<float>(cfg_.aux_loss_coeff() * static_cast<double>(E) *
                           (group_load_[e] / (n_group * static_cast<double>(k))) / n_group);
  daux_dev_ = daux.to(dev);
  return routing_;
#else
  LINEA_CHECK(false) << "Router::forward: x is on " << x.device().str()
                     << " but this build has no CUDA backend";
  return routing_;
#endif
}

Tensor Router::backward(const Tensor& dweight, double aux_scale) {
#ifdef LINEA_HAS_CUDA
  const int64_t N = routing_.tokens, E = experts_, k = routing_.top_k;
  LINEA_CHECK(routing_.expert_index.defined() && dweight.device() == routing_.expert_index.device())
      << "Router::backward: dweight on " << dweight.device().str()
      << " after a forward that did not run there";
  const bool sigmoid = cfg_.router() == config::MoeConfig::SIGMOID_BIAS;
  const double scale = aux_scale * group_size_;
  const double n_group = std::max(group_tokens_, 1.0);
  Tensor dz = Tensor::empty({N, E}, dtype_, dweight.device());
  kernels::cuda::moe_route_backward(dweight, routing_.expert_index, routing_.weights, score_dev_,
                                    prob_dev_, lse_dev_, daux_dev_, k, scale,
                                    scale * cfg_.z_loss_coeff() * 2.0 / n_group, sigmoid,
                                    sigmoid || cfg_.renormalize(), cfg_.routed_scaling(), dz);
  score_dev_ = prob_dev_ = lse_dev_ = Tensor();
  return proj_.backward(dz);
#else
  static_cast<void>(aux_scale);
  LINEA_CHECK(false) << "Router::backward: dweight is on " << dweight.device().str()
                     << " but this build has no CUDA backend";
  return Tensor();
#endif
}

Tensor Router::backward(const std::vector<double>& dweight, double aux_scale) {
  const int64_t N = routing_.tokens, E = experts_, k = routing_.top_k;
  const bool sigmoid = cfg_.router() == config::MoeConfig::SIGMOID_BIAS;
  const bool normalise = sigmoid || cfg_.renormalize();
  const double rs = cfg_.routed_scaling();
  // d(aux)/dq_{t,e} = coeff * E * f_e / N, the same for every token (f_e and N over the sequence
  // group; its losses are counted once per rank of the group, hence the group size).
  std::vector<double> daux(E, 0.0);
  const double scale = aux_scale * group_size_;
  const double n_group = std::max(group_tokens_, 1.0);
  for (int64_t e = 0; e < E; ++e)
    daux[e] = scale * cfg_.aux_loss_coeff() * static_cast<double>(E) *
              (group_load_[e] / (n_group * static_cast<double>(k))) / n_group;
  const double dz_coeff = scale * cfg_.z_loss_coeff() * 2.0 / n_group;
  std::vector<double> dz(N * E, 0.0), ds(E);
  for (int64_t t = 0; t < N; ++t) {
    const double* st = &score_[t * E];
    const double* pt = &softmax_[t * E];
    double* dzt = &dz[t * E];
    std::fill(ds.begin(), ds.end(), 0.0);
    // Combine weights: w_j = rs * s_j / S (normalised) or rs * s_j.
    double chosen = 0, g = 0;
    for (int64_t j = 0; j < k; ++j) {
      chosen += st[routing_.expert[t * k + j]];
      g += dweight[t * k + j] * routing_.weight[t * k + j];
    }
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = routing_.expert[t * k + j];
      ds[e] += normalise ? (rs * dweight[t * k + j] - g) / chosen : rs * dweight[t * k + j];
    }
    // Aux loss through q: q = p (softmax) or s / sum(s) (sigmoid).
    if (sigmoid) {
      double s_total = 0, dq_q = 0;
      for (int64_t e = 0; e < E; ++e) s_total += st[e];
      for (int64_t e = 0; e < E; ++e) dq_q += daux[e] * st[e] / s_total;
      for (int64_t e = 0; e < E; ++e) ds[e] += (daux[e] - dq_q) / s_total;
      for (int64_t e = 0; e < E; ++e) dzt[e] = ds[e] * st[e] * (1.0 - st[e]);
    } else {
      double dot = 0;
      for (int64_t e = 0; e < E; ++e) {
        ds[e] += daux[e];
        dot += ds[e] * pt[e];
      }
      for (int64_t e = 0; e < E; ++e) dzt[e] = pt[e] * (ds[e] - dot);
    }
    // z-loss: d(lse^2)/dz = 2 lse softmax(z).
    for (int64_t e = 0; e < E; ++e) dzt[e] += dz_coeff * lse_[t] * pt[e];
  }
  return proj_.backward(Tensor::from_vector({N, E}, dz, dtype_));
}

void Router::update_bias(const std::vector<double>& load) {
  if (cfg_.router() != config::MoeConfig::SIGMOID_BIAS) return;
  LINEA_CHECK(static_cast<int64_t>(load.size()) == experts_)
      << "update_bias: " << load.size() << " loads for " << experts_ << " experts";
  const double mean = std::accumulate(load.begin(), load.end(), 0.0) / experts_;
  for (int64_t e = 0; e < experts_; ++e) {
    const double d = mean - load[e];
    bias_[e] += cfg_.bias_update_rate() * static_cast<double>((d > 0) - (d < 0));
  }
}

}  // namespace linea
