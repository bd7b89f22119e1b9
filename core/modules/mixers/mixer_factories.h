// Constructors of each mixer family, called by the one switch in token_mixer.cpp. Each family
// lives in its own file next to this one.
#pragma once

#include <memory>
#include <string>

#include "core/modules/mixers/token_mixer.h"

namespace linea {

// What every mixer needs besides its own MixerConfig / AttentionConfig.
struct MixerContext {
  std::string prefix;  // checkpoint-name prefix, e.g. "layers.3.mixer"
  int layer = 0;
  int num_layers = 1;
  int64_t hidden = 0;
  double norm_eps = 1e-6;
  DType dtype = DType::kF32;
};

// The key (query) width per head: model.mixer.head_dim, or hidden / num_heads when that is 0.
int64_t mixer_head_dim(const MixerContext& ctx, const config::MixerConfig& m);

// basic_linear_attention.cpp: LINEAR_ATTENTION with every feature map.
std::unique_ptr<TokenMixer> make_basic_linear_attention(const MixerContext& ctx,
                                                        const config::MixerConfig& m);
// decay_mixers.cpp: LIGHTNING, RETNET, MAMBA2, SIMPLE_GLA, GLA, HGRN2.
std::unique_ptr<TokenMixer> make_decay_mixer(const MixerContext& ctx, const config::MixerConfig& m);
// delta_mixers.cpp: DELTANET, GATED_DELTANET.
std::unique_ptr<TokenMixer> make_delta_mixer(const MixerContext& ctx, const config::MixerConfig& m);
// gsa_mixer.cpp: GSA.
std::unique_ptr<TokenMixer> make_gsa_mixer(const MixerContext& ctx, const config::MixerConfig& m);
// mom_mixer.cpp: MOM.
std::unique_ptr<TokenMixer> make_mom_mixer(const MixerContext& ctx, const config::MixerConfig& m);
// softmax_attention_mixer.cpp: the N layer.
std::unique_ptr<TokenMixer> make_softmax_attention(const MixerContext& ctx,
                                                   const config::AttentionConfig& a);

}  // namespace linea
