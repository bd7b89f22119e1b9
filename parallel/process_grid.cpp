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

  // SP groups are adjacent ranks so that the per-layer state all-gather stays within a node.
  const int rank = world.rank();
  const int dp_index = rank / shape.sp;
  const int sp_index = rank % shape.sp;
  // Every split is collective over the world, so every rank makes them in the same order.
  dp_ = world.split(sp_index, dp_index, "dp");
  sp_ = world.split(dp_index, sp_index, "sp");
  dp_sp_ = world.split(0, rank, "dp_sp");
  LINEA_CHECK(dp_ && sp_ && dp_sp_) << "split of '" << world.name() << "' returned no group";
  LINEA_CHECK(dp_->size() == shape.dp && sp_->size() == shape.sp && dp_sp_->size() == w)
      << "groups of sizes dp " << dp_->size() << ", sp " << sp_->size() << ", dp_sp "
      << dp_sp_->size() << " for grid " << shape.dp << " x " << shape.sp;
}

ProcessGrid::~ProcessGrid() = default;

}  // namespace linea::parallel
