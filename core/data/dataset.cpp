#include "core/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/data/token_shard.h"
#include "core/util/check.h"

namespace linea::data {
namespace {

// Same value as kernels::kIgnoreIndex (batch.h); the data layer does not depend on kernels.
constexpr int32_t kIgnore = -1;

// Separate seed streams, so the training order, the validation order and the MQAR samples never
// share random numbers even under one data.seed.
enum class Stream : uint64_t { kTrainOrder = 1, kValidOrder = 2, kMqarTrain = 3, kMqarValid = 4 };

// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and fully specified, so the sample order is
// the same on every platform and standard library (std::shuffle and the std distributions are
// not).
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() { return mix64(state_ += 0x9e3779b97f4a7c15ULL); }
  // Uniform in [0, n) without modulo bias: reject the low values that would over-represent
  // small results.
  uint64_t below(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }

 private:
  uint64_t state_;
};

uint64_t stream_seed(uint64_t seed, Stream stream, uint64_t index) {
  return mix64(mix64(mix64(seed) ^ static_cast<uint64_t>(stream)) + index);
}

template <typename T>
void shuffle(std::vector<T>& v, SplitMix64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

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
        num_windows_(static_cast<int64_t>((end - begin) / static_cast<uint64_t>(seq_len + 1))),
        seed_(seed),
        stream_(stream) {
    LINEA_CHECK(num_windows_ > 0) << "token-shard dataset with no window";
  }

  void sample(int64_t g, int32_t* inputs, int32_t* targets) const override {
    LINEA_CHECK(g >= 0) << "negative global sample index " << g;
    const int64_t epoch = g / num_windows_;
    const int64_t window = (*order(epoch))[static_cast<size_t>(g % num_windows_)];
    const int32_t* w = tokens_.data() + begin_ + static_cast<uint64_t>(window * (seq_len_ + 1));
    std::copy(w, w + seq_len_, inputs);
    std::copy(w + 1, w + seq_len_ + 1, targets);
  }
  int32_t vocab_size() const override { return vocab_size_; }
  int64_t seq_len() const override { return seq_len_; }
  int64_t samples_per_epoch() const override { return num_windows_; }

 private:
  using Order = std::vector<int64_t>;

  // The epoch's window permutation. Two epochs stay cached because a batch that straddles an
  // epoch boundary asks for both alternately; redrawing each time would cost O(windows) a sample.
  std::shared_ptr<const Order> order(int64_t epoch) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [e, o] : cache_) {
      if (o && e == epoch) return o;
    }
    auto o = std::make_shared<Order>(static_cast<size_t>(num_windows_));
    for (int64_t i = 0; i < num_windows_; ++i) (*o)[static_cast<size_t>(i)] = i;
    SplitMix64 rng(stream_seed(seed_, stream_, static_cast<uint64_t>(epoch)));
    shuffle(*o, rng);
    cache_[next_slot_] = {epoch, o};
    next_slot_ ^= 1;
    return o;
  }

  std::vector<int32_t> tokens_;
  uint64_t begin_;
  int32_t vocab_size_;
  int64_t seq_len_;
  int64_t num_windows_;
  uint64_t seed_;
  Stream stream_;
  mutable std::mutex mu_;
  mutable std::pair<int64_t, std::shared_ptr<const Order>> cache_[2];
  mutable int next_slot_ = 0;
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
  LINEA_USER_CHECK(valid_fraction >= 0.0 && valid_fraction < 1.0,
                   "set data.valid_fraction in [0, 1), e.g. 0.05")
      << "data.valid_fraction = " << valid_fraction << " is outside [0, 1)";
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

  // Whole documents are held out (not a token tail) so no validation text leaks into training
  // through a document cut in two.
  const int64_t docs = shard.num_docs();
  int64_t valid_docs = 0;
  if (valid_fraction > 0.0) {
    LINEA_USER_CHECK(docs >= 2,
                     "set data.valid_fraction to 0, or prepare a corpus of several "
                     "documents (`linea prepare-data --separator ...`)")
        << "data.valid_fraction = " << valid_fraction << " needs at least 2 documents, but " << path
        << " holds " << docs;
    valid_docs =
        std::clamp<int64_t>(std::llround(valid_fraction * static_cast<double>(docs)), 1, docs - 1);
  }
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
  }
  LINEA_USER_CHECK(false, "set data.source to TOKEN_SHARD or MQAR")
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
