// Loading, merging, overriding and validating configs (schema: core/proto/linea.proto).
//
//   load_config({"a.pbtxt", "b.pbtxt"}, {"train.steps=5"})
// parses each file in Protobuf text format and merges them in order (later scalar fields win;
// sub-messages merge field by field; repeated fields are replaced, not appended), then applies each
// `--set path=value` override (any scalar or enum field by its dotted path; enum values by name).
// With no files, the embedded default (configs/tiny.pbtxt compiled into the binary) is the base.
// Errors name the file (and line) or the field, the value, and the fix.
#pragma once

#include <string>
#include <vector>

#include "linea.pb.h"

namespace linea {

// The text of configs/tiny.pbtxt as compiled into the binary.
const char* embedded_default_config();

config::Config load_config(const std::vector<std::string>& files,
                           const std::vector<std::string>& overrides);
// Parses one text-format string (name is used in error messages).
config::Config parse_config_text(const std::string& text, const std::string& name);
// Applies one "dotted.path=value" override; throws linea::Error naming the path.
void apply_override(config::Config& cfg, const std::string& assignment);

// The resolved config: every field with its effective value (defaults written out), text format.
std::string config_to_text(const config::Config& cfg);

// Checks every rule of the schema; throws linea::Error with one clear message for the first
// mistake found (field, value, fix). world_size 0 skips the checks that need it.
void validate_config(const config::Config& cfg, int world_size);

// Derived values the rest of the code uses (so the rules live in one place).
int resolved_head_dim(const config::Config& cfg);
int resolved_intermediate_size(const config::Config& cfg);
std::string resolved_layer_pattern(const config::Config& cfg);
// One letter a layer: E = MoE channel mixer, D = dense (all D unless channel_mixer.kind = MOE).
std::string resolved_moe_pattern(const config::Config& cfg);
int resolved_dp(const config::Config& cfg, int world_size);

}  // namespace linea
