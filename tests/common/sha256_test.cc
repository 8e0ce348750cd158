// common/sha256: FIPS 180-2's vectors, streaming in pieces, files read in several blocks.
#include "common/sha256.h"

#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/test_pki.h"

namespace outpost {
namespace {

using testing::TempDir;

constexpr const char* kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr const char* kAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr const char* kMillionA =
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), kEmpty);
  EXPECT_EQ(sha256_hex("abc"), kAbc);
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256().hex(), kEmpty);
}

TEST(Sha256Test, PiecesGiveTheDigestOfTheWholeAndHexStartsAgain) {
  Sha256 digest;
  const std::string thousand(1000, 'a');
  for (int i = 0; i < 1000; ++i) digest.update(thousand);
  EXPECT_EQ(digest.hex(), kMillionA);
  // After hex() the object hashes afresh; bytes as a span count the same as text.
  const unsigned char abc[] = {'a', 'b', 'c'};
  digest.update(std::span<const unsigned char>(abc, 1));
  digest.update(std::string_view("bc"));
  EXPECT_EQ(digest.hex(), kAbc);
  EXPECT_EQ(digest.hex(), kEmpty);
}

TEST(Sha256Test, FileReadInSeveralBlocksMatchesTheOneShotDigest) {
  TempDir dir;
  std::string content;
  // 3 MiB and a bit: three full 1 MiB blocks and a partial one.
  content.reserve((size_t{3} << 20) + 4099);
  for (size_t i = 0; i < (size_t{3} << 20) + 4099; ++i) {
    content.push_back(static_cast<char>((i * 131) % 251));
  }
  const std::string path = dir.file("model.pt");
  std::ofstream(path, std::ios::binary) << content;
  const auto hashed = sha256_file(path);
  ASSERT_TRUE(hashed.ok()) << hashed.error().to_string();
  EXPECT_EQ(hashed.value(), sha256_hex(content));

  const std::string empty = dir.file("empty");
  std::ofstream(empty, std::ios::binary).close();
  EXPECT_EQ(sha256_file(empty).value(), kEmpty);
}

TEST(Sha256Test, MissingFileOrFolderGivesAnErrorNamingThePath) {
  TempDir dir;
  const std::string missing = dir.file("no-such-model.pt");
  const auto result = sha256_file(missing);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(result.error().message().find(missing), std::string::npos) << result.error().message();

  const auto folder = sha256_file(dir.path());
  ASSERT_FALSE(folder.ok());
  EXPECT_EQ(folder.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(folder.error().message().find(dir.path()), std::string::npos);
}

TEST(Sha256Test, HexFormIsSixtyFourLowerCaseDigits) {
  EXPECT_TRUE(is_sha256_hex(kAbc));
  EXPECT_FALSE(is_sha256_hex(""));
  EXPECT_FALSE(is_sha256_hex(std::string(kAbc).substr(1)));
  EXPECT_FALSE(is_sha256_hex(std::string(kAbc) + "0"));
  std::string upper(kAbc);
  upper[0] = 'B';
  EXPECT_FALSE(is_sha256_hex(upper));
  EXPECT_FALSE(is_sha256_hex(std::string(63, 'a') + "g"));
}

}  // namespace
}  // namespace outpost
