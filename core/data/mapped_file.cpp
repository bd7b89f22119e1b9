#include "core/data/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/util/check.h"

namespace linea::data {

MappedFile::MappedFile(const std::string& path, const std::string& what, const std::string& hint)
    : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LINEA_USER_CHECK(fd >= 0, hint.c_str())
      << "cannot open " << what << " " << path << ": " << std::strerror(errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const int err = errno;
    ::close(fd);
    LINEA_USER_CHECK(false, hint.c_str())
        << what << " " << path << " is not a regular file"
        << (err != 0 ? std::string(" (") + std::strerror(err) + ")" : std::string());
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    const int err = errno;
    if (p == MAP_FAILED) {
      ::close(fd);
      LINEA_USER_CHECK(false, "check the file system supports mmap and the address space limit")
          << "cannot memory-map " << what << " " << path << " (" << size_
          << " bytes): " << std::strerror(err);
    }
    data_ = static_cast<const unsigned char*>(p);
  }
  // The mapping keeps the file alive; the descriptor is no longer needed.
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), size_);
}

}  // namespace linea::data
