// The autoscaler's decisions on an injected clock (seconds passed in by the test), and the
// bin-packing scheduler that places the replicas it asks for.
#include <gtest/gtest.h>

#include "controlplane/scaling/autoscaler.h"
#include "controlplane/scaling/scheduler.h"

namespace outpost::control {
namespace {

using nlohmann::json;

ScalePolicy policy(int64_t min, int64_t max) {
  ScalePolicy p;
  p.autoscale.min_replicas = min;
  p.autoscale.max_replicas = max;
  p.autoscale.traffic_history_seconds = 10;
  p.autoscale.scale_up_delay_seconds = 5;
  p.autoscale.scale_down_delay_seconds = 20;
  p.autoscale.scale_to_zero_delay_seconds = 60;
  p.target_ongoing_requests = 2;
  return p;
}

// Feeds one sample a second from `from` to `to` (inclusive) and evaluates after each; returns
// the first change, if any, with the time it happened.
std::optional<std::pair<double, ScaleChange>> run(ReplicaScaler& scaler, double from, double to,
                                                  double ongoing) {
  for (double t = from; t <= to; t += 1) {
    scaler.observe(t, ongoing);
    if (auto change = scaler.evaluate(t)) return std::make_pair(t, *change);
  }
  return std::nullopt;
}

TEST(AutoscalerTest, ScalesUpOnlyAfterTheUpDelay) {
  ReplicaScaler scaler(policy(1, 5), 1, 0);
  // 6 ongoing requests against a target of 2 per replica: 3 replicas, once the mean over the
  // 10 s window gets there and the 5 s delay has passed.
  const auto change = run(scaler, 0, 30, 6);
  ASSERT_TRUE(change.has_value());
  EXPECT_EQ(change->second.from, 1);
  EXPECT_EQ(change->second.to, 3);
  EXPECT_GE(change->first, 5);  // not before the delay
  EXPECT_LE(change->first, 6);  // and not much after it
  EXPECT_NE(change->second.reason.find("target 2 per replica"), std::string::npos)
      << change->second.reason;
  // A short burst, averaged over the window, stays within one replica's target: no change.
  ReplicaScaler calm(policy(1, 5), 1, 0);
  EXPECT_FALSE(run(calm, 0, 1, 3).has_value());
  EXPECT_FALSE(run(calm, 2, 30, 0).has_value());
  EXPECT_EQ(calm.replicas(), 1);
  // Load that drops before the delay is over does not scale either.
  ReplicaScaler brief(policy(1, 5), 1, 0);
  EXPECT_FALSE(run(brief, 0, 3, 5).has_value());  // recommends 3, for 4 s only
  brief.observe(4, 0);
  for (double t = 4; t <= 12; t += 1) brief.observe(t, 0);
  EXPECT_EQ(brief.recommendation(12), 1);
  EXPECT_FALSE(brief.evaluate(12).has_value());
}

TEST(AutoscalerTest, NeverLeavesTheMinMaxBounds) {
  ReplicaScaler scaler(policy(2, 4), 2, 0);
  EXPECT_EQ(run(scaler, 0, 60, 100)->second.to, 4);
  EXPECT_EQ(scaler.recommendation(61), 4);
  ReplicaScaler idle(policy(2, 4), 2, 0);
  EXPECT_FALSE(run(idle, 0, 500, 0).has_value());  // min_replicas 2: never below
  // A changed config applies at the next decision.
  idle.set_policy(policy(3, 4));
  EXPECT_EQ(idle.evaluate(501)->to, 3);
}

TEST(AutoscalerTest, ScalesDownAfterTheDownDelayAndToZeroAfterTheIdleTime) {
  ReplicaScaler scaler(policy(0, 5), 3, 0);
  // 2 ongoing: one replica is enough. The window (10 s) must first forget the busier past;
  // then the 20 s down delay runs.
  const auto down = run(scaler, 0, 100, 2);
  ASSERT_TRUE(down.has_value());
  EXPECT_EQ(down->second.to, 1);
  EXPECT_GE(down->first, 20);
  // Traffic stops: one replica stays until 60 s after the last request, then none.
  const double last_busy = down->first;
  const auto zero = run(scaler, last_busy + 1, last_busy + 200, 0);
  ASSERT_TRUE(zero.has_value());
  EXPECT_EQ(zero->second.to, 0);
  EXPECT_GE(zero->first, last_busy + 60);
  EXPECT_LE(zero->first, last_busy + 61);
  EXPECT_NE(zero->second.reason.find("no request for 60 s"), std::string::npos);
}

TEST(AutoscalerTest, TheIdleTimeToZeroDoesNotWaitForALongerTrafficWindow) {
  ScalePolicy p = policy(0, 5);
  p.autoscale.traffic_history_seconds = 300;  // longer than the 60 s to zero
  ReplicaScaler scaler(p, 1, 0);
  ASSERT_FALSE(run(scaler, 0, 5, 1).has_value());  // busy until t = 5
  const auto zero = run(scaler, 6, 400, 0);
  ASSERT_TRUE(zero.has_value());
  EXPECT_EQ(zero->second.to, 0);
  EXPECT_GE(zero->first, 65);
  EXPECT_LE(zero->first, 66);
}

TEST(AutoscalerTest, ARequestAtZeroGetsAReplicaAtOnce) {
  ReplicaScaler scaler(policy(0, 5), 0, 0);
  EXPECT_FALSE(run(scaler, 0, 100, 0).has_value());
  const auto change = scaler.demand(101);
  ASSERT_TRUE(change.has_value());
  EXPECT_EQ(change->from, 0);
  EXPECT_EQ(change->to, 1);
  EXPECT_FALSE(scaler.demand(101.5).has_value());  // already on its way
  // A sample with ongoing requests at zero replicas also scales at once, without the delay.
  ReplicaScaler sampled(policy(0, 5), 0, 0);
  sampled.observe(10, 1);
  EXPECT_EQ(sampled.evaluate(10)->to, 1);
}

TEST(AutoscalerTest, PolicyComesFromTheDeploymentsAutoscaleConfig) {
  const json config{{"min_replicas", 1},
                    {"max_replicas", 7},
                    {"traffic_history_seconds", 30},
                    {"scale_up_delay_seconds", 40},
                    {"scale_down_delay_seconds", 50},
                    {"scale_to_zero_delay_seconds", 60},
                    {"disable_packing", false}};
  const ScalePolicy p = scale_policy(config, 3);
  EXPECT_EQ(p.autoscale.min_replicas, 1);
  EXPECT_EQ(p.autoscale.max_replicas, 7);
  EXPECT_EQ(p.autoscale.traffic_history_seconds, 30);
  EXPECT_EQ(p.autoscale.scale_up_delay_seconds, 40);
  EXPECT_EQ(p.autoscale.scale_down_delay_seconds, 50);
  EXPECT_EQ(p.autoscale.scale_to_zero_delay_seconds, 60);
  EXPECT_EQ(p.target_ongoing_requests, 3);
  EXPECT_EQ(initial_replicas(p), 1);
  EXPECT_EQ(initial_replicas(scale_policy({{"min_replicas", 0}}, 2)), 1);  // the first call is warm
  EXPECT_EQ(initial_replicas(scale_policy({{"min_replicas", 4}, {"max_replicas", 5}}, 2)), 4);
}

SchedulerNode cpu_node(const std::string& id, double cores, double memory,
                       const std::string& pool = "np") {
  SchedulerNode node;
  node.id = id;
  node.nodepool_id = pool;
  node.cpu_cores = cores;
  node.memory_bytes = memory;
  return node;
}

SchedulerNode gpu_node(const std::string& id, std::vector<double> gpus) {
  SchedulerNode node = cpu_node(id, 32, 256e9);
  node.accelerator_memory = std::move(gpus);
  return node;
}

SchedulerDeployment deployment(const std::string& id, int64_t replicas, ReplicaShape shape,
                               bool disable_packing = false) {
  SchedulerDeployment d;
  d.id = id;
  d.nodepool_ids = {"np"};
  d.replicas["np"] = replicas;
  d.shape = shape;
  d.disable_packing = disable_packing;
  return d;
}

std::map<std::string, std::string> where(const ScheduleResult& result) {
  std::map<std::string, std::string> out;
  for (const auto& replica : result.replicas) out[replica.id] = replica.node_id;
  return out;
}

TEST(SchedulerTest, PacksSmallReplicasOntoOneGpuAndDisablePackingSeparatesThem) {
  const ReplicaShape small{0, 0, 1, 4e9};
  // One GPU: two small replicas share it; with disable_packing only one gets it.
  const std::vector<SchedulerNode> one_gpu = {gpu_node("n1", {16e9})};
  EXPECT_EQ(schedule("u", {deployment("a", 1, small), deployment("b", 1, small)}, one_gpu, {})
                .replicas.size(),
            2u);
  const auto alone = schedule(
      "u", {deployment("a", 1, small, true), deployment("b", 1, small, true)}, one_gpu, {});
  EXPECT_EQ(alone.replicas.size(), 1u);
  ASSERT_EQ(alone.unplaced.size(), 1u);
  EXPECT_NE(alone.unplaced[0].reason.find("nothing else"), std::string::npos)
      << alone.unplaced[0].reason;
  const std::vector<SchedulerNode> nodes = {gpu_node("n1", {16e9, 16e9})};
  const auto packed =
      where(schedule("u", {deployment("a", 1, small), deployment("b", 1, small)}, nodes, {}));
  ASSERT_EQ(packed.size(), 2u);
  // Both on n1; the shape of the accelerators is the agent's business, but the scheduler's
  // accounting must leave the second GPU whole: a 16 GB replica still fits beside them.
  const auto with_big = schedule(
      "u",
      {deployment("a", 1, small), deployment("b", 1, small), deployment("big", 1, {0, 0, 1, 16e9})},
      nodes, {});
  EXPECT_EQ(with_big.replicas.size(), 3u);
  EXPECT_TRUE(with_big.unplaced.empty());
  // disable_packing: each takes a GPU of its own, so the big one no longer fits.
  const auto separate = schedule("u",
                                 {deployment("a", 1, small, true), deployment("b", 1, small, true),
                                  deployment("big", 1, {0, 0, 1, 16e9})},
                                 nodes, {});
  EXPECT_EQ(separate.replicas.size(), 2u);
  ASSERT_EQ(separate.unplaced.size(), 1u);
  EXPECT_NE(separate.unplaced[0].reason.find("accelerator"), std::string::npos)
      << separate.unplaced[0].reason;
}

TEST(SchedulerTest, BinPacksByMemoryAndCoresIntoTheFewestNodes) {
  // Three 8 GB nodes, six 2.5 GB replicas: best fit fills two nodes (3 + 3) and leaves one
  // empty, where a first-fit spread would touch all three.
  const std::vector<SchedulerNode> nodes = {cpu_node("n1", 8, 8e9), cpu_node("n2", 8, 8e9),
                                            cpu_node("n3", 8, 8e9)};
  std::vector<SchedulerDeployment> many;
  many.reserve(6);
  for (int i = 0; i < 6; ++i) many.push_back(deployment("m" + std::to_string(i), 1, {1, 2.5e9}));
  const auto result = schedule("u", many, nodes, {});
  ASSERT_EQ(result.replicas.size(), 6u);
  std::map<std::string, int> per_node;
  for (const auto& replica : result.replicas) ++per_node[replica.node_id];
  EXPECT_EQ(per_node.size(), 2u);
  // Cores are a limit too: 3 cores per replica, 8 per node: two fit on a node.
  std::vector<SchedulerDeployment> hungry;
  hungry.reserve(7);
  for (int i = 0; i < 7; ++i) hungry.push_back(deployment("h" + std::to_string(i), 1, {3, 0}));
  const auto cores = schedule("u", hungry, nodes, {});
  EXPECT_EQ(cores.replicas.size(), 6u);
  ASSERT_EQ(cores.unplaced.size(), 1u);
  EXPECT_NE(cores.unplaced[0].reason.find("cores"), std::string::npos) << cores.unplaced[0].reason;
}

TEST(SchedulerTest, SpreadsOneDeploymentsReplicasAndKeepsPlacedOnes) {
  const std::vector<SchedulerNode> nodes = {cpu_node("n2", 8, 8e9), cpu_node("n1", 8, 8e9)};
  const auto spread = schedule("u", {deployment("d", 2, {1, 1e9})}, nodes, {});
  ASSERT_EQ(spread.replicas.size(), 2u);
  EXPECT_NE(spread.replicas[0].node_id, spread.replicas[1].node_id);
  // A replica stays where it is while it still fits there.
  const auto kept =
      schedule("u", {deployment("d", 1, {1, 1e9})}, nodes, {{"u", "d/np/0", "d", "np", "n2"}});
  EXPECT_EQ(where(kept).at("d/np/0"), "n2");
}

TEST(SchedulerTest, OfflineNodesLoseTheirReplicasAndUnplacedSaysWhy) {
  std::vector<SchedulerNode> nodes = {cpu_node("n1", 8, 8e9), cpu_node("n2", 8, 8e9)};
  nodes[0].usable = false;
  const auto moved =
      schedule("u", {deployment("d", 1, {1, 1e9})}, nodes, {{"u", "d/np/0", "d", "np", "n1"}});
  EXPECT_EQ(where(moved).at("d/np/0"), "n2");
  nodes[1].usable = false;
  const auto none = schedule("u", {deployment("d", 1, {1, 1e9})}, nodes, {});
  ASSERT_EQ(none.unplaced.size(), 1u);
  EXPECT_NE(none.unplaced[0].reason.find("offline"), std::string::npos);
  const auto empty_pool = schedule("u", {deployment("d", 1, {})}, {}, {});
  ASSERT_EQ(empty_pool.unplaced.size(), 1u);
  EXPECT_NE(empty_pool.unplaced[0].reason.find("no node is enrolled"), std::string::npos);
  const auto too_big = schedule("u", {deployment("d", 1, {1, 64e9})}, {cpu_node("n1", 8, 8e9)}, {});
  ASSERT_EQ(too_big.unplaced.size(), 1u);
  EXPECT_NE(too_big.unplaced[0].reason.find("memory"), std::string::npos)
      << too_big.unplaced[0].reason;
}

TEST(SchedulerTest, ShapesAndNodesComeFromComputeInfoAndInventory) {
  const ReplicaShape shape = replica_shape(json{{"cpu_limit", "2"},
                                                {"cpu_requests", "500m"},
                                                {"cpu_memory", "4Gi"},
                                                {"num_accelerators", 2},
                                                {"accelerator_memory", "16Gi"}});
  EXPECT_DOUBLE_EQ(shape.cpu_cores, 0.5);  // requests reserve; limits only cap
  EXPECT_DOUBLE_EQ(replica_shape(json{{"cpu_limit", "2"}}).cpu_cores, 0);
  EXPECT_DOUBLE_EQ(shape.memory_bytes, 4.0 * (1 << 30));
  EXPECT_EQ(shape.accelerators, 2);
  EXPECT_DOUBLE_EQ(shape.accelerator_memory, 16.0 * (1 << 30));  // on each accelerator
  Node node;
  node.id = "n";
  node.nodepool_id = "np";
  node.inventory =
      json{{"cpu_cores", 16},
           {"memory_bytes", 64e9},
           {"gpus", json::array({{{"memory_bytes", 80e9}}, {{"memory_bytes", 80e9}}})}};
  const SchedulerNode offer = scheduler_node(node, true);
  EXPECT_EQ(offer.cpu_cores, 16);
  EXPECT_EQ(offer.memory_bytes, 64e9);
  EXPECT_EQ(offer.accelerator_memory, (std::vector<double>{80e9, 80e9}));
}

}  // namespace
}  // namespace outpost::control
