#include "core/data/blend.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/util/check.h"

namespace linea::data {

BlendSchedule::BlendSchedule(const std::vector<double>& weights) {
  const size_t k = weights.size();
  LINEA_CHECK(k >= 1) << "a blend of no dataset";
  double total = 0;
  for (double w : weights) {
    LINEA_CHECK(std::isfinite(w) && w > 0) << "blend weight " << w;
    total += w;
  }
  // Largest-remainder (Hamilton) apportionment of the block.
  quotas_.resize(k);
  std::vector<double> remainder(k);
  int64_t given = 0;
  for (size_t i = 0; i < k; ++i) {
    const double exact = weights[i] / total * static_cast<double>(kBlendBlock);
    quotas_[i] = std::min<int64_t>(static_cast<int64_t>(std::floor(exact)), kBlendBlock);
    remainder[i] = exact - static_cast<double>(quotas_[i]);
    given += quotas_[i];
  }
  std::vector<size_t> by_remainder(k);
  std::iota(by_remainder.begin(), by_remainder.end(), size_t{0});
  std::stable_sort(by_remainder.begin(), by_remainder.end(),
                   [&](size_t a, size_t b) { return remainder[a] > remainder[b]; });
  // The floors fall short of the block by less than k (the remainders' sum); never over it.
  LINEA_CHECK(given <= kBlendBlock) << "blend quotas add up to " << given;
  for (size_t i = 0; given < kBlendBlock; i = (i + 1) % k, ++given) ++quotas_[by_remainder[i]];
  if (k == 1) return;

  // Merge the datasets' ideal times (2j + 1) / (2 q_k), compared exactly as integer products.
  struct Item {
    uint32_t dataset, rank;
  };
  std::vector<Item> items;
  items.reserve(static_cast<size_t>(kBlendBlock));
  for (size_t d = 0; d < k; ++d) {
    for (int64_t j = 0; j < quotas_[d]; ++j)
      items.push_back({static_cast<uint32_t>(d), static_cast<uint32_t>(j)});
  }
  std::sort(items.begin(), items.end(), [&](const Item& a, const Item& b) {
    const uint64_t lhs = (2 * uint64_t{a.rank} + 1) * static_cast<uint64_t>(quotas_[b.dataset]);
    const uint64_t rhs = (2 * uint64_t{b.rank} + 1) * static_cast<uint64_t>(quotas_[a.dataset]);
    return lhs != rhs ? lhs < rhs : a.dataset < b.dataset;
  });
  dataset_.resize(items.size());
  rank_.resize(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    dataset_[i] = items[i].dataset;
    rank_[i] = items[i].rank;
  }
}

BlendSchedule::Pick BlendSchedule::at(int64_t g) const {
  LINEA_CHECK(g >= 0) << "negative global sample index " << g;
  if (dataset_.empty()) return {0, g};
  const int64_t block = g / kBlendBlock;
  const size_t r = static_cast<size_t>(g % kBlendBlock);
  const uint32_t d = dataset_[r];
  return {static_cast<int>(d), block * quotas_[d] + static_cast<int64_t>(rank_[r])};
}

}  // namespace linea::data
