#include "core/data/tokenizer.h"

#include "core/util/check.h"

namespace linea::data {

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  // Through unsigned char: plain char is signed on x86, and bytes >= 0x80 (UTF-8) must map to
  // 128..255, not to negative ids.
  for (char c : text) ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)));
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    LINEA_USER_CHECK(
        id >= 0 && id < kVocabSize,
        "byte-tokenizer ids are 0..256; was the model trained with another vocabulary?")
        << "id " << id << " at position " << i << " is outside the byte vocabulary (" << kVocabSize
        << " ids)";
    if (id == kEndOfDocument) {
      text += "\n<|eod|>\n";
    } else {
      text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    }
  }
  return text;
}

}  // namespace linea::data
