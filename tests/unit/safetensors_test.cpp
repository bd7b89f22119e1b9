// The safetensors writer and reader: a hand-made file parses per the format's rules, our files
// round-trip every dtype bit for bit and follow the rules (little-endian length, '{', space
// padding to 8 bytes, tensors tiling the buffer), and every malformed file is refused naming it.
#include "core/checkpoint/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/util/check.h"

namespace linea::checkpoint {
namespace {

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A file from a header text and a buffer, as the format describes it.
std::string file_of(const std::string& header, const std::string& buffer) {
  return le64(header.size()) + header + buffer;
}

// The error message of parsing `bytes`, or "" when it parses.
std::string parse_error(const std::string& bytes) {
  try {
    SafetensorsFile f(bytes, "dir/x.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, ParsesAHandMadeFile) {
  float a[3] = {1.5f, -2.0f, 3.25f};
  int64_t b = -7;
  std::string buffer(reinterpret_cast<const char*>(a), sizeof a);
  buffer.append(reinterpret_cast<const char*>(&b), sizeof b);
  // Entries in any order, metadata anywhere, trailing spaces allowed.
  const std::string header =
      R"({"b":{"dtype":"I64","shape":[],"data_offsets":[12,20]},"__metadata__":{"format":"pt"},)"
      R"("a":{"dtype":"F32","shape":[1,3],"data_offsets":[0,12]}}   )";
  const SafetensorsFile f(file_of(header, buffer), "hand.safetensors");
  ASSERT_EQ(f.entries().size(), 2u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const Tensor ta = f.tensor("a");
  EXPECT_EQ(ta.shape(), (Shape{1, 3}));
  EXPECT_EQ(ta.dtype(), DType::kF32);
  EXPECT_EQ(ta.data<float>()[2], 3.25f);
  const Tensor tb = f.tensor("b");
  EXPECT_EQ(tb.shape(), Shape{});
  EXPECT_EQ(tb.data<int64_t>()[0], -7);
  // Dtypes Linea has no tensors for still parse (the header is valid), but do not load.
  const SafetensorsFile u8(
      file_of(R"({"c":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "xy"), "u8.safetensors");
  EXPECT_THROW(u8.tensor("c"), Error);
  EXPECT_THROW(f.tensor("missing"), Error);
}

TEST(Safetensors, RoundTripsEveryDtypeAndFollowsTheRules) {
  std::vector<NamedTensor> ts = {
      {"layers.0.w", Tensor::from_vector({2, 3}, {1, -2, 3.5, 1e-7, 0, 6}, DType::kF32)},
      {"d", Tensor::from_vector({3}, {0.1, -1e300, 3}, DType::kF64)},
      {"h", Tensor::from_vector({2}, {1.0, -0.5}, DType::kBF16)},
      {"i", Tensor::from_vector({1}, {-3}, DType::kI32)},
      {"l", Tensor::from_vector({2, 1}, {5, 1e15}, DType::kI64)},
      {"empty", Tensor::zeros({0, 4}, DType::kF32, Device::cpu())}};
  const std::string bytes = encode_safetensors(ts, {{"format", "pt"}, {"step", "3"}});
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<uint8_t>(bytes[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u) << "the buffer starts 8-byte aligned";
  EXPECT_EQ(bytes[8], '{');
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.find_last_not_of(' '), header.find_last_of('}')) << "padded with spaces";

  const SafetensorsFile f(bytes, "rt.safetensors");
  EXPECT_EQ(f.metadata().at("step"), "3");
  for (const NamedTensor& t : ts) {
    const Tensor back = f.tensor(t.name);
    EXPECT_EQ(back.dtype(), t.tensor.dtype()) << t.name;
    EXPECT_EQ(back.shape(), t.tensor.shape()) << t.name;
    ASSERT_EQ(back.nbytes(), t.tensor.nbytes());
    if (back.nbytes()) {
      EXPECT_EQ(std::memcmp(back.raw(), t.tensor.raw(), back.nbytes()), 0) << t.name;
    }
  }
  EXPECT_EQ(f.entries().at("h").dtype, "BF16");
  EXPECT_EQ(f.entries().at("l").dtype, "I64");
}

TEST(Safetensors, RefusesMalformedFilesNamingThem) {
  const std::string good_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string buffer(8, '\1');
  ASSERT_EQ(parse_error(file_of(good_header, buffer)), "");

  const auto expect_refused = [](const std::string& bytes, const std::string& what) {
    const std::string e = parse_error(bytes);
    EXPECT_NE(e.find("dir/x.safetensors"), std::string::npos) << e;
    EXPECT_NE(e.find(what), std::string::npos) << "expected '" << what << "' in: " << e;
  };
  const std::string whole = file_of(good_header, buffer);
  expect_refused(whole.substr(0, whole.size() - 1), "truncated");
  expect_refused(whole.substr(0, 5), "truncated");
  expect_refused(whole.substr(0, 20), "truncated");  // the header itself is cut
  expect_refused(whole + "x", "bytes after the last tensor");
  expect_refused(file_of(" " + good_header, buffer), "does not start with '{'");
  expect_refused(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                         buffer),
                 "appears twice");
  expect_refused(file_of(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", buffer),
                 "do not hold");
  expect_refused(file_of(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", buffer),
                 "unknown dtype");
  expect_refused(file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                         std::string(12, '\0')),
                 "hole");
  expect_refused(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                         buffer),
                 "overlap");
  expect_refused(file_of(R"({"a":{"dtype":"F32","shape":[2]}})", buffer), "lacks");
  expect_refused(file_of(R"({"a": nonsense})", buffer), "not a JSON object");
  expect_refused(le64(1ull << 40) + good_header, "implausible");
}

}  // namespace
}  // namespace linea::checkpoint
