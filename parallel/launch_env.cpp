#include "parallel/launch_env.h"

#include <unistd.h>

#include <cstdlib>

namespace linea::parallel {

int local_rank_from_environment() {
  for (const char* var :
       {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "PMI_LOCAL_RANK", "MPI_LOCALRANKID"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return -1;
}

LaunchInfo launch_info(const MpiCommunicator& world) {
  LaunchInfo info;
  info.rank = world.rank();
  info.world_size = world.size();
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  info.host = host;
  info.launcher = std::getenv("SLURM_PROCID")           ? "slurm"
                  : std::getenv("OMPI_COMM_WORLD_RANK") ? "mpirun"
                  : std::getenv("PMI_RANK")             ? "pmi"
                                                        : "none";
  MPI_Comm node = MPI_COMM_NULL;
  if (MPI_Comm_split_type(world.handle(), MPI_COMM_TYPE_SHARED, info.rank, MPI_INFO_NULL, &node) ==
      MPI_SUCCESS) {
    MPI_Comm_rank(node, &info.local_rank);
    MPI_Comm_size(node, &info.local_size);
    MPI_Comm_free(&node);
  } else {
    const int env = local_rank_from_environment();
    info.local_rank = env >= 0 ? env : 0;
  }
  return info;
}

}  // namespace linea::parallel
