// A family whose module is being written: its constructor fails with a clear message until the
// family's own file lands, which deletes this one.
#include "core/modules/mixers/mixer_factories.h"

namespace linea {

std::unique_ptr<TokenMixer> make_gsa_mixer(const MixerContext&, const config::MixerConfig&) {
  LINEA_USER_CHECK(false, "run `linea info mixers` for the kinds this build supports")
      << std::string("GSA") << " is not available in this build yet";
  return nullptr;
}

}  // namespace linea
