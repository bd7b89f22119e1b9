// Blending of several datasets by weight, with random access by global sample index: sample g
// of the blend is sample `index` of dataset `dataset`, computed in O(1) from g alone.
//
// Rule: global samples come in blocks of kBlendBlock. Every block gives dataset k exactly q_k
// samples, where q_k apportions kBlendBlock by the normalised weights (largest remainders, ties
// to the lower k). Inside a block, dataset k's j-th sample has the ideal time (j + 1/2) / q_k and
// the block lists samples by ideal time (ties to the lower k), so the datasets interleave evenly
// and every prefix of a block is within one sample per dataset of its weighted share. Dataset k's
// samples are numbered consecutively across blocks: block b holds its numbers b*q_k .. b*q_k+q_k-1.
#pragma once

#include <cstdint>
#include <vector>

namespace linea::data {

constexpr int64_t kBlendBlock = int64_t{1} << 16;

class BlendSchedule {
 public:
  // weights: positive and finite (callers check, naming the config field).
  explicit BlendSchedule(const std::vector<double>& weights);

  struct Pick {
    int dataset;
    int64_t index;  // the sample number within that dataset
  };
  Pick at(int64_t g) const;
  // Samples per block of each dataset; a 0 means its weight is below 1 / kBlendBlock of the total.
  const std::vector<int64_t>& quotas() const { return quotas_; }

 private:
  std::vector<int64_t> quotas_;
  std::vector<uint32_t> dataset_;  // [kBlendBlock] for 2+ datasets; empty for one
  std::vector<uint32_t> rank_;     // [kBlendBlock]: j, the sample's number within its block share
};

}  // namespace linea::data
