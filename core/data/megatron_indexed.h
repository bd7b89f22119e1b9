// Megatron-LM's indexed dataset files (MMapIndexedDataset, megatron/core/datasets/
// indexed_dataset.py), as Megatron's and Linear-MoE's preprocessing write them: PREFIX.bin holds
// the token ids back to back; PREFIX.idx describes them. Layout of the .idx (little-endian):
//   char[9]  magic "MMIDIDX\0\0"
//   u64      version (1)
//   u8       dtype code of the .bin ids: 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f64, 7 f32, 8 u16
//   u64      sequence count S
//   u64      document-index count D + 1
//   i32[S]   tokens per sequence
//   i64[S]   byte offset of each sequence in the .bin
//   i64[D+1] first sequence of each document; starts at 0, ends at S
// Both files are memory-mapped read-only and checked on open (magic, version, dtype, sizes
// against the file lengths, sequences within and filling the .bin, document indices monotone);
// every failure names the file and says what to do.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/data/mapped_file.h"

namespace linea::data {

enum class MegatronDType : uint8_t {
  kU8 = 1,
  kI8 = 2,
  kI16 = 3,
  kI32 = 4,
  kI64 = 5,
  kF64 = 6,  // not token ids: refused
  kF32 = 7,  // not token ids: refused
  kU16 = 8,
};

class MegatronIndexedDataset {
 public:
  // Opens PREFIX.idx and PREFIX.bin (the prefix as Megatron's --data-path takes it).
  explicit MegatronIndexedDataset(const std::string& prefix);

  const std::string& prefix() const { return prefix_; }
  const std::string& idx_path() const { return idx_->path(); }
  const std::string& bin_path() const { return bin_->path(); }
  MegatronDType dtype() const { return dtype_; }
  int token_bytes() const { return token_bytes_; }
  int64_t num_sequences() const { return num_sequences_; }
  int64_t num_documents() const { return num_documents_; }
  int64_t num_tokens() const { return num_tokens_; }

  int32_t sequence_length(int64_t s) const;
  int64_t sequence_pointer(int64_t s) const;  // bytes into the .bin
  int64_t document_index(int64_t d) const;    // d in [0, num_documents()]: first sequence of d
  // Position of document d's first token in the token stream (num_tokens() for d = D).
  int64_t document_start(int64_t d) const;

  // Writes tokens [first, first + count) of the stream as i32. An id outside [0, id_limit) is an
  // error naming the .bin and the token's position (id_limit: the model's vocabulary; at most
  // 2^31 applies, since the output is i32).
  void read_tokens(int64_t first, int64_t count, int64_t id_limit, int32_t* out) const;

 private:
  std::string prefix_;
  std::unique_ptr<MappedFile> idx_;
  std::unique_ptr<MappedFile> bin_;
  MegatronDType dtype_ = MegatronDType::kU16;
  int token_bytes_ = 2;
  int64_t num_sequences_ = 0;
  int64_t num_documents_ = 0;
  int64_t num_tokens_ = 0;
};

// "u16", "i32", ...: the NumPy-style name of a dtype, for logs.
const char* megatron_dtype_name(MegatronDType dtype);

// Megatron's rule for the id type: u16 below 65500 ids, else i32.
MegatronDType megatron_dtype_for_vocab(int64_t vocab_size);

// Writes PREFIX.bin and PREFIX.idx, one sequence per document (as Megatron's preprocess_data.py
// without --split-sentences), documents given by doc_offsets (D + 1 token offsets, 0 .. N).
// Each file is written beside its target (.tmp) and renamed, so a failed run never leaves a
// half-written dataset under the final names.
void write_megatron_indexed(const std::string& prefix, const std::vector<int32_t>& tokens,
                            const std::vector<uint64_t>& doc_offsets, MegatronDType dtype);

}  // namespace linea::data
