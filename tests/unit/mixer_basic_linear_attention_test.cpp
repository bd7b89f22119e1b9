// Basic linear attention with every feature map: the mixer checks of tests/common/mixer_check.h.
#include <gtest/gtest.h>

#include "common/mixer_check.h"

namespace linea::testing {
namespace {

class BasicLinearAttentionMixer : public ::testing::TestWithParam<config::MixerConfig::FeatureMap> {
};

TEST_P(BasicLinearAttentionMixer, PassesMixerChecks) {
  MixerCheck c;
  c.cfg = mixer_test_config(config::MixerConfig::LINEAR_ATTENTION);
  c.cfg.mutable_model()->mutable_mixer()->set_feature_map(GetParam());
  expect_all_mixer_checks(c);
}

INSTANTIATE_TEST_SUITE_P(FeatureMaps, BasicLinearAttentionMixer,
                         ::testing::Values(config::MixerConfig::IDENTITY,
                                           config::MixerConfig::ELU_PLUS_ONE,
                                           config::MixerConfig::RELU),
                         [](const auto& info) {
                           return config::MixerConfig::FeatureMap_Name(info.param);
                         });

}  // namespace
}  // namespace linea::testing
