#include "core/data/dataset.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/data/document_split.h"
#include "core/data/megatron_dataset.h"
#include "core/data/sample_order.h"
#include "core/data/token_shard.h"
#include "core/util/check.h"

namespace linea::data {
namespace {

// Same value as kernels::kIgnoreIndex (batch.h); the data layer does not depend on kernels.
constexpr int32_t kIgnore = -1;

// k distinct values of [lo, lo + n) in random order. Floyd's subset sampling keeps the cost
// O(k^2) rather than O(n), since vocabularies can be large and k (pairs, queries) is small.
std::vector<int64_t> distinct_sample(int64_t lo, int64_t n, int64_t k, SplitMix64& rng) {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(k));
  for (int64_t j = n - k; j < n; ++j) {
    const int64_t t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(j + 1)));
    const bool seen = std::find(out.begin(), out.end(), lo + t) != out.end();
    out.push_back(lo + (seen ? j : t));
  }
  // Floyd's result is a uniform subset but not a uniform order.
  shuffle(out, rng);
  return out;
}

}  // namespace

// ---- token shard ---------------------------------------------------------------------------

class TokenShardDataset : public Dataset {
 public:
  // Serves tokens [begin, end) of the shard (one split) in windows of seq_len + 1 tokens.
  TokenShardDataset(std::vector<int32_t> tokens, uint64_t begin, uint64_t end, int32_t vocab_size,
                    int64_t seq_len, uint64_t seed, Stream stream)
      : tokens_(std::move(tokens)),
        begin_(begin),
        vocab_size_(vocab_size),
        seq_len_(seq_len),
        order_(static_cast<int64_t>((end - begin) / static_cast<uint64_t>(seq_len + 1)), seed,
               stream) {
    LINEA_CHECK(order_.size() > 0) << "token-shard dataset with no window";
  }

  void sample(int64_t g, int32_t* inputs, int32_t* targets) const override {
    LINEA_CHECK(g >= 0) << "negative global sample index " << g;
    const int64_t window = order_.at(g);
    const int32_t* w = tokens_.data() + begin_ + static_cast<uint64_t>(window * (seq_len_ + 1));
    std::copy(w, w + seq_len_, inputs);
    std::copy(w + 1, w + seq_len_ + 1, targets);
  }
  int32_t vocab_size() const override { return vocab_size_; }
  int64_t seq_len() const override { return seq_len_; }
  int64_t samples_per_epoch() const override { return order_.size(); }

 private:
  std::vector<int32_t> tokens_;
  uint64_t begin_;
  int32_t vocab_size_;
  int64_t seq_len_;
  EpochPermutation order_;
};

// ---- MQAR ----------------------------------------------------------------------------------

// Multi-query associative recall after Zoology (Arora et al. 2023). Layout of one sample:
//   k1 v1 k2 v2 ... kP vP | filler with Q two-token query slots at random even offsets
// A query slot holds a key seen earlier and then its value; the target at the key is the value
// and every other target is ignored, so the loss measures recall only. Unlike Zoology, the value
// also appears as the next input, so targets[t] == inputs[t + 1] wherever a target is set, and
// queries are placed uniformly rather than by Zoology's power law.
class MqarDataset : public Dataset {
 public:
  MqarDataset(int32_t vocab_size, int64_t seq_len, int64_t num_pairs, int64_t num_queries,
              bool random_filler, uint64_t seed, Stream stream)
      : vocab_size_(vocab_size),
        seq_len_(seq_len),
        num_pairs_(num_pairs),
        num_queries_(num_queries),
        random_filler_(random_filler),
        seed_(seed),
        stream_(stream) {}

  void sample(int64_t g, int32_t* inputs, int32_t* targets) const override {
    LINEA_CHECK(g >= 0) << "negative global sample index " << g;
    SplitMix64 rng(stream_seed(seed_, stream_, static_cast<uint64_t>(g)));
    const int64_t half = vocab_size_ / 2;
    const std::vector<int64_t> keys = distinct_sample(0, half, num_pairs_, rng);
    const std::vector<int64_t> values = distinct_sample(half, vocab_size_ - half, num_pairs_, rng);
    for (int64_t i = 0; i < num_pairs_; ++i) {
      inputs[2 * i] = static_cast<int32_t>(keys[i]);
      inputs[2 * i + 1] = static_cast<int32_t>(values[i]);
    }
    const int64_t context = 2 * num_pairs_;
    for (int64_t t = context; t < seq_len_; ++t) {
      inputs[t] = random_filler_ ? static_cast<int32_t>(rng.below(vocab_size_)) : 0;
    }
    std::fill(targets, targets + seq_len_, kIgnore);

    const int64_t num_slots = (seq_len_ - context) / 2;
    const std::vector<int64_t> slots = distinct_sample(0, num_slots, num_queries_, rng);
    // Each key is asked once before any is asked again.
    std::vector<int64_t> pair_order(static_cast<size_t>(num_pairs_));
    for (int64_t i = 0; i < num_pairs_; ++i) pair_order[i] = i;
    shuffle(pair_order, rng);
    for (int64_t q = 0; q < num_queries_; ++q) {
      const int64_t pair = pair_order[q % num_pairs_];
      const int64_t pos = context + 2 * slots[q];
      inputs[pos] = static_cast<int32_t>(keys[pair]);
      inputs[pos + 1] = static_cast<int32_t>(values[pair]);
      targets[pos] = static_cast<int32_t>(values[pair]);
    }
  }
  int32_t vocab_size() const override { return vocab_size_; }
  int64_t seq_len() const override { return seq_len_; }

 private:
  int32_t vocab_size_;
  int64_t seq_len_;
  int64_t num_pairs_;
  int64_t num_queries_;
  bool random_filler_;
  uint64_t seed_;
  Stream stream_;
};

// ---- factory -------------------------------------------------------------------------------

namespace {

std::unique_ptr<Dataset> make_token_shard_dataset(const config::Config& cfg, Split split) {
  const config::DataConfig& data = cfg.data();
  const std::string& path = data.path();
  const int64_t seq_len = data.seq_len();
  const double valid_fraction = data.valid_fraction();
  LINEA_USER_CHECK(split == Split::kTrain || valid_fraction > 0.0,
                   "set data.valid_fraction > 0 (e.g. 0.05) to hold out validation documents")
      << "a validation split of " << path << " was asked for, but data.valid_fraction is 0";

  std::error_code ec;
  LINEA_USER_CHECK(!path.empty() && std::filesystem::exists(path, ec),
                   "run launch/setup.sh to prepare the embedded corpus, or `linea prepare-data`")
      << "data.path = \"" << path << "\": the token-shard file " << path << " does not exist";
  TokenShard shard = read_token_shard(path);
  LINEA_USER_CHECK(shard.vocab_size <= cfg.model().vocab_size(),
                   "set model.vocab_size to at least the shard's vocabulary size")
      << "token shard " << path << " has vocabulary size " << shard.vocab_size
      << ", larger than model.vocab_size = " << cfg.model().vocab_size();

  const int64_t docs = shard.num_docs();
  const int64_t valid_docs = held_out_documents(valid_fraction, docs, path);
  const uint64_t cut = shard.doc_offsets[static_cast<size_t>(docs - valid_docs)];
  const uint64_t begin = split == Split::kTrain ? 0 : cut;
  const uint64_t end = split == Split::kTrain ? cut : shard.tokens.size();
  const char* split_name = split == Split::kTrain ? "training" : "validation";

  LINEA_USER_CHECK(seq_len >= 1, "set data.seq_len to a positive number of tokens")
      << "data.seq_len = " << seq_len;
  LINEA_USER_CHECK(end - begin >= static_cast<uint64_t>(seq_len) + 1,
                   "lower data.seq_len, lower data.valid_fraction, or prepare a larger corpus")
      << "data.seq_len = " << seq_len << " needs windows of " << seq_len + 1 << " tokens, but the "
      << split_name << " split of " << path << " holds only " << end - begin << " tokens";

  const int32_t vocab = shard.vocab_size;
  return std::make_unique<TokenShardDataset>(
      std::move(shard.tokens), begin, end, vocab, seq_len, data.seed(),
      split == Split::kTrain ? Stream::kTrainOrder : Stream::kValidOrder);
}

std::unique_ptr<Dataset> make_mqar_dataset(const config::Config& cfg, Split split) {
  const config::DataConfig& data = cfg.data();
  const config::MqarConfig& mqar = data.mqar();
  const int64_t vocab = cfg.model().vocab_size();
  const int64_t seq_len = data.seq_len();
  const int64_t pairs = mqar.num_kv_pairs();
  const int64_t queries = mqar.num_queries();
  LINEA_USER_CHECK(pairs >= 1 && queries >= 1,
                   "set data.mqar.num_kv_pairs and data.mqar.num_queries to at least 1")
      << "data.mqar.num_kv_pairs = " << pairs << ", data.mqar.num_queries = " << queries;
  LINEA_USER_CHECK(pairs <= vocab / 2,
                   "raise model.vocab_size or lower data.mqar.num_kv_pairs (keys are distinct "
                   "ids below model.vocab_size / 2)")
      << "data.mqar.num_kv_pairs = " << pairs
      << " distinct keys do not fit in model.vocab_size / 2 = " << vocab / 2;
  LINEA_USER_CHECK(2 * pairs + 2 * queries <= seq_len,
                   "raise data.seq_len or lower data.mqar.num_kv_pairs / data.mqar.num_queries")
      << "data.seq_len = " << seq_len << " is too short for MQAR: 2 * data.mqar.num_kv_pairs ("
      << pairs << ") + 2 * data.mqar.num_queries (" << queries << ") = " << 2 * pairs + 2 * queries
      << " tokens are needed";
  return std::make_unique<MqarDataset>(
      static_cast<int32_t>(vocab), seq_len, pairs, queries, mqar.random_filler(), data.seed(),
      split == Split::kTrain ? Stream::kMqarTrain : Stream::kMqarValid);
}

}  // namespace

std::unique_ptr<Dataset> make_dataset(const config::Config& cfg, Split split) {
  switch (cfg.data().source()) {
    case config::DataConfig::TOKEN_SHARD:
      return make_token_shard_dataset(cfg, split);
    case config::DataConfig::MQAR:
      return make_mqar_dataset(cfg, split);
    case config::DataConfig::MEGATRON:
      return make_megatron_dataset(cfg, split);
  }
  LINEA_USER_CHECK(false, "set data.source to TOKEN_SHARD, MQAR or MEGATRON")
      << "unknown data.source " << static_cast<int>(cfg.data().source());
}

Batch make_batch(const Dataset& ds, int64_t step, int grad_accum, int micro, int dp, int dp_rank,
                 int micro_batch) {
  LINEA_CHECK(step >= 0 && grad_accum >= 1 && micro >= 0 && micro < grad_accum && dp >= 1 &&
              dp_rank >= 0 && dp_rank < dp && micro_batch >= 1)
      << "make_batch(step " << step << ", grad_accum " << grad_accum << ", micro " << micro
      << ", dp " << dp << ", dp_rank " << dp_rank << ", micro_batch " << micro_batch << ")";
  const int64_t seq_len = ds.seq_len();
  Batch batch{Tensor::empty({micro_batch, seq_len}, DType::kI32),
              Tensor::empty({micro_batch, seq_len}, DType::kI32)};
  int32_t* inputs = batch.inputs.data<int32_t>();
  int32_t* targets = batch.targets.data<int32_t>();
  const int64_t first = ((step * grad_accum + micro) * dp + dp_rank) * micro_batch;
  for (int64_t j = 0; j < micro_batch; ++j) {
    ds.sample(first + j, inputs + j * seq_len, targets + j * seq_len);
  }
  return batch;
}

}  // namespace linea::data
