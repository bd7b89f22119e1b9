#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/logging/log.h"
#include "core/util/check.h"

namespace linea {
namespace {

TEST(Logging, UnknownLevelNamesTheFieldAndTheChoices) {
  try {
    init_logging(0, "verbose", false);
    FAIL() << "expected linea::Error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("logging.level"), std::string::npos) << what;
    EXPECT_NE(what.find("'verbose'"), std::string::npos) << what;
    EXPECT_NE(what.find("trace, debug, info, warn, error"), std::string::npos) << what;
  }
}

TEST(Logging, FileLinesCarryTheRankAndOtherRanksLogWarnings) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("linea_logging_test_" + std::to_string(::getpid()));
  const std::string file = (dir / "logs" / "rank3.log").string();  // parent dirs do not exist
  init_logging(3, "debug", false, file);
  spdlog::info("hidden on rank 3");
  spdlog::warn("shown on rank 3");
  spdlog::default_logger()->flush();
  init_logging(3, "debug", true, file);
  spdlog::debug("all ranks at debug");
  spdlog::default_logger()->flush();
  init_logging(0, "info", false);  // releases the file

  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  EXPECT_EQ(text.find("hidden on rank 3"), std::string::npos) << text;
  EXPECT_NE(text.find("] [r3] [warning] shown on rank 3"), std::string::npos) << text;
  EXPECT_NE(text.find("] [r3] [debug] all ranks at debug"), std::string::npos) << text;
  EXPECT_EQ(text.rfind("[20", 0), 0u) << "lines start with the date: " << text;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace linea
