// The process grid: built once from the world communicator and the parallel config, it owns the
// groups each part of the model needs and hands them out. Layout: world = dp x sp with the ranks
// of one SP group adjacent (rank = dp_index * sp + sp_index); EP groups are carved from DP x SP
// (they come with the MoE issue).
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace linea::parallel {

struct GridShape {
  int dp = 1;
  int sp = 1;
};

class ProcessGrid {
 public:
  // world is borrowed and must outlive the grid. Throws linea::Error when dp * sp != world size.
  ProcessGrid(Communicator& world, GridShape shape);
  ~ProcessGrid();

  Communicator& world() const { return world_; }
  Communicator& dp() const { return *dp_; }
  Communicator& sp() const { return *sp_; }
  // The group over which replicated (non-expert) parameter gradients are reduced: DP x SP.
  Communicator& dp_sp() const { return *dp_sp_; }
  int dp_rank() const { return dp_->rank(); }
  int sp_rank() const { return sp_->rank(); }
  const GridShape& shape() const { return shape_; }

 private:
  Communicator& world_;
  GridShape shape_;
  std::unique_ptr<Communicator> dp_, sp_, dp_sp_;
};

}  // namespace linea::parallel
