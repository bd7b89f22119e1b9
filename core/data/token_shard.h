// The token-shard file written by `linea prepare-data`: self-describing, checked on read.
//
// Layout (little-endian):
//   char[8]  magic "LINEATOK"
//   u32      version (1)
//   u32      bytes per token (2 or 4)
//   u32      vocabulary size
//   u32      reserved (0)
//   u64      number of tokens N
//   u64      number of documents D
//   u64[D+1] document start offsets (in tokens; offsets[0] = 0, offsets[D] = N)
//   token[N] token ids (u16 or u32)
// Readers check the magic, version, sizes against the file length, offsets monotone, and every
// id < vocabulary size, and name the file in every error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace linea::data {

struct TokenShard {
  int32_t vocab_size = 0;
  std::vector<int32_t> tokens;
  std::vector<uint64_t> doc_offsets;  // D + 1 entries
  int64_t num_docs() const { return static_cast<int64_t>(doc_offsets.size()) - 1; }
};

void write_token_shard(const std::string& path, const TokenShard& shard);
TokenShard read_token_shard(const std::string& path);

// Splits text files into documents (at lines that equal `separator` exactly, or one document per
// file when separator is empty), tokenizes them with the byte tokenizer (each document followed
// by the end-of-document id) and returns the shard. Errors name the file.
TokenShard tokenize_text_files(const std::vector<std::string>& paths, const std::string& separator);

}  // namespace linea::data
