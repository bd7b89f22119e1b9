// The safetensors format (huggingface/safetensors), written and read by our own code:
//   8 bytes    N, the header length, unsigned little-endian
//   N bytes    a JSON object, UTF-8, padded with spaces to a multiple of 8 bytes:
//                {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//                 "__metadata__": {"<key>": "<string value>", ...}}
//   the rest   the byte buffer: each tensor's elements row-major, little-endian, at
//              [begin, end) relative to the buffer's start.
// The reader enforces the format's rules: the header starts with '{', no duplicate names, known
// dtypes, end - begin = elements x element size, and the tensors tile the buffer exactly (no
// holes, no overlaps, nothing after the last one). Every violation throws linea::Error naming the
// file and what is wrong, so a truncated or damaged file is never half-loaded.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/tensor/tensor.h"

namespace linea::checkpoint {

// A tensor to write under a name; a CPU tensor (copy device tensors with Tensor::cpu() first).
struct NamedTensor {
  std::string name;
  Tensor tensor;
};

// The safetensors dtype string of a DType: F32, F64, BF16, I32, I64.
const char* safetensors_dtype(DType t);

// The whole file's bytes for `tensors` (in that order in the buffer) and `metadata`.
std::string encode_safetensors(const std::vector<NamedTensor>& tensors,
                               const std::map<std::string, std::string>& metadata);

class SafetensorsFile {
 public:
  struct Entry {
    std::string dtype;  // as written in the header, e.g. "F32"
    Shape shape;
    size_t begin = 0, end = 0;  // byte offsets into the buffer
  };

  // Parses `bytes` (a whole file's content); `path` names the file in errors.
  SafetensorsFile(std::string bytes, std::string path);

  const std::map<std::string, Entry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return entries_.count(name) > 0; }
  // A CPU copy of tensor `name`; throws naming the file when it is absent or of a dtype Linea
  // has no tensors for.
  Tensor tensor(const std::string& name) const;
  const std::string& path() const { return path_; }

 private:
  std::string bytes_, path_;
  size_t buffer_start_ = 0;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace linea::checkpoint
