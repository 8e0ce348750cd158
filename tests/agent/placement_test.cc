// Placement against inventories of fake GPUs (this machine has none): the logic is the same
// whatever NVML would have said.
#include "agent/placement.h"

#include <gtest/gtest.h>

namespace outpost::agent {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

Inventory fake_two_gpu_host() {
  Inventory inventory;
  inventory.cpu_cores = 16;
  inventory.memory_bytes = 64 * kGiB;
  inventory.gpus = {{0, "FAKE GPU 0", "GPU-fake-0", 24 * kGiB, {}},
                    {1, "FAKE GPU 1", "GPU-fake-1", 24 * kGiB, {}}};
  inventory.source = "fake";
  return inventory;
}

protocol::DesiredReplica gpu_replica(const std::string& id, uint64_t gib, bool exclusive = false) {
  protocol::DesiredReplica replica;
  replica.replica_id = id;
  replica.num_accelerators = 1;
  replica.accelerator_memory_bytes = gib * kGiB;
  replica.memory_bytes = 1 * kGiB;
  replica.disable_packing = exclusive;
  return replica;
}

protocol::DesiredReplica cpu_replica(const std::string& id, uint64_t gib,
                                     uint64_t millicores = 500) {
  protocol::DesiredReplica replica;
  replica.replica_id = id;
  replica.memory_bytes = gib * kGiB;
  replica.cpu_millicores = millicores;
  return replica;
}

TEST(PlacementTest, PacksSmallReplicasOntoOneGpuAndOneWorker) {
  AgentConfig config;
  const auto devices = devices_of(fake_two_gpu_host(), config);
  const auto placement = place(devices, {gpu_replica("a", 8), gpu_replica("b", 8)}, {});
  EXPECT_TRUE(placement.unplaced.empty());
  EXPECT_EQ(placement.device_of.at("a"), placement.device_of.at("b"));
  ASSERT_EQ(placement.workers.size(), 1u);
  EXPECT_EQ(placement.workers[0].replica_ids.size(), 2u);
}

TEST(PlacementTest, DisablePackingGivesEachReplicaADeviceOfItsOwn) {
  AgentConfig config;
  const auto devices = devices_of(fake_two_gpu_host(), config);
  const auto placement = place(devices, {gpu_replica("a", 8, true), gpu_replica("b", 8, true)}, {});
  EXPECT_NE(placement.device_of.at("a"), placement.device_of.at("b"));
  EXPECT_EQ(placement.workers.size(), 2u);
  // A third exclusive replica has nowhere to go, and the reason says why.
  const auto crowded =
      place(devices,
            {gpu_replica("a", 8, true), gpu_replica("b", 8, true), gpu_replica("c", 1, true)}, {});
  ASSERT_EQ(crowded.unplaced.count("c"), 1u);
  EXPECT_NE(crowded.unplaced.at("c").find("disable_packing"), std::string::npos);
}

TEST(PlacementTest, BestFitFillsGapsAndReportsWhatDoesNotFit) {
  AgentConfig config;
  config.reserved_accelerator_memory_bytes = 2 * kGiB;  // 22 GiB usable per GPU
  const auto devices = devices_of(fake_two_gpu_host(), config);
  const auto placement = place(devices,
                               {gpu_replica("big", 20), gpu_replica("mid", 12),
                                gpu_replica("small", 2), gpu_replica("huge", 30)},
                               {});
  // 20 + 2 share one GPU (2 GiB left there); 12 takes the other.
  EXPECT_EQ(placement.device_of.at("big"), placement.device_of.at("small"));
  EXPECT_NE(placement.device_of.at("big"), placement.device_of.at("mid"));
  ASSERT_EQ(placement.unplaced.count("huge"), 1u);
  EXPECT_NE(placement.unplaced.at("huge").find("needs 30.00 GiB of accelerator memory"),
            std::string::npos)
      << placement.unplaced.at("huge");
}

TEST(PlacementTest, RunningReplicasKeepTheirPlaceWhenTheDesiredStateChanges) {
  AgentConfig config;
  const auto devices = devices_of(fake_two_gpu_host(), config);
  const auto first = place(devices, {gpu_replica("a", 20)}, {});
  // "b" would fit best where "a" is only if "a" moved; it does not move.
  const auto second = place(devices, {gpu_replica("b", 4), gpu_replica("a", 20)}, first);
  EXPECT_EQ(second.device_of.at("a"), first.device_of.at("a"));
  EXPECT_TRUE(second.unplaced.empty());
}

TEST(PlacementTest, CpuReplicasShareTheCoresAndAreBoundByMemory) {
  AgentConfig config;
  config.reserved_memory_bytes = 2 * kGiB;
  Inventory host;
  host.cpu_cores = 2;
  host.memory_bytes = 8 * kGiB;  // 6 GiB usable
  const auto devices = devices_of(host, config);
  // Three replicas that each ask for a whole core share two cores (workers share the CPU)...
  const auto placement =
      place(devices,
            {cpu_replica("a", 2, 1000), cpu_replica("b", 2, 1000), cpu_replica("c", 2, 1000),
             cpu_replica("d", 1), gpu_replica("g", 1)},
            {});
  EXPECT_EQ(placement.device_of.at("a"), "cpu");
  EXPECT_EQ(placement.device_of.at("b"), "cpu");
  EXPECT_EQ(placement.device_of.at("c"), "cpu");
  // ...but memory is a hard limit: 6 GiB are taken.
  ASSERT_EQ(placement.unplaced.count("d"), 1u);
  EXPECT_NE(placement.unplaced.at("d").find("memory"), std::string::npos);
  EXPECT_NE(placement.unplaced.at("g").find("has none"), std::string::npos);
}

TEST(PlacementTest, MpsGivesEachReplicaItsOwnWorkerAndMigSplitsTheGpu) {
  AgentConfig config;
  config.slicing_per_gpu[0] = SlicingMode::kMps;
  config.slicing_per_gpu[1] = SlicingMode::kMig;
  Inventory host = fake_two_gpu_host();
  host.gpus[1].mig = {{"MIG-a", 10 * kGiB}, {"MIG-b", 10 * kGiB}};
  const auto devices = devices_of(host, config);
  ASSERT_EQ(devices.size(), 4u);  // cpu, cuda:0, two MIG instances
  const auto placement = place(
      devices,
      {gpu_replica("x", 11), gpu_replica("y", 11), gpu_replica("m1", 9), gpu_replica("m2", 9)}, {});
  EXPECT_EQ(placement.device_of.at("x"), "cuda:0");
  EXPECT_EQ(placement.device_of.at("y"), "cuda:0");
  EXPECT_NE(placement.device_of.at("m1"), placement.device_of.at("m2"));
  int mps_workers = 0;
  for (const auto& worker : placement.workers) {
    if (worker.slicing == SlicingMode::kMps) {
      ++mps_workers;
      EXPECT_EQ(worker.replica_ids.size(), 1u);
      EXPECT_EQ(worker.memory_limit_bytes, 11 * kGiB);
    }
  }
  EXPECT_EQ(mps_workers, 2);
}

TEST(PlacementTest, MaxWorkersKeepsRunningWorkersAndReportsTheRest) {
  AgentConfig config;
  config.slicing_per_gpu[0] = SlicingMode::kMps;  // a worker per replica
  const auto devices = devices_of(fake_two_gpu_host(), config);
  auto placement =
      place(devices, {gpu_replica("a", 4), gpu_replica("b", 4), gpu_replica("c", 4)}, {});
  ASSERT_EQ(placement.workers.size(), 3u);
  const std::string running = placement.workers[2].worker_id;
  const std::string kept_replica = placement.workers[2].replica_ids.at(0);
  cap_workers(placement, 2, {running});
  ASSERT_EQ(placement.workers.size(), 2u);
  EXPECT_EQ(placement.workers[0].worker_id, running);  // a running worker is never the one cut
  EXPECT_EQ(placement.device_of.count(kept_replica), 1u);
  ASSERT_EQ(placement.unplaced.size(), 1u);
  const auto& [cut, why] = *placement.unplaced.begin();
  EXPECT_EQ(placement.device_of.count(cut), 0u);
  EXPECT_NE(why.find("workers.max_workers (2) reached"), std::string::npos) << why;
  // Under the cap nothing changes.
  const auto before = placement.workers.size();
  cap_workers(placement, 16, {});
  EXPECT_EQ(placement.workers.size(), before);
}

}  // namespace
}  // namespace outpost::agent
