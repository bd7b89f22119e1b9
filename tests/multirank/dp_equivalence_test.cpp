// Data parallelism is exact: W ranks with micro-batch m give the same per-step losses and the same
// parameters after 3 steps as one rank with micro-batch W*m, and as one rank with W accumulated
// micro-batches of m (f64, 1e-10).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/config/config.h"
#include "core/trainer/trainer.h"
#include "parallel/mpi_communicator.h"

namespace linea {
namespace {

config::Config mqar_config(const std::string& out_dir) {
  config::Config cfg = load_config({}, {});
  cfg.mutable_model()->set_hidden_size(16);
  cfg.mutable_model()->set_vocab_size(32);
  cfg.mutable_model()->mutable_mixer()->set_num_heads(2);
  cfg.mutable_model()->mutable_mixer()->set_chunk_size(8);
  cfg.mutable_model()->mutable_channel_mixer()->set_intermediate_size(32);
  cfg.mutable_data()->set_source(config::DataConfig::MQAR);
  cfg.mutable_data()->set_seq_len(32);
  cfg.mutable_data()->mutable_mqar()->set_num_kv_pairs(4);
  cfg.mutable_data()->mutable_mqar()->set_num_queries(4);
  cfg.mutable_train()->set_steps(3);
  cfg.mutable_train()->set_dtype("f64");
  cfg.mutable_train()->set_output_dir(out_dir);
  cfg.mutable_schedule()->set_warmup_steps(1);
  cfg.mutable_logging()->set_every_steps(100);
  return cfg;
}

std::string temp_dir(const std::string& name, int rank) {
  auto p = std::filesystem::temp_directory_path() /
           ("linea_dp_test_" + std::to_string(::getpid()) + "_" + name + std::to_string(rank));
  return p.string();
}

TEST(DataParallel, WRanksEqualOneRankWithWTimesTheBatch) {
  auto world = parallel::MpiCommunicator::world();
  const int W = world->size();
  config::Config dp_cfg = mqar_config(temp_dir("dp", world->rank()));
  dp_cfg.mutable_train()->set_micro_batch_size(2);
  TrainSummary dp = train(dp_cfg, *world);

  // The single-rank references run on every rank, each on its own.
  parallel::SelfCommunicator self;
  config::Config big = mqar_config(temp_dir("big", world->rank()));
  big.mutable_train()->set_micro_batch_size(2 * W);
  TrainSummary one = train(big, self);
  config::Config acc = mqar_config(temp_dir("acc", world->rank()));
  acc.mutable_train()->set_micro_batch_size(2);
  acc.mutable_train()->set_grad_accum_steps(W);
  TrainSummary accum = train(acc, self);

  ASSERT_EQ(dp.losses.size(), 3u);
  for (size_t s = 0; s < dp.losses.size(); ++s) {
    EXPECT_NEAR(dp.losses[s], one.losses[s], 1e-10) << "step " << s;
    EXPECT_NEAR(dp.losses[s], accum.losses[s], 1e-10) << "step " << s;
  }
  EXPECT_LT(dp.losses.back(), dp.losses.front());
  // The parameters after 3 steps agree too (f64, 1e-10 absolute; they are O(0.1)).
  ASSERT_EQ(dp.final_parameters.size(), one.final_parameters.size());
  for (size_t i = 0; i < dp.final_parameters.size(); ++i) {
    double worst = 0, worst_acc = 0;
    for (int64_t j = 0; j < dp.final_parameters[i].numel(); ++j) {
      worst = std::max(worst,
                       std::abs(dp.final_parameters[i].item(j) - one.final_parameters[i].item(j)));
      worst_acc = std::max(
          worst_acc, std::abs(dp.final_parameters[i].item(j) - accum.final_parameters[i].item(j)));
    }
    EXPECT_LT(worst, 1e-10) << "parameter " << i;
    EXPECT_LT(worst_acc, 1e-10) << "parameter " << i;
  }
  for (const char* n : {"dp", "big", "acc"})
    std::filesystem::remove_all(temp_dir(n, world->rank()));
}

// The MoE variant: one MoE layer (softmax top-2 with a shared expert) and one SIGMOID_BIAS layer
// whose bias moves every step from the global load. The aux loss is a per-micro-batch mean
// (docs/moe.md), so DP = W equals W accumulated micro-batches with it on, and equals one big
// micro-batch when it is off (the z-loss averages exactly).
config::Config moe_config(const std::string& out_dir, double aux_coeff) {
  config::Config cfg = mqar_config(out_dir);
  auto* cm = cfg.mutable_model()->mutable_channel_mixer();
  cm->set_kind(config::ChannelMixerConfig::MOE);
  auto* moe = cm->mutable_moe();
  moe->set_num_experts(4);
  moe->set_top_k(2);
  moe->set_expert_intermediate_size(16);
  moe->set_num_shared_experts(1);
  moe->set_shared_intermediate_size(8);
  moe->set_aux_loss_coeff(aux_coeff);
  moe->set_z_loss_coeff(0.01);
  moe->set_bias_update_rate(0.01);
  return cfg;
}

TEST(DataParallel, MoeWRanksEqualOneRank) {
  auto world = parallel::MpiCommunicator::world();
  const int W = world->size();
  parallel::SelfCommunicator self;
  for (auto router : {config::MoeConfig::SOFTMAX_TOPK, config::MoeConfig::SIGMOID_BIAS}) {
    for (double aux : {0.0, 0.05}) {
      auto make = [&](const std::string& name, int mbs, int accum) {
        config::Config c = moe_config(temp_dir(name, world->rank()), aux);
        c.mutable_model()->mutable_channel_mixer()->mutable_moe()->set_router(router);
        c.mutable_train()->set_micro_batch_size(mbs);
        c.mutable_train()->set_grad_accum_steps(accum);
        return c;
      };
      TrainSummary dp = train(make("moe_dp", 2, 1), *world);
      TrainSummary accum = train(make("moe_acc", 2, W), self);
      ASSERT_EQ(dp.losses.size(), 3u);
      for (size_t s = 0; s < dp.losses.size(); ++s) {
        EXPECT_NEAR(dp.losses[s], accum.losses[s], 1e-10) << "step " << s << " aux " << aux;
        EXPECT_NEAR(dp.aux_losses[s], accum.aux_losses[s], 1e-10) << "step " << s;
      }
      if (aux == 0.0) {
        TrainSummary one = train(make("moe_big", 2 * W, 1), self);
        for (size_t s = 0; s < dp.losses.size(); ++s) {
          EXPECT_NEAR(dp.losses[s], one.losses[s], 1e-10) << "step " << s;
          EXPECT_NEAR(dp.aux_losses[s], one.aux_losses[s], 1e-10) << "step " << s;
        }
      }
      EXPECT_LT(dp.losses.back(), dp.losses.front());
    }
  }
  for (const char* n : {"moe_dp", "moe_acc", "moe_big"})
    std::filesystem::remove_all(temp_dir(n, world->rank()));
}

}  // namespace
}  // namespace linea
