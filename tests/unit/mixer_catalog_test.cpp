#include "core/modules/mixers/mixer_catalog.h"

#include <gtest/gtest.h>

#include "linea.pb.h"

namespace linea {
namespace {

int count_containing(const std::string& needle) {
  int n = 0;
  for (const auto& m : mixer_catalog()) n += m.config.find(needle) != std::string::npos;
  return n;
}

TEST(MixerCatalog, ListsEveryKindAndFeatureMap) {
  const auto* kinds = config::MixerConfig::Kind_descriptor();
  for (int i = 0; i < kinds->value_count(); ++i) {
    const std::string name = kinds->value(i)->name();
    EXPECT_GE(count_containing("kind: " + name + " "), 1) << name;
  }
  const auto* maps = config::MixerConfig::FeatureMap_descriptor();
  for (int i = 0; i < maps->value_count(); ++i) {
    const std::string name = maps->value(i)->name();
    EXPECT_EQ(count_containing("feature_map: " + name + " "), 1) << name;
  }
  EXPECT_EQ(count_containing("letter N"), 1);
}

}  // namespace
}  // namespace linea
