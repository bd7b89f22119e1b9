// The data layer: byte tokenizer, token-shard files, text splitting, token-shard and MQAR
// datasets, and the DP slicing of make_batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "core/data/dataset.h"
#include "core/data/prepare.h"
#include "core/data/token_shard.h"
#include "core/data/tokenizer.h"
#include "core/util/check.h"
#include "unit/test_files.h"

namespace linea::data {
namespace {

namespace fs = std::filesystem;

using testing_files::expect_error;
using testing_files::read_file;
using testing_files::test_dir;
using testing_files::write_file;

// Documents of the given lengths; token i has id i % vocab, so every window is recognisable.
TokenShard counting_shard(const std::vector<int>& doc_lengths, int32_t vocab) {
  TokenShard s;
  s.vocab_size = vocab;
  s.doc_offsets.push_back(0);
  for (int len : doc_lengths) {
    for (int i = 0; i < len; ++i) s.tokens.push_back(static_cast<int32_t>(s.tokens.size() % vocab));
    s.doc_offsets.push_back(s.tokens.size());
  }
  return s;
}

config::Config shard_config(const std::string& path, int seq_len, int32_t vocab) {
  config::Config cfg;
  cfg.mutable_model()->set_vocab_size(vocab);
  cfg.mutable_data()->set_source(config::DataConfig::TOKEN_SHARD);
  cfg.mutable_data()->set_path(path);
  cfg.mutable_data()->set_seq_len(seq_len);
  return cfg;
}

std::vector<int32_t> row(const Dataset& ds, int64_t g, std::vector<int32_t>* targets = nullptr) {
  std::vector<int32_t> in(ds.seq_len()), tg(ds.seq_len());
  ds.sample(g, in.data(), tg.data());
  if (targets) *targets = tg;
  return in;
}

// ---- tokenizer -----------------------------------------------------------------------------

TEST(ByteTokenizer, RoundTripsAllBytesIncludingNonAscii) {
  ByteTokenizer tok;
  std::string text = "héllo, wörld — 日本語\n";
  for (int b = 0; b < 256; ++b) text.push_back(static_cast<char>(b));
  const std::vector<int32_t> ids = tok.encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (int32_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 256);
  }
  EXPECT_EQ(ids[1], 0xc3);  // first byte of "é" in UTF-8, not a negative char
  EXPECT_EQ(tok.decode(ids), text);
}

TEST(ByteTokenizer, EndOfDocumentDecodesAndBadIdsAreErrors) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.decode({'a', ByteTokenizer::kEndOfDocument, 'b'}), "a\n<|eod|>\nb");
  EXPECT_THROW(tok.decode({'a', 257}), Error);
  EXPECT_THROW(tok.decode({-1}), Error);
}

// ---- token-shard files ---------------------------------------------------------------------

TEST(TokenShard, WriteReadRoundTripU16) {
  const std::string path = test_dir() + "/a.tokens";
  const TokenShard s = counting_shard({5, 1, 7}, ByteTokenizer::kVocabSize);
  write_token_shard(path, s);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(fs::file_size(path), 40u + 8u * 4u + 2u * 13u);
  const TokenShard r = read_token_shard(path);
  EXPECT_EQ(r.vocab_size, s.vocab_size);
  EXPECT_EQ(r.tokens, s.tokens);
  EXPECT_EQ(r.doc_offsets, s.doc_offsets);
  EXPECT_EQ(r.num_docs(), 3);
}

TEST(TokenShard, WriteReadRoundTripU32ForLargeVocab) {
  const std::string path = test_dir() + "/big.tokens";
  TokenShard s = counting_shard({3, 2}, 70000);
  s.tokens[4] = 69999;
  write_token_shard(path, s);
  EXPECT_EQ(fs::file_size(path), 40u + 8u * 3u + 4u * 5u);
  const TokenShard r = read_token_shard(path);
  EXPECT_EQ(r.tokens, s.tokens);
  EXPECT_EQ(r.vocab_size, 70000);
}

class TokenShardCorruption : public testing::Test {
 protected:
  void SetUp() override {
    path_ = test_dir() + "/corpus.tokens";
    write_token_shard(path_, counting_shard({4, 4}, ByteTokenizer::kVocabSize));
    bytes_ = read_file(path_);
  }
  void expect_read_error(const std::string& what) {
    write_file(path_, bytes_);
    expect_error([&] { read_token_shard(path_); }, {path_, what, "linea prepare-data"});
  }
  std::string path_;
  std::string bytes_;
};

TEST_F(TokenShardCorruption, BadMagic) {
  bytes_[0] = 'X';
  expect_read_error("magic");
}

TEST_F(TokenShardCorruption, TruncatedFile) {
  bytes_.pop_back();
  expect_read_error("truncated");
}

TEST_F(TokenShardCorruption, TruncatedHeader) {
  bytes_.resize(20);
  expect_read_error("header");
}

TEST_F(TokenShardCorruption, WrongVersion) {
  bytes_[8] = 2;
  expect_read_error("version 2");
}

TEST_F(TokenShardCorruption, OutOfRangeId) {
  const size_t first_token = 40 + 8 * 3;
  bytes_[first_token + 2 * 5] = static_cast<char>(0x01);  // token 5 := 257 (0x0101)
  bytes_[first_token + 2 * 5 + 1] = static_cast<char>(0x01);
  expect_read_error("token 5 has id 257");
}

TEST_F(TokenShardCorruption, OffsetsNotEndingAtTokenCount) {
  bytes_[40 + 8 * 2] = 7;  // offsets[2] := 7, but N = 8
  expect_read_error("last document offset");
}

TEST(TokenShard, MissingFileNamesIt) {
  const std::string path = test_dir() + "/nope.tokens";
  expect_error([&] { read_token_shard(path); }, {path});
}

// ---- text splitting ------------------------------------------------------------------------

std::vector<std::string> documents(const TokenShard& s) {
  std::vector<std::string> docs;
  ByteTokenizer tok;
  for (int64_t d = 0; d < s.num_docs(); ++d) {
    const uint64_t b = s.doc_offsets[d], e = s.doc_offsets[d + 1];
    EXPECT_EQ(s.tokens[e - 1], ByteTokenizer::kEndOfDocument) << "document " << d;
    docs.push_back(
        tok.decode(std::vector<int32_t>(s.tokens.begin() + b, s.tokens.begin() + e - 1)));
  }
  return docs;
}

TEST(TokenShard, TextSplitsAtSeparatorLinesAndSkipsEmptyDocuments) {
  const std::string dir = test_dir();
  write_file(dir + "/a", "one\n%\ntwo\nlines\n%\n%\nthree");
  write_file(dir + "/b", "%\nfour\n%x\n 100%\n");
  write_file(dir + "/c", "five\r\n%\r\nsix\r\n%\n");
  const TokenShard s = tokenize_text_files({dir + "/a", dir + "/b", dir + "/c"}, "%");
  EXPECT_EQ(s.vocab_size, ByteTokenizer::kVocabSize);
  EXPECT_EQ(documents(s), (std::vector<std::string>{"one\n", "two\nlines\n", "three",
                                                    "four\n%x\n 100%\n", "five\r\n", "six\r\n"}));
  EXPECT_EQ(s.doc_offsets.back(), s.tokens.size());
}

TEST(TokenShard, EmptySeparatorMakesOneDocumentPerFile) {
  const std::string dir = test_dir();
  write_file(dir + "/a", "x\n%\ny\n");
  write_file(dir + "/empty", "");
  write_file(dir + "/b", "z");
  const TokenShard s = tokenize_text_files({dir + "/a", dir + "/empty", dir + "/b"}, "");
  EXPECT_EQ(documents(s), (std::vector<std::string>{"x\n%\ny\n", "z"}));
}

TEST(TokenShard, MissingTextFileIsAnErrorNamingIt) {
  const std::string dir = test_dir();
  write_file(dir + "/a", "x");
  expect_error(
      [&] {
        tokenize_text_files({dir + "/a", dir + "/missing.txt"}, "%");
      },
      {dir + "/missing.txt"});
}

TEST(PrepareData, WritesAShardThatReadsBack) {
  const std::string dir = test_dir();
  write_file(dir + "/f", "alpha\n%\nbeta\n%\n");
  const std::string out = dir + "/sub/out.tokens";
  EXPECT_EQ(prepare_data({dir + "/f"}, out, "%"), 0);
  const TokenShard s = read_token_shard(out);
  EXPECT_EQ(documents(s), (std::vector<std::string>{"alpha\n", "beta\n"}));
  expect_error([&] { prepare_data({dir + "/none"}, out, "%"); }, {dir + "/none"});
  write_file(dir + "/seps", "%\n%\n");
  expect_error([&] { prepare_data({dir + "/seps"}, dir + "/x.tokens", "%"); }, {"no document"});
}

// ---- token-shard dataset -------------------------------------------------------------------

class TokenShardData : public testing::Test {
 protected:
  static constexpr int32_t kVocab = 1000;
  static constexpr int kSeqLen = 8;
  void SetUp() override {
    path_ = test_dir() + "/corpus.tokens";
    // 10 documents of 20 tokens: 200 tokens, all distinct ids.
    write_token_shard(path_, counting_shard(std::vector<int>(10, 20), kVocab));
  }
  config::Config cfg() const { return shard_config(path_, kSeqLen, kVocab); }
  std::string path_;
};

TEST_F(TokenShardData, SamplesAreDeterministicAndTargetsAreShiftedInputs) {
  auto a = make_dataset(cfg());
  auto b = make_dataset(cfg());
  EXPECT_EQ(a->seq_len(), kSeqLen);
  EXPECT_EQ(a->vocab_size(), kVocab);
  EXPECT_EQ(a->samples_per_epoch(), 200 / (kSeqLen + 1));
  for (int64_t g : {0, 3, 21, 22, 57, 1000}) {
    std::vector<int32_t> ta, tb;
    const std::vector<int32_t> ia = row(*a, g, &ta);
    EXPECT_EQ(ia, row(*b, g, &tb)) << "g = " << g;
    EXPECT_EQ(ta, tb);
    EXPECT_EQ(ia[0] % (kSeqLen + 1), 0) << "windows start at multiples of seq_len + 1";
    for (int t = 0; t < kSeqLen; ++t) EXPECT_EQ(ta[t], ia[t] + 1) << "g = " << g << ", t = " << t;
    EXPECT_EQ(row(*a, g), ia) << "repeat read of g = " << g;
  }
}

TEST_F(TokenShardData, EachEpochIsAPermutationOfAllWindowsAndSeedsDiffer) {
  auto ds = make_dataset(cfg());
  config::Config other = cfg();
  other.mutable_data()->set_seed(cfg().data().seed() + 1);
  auto ds2 = make_dataset(other);
  const int64_t w = ds->samples_per_epoch();
  std::vector<int32_t> e0, e1, s2;
  for (int64_t i = 0; i < w; ++i) {
    e0.push_back(row(*ds, i)[0]);
    e1.push_back(row(*ds, w + i)[0]);
    s2.push_back(row(*ds2, i)[0]);
  }
  std::vector<int32_t> all;
  for (int64_t i = 0; i < w; ++i) all.push_back(static_cast<int32_t>(i * (kSeqLen + 1)));
  for (auto* order : {&e0, &e1, &s2}) {
    std::vector<int32_t> sorted = *order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, all);
  }
  EXPECT_NE(e0, e1) << "epochs should be reshuffled";
  EXPECT_NE(e0, s2) << "seeds should give different orders";
}

TEST_F(TokenShardData, ValidationHoldsOutTheLastDocuments) {
  config::Config c = cfg();
  c.mutable_data()->set_valid_fraction(0.2);  // the last 2 of 10 documents: tokens [160, 200)
  auto train = make_dataset(c);
  auto valid = make_dataset(c, Split::kValid);
  EXPECT_EQ(train->samples_per_epoch(), 160 / (kSeqLen + 1));
  EXPECT_EQ(valid->samples_per_epoch(), 40 / (kSeqLen + 1));
  for (int64_t g = 0; g < train->samples_per_epoch(); ++g) {
    std::vector<int32_t> t;
    row(*train, g, &t);
    EXPECT_LT(t.back(), 160);
  }
  for (int64_t g = 0; g < valid->samples_per_epoch(); ++g) EXPECT_GE(row(*valid, g)[0], 160);
  expect_error([&] { make_dataset(cfg(), Split::kValid); }, {"data.valid_fraction"});
}

TEST_F(TokenShardData, TooShortCorpusNamesFileAndSeqLen) {
  config::Config c = cfg();
  c.mutable_data()->set_seq_len(200);
  expect_error([&] { make_dataset(c); }, {path_, "data.seq_len = 200"});
}

TEST_F(TokenShardData, MissingPathNamesFieldAndHowToPrepare) {
  config::Config c = cfg();
  const std::string missing = path_ + ".missing";
  c.mutable_data()->set_path(missing);
  expect_error([&] { make_dataset(c); }, {"data.path", missing, "launch/setup.sh", "prepare-data"});
}

TEST_F(TokenShardData, ModelVocabularyMustCoverTheShard) {
  config::Config c = cfg();
  c.mutable_model()->set_vocab_size(257);
  expect_error([&] { make_dataset(c); }, {"model.vocab_size", path_});
}

TEST_F(TokenShardData, DpRanksReadDisjointSlicesOfTheGlobalBatch) {
  auto ds = make_dataset(cfg());
  const int grad_accum = 2;
  for (int64_t step : {0, 3}) {
    // dp = 1 with micro batch 4 and dp = 2 with micro batch 2: the same 8 global samples a step.
    std::multiset<std::vector<int32_t>> one, two;
    std::set<std::vector<int32_t>> per_rank[2];
    for (int m = 0; m < grad_accum; ++m) {
      Batch b = make_batch(*ds, step, grad_accum, m, 1, 0, 4);
      ASSERT_EQ(b.inputs.shape(), (Shape{4, kSeqLen}));
      ASSERT_EQ(b.targets.shape(), (Shape{4, kSeqLen}));
      const int32_t* in = b.inputs.data<int32_t>();
      for (int j = 0; j < 4; ++j)
        one.insert(std::vector<int32_t>(in + j * kSeqLen, in + (j + 1) * kSeqLen));
      for (int d = 0; d < 2; ++d) {
        Batch r = make_batch(*ds, step, grad_accum, m, 2, d, 2);
        const int32_t* rin = r.inputs.data<int32_t>();
        for (int j = 0; j < 2; ++j) {
          std::vector<int32_t> v(rin + j * kSeqLen, rin + (j + 1) * kSeqLen);
          two.insert(v);
          per_rank[d].insert(v);
        }
      }
    }
    EXPECT_EQ(one, two) << "step " << step;
    for (const auto& v : per_rank[0]) EXPECT_EQ(per_rank[1].count(v), 0u) << "ranks overlap";
    // Same global indices: the batch rows are exactly samples g = step * 8 + i.
    std::multiset<std::vector<int32_t>> expected;
    for (int64_t g = step * 8; g < step * 8 + 8; ++g) expected.insert(row(*ds, g));
    EXPECT_EQ(one, expected);
  }
}

// ---- MQAR ----------------------------------------------------------------------------------

config::Config mqar_config(int seq_len, int pairs, int queries) {
  config::Config cfg;
  cfg.mutable_model()->set_vocab_size(64);
  cfg.mutable_data()->set_source(config::DataConfig::MQAR);
  cfg.mutable_data()->set_seq_len(seq_len);
  cfg.mutable_data()->mutable_mqar()->set_num_kv_pairs(pairs);
  cfg.mutable_data()->mutable_mqar()->set_num_queries(queries);
  return cfg;
}

TEST(MqarDataset, AnswersAreThePairedValuesAndEverythingElseIsIgnored) {
  const int kPairs = 8, kQueries = 6, kLen = 48;
  for (bool random_filler : {true, false}) {
    config::Config c = mqar_config(kLen, kPairs, kQueries);
    c.mutable_data()->mutable_mqar()->set_random_filler(random_filler);
    auto ds = make_dataset(c);
    EXPECT_EQ(ds->vocab_size(), 64);
    EXPECT_EQ(ds->seq_len(), kLen);
    for (int64_t g = 0; g < 50; ++g) {
      std::vector<int32_t> tg;
      const std::vector<int32_t> in = row(*ds, g, &tg);
      std::vector<int32_t> value_of(32, -1);
      std::set<int32_t> values;
      for (int i = 0; i < kPairs; ++i) {
        const int32_t k = in[2 * i], v = in[2 * i + 1];
        ASSERT_GE(k, 0);
        ASSERT_LT(k, 32);
        ASSERT_GE(v, 32);
        ASSERT_LT(v, 64);
        EXPECT_EQ(value_of[k], -1) << "keys must be distinct";
        value_of[k] = v;
        values.insert(v);
      }
      EXPECT_EQ(values.size(), static_cast<size_t>(kPairs)) << "values must be distinct";
      int answers = 0;
      std::set<int32_t> asked;
      for (int t = 0; t < kLen; ++t) {
        EXPECT_GE(in[t], 0);
        EXPECT_LT(in[t], 64);
        if (tg[t] == -1) continue;
        ++answers;
        ASSERT_GE(t, 2 * kPairs) << "no answer inside the key-value context";
        ASSERT_LT(t + 1, kLen);
        ASSERT_LT(in[t], 32) << "a query is a key";
        EXPECT_EQ(tg[t], value_of[in[t]]) << "g = " << g << ", t = " << t;
        EXPECT_EQ(in[t + 1], tg[t]);
        asked.insert(in[t]);
      }
      EXPECT_EQ(answers, kQueries);
      EXPECT_EQ(asked.size(), static_cast<size_t>(kQueries)) << "queries ask distinct keys";
    }
  }
}

TEST(MqarDataset, DeterministicPerIndexAndSeed) {
  auto a = make_dataset(mqar_config(64, 8, 8));
  auto b = make_dataset(mqar_config(64, 8, 8));
  config::Config other = mqar_config(64, 8, 8);
  other.mutable_data()->set_seed(7);
  auto c = make_dataset(other);
  auto valid = make_dataset(mqar_config(64, 8, 8), Split::kValid);
  for (int64_t g : {0, 1, 99}) {
    std::vector<int32_t> ta, tb;
    EXPECT_EQ(row(*a, g, &ta), row(*b, g, &tb));
    EXPECT_EQ(ta, tb);
    EXPECT_NE(row(*a, g), row(*c, g));
    EXPECT_NE(row(*a, g), row(*valid, g));
  }
  EXPECT_NE(row(*a, 0), row(*a, 1));
}

TEST(MqarDataset, TooShortSeqLenNamesTheFields) {
  expect_error([] { make_dataset(mqar_config(31, 8, 8)); },
               {"data.seq_len = 31", "data.mqar.num_kv_pairs", "data.mqar.num_queries"});
  EXPECT_NO_THROW(make_dataset(mqar_config(32, 8, 8)));
  expect_error([] { make_dataset(mqar_config(128, 40, 8)); },
               {"data.mqar.num_kv_pairs", "model.vocab_size"});
}

}  // namespace
}  // namespace linea::data
