#include "core/checkpoint/checkpoint.h"

#include <google/protobuf/util/message_differencer.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

// ---- what a checkpoint is made of -----------------------------------------------------------
#include "core/checkpoint/checkpoint_dir.h"  // step-<N> directories, retention
#include "core/checkpoint/file_io.h"         // fsynced writes, whole-file reads
#include "core/checkpoint/safetensors.h"     // tensor files PyTorch reads
#include "core/checkpoint/sha256.h"          // per-file checksums
#include "core/config/config.h"              // the resolved config as text, and back
#include "core/logging/log.h"                // rank-aware logs
#include "core/modules/moe/moe_layer.h"      // the SIGMOID_BIAS router buffers

namespace linea::checkpoint {
namespace fs = std::filesystem;
namespace {

constexpr const char* kManifest = "checkpoint.json";
constexpr const char* kConfigFile = "config.pbtxt";
constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr const char* kFormat = "linea-checkpoint";
constexpr int kVersion = 1;
constexpr const char* kDamagedHint =
    "the checkpoint is damaged or incomplete: resume from another one (linea train --resume "
    "PATH) or delete it";

// "<prefix>.gate.weight" -> "<prefix>.gate.e_score_correction_bias", DeepSeek-V3's name for the
// aux-loss-free routing bias.
std::string bias_name(MoeLayer& moe) {
  const std::string& n = moe.router().weight().name;
  const std::string suffix = ".weight";
  LINEA_CHECK(n.size() > suffix.size() && n.ends_with(suffix)) << n;
  return n.substr(0, n.size() - suffix.size()) + ".e_score_correction_bias";
}

bool has_bias_buffers(const TrainingState& s) {
  return !s.model.moe_layers().empty() &&
         s.cfg.model().channel_mixer().moe().router() == config::MoeConfig::SIGMOID_BIAS;
}

// The tensors of this rank's model shard: its experts, and with `replicated` everything else.
std::vector<NamedTensor> model_tensors(const TrainingState& s, bool replicated) {
  std::vector<NamedTensor> out;
  for (const Parameter* p : s.model.parameters())
    if (replicated || p->sharding == ParamSharding::kExpert)
      out.push_back({p->name, p->value.cpu()});
  if (replicated && has_bias_buffers(s))
    for (MoeLayer* moe : s.model.moe_layers()) {
      const std::vector<double>& b = moe->router().bias();
      out.push_back({bias_name(*moe), Tensor::from_vector({int64_t(b.size())}, b, DType::kF64)});
    }
  return out;
}

std::vector<NamedTensor> optimizer_tensors(const TrainingState& s, bool replicated) {
  std::vector<NamedTensor> out;
  const ParameterList& params = s.optimizer->parameters();
  for (size_t i = 0; i < params.size(); ++i)
    if (replicated || params[i]->sharding == ParamSharding::kExpert) {
      out.push_back({params[i]->name + ".exp_avg", s.optimizer->exp_avg()[i].cpu()});
      out.push_back({params[i]->name + ".exp_avg_sq", s.optimizer->exp_avg_sq()[i].cpu()});
    }
  return out;
}

nlohmann::json file_record(const std::string& bytes) {
  return {{"sha256", sha256_hex(bytes)}, {"bytes", bytes.size()}};
}

// Rank 0, once every shard is on disk in `tmp`: checksums, config, index, manifest, marker.
void write_manifest_and_marker(const TrainingState& s, int64_t step, const fs::path& tmp) {
  const parallel::GridShape& shape = s.grid.shape();
  const int shards = shape.ep;
  nlohmann::json files = nlohmann::json::object(), model_files = nlohmann::json::array(),
                 optimizer_files = nlohmann::json::array();
  nlohmann::json weight_map = nlohmann::json::object();
  size_t total_size = 0;
  for (int k = 1; k <= shards; ++k) {
    const std::string model_name = shard_file_name("model", k, shards);
    const std::string optimizer_name = shard_file_name("optimizer", k, shards);
    // Read back what the writers fsynced: the checksum covers the bytes on disk.
    std::string bytes = read_file((tmp / model_name).string());
    files[model_name] = file_record(bytes);
    const SafetensorsFile parsed(std::move(bytes), (tmp / model_name).string());
    for (const auto& [name, e] : parsed.entries()) {
      weight_map[name] = model_name;
      total_size += e.end - e.begin;
    }
    files[optimizer_name] = file_record(read_file((tmp / optimizer_name).string()));
    model_files.push_back(model_name);
    optimizer_files.push_back(optimizer_name);
  }
  const std::string config_text = config_to_text(s.cfg);
  write_file_durable((tmp / kConfigFile).string(), config_text);
  files[kConfigFile] = file_record(config_text);
  if (shards > 1) {
    // The Hugging Face index of sharded safetensors: which file holds each tensor.
    const nlohmann::json index = {{"metadata", {{"total_size", total_size}}},
                                  {"weight_map", weight_map}};
    const std::string text = index.dump(2) + "\n";
    write_file_durable((tmp / kIndexFile).string(), text);
    files[kIndexFile] = file_record(text);
  }
  const auto& tc = s.cfg.train();
  const int64_t global_batch = int64_t(tc.micro_batch_size()) * tc.grad_accum_steps() * shape.dp;
  const nlohmann::json manifest = {
      {"format", kFormat},
      {"version", kVersion},
      {"step", step},
      {"layout",
       {{"world", s.grid.world().size()}, {"dp", shape.dp}, {"sp", shape.sp}, {"ep", shape.ep}}},
      {"dtype", tc.dtype()},
      // Samples are drawn by global index (core/data/dataset.h): the position is the step.
      {"data",
       {{"step", step},
        {"global_batch_sequences", global_batch},
        {"next_sample", step * global_batch},
        {"seq_len", s.cfg.data().seq_len()},
        {"seed", s.cfg.data().seed()}}},
      {"rng",
       {{"train_seed", tc.seed()},
        {"data_seed", s.cfg.data().seed()},
        {"runtime_streams",
         "none: initialisation draws from (train.seed, parameter name) and samples from "
         "(data.seed, global sample index); no generator advances during training"}}},
      {"optimizer", {{"type", "AdamW"}, {"step", s.optimizer->steps_taken()}}},
      {"model_files", model_files},
      {"optimizer_files", optimizer_files},
      {"config", config_text},
      {"files", files}};
  const std::string manifest_text = manifest.dump(2) + "\n";
  write_file_durable((tmp / kManifest).string(), manifest_text);
  // The marker, last: its presence says every file above is complete and fsynced.
  write_file_durable((tmp / kCompleteMarker).string(),
                     "sha256 " + sha256_hex(manifest_text) + "\n");
  fsync_directory(tmp.string());
}

// The manifest of `dir`, after checking that the marker exists and vouches for it.
nlohmann::json read_manifest(const fs::path& dir) {
  LINEA_USER_CHECK(fs::is_directory(dir),
                   "pass a checkpoint directory, e.g. <train.output_dir>/checkpoints/step-<N>")
      << "checkpoint " << dir.string() << " does not exist or is not a directory";
  const fs::path marker_path = dir / kCompleteMarker, manifest_path = dir / kManifest;
  LINEA_USER_CHECK(fs::exists(marker_path), kDamagedHint)
      << marker_path.string() << " is missing: the checkpoint " << dir.string()
      << " was not completely written";
  const std::string marker = read_file(marker_path.string());
  const std::string text = read_file(manifest_path.string());
  const std::string digest = sha256_hex(text);
  LINEA_USER_CHECK(marker == "sha256 " + digest + "\n", kDamagedHint)
      << manifest_path.string() << ": checksum mismatch with " << marker_path.string()
      << " (SHA-256 of the file is " << digest << "; one of the two files is damaged)";
  const nlohmann::json m = nlohmann::json::parse(text, nullptr, false);
  LINEA_USER_CHECK(!m.is_discarded() && m.is_object() && m.value("format", "") == kFormat,
                   kDamagedHint)
      << manifest_path.string() << " is not a Linea checkpoint manifest";
  LINEA_USER_CHECK(m.value("version", 0) == kVersion,
                   "use the Linea version that wrote the checkpoint")
      << manifest_path.string() << " has version " << m.value("version", 0) << ", this build reads "
      << kVersion;
  for (const char* key :
       {"step", "layout", "data", "optimizer", "model_files", "optimizer_files", "config", "files"})
    LINEA_USER_CHECK(m.contains(key), kDamagedHint)
        << manifest_path.string() << " lacks the field '" << key << "'";
  return m;
}

// The bytes of `name` in `dir`, after checking its size and SHA-256 against the manifest.
std::string read_verified(const fs::path& dir, const nlohmann::json& m, const std::string& name) {
  const fs::path p = dir / name;
  LINEA_USER_CHECK(m["files"].contains(name), kDamagedHint)
      << (dir / kManifest).string() << " lists no checksum for " << name;
  const nlohmann::json& rec = m["files"][name];
  LINEA_USER_CHECK(fs::exists(p), kDamagedHint) << p.string() << " is missing";
  const std::string bytes = read_file(p.string());
  const size_t want = rec.value("bytes", size_t(0));
  LINEA_USER_CHECK(bytes.size() >= want, kDamagedHint)
      << p.string() << " is truncated: " << bytes.size() << " bytes, checkpoint.json records "
      << want;
  LINEA_USER_CHECK(bytes.size() == want, kDamagedHint)
      << p.string() << " has " << bytes.size() << " bytes, checkpoint.json records " << want;
  const std::string digest = sha256_hex(bytes);
  LINEA_USER_CHECK(digest == rec.value("sha256", ""), kDamagedHint)
      << p.string() << ": checksum mismatch (SHA-256 " << digest << ", checkpoint.json records "
      << rec.value("sha256", "") << ")";
  return bytes;
}

// Whether two config messages mean the same (a field set to its default equals an unset one);
// *report lists the differences.
bool equivalent(const google::protobuf::Message& saved, const google::protobuf::Message& now,
                std::string* report = nullptr) {
  google::protobuf::util::MessageDifferencer diff;
  diff.set_message_field_comparison(google::protobuf::util::MessageDifferencer::EQUIVALENT);
  if (report) diff.ReportDifferencesToString(report);
  return diff.Compare(saved, now);
}

// Refuses a checkpoint this run cannot continue from, naming the differing field.
void check_compatible(const TrainingState& s, const nlohmann::json& m, const fs::path& dir) {
  const std::string where = "checkpoint " + dir.string();
  const config::Config saved =
      parse_config_text(m["config"].get<std::string>(), (dir / kManifest).string() + " (config)");
  std::string report;
  const bool same_model = equivalent(saved.model(), s.cfg.model(), &report);
  // The differencer names fields relative to the model message ("modified: hidden_size: ...").
  std::string fields;
  for (size_t b = 0, e; b < report.size(); b = e + 1) {
    e = report.find('\n', b);
    if (e == std::string::npos) e = report.size();
    const std::string line = report.substr(b, e - b);
    const size_t colon = line.find(": ");
    if (!line.empty())
      fields += "\n  " + (colon == std::string::npos
                              ? line
                              : line.substr(0, colon + 2) + "model." + line.substr(colon + 2));
  }
  LINEA_USER_CHECK(same_model,
                   "resume with the model.* settings the checkpoint was trained with, or start "
                   "afresh in another train.output_dir (or with checkpoint.auto_resume = false)")
      << "model.* differs from " << where << " (saved -> now):" << fields;
  const parallel::GridShape& now = s.grid.shape();
  const auto& layout = m["layout"];
  // Experts live in the shard of their EP rank; everything else is the same on every rank.
  LINEA_USER_CHECK(layout.value("ep", 0) == now.ep,
                   "keep parallel.ep (the DP size may change on resume; SP and EP may not)")
      << "parallel.ep = " << now.ep << ", but " << where
      << " was written with parallel.ep = " << layout.value("ep", 0);
  LINEA_USER_CHECK(m.value("dtype", "") == s.cfg.train().dtype(),
                   "use the train.dtype the checkpoint was trained with")
      << "train.dtype = " << s.cfg.train().dtype() << ", but " << where << " holds "
      << m.value("dtype", "") << " tensors";
  if (s.optimizer == nullptr) return;  // evaluation: the rest concerns continuing training
  LINEA_USER_CHECK(layout.value("sp", 0) == now.sp,
                   "keep parallel.sp (the DP size may change on resume; SP and EP may not)")
      << "parallel.sp = " << now.sp << ", but " << where
      << " was written with parallel.sp = " << layout.value("sp", 0);
  const auto& tc = s.cfg.train();
  const int64_t global_batch = int64_t(tc.micro_batch_size()) * tc.grad_accum_steps() * now.dp;
  const int64_t saved_batch = m["data"].value("global_batch_sequences", int64_t(0));
  LINEA_USER_CHECK(global_batch == saved_batch,
                   "keep train.micro_batch_size x train.grad_accum_steps x dp equal to the "
                   "checkpoint's (e.g. from dp 2 to dp 1, double micro_batch_size or "
                   "grad_accum_steps)")
      << "the global batch is " << global_batch << " sequences (train.micro_batch_size "
      << tc.micro_batch_size() << " x train.grad_accum_steps " << tc.grad_accum_steps() << " x dp "
      << now.dp << "), but " << where << " was trained with " << saved_batch;
  if (!equivalent(saved.data(), s.cfg.data()))
    spdlog::warn(
        "checkpoint: data.* differs from {}'s; the samples from step {} on are not the "
        "ones the original run would have seen",
        where, m["step"].get<int64_t>());
  if (saved.train().steps() != tc.steps() || !equivalent(saved.optimizer(), s.cfg.optimizer()) ||
      !equivalent(saved.schedule(), s.cfg.schedule()))
    spdlog::warn(
        "checkpoint: train.steps, optimizer.* or schedule.* differ from {}'s; training "
        "continues with the new values",
        where);
}

void load_tensor(Tensor& dst, const SafetensorsFile& f, const std::string& name) {
  const Tensor t = f.tensor(name);
  LINEA_USER_CHECK(t.dtype() == dst.dtype() && t.shape() == dst.shape(),
                   "resume with the model.* and train.dtype settings of the checkpoint")
      << f.path() << ": tensor '" << name << "' is " << dtype_name(t.dtype()) << " "
      << shape_str(t.shape()) << ", the model has " << dtype_name(dst.dtype()) << " "
      << shape_str(dst.shape());
  dst.copy_from(t);
}

// Every tensor of `f` must be one this rank expects there (a model with other names is refused).
void check_no_extra(const SafetensorsFile& f, const std::set<std::string>& expected) {
  for (const auto& [name, e] : f.entries())
    LINEA_USER_CHECK(expected.count(name) > 0,
                     "resume with the model.* settings the checkpoint was trained with")
        << f.path() << " holds tensor '" << name << "', which this model does not have";
}

}  // namespace

std::string shard_file_name(const std::string& stem, int shard, int shards) {
  if (shards == 1) return stem + ".safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "-%05d-of-%05d.safetensors", shard, shards);
  return stem + buf;
}

std::string save_checkpoint(const TrainingState& s, int64_t step) {
  LINEA_CHECK(s.optimizer != nullptr) << "a checkpoint holds the optimizer state too";
  parallel::Communicator& world = s.grid.world();
  const int shards = s.grid.shape().ep;
  const fs::path root = checkpoints_dir(s.cfg.train().output_dir());
  const fs::path tmp = root / temp_dir_name(step), final_dir = root / step_dir_name(step);
  if (world.rank() == 0) {
    fs::create_directories(root);
    fs::remove_all(tmp);
    fs::create_directories(tmp);
  }
  world.barrier();
  // The first EP group (world ranks 0..ep-1, EP ranks in order) holds every expert once; DP and
  // SP replicas hold the same tensors, so nobody else writes.
  if (world.rank() < shards) {
    LINEA_CHECK(s.grid.ep_rank() == world.rank()) << "EP group 0 is world ranks 0..ep-1";
    const int k = s.grid.ep_rank() + 1;
    const bool replicated = k == 1;
    const std::map<std::string, std::string> meta = {
        {"format", "pt"},
        {"linea_step", std::to_string(step)},
        {"linea_shard", std::to_string(k) + " of " + std::to_string(shards)}};
    write_file_durable((tmp / shard_file_name("model", k, shards)).string(),
                       encode_safetensors(model_tensors(s, replicated), meta));
    std::map<std::string, std::string> opt_meta = meta;
    opt_meta["adamw_step"] = std::to_string(s.optimizer->steps_taken());
    write_file_durable((tmp / shard_file_name("optimizer", k, shards)).string(),
                       encode_safetensors(optimizer_tensors(s, replicated), opt_meta));
  }
  world.barrier();
  if (world.rank() == 0) {
    write_manifest_and_marker(s, step, tmp);
    if (fs::exists(final_dir)) fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    fsync_directory(root.string());
    spdlog::info("checkpoint: saved step {} to {}", step, final_dir.string());
    apply_retention(root.string(), s.cfg.checkpoint().keep_last(), s.cfg.checkpoint().keep_every());
  }
  world.barrier();
  return final_dir.string();
}

std::string resume_path(const config::Config& cfg) {
  const config::CheckpointConfig& c = cfg.checkpoint();
  if (!c.resume_from().empty()) {
    LINEA_USER_CHECK(fs::is_directory(c.resume_from()),
                     "pass a checkpoint directory, e.g. <train.output_dir>/checkpoints/step-<N>")
        << "checkpoint.resume_from = " << c.resume_from() << " is not a directory";
    return c.resume_from();
  }
  if (!c.auto_resume()) return "";
  return newest_complete_checkpoint(checkpoints_dir(cfg.train().output_dir()));
}

int64_t verify_checkpoint(const std::string& dir_text) {
  const fs::path dir(dir_text);
  const nlohmann::json m = read_manifest(dir);
  for (const auto& [name, rec] : m["files"].items()) {
    std::string bytes = read_verified(dir, m, name);
    if (name.ends_with(".safetensors")) SafetensorsFile((std::move(bytes)), (dir / name).string());
  }
  return m["step"].get<int64_t>();
}

int64_t load_checkpoint(const TrainingState& s, const std::string& dir_text) {
  const fs::path dir(dir_text);
  // Rank 0 checks every file, so that a damaged shard another rank loads is reported once, here.
  if (s.grid.world().rank() == 0) verify_checkpoint(dir_text);
  const nlohmann::json m = read_manifest(dir);
  check_compatible(s, m, dir);
  const int shards = s.grid.shape().ep, k = s.grid.ep_rank();
  const auto model_files = m["model_files"].get<std::vector<std::string>>();
  const auto optimizer_files = m["optimizer_files"].get<std::vector<std::string>>();
  LINEA_USER_CHECK(int(model_files.size()) == shards && int(optimizer_files.size()) == shards,
                   kDamagedHint)
      << (dir / kManifest).string() << " lists " << model_files.size() << " model and "
      << optimizer_files.size() << " optimizer shards for ep = " << shards;
  const auto open = [&](const std::string& name) {
    return SafetensorsFile(read_verified(dir, m, name), (dir / name).string());
  };
  // Shard 1 holds the replicated tensors; this rank's own shard (k + 1) its experts.
  AdamW* opt = s.optimizer;
  const SafetensorsFile model_first = open(model_files[0]);
  std::optional<SafetensorsFile> model_own, opt_first, opt_own;
  if (opt) opt_first.emplace(open(optimizer_files[0]));
  if (k > 0) model_own.emplace(open(model_files[k]));
  if (k > 0 && opt) opt_own.emplace(open(optimizer_files[k]));
  const SafetensorsFile& model_experts = k > 0 ? *model_own : model_first;

  std::set<std::string> own_model, own_opt;  // what this rank's own shard must hold exactly
  const ParameterList& params = s.model.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    Parameter& p = *params[i];
    const bool expert = p.sharding == ParamSharding::kExpert;
    load_tensor(p.value, expert ? model_experts : model_first, p.name);
    if (opt) {
      const SafetensorsFile& f = expert && k > 0 ? *opt_own : *opt_first;
      load_tensor(opt->exp_avg()[i], f, p.name + ".exp_avg");
      load_tensor(opt->exp_avg_sq()[i], f, p.name + ".exp_avg_sq");
    }
    if (expert || k == 0) {
      own_model.insert(p.name);
      own_opt.insert(p.name + ".exp_avg");
      own_opt.insert(p.name + ".exp_avg_sq");
    }
  }
  if (has_bias_buffers(s))
    for (MoeLayer* moe : s.model.moe_layers()) {
      const std::string name = bias_name(*moe);
      Tensor b = Tensor::zeros({moe->num_experts()}, DType::kF64, Device::cpu());
      load_tensor(b, model_first, name);
      moe->router().bias() = b.to_vector();
      if (k == 0) own_model.insert(name);
    }
  check_no_extra(model_experts, own_model);
  if (opt) {
    check_no_extra(k > 0 ? *opt_own : *opt_first, own_opt);
    opt->set_steps_taken(m["optimizer"].value("step", int64_t(0)));
  }
  const int64_t step = m["step"].get<int64_t>();
  spdlog::info("checkpoint: resumed from {} (step {}; written with dp {}, now dp {})", dir.string(),
               step, m["layout"].value("dp", 0), s.grid.shape().dp);
  return step;
}

}  // namespace linea::checkpoint
