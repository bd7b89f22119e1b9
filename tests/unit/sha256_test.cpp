// SHA-256 against the known answers of FIPS 180-2 (appendix B) and NIST's examples, whole and fed
// in uneven pieces (the incremental path).
#include "core/checkpoint/sha256.h"

#include <gtest/gtest.h>

#include <string>

namespace linea::checkpoint {
namespace {

TEST(Sha256, KnownAnswers) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(
      sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnop"
                 "qklmnopqrlmnopqrsmnopqrstnopqrstu"),
      "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(sha256_hex("The quick brown fox jumps over the lazy dog"),
            "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592");
}

TEST(Sha256, MillionAsInUnevenPieces) {
  const std::string a(1000000, 'a');
  const char* want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  EXPECT_EQ(sha256_hex(a), want);
  Sha256 h;
  size_t done = 0, piece = 1;
  while (done < a.size()) {
    const size_t n = std::min(piece, a.size() - done);
    h.update(a.data() + done, n);
    done += n;
    piece = piece * 3 % 1000 + 1;  // 1, 4, 13, 40, 121, 364, 93, ...: crosses block edges
  }
  EXPECT_EQ(h.hex_digest(), want);
}

TEST(Sha256, OneFlippedBitChangesTheDigest) {
  std::string s(200, 'x');
  const std::string before = sha256_hex(s);
  s[117] ^= 0x01;
  EXPECT_NE(sha256_hex(s), before);
}

}  // namespace
}  // namespace linea::checkpoint
