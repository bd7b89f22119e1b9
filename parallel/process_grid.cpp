#include "parallel/process_grid.h"

#include <string>

#include "core/util/check.h"

namespace linea::parallel {

ProcessGrid::ProcessGrid(Communicator& world, GridShape shape) : world_(world), shape_(shape) {
  const int w = world.size();
  std::string hint = "choose parallel.sp dividing " + std::to_string(w) +
                     " and parallel.dp = " + std::to_string(w) + " / parallel.sp";
  if (shape.dp >= 1 && shape.sp >= 1) {
    hint += ", or launch " + std::to_string(shape.dp * shape.sp) + " ranks (mpirun -np)";
  }
  LINEA_USER_CHECK(shape.dp >= 1 && shape.sp >= 1 && shape.dp * shape.sp == w, hint.c_str())
      << "parallel.dp (" << shape.dp << ") x parallel.sp (" << shape.sp
      << ") must equal the world size (" << w << " ranks)";

  LINEA_USER_CHECK(shape.ep >= 1 && w % shape.ep == 0,
                   "choose parallel.ep dividing the world size (1 = no expert parallelism)")
      << "parallel.ep (" << shape.ep << ") must divide the world size (" << w << " ranks)";

  // SP groups are adjacent ranks so that the per-layer state all-gather stays within a node.
  const int rank = world.rank();
  const int dp_index = rank / shape.sp;
  const int sp_index = rank % shape.sp;
  // Every split is collective over the world, so every rank makes them in the same order.
  dp_ = world.split(sp_index, dp_index, "dp");
  sp_ = world.split(dp_index, sp_index, "sp");
  dp_sp_ = world.split(0, rank, "dp_sp");
  // EP groups are adjacent too (token all-to-all within a node first); expert-DP strides by ep.
  const int ep_group = rank / shape.ep;
  const int ep_index = rank % shape.ep;
  ep_ = world.split(ep_group, ep_index, "ep");
  expert_dp_ = world.split(ep_index, ep_group, "expert_dp");
  LINEA_CHECK(dp_ && sp_ && dp_sp_ && ep_ && expert_dp_)
      << "split of '" << world.name() << "' returned no group";
  LINEA_CHECK(dp_->size() == shape.dp && sp_->size() == shape.sp && dp_sp_->size() == w)
      << "groups of sizes dp " << dp_->size() << ", sp " << sp_->size() << ", dp_sp "
      << dp_sp_->size() << " for grid " << shape.dp << " x " << shape.sp;
  LINEA_CHECK(ep_->size() == shape.ep && expert_dp_->size() == w / shape.ep)
      << "groups of sizes ep " << ep_->size() << ", expert_dp " << expert_dp_->size() << " for ep "
      << shape.ep << " of " << w << " ranks";
}

ProcessGrid::~ProcessGrid() = default;

}  // namespace linea::parallel
