#include "core/data/megatron_dataset.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "core/data/blend.h"
#include "core/data/document_split.h"
#include "core/data/megatron_indexed.h"
#include "core/data/sample_order.h"
#include "core/util/check.h"

namespace linea::data {
namespace {

// One dataset of the blend, restricted to one split.
struct Part {
  std::unique_ptr<MegatronIndexedDataset> file;
  int64_t begin = 0;  // first token of the split in the file's stream
  int64_t windows = 0;
  std::unique_ptr<EpochPermutation> order;
};

class MegatronDataset : public Dataset {
 public:
  MegatronDataset(std::vector<Part> parts, BlendSchedule blend, int32_t vocab_size, int64_t seq_len)
      : parts_(std::move(parts)),
        blend_(std::move(blend)),
        vocab_size_(vocab_size),
        seq_len_(seq_len) {}

  void sample(int64_t g, int32_t* inputs, int32_t* targets) const override {
    LINEA_CHECK(g >= 0) << "negative global sample index " << g;
    const BlendSchedule::Pick pick = blend_.at(g);
    const Part& part = parts_[static_cast<size_t>(pick.dataset)];
    const int64_t first = part.begin + part.order->at(pick.index) * seq_len_;
    part.file->read_tokens(first, seq_len_, vocab_size_, inputs);
    part.file->read_tokens(first + 1, seq_len_, vocab_size_, targets);
  }
  int32_t vocab_size() const override { return vocab_size_; }
  int64_t seq_len() const override { return seq_len_; }
  // A blend has no common epoch: its datasets repeat at different rates.
  int64_t samples_per_epoch() const override {
    return parts_.size() == 1 ? parts_.front().windows : 0;
  }

 private:
  std::vector<Part> parts_;
  BlendSchedule blend_;
  int32_t vocab_size_;
  int64_t seq_len_;
};

}  // namespace

std::unique_ptr<Dataset> make_megatron_dataset(const config::Config& cfg, Split split) {
  const config::DataConfig& data = cfg.data();
  const int64_t seq_len = data.seq_len();
  LINEA_USER_CHECK(seq_len >= 1, "set data.seq_len to a positive number of tokens")
      << "data.seq_len = " << seq_len;
  LINEA_USER_CHECK(split == Split::kTrain || data.valid_fraction() > 0.0,
                   "set data.valid_fraction > 0 (e.g. 0.05) to hold out validation documents")
      << "a validation split of the Megatron data was asked for, but data.valid_fraction is 0";

  // (field name for messages, prefix, weight)
  struct Entry {
    std::string field, prefix;
    double weight;
  };
  std::vector<Entry> entries;
  if (data.blend_size() == 0) {
    entries.push_back({"data.path", data.path(), 1.0});
  } else {
    for (int i = 0; i < data.blend_size(); ++i) {
      const std::string field = "data.blend[" + std::to_string(i) + "]";
      entries.push_back({field, data.blend(i).prefix(), data.blend(i).weight()});
    }
  }
  std::vector<double> weights;
  for (const Entry& e : entries) {
    LINEA_USER_CHECK(!e.prefix.empty(),
                     "give the prefix of PREFIX.bin / PREFIX.idx, without the extensions")
        << e.field << (e.field == "data.path" ? "" : ".prefix") << " is empty";
    LINEA_USER_CHECK(std::isfinite(e.weight) && e.weight > 0, "give every blend weight > 0")
        << e.field << ".weight = " << e.weight << " (prefix " << e.prefix << ")";
    weights.push_back(e.weight);
  }
  BlendSchedule blend(weights);
  for (size_t k = 0; k < entries.size(); ++k) {
    LINEA_USER_CHECK(blend.quotas()[k] > 0,
                     "raise that weight, or drop the dataset from data.blend (weights are resolved "
                     "to 1/65536 of their sum)")
        << entries[k].field << ".weight = " << entries[k].weight << " (prefix " << entries[k].prefix
        << ") is below 1/65536 of the weights' sum, so the blend would "
        << "never draw from it";
  }

  const bool train = split == Split::kTrain;
  const Stream stream = train ? Stream::kMegatronTrainOrder : Stream::kMegatronValidOrder;
  std::vector<Part> parts;
  for (size_t k = 0; k < entries.size(); ++k) {
    Part part;
    part.file = std::make_unique<MegatronIndexedDataset>(entries[k].prefix);
    const MegatronIndexedDataset& f = *part.file;
    const int64_t docs = f.num_documents();
    const int64_t valid_docs = held_out_documents(data.valid_fraction(), docs, f.idx_path());
    const int64_t cut = f.document_start(docs - valid_docs);
    part.begin = train ? 0 : cut;
    const int64_t end = train ? cut : f.num_tokens();
    const int64_t tokens = end - part.begin;
    part.windows = tokens > seq_len ? (tokens - 1) / seq_len : 0;
    LINEA_USER_CHECK(part.windows > 0,
                     "lower data.seq_len, lower data.valid_fraction, or use a larger dataset")
        << "data.seq_len = " << seq_len << " needs windows of " << seq_len + 1
        << " tokens, but the " << (train ? "training" : "validation") << " split of "
        << entries[k].prefix << " (" << entries[k].field << ") holds only " << tokens << " tokens";
    // Each dataset gets its own order seed, so equal files in one blend are not read in lockstep.
    part.order = std::make_unique<EpochPermutation>(
        part.windows, stream_seed(data.seed(), stream, static_cast<uint64_t>(k)), stream);
    spdlog::info(
        "data: {} ({}): {} ids, {} documents ({} held out), {} tokens; {} split: {} "
        "windows of {} tokens",
        entries[k].prefix, entries[k].field, megatron_dtype_name(f.dtype()), docs, valid_docs,
        f.num_tokens(), train ? "training" : "validation", part.windows, seq_len + 1);
    parts.push_back(std::move(part));
  }

  return std::make_unique<MegatronDataset>(std::move(parts), std::move(blend),
                                           cfg.model().vocab_size(), seq_len);
}

}  // namespace linea::data
