// Shared by the mixer-level CUDA tests: one mixer built twice from a config, on the CPU in f64
// and on cuda:0 in f32 with the very same weights, and the comparison they hold the GPU to
// (the norm of the difference over the norm of the reference, and the largest element difference
// over the largest reference value).
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "core/config/config.h"
#include "core/modules/mixers/token_mixer.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea::testing {

struct MixerPair {
  std::unique_ptr<TokenMixer> cpu, gpu;
  ParameterList pc, pg;  // the same parameters, in the same order
};

// Layer 0 of `cfg` as a mixer named "mixer", initialised with std = out_std = 1 / sqrt(hidden)
// (seed 7) on the CPU in f32, then moved to cuda:0; the CPU twin gets the same values in f64.
// `adjust`, when given, may change a parameter's f32 value first (e.g. a random value where the
// init is a constant, so that a wrong path for it shows).
inline MixerPair make_mixer_pair(const config::Config& cfg,
                                 const std::function<void(Parameter&)>& adjust = {}) {
  MixerPair p;
  p.cpu = make_token_mixer(cfg, 0, "mixer", DType::kF64);
  p.gpu = make_token_mixer(cfg, 0, "mixer", DType::kF32);
  const double std = 1.0 / std::sqrt(static_cast<double>(cfg.model().hidden_size()));
  p.gpu->init(7, std, std);
  p.cpu->collect(p.pc);
  p.gpu->collect(p.pg);
  EXPECT_EQ(p.pc.size(), p.pg.size());
  for (size_t i = 0; i < p.pg.size() && i < p.pc.size(); ++i) {
    Parameter& g = *p.pg[i];
    if (adjust) adjust(g);
    g.value = g.value.to(Device::cuda(0));
    g.grad = g.grad.to(Device::cuda(0));
    p.pc[i]->value.copy_from(g.value);
  }
  return p;
}

// ||got - ref|| / ||ref|| < tol_norm and rel_err(got, ref) < tol_max; prints both.
inline void expect_norm_close(const Tensor& got, const Tensor& ref, double tol_norm, double tol_max,
                              const std::string& what) {
  const Tensor g = ref64(got), r = ref64(ref);
  ASSERT_EQ(g.shape(), r.shape()) << what;
  double diff = 0, norm = 0;
  for (int64_t j = 0; j < r.numel(); ++j) {
    diff += (g.item(j) - r.item(j)) * (g.item(j) - r.item(j));
    norm += r.item(j) * r.item(j);
  }
  const double e_norm = std::sqrt(diff / std::max(norm, 1e-300)), e_max = rel_err(g, r);
  EXPECT_LT(e_norm, tol_norm) << what << " (norm)";
  EXPECT_LT(e_max, tol_max) << what << " (max element)";
  std::printf("  %-56s norm %.2e  max %.2e\n", what.c_str(), e_norm, e_max);
}

}  // namespace linea::testing
