// The catalogue of token mixers, for `linea info mixers` and the docs: every kind with the name
// used in configs, its family of state transition and the paper it follows. A unit test checks that
// every MixerConfig.Kind and FeatureMap value appears here exactly once.
#pragma once

#include <string>
#include <vector>

namespace linea {

struct MixerInfo {
  std::string config;      // how to select it in a config
  std::string transition;  // the affine state transition family
  std::string paper;
};

const std::vector<MixerInfo>& mixer_catalog();

}  // namespace linea
