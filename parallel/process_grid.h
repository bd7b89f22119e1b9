// The process grid: built once from the world communicator and the parallel config, it owns the
// groups each part of the model needs and hands them out. Layout: world = dp x sp with the ranks
// of one SP group adjacent (rank = dp_index * sp + sp_index). EP groups are carved from the same
// ranks: with ep = P, EP group g is the adjacent ranks [g*P, (g+1)*P) (EP within a node first), and
// the expert-data-parallel group of a rank is every rank at the same position of its EP group
// (world / P ranks, strided by P). An EP group divides the experts among its P ranks in contiguous
// blocks, so the ranks of one expert-DP group hold the same experts.
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace linea::parallel {

struct GridShape {
  int dp = 1;
  int sp = 1;
  int ep = 1;  // must divide dp * sp
};

class ProcessGrid {
 public:
  // world is borrowed and must outlive the grid. Throws linea::Error when dp * sp != world size
  // or ep does not divide it.
  ProcessGrid(Communicator& world, GridShape shape);
  ~ProcessGrid();

  Communicator& world() const { return world_; }
  Communicator& dp() const { return *dp_; }
  Communicator& sp() const { return *sp_; }
  // The group over which replicated (non-expert) parameter gradients are reduced: DP x SP.
  Communicator& dp_sp() const { return *dp_sp_; }
  // The EP group: the ranks that exchange tokens for the MoE layers and divide the experts.
  Communicator& ep() const { return *ep_; }
  // The ranks holding the same experts as this one (same position in their EP groups): the group
  // over which expert parameter gradients are reduced.
  Communicator& expert_dp() const { return *expert_dp_; }
  int dp_rank() const { return dp_->rank(); }
  int sp_rank() const { return sp_->rank(); }
  int ep_rank() const { return ep_->rank(); }
  const GridShape& shape() const { return shape_; }

 private:
  Communicator& world_;
  GridShape shape_;
  std::unique_ptr<Communicator> dp_, sp_, dp_sp_, ep_, expert_dp_;
};

}  // namespace linea::parallel
