// data.source MEGATRON: the indexed-dataset reader against files written here from the published
// layout (not with Linea's writer), the writer of `linea prepare-data --format megatron`, the
// corruption checks, the blend, the split and the DP-independence of the sample stream.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/data/blend.h"
#include "core/data/dataset.h"
#include "core/data/megatron_indexed.h"
#include "core/data/prepare.h"
#include "core/data/token_shard.h"
#include "core/data/tokenizer.h"
#include "unit/test_files.h"

namespace linea::data {
namespace {

namespace fs = std::filesystem;
using testing_files::expect_error;
using testing_files::read_file;
using testing_files::test_dir;
using testing_files::write_file;

// ---- an independent writer, from the published layout ---------------------------------------

// Little-endian integers of `bytes` bytes, pushed one byte at a time.
void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

int width_of_code(int code) {
  switch (code) {
    case 1:
    case 2:
      return 1;
    case 3:
    case 8:
      return 2;
    case 4:
      return 4;
    default:
      return 8;
  }
}

// documents[d] = its sequences; writes PREFIX.bin / PREFIX.idx as Megatron's
// IndexedDatasetBuilder would: ids back to back, then the index header and its three arrays.
void write_reference(const std::string& prefix,
                     const std::vector<std::vector<std::vector<int64_t>>>& documents, int code) {
  const int width = width_of_code(code);
  std::string bin;
  std::vector<int32_t> lengths;
  std::vector<int64_t> pointers, doc_index{0};
  for (const auto& doc : documents) {
    for (const auto& seq : doc) {
      pointers.push_back(static_cast<int64_t>(bin.size()));
      lengths.push_back(static_cast<int32_t>(seq.size()));
      for (int64_t id : seq) put_le(bin, static_cast<uint64_t>(id), width);
    }
    doc_index.push_back(static_cast<int64_t>(lengths.size()));
  }
  std::string idx("MMIDIDX\0\0", 9);
  put_le(idx, 1, 8);
  put_le(idx, static_cast<uint64_t>(code), 1);
  put_le(idx, lengths.size(), 8);
  put_le(idx, doc_index.size(), 8);
  for (int32_t len : lengths) put_le(idx, static_cast<uint32_t>(len), 4);
  for (int64_t p : pointers) put_le(idx, static_cast<uint64_t>(p), 8);
  for (int64_t d : doc_index) put_le(idx, static_cast<uint64_t>(d), 8);
  write_file(prefix + ".bin", bin);
  write_file(prefix + ".idx", idx);
}

// `docs` documents of one sequence each, `len` tokens, ids counting up from `first` so every
// window is recognisable.
std::vector<std::vector<std::vector<int64_t>>> counting_docs(int docs, int len, int64_t first) {
  std::vector<std::vector<std::vector<int64_t>>> out;
  int64_t id = first;
  for (int d = 0; d < docs; ++d) {
    std::vector<int64_t> seq;
    for (int i = 0; i < len; ++i) seq.push_back(id++);
    out.push_back({seq});
  }
  return out;
}

config::Config megatron_config(const std::string& prefix, int seq_len, int32_t vocab) {
  config::Config cfg;
  cfg.mutable_model()->set_vocab_size(vocab);
  cfg.mutable_data()->set_source(config::DataConfig::MEGATRON);
  cfg.mutable_data()->set_path(prefix);
  cfg.mutable_data()->set_seq_len(seq_len);
  return cfg;
}

void add_blend(config::Config* cfg, double weight, const std::string& prefix) {
  auto* e = cfg->mutable_data()->add_blend();
  e->set_weight(weight);
  e->set_prefix(prefix);
}

std::vector<int32_t> row(const Dataset& ds, int64_t g, std::vector<int32_t>* targets = nullptr) {
  std::vector<int32_t> in(ds.seq_len()), tg(ds.seq_len());
  ds.sample(g, in.data(), tg.data());
  if (targets) *targets = tg;
  return in;
}

std::vector<int32_t> stream_of(const MegatronIndexedDataset& f) {
  std::vector<int32_t> out(static_cast<size_t>(f.num_tokens()));
  f.read_tokens(0, f.num_tokens(), std::numeric_limits<int64_t>::max(), out.data());
  return out;
}

// ---- reader ----------------------------------------------------------------------------------

TEST(MegatronIndexed, ReadsTheReferenceLayoutForEveryIntegerDtype) {
  const std::string dir = test_dir();
  // Document 1 has three sequences (as with Megatron's --split-sentences), document 2 an empty one.
  const std::vector<std::vector<std::vector<int64_t>>> docs = {
      {{5, 6, 7}}, {{1}, {2, 3}, {4}}, {{}}, {{9, 8, 100}}};
  const std::vector<int32_t> stream = {5, 6, 7, 1, 2, 3, 4, 9, 8, 100};
  for (int code : {1, 2, 3, 4, 5, 8}) {
    SCOPED_TRACE("dtype code " + std::to_string(code));
    const std::string prefix = dir + "/ref" + std::to_string(code);
    write_reference(prefix, docs, code);
    const MegatronIndexedDataset f(prefix);
    EXPECT_EQ(static_cast<int>(f.dtype()), code);
    EXPECT_EQ(f.token_bytes(), width_of_code(code));
    EXPECT_EQ(f.num_sequences(), 6);
    EXPECT_EQ(f.num_documents(), 4);
    EXPECT_EQ(f.num_tokens(), 10);
    EXPECT_EQ(f.sequence_length(2), 2);
    EXPECT_EQ(f.sequence_pointer(2), 4 * width_of_code(code));
    EXPECT_EQ(f.document_index(2), 4);
    EXPECT_EQ(f.document_start(1), 3);
    EXPECT_EQ(f.document_start(2), 7);
    EXPECT_EQ(f.document_start(3), 7);
    EXPECT_EQ(f.document_start(4), 10);
    EXPECT_EQ(stream_of(f), stream);
    EXPECT_EQ(f.bin_path(), prefix + ".bin");
  }
}

TEST(MegatronIndexed, WideAndSignedIdsDecode) {
  const std::string prefix = test_dir() + "/wide";
  write_reference(prefix, {{{70000, 2147483647}}}, 4);
  EXPECT_EQ(stream_of(MegatronIndexedDataset(prefix)), (std::vector<int32_t>{70000, 2147483647}));
  write_reference(prefix, {{{1, int64_t{1} << 31}}}, 5);  // i64 beyond what an i32 id can hold
  const MegatronIndexedDataset i64(prefix);
  std::vector<int32_t> two(2);
  expect_error([&] { i64.read_tokens(0, 2, std::numeric_limits<int64_t>::max(), two.data()); },
               {prefix + ".bin", "token 1 has id 2147483648"});
  write_reference(prefix, {{{3, 40000}}}, 3);  // i16: 40000 reads as a negative id
  const MegatronIndexedDataset i16(prefix);
  std::vector<int32_t> out(2);
  expect_error([&] { i16.read_tokens(0, 2, 1 << 20, out.data()); },
               {prefix + ".bin", "token 1 has id -25536", "model.vocab_size"});
}

TEST(MegatronIndexed, PrepareDataWritesWhatTheReferenceWriterWrites) {
  const std::string dir = test_dir();
  write_file(dir + "/text", "alpha\n%\nbeta\n%\n\xc3\xa9\n");
  const std::string prefix = dir + "/out/corpus";
  EXPECT_EQ(prepare_data({dir + "/text"}, prefix, "%", PrepareFormat::kMegatron), 0);
  EXPECT_FALSE(fs::exists(prefix + ".bin.tmp"));
  EXPECT_FALSE(fs::exists(prefix + ".idx.tmp"));

  // The same documents through the reference writer give the same bytes.
  const TokenShard shard = tokenize_text_files({dir + "/text"}, "%");
  std::vector<std::vector<std::vector<int64_t>>> docs;
  for (int64_t d = 0; d < shard.num_docs(); ++d) {
    docs.push_back({std::vector<int64_t>(shard.tokens.begin() + shard.doc_offsets[d],
                                         shard.tokens.begin() + shard.doc_offsets[d + 1])});
  }
  write_reference(dir + "/ref", docs, 8);
  EXPECT_EQ(read_file(prefix + ".bin"), read_file(dir + "/ref.bin"));
  EXPECT_EQ(read_file(prefix + ".idx"), read_file(dir + "/ref.idx"));

  const MegatronIndexedDataset f(prefix);
  EXPECT_EQ(f.dtype(), MegatronDType::kU16);
  EXPECT_EQ(f.num_documents(), 3);
  EXPECT_EQ(f.num_sequences(), 3);
  EXPECT_EQ(fs::file_size(prefix + ".idx"), 34u + 12u * 3u + 8u * 4u);
  EXPECT_EQ(fs::file_size(prefix + ".bin"), 2u * shard.tokens.size());
  const std::vector<int32_t> stream = stream_of(f);
  EXPECT_EQ(stream, shard.tokens);
  EXPECT_EQ(stream[f.document_start(1) - 1], ByteTokenizer::kEndOfDocument);
  EXPECT_EQ(ByteTokenizer().decode(stream),
            "alpha\n\n<|eod|>\nbeta\n\n<|eod|>\n\xc3\xa9\n\n<|eod|>\n");
}

TEST(MegatronIndexed, WriterUsesI32ForLargeVocabularies) {
  EXPECT_EQ(megatron_dtype_for_vocab(257), MegatronDType::kU16);
  EXPECT_EQ(megatron_dtype_for_vocab(65499), MegatronDType::kU16);
  EXPECT_EQ(megatron_dtype_for_vocab(65500), MegatronDType::kI32);
  const std::string prefix = test_dir() + "/big";
  write_megatron_indexed(prefix, {1, 100000, 7}, {0, 2, 3}, MegatronDType::kI32);
  const MegatronIndexedDataset f(prefix);
  EXPECT_EQ(f.dtype(), MegatronDType::kI32);
  EXPECT_EQ(stream_of(f), (std::vector<int32_t>{1, 100000, 7}));
  EXPECT_EQ(f.document_start(1), 2);
}

TEST(MegatronIndexed, PrepareDataRejectsAnExtensionAndUnknownFormats) {
  const std::string dir = test_dir();
  write_file(dir + "/text", "x\n");
  expect_error([&] { prepare_data({dir + "/text"}, dir + "/c.bin", "", PrepareFormat::kMegatron); },
               {"c.bin", "prefix without the extension"});
  expect_error([] { parse_prepare_format("megatorn"); }, {"--format", "megatorn"});
  EXPECT_EQ(parse_prepare_format("megatron"), PrepareFormat::kMegatron);
  EXPECT_EQ(parse_prepare_format("token-shard"), PrepareFormat::kTokenShard);
}

// ---- corrupted and truncated files -----------------------------------------------------------

class MegatronCorruption : public testing::Test {
 protected:
  void SetUp() override {
    prefix_ = test_dir() + "/corpus";
    write_reference(prefix_, counting_docs(3, 4, 0), 8);  // 3 sequences, 4 document indices
    idx_ = read_file(prefix_ + ".idx");
    bin_ = read_file(prefix_ + ".bin");
  }
  // Writes the (edited) files back and expects opening to fail naming `file` and every part.
  void expect_open_error(const std::string& file, std::vector<std::string> parts) {
    write_file(prefix_ + ".idx", idx_);
    write_file(prefix_ + ".bin", bin_);
    parts.push_back(file);
    parts.push_back("hint:");
    expect_error([&] { MegatronIndexedDataset f(prefix_); }, parts);
  }
  void set_u64(size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) idx_[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
  }
  static constexpr size_t kPointers = 34 + 4 * 3;
  static constexpr size_t kDocIndex = 34 + 12 * 3;
  std::string prefix_, idx_, bin_;
};

TEST_F(MegatronCorruption, TruncatedBinNamesTheBinAndBothSizes) {
  bin_.resize(bin_.size() - 3);
  expect_open_error(prefix_ + ".bin", {"21 bytes", "24 bytes", "truncated", prefix_ + ".idx"});
}

TEST_F(MegatronCorruption, BinLongerThanTheIndexSays) {
  bin_ += "xx";
  expect_open_error(prefix_ + ".bin", {"26 bytes", "24 bytes", "different runs"});
}

TEST_F(MegatronCorruption, WrongMagic) {
  idx_[0] = 'X';
  expect_open_error(prefix_ + ".idx", {"magic", "MMIDIDX"});
}

TEST_F(MegatronCorruption, WrongVersion) {
  set_u64(9, 2);
  expect_open_error(prefix_ + ".idx", {"version 2"});
}

TEST_F(MegatronCorruption, UnknownDtypeCode) {
  idx_[17] = 9;
  expect_open_error(prefix_ + ".idx", {"dtype code 9"});
}

TEST_F(MegatronCorruption, FloatDtypeCodes) {
  idx_[17] = 6;
  expect_open_error(prefix_ + ".idx", {"dtype code 6", "float64", "not token ids"});
  idx_[17] = 7;
  expect_open_error(prefix_ + ".idx", {"dtype code 7", "float32"});
}

TEST_F(MegatronCorruption, PointerPastTheEnd) {
  set_u64(kPointers + 8 * 2, 1000);
  expect_open_error(prefix_ + ".idx", {"sequence 2", "past the end", prefix_ + ".bin"});
}

TEST_F(MegatronCorruption, PointersThatAreNotBackToBack) {
  set_u64(kPointers + 8 * 1, 2);
  expect_open_error(prefix_ + ".idx", {"sequence 1 starts at byte 2", "back to back"});
}

TEST_F(MegatronCorruption, DocumentIndicesThatDecrease) {
  set_u64(kDocIndex + 8 * 2, 0);
  expect_open_error(prefix_ + ".idx", {"document index 2", "rise"});
}

TEST_F(MegatronCorruption, DocumentIndicesNotEndingAtTheSequenceCount) {
  set_u64(kDocIndex + 8 * 3, 2);
  expect_open_error(prefix_ + ".idx", {"not from 0 to the sequence count 3"});
}

TEST_F(MegatronCorruption, TruncatedIndex) {
  idx_.pop_back();
  expect_open_error(prefix_ + ".idx", {"truncated"});
  idx_.resize(20);
  expect_open_error(prefix_ + ".idx", {"header"});
}

TEST_F(MegatronCorruption, CountsTooLargeForTheFile) {
  set_u64(18, uint64_t{1} << 62);  // a sequence count that would overflow a naive size check
  expect_open_error(prefix_ + ".idx", {"needs more"});
}

TEST_F(MegatronCorruption, NegativeSequenceLength) {
  for (int i = 0; i < 4; ++i) idx_[34 + 4 + i] = static_cast<char>(0xff);
  expect_open_error(prefix_ + ".idx", {"sequence 1 has length -1"});
}

TEST_F(MegatronCorruption, MultimodalIndexIsNamed) {
  idx_ += std::string(3, '\0');
  expect_open_error(prefix_ + ".idx", {"multimodal"});
}

TEST_F(MegatronCorruption, MissingFilesAreNamed) {
  fs::remove(prefix_ + ".bin");
  expect_error([&] { MegatronIndexedDataset f(prefix_); }, {prefix_ + ".bin", "cannot open"});
  expect_error([&] { MegatronIndexedDataset f(prefix_ + "x"); },
               {prefix_ + "x.idx", "without .bin/.idx"});
}

// ---- the dataset -----------------------------------------------------------------------------

class MegatronData : public testing::Test {
 protected:
  static constexpr int32_t kVocab = 5000;
  static constexpr int kSeqLen = 8;
  void SetUp() override {
    dir_ = test_dir();
    // 10 documents of 20 tokens, ids 0..199; dataset b has ids 1000..1399 in 20 documents.
    write_reference(dir_ + "/a", counting_docs(10, 20, 0), 8);
    write_reference(dir_ + "/b", counting_docs(20, 20, 1000), 4);
  }
  config::Config cfg() const { return megatron_config(dir_ + "/a", kSeqLen, kVocab); }
  std::string dir_;
};

TEST_F(MegatronData, EveryWindowOnceAnEpochTargetsShiftedAndDeterministic) {
  auto ds = make_dataset(cfg());
  auto again = make_dataset(cfg());
  const int64_t windows = (200 - 1) / kSeqLen;  // stride seq_len, windows of seq_len + 1 tokens
  ASSERT_EQ(ds->samples_per_epoch(), windows);
  EXPECT_EQ(ds->vocab_size(), kVocab);
  std::set<int32_t> starts;
  std::vector<int32_t> epoch0, epoch1;
  for (int64_t g = 0; g < 2 * windows; ++g) {
    std::vector<int32_t> targets;
    const std::vector<int32_t> in = row(*ds, g, &targets);
    EXPECT_EQ(in[0] % kSeqLen, 0) << "window starts on a multiple of seq_len";
    for (int t = 0; t < kSeqLen; ++t) {
      EXPECT_EQ(in[t], in[0] + t);
      EXPECT_EQ(targets[t], in[0] + t + 1);
    }
    (g < windows ? epoch0 : epoch1).push_back(in[0]);
    if (g < windows) starts.insert(in[0]);
  }
  EXPECT_EQ(static_cast<int64_t>(starts.size()), windows);
  EXPECT_NE(epoch0, epoch1) << "each epoch draws a new permutation";
  EXPECT_EQ(std::set<int32_t>(epoch1.begin(), epoch1.end()), starts);
  // Random access: a sample depends on g only, not on what was read before.
  EXPECT_EQ(row(*again, 1000003), row(*ds, 1000003));
  EXPECT_EQ(row(*again, 5), row(*ds, 5));
  config::Config other = cfg();
  other.mutable_data()->set_seed(99);
  auto reseeded = make_dataset(other);
  std::vector<int32_t> starts_other;
  for (int64_t g = 0; g < windows; ++g) starts_other.push_back(row(*reseeded, g)[0]);
  EXPECT_NE(starts_other, epoch0);
}

TEST_F(MegatronData, SplitHoldsOutTheLastDocuments) {
  config::Config c = cfg();
  c.mutable_data()->set_valid_fraction(0.2);  // documents 8 and 9: tokens 160..199
  auto train = make_dataset(c);
  auto valid = make_dataset(c, Split::kValid);
  EXPECT_EQ(train->samples_per_epoch(), (160 - 1) / kSeqLen);
  EXPECT_EQ(valid->samples_per_epoch(), (40 - 1) / kSeqLen);
  for (int64_t g = 0; g < train->samples_per_epoch(); ++g) {
    std::vector<int32_t> targets;
    row(*train, g, &targets);
    EXPECT_LT(targets.back(), 160);
  }
  for (int64_t g = 0; g < valid->samples_per_epoch(); ++g) EXPECT_GE(row(*valid, g)[0], 160);
  expect_error([&] { make_dataset(cfg(), Split::kValid); }, {"data.valid_fraction"});
  write_reference(dir_ + "/one", counting_docs(1, 50, 0), 8);
  config::Config one = megatron_config(dir_ + "/one", kSeqLen, kVocab);
  one.mutable_data()->set_valid_fraction(0.1);
  expect_error([&] { make_dataset(one); }, {"data.valid_fraction", dir_ + "/one.idx", "holds 1"});
}

TEST_F(MegatronData, BlendFollowsTheWeightsAndEachDatasetKeepsItsOwnEpochs) {
  config::Config c = cfg();
  add_blend(&c, 1.0, dir_ + "/a");
  add_blend(&c, 3.0, dir_ + "/b");
  c.mutable_data()->set_valid_fraction(0.1);
  auto ds = make_dataset(c);
  EXPECT_EQ(ds->samples_per_epoch(), 0);
  const int64_t a_windows = (180 - 1) / kSeqLen, b_windows = (360 - 1) / kSeqLen;
  std::map<int32_t, int> a_seen, b_seen;
  const int n = 4000;
  for (int64_t g = 0; g < n; ++g) {
    const int32_t first = row(*ds, g)[0];
    if (first < 1000) {
      EXPECT_LT(first, 180);  // training split of a only
      ++a_seen[first];
    } else {
      EXPECT_LT(first, 1360);
      ++b_seen[first];
    }
  }
  int a_total = 0;
  for (const auto& [w, count] : a_seen) a_total += count;
  EXPECT_NEAR(a_total, n / 4, 1);
  EXPECT_EQ(static_cast<int64_t>(a_seen.size()), a_windows);
  EXPECT_EQ(static_cast<int64_t>(b_seen.size()), b_windows);
  // a's samples 0 .. a_windows-1 form one full epoch, so after k epochs counts differ by <= 1.
  for (const auto& [w, count] : a_seen) EXPECT_LE(std::abs(count - a_total / a_windows), 1);

  auto valid = make_dataset(c, Split::kValid);
  for (int64_t g = 0; g < 200; ++g) {
    const int32_t first = row(*valid, g)[0];
    EXPECT_TRUE((first >= 180 && first < 200) || first >= 1360) << first;
  }
}

TEST_F(MegatronData, BlendErrorsNameTheEntry) {
  config::Config c = cfg();
  add_blend(&c, 1.0, dir_ + "/a");
  add_blend(&c, 1e-6, dir_ + "/b");
  expect_error([&] { make_dataset(c); }, {"data.blend[1].weight", "1/65536", dir_ + "/b"});
  c.mutable_data()->mutable_blend(1)->set_weight(1.0);
  c.mutable_data()->mutable_blend(1)->set_prefix(dir_ + "/none");
  expect_error([&] { make_dataset(c); }, {dir_ + "/none.idx"});
  c.mutable_data()->mutable_blend(1)->set_prefix("");
  expect_error([&] { make_dataset(c); }, {"data.blend[1].prefix"});
  c.mutable_data()->mutable_blend(1)->set_prefix(dir_ + "/b");
  c.mutable_data()->set_seq_len(400);
  expect_error([&] { make_dataset(c); }, {"data.seq_len = 400", dir_ + "/a", "data.blend[0]"});
}

TEST_F(MegatronData, IdsOutsideTheModelVocabularyNameTheBin) {
  auto ds = make_dataset(megatron_config(dir_ + "/b", kSeqLen, 1200));
  expect_error(
      [&] {
        for (int64_t g = 0; g < ds->samples_per_epoch(); ++g) row(*ds, g);
      },
      {dir_ + "/b.bin", "outside [0, 1200)", "model.vocab_size"});
}

TEST_F(MegatronData, DpSizeDoesNotChangeTheGlobalStream) {
  config::Config c = cfg();
  add_blend(&c, 0.3, dir_ + "/a");
  add_blend(&c, 0.7, dir_ + "/b");
  auto ds = make_dataset(c);
  for (int64_t step : {0, 1, 7, 123456}) {
    // Global batch of 8 rows: 1 rank x 2 micro-batches of 4, or 2 ranks x 2 x 2, or 4 ranks x 1
    // x 2.
    std::vector<int32_t> one, two, four;
    for (int m = 0; m < 2; ++m) {
      const Batch b = make_batch(*ds, step, 2, m, 1, 0, 4);
      one.insert(one.end(), b.inputs.data<int32_t>(), b.inputs.data<int32_t>() + 4 * kSeqLen);
    }
    for (int m = 0; m < 2; ++m) {
      for (int d = 0; d < 2; ++d) {
        const Batch b = make_batch(*ds, step, 2, m, 2, d, 2);
        two.insert(two.end(), b.inputs.data<int32_t>(), b.inputs.data<int32_t>() + 2 * kSeqLen);
      }
    }
    for (int d = 0; d < 4; ++d) {
      const Batch b = make_batch(*ds, step, 1, 0, 4, d, 2);
      four.insert(four.end(), b.inputs.data<int32_t>(), b.inputs.data<int32_t>() + 2 * kSeqLen);
    }
    // Same rows in global-index order whatever the layout, since g alone picks each row.
    std::vector<int32_t> direct;
    for (int64_t g = 8 * step; g < 8 * step + 8; ++g) {
      const std::vector<int32_t> r = row(*ds, g);
      direct.insert(direct.end(), r.begin(), r.end());
    }
    EXPECT_EQ(one, direct) << "step " << step;
    EXPECT_EQ(two, direct) << "step " << step;
    EXPECT_EQ(four, direct) << "step " << step;
  }
}

TEST_F(MegatronData, ConfigValidationNamesTheFields) {
  config::Config c = cfg();
  c.mutable_data()->set_seq_len(128);  // a multiple of the default mixer chunk
  validate_config(c, 1);
  add_blend(&c, 0.0, dir_ + "/a");
  expect_error([&] { validate_config(c, 1); }, {"data.blend[0].weight"});
  c.mutable_data()->mutable_blend(0)->set_weight(1);
  c.mutable_data()->set_source(config::DataConfig::TOKEN_SHARD);
  expect_error([&] { validate_config(c, 1); }, {"data.blend", "MEGATRON"});
  config::Config empty = cfg();
  empty.mutable_data()->set_seq_len(128);
  empty.mutable_data()->set_path("");
  expect_error([&] { validate_config(empty, 1); }, {"data.path", "MEGATRON"});
}

// ---- the blend schedule ----------------------------------------------------------------------

TEST(BlendSchedule, QuotasApportionTheBlockAndPrefixesStayWithinOneSample) {
  const BlendSchedule s({0.2, 0.5, 0.3});
  const std::vector<int64_t>& q = s.quotas();
  EXPECT_EQ(q[0] + q[1] + q[2], kBlendBlock);
  EXPECT_EQ(q[0], 13107);  // 0.2 * 65536 = 13107.2
  EXPECT_EQ(q[1], 32768);
  EXPECT_EQ(q[2], 19661);  // 19660.8, gets the one left over
  std::vector<int64_t> count(3, 0);
  for (int64_t g = 0; g < 2 * kBlendBlock; ++g) {
    const BlendSchedule::Pick p = s.at(g);
    // Each dataset's sample numbers come in order 0, 1, 2, ... across blocks.
    ASSERT_EQ(p.index, count[p.dataset]) << "g " << g;
    ++count[p.dataset];
    if (g % 97 == 0 || g + 1 == kBlendBlock) {
      for (int d = 0; d < 3; ++d) {
        const double share = static_cast<double>(q[d]) * static_cast<double>(g + 1) / kBlendBlock;
        EXPECT_LE(std::abs(static_cast<double>(count[d]) - share), 1.0) << "g " << g << " d " << d;
      }
    }
  }
  EXPECT_EQ(count[0], 2 * q[0]);
  // Random access far out agrees with the block structure.
  const int64_t g = 1000 * kBlendBlock + 12345;
  EXPECT_EQ(s.at(g).dataset, s.at(12345).dataset);
  EXPECT_EQ(s.at(g).index, 1000 * q[s.at(12345).dataset] + s.at(12345).index);
}

TEST(BlendSchedule, OneDatasetIsTheIdentity) {
  const BlendSchedule s({2.5});
  EXPECT_EQ(s.at(0).dataset, 0);
  EXPECT_EQ(s.at(987654321).index, 987654321);
}

TEST(BlendSchedule, EqualWeightsAlternate) {
  const BlendSchedule s({1.0, 1.0});
  for (int64_t g = 0; g < 10; ++g) EXPECT_EQ(s.at(g).dataset, g % 2);
}

}  // namespace
}  // namespace linea::data
