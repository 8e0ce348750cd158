// The supervisor's decisions that need no worker process: the spec each kind of worker starts
// with, on FAKE GPUs (this machine has none), and the restart backoff. Starting, crashing and
// restarting real workers is in tests/e2e
// (KilledWorkerComesBackAndNoCallerSeesAFailure, RestartedAgentNeverRunsTwoWorkersForOneReplica,
// ColdStartsLoadIntoTheWarmSpareWorkerInsteadOfStartingOne).
#include "agent/supervisor.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace outpost::agent {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

AgentConfig config_with_runtime_dir() {
  AgentConfig config;
  config.runtime_dir = "/run/outpost-test";
  config.worker_threads = 3;
  return config;
}

Inventory fake_gpu_host() {
  Inventory inventory;
  inventory.cpu_cores = 16;
  inventory.memory_bytes = 64 * kGiB;
  inventory.gpus = {{0, "FAKE GPU 0", "GPU-fake-0", 40 * kGiB, {}},
                    {1, "FAKE GPU 1", "GPU-fake-1", 80 * kGiB, {}}};
  inventory.source = "fake";
  return inventory;
}

std::vector<Device> fake_devices() {
  return {{"cpu", -1, SlicingMode::kFraction, 60 * kGiB, 16000},
          {"cuda:0", 0, SlicingMode::kFraction, 40 * kGiB, 0},
          {"cuda:1", 1, SlicingMode::kMps, 80 * kGiB, 0},
          {"mig:MIG-fake-a", 0, SlicingMode::kMig, 10 * kGiB, 0}};
}

WorkerPlan plan(const std::string& worker, const std::string& device, SlicingMode slicing,
                uint64_t memory) {
  WorkerPlan out;
  out.worker_id = worker;
  out.device_id = device;
  out.slicing = slicing;
  out.memory_limit_bytes = memory;
  return out;
}

TEST(SupervisorTest, ACpuWorkerGetsTheCpuTheThreadsAndAPrivateSocket) {
  const Supervisor supervisor(config_with_runtime_dir(), fake_gpu_host(), fake_devices());
  std::vector<std::string> environment;
  const auto spec = supervisor.spec_for(plan("cpu", "cpu", SlicingMode::kFraction, 0), environment);
  EXPECT_EQ(spec.device, "cpu");
  EXPECT_EQ(spec.intra_op_threads, 3);
  EXPECT_EQ(spec.worker_id, "cpu");
  // A socket under the runtime directory, named by a tag of the worker id (never the raw id).
  EXPECT_EQ(spec.endpoint.rfind("ipc:///run/outpost-test/", 0), 0u) << spec.endpoint;
  EXPECT_NE(spec.endpoint.find(file_tag("cpu") + ".sock"), std::string::npos) << spec.endpoint;
  EXPECT_TRUE(environment.empty());
}

TEST(SupervisorTest, AFractionWorkerGetsItsShareOfTheGpusMemory) {
  const Supervisor supervisor(config_with_runtime_dir(), fake_gpu_host(), fake_devices());
  std::vector<std::string> environment;
  const auto spec =
      supervisor.spec_for(plan("cuda:0", "cuda:0", SlicingMode::kFraction, 10 * kGiB), environment);
  EXPECT_EQ(spec.device, "cuda:0");
  EXPECT_EQ(spec.slice.mode, "fraction");
  EXPECT_DOUBLE_EQ(spec.slice.fraction, 0.25);  // 10 of 40 GiB
  EXPECT_TRUE(environment.empty());
  EXPECT_EQ(spec.worker_id, "cuda_0");  // safe in a file name
}

TEST(SupervisorTest, AnMpsWorkerAlsoGetsAPinnedMemoryLimit) {
  const Supervisor supervisor(config_with_runtime_dir(), fake_gpu_host(), fake_devices());
  std::vector<std::string> environment;
  const auto spec = supervisor.spec_for(
      plan("cuda:1/d/np/0", "cuda:1", SlicingMode::kMps, 20 * kGiB), environment);
  EXPECT_EQ(spec.device, "cuda:1");
  EXPECT_EQ(spec.slice.mode, "mps");
  EXPECT_DOUBLE_EQ(spec.slice.fraction, 0.25);  // 20 of 80 GiB
  EXPECT_EQ(spec.slice.mps_memory_limit, "20480M");
}

TEST(SupervisorTest, AMigWorkerSeesOnlyItsInstance) {
  const Supervisor supervisor(config_with_runtime_dir(), fake_gpu_host(), fake_devices());
  std::vector<std::string> environment;
  const auto spec = supervisor.spec_for(
      plan("mig:MIG-fake-a/d/np/0", "mig:MIG-fake-a", SlicingMode::kMig, 10 * kGiB), environment);
  EXPECT_EQ(spec.device, "cuda:0");
  EXPECT_EQ(spec.slice.mode, "mig");
  EXPECT_EQ(environment, std::vector<std::string>{"CUDA_VISIBLE_DEVICES=MIG-fake-a"});
}

TEST(SupervisorTest, AFractionIsNeverZeroNorAboveTheWholeGpu) {
  const Supervisor supervisor(config_with_runtime_dir(), fake_gpu_host(), fake_devices());
  std::vector<std::string> environment;
  EXPECT_DOUBLE_EQ(supervisor.spec_for(plan("a", "cuda:0", SlicingMode::kFraction, 1), environment)
                       .slice.fraction,
                   0.01);
  EXPECT_DOUBLE_EQ(
      supervisor.spec_for(plan("b", "cuda:0", SlicingMode::kFraction, 400 * kGiB), environment)
          .slice.fraction,
      1.0);
}

TEST(SupervisorTest, RestartsBackOffExponentiallyUpToTheConfiguredCap) {
  using std::chrono::seconds;
  EXPECT_EQ(restart_delay(0, 30), seconds(1));
  EXPECT_EQ(restart_delay(1, 30), seconds(2));
  EXPECT_EQ(restart_delay(4, 30), seconds(16));
  EXPECT_EQ(restart_delay(5, 30), seconds(30));
  EXPECT_EQ(restart_delay(1000, 30), seconds(30));
  EXPECT_EQ(restart_delay(-1, 30), seconds(1));
}

TEST(SupervisorTest, FileNamesOfIdsAreSafeAndDistinct) {
  EXPECT_EQ(file_tag("d/np/0").size(), 16u);
  EXPECT_NE(file_tag("d/np/0"), file_tag("d/np/1"));
  EXPECT_EQ(safe_name("../etc/passwd"), "_.._etc_passwd");
  EXPECT_EQ(safe_name(""), "_");
  EXPECT_EQ(safe_name(std::string(300, 'a')).size(), 100u);
}

}  // namespace
}  // namespace outpost::agent
