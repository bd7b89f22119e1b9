#include "core/model/model_size.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/config/config.h"
#include "core/modules/mixers/token_mixer.h"
#include "core/util/check.h"

namespace linea {
namespace {

using MC = config::MixerConfig;

int64_t swiglu(int64_t hidden, int64_t intermediate) { return 3 * hidden * intermediate; }

int64_t sum_parameters(TokenMixer& mixer) {
  ParameterList ps;
  mixer.collect(ps);
  int64_t n = 0;
  for (const Parameter* p : ps) n += p->value.numel();
  return n;
}

// Mean number of keys a causal query attends to over a sequence of T tokens: T/2 without a window,
// W - W^2 / (2T) with a sliding window of W < T tokens (the continuous mean of min(t, W)).
double mean_context(double T, double W) {
  if (W <= 0 || W >= T) return T / 2;
  return W - W * W / (2 * T);
}

// Causal softmax attention forward per token: scores q k^T (2 d FLOPs a key) and the weighted sum
// of values (2 d_v a key) for every head over the mean context.
double attention_flops(double T, double W, double heads, double dqk, double dv) {
  return 2 * mean_context(T, W) * heads * (dqk + dv);
}

// Chunked linear mixer forward per token for one state [H, dk, dv] and chunk size C: the state
// update k^T v and the readout q S (2 dk dv each), and the intra-chunk causal products q k^T and
// (q k^T) v over the C/2 earlier tokens of the chunk on average (2 (C/2) (dk + dv)).
double state_flops(double C, double heads, double dk, double dv) {
  return 4 * heads * dk * dv + C * heads * (dk + dv);
}

// printf into a std::string (no std::format in GCC 12).
template <typename... Args>
std::string fmt(const char* format, Args... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, args...);
  return buf;
}

struct MixerProbe {
  int64_t parameters = 0;
  std::vector<Shape> states;  // [1, H, dk, dv] each
};

// Builds layer `layer`'s token mixer alone and counts its parameters. With `states` (L layers whose
// mixer settings were not probed yet), also runs one probe forward of one chunk of a single zero
// sequence and records the shapes of its final states: exact for every kind's widths rules.

MixerProbe probe_mixer(const config::Config& cfg, int layer, int64_t chunk, bool states) {
  std::unique_ptr<TokenMixer> mixer =
      make_token_mixer(cfg, layer, "layers." + std::to_string(layer) + ".mixer", DType::kF32);
  MixerProbe p;
  p.parameters = sum_parameters(*mixer);
  if (!states || mixer->num_states() == 0) return p;
  mixer->init(/*seed=*/1, /*std=*/0.02, /*out_std=*/0.02);
  Tensor x = Tensor::zeros({1, chunk, cfg.model().hidden_size()}, DType::kF32);
  SegmentOut out;
  mixer->forward_segment(x, SegmentIn{}, &out);
  for (const Tensor& s : out.final_states) p.states.push_back(s.shape());
  return p;
}

// Sequence-dependent forward FLOPs per token of an L layer from its states; notes the shapes.
double linear_mixer_flops(const config::Config& cfg, const MC& m, const std::vector<Shape>& states,
                          double T, std::string* note) {
  const double C = std::min<double>(m.chunk_size(), T);
  double flops = 0;
  std::ostringstream shapes;
  const int n = static_cast<int>(states.size());
  for (int i = 0; i < n; ++i) {
    const Shape& s = states[i];
    LINEA_CHECK(s.size() == 4) << "mixer state of rank " << s.size();
    double weight = 1;
    // MoM: a token updates and reads only the memory_top_k memories routed to it (plus the shared
    // memory, the last state, when there is one).
    if (m.kind() == MC::MOM && i < m.num_memories())
      weight = double(m.memory_top_k()) / m.num_memories();
    flops += weight * state_flops(C, double(s[1]), double(s[2]), double(s[3]));
    if (i > 0) shapes << " + ";
    shapes << s[1] << "x[" << s[2] << "x" << s[3] << "]";
  }
  *note = "states " + shapes.str() + fmt(", chunk C=%.0f", C);
  if (m.kind() == MC::MOM)
    *note += ", " + std::to_string(m.memory_top_k()) + " of " + std::to_string(m.num_memories()) +
             " memories per token";
  // Based's sliding-window softmax branch: H heads of head_dim (q, k) and value_dim (v).
  if (m.kind() == MC::LINEAR_ATTENTION && m.feature_map() == MC::BASED && m.window_size() > 0) {
    const double dk = m.head_dim() > 0 ? m.head_dim() : cfg.model().hidden_size() / m.num_heads();
    const double dv = m.value_dim() > 0 ? m.value_dim() : dk;
    flops += attention_flops(T, m.window_size(), m.num_heads(), dk, dv);
    *note += fmt(" + window %d softmax branch", m.window_size());
  }
  return flops;
}

std::string human(double n) {
  const double a = n < 0 ? -n : n;
  if (a >= 1e12) return fmt("%.2fT", n / 1e12);
  if (a >= 1e9) return fmt("%.3fB", n / 1e9);
  if (a >= 1e6) return fmt("%.2fM", n / 1e6);
  if (a >= 1e3) return fmt("%.1fK", n / 1e3);
  return fmt("%.0f", n);
}

std::string gflop(double flops) { return fmt("%.3f GFLOP", flops / 1e9); }

// 1234567 -> "1,234,567" (counts are never negative).
std::string with_commas(int64_t n) {
  const std::string digits = std::to_string(n);
  std::string s;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s += ',';
    s += digits[i];
  }
  return s;
}

// "0-2,4-6,8" for a sorted list of layer indices.
std::string ranges(const std::vector<int>& v) {
  std::string out;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(v[i]);
    if (j > i) {
      out += j == i + 1 ? ',' : '-';
      out += std::to_string(v[j]);
    }
    i = j + 1;
  }
  return out;
}

// Layers with the same letters, kind and counts print as one group.
std::string group_key(const LayerSize& l) {
  std::ostringstream k;
  k << l.mixer_letter << l.channel_letter << l.mixer_kind << '|' << l.token_mixer << '|' << l.norms
    << '|' << l.dense_mlp << '|' << l.router << '|' << l.routed_experts << '|'
    << l.routed_experts_active << '|' << l.shared_experts << '|' << l.mixer_sequence_flops;
  return k.str();
}

}  // namespace

ModelSize count_model_size(const config::Config& cfg) {
  validate_config(cfg, 0);
  const config::ModelConfig& m = cfg.model();
  const std::string pattern = resolved_layer_pattern(cfg);
  const std::string moe_pattern = resolved_moe_pattern(cfg);
  const config::MoeConfig& moe = m.channel_mixer().moe();
  const int64_t D = m.hidden_size(), V = m.vocab_size();
  const double T = cfg.data().seq_len();

  ModelSize s;
  s.vocab = V;
  s.hidden = D;
  s.tied = m.tie_embeddings();
  s.embedding = V * D;
  s.lm_head = s.tied ? 0 : V * D;
  s.final_norm = D;
  s.seq_len = cfg.data().seq_len();

  // Every layer's mixer is built (alone) for its count; the state shapes are probed once per
  // distinct mixer setting (overrides make layers differ).
  std::map<std::string, std::vector<Shape>> state_shapes;
  for (int i = 0; i < m.num_layers(); ++i) {
    LayerSize l;
    l.layer = i;
    l.mixer_letter = pattern[i];
    l.channel_letter = moe_pattern[i];
    const bool linear = pattern[i] == 'L';
    const MC mix = mixer_config_for_layer(cfg, i);
    l.mixer_kind = linear ? MC::Kind_Name(mix.kind()) : "SOFTMAX_ATTENTION";
    const std::string key = mix.SerializeAsString();
    const bool probe_states = linear && !state_shapes.count(key);
    const MixerProbe probe =
        probe_mixer(cfg, i, std::min<int64_t>(mix.chunk_size(), s.seq_len), probe_states);
    if (probe_states) state_shapes[key] = probe.states;
    l.token_mixer = probe.parameters;
    l.norms = 2 * D;

    if (l.channel_letter == 'E') {
      l.router = int64_t(moe.num_experts()) * D;
      const int64_t expert = swiglu(D, moe.expert_intermediate_size());
      l.routed_experts = moe.num_experts() * expert;
      l.routed_experts_active = moe.top_k() * expert;
      if (moe.num_shared_experts() > 0) {
        l.shared_experts =
            swiglu(D, int64_t(moe.num_shared_experts()) * moe.shared_intermediate_size());
        if (moe.shared_expert_gate()) l.shared_experts += D;
      }
    } else {
      l.dense_mlp = swiglu(D, resolved_intermediate_size(cfg));
    }

    if (linear) {
      l.mixer_sequence_flops =
          linear_mixer_flops(cfg, mix, state_shapes.at(key), T, &l.mixer_flops_note);
    } else {
      const config::AttentionConfig& a = m.attention();
      const double d = a.head_dim() > 0 ? a.head_dim() : double(D) / a.num_heads();
      l.mixer_sequence_flops = attention_flops(T, a.window_size(), a.num_heads(), d, d);
      l.mixer_flops_note = fmt("causal softmax, %d heads of %.0f, mean context %g", a.num_heads(),
                               d, mean_context(T, a.window_size()));
    }
    s.layers.push_back(l);
  }

  int64_t layers_total = 0, layers_active = 0, layer_norms = 0;
  double sequence_flops = 0;
  for (const LayerSize& l : s.layers) {
    layers_total += l.total();
    layers_active += l.active();
    layer_norms += l.norms;
    sequence_flops += l.mixer_sequence_flops;
  }
  s.total = s.embedding + s.lm_head + s.final_norm + layers_total;
  s.total_without_embedding = s.total - s.embedding;
  s.active = s.embedding + s.lm_head + s.final_norm + layers_active;
  s.active_without_embedding = s.active - s.embedding;
  s.total_non_embedding = s.total_without_embedding - s.lm_head;
  s.active_non_embedding = s.active_without_embedding - s.lm_head;
  // The LM head multiplies every token's final hidden state whether or not it is tied.
  s.matmul_parameters =
      s.active_without_embedding - s.final_norm - layer_norms + (s.tied ? V * D : 0);
  s.train_flops_matmul = 6.0 * double(s.matmul_parameters);
  s.train_flops_sequence = 3.0 * sequence_flops;
  s.train_flops = s.train_flops_matmul + s.train_flops_sequence;
  return s;
}

std::string model_size_table(const ModelSize& s) {
  std::ostringstream o;
  auto row = [&](const std::string& name, int64_t n, const std::string& extra = "") {
    o << fmt("  %-44s %16s  %9s", name.c_str(), with_commas(n).c_str(), human(double(n)).c_str())
      << extra << "\n";
  };
  std::string pattern, moe_pattern;
  for (const LayerSize& l : s.layers) {
    pattern += l.mixer_letter;
    moe_pattern += l.channel_letter;
  }
  o << "model: vocab " << s.vocab << ", hidden " << s.hidden << ", " << s.layers.size()
    << " layers, layer_pattern " << pattern << ", channel mixers " << moe_pattern
    << " (D dense, E MoE), seq_len " << s.seq_len << "\n";
  o << "embeddings: "
    << (s.tied ? "TIED (the LM head is the embedding matrix, counted once, as the embedding)"
               : "UNTIED (the LM head is its own [V, D] matrix)")
    << "\n\n";
  o << "parameters\n";
  row("input embedding [V, D]", s.embedding);
  if (s.tied) {
    o << fmt("  %-44s %16s\n", "LM head", "tied: the input embedding");
  } else {
    row("LM head [V, D]", s.lm_head);
  }
  row("final norm [D]", s.final_norm);

  std::vector<std::string> order;
  std::map<std::string, std::vector<int>> groups;
  for (const LayerSize& l : s.layers) {
    const std::string k = group_key(l);
    if (!groups.count(k)) order.push_back(k);
    groups[k].push_back(l.layer);
  }
  for (const std::string& k : order) {
    const std::vector<int>& idx = groups[k];
    const LayerSize& l = s.layers[idx.front()];
    o << "  layer" << (idx.size() > 1 ? "s " : " ") << ranges(idx) << ": " << l.mixer_letter << " "
      << l.mixer_kind << " + " << (l.channel_letter == 'E' ? "MoE" : "dense MLP") << ", x"
      << idx.size() << ", each:\n";
    row("  token mixer", l.token_mixer);
    row("  norms (attn_norm + mlp_norm)", l.norms);
    if (l.channel_letter == 'E') {
      row("  MoE router [E, D]", l.router);
      row("  MoE routed experts (all)", l.routed_experts);
      row("  MoE routed experts (top_k active)", l.routed_experts_active);
      row("  MoE shared experts + gate", l.shared_experts);
    } else {
      row("  dense SwiGLU MLP", l.dense_mlp);
    }
    row("  layer total / active", l.total(), "  / " + with_commas(l.active()));
  }
  o << "\n";
  row("TOTAL parameters, all", s.total);
  row("TOTAL parameters, without input embedding", s.total_without_embedding);
  row("TOTAL parameters, non-embedding", s.total_non_embedding);
  row("ACTIVE parameters/token, all", s.active);
  row("ACTIVE parameters/token, without input emb.", s.active_without_embedding);
  row("ACTIVE parameters/token, non-embedding", s.active_non_embedding);
  if (s.tied) {
    o << "  (all: with the embedding, which is also the tied LM head; without input emb. and\n"
         "   non-embedding: no [V, D] matrix)\n\n";
  } else {
    o << "  (all: with the input embedding and the untied LM head; without input emb.: less the\n"
         "   [V, D] input embedding, the LM head still in; non-embedding: neither [V, D] "
         "matrix)\n\n";
  }

  o << "training FLOPs per token at seq_len " << s.seq_len
    << " (forward + backward = 3 x forward)\n";
  auto flop_row = [&](const char* name, double flops) {
    o << fmt("  %-44s %16.4e  %s\n", name, flops, gflop(flops).c_str());
  };
  o << "  matmul parameters = " << with_commas(s.matmul_parameters) << " ("
    << human(double(s.matmul_parameters)) << ")\n";
  flop_row("6 x matmul parameters", s.train_flops_matmul);
  flop_row("3 x sequence-dependent mixer terms", s.train_flops_sequence);
  flop_row("TRAINING FLOPs per token", s.train_flops);
  for (const std::string& k : order) {
    const LayerSize& l = s.layers[groups[k].front()];
    o << "    " << (groups[k].size() > 1 ? "layers " : "layer ") << ranges(groups[k])
      << fmt(": %.4e forward FLOPs/token (", l.mixer_sequence_flops) << l.mixer_flops_note << ")\n";
  }
  o << "\nassumptions (docs/model_size.md)\n"
       "  - active = router + top_k routed experts + shared experts of each MoE layer, plus every\n"
       "    non-MoE parameter; the capacity factor's drops are ignored\n"
       "  - matmul parameters = active without the input embedding (a lookup) and without the "
       "norm\n"
       "    scales, plus the LM head [V, D] (also when tied); every token-mixer parameter counts\n"
       "  - softmax attention forward per token and layer: 2 * 2 * ctx * H * d, ctx = T/2 causal\n"
       "    (W - W^2/(2T) with a sliding window W < T)\n"
       "  - linear mixers forward per token, layer and state [H, dk, dv]: 4 * H * dk * dv (state\n"
       "    update + readout) + C * H * (dk + dv) (intra-chunk, chunk size C = "
       "model.mixer.chunk_size)\n"
       "  - not counted: element-wise ops, norms, softmax, decays and gates, the delta rule's\n"
       "    triangular solve, the MoE aux losses, optimizer steps\n";
  return o.str();
}

std::string model_size_json(const ModelSize& s) {
  nlohmann::ordered_json j;
  j["vocab_size"] = s.vocab;
  j["hidden_size"] = s.hidden;
  j["seq_len"] = s.seq_len;
  j["tied_embeddings"] = s.tied;
  j["embedding"] = s.embedding;
  j["lm_head"] = s.lm_head;
  j["final_norm"] = s.final_norm;
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const LayerSize& l : s.layers) {
    nlohmann::ordered_json e;
    e["layer"] = l.layer;
    e["mixer"] = std::string(1, l.mixer_letter);
    e["channel_mixer"] = std::string(1, l.channel_letter);
    e["mixer_kind"] = l.mixer_kind;
    e["token_mixer"] = l.token_mixer;
    e["norms"] = l.norms;
    e["dense_mlp"] = l.dense_mlp;
    e["router"] = l.router;
    e["routed_experts"] = l.routed_experts;
    e["routed_experts_active"] = l.routed_experts_active;
    e["shared_experts"] = l.shared_experts;
    e["total"] = l.total();
    e["active"] = l.active();
    e["mixer_sequence_flops_forward"] = l.mixer_sequence_flops;
    layers.push_back(e);
  }
  j["layers"] = layers;
  j["total"] = s.total;
  j["total_without_embedding"] = s.total_without_embedding;
  j["active"] = s.active;
  j["active_without_embedding"] = s.active_without_embedding;
  j["total_non_embedding"] = s.total_non_embedding;
  j["active_non_embedding"] = s.active_non_embedding;
  j["matmul_parameters"] = s.matmul_parameters;
  j["train_flops_matmul"] = s.train_flops_matmul;
  j["train_flops_sequence"] = s.train_flops_sequence;
  j["train_flops_per_token"] = s.train_flops;
  return j.dump(2) + "\n";
}

}  // namespace linea
