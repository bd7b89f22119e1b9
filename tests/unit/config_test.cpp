#include "core/config/config.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "core/util/check.h"

namespace linea {
namespace {

namespace pb = google::protobuf;

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = testing::TempDir() + "/linea_config_test_" + name;
  std::ofstream(path) << text;
  return path;
}

// The message of the linea::Error that fn throws ("" and a test failure if it does not throw).
template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a linea::Error";
  return "";
}

void expect_all_fields_set(const pb::Message& msg, const std::string& where) {
  const pb::Descriptor* d = msg.GetDescriptor();
  const pb::Reflection* r = msg.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) continue;
    ASSERT_TRUE(r->HasField(msg, f)) << where << f->name();
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      expect_all_fields_set(r->GetMessage(msg, f), where + f->name() + ".");
    }
  }
}

TEST(Config, EmbeddedDefaultParsesAndValidates) {
  const config::Config cfg = load_config({}, {});
  EXPECT_EQ(cfg.model().hidden_size(), 64);
  EXPECT_EQ(cfg.model().mixer().feature_map(), config::MixerConfig::ELU_PLUS_ONE);
  EXPECT_NO_THROW(validate_config(cfg, 0));
  EXPECT_NO_THROW(validate_config(cfg, 1));
  EXPECT_EQ(resolved_head_dim(cfg), 16);
  EXPECT_EQ(resolved_intermediate_size(cfg), 176);
  EXPECT_EQ(resolved_layer_pattern(cfg), "LL");
  EXPECT_EQ(resolved_dp(cfg, 4), 4);
}

TEST(Config, ResolvedValuesFromDefaults) {
  config::Config cfg;  // every field at its schema default
  EXPECT_EQ(resolved_head_dim(cfg), 16);
  EXPECT_EQ(resolved_intermediate_size(cfg), 168);  // nearest multiple of 8 to 170.67
  cfg.mutable_model()->set_hidden_size(96);
  EXPECT_EQ(resolved_intermediate_size(cfg), 256);
  cfg.mutable_model()->mutable_mixer()->set_head_dim(8);
  EXPECT_EQ(resolved_head_dim(cfg), 8);
  EXPECT_EQ(resolved_layer_pattern(cfg), "LL");
  cfg.mutable_parallel()->set_dp(3);
  EXPECT_EQ(resolved_dp(cfg, 6), 3);
}

TEST(Config, FilesMergeInOrderThenOverrides) {
  const std::string a =
      write_temp("a.pbtxt",
                 "model { hidden_size: 128 mixer { num_heads: 8 chunk_size: 16 } }\n"
                 "train { steps: 10 output_dir: \"runs/a\" }\n");
  const std::string b = write_temp("b.pbtxt",
                                   "# later file wins field by field\n"
                                   "model { mixer { num_heads: 2 } }\n"
                                   "train { steps: 20 }\n"
                                   "data { seq_len: 64 }\n");
  const config::Config cfg = load_config({a, b}, {"train.micro_batch_size=3"});
  EXPECT_EQ(cfg.model().hidden_size(), 128);
  EXPECT_EQ(cfg.model().mixer().num_heads(), 2);
  EXPECT_EQ(cfg.model().mixer().chunk_size(), 16);
  EXPECT_EQ(cfg.train().steps(), 20);
  EXPECT_EQ(cfg.train().output_dir(), "runs/a");
  EXPECT_EQ(cfg.train().micro_batch_size(), 3);
  EXPECT_EQ(cfg.data().seq_len(), 64);
  // Files start from the schema defaults, not from the embedded tiny config.
  EXPECT_EQ(cfg.model().mixer().feature_map(), config::MixerConfig::IDENTITY);
  EXPECT_NO_THROW(validate_config(cfg, 1));

  const config::Config reversed = load_config({b, a}, {});
  EXPECT_EQ(reversed.model().mixer().num_heads(), 8);
  EXPECT_EQ(reversed.train().steps(), 10);
}

TEST(Config, OverridesSetEveryScalarType) {
  config::Config cfg = load_config({}, {});
  apply_override(cfg, "train.steps=5");
  EXPECT_EQ(cfg.train().steps(), 5);
  apply_override(cfg, "optimizer.lr=1e-4");
  EXPECT_DOUBLE_EQ(cfg.optimizer().lr(), 1e-4);
  apply_override(cfg, "model.tie_embeddings=false");
  EXPECT_FALSE(cfg.model().tie_embeddings());
  apply_override(cfg, "model.tie_embeddings=1");
  EXPECT_TRUE(cfg.model().tie_embeddings());
  apply_override(cfg, "logging.all_ranks=TRUE");
  EXPECT_TRUE(cfg.logging().all_ranks());
  apply_override(cfg, "train.output_dir=runs/my run");
  EXPECT_EQ(cfg.train().output_dir(), "runs/my run");
  apply_override(cfg, "model.mixer.feature_map=relu");
  EXPECT_EQ(cfg.model().mixer().feature_map(), config::MixerConfig::RELU);
  apply_override(cfg, "data.source=MQAR");
  EXPECT_EQ(cfg.data().source(), config::DataConfig::MQAR);
  apply_override(cfg, "data.seed=18446744073709551615");
  EXPECT_EQ(cfg.data().seed(), 18446744073709551615ull);
  apply_override(cfg, " model.hidden_size = 32 ");
  EXPECT_EQ(cfg.model().hidden_size(), 32);
}

TEST(Config, BadOverridesAreErrors) {
  config::Config cfg = load_config({}, {});
  auto err = [&](const std::string& o) { return error_of([&] { apply_override(cfg, o); }); };

  std::string e = err("train.steps=12abc");
  EXPECT_NE(e.find("train.steps"), std::string::npos) << e;
  EXPECT_NE(e.find("12abc"), std::string::npos) << e;
  EXPECT_NE(err("train.steps=99999999999").find("train.steps"), std::string::npos);
  EXPECT_NE(err("train.steps=").find("train.steps"), std::string::npos);
  EXPECT_NE(err("data.seed=-1").find("data.seed"), std::string::npos);
  EXPECT_NE(err("data.seed=18446744073709551616").find("data.seed"), std::string::npos);
  EXPECT_NE(err("optimizer.lr=fast").find("optimizer.lr"), std::string::npos);
  EXPECT_NE(err("optimizer.lr=1e999").find("optimizer.lr"), std::string::npos);
  EXPECT_NE(err("model.tie_embeddings=yes").find("model.tie_embeddings"), std::string::npos);

  e = err("model.mixer.feature_map=gelu");
  EXPECT_NE(e.find("model.mixer.feature_map"), std::string::npos) << e;
  EXPECT_NE(e.find("IDENTITY, ELU_PLUS_ONE, RELU"), std::string::npos) << e;

  e = err("model.hiden_size=3");
  EXPECT_NE(e.find("model.hiden_size"), std::string::npos) << e;
  EXPECT_NE(e.find("vocab_size, hidden_size, num_layers"), std::string::npos) << e;

  e = err("model.mixer=1");
  EXPECT_NE(e.find("model.mixer"), std::string::npos) << e;
  EXPECT_NE(e.find("is a message"), std::string::npos) << e;

  e = err("model.vocab_size.x=1");
  EXPECT_NE(e.find("model.vocab_size"), std::string::npos) << e;
  EXPECT_NE(err("train.steps").find("train.steps"), std::string::npos);
  EXPECT_NE(err("=5").find("=5"), std::string::npos);

  // A failed override leaves the config as it was (no half-created sub-messages).
  config::Config empty;
  EXPECT_THROW(apply_override(empty, "model.mixer.bogus=1"), Error);
  EXPECT_FALSE(empty.has_model());
  EXPECT_THROW(apply_override(empty, "model.mixer.num_heads=many"), Error);
  EXPECT_FALSE(empty.has_model());
}

TEST(Config, EveryRuleNamesItsField) {
  struct Case {
    std::vector<std::string> overrides;
    int world_size;
    std::vector<std::string> expected;  // substrings of the message
  };
  const std::vector<Case> cases = {
      {{"model.vocab_size=1"}, 0, {"model.vocab_size = 1"}},
      {{"model.hidden_size=0"}, 0, {"model.hidden_size = 0"}},
      {{"model.num_layers=0"}, 0, {"model.num_layers = 0"}},
      {{"model.mixer.num_heads=0"}, 0, {"model.mixer.num_heads = 0"}},
      {{"model.mixer.num_heads=5"}, 0, {"model.mixer.num_heads = 5", "model.hidden_size = 64"}},
      {{"model.mixer.chunk_size=0"}, 0, {"model.mixer.chunk_size = 0"}},
      {{"model.mixer.chunk_size=48"}, 0, {"model.mixer.chunk_size = 48", "data.seq_len"}},
      {{"model.layer_pattern=LLL"}, 0, {"model.layer_pattern = \"LLL\"", "num_layers = 2"}},
      {{"model.layer_pattern=LX"}, 0, {"model.layer_pattern = \"LX\""}},
      {{"model.layer_pattern=LN", "model.attention.num_kv_heads=3"},
       0,
       {"model.attention.num_kv_heads = 3", "num_heads = 4"}},
      {{"model.mixer.memory_top_k=5"}, 0, {"model.mixer.memory_top_k = 5", "num_memories = 4"}},
      {{"data.seq_len=0"}, 0, {"data.seq_len = 0"}},
      {{"train.steps=0"}, 0, {"train.steps = 0"}},
      {{"train.micro_batch_size=0"}, 0, {"train.micro_batch_size = 0"}},
      {{"train.grad_accum_steps=-1"}, 0, {"train.grad_accum_steps = -1"}},
      {{"optimizer.lr=0"}, 0, {"optimizer.lr = 0"}},
      {{"optimizer.lr=nan"}, 0, {"optimizer.lr = nan"}},
      {{"optimizer.beta1=1"}, 0, {"optimizer.beta1 = 1"}},
      {{"optimizer.beta2=-0.5"}, 0, {"optimizer.beta2 = -0.5"}},
      {{"optimizer.eps=0"}, 0, {"optimizer.eps = 0"}},
      {{"optimizer.weight_decay=-1"}, 0, {"optimizer.weight_decay = -1"}},
      {{"optimizer.grad_clip=-1"}, 0, {"optimizer.grad_clip = -1"}},
      {{"schedule.warmup_steps=-1"}, 0, {"schedule.warmup_steps = -1"}},
      {{"schedule.warmup_steps=201"}, 0, {"schedule.warmup_steps = 201", "train.steps = 200"}},
      {{"schedule.min_lr_ratio=1.5"}, 0, {"schedule.min_lr_ratio = 1.5"}},
      {{"train.dtype=f16"}, 0, {"train.dtype = \"f16\"", "f32, f64"}},
      {{"train.precision=fp8"}, 0, {"train.precision = \"fp8\"", "f32, bf16"}},
      {{"parallel.sp=0"}, 0, {"parallel.sp = 0"}},
      {{"parallel.ep=0"}, 0, {"parallel.ep = 0"}},
      {{"parallel.dp=-1"}, 0, {"parallel.dp = -1"}},
      {{"parallel.sp=3"}, 0, {"parallel.sp = 3", "data.seq_len = 128"}},
      {{"parallel.sp=2"}, 3, {"parallel.sp = 2", "world size 3"}},
      {{"parallel.dp=3"}, 2, {"parallel.dp = 3", "world size 2"}},
      {{"parallel.sp=2", "data.seq_len=96", "model.mixer.chunk_size=32"},
       4,
       {"model.mixer.chunk_size = 32", "data.seq_len / parallel.sp"}},
      {{"parallel.ep=2"}, 0, {"parallel.ep > 1 needs MoE layers (model.channel_mixer.kind: MOE)"}},
      {{"parallel.ep=3", "model.channel_mixer.kind=MOE"}, 4, {"parallel.ep = 3", "world size 4"}},
      {{"parallel.ep=3", "model.channel_mixer.kind=MOE"},
       3,
       {"model.channel_mixer.moe.num_experts = 8", "parallel.ep = 3"}},
      {{"data.path="}, 0, {"data.path", "TOKEN_SHARD"}},
      {{"data.source=MQAR", "data.mqar.num_kv_pairs=40", "data.mqar.num_queries=30"},
       0,
       {"data.mqar", "140", "data.seq_len = 128"}},
      {{"data.source=MQAR", "model.vocab_size=3"}, 0, {"model.vocab_size = 3", "MQAR"}},
      {{"logging.every_steps=0"}, 0, {"logging.every_steps = 0"}},
      {{"logging.level=loud"}, 0, {"logging.level = \"loud\"", "trace, debug, info, warn, error"}},
      {{"checkpoint.every_steps=-1"}, 0, {"checkpoint.every_steps = -1"}},
      {{"checkpoint.keep_last=0"}, 0, {"checkpoint.keep_last = 0"}},
      {{"model.channel_mixer.kind=MOE", "model.channel_mixer.moe.top_k=9"},
       0,
       {"model.channel_mixer.moe.top_k = 9", "num_experts = 8"}},
      {{"model.channel_mixer.kind=MOE", "model.channel_mixer.moe.top_k=0"},
       0,
       {"model.channel_mixer.moe.top_k = 0"}},
      {{"model.channel_mixer.kind=MOE", "model.channel_mixer.moe.num_experts=0"},
       0,
       {"model.channel_mixer.moe.num_experts = 0"}},
      {{"model.channel_mixer.kind=MOE", "model.channel_mixer.moe.expert_intermediate_size=0"},
       0,
       {"model.channel_mixer.moe.expert_intermediate_size = 0"}},
      {{"model.channel_mixer.kind=MOE", "model.channel_mixer.moe.num_shared_experts=1"},
       0,
       {"model.channel_mixer.moe.shared_intermediate_size = 0"}},
      {{"model.channel_mixer.kind=MOE", "model.channel_mixer.moe.capacity_factor=-1"},
       0,
       {"model.channel_mixer.moe.capacity_factor = -1"}},
      {{"model.channel_mixer.kind=MOE", "model.channel_mixer.moe.aux_loss_coeff=-0.1"},
       0,
       {"model.channel_mixer.moe.aux_loss_coeff = -0.1"}},
      {{"model.channel_mixer.kind=MOE", "model.channel_mixer.moe.z_loss_coeff=nan"},
       0,
       {"model.channel_mixer.moe.z_loss_coeff = nan"}},
      {{"model.channel_mixer.kind=MOE", "model.channel_mixer.moe_pattern=EDE"},
       0,
       {"model.channel_mixer.moe_pattern = \"EDE\"", "num_layers = 2"}},
      {{"model.channel_mixer.kind=MOE", "model.channel_mixer.moe_pattern=EX"},
       0,
       {"model.channel_mixer.moe_pattern = \"EX\""}},
  };
  for (const Case& c : cases) {
    const config::Config cfg = load_config({}, c.overrides);
    const std::string e = error_of([&] { validate_config(cfg, c.world_size); });
    EXPECT_NE(e.find("\nhint: "), std::string::npos) << e;
    for (const std::string& s : c.expected) {
      EXPECT_NE(e.find(s), std::string::npos) << "overrides " << c.overrides[0] << ": " << e;
    }
  }
}

TEST(Config, MoePatternResolves) {
  EXPECT_EQ(resolved_moe_pattern(load_config({}, {})), "DD");
  EXPECT_EQ(resolved_moe_pattern(load_config({}, {"model.channel_mixer.kind=MOE"})), "EE");
  EXPECT_EQ(resolved_moe_pattern(load_config(
                {}, {"model.channel_mixer.kind=MOE", "model.channel_mixer.moe_pattern=DE"})),
            "DE");
  EXPECT_EQ(
      resolved_moe_pattern(load_config({}, {"model.num_layers=4", "model.channel_mixer.kind=MOE",
                                            "model.channel_mixer.moe_every=2"})),
      "DEDE");
}

TEST(Config, ValidCombinationsPass) {
  EXPECT_NO_THROW(validate_config(load_config({}, {"parallel.dp=2"}), 2));
  EXPECT_NO_THROW(
      validate_config(load_config({}, {"parallel.ep=2", "model.channel_mixer.kind=MOE"}), 4));
  EXPECT_NO_THROW(
      validate_config(load_config({}, {"model.mixer.num_heads=5", "model.mixer.head_dim=16"}), 0));
  EXPECT_NO_THROW(
      validate_config(load_config({}, {"data.source=MQAR", "data.path=", "model.layer_pattern=",
                                       "model.vocab_size=4", "schedule.warmup_steps=200"}),
                      0));
}

TEST(Config, ParseErrorNamesFileAndLine) {
  const std::string path =
      write_temp("bad.pbtxt", "model {\n  hidden_size: 64\n  num_layers: two\n}\n");
  const std::string e = error_of([&] { load_config({path}, {}); });
  EXPECT_NE(e.find(path + ":3:"), std::string::npos) << e;
  EXPECT_NE(e.find("hint: see core/proto/linea.proto for the fields"), std::string::npos) << e;
}

TEST(Config, UnknownFieldIsAnError) {
  const std::string path = write_temp("unknown.pbtxt", "model {\n  hiden_size: 64\n}\n");
  const std::string e = error_of([&] { load_config({path}, {}); });
  EXPECT_NE(e.find("hiden_size"), std::string::npos) << e;
  EXPECT_NE(e.find(path + ":2:"), std::string::npos) << e;
  EXPECT_NE(e.find("core/proto/linea.proto"), std::string::npos) << e;
}

TEST(Config, MissingFileIsAnError) {
  const std::string path = testing::TempDir() + "/linea_config_test_does_not_exist.pbtxt";
  const std::string e = error_of([&] { load_config({path}, {}); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
}

TEST(Config, TextRoundTripsWithDefaultsWritten) {
  const config::Config cfg = load_config({}, {"optimizer.lr=1e-4", "data.seed=7"});
  const std::string text = config_to_text(cfg);
  EXPECT_NE(text.find("norm_eps: 1e-06"), std::string::npos) << text;  // a default tiny omits
  EXPECT_NE(text.find("checkpoint {"), std::string::npos) << text;

  const config::Config parsed = parse_config_text(text, "resolved");
  expect_all_fields_set(parsed, "");
  EXPECT_TRUE(pb::util::MessageDifferencer::Equivalent(parsed, cfg));
  EXPECT_EQ(config_to_text(parsed), text);
}

}  // namespace
}  // namespace linea
