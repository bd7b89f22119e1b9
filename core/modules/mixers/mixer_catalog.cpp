#include "core/modules/mixers/mixer_catalog.h"

namespace linea {

const std::vector<MixerInfo>& mixer_catalog() {
  static const std::vector<MixerInfo> kCatalog = {
      {"mixer { kind: LINEAR_ATTENTION feature_map: IDENTITY }", "identity",
       "Katharopoulos et al. 2020, Transformers are RNNs"},
      {"mixer { kind: LINEAR_ATTENTION feature_map: ELU_PLUS_ONE }", "identity",
       "Katharopoulos et al. 2020, Transformers are RNNs"},
      {"mixer { kind: LINEAR_ATTENTION feature_map: RELU }", "identity",
       "Katharopoulos et al. 2020 (ReLU kernel)"},
      {"mixer { kind: LINEAR_ATTENTION feature_map: HEDGEHOG }", "identity",
       "Zhang et al. 2024, The Hedgehog & the Porcupine"},
      {"mixer { kind: LINEAR_ATTENTION feature_map: BASED }", "identity (+ sliding window)",
       "Arora et al. 2024, Simple linear attention language models (Based)"},
      {"mixer { kind: LINEAR_ATTENTION feature_map: REBASED }", "identity",
       "Aksenov et al. 2024, Linear Transformers with Learnable Kernel Functions (ReBased)"},
      {"mixer { kind: LINEAR_ATTENTION feature_map: COSINE }", "identity",
       "Mongaras et al. 2024, Cottention"},
      {"mixer { kind: LIGHTNING }", "constant scalar decay per head",
       "Qin et al. 2024, Lightning Attention-2 / TransNormerLLM"},
      {"mixer { kind: RETNET }", "constant scalar decay per head",
       "Sun et al. 2023, Retentive Network"},
      {"mixer { kind: MAMBA2 }", "data-dependent scalar decay",
       "Dao & Gu 2024, Transformers are SSMs (Mamba2)"},
      {"mixer { kind: SIMPLE_GLA }", "data-dependent scalar decay",
       "Yang et al. 2024 (simple GLA / gated retention)"},
      {"mixer { kind: GLA }", "data-dependent vector decay",
       "Yang et al. 2024, Gated Linear Attention Transformers"},
      {"mixer { kind: HGRN2 }", "data-dependent vector decay",
       "Qin et al. 2024, HGRN2: Gated Linear RNNs with State Expansion"},
      {"mixer { kind: DELTANET }", "dense (delta rule)",
       "Yang et al. 2024, Parallelizing Linear Transformers with the Delta Rule"},
      {"mixer { kind: GATED_DELTANET }", "dense (gated delta rule)",
       "Yang et al. 2025, Gated Delta Networks"},
      {"mixer { kind: GSA }", "vector decay over slots, two passes",
       "Zhang et al. 2024, Gated Slot Attention"},
      {"mixer { kind: MOM }", "one state per memory (kind: memory_kind)",
       "Du et al. 2025, MoM: Mixture-of-Memories"},
      {"layer_pattern letter N, model.attention { ... }", "none (softmax attention; LASP-2H)",
       "Vaswani et al. 2017; RoPE: Su et al. 2021; GQA: Ainslie et al. 2023"},
  };
  return kCatalog;
}

}  // namespace linea
