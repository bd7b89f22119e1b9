#include "core/checkpoint/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "core/util/check.h"

namespace linea::checkpoint {

static_assert(std::endian::native == std::endian::little,
              "safetensors buffers are little-endian; tensors are written as they lie in memory");

namespace {

constexpr size_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit

// Element sizes of every dtype the format defines (we read the headers of all of them).
size_t element_size(const std::string& dtype) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
  const auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

#define SAFETENSORS_CHECK(cond, path)                                                              \
  LINEA_USER_CHECK(cond, "the file is damaged or not safetensors; resume from another checkpoint") \
      << (path) << ": not a valid safetensors file: "

}  // namespace

const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF64:
      return "F64";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

std::string encode_safetensors(const std::vector<NamedTensor>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  size_t offset = 0;
  std::set<std::string> names;
  for (const NamedTensor& t : tensors) {
    LINEA_CHECK(t.name != "__metadata__" && names.insert(t.name).second)
        << "tensor name '" << t.name << "' is reserved or repeated";
    LINEA_CHECK(t.tensor.device().is_cpu()) << t.name << ": copy to the CPU before writing";
    header[t.name] = {{"dtype", safetensors_dtype(t.tensor.dtype())},
                      {"shape", t.tensor.shape()},
                      {"data_offsets", {offset, offset + t.tensor.nbytes()}}};
    offset += t.tensor.nbytes();
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the buffer starts 8-byte aligned
  std::string out(8, '\0');
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out.reserve(8 + text.size() + offset);
  out += text;
  for (const NamedTensor& t : tensors)
    out.append(static_cast<const char*>(t.tensor.raw()), t.tensor.nbytes());
  return out;
}

SafetensorsFile::SafetensorsFile(std::string bytes, std::string path)
    : bytes_(std::move(bytes)), path_(std::move(path)) {
  SAFETENSORS_CHECK(bytes_.size() >= 8, path_)
      << "truncated: " << bytes_.size() << " bytes, fewer than the 8-byte header length";
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<uint8_t>(bytes_[i])) << (8 * i);
  SAFETENSORS_CHECK(n <= kMaxHeaderBytes, path_) << "header length " << n << " is implausible";
  SAFETENSORS_CHECK(n <= bytes_.size() - 8, path_)
      << "truncated: the header claims " << n << " bytes but the file has " << bytes_.size();
  const std::string_view text(bytes_.data() + 8, n);
  SAFETENSORS_CHECK(n > 0 && text[0] == '{', path_) << "the header does not start with '{'";
  // Duplicate names are an error in the format; the JSON parser would keep the last silently.
  std::set<std::string> seen;
  bool duplicate = false;
  std::string duplicate_name;
  const auto on_event = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& key) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key &&
        !seen.insert(key.get<std::string>()).second) {
      duplicate = true;
      duplicate_name = key.get<std::string>();
    }
    return true;
  };
  const nlohmann::json header = nlohmann::json::parse(text, on_event, /*allow_exceptions=*/false);
  SAFETENSORS_CHECK(!header.is_discarded() && header.is_object(), path_)
      << "the header is not a JSON object";
  SAFETENSORS_CHECK(!duplicate, path_) << "tensor '" << duplicate_name << "' appears twice";
  buffer_start_ = 8 + n;
  const size_t buffer_size = bytes_.size() - buffer_start_;

  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      SAFETENSORS_CHECK(value.is_object(), path_) << "__metadata__ is not an object";
      for (const auto& [k, v] : value.items()) {
        SAFETENSORS_CHECK(v.is_string(), path_) << "__metadata__." << k << " is not a string";
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    SAFETENSORS_CHECK(value.is_object() && value.contains("dtype") && value["dtype"].is_string() &&
                          value.contains("shape") && value["shape"].is_array() &&
                          value.contains("data_offsets") && value["data_offsets"].is_array() &&
                          value["data_offsets"].size() == 2,
                      path_)
        << "tensor '" << name << "' lacks dtype, shape or data_offsets";
    Entry e;
    e.dtype = value["dtype"].get<std::string>();
    const size_t elem = element_size(e.dtype);
    SAFETENSORS_CHECK(elem > 0, path_) << "tensor '" << name << "' has unknown dtype " << e.dtype;
    uint64_t numel = 1;
    for (const auto& d : value["shape"]) {
      SAFETENSORS_CHECK(d.is_number_unsigned(), path_)
          << "tensor '" << name << "' has a shape entry that is not a non-negative integer";
      e.shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
    }
    for (const auto& o : value["data_offsets"])
      SAFETENSORS_CHECK(o.is_number_unsigned(), path_)
          << "tensor '" << name << "' has an offset that is not a non-negative integer";
    e.begin = value["data_offsets"][0].get<size_t>();
    e.end = value["data_offsets"][1].get<size_t>();
    SAFETENSORS_CHECK(e.begin <= e.end && e.end - e.begin == numel * elem, path_)
        << "tensor '" << name << "': data_offsets [" << e.begin << ", " << e.end << ") do not hold "
        << numel << " elements of " << e.dtype;
    entries_.emplace(name, std::move(e));
  }
  // The tensors must tile the buffer: sorted by offset, each starts where the previous ended.
  std::vector<std::pair<size_t, std::string>> order;
  for (const auto& [name, e] : entries_) order.emplace_back(e.begin, name);
  std::sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first
                              : entries_.at(a.second).end < entries_.at(b.second).end;
  });
  size_t covered = 0;
  for (const auto& [begin, name] : order) {
    SAFETENSORS_CHECK(begin == covered, path_)
        << "tensor '" << name << "' starts at byte " << begin << " of the buffer, expected "
        << covered << " (the tensors overlap or leave a hole)";
    covered = entries_.at(name).end;
  }
  SAFETENSORS_CHECK(covered <= buffer_size, path_)
      << "truncated: the tensors need " << covered << " bytes after the header, the file has "
      << buffer_size;
  SAFETENSORS_CHECK(covered == buffer_size, path_)
      << buffer_size - covered << " bytes after the last tensor";
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const auto it = entries_.find(name);
  LINEA_USER_CHECK(it != entries_.end(),
                   "the checkpoint is of another model or incomplete; check model.* settings")
      << path_ << ": no tensor named '" << name << "'";
  const Entry& e = it->second;
  DType dtype = DType::kF32;
  bool known = false;
  for (DType t : {DType::kF32, DType::kF64, DType::kBF16, DType::kI32, DType::kI64})
    if (e.dtype == safetensors_dtype(t)) dtype = t, known = true;
  LINEA_USER_CHECK(known, "convert the tensor to F32, F64, BF16, I32 or I64")
      << path_ << ": tensor '" << name << "' has dtype " << e.dtype
      << ", which Linea does not load";
  Tensor t = Tensor::empty(e.shape, dtype, Device::cpu());
  if (t.nbytes() > 0) std::memcpy(t.raw(), bytes_.data() + buffer_start_ + e.begin, t.nbytes());
  return t;
}

}  // namespace linea::checkpoint
