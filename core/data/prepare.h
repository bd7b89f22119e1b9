// `linea prepare-data`: turns raw text files into training data with the built-in byte tokenizer.
// Documents split at lines equal to `separator` (one document a file when it is empty); each is
// followed by the end-of-document id. Formats:
//   kTokenShard  one token-shard file (token_shard.h) at `output`;
//   kMegatron    Megatron indexed dataset `output`.bin + `output`.idx (megatron_indexed.h), one
//                sequence per document, u16 ids.
// Writes atomically; logs the number of documents and tokens written. Returns the process exit
// code (0); every failure throws linea::Error naming the file.
#pragma once

#include <string>
#include <vector>

namespace linea::data {

enum class PrepareFormat { kTokenShard, kMegatron };

// "token-shard" or "megatron"; anything else is an error naming --format.
PrepareFormat parse_prepare_format(const std::string& name);

int prepare_data(const std::vector<std::string>& inputs, const std::string& output,
                 const std::string& separator, PrepareFormat format = PrepareFormat::kTokenShard);

}  // namespace linea::data
