// The rules a config must satisfy before any work starts, and the values derived from it. Each
// failure names the field path and its value ("model.hidden_size = 0: ...") and the hint says
// what to change, so a user can fix it without reading this file.
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>

#include "core/config/config.h"
#include "core/util/check.h"

namespace linea {
namespace {

// Values are streamed raw, strings quoted, so "f16" and an empty path are visible in the message.
std::string quoted(const std::string& s) { return "\"" + s + "\""; }

void check_positive(int value, const std::string& path) {
  const std::string hint = std::string("set ") + path + " to a positive integer";
  LINEA_USER_CHECK(value > 0, hint.c_str()) << path << " = " << value << ": must be positive";
}

void check_non_negative(int value, const std::string& path) {
  const std::string hint = std::string("set ") + path + " to 0 or more";
  LINEA_USER_CHECK(value >= 0, hint.c_str()) << path << " = " << value << ": must be >= 0";
}

// NaN fails every comparison, so these are written as "value is in range" rather than "value is
// out of range" to reject NaN too.
void check_finite_positive(double value, const std::string& path) {
  const std::string hint = std::string("set ") + path + " to a finite number > 0";
  LINEA_USER_CHECK(std::isfinite(value) && value > 0, hint.c_str())
      << path << " = " << value << ": must be a finite number > 0";
}

void check_finite_non_negative(double value, const std::string& path) {
  const std::string hint = std::string("set ") + path + " to a finite number >= 0";
  LINEA_USER_CHECK(std::isfinite(value) && value >= 0, hint.c_str())
      << path << " = " << value << ": must be a finite number >= 0";
}

void check_one_of(const std::string& value, std::initializer_list<const char*> allowed,
                  const char* path) {
  std::string list;
  bool found = false;
  for (const char* a : allowed) {
    list += (list.empty() ? "" : ", ") + std::string(a);
    found = found || value == a;
  }
  const std::string hint = std::string("set ") + path + " to one of: " + list;
  LINEA_USER_CHECK(found, hint.c_str()) << path << " = " << quoted(value) << ": not supported";
}

void validate_model(const config::Config& cfg) {
  const config::ModelConfig& m = cfg.model();
  LINEA_USER_CHECK(m.vocab_size() >= 2, "set model.vocab_size to at least 2 (257 for bytes)")
      << "model.vocab_size = " << m.vocab_size() << ": must be >= 2";
  check_positive(m.hidden_size(), "model.hidden_size");
  check_positive(m.num_layers(), "model.num_layers");
  check_finite_positive(m.norm_eps(), "model.norm_eps");
  check_finite_non_negative(m.init_std(), "model.init_std");

  check_non_negative(m.channel_mixer().intermediate_size(),
                     "model.channel_mixer.intermediate_size");

  if (m.has_layer_pattern() && !m.layer_pattern().empty()) {
    const std::string& p = m.layer_pattern();
    LINEA_USER_CHECK(p.size() == static_cast<size_t>(m.num_layers()),
                     "give model.layer_pattern one letter per layer, or leave it empty for all L")
        << "model.layer_pattern = " << quoted(p) << " has " << p.size()
        << " letters but model.num_layers = " << m.num_layers();
    for (size_t i = 0; i < p.size(); ++i) {
      LINEA_USER_CHECK(p[i] == 'L' || p[i] == 'N',
                       "use L (linear mixer) or N (softmax attention) in model.layer_pattern")
          << "model.layer_pattern = " << quoted(p) << ": letter " << i << " is '" << p[i] << "'";
    }
  }
}

// The settings of one linear mixer (model.mixer, or model.mixer merged with an override).
void validate_mixer(const config::MixerConfig& mix, const std::string& path, int hidden) {
  using MC = config::MixerConfig;
  check_positive(mix.num_heads(), path + ".num_heads");
  check_non_negative(mix.head_dim(), path + ".head_dim");
  check_non_negative(mix.value_dim(), path + ".value_dim");
  check_positive(mix.chunk_size(), path + ".chunk_size");
  if (mix.head_dim() == 0) {
    LINEA_USER_CHECK(hidden % mix.num_heads() == 0,
                     "choose num_heads dividing model.hidden_size, or set head_dim explicitly")
        << path << ".num_heads = " << mix.num_heads()
        << " does not divide model.hidden_size = " << hidden
        << " (head_dim = 0 means hidden_size / num_heads)";
  }
  check_positive(mix.conv_size(), path + ".conv_size");
  check_positive(mix.feature_dim(), path + ".feature_dim");
  check_non_negative(mix.window_size(), path + ".window_size");
  check_positive(mix.gate_low_rank(), path + ".gate_low_rank");
  check_finite_positive(mix.gate_logit_normalizer(), path + ".gate_logit_normalizer");
  LINEA_USER_CHECK(std::isfinite(mix.forget_lower_bound()) && mix.forget_lower_bound() >= 0 &&
                       mix.forget_lower_bound() < 1,
                   "set forget_lower_bound in [0, 1)")
      << path << ".forget_lower_bound = " << mix.forget_lower_bound() << ": must be in [0, 1)";
  check_positive(mix.num_slots(), path + ".num_slots");
  check_positive(mix.num_memories(), path + ".num_memories");
  LINEA_USER_CHECK(mix.memory_top_k() >= 1 && mix.memory_top_k() <= mix.num_memories(),
                   "set memory_top_k between 1 and num_memories")
      << path << ".memory_top_k = " << mix.memory_top_k()
      << " with num_memories = " << mix.num_memories();
  const MC::Kind mk = mix.memory_kind();
  LINEA_USER_CHECK(mk == MC::GATED_DELTANET || mk == MC::DELTANET || mk == MC::GLA ||
                       mk == MC::SIMPLE_GLA || mk == MC::LINEAR_ATTENTION,
                   "use GATED_DELTANET, DELTANET, GLA, SIMPLE_GLA or LINEAR_ATTENTION")
      << path << ".memory_kind = " << MC::Kind_Name(mk) << " cannot be a memory of MOM";
  check_finite_positive(mix.expand_v(), path + ".expand_v");
}

void validate_attention(const config::AttentionConfig& a, int hidden) {
  check_positive(a.num_heads(), "model.attention.num_heads");
  check_non_negative(a.num_kv_heads(), "model.attention.num_kv_heads");
  check_non_negative(a.head_dim(), "model.attention.head_dim");
  check_non_negative(a.window_size(), "model.attention.window_size");
  check_finite_positive(a.rope_theta(), "model.attention.rope_theta");
  if (a.head_dim() == 0) {
    LINEA_USER_CHECK(hidden % a.num_heads() == 0,
                     "choose model.attention.num_heads dividing model.hidden_size, or set "
                     "model.attention.head_dim")
        << "model.attention.num_heads = " << a.num_heads()
        << " does not divide model.hidden_size = " << hidden;
  }
  const int hd = a.head_dim() > 0 ? a.head_dim() : hidden / a.num_heads();
  LINEA_USER_CHECK(hd % 2 == 0, "RoPE rotates pairs: use an even attention head width")
      << "model.attention head width " << hd << " is odd";
  const int kv = a.num_kv_heads() > 0 ? a.num_kv_heads() : a.num_heads();
  LINEA_USER_CHECK(a.num_heads() % kv == 0,
                   "choose model.attention.num_kv_heads dividing model.attention.num_heads")
      << "model.attention.num_kv_heads = " << kv
      << " does not divide num_heads = " << a.num_heads();
}

void validate_layers(const config::Config& cfg) {
  const config::ModelConfig& m = cfg.model();
  const std::string pattern = resolved_layer_pattern(cfg);
  validate_mixer(m.mixer(), "model.mixer", m.hidden_size());
  for (int i = 0; i < m.mixer_overrides_size(); ++i) {
    const auto& o = m.mixer_overrides(i);
    const std::string path = "model.mixer_overrides[" + std::to_string(i) + "]";
    LINEA_USER_CHECK(o.layer() >= 0 && o.layer() < m.num_layers(),
                     "give the index of an L layer, 0-based")
        << path << ".layer = " << o.layer() << " with model.num_layers = " << m.num_layers();
    LINEA_USER_CHECK(pattern[o.layer()] == 'L', "overrides apply to linear (L) layers only")
        << path << ".layer = " << o.layer() << " is an N layer in model.layer_pattern";
    config::MixerConfig merged = m.mixer();
    merged.MergeFrom(o.mixer());
    validate_mixer(merged, path + ".mixer", m.hidden_size());
  }
  if (pattern.find('N') != std::string::npos) validate_attention(m.attention(), m.hidden_size());
}

// model.channel_mixer with kind MOE: the expert settings and which layers are MoE.
void validate_channel_mixer(const config::Config& cfg) {
  const config::ModelConfig& m = cfg.model();
  const config::ChannelMixerConfig& cm = m.channel_mixer();
  check_non_negative(cm.moe_every(), "model.channel_mixer.moe_every");
  const std::string& p = cm.moe_pattern();
  if (!p.empty()) {
    LINEA_USER_CHECK(p.size() == static_cast<size_t>(m.num_layers()),
                     "give model.channel_mixer.moe_pattern one letter per layer (E = MoE, D = "
                     "dense), or leave it empty")
        << "model.channel_mixer.moe_pattern = " << quoted(p) << " has " << p.size()
        << " letters but model.num_layers = " << m.num_layers();
    for (size_t i = 0; i < p.size(); ++i) {
      LINEA_USER_CHECK(p[i] == 'E' || p[i] == 'D',
                       "use E (MoE) or D (dense MLP) in model.channel_mixer.moe_pattern")
          << "model.channel_mixer.moe_pattern = " << quoted(p) << ": letter " << i << " is '"
          << p[i] << "'";
    }
    LINEA_USER_CHECK(cm.moe_every() == 0,
                     "set either model.channel_mixer.moe_pattern or moe_every, not both")
        << "model.channel_mixer.moe_pattern = " << quoted(p)
        << " and moe_every = " << cm.moe_every() << " are both set";
  }
  if (cm.kind() != config::ChannelMixerConfig::MOE) return;
  const config::MoeConfig& e = cm.moe();
  const std::string path = "model.channel_mixer.moe";
  check_positive(e.num_experts(), path + ".num_experts");
  LINEA_USER_CHECK(e.top_k() >= 1 && e.top_k() <= e.num_experts(),
                   "set model.channel_mixer.moe.top_k between 1 and num_experts")
      << path << ".top_k = " << e.top_k() << " with num_experts = " << e.num_experts();
  check_positive(e.expert_intermediate_size(), path + ".expert_intermediate_size");
  check_non_negative(e.num_shared_experts(), path + ".num_shared_experts");
  if (e.num_shared_experts() > 0)
    check_positive(e.shared_intermediate_size(), path + ".shared_intermediate_size");
  LINEA_USER_CHECK(e.num_shared_experts() > 0 || !e.shared_expert_gate(),
                   "set model.channel_mixer.moe.num_shared_experts > 0 or shared_expert_gate: "
                   "false")
      << path << ".shared_expert_gate = true needs shared experts";
  check_finite_non_negative(e.aux_loss_coeff(), path + ".aux_loss_coeff");
  check_finite_non_negative(e.z_loss_coeff(), path + ".z_loss_coeff");
  check_finite_non_negative(e.bias_update_rate(), path + ".bias_update_rate");
  check_finite_non_negative(e.capacity_factor(), path + ".capacity_factor");
  check_finite_positive(e.routed_scaling(), path + ".routed_scaling");
}

void validate_parallel(const config::Config& cfg, int world_size) {
  const config::ParallelConfig& par = cfg.parallel();
  LINEA_USER_CHECK(par.sp() >= 1, "set parallel.sp to 1 or more (1 = no sequence parallelism)")
      << "parallel.sp = " << par.sp() << ": must be >= 1";
  LINEA_USER_CHECK(par.ep() >= 1, "set parallel.ep to 1 or more (1 = no expert parallelism)")
      << "parallel.ep = " << par.ep() << ": must be >= 1";
  LINEA_USER_CHECK(par.dp() >= 0, "set parallel.dp to 0 (= world size / sp) or a positive count")
      << "parallel.dp = " << par.dp() << ": must be >= 0";
  LINEA_USER_CHECK(cfg.data().seq_len() % par.sp() == 0, "choose parallel.sp dividing data.seq_len")
      << "parallel.sp = " << par.sp() << " does not divide data.seq_len = " << cfg.data().seq_len();
  if (world_size > 0) {
    LINEA_USER_CHECK(world_size % par.sp() == 0,
                     "launch a multiple of parallel.sp ranks, or change parallel.sp")
        << "parallel.sp = " << par.sp() << " does not divide the world size " << world_size;
    if (par.dp() != 0) {
      LINEA_USER_CHECK(static_cast<long long>(par.dp()) * par.sp() == world_size,
                       "set parallel.dp to 0 (derived from the world size), or launch dp * sp "
                       "ranks")
          << "parallel.dp = " << par.dp() << " times parallel.sp = " << par.sp() << " is "
          << static_cast<long long>(par.dp()) * par.sp() << ", not the world size " << world_size;
    }
  }
  // Expert parallelism: EP groups are carved from the dp x sp ranks and divide the experts.
  if (world_size > 0) {
    LINEA_USER_CHECK(world_size % par.ep() == 0,
                     "choose parallel.ep dividing the number of ranks (EP groups are carved from "
                     "dp x sp), or launch a multiple of parallel.ep ranks")
        << "parallel.ep = " << par.ep() << " does not divide the world size " << world_size;
  }
  if (par.ep() > 1) {
    const config::ChannelMixerConfig& cm = cfg.model().channel_mixer();
    const bool has_moe =
        cm.kind() == config::ChannelMixerConfig::MOE &&
        (cm.moe_pattern().empty() || cm.moe_pattern().find('E') != std::string::npos);
    LINEA_USER_CHECK(has_moe, "set parallel.ep = 1, or use MoE layers")
        << "parallel.ep > 1 needs MoE layers (model.channel_mixer.kind: MOE)";
    LINEA_USER_CHECK(cm.moe().num_experts() % par.ep() == 0,
                     "choose model.channel_mixer.moe.num_experts divisible by parallel.ep")
        << "model.channel_mixer.moe.num_experts = " << cm.moe().num_experts()
        << " cannot be divided among parallel.ep = " << par.ep() << " ranks";
  }

  const int local_len = cfg.data().seq_len() / par.sp();
  const int chunk = cfg.model().mixer().chunk_size();
  LINEA_USER_CHECK(local_len % chunk == 0,
                   "choose model.mixer.chunk_size dividing data.seq_len / parallel.sp")
      << "model.mixer.chunk_size = " << chunk
      << " does not divide data.seq_len / parallel.sp = " << cfg.data().seq_len() << " / "
      << par.sp() << " = " << local_len;
}

void validate_data(const config::Config& cfg) {
  const config::DataConfig& data = cfg.data();
  LINEA_USER_CHECK(std::isfinite(data.valid_fraction()) && data.valid_fraction() >= 0 &&
                       data.valid_fraction() < 1,
                   "set data.valid_fraction in [0, 1)")
      << "data.valid_fraction = " << data.valid_fraction() << ": must be in [0, 1)";
  switch (data.source()) {
    case config::DataConfig::TOKEN_SHARD:
      LINEA_USER_CHECK(!data.path().empty(),
                       "set data.path to a token shard written by `linea prepare-data`")
          << "data.path = \"\": data.source TOKEN_SHARD needs a file";
      break;
    case config::DataConfig::MQAR: {
      const config::MqarConfig& q = data.mqar();
      check_positive(q.num_kv_pairs(), "data.mqar.num_kv_pairs");
      check_positive(q.num_queries(), "data.mqar.num_queries");
      const long long needed = 2LL * q.num_kv_pairs() + 2LL * q.num_queries();
      LINEA_USER_CHECK(needed <= data.seq_len(),
                       "raise data.seq_len or lower data.mqar.num_kv_pairs / num_queries")
          << "data.mqar needs 2 * num_kv_pairs + 2 * num_queries = 2 * " << q.num_kv_pairs()
          << " + 2 * " << q.num_queries() << " = " << needed
          << " tokens, more than data.seq_len = " << data.seq_len();
      LINEA_USER_CHECK(cfg.model().vocab_size() >= 4,
                       "set model.vocab_size to 4 or more (keys and values split the vocabulary)")
          << "model.vocab_size = " << cfg.model().vocab_size()
          << ": data.source MQAR needs at least 4 tokens";
      break;
    }
    case config::DataConfig::MEGATRON:
      LINEA_USER_CHECK(data.blend_size() > 0 || !data.path().empty(),
                       "set data.path to the prefix of PREFIX.bin / PREFIX.idx, or list data.blend")
          << "data.path = \"\" and no data.blend: data.source MEGATRON needs a dataset";
      for (int i = 0; i < data.blend_size(); ++i) {
        const std::string field = "data.blend[" + std::to_string(i) + "]";
        LINEA_USER_CHECK(!data.blend(i).prefix().empty(),
                         "give the prefix of PREFIX.bin / PREFIX.idx, without the extensions")
            << field << ".prefix is empty";
        LINEA_USER_CHECK(std::isfinite(data.blend(i).weight()) && data.blend(i).weight() > 0,
                         "give every blend weight > 0 (they need not add up to 1)")
            << field << ".weight = " << data.blend(i).weight() << ": must be > 0";
      }
      break;
  }
  LINEA_USER_CHECK(data.blend_size() == 0 || data.source() == config::DataConfig::MEGATRON,
                   "set data.source: MEGATRON, or remove data.blend")
      << "data.blend lists " << data.blend_size() << " dataset(s), but data.source is "
      << config::DataConfig::Source_Name(data.source()) << "; only MEGATRON blends";
}

void validate_optimization(const config::Config& cfg) {
  const config::OptimizerConfig& opt = cfg.optimizer();
  check_finite_positive(opt.lr(), "optimizer.lr");
  LINEA_USER_CHECK(opt.beta1() >= 0 && opt.beta1() < 1, "set optimizer.beta1 in [0, 1), e.g. 0.9")
      << "optimizer.beta1 = " << opt.beta1() << ": must be in [0, 1)";
  LINEA_USER_CHECK(opt.beta2() >= 0 && opt.beta2() < 1, "set optimizer.beta2 in [0, 1), e.g. 0.95")
      << "optimizer.beta2 = " << opt.beta2() << ": must be in [0, 1)";
  check_finite_positive(opt.eps(), "optimizer.eps");
  check_finite_non_negative(opt.weight_decay(), "optimizer.weight_decay");
  check_finite_non_negative(opt.grad_clip(), "optimizer.grad_clip");

  const config::ScheduleConfig& s = cfg.schedule();
  check_non_negative(s.warmup_steps(), "schedule.warmup_steps");
  LINEA_USER_CHECK(s.warmup_steps() <= cfg.train().steps(),
                   "lower schedule.warmup_steps or raise train.steps")
      << "schedule.warmup_steps = " << s.warmup_steps()
      << " is more than train.steps = " << cfg.train().steps();
  LINEA_USER_CHECK(s.min_lr_ratio() >= 0 && s.min_lr_ratio() <= 1,
                   "set schedule.min_lr_ratio in [0, 1]")
      << "schedule.min_lr_ratio = " << s.min_lr_ratio() << ": must be in [0, 1]";
}

void validate_train(const config::Config& cfg) {
  const config::TrainConfig& t = cfg.train();
  check_positive(t.steps(), "train.steps");
  check_positive(t.micro_batch_size(), "train.micro_batch_size");
  check_positive(t.grad_accum_steps(), "train.grad_accum_steps");
  check_one_of(t.dtype(), {"f32", "f64"}, "train.dtype");
  check_one_of(t.precision(), {"f32", "bf16"}, "train.precision");
  check_one_of(t.device(), {"cpu", "cuda"}, "train.device");
  check_one_of(t.recompute(), {"none", "selective", "full"}, "train.recompute");
  check_non_negative(t.stop_after_steps(), "train.stop_after_steps");
  check_one_of(cfg.parallel().backend(), {"auto", "mpi", "nccl"}, "parallel.backend");
  check_one_of(t.nonfinite(), {"skip", "stop"}, "train.nonfinite");
  check_positive(t.max_nonfinite_in_row(), "train.max_nonfinite_in_row");
  check_non_negative(t.inject_nan_step(), "train.inject_nan_step");
  LINEA_USER_CHECK(cfg.parallel().collective_timeout_s() >= 0,
                   "set parallel.collective_timeout_s to 0 (off) or a number of seconds")
      << "parallel.collective_timeout_s = " << cfg.parallel().collective_timeout_s();
  LINEA_USER_CHECK(cfg.parallel().backend() != "nccl" || t.device() == "cuda",
                   "set train.device = cuda, or parallel.backend = auto or mpi")
      << "parallel.backend = nccl moves CUDA tensors, but train.device = " << t.device();
}

void validate_checkpoint_and_logging(const config::Config& cfg) {
  const config::CheckpointConfig& c = cfg.checkpoint();
  check_non_negative(c.every_steps(), "checkpoint.every_steps");
  LINEA_USER_CHECK(c.keep_last() >= 1, "set checkpoint.keep_last to 1 or more")
      << "checkpoint.keep_last = " << c.keep_last() << ": must be >= 1";
  check_non_negative(c.keep_every(), "checkpoint.keep_every");

  const config::EvalConfig& e = cfg.eval();
  check_non_negative(e.every_steps(), "eval.every_steps");
  check_non_negative(e.batches(), "eval.batches");
  check_non_negative(e.micro_batch_size(), "eval.micro_batch_size");

  const config::LoggingConfig& l = cfg.logging();
  LINEA_USER_CHECK(l.every_steps() >= 1, "set logging.every_steps to 1 or more")
      << "logging.every_steps = " << l.every_steps() << ": must be >= 1";
  check_one_of(l.level(), {"trace", "debug", "info", "warn", "error"}, "logging.level");
}

}  // namespace

void validate_config(const config::Config& cfg, int world_size) {
  validate_model(cfg);
  validate_layers(cfg);
  validate_channel_mixer(cfg);
  // Sizes the parallel and data rules divide by or compare against come first.
  check_positive(cfg.data().seq_len(), "data.seq_len");
  validate_train(cfg);
  validate_parallel(cfg, world_size);
  validate_data(cfg);
  validate_optimization(cfg);
  validate_checkpoint_and_logging(cfg);
}

int resolved_head_dim(const config::Config& cfg) {
  const config::MixerConfig& mix = cfg.model().mixer();
  if (mix.head_dim() != 0) return mix.head_dim();
  LINEA_CHECK(mix.num_heads() > 0) << "validate_config first";
  return cfg.model().hidden_size() / mix.num_heads();
}

int resolved_intermediate_size(const config::Config& cfg) {
  const int set = cfg.model().channel_mixer().intermediate_size();
  if (set != 0) return set;
  // 8/3 * h / 8 = h / 3, whose fractional part is 0, 1/3 or 2/3, so rounding never ties and
  // integer (h + 1) / 3 is exact. At least one multiple of 8 keeps tiny test models non-empty.
  const int h = cfg.model().hidden_size();
  return std::max(8, (h + 1) / 3 * 8);
}

std::string resolved_layer_pattern(const config::Config& cfg) {
  const std::string& p = cfg.model().layer_pattern();
  if (!p.empty()) return p;
  return std::string(static_cast<size_t>(std::max(0, cfg.model().num_layers())), 'L');
}

std::string resolved_moe_pattern(const config::Config& cfg) {
  const int n = std::max(0, cfg.model().num_layers());
  const config::ChannelMixerConfig& cm = cfg.model().channel_mixer();
  if (cm.kind() != config::ChannelMixerConfig::MOE) return std::string(n, 'D');
  if (!cm.moe_pattern().empty()) return cm.moe_pattern();
  if (cm.moe_every() > 0) {
    std::string p(n, 'D');
    for (int i = cm.moe_every() - 1; i < n; i += cm.moe_every()) p[i] = 'E';
    return p;
  }
  return std::string(n, 'E');
}

int resolved_dp(const config::Config& cfg, int world_size) {
  const config::ParallelConfig& par = cfg.parallel();
  if (par.dp() != 0) return par.dp();
  LINEA_CHECK(world_size > 0 && par.sp() > 0) << "parallel.dp = 0 needs the world size";
  return world_size / par.sp();
}

}  // namespace linea
