// The `linea` command line.
//   linea train [--config FILE ...] [--set path=value ...] [--resume DIR]
//                                                              train (under mpirun for many ranks)
//   linea eval --checkpoint DIR [--config FILE ...] [--set ...] validation loss and perplexity
//   linea validate-config [--config FILE ...] [--set ...] [--world-size N]
//   linea prepare-data --output FILE [--separator S] [--format token-shard|megatron] TEXT_FILE ...
//   linea info mixers                                            every supported token mixer
//   linea info model [--config FILE ...] [--set ...] [--json]    parameter counts, FLOPs/token
//   linea --version
// Errors a user can cause print one "error:" paragraph (with a hint line) and exit 1.

// ---- what the commands are made of -----------------------------------------------------------
#include <CLI/CLI.hpp>  // argument parsing
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>  // `linea eval` output

#include "core/config/config.h"                 // load, merge, override, validate
#include "core/data/prepare.h"                  // text -> token shard or Megatron dataset
#include "core/logging/log.h"                   // rank-aware logs
#include "core/model/model_size.h"              // `linea info model`: parameters, FLOPs
#include "core/modules/mixers/mixer_catalog.h"  // `linea info mixers`
#include "core/trainer/evaluate.h"              // `linea eval`: validation loss of a checkpoint
#include "core/trainer/trainer.h"               // the training loop
#include "parallel/launch_env.h"                // rank, local rank, host
#include "parallel/mpi_communicator.h"          // MPI runtime and world communicator

namespace {

struct ConfigArgs {
  std::vector<std::string> files;
  std::vector<std::string> sets;
  void add_to(CLI::App* app) {
    app->add_option("--config,-c", files,
                    "config file(s) in Protobuf text format, merged in order "
                    "(default: the embedded configs/tiny.pbtxt)");
    app->add_option("--set,-s", sets, "override one field: dotted.path=value (repeatable)");
  }
};

int run_train(const ConfigArgs& args, const std::string& resume, int* argc, char*** argv) {
  linea::parallel::MpiRuntime mpi(argc, argv);
  auto world = linea::parallel::MpiCommunicator::world();
  try {
    linea::config::Config cfg = linea::load_config(args.files, args.sets);
    if (!resume.empty()) cfg.mutable_checkpoint()->set_resume_from(resume);
    const auto& lc = cfg.logging();
    linea::init_logging(
        world->rank(), lc.level(), lc.all_ranks(),
        cfg.train().output_dir() + "/logs/rank" + std::to_string(world->rank()) + ".log");
    const auto li = linea::parallel::launch_info(*world);
    spdlog::info("launch: {} ranks via {}; this is rank {} on {} (local rank {} of {})",
                 li.world_size, li.launcher, li.rank, li.host, li.local_rank, li.local_size);
    linea::train(cfg, *world);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] error: %s\n", world->rank(), e.what());
    std::fflush(stderr);
    // A failure on one rank must not leave the others waiting in a collective.
    if (world->size() > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}

// `linea eval`: the config defaults to the checkpoint's own config.pbtxt.
int run_eval(ConfigArgs args, const std::string& checkpoint, int* argc, char*** argv) {
  linea::parallel::MpiRuntime mpi(argc, argv);
  auto world = linea::parallel::MpiCommunicator::world();
  try {
    if (args.files.empty()) args.files.push_back(checkpoint + "/config.pbtxt");
    const linea::config::Config cfg = linea::load_config(args.files, args.sets);
    linea::init_logging(world->rank(), cfg.logging().level(), cfg.logging().all_ranks());
    int64_t step = 0;
    const linea::EvalResult r = linea::evaluate_checkpoint(cfg, checkpoint, *world, &step);
    spdlog::info("eval: {} (step {}): val_loss {:.4f} | val_ppl {:.3f} | {} tokens in {} batches",
                 checkpoint, step, r.loss, r.perplexity, r.tokens, r.batches);
    if (world->rank() == 0) {
      const nlohmann::json j = {{"checkpoint", checkpoint}, {"step", step},
                                {"val_loss", r.loss},       {"val_ppl", r.perplexity},
                                {"val_tokens", r.tokens},   {"batches", r.batches}};
      std::cout << j.dump() << std::endl;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] error: %s\n", world->rank(), e.what());
    std::fflush(stderr);
    if (world->size() > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Linea: linear-attention MoE training on CPUs (MPI) and GPUs"};
  app.set_version_flag("--version", std::string("linea ") + LINEA_VERSION);
  app.require_subcommand(1);

  ConfigArgs train_args;
  auto* train = app.add_subcommand("train", "train a model from config files");
  train_args.add_to(train);
  std::string resume;
  train->add_option("--resume", resume,
                    "resume from this checkpoint directory (default: the newest complete one in "
                    "<train.output_dir>/checkpoints)");

  ConfigArgs eval_args;
  std::string eval_checkpoint;
  auto* eval = app.add_subcommand(
      "eval",
      "validation loss and perplexity of a checkpoint (prints one JSON line); the config "
      "defaults to the checkpoint's config.pbtxt");
  eval_args.add_to(eval);
  eval->add_option("--checkpoint", eval_checkpoint, "checkpoint directory (.../step-<N>)")
      ->required();

  ConfigArgs validate_args;
  int world_size = 0;
  auto* validate = app.add_subcommand(
      "validate-config", "parse, merge and validate configs; print the resolved config");
  validate_args.add_to(validate);
  validate->add_option("--world-size", world_size,
                       "also check the parallel layout against this many ranks");

  std::vector<std::string> inputs;
  std::string output, separator, format = "token-shard";
  auto* prepare = app.add_subcommand(
      "prepare-data", "tokenize text files into a token shard or a Megatron indexed dataset");
  prepare->add_option("inputs", inputs, "text files")->required()->check(CLI::ExistingFile);
  prepare
      ->add_option("--output,-o", output,
                   "token-shard file to write, or for --format megatron the prefix of "
                   "PREFIX.bin / PREFIX.idx")
      ->required();
  prepare->add_option("--format", format,
                      "token-shard (default) or megatron (Megatron-LM .bin/.idx, u16 ids)");
  prepare->add_option("--separator", separator,
                      "a line equal to this splits documents (default: one document per file)");

  auto* info = app.add_subcommand("info", "describe what this build supports");
  info->require_subcommand(1);
  auto* info_mixers = info->add_subcommand("mixers", "every token mixer, one per line");
  ConfigArgs model_args;
  bool model_json = false;
  auto* info_model = info->add_subcommand(
      "model", "parameter counts (total, active per token) and training FLOPs per token");
  model_args.add_to(info_model);
  info_model->add_flag("--json", model_json, "print the counts as JSON");

  CLI11_PARSE(app, argc, argv);

  if (train->parsed()) return run_train(train_args, resume, &argc, &argv);
  if (eval->parsed()) return run_eval(eval_args, eval_checkpoint, &argc, &argv);
  try {
    if (validate->parsed()) {
      linea::config::Config cfg = linea::load_config(validate_args.files, validate_args.sets);
      linea::validate_config(cfg, world_size);
      std::cout << linea::config_to_text(cfg);
      return 0;
    }
    if (info_mixers->parsed()) {
      for (const auto& m : linea::mixer_catalog())
        std::cout << m.config << "  |  " << m.transition << "  |  " << m.paper << "\n";
      return 0;
    }
    if (info_model->parsed()) {
      const linea::config::Config cfg = linea::load_config(model_args.files, model_args.sets);
      const linea::ModelSize size = linea::count_model_size(cfg);
      std::cout << (model_json ? linea::model_size_json(size) : linea::model_size_table(size));
      return 0;
    }
    if (prepare->parsed()) {
      linea::init_logging(0, "info", false);
      return linea::data::prepare_data(inputs, output, separator,
                                       linea::data::parse_prepare_format(format));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
