// Whole training runs under sequence parallelism: a 1/4 hybrid model (LLLNLLLN, MoE off) trained
// for 5 steps as DP x SP on W ranks gives the same losses as one rank with the whole batch (f64,
// 1e-10). Layouts: SP = W; and DP = 2 x SP = 2 on 4 ranks.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/config/config.h"
#include "core/trainer/trainer.h"
#include "parallel/mpi_communicator.h"

namespace linea {
namespace {

config::Config hybrid_config(const std::string& out_dir) {
  config::Config cfg = load_config({}, {});
  auto* m = cfg.mutable_model();
  m->set_hidden_size(16);
  m->set_vocab_size(32);
  m->set_num_layers(8);
  m->set_layer_pattern("LLLNLLLN");
  m->mutable_mixer()->set_kind(config::MixerConfig::GATED_DELTANET);
  m->mutable_mixer()->set_num_heads(2);
  m->mutable_mixer()->set_chunk_size(4);
  m->mutable_attention()->set_num_heads(4);
  m->mutable_attention()->set_num_kv_heads(2);
  m->mutable_channel_mixer()->set_intermediate_size(32);
  cfg.mutable_data()->set_source(config::DataConfig::MQAR);
  cfg.mutable_data()->set_seq_len(32);
  cfg.mutable_data()->mutable_mqar()->set_num_kv_pairs(4);
  cfg.mutable_data()->mutable_mqar()->set_num_queries(4);
  cfg.mutable_train()->set_steps(5);
  cfg.mutable_train()->set_micro_batch_size(2);
  cfg.mutable_train()->set_dtype("f64");
  cfg.mutable_train()->set_output_dir(out_dir);
  cfg.mutable_schedule()->set_warmup_steps(1);
  cfg.mutable_logging()->set_every_steps(100);
  return cfg;
}

std::string temp_dir(const std::string& name, int rank) {
  return (std::filesystem::temp_directory_path() /
          ("linea_sp_test_" + std::to_string(::getpid()) + "_" + name + std::to_string(rank)))
      .string();
}

void expect_layout_matches_one_rank(int dp, int sp) {
  auto world = parallel::MpiCommunicator::world();
  config::Config par = hybrid_config(temp_dir("par", world->rank()));
  par.mutable_parallel()->set_dp(dp);
  par.mutable_parallel()->set_sp(sp);
  TrainSummary got = train(par, *world);

  parallel::SelfCommunicator self;
  config::Config one = hybrid_config(temp_dir("one", world->rank()));
  one.mutable_train()->set_micro_batch_size(2 * dp);
  TrainSummary ref = train(one, self);

  ASSERT_EQ(got.losses.size(), 5u);
  for (size_t s = 0; s < got.losses.size(); ++s)
    EXPECT_NEAR(got.losses[s], ref.losses[s], 1e-10)
        << "dp " << dp << " sp " << sp << " step " << s;
  for (const char* n : {"par", "one"}) std::filesystem::remove_all(temp_dir(n, world->rank()));
}

TEST(SequenceParallel, HybridModelSpEqualsWorldMatchesOneRank) {
  auto world = parallel::MpiCommunicator::world();
  expect_layout_matches_one_rank(1, world->size());
}

TEST(SequenceParallel, HybridModelDp2Sp2MatchesOneRank) {
  auto world = parallel::MpiCommunicator::world();
  if (world->size() != 4) GTEST_SKIP() << "needs 4 ranks";
  expect_layout_matches_one_rank(2, 2);
}

}  // namespace
}  // namespace linea
