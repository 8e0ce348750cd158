#include "agent/artifact_cache.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/sha256.h"
#include "tests/support/test_pki.h"

namespace outpost::agent {
namespace {

using outpost::testing::TempDir;

// sha256("hello world")
constexpr const char* kHelloSha =
    "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

TEST(ArtifactCacheTest, VerifiedDownloadLandsAndSurvivesReopening) {
  TempDir dir;
  {
    auto cache = ArtifactCache::open(dir.file("artifacts"), 1 << 20).value();
    EXPECT_FALSE(cache->find(kHelloSha, 11).has_value());
    auto writer = cache->begin(kHelloSha, 11).value();
    ASSERT_TRUE(writer->append("hello ").ok());
    ASSERT_TRUE(writer->append("world").ok());
    const auto path = writer->commit();
    ASSERT_TRUE(path.ok()) << path.error().message();
    EXPECT_EQ(sha256_file(path.value()).value(), kHelloSha);
  }
  auto reopened = ArtifactCache::open(dir.file("artifacts"), 1 << 20).value();
  EXPECT_TRUE(reopened->find(kHelloSha, 11).has_value());
}

TEST(ArtifactCacheTest, WrongHashOrSizeNeverLands) {
  TempDir dir;
  auto cache = ArtifactCache::open(dir.file("artifacts"), 1 << 20).value();
  {
    auto writer = cache->begin(kHelloSha, 11).value();
    ASSERT_TRUE(writer->append("hello WORLD").ok());
    const auto committed = writer->commit();
    ASSERT_FALSE(committed.ok());
    EXPECT_EQ(committed.error().code(), ErrorCode::kDataLoss);
    EXPECT_NE(committed.error().message().find("hash mismatch"), std::string::npos);
  }
  {
    auto writer = cache->begin(kHelloSha, 11).value();
    ASSERT_TRUE(writer->append("hello").ok());
    EXPECT_NE(writer->commit().error().message().find("ended after 5 of 11"), std::string::npos);
  }
  {
    auto writer = cache->begin(kHelloSha, 11).value();
    EXPECT_EQ(writer->append("hello world and more").error().code(), ErrorCode::kDataLoss);
  }
  EXPECT_FALSE(cache->find(kHelloSha, 11).has_value());
  // Nothing half-written is left behind.
  EXPECT_TRUE(std::filesystem::is_empty(dir.file("artifacts") + "/.partial"));
}

TEST(ArtifactCacheTest, RefusesOversizedAndMalformedRequests) {
  TempDir dir;
  auto cache = ArtifactCache::open(dir.file("artifacts"), 1000).value();
  EXPECT_EQ(cache->begin(kHelloSha, 5000).error().code(), ErrorCode::kResourceExhausted);
  EXPECT_EQ(cache->begin("../../etc/passwd", 5).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(cache->find("../../etc/passwd", 5).has_value());
}

TEST(ArtifactCacheTest, LeftoversOfAnInterruptedDownloadAreClearedAtOpen) {
  TempDir dir;
  std::filesystem::create_directories(dir.file("artifacts") + "/.partial");
  std::ofstream(dir.file("artifacts") + "/.partial/abc.1.0") << "half";
  auto cache = ArtifactCache::open(dir.file("artifacts"), 1000).value();
  EXPECT_TRUE(std::filesystem::is_empty(dir.file("artifacts") + "/.partial"));
}

}  // namespace
}  // namespace outpost::agent
