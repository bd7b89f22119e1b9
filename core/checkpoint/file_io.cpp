#include "core/checkpoint/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/util/check.h"

namespace linea::checkpoint {

void write_file_durable(const std::string& path, std::string_view data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LINEA_USER_CHECK(fd >= 0, "check that the checkpoint directory is writable and has space")
      << "cannot create " << path << ": " << std::strerror(errno);
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      LINEA_USER_CHECK(false, "check that the checkpoint directory is writable and has space")
          << "cannot write " << path << ": " << std::strerror(err);
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const int err = errno;
  const bool closed = ::close(fd) == 0;
  LINEA_USER_CHECK(synced && closed, "check the file system the checkpoints are written to")
      << "cannot flush " << path << " to disk: " << std::strerror(err);
}

void fsync_directory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  LINEA_USER_CHECK(fd >= 0, "check that the checkpoint directory exists and is readable")
      << "cannot open directory " << path << ": " << std::strerror(errno);
  // Some file systems refuse fsync on directories (EINVAL); their renames are durable anyway.
  const bool ok = ::fsync(fd) == 0 || errno == EINVAL;
  const int err = errno;
  ::close(fd);
  LINEA_USER_CHECK(ok, "check the file system the checkpoints are written to")
      << "cannot flush directory " << path << ": " << std::strerror(err);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LINEA_USER_CHECK(in.good(), "the checkpoint is incomplete; resume from another one")
      << "cannot read " << path << " (missing or unreadable)";
  std::ostringstream ss;
  ss << in.rdbuf();
  LINEA_USER_CHECK(!in.bad(), "check the file and its permissions") << "error reading " << path;
  return std::move(ss).str();
}

}  // namespace linea::checkpoint
