#include "core/data/megatron_indexed.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <system_error>

#include "core/data/file_replace.h"
#include "core/util/check.h"

namespace linea::data {
namespace {

// The .bin ids and the .idx arrays are read in place from the mapping.
static_assert(std::endian::native == std::endian::little,
              "Megatron indexed datasets are little-endian; this reader maps them in place");

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kVersion = 1;
// magic, version, dtype code, sequence count, document-index count.
constexpr uint64_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;
constexpr uint64_t kChunkTokens = uint64_t{1} << 20;

std::string rewrite_hint(const std::string& prefix) {
  return "rewrite " + prefix + ".bin and " + prefix +
         ".idx together (Megatron's tools/preprocess_data.py, or `linea prepare-data --format "
         "megatron --output " +
         prefix + " ...`), or point data.path / data.blend at a good prefix";
}

template <typename T>
T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Bytes per id, 0 for codes that are not integer token ids.
int integer_width(uint8_t code) {
  switch (static_cast<MegatronDType>(code)) {
    case MegatronDType::kU8:
    case MegatronDType::kI8:
      return 1;
    case MegatronDType::kI16:
    case MegatronDType::kU16:
      return 2;
    case MegatronDType::kI32:
      return 4;
    case MegatronDType::kI64:
      return 8;
    case MegatronDType::kF64:
    case MegatronDType::kF32:
      return 0;
  }
  return 0;
}

int64_t decode_id(MegatronDType dtype, const unsigned char* p) {
  switch (dtype) {
    case MegatronDType::kU8:
      return load<uint8_t>(p);
    case MegatronDType::kI8:
      return load<int8_t>(p);
    case MegatronDType::kI16:
      return load<int16_t>(p);
    case MegatronDType::kU16:
      return load<uint16_t>(p);
    case MegatronDType::kI32:
      return load<int32_t>(p);
    case MegatronDType::kI64:
      return load<int64_t>(p);
    case MegatronDType::kF64:
    case MegatronDType::kF32:
      break;
  }
  LINEA_CHECK(false) << "decode_id on a float dtype";
}

void put_bytes(std::string& out, const void* p, size_t n) {
  out.append(static_cast<const char*>(p), n);
}
template <typename T>
void put(std::string& out, T v) {
  put_bytes(out, &v, sizeof(T));
}

}  // namespace

MegatronIndexedDataset::MegatronIndexedDataset(const std::string& prefix) : prefix_(prefix) {
  const std::string hint = rewrite_hint(prefix);
  const std::string missing_hint =
      "data.path and data.blend take the prefix without .bin/.idx (as Megatron's --data-path); "
      "check it, or write the files with `linea prepare-data --format megatron`";
  idx_ = std::make_unique<MappedFile>(prefix + ".idx", "Megatron index file", missing_hint);
  const std::string& idx = idx_->path();
  const uint64_t idx_bytes = idx_->size();
  const unsigned char* h = idx_->data();

  LINEA_USER_CHECK(idx_bytes >= kHeaderBytes, hint.c_str())
      << idx << " is " << idx_bytes << " bytes, shorter than the " << kHeaderBytes
      << "-byte Megatron index header (truncated, or not a Megatron .idx file)";
  LINEA_USER_CHECK(std::memcmp(h, kMagic, sizeof(kMagic)) == 0, hint.c_str())
      << idx << " does not start with the Megatron index magic \"MMIDIDX\\x00\\x00\" (not a "
      << "Megatron MMapIndexedDataset .idx file, or corrupted)";
  const uint64_t version = load<uint64_t>(h + 9);
  LINEA_USER_CHECK(version == kVersion, hint.c_str())
      << idx << " is Megatron index version " << version << "; this build reads version "
      << kVersion;
  const uint8_t code = h[17];
  LINEA_USER_CHECK(code >= 1 && code <= 8, hint.c_str())
      << idx << " declares dtype code " << static_cast<int>(code)
      << ", which is not one of Megatron's codes 1..8 (corrupted)";
  token_bytes_ = integer_width(code);
  LINEA_USER_CHECK(token_bytes_ > 0,
                   "token ids must be integers; re-run the preprocessing with an integer dtype "
                   "(Megatron writes u16 below 65500 ids, else i32)")
      << idx << " declares dtype code " << static_cast<int>(code) << " ("
      << (code == 6 ? "float64" : "float32") << "): floating-point values are not token ids";
  dtype_ = static_cast<MegatronDType>(code);
  const uint64_t s = load<uint64_t>(h + 18);
  const uint64_t d1 = load<uint64_t>(h + 26);

  // Bound the counts by the file length before multiplying, so a corrupted header can neither
  // overflow the size computation nor send the checks below past the mapping.
  const uint64_t body = idx_bytes - kHeaderBytes;
  const bool counts_fit = s <= body / 12 && d1 <= (body - 12 * s) / 8;
  const uint64_t expected = counts_fit ? kHeaderBytes + 12 * s + 8 * d1 : 0;
  LINEA_USER_CHECK(!(counts_fit && expected + s == idx_bytes && s > 0),
                   "convert the dataset to a text-only one (without sequence modes)")
      << idx << " carries one extra byte per sequence after the document indices: a multimodal "
      << "index (sequence modes), which this reader does not support";
  LINEA_USER_CHECK(counts_fit && expected == idx_bytes, hint.c_str())
      << idx << " is " << idx_bytes << " bytes, but its header (" << s << " sequences, " << d1
      << " document indices) needs " << (counts_fit ? std::to_string(expected) : "more")
      << " (truncated or corrupted)";
  LINEA_USER_CHECK(d1 >= 1, hint.c_str())
      << idx << " has no document index (Megatron's indices start with 0; corrupted)";
  num_sequences_ = static_cast<int64_t>(s);
  num_documents_ = static_cast<int64_t>(d1) - 1;

  for (int64_t d = 0; d <= num_documents_; ++d) {
    const int64_t first = document_index(d);
    const int64_t prev = d == 0 ? 0 : document_index(d - 1);
    LINEA_USER_CHECK(first >= prev && first <= num_sequences_, hint.c_str())
        << idx << ": document index " << d << " is " << first << " (previous " << prev << ", "
        << num_sequences_ << " sequences): document indices must rise from 0 to the sequence "
        << "count (corrupted)";
  }
  LINEA_USER_CHECK(document_index(0) == 0 && document_index(num_documents_) == num_sequences_,
                   hint.c_str())
      << idx << ": document indices run from " << document_index(0) << " to "
      << document_index(num_documents_) << ", not from 0 to the sequence count " << num_sequences_
      << " (corrupted)";

  for (int64_t i = 0; i < num_sequences_; ++i) {
    const int32_t len = sequence_length(i);
    LINEA_USER_CHECK(len >= 0, hint.c_str())
        << idx << ": sequence " << i << " has length " << len << " (corrupted)";
    LINEA_USER_CHECK(num_tokens_ <= (int64_t{1} << 60) - len, hint.c_str())
        << idx << ": the sequence lengths add up past 2^60 tokens (corrupted)";
    num_tokens_ += len;
  }

  bin_ = std::make_unique<MappedFile>(prefix + ".bin", "Megatron data file", hint);
  const std::string& bin = bin_->path();
  const uint64_t bin_bytes = bin_->size();
  const uint64_t want = static_cast<uint64_t>(num_tokens_) * static_cast<uint64_t>(token_bytes_);
  LINEA_USER_CHECK(bin_bytes == want, hint.c_str())
      << bin << " is " << bin_bytes << " bytes, but " << idx << " describes " << num_tokens_
      << " tokens of " << token_bytes_ << " bytes = " << want << " bytes ("
      << (bin_bytes < want ? "the .bin is truncated" : "the .bin holds more than the index")
      << ", or the two files come from different runs)";

  // Sequences must lie back to back from byte 0, as Megatron's builder writes (and merges) them;
  // then token t of the stream is at byte t * width and reading needs no per-sequence table.
  uint64_t at = 0;
  for (int64_t i = 0; i < num_sequences_; ++i) {
    const int64_t ptr = sequence_pointer(i);
    const uint64_t len = static_cast<uint64_t>(sequence_length(i)) * token_bytes_;
    LINEA_USER_CHECK(ptr >= 0 && static_cast<uint64_t>(ptr) <= bin_bytes &&
                         len <= bin_bytes - static_cast<uint64_t>(ptr),
                     hint.c_str())
        << idx << ": sequence " << i << " points at bytes [" << ptr << ", " << ptr << " + " << len
        << "), past the end of " << bin << " (" << bin_bytes << " bytes; corrupted index)";
    LINEA_USER_CHECK(static_cast<uint64_t>(ptr) == at, hint.c_str())
        << idx << ": sequence " << i << " starts at byte " << ptr << " of " << bin
        << ", but the previous sequences end at byte " << at
        << "; this reader needs the sequences back to back, as Megatron's builder writes them";
    at += len;
  }
}

int32_t MegatronIndexedDataset::sequence_length(int64_t s) const {
  LINEA_CHECK(s >= 0 && s < num_sequences_) << "sequence " << s << " of " << num_sequences_;
  return load<int32_t>(idx_->data() + kHeaderBytes + 4 * static_cast<uint64_t>(s));
}

int64_t MegatronIndexedDataset::sequence_pointer(int64_t s) const {
  LINEA_CHECK(s >= 0 && s < num_sequences_) << "sequence " << s << " of " << num_sequences_;
  const uint64_t base = kHeaderBytes + 4 * static_cast<uint64_t>(num_sequences_);
  return load<int64_t>(idx_->data() + base + 8 * static_cast<uint64_t>(s));
}

int64_t MegatronIndexedDataset::document_index(int64_t d) const {
  LINEA_CHECK(d >= 0 && d <= num_documents_) << "document " << d << " of " << num_documents_;
  const uint64_t base = kHeaderBytes + 12 * static_cast<uint64_t>(num_sequences_);
  return load<int64_t>(idx_->data() + base + 8 * static_cast<uint64_t>(d));
}

int64_t MegatronIndexedDataset::document_start(int64_t d) const {
  const int64_t s = document_index(d);
  return s == num_sequences_ ? num_tokens_ : sequence_pointer(s) / token_bytes_;
}

void MegatronIndexedDataset::read_tokens(int64_t first, int64_t count, int64_t id_limit,
                                         int32_t* out) const {
  LINEA_CHECK(first >= 0 && count >= 0 && first + count <= num_tokens_)
      << "tokens [" << first << ", " << first + count << ") of " << num_tokens_ << " in "
      << bin_path();
  // The output is i32, so no limit above 2^31 applies.
  id_limit = std::min<int64_t>(id_limit, int64_t{std::numeric_limits<int32_t>::max()} + 1);
  const unsigned char* p = bin_->data() + static_cast<uint64_t>(first) * token_bytes_;
  for (int64_t i = 0; i < count; ++i, p += token_bytes_) {
    const int64_t id = decode_id(dtype_, p);
    LINEA_USER_CHECK(id >= 0 && id < id_limit,
                     "set model.vocab_size to the tokenizer's vocabulary size the data was "
                     "prepared with, or re-run the preprocessing")
        << bin_path() << ": token " << first + i << " has id " << id << ", outside [0, " << id_limit
        << ") (model.vocab_size)";
    out[i] = static_cast<int32_t>(id);
  }
}

const char* megatron_dtype_name(MegatronDType d) {
  switch (d) {
    case MegatronDType::kU8:
      return "u8";
    case MegatronDType::kI8:
      return "i8";
    case MegatronDType::kI16:
      return "i16";
    case MegatronDType::kI32:
      return "i32";
    case MegatronDType::kI64:
      return "i64";
    case MegatronDType::kU16:
      return "u16";
    case MegatronDType::kF64:
      return "f64";
    case MegatronDType::kF32:
      return "f32";
  }
  return "unknown";
}

MegatronDType megatron_dtype_for_vocab(int64_t vocab_size) {
  return vocab_size < 65500 ? MegatronDType::kU16 : MegatronDType::kI32;
}

void write_megatron_indexed(const std::string& prefix, const std::vector<int32_t>& tokens,
                            const std::vector<uint64_t>& doc_offsets, MegatronDType dtype) {
  LINEA_CHECK(dtype == MegatronDType::kU16 || dtype == MegatronDType::kI32)
      << "the Megatron writer writes u16 or i32 ids";
  const uint64_t n = tokens.size();
  LINEA_CHECK(!doc_offsets.empty() && doc_offsets.front() == 0 && doc_offsets.back() == n)
      << "document offsets for " << prefix << " must start at 0 and end at the token count " << n;
  const int64_t max_id = dtype == MegatronDType::kU16 ? 65535 : std::numeric_limits<int32_t>::max();
  for (uint64_t i = 0; i < n; ++i) {
    LINEA_CHECK(tokens[i] >= 0 && tokens[i] <= max_id)
        << "token " << i << " = " << tokens[i] << " does not fit the dtype of " << prefix << ".bin";
  }
  const uint64_t docs = doc_offsets.size() - 1;
  std::string idx_bytes(kMagic, sizeof(kMagic));
  put<uint64_t>(idx_bytes, kVersion);
  put<uint8_t>(idx_bytes, static_cast<uint8_t>(dtype));
  put<uint64_t>(idx_bytes, docs);      // one sequence per document
  put<uint64_t>(idx_bytes, docs + 1);  // document indices 0, 1, ..., docs
  const int width = dtype == MegatronDType::kU16 ? 2 : 4;
  for (uint64_t d = 0; d < docs; ++d) {
    const uint64_t len = doc_offsets[d + 1] - doc_offsets[d];
    LINEA_CHECK(doc_offsets[d] <= doc_offsets[d + 1] && len <= INT32_MAX)
        << "document " << d << " of " << prefix << " has offsets " << doc_offsets[d] << ", "
        << doc_offsets[d + 1];
    put<int32_t>(idx_bytes, static_cast<int32_t>(len));
  }
  for (uint64_t d = 0; d < docs; ++d) {
    put<int64_t>(idx_bytes, static_cast<int64_t>(doc_offsets[d] * width));
  }
  for (uint64_t d = 0; d <= docs; ++d) put<int64_t>(idx_bytes, static_cast<int64_t>(d));

  const std::filesystem::path target(prefix);
  if (target.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(target.parent_path(), ec);
    LINEA_USER_CHECK(!ec, "check that the output directory is writable")
        << "cannot create the directory of " << prefix << ".bin: " << ec.message();
  }
  const std::string bin_path = prefix + ".bin", idx_path = prefix + ".idx";
  const std::string bin_tmp =
      write_beside(bin_path, "Megatron dataset file", [&](std::ofstream& f) {
        std::string chunk;
        for (uint64_t begin = 0; begin < n; begin += kChunkTokens) {
          chunk.clear();
          for (uint64_t i = begin; i < std::min(n, begin + kChunkTokens); ++i) {
            if (width == 2) {
              put<uint16_t>(chunk, static_cast<uint16_t>(tokens[i]));
            } else {
              put<int32_t>(chunk, tokens[i]);
            }
          }
          f.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
        }
      });
  const std::string idx_tmp =
      write_beside(idx_path, "Megatron dataset file", [&](std::ofstream& f) {
        f.write(idx_bytes.data(), static_cast<std::streamsize>(idx_bytes.size()));
      });
  // The index last: a reader that sees the new index also sees the new data.
  replace_with(bin_tmp, bin_path);
  replace_with(idx_tmp, idx_path);
}

}  // namespace linea::data
