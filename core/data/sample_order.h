// Seeded, platform-independent randomness for sample orders: splitmix64, Fisher-Yates shuffles,
// and the per-epoch window permutation every file-backed dataset uses. Everything here is
// specified bit for bit, so a sample order is the same on every platform and standard library
// (std::shuffle and the std distributions are not).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace linea::data {

// Separate seed streams, so orders and generated samples never share random numbers even under
// one data.seed. The values are part of the sample order: never renumber them.
enum class Stream : uint64_t {
  kTrainOrder = 1,  // token shard, training split
  kValidOrder = 2,  // token shard, validation split
  kMqarTrain = 3,
  kMqarValid = 4,
  kMegatronTrainOrder = 5,
  kMegatronValidOrder = 6,
};

// splitmix64's output function (Steele, Lea, Flood 2014).
uint64_t mix64(uint64_t z);

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() { return mix64(state_ += 0x9e3779b97f4a7c15ULL); }
  // Uniform in [0, n) without modulo bias.
  uint64_t below(uint64_t n);

 private:
  uint64_t state_;
};

// The seed of item `index` (an epoch, a sample) of one stream.
uint64_t stream_seed(uint64_t seed, Stream stream, uint64_t index);

template <typename T>
void shuffle(std::vector<T>& v, SplitMix64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

// A permutation of [0, n) per epoch: epoch e is a Fisher-Yates shuffle driven by SplitMix64
// seeded with stream_seed(seed, stream, e). Thread-safe; costs 8 bytes a window per cached epoch.
class EpochPermutation {
 public:
  EpochPermutation(int64_t n, uint64_t seed, Stream stream) : n_(n), seed_(seed), stream_(stream) {}
  int64_t size() const { return n_; }
  // Position i of the stream of all epochs: element i % n of epoch i / n's permutation.
  int64_t at(int64_t i) const;

 private:
  using Order = std::vector<int64_t>;
  std::shared_ptr<const Order> order(int64_t epoch) const;

  int64_t n_;
  uint64_t seed_;
  Stream stream_;
  // Two epochs stay cached because a batch that straddles an epoch boundary asks for both
  // alternately; redrawing each time would cost O(n) a sample.
  mutable std::mutex mu_;
  mutable std::pair<int64_t, std::shared_ptr<const Order>> cache_[2];
  mutable int next_slot_ = 0;
};

}  // namespace linea::data
