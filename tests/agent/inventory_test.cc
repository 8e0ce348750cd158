#include "agent/inventory.h"

#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/test_pki.h"

namespace outpost::agent {
namespace {

using outpost::testing::TempDir;

TEST(InventoryTest, DetectsThisHostsCpusAndMemory) {
  const auto inventory = detect_inventory("");
  ASSERT_TRUE(inventory.ok());
  EXPECT_GE(inventory->cpu_cores, 1);
  EXPECT_GT(inventory->memory_bytes, 64ull << 20);
  // No NVIDIA driver on the test machine: a CPU-only host.
  EXPECT_TRUE(inventory->gpus.empty());
  EXPECT_EQ(inventory->to_json()["cpu_cores"], inventory->cpu_cores);
}

TEST(InventoryTest, OverrideFileIsAFakeThatSaysSo) {
  TempDir dir;
  std::ofstream(dir.file("inventory.json")) << R"({"cpu_cores": 32, "memory_bytes": 137438953472,
    "gpus": [{"index": 0, "name": "FAKE H100", "uuid": "GPU-fake-0", "memory_bytes": 85899345920,
              "mig": [{"uuid": "MIG-fake-0", "memory_bytes": 10737418240}]}]})";
  const auto inventory = detect_inventory(dir.file("inventory.json"));
  ASSERT_TRUE(inventory.ok()) << inventory.error().message();
  EXPECT_EQ(inventory->cpu_cores, 32);
  ASSERT_EQ(inventory->gpus.size(), 1u);
  EXPECT_EQ(inventory->gpus[0].mig.size(), 1u);
  EXPECT_NE(inventory->source.find("fake"), std::string::npos);
  // The JSON form round-trips.
  const auto again = Inventory::from_json(inventory->to_json(), "again");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->gpus[0].memory_bytes, 85899345920ull);
}

TEST(InventoryTest, BadOverrideFilesAreRefused) {
  TempDir dir;
  std::ofstream(dir.file("bad.json")) << "{not json";
  EXPECT_NE(detect_inventory(dir.file("bad.json")).error().message().find("not JSON"),
            std::string::npos);
  std::ofstream(dir.file("zero.json")) << R"({"cpu_cores": 0, "memory_bytes": 1})";
  EXPECT_FALSE(detect_inventory(dir.file("zero.json")).ok());
  EXPECT_FALSE(detect_inventory(dir.file("missing.json")).ok());
}

}  // namespace
}  // namespace outpost::agent
