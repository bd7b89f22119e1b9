#include "core/data/token_shard.h"

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>
#include <system_error>

#include "core/data/file_replace.h"
#include "core/data/tokenizer.h"
#include "core/util/check.h"

namespace linea::data {
namespace {

constexpr char kMagic[8] = {'L', 'I', 'N', 'E', 'A', 'T', 'O', 'K'};
constexpr uint32_t kVersion = 1;
// magic, version, token width, vocabulary, reserved, N, D.
constexpr uint64_t kHeaderBytes = 8 + 4 * 4 + 8 + 8;
// Tokens are converted in chunks so a large shard never needs a second full-size byte buffer.
constexpr uint64_t kTokenChunk = uint64_t{1} << 20;

std::string rewrite_hint(const std::string& path) {
  return "re-run `linea prepare-data` to rewrite " + path + " (or point data.path at a good file)";
}

// Explicit little-endian encoding, so files move between machines whatever the host order.
void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t get_u32(const unsigned char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t get_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

uint32_t token_width(int32_t vocab_size) { return vocab_size <= 65536 ? 2u : 4u; }

void write_all(std::ofstream& f, const std::string& bytes) {
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

void write_token_shard(const std::string& path, const TokenShard& shard) {
  const uint64_t n = shard.tokens.size();
  LINEA_CHECK(shard.vocab_size > 0)
      << "token shard for " << path << " has vocabulary size " << shard.vocab_size;
  LINEA_CHECK(!shard.doc_offsets.empty() && shard.doc_offsets.front() == 0 &&
              shard.doc_offsets.back() == n)
      << "document offsets for " << path << " must start at 0 and end at the token count " << n;
  for (size_t d = 1; d < shard.doc_offsets.size(); ++d) {
    LINEA_CHECK(shard.doc_offsets[d - 1] <= shard.doc_offsets[d])
        << "document offsets for " << path << " decrease at document " << d;
  }
  for (uint64_t i = 0; i < n; ++i) {
    LINEA_CHECK(shard.tokens[i] >= 0 && shard.tokens[i] < shard.vocab_size)
        << "token " << i << " = " << shard.tokens[i] << " for " << path
        << " is outside the vocabulary of " << shard.vocab_size;
  }

  const uint32_t width = token_width(shard.vocab_size);
  const std::filesystem::path target(path);
  if (target.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(target.parent_path(), ec);
    LINEA_USER_CHECK(!ec, "check that the output directory is writable")
        << "cannot create the directory of " << path << ": " << ec.message();
  }
  // Written beside the final name, then renamed over it (file_replace.h).
  const std::string tmp = write_beside(path, "token shard", [&](std::ofstream& f) {
    std::string header(kMagic, sizeof(kMagic));
    put_u32(header, kVersion);
    put_u32(header, width);
    put_u32(header, static_cast<uint32_t>(shard.vocab_size));
    put_u32(header, 0);
    put_u64(header, n);
    put_u64(header, static_cast<uint64_t>(shard.num_docs()));
    for (uint64_t off : shard.doc_offsets) put_u64(header, off);
    write_all(f, header);

    std::string chunk;
    for (uint64_t begin = 0; begin < n; begin += kTokenChunk) {
      const uint64_t end = std::min(n, begin + kTokenChunk);
      chunk.clear();
      for (uint64_t i = begin; i < end; ++i) {
        const auto id = static_cast<uint32_t>(shard.tokens[i]);
        chunk.push_back(static_cast<char>(id & 0xff));
        chunk.push_back(static_cast<char>((id >> 8) & 0xff));
        if (width == 4) {
          chunk.push_back(static_cast<char>((id >> 16) & 0xff));
          chunk.push_back(static_cast<char>((id >> 24) & 0xff));
        }
      }
      write_all(f, chunk);
    }
  });
  replace_with(tmp, path);
}

TokenShard read_token_shard(const std::string& path) {
  const std::string hint = rewrite_hint(path);
  std::error_code ec;
  const uint64_t file_bytes = std::filesystem::file_size(path, ec);
  LINEA_USER_CHECK(!ec,
                   "check data.path, or run launch/setup.sh / `linea prepare-data` to create it")
      << "cannot read token shard " << path << ": " << ec.message();
  std::ifstream f(path, std::ios::binary);
  LINEA_USER_CHECK(f.is_open(), "check the file's permissions")
      << "cannot open token shard " << path;

  LINEA_USER_CHECK(file_bytes >= kHeaderBytes, hint.c_str())
      << path << " is " << file_bytes << " bytes, shorter than the " << kHeaderBytes
      << "-byte token-shard header (truncated, or not a token shard)";
  std::array<unsigned char, kHeaderBytes> h{};
  f.read(reinterpret_cast<char*>(h.data()), kHeaderBytes);
  LINEA_USER_CHECK(f.good(), hint.c_str()) << "cannot read the header of " << path;

  LINEA_USER_CHECK(std::memcmp(h.data(), kMagic, sizeof(kMagic)) == 0, hint.c_str())
      << path << " does not start with the token-shard magic \"LINEATOK\" (not a token shard)";
  const uint32_t version = get_u32(h.data() + 8);
  LINEA_USER_CHECK(version == kVersion, hint.c_str())
      << path << " is token-shard version " << version << "; this build reads version " << kVersion;
  const uint32_t width = get_u32(h.data() + 12);
  LINEA_USER_CHECK(width == 2 || width == 4, hint.c_str())
      << path << " declares " << width << " bytes per token; only 2 and 4 are valid";
  const uint32_t vocab = get_u32(h.data() + 16);
  LINEA_USER_CHECK(vocab > 0 && vocab <= static_cast<uint32_t>(INT32_MAX), hint.c_str())
      << path << " declares vocabulary size " << vocab;
  LINEA_USER_CHECK(width == 4 || vocab <= 65536, hint.c_str())
      << path << " declares vocabulary size " << vocab << " with 2-byte tokens";
  const uint64_t n = get_u64(h.data() + 24);
  const uint64_t docs = get_u64(h.data() + 32);

  // Bound the counts by the file length before multiplying, so a corrupted header cannot
  // overflow the size computation or trigger a huge allocation.
  const uint64_t body = file_bytes - kHeaderBytes;
  const bool counts_fit = docs < body / 8 && n <= (body - 8 * (docs + 1)) / width;
  const uint64_t expected =
      counts_fit ? kHeaderBytes + 8 * (docs + 1) + static_cast<uint64_t>(width) * n : 0;
  LINEA_USER_CHECK(counts_fit && expected == file_bytes, hint.c_str())
      << path << " is " << file_bytes << " bytes, but its header (" << n << " tokens of " << width
      << " bytes, " << docs << " documents) needs "
      << (counts_fit ? std::to_string(expected) : std::string("more"))
      << " (truncated or corrupted)";

  TokenShard shard;
  shard.vocab_size = static_cast<int32_t>(vocab);
  shard.doc_offsets.resize(docs + 1);
  {
    std::vector<unsigned char> raw(8 * (docs + 1));
    f.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
    LINEA_USER_CHECK(f.good(), hint.c_str()) << "cannot read the document offsets of " << path;
    for (uint64_t d = 0; d <= docs; ++d) shard.doc_offsets[d] = get_u64(raw.data() + 8 * d);
  }
  LINEA_USER_CHECK(shard.doc_offsets.front() == 0, hint.c_str())
      << path << ": the first document offset is " << shard.doc_offsets.front() << ", not 0";
  for (uint64_t d = 1; d <= docs; ++d) {
    LINEA_USER_CHECK(shard.doc_offsets[d - 1] <= shard.doc_offsets[d], hint.c_str())
        << path << ": document offsets decrease at document " << d << " ("
        << shard.doc_offsets[d - 1] << " then " << shard.doc_offsets[d] << ")";
  }
  LINEA_USER_CHECK(shard.doc_offsets.back() == n, hint.c_str())
      << path << ": the last document offset is " << shard.doc_offsets.back()
      << ", but the file holds " << n << " tokens";

  shard.tokens.resize(n);
  std::vector<unsigned char> raw;
  for (uint64_t begin = 0; begin < n; begin += kTokenChunk) {
    const uint64_t end = std::min(n, begin + kTokenChunk);
    raw.resize((end - begin) * width);
    f.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
    LINEA_USER_CHECK(f.good(), hint.c_str()) << "cannot read the tokens of " << path;
    for (uint64_t i = begin; i < end; ++i) {
      const unsigned char* p = raw.data() + (i - begin) * width;
      const uint32_t id = width == 2 ? static_cast<uint32_t>(p[0] | (p[1] << 8)) : get_u32(p);
      LINEA_USER_CHECK(id < vocab, hint.c_str())
          << path << ": token " << i << " has id " << id << ", outside the vocabulary of " << vocab;
      shard.tokens[i] = static_cast<int32_t>(id);
    }
  }
  return shard;
}

TokenShard tokenize_text_files(const std::vector<std::string>& paths,
                               const std::string& separator) {
  LINEA_USER_CHECK(separator.find('\n') == std::string::npos,
                   "the separator is compared with whole lines; pass a single line such as '%'")
      << "document separator contains a newline";
  const ByteTokenizer tokenizer;
  TokenShard shard;
  shard.vocab_size = ByteTokenizer::kVocabSize;
  shard.doc_offsets.push_back(0);
  // Closes the document begun at doc_offsets.back(); empty ones are dropped, since an
  // end-of-document id alone teaches nothing and would skew document counts.
  auto end_document = [&shard]() {
    if (shard.tokens.size() == shard.doc_offsets.back()) return;
    shard.tokens.push_back(ByteTokenizer::kEndOfDocument);
    shard.doc_offsets.push_back(shard.tokens.size());
  };

  for (const std::string& path : paths) {
    std::error_code ec;
    LINEA_USER_CHECK(std::filesystem::is_regular_file(path, ec),
                     "check the input paths of `linea prepare-data`")
        << "input text file " << path << " does not exist or is not a regular file";
    std::ifstream f(path, std::ios::binary);
    LINEA_USER_CHECK(f.is_open(), "check the file's permissions")
        << "cannot open input text file " << path;
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    LINEA_USER_CHECK(!f.bad(), "check the file's permissions and the disk")
        << "reading input text file " << path << " failed";

    if (separator.empty()) {
      const std::vector<int32_t> ids = tokenizer.encode(text);
      shard.tokens.insert(shard.tokens.end(), ids.begin(), ids.end());
      end_document();
      continue;
    }
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t nl = text.find('\n', pos);
      const size_t next = nl == std::string::npos ? text.size() : nl + 1;
      std::string_view line(text.data() + pos, (nl == std::string::npos ? text.size() : nl) - pos);
      // Files edited on Windows end lines with "\r\n"; their separator lines must still count.
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line == separator) {
        end_document();
      } else {
        const std::vector<int32_t> ids =
            tokenizer.encode(std::string_view(text.data() + pos, next - pos));
        shard.tokens.insert(shard.tokens.end(), ids.begin(), ids.end());
      }
      pos = next;
    }
    // A document never spans two files, even when the last one lacks a closing separator.
    end_document();
  }
  return shard;
}

}  // namespace linea::data
