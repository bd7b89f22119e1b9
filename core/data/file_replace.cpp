#include "core/data/file_replace.h"

#include <filesystem>
#include <system_error>

#include "core/util/check.h"

namespace linea::data {

std::string write_beside(const std::string& path, const std::string& what,
                         const std::function<void(std::ofstream&)>& fill) {
  const std::string tmp = path + ".tmp";
  std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
  LINEA_USER_CHECK(f.is_open(), "check that the output directory exists and is writable")
      << "cannot open " << tmp << " for writing (" << what << " " << path << ")";
  fill(f);
  f.flush();
  const bool ok = f.good();
  f.close();
  if (!ok || f.fail()) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    LINEA_USER_CHECK(false, "check free disk space and permissions, then run again")
        << "writing " << tmp << " failed (" << what << " " << path << ")";
  }
  return tmp;
}

void replace_with(const std::string& tmp, const std::string& path) {
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    LINEA_USER_CHECK(false, "check permissions of the output directory")
        << "cannot rename " << tmp << " to " << path << ": " << ec.message();
  }
}

}  // namespace linea::data
