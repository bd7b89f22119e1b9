// Stop and resume is exact: 20 steps in one run and 10 + 10 with a checkpoint in between give
// bit-identical losses and parameters (f32, a dense model and a SIGMOID_BIAS MoE whose router
// bias buffers are state too). Damaged checkpoints are refused naming the file; checkpoints of
// another model, dtype or global batch are refused naming the field. One rank; the DP-size change
// and EP shards run under mpirun in tests/e2e/checkpoint_resume.sh.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/file_io.h"
#include "core/checkpoint/safetensors.h"
#include "core/config/config.h"
#include "core/model/model.h"
#include "core/trainer/trainer.h"
#include "core/util/check.h"

namespace linea {
namespace {
namespace fs = std::filesystem;

config::Config small_config(const fs::path& out, bool moe) {
  config::Config cfg = load_config({}, {});
  auto* m = cfg.mutable_model();
  m->set_hidden_size(16);
  m->set_vocab_size(32);
  m->mutable_mixer()->set_num_heads(2);
  m->mutable_mixer()->set_chunk_size(8);
  m->mutable_channel_mixer()->set_intermediate_size(32);
  if (moe) {
    auto* c = m->mutable_channel_mixer();
    c->set_kind(config::ChannelMixerConfig::MOE);
    c->mutable_moe()->set_num_experts(4);
    c->mutable_moe()->set_top_k(2);
    c->mutable_moe()->set_expert_intermediate_size(16);
    c->mutable_moe()->set_router(config::MoeConfig::SIGMOID_BIAS);
    c->mutable_moe()->set_bias_update_rate(0.01);
  }
  cfg.mutable_data()->set_source(config::DataConfig::MQAR);
  cfg.mutable_data()->set_seq_len(32);
  cfg.mutable_data()->mutable_mqar()->set_num_kv_pairs(4);
  cfg.mutable_data()->mutable_mqar()->set_num_queries(4);
  cfg.mutable_train()->set_steps(20);
  cfg.mutable_train()->set_micro_batch_size(2);
  cfg.mutable_train()->set_output_dir(out.string());
  cfg.mutable_schedule()->set_warmup_steps(3);
  cfg.mutable_logging()->set_every_steps(100);
  cfg.mutable_logging()->set_level("warn");
  return cfg;
}

class CheckpointResume : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("linea_resume_" + std::to_string(::getpid()));
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  fs::path root_;
};

void expect_bitwise_equal(const TrainSummary& whole, const TrainSummary& resumed) {
  ASSERT_EQ(resumed.first_step, 10);
  ASSERT_EQ(resumed.losses.size(), 10u);
  for (size_t i = 0; i < 10; ++i)
    EXPECT_EQ(std::memcmp(&whole.losses[10 + i], &resumed.losses[i], sizeof(double)), 0)
        << "step " << 11 + i << ": " << whole.losses[10 + i] << " vs " << resumed.losses[i];
  ASSERT_EQ(whole.final_parameters.size(), resumed.final_parameters.size());
  for (size_t p = 0; p < whole.final_parameters.size(); ++p) {
    const Tensor& a = whole.final_parameters[p];
    const Tensor& b = resumed.final_parameters[p];
    ASSERT_EQ(a.nbytes(), b.nbytes());
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << "parameter " << p;
  }
}

TEST_F(CheckpointResume, TenPlusTenStepsEqualTwentyBitForBit) {
  parallel::SelfCommunicator self;
  for (const bool moe : {false, true}) {
    SCOPED_TRACE(moe ? "SIGMOID_BIAS MoE" : "dense");
    const TrainSummary whole = train(small_config(root_ / "whole", moe), self);
    ASSERT_EQ(whole.losses.size(), 20u);

    config::Config first = small_config(root_ / "split", moe);
    first.mutable_train()->set_stop_after_steps(10);
    const TrainSummary part = train(first, self);
    ASSERT_EQ(part.losses.size(), 10u);
    for (size_t i = 0; i < 10; ++i) EXPECT_EQ(part.losses[i], whole.losses[i]);
    ASSERT_TRUE(fs::exists(root_ / "split/checkpoints/step-10/COMPLETE"));
    EXPECT_EQ(checkpoint::verify_checkpoint((root_ / "split/checkpoints/step-10").string()), 10);

    // The model file holds exactly the model's parameter names (plus the router buffers).
    Model model(first, DType::kF32);
    std::set<std::string> names;
    for (const Parameter* p : model.parameters()) names.insert(p->name);
    if (moe) names.insert("layers.0.mlp.gate.e_score_correction_bias");
    if (moe) names.insert("layers.1.mlp.gate.e_score_correction_bias");
    const checkpoint::SafetensorsFile f(
        checkpoint::read_file((root_ / "split/checkpoints/step-10/model.safetensors").string()),
        "model.safetensors");
    std::set<std::string> in_file;
    for (const auto& [name, e] : f.entries()) in_file.insert(name);
    EXPECT_EQ(in_file, names);

    // The same config again resumes by itself from the output dir's newest checkpoint.
    const TrainSummary resumed = train(small_config(root_ / "split", moe), self);
    expect_bitwise_equal(whole, resumed);
    fs::remove_all(root_);
  }
}

TEST_F(CheckpointResume, RefusesDamagedOrMismatchedCheckpoints) {
  parallel::SelfCommunicator self;
  config::Config cfg = small_config(root_ / "run", false);
  cfg.mutable_train()->set_steps(4);
  cfg.mutable_train()->set_stop_after_steps(2);
  cfg.mutable_schedule()->set_warmup_steps(1);
  train(cfg, self);
  const fs::path good = root_ / "run/checkpoints/step-2";
  ASSERT_TRUE(fs::exists(good / "COMPLETE"));

  // Each case damages a fresh copy and expects resume to refuse it with `what` in the message.
  int n = 0;
  const auto expect_refused = [&](const std::function<void(const fs::path&)>& damage,
                                  const config::Config& run_cfg, const std::string& what) {
    const fs::path copy = root_ / ("copy" + std::to_string(n++));
    fs::copy(good, copy, fs::copy_options::recursive);
    damage(copy);
    config::Config c = run_cfg;
    c.mutable_checkpoint()->set_resume_from(copy.string());
    c.mutable_train()->set_output_dir((root_ / "elsewhere").string());
    try {
      train(c, self);
      ADD_FAILURE() << "resume accepted a checkpoint that should be refused (" << what << ")";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(what), std::string::npos) << "expected '" << what << "' in: " << msg;
    }
  };
  const auto flip = [](const std::string& file, double where) {
    return [file, where](const fs::path& dir) {
      std::string bytes = checkpoint::read_file((dir / file).string());
      bytes[static_cast<size_t>(where * (bytes.size() - 1))] ^= 0x01;
      std::ofstream(dir / file, std::ios::binary | std::ios::trunc) << bytes;
    };
  };
  const auto truncate = [](const std::string& file) {
    return
        [file](const fs::path& dir) { fs::resize_file(dir / file, fs::file_size(dir / file) - 3); };
  };
  const auto remove = [](const std::string& file) {
    return [file](const fs::path& dir) { fs::remove(dir / file); };
  };
  const auto nothing = [](const fs::path&) {};
  config::Config run = cfg;
  run.mutable_train()->set_stop_after_steps(0);

  expect_refused(flip("model.safetensors", 0.7), run, "model.safetensors: checksum mismatch");
  expect_refused(flip("model.safetensors", 0.0), run, "model.safetensors: checksum mismatch");
  expect_refused(flip("optimizer.safetensors", 0.01), run,
                 "optimizer.safetensors: checksum mismatch");
  expect_refused(truncate("optimizer.safetensors"), run, "optimizer.safetensors is truncated");
  expect_refused(remove("config.pbtxt"), run, "config.pbtxt is missing");
  expect_refused(flip("checkpoint.json", 0.5), run, "checkpoint.json: checksum mismatch");
  expect_refused(flip("COMPLETE", 0.5), run, "checkpoint.json: checksum mismatch with");
  expect_refused(remove("COMPLETE"), run, "COMPLETE is missing");

  config::Config wider = run;
  wider.mutable_model()->set_hidden_size(32);
  expect_refused(nothing, wider, "model.* differs");
  config::Config bigger_batch = run;
  bigger_batch.mutable_train()->set_micro_batch_size(4);
  expect_refused(nothing, bigger_batch, "train.micro_batch_size");
  config::Config f64 = run;
  f64.mutable_train()->set_dtype("f64");
  expect_refused(nothing, f64, "train.dtype");

  // The undamaged checkpoint resumes; twice the micro-batch with half the accumulation is the
  // same global batch and is accepted too.
  config::Config ok = run;
  ok.mutable_checkpoint()->set_resume_from(good.string());
  ok.mutable_train()->set_output_dir((root_ / "ok").string());
  EXPECT_EQ(train(ok, self).first_step, 2);
  ok.mutable_train()->set_micro_batch_size(1);
  ok.mutable_train()->set_grad_accum_steps(2);
  EXPECT_EQ(train(ok, self).losses.size(), 2u);
}

}  // namespace
}  // namespace linea
