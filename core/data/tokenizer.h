// The built-in byte-level tokenizer: ids 0..255 are bytes, 256 marks the end of a document.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace linea::data {

class ByteTokenizer {
 public:
  static constexpr int32_t kEndOfDocument = 256;
  static constexpr int32_t kVocabSize = 257;
  std::vector<int32_t> encode(std::string_view text) const;
  // End-of-document ids become "\n<|eod|>\n"; ids outside the vocabulary are an error.
  std::string decode(const std::vector<int32_t>& ids) const;
};

}  // namespace linea::data
