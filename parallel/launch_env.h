// Where this process sits in the job: global rank, local rank on its node (one GPU per rank picks
// device local_rank), and the node. Rank and world size come from MPI; the local rank from MPI's
// shared-memory split, cross-checked with the launcher's variables when present
// (OMPI_COMM_WORLD_LOCAL_RANK for mpirun, SLURM_LOCALID for srun, PMI_LOCAL_RANK / MPI_LOCALRANKID
// for other PMI launchers), which are the fall-back when MPI cannot tell.
#pragma once

#include <string>

#include "parallel/mpi_communicator.h"

namespace linea::parallel {

struct LaunchInfo {
  int rank = 0, world_size = 1;
  int local_rank = 0, local_size = 1;
  std::string host;
  std::string launcher;  // "mpirun", "slurm", "pmi" or "none"
};

LaunchInfo launch_info(const MpiCommunicator& world);

// The local rank named by the launcher's environment variables, or -1 when none is set.
int local_rank_from_environment();

}  // namespace linea::parallel
