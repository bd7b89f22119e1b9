// `linea prepare-data`: turns raw text files into one token-shard file (token_shard.h) with the
// built-in byte tokenizer. Documents split at lines equal to `separator` (one document a file
// when it is empty). Writes atomically; logs the number of documents and tokens written.
// Returns the process exit code (0); every failure throws linea::Error naming the file.
#pragma once

#include <string>
#include <vector>

namespace linea::data {

int prepare_data(const std::vector<std::string>& inputs, const std::string& output,
                 const std::string& separator);

}  // namespace linea::data
