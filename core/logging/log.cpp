#include "core/logging/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <array>
#include <filesystem>
#include <memory>
#include <utility>
#include <vector>

#include "core/util/check.h"

namespace linea {

namespace {

constexpr std::array<std::pair<const char*, spdlog::level::level_enum>, 5> kLevels{{
    {"trace", spdlog::level::trace},
    {"debug", spdlog::level::debug},
    {"info", spdlog::level::info},
    {"warn", spdlog::level::warn},
    {"error", spdlog::level::err},
}};

spdlog::level::level_enum parse_level(const std::string& name) {
  std::string valid;
  for (const auto& [n, level] : kLevels) {
    if (name == n) return level;
    valid += (valid.empty() ? "" : ", ") + std::string(n);
  }
  const std::string hint = "set logging.level to one of: " + valid;
  LINEA_USER_CHECK(false, hint.c_str())
      << "logging.level: unknown level '" << name << "' (valid: " << valid << ")";
  return spdlog::level::info;  // not reached
}

}  // namespace

void init_logging(int rank, const std::string& level, bool all_ranks, const std::string& log_file) {
  spdlog::level::level_enum lvl = parse_level(level);
  // Other ranks repeat rank 0's story; only their warnings and errors are news.
  if (rank != 0 && !all_ranks && lvl < spdlog::level::warn) lvl = spdlog::level::warn;

  // stderr keeps stdout free for what a command prints as its result.
  std::vector<spdlog::sink_ptr> sinks{std::make_shared<spdlog::sinks::stderr_color_sink_mt>()};
  if (!log_file.empty()) {
    const std::filesystem::path path(log_file);
    std::error_code ec;
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
    LINEA_CHECK(!ec) << "cannot create the log directory " << path.parent_path() << ": "
                     << ec.message();
    try {
      // Appends, so a resumed run continues its earlier log.
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(log_file, false));
    } catch (const spdlog::spdlog_ex& e) {
      throw Error("cannot open the log file " + log_file + ": " + e.what());
    }
  }
  auto logger = std::make_shared<spdlog::logger>("linea", sinks.begin(), sinks.end());
  // The rank is fixed for the life of the process, so it is baked into the pattern text.
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [r" + std::to_string(rank) + "] [%l] %v");
  logger->set_level(lvl);
  // Per-step lines should reach the file while a run is watched, not when a buffer fills.
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace linea
