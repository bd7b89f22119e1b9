// Rank-aware logging through spdlog: every line carries the rank ("[r0]"). Rank 0 logs at the
// configured level; other ranks at warn unless LoggingConfig.all_ranks is set. Logs also go to
// <output_dir>/logs/rank<N>.log when a file is given.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace linea {

// level: trace, debug, info, warn, error (a user error names the field on anything else).
void init_logging(int rank, const std::string& level, bool all_ranks,
                  const std::string& log_file = "");

}  // namespace linea
