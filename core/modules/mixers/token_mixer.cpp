#include "core/modules/mixers/token_mixer.h"

#include "core/config/config.h"
#include "core/modules/mixers/linear_attention_mixer.h"

namespace linea {
namespace {

kernels::FeatureMap feature_map_of(config::MixerConfig::FeatureMap f) {
  switch (f) {
    case config::MixerConfig::IDENTITY:
      return kernels::FeatureMap::kIdentity;
    case config::MixerConfig::ELU_PLUS_ONE:
      return kernels::FeatureMap::kEluPlusOne;
    case config::MixerConfig::RELU:
      return kernels::FeatureMap::kRelu;
  }
  LINEA_CHECK(false) << "unhandled feature map " << static_cast<int>(f);
  return kernels::FeatureMap::kIdentity;
}

}  // namespace

std::unique_ptr<TokenMixer> make_token_mixer(const config::Config& cfg, int layer,
                                             const std::string& prefix, DType dtype) {
  const std::string pattern = resolved_layer_pattern(cfg);
  LINEA_CHECK(layer >= 0 && layer < static_cast<int>(pattern.size())) << "layer " << layer;
  LINEA_USER_CHECK(pattern[layer] == 'L',
                   "softmax-attention (N) layers come with the mixers work; use only L for now")
      << "model.layer_pattern letter " << layer << " is '" << pattern[layer] << "'";
  const auto& m = cfg.model().mixer();
  switch (m.kind()) {
    case config::MixerConfig::LINEAR_ATTENTION: {
      LinearAttentionOptions opt;
      opt.hidden = cfg.model().hidden_size();
      opt.heads = m.num_heads();
      opt.head_dim = resolved_head_dim(cfg);
      opt.chunk = m.chunk_size();
      opt.feature_map = feature_map_of(m.feature_map());
      opt.output_norm = m.output_norm();
      opt.norm_eps = cfg.model().norm_eps();
      return std::make_unique<LinearAttentionMixer>(prefix, opt, dtype);
    }
  }
  LINEA_USER_CHECK(false, "run `linea info mixers` for the supported kinds")
      << "model.mixer.kind " << static_cast<int>(m.kind()) << " is not supported";
  return nullptr;
}

}  // namespace linea
