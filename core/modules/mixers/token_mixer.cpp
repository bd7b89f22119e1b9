#include "core/modules/mixers/token_mixer.h"

#include "core/config/config.h"
#include "core/modules/mixers/mixer_factories.h"

namespace linea {

config::MixerConfig mixer_config_for_layer(const config::Config& cfg, int layer) {
  config::MixerConfig m = cfg.model().mixer();
  for (const auto& o : cfg.model().mixer_overrides())
    if (o.layer() == layer) m.MergeFrom(o.mixer());
  return m;
}

int64_t mixer_head_dim(const MixerContext& ctx, const config::MixerConfig& m) {
  LINEA_USER_CHECK(m.num_heads() > 0, "set model.mixer.num_heads to a positive number")
      << "model.mixer.num_heads is " << m.num_heads();
  LINEA_USER_CHECK(m.head_dim() > 0 || ctx.hidden % m.num_heads() == 0,
                   "choose model.mixer.num_heads dividing model.hidden_size, or set head_dim")
      << "hidden size " << ctx.hidden << " is not divisible by " << m.num_heads() << " heads";
  return m.head_dim() > 0 ? m.head_dim() : ctx.hidden / m.num_heads();
}

std::unique_ptr<TokenMixer> make_token_mixer(const config::Config& cfg, int layer,
                                             const std::string& prefix, DType dtype) {
  const std::string pattern = resolved_layer_pattern(cfg);
  LINEA_CHECK(layer >= 0 && layer < static_cast<int>(pattern.size())) << "layer " << layer;
  MixerContext ctx;
  ctx.prefix = prefix;
  ctx.layer = layer;
  ctx.num_layers = cfg.model().num_layers();
  ctx.hidden = cfg.model().hidden_size();
  ctx.norm_eps = cfg.model().norm_eps();
  ctx.dtype = dtype;
  if (pattern[layer] == 'N') return make_softmax_attention(ctx, cfg.model().attention());

  const config::MixerConfig m = mixer_config_for_layer(cfg, layer);
  switch (m.kind()) {
    case config::MixerConfig::LINEAR_ATTENTION:
      return make_basic_linear_attention(ctx, m);
    case config::MixerConfig::LIGHTNING:
    case config::MixerConfig::RETNET:
    case config::MixerConfig::MAMBA2:
    case config::MixerConfig::SIMPLE_GLA:
    case config::MixerConfig::GLA:
    case config::MixerConfig::HGRN2:
      return make_decay_mixer(ctx, m);
    case config::MixerConfig::DELTANET:
    case config::MixerConfig::GATED_DELTANET:
      return make_delta_mixer(ctx, m);
    case config::MixerConfig::GSA:
      return make_gsa_mixer(ctx, m);
    case config::MixerConfig::MOM:
      return make_mom_mixer(ctx, m);
  }
  LINEA_USER_CHECK(false, "run `linea info mixers` for the supported kinds")
      << "model.mixer.kind " << static_cast<int>(m.kind()) << " is not supported";
  return nullptr;
}

}  // namespace linea
