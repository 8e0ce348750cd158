#include "common/quantity.h"

#include <gtest/gtest.h>

namespace outpost {
namespace {

TEST(QuantityTest, ParsesMemoryInBinaryAndDecimalUnits) {
  EXPECT_EQ(parse_memory_quantity("16Gi", "m").value(), 16ull << 30);
  EXPECT_EQ(parse_memory_quantity("512Mi", "m").value(), 512ull << 20);
  EXPECT_EQ(parse_memory_quantity("1.5Gi", "m").value(), 3ull << 29);
  EXPECT_EQ(parse_memory_quantity("1G", "m").value(), 1000000000ull);
  EXPECT_EQ(parse_memory_quantity("4096", "m").value(), 4096ull);
}

TEST(QuantityTest, ParsesCpuInCoresAndMillicores) {
  EXPECT_EQ(parse_cpu_quantity("8", "c").value(), 8000u);
  EXPECT_EQ(parse_cpu_quantity("0.5", "c").value(), 500u);
  EXPECT_EQ(parse_cpu_quantity("250m", "c").value(), 250u);
}

TEST(QuantityTest, RefusalsNameTheField) {
  const auto bad = parse_memory_quantity("16GB", "nodepool.compute_info.cpu_memory");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("nodepool.compute_info.cpu_memory"), std::string::npos);
  EXPECT_NE(bad.error().message().find("unknown unit 'GB'"), std::string::npos);
  EXPECT_FALSE(parse_memory_quantity("", "f").ok());
  EXPECT_FALSE(parse_memory_quantity("-1Gi", "f").ok());
  EXPECT_FALSE(parse_memory_quantity("Gi", "f").ok());
  EXPECT_FALSE(parse_cpu_quantity("2 cores", "f").ok());
}

}  // namespace
}  // namespace outpost
