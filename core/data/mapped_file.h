// A whole file mapped read-only into memory (POSIX mmap), unmapped on destruction. Pages are read
// on first touch, so opening a dataset of any size costs no reading up front.
#pragma once

#include <cstdint>
#include <string>

namespace linea::data {

class MappedFile {
 public:
  // Errors (missing file, no permission, mmap failure) name the file; `what` says what the file
  // is for ("Megatron index file") and `hint` how to fix it.
  MappedFile(const std::string& path, const std::string& what, const std::string& hint);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const unsigned char* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  std::string path_;
  const unsigned char* data_ = nullptr;  // null for an empty file (mmap refuses length 0)
  uint64_t size_ = 0;
};

}  // namespace linea::data
