// The agent's NVML inventory against a FAKE libnvidia-ml (tests/agent/fake_nvml.c: two GPUs
// that are not there, one of them in MIG mode), loaded by path as the driver's would be: names,
// UUIDs, memory, MIG instances (empty slots skipped), and the errors when NVML is missing or
// fails to start.
#include "agent/nvml.h"

#include <cstdlib>

#include <gtest/gtest.h>

namespace outpost::agent {
namespace {

TEST(NvmlTest, ReadsGpusAndMigInstancesFromTheLibrary) {
  auto gpus = probe_nvml_gpus(FAKE_NVML_LIBRARY);
  ASSERT_TRUE(gpus.ok()) << gpus.error().to_string();
  ASSERT_EQ(gpus->size(), 2u);
  const GpuInfo& h100 = (*gpus)[0];
  EXPECT_EQ(h100.index, 0);
  EXPECT_EQ(h100.name, "NVIDIA H100 80GB HBM3 (FAKE)");
  EXPECT_EQ(h100.uuid, "GPU-00000000-fake-0000-0000-000000000000");
  EXPECT_EQ(h100.memory_bytes, 85520809984ULL);
  EXPECT_TRUE(h100.mig.empty());
  const GpuInfo& a100 = (*gpus)[1];
  EXPECT_EQ(a100.index, 1);
  ASSERT_EQ(a100.mig.size(), 2u);
  EXPECT_EQ(a100.mig[0].uuid, "MIG-22222222-fake-2222-2222-222222222222");
  EXPECT_EQ(a100.mig[1].uuid, "MIG-33333333-fake-3333-3333-333333333333");
  EXPECT_EQ(a100.mig[0].memory_bytes, 20937965568ULL);
}

TEST(NvmlTest, MissingOrFailingNvmlIsUnavailableNotACrash) {
  auto missing = probe_nvml_gpus("/nonexistent/libnvidia-ml.so.1");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(missing.error().message().find("no NVIDIA driver"), std::string::npos);
  ::setenv("FAKE_NVML_INIT_ERROR", "9", 1);  // NVML_ERROR_DRIVER_NOT_LOADED
  auto failing = probe_nvml_gpus(FAKE_NVML_LIBRARY);
  ::unsetenv("FAKE_NVML_INIT_ERROR");
  ASSERT_FALSE(failing.ok());
  EXPECT_EQ(failing.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(failing.error().message().find("NVML error 9"), std::string::npos)
      << failing.error().message();
}

}  // namespace
}  // namespace outpost::agent
