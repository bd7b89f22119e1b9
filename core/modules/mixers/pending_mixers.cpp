// Families whose modules are being written; each constructor fails with a clear message until its
// file lands (this file then shrinks and disappears).
#include "core/modules/mixers/mixer_factories.h"

namespace linea {
namespace {
[[noreturn]] void pending(const char* what) {
  LINEA_USER_CHECK(false, "run `linea info mixers` for the kinds this build supports")
      << what << " is not available in this build";
  throw Error("unreachable");
}
}  // namespace

std::unique_ptr<TokenMixer> make_decay_mixer(const MixerContext&, const config::MixerConfig& m) {
  pending(config::MixerConfig::Kind_Name(m.kind()).c_str());
}
std::unique_ptr<TokenMixer> make_delta_mixer(const MixerContext&, const config::MixerConfig& m) {
  pending(config::MixerConfig::Kind_Name(m.kind()).c_str());
}
std::unique_ptr<TokenMixer> make_gsa_mixer(const MixerContext&, const config::MixerConfig&) {
  pending("GSA");
}
std::unique_ptr<TokenMixer> make_mom_mixer(const MixerContext&, const config::MixerConfig&) {
  pending("MOM");
}
std::unique_ptr<TokenMixer> make_softmax_attention(const MixerContext&,
                                                   const config::AttentionConfig&) {
  pending("softmax attention (N layers)");
}

}  // namespace linea
