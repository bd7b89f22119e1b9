#include "core/data/sample_order.h"

#include "core/util/check.h"

namespace linea::data {

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::below(uint64_t n) {
  // Reject the low values that would over-represent small results.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t r = next();
    if (r >= threshold) return r % n;
  }
}

uint64_t stream_seed(uint64_t seed, Stream stream, uint64_t index) {
  return mix64(mix64(mix64(seed) ^ static_cast<uint64_t>(stream)) + index);
}

int64_t EpochPermutation::at(int64_t i) const {
  LINEA_CHECK(i >= 0 && n_ > 0) << "permutation position " << i << " of " << n_ << " elements";
  return (*order(i / n_))[static_cast<size_t>(i % n_)];
}

std::shared_ptr<const EpochPermutation::Order> EpochPermutation::order(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [e, o] : cache_) {
    if (o && e == epoch) return o;
  }
  auto o = std::make_shared<Order>(static_cast<size_t>(n_));
  for (int64_t i = 0; i < n_; ++i) (*o)[static_cast<size_t>(i)] = i;
  SplitMix64 rng(stream_seed(seed_, stream_, static_cast<uint64_t>(epoch)));
  shuffle(*o, rng);
  cache_[next_slot_] = {epoch, o};
  next_slot_ ^= 1;
  return o;
}

}  // namespace linea::data
