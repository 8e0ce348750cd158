// The agent's Reconciler with real outpost-worker processes and the classifier exported by
// PyTorch (scripts/make-example-models): a desired replica whose artifacts are in the cache goes
// ready, is routable as soon as it is reported ready, and answers what PyTorch answered; one
// whose artifact the cache lacks and cannot fetch (no control plane here) waits in `fetching`
// with the reason, without holding up the others; a worker killed under its replica is restarted
// and the replica is ready again; a replica no longer desired is unloaded and leaves the router;
// an older desired state changes nothing; and stop() ends every worker.
#include "agent/reconciler.h"

#include <future>

#include <gtest/gtest.h>

#include "common/sha256.h"
#include "protocol/tensor_wire.h"
#include "tests/support/child_process.h"
#include "tests/tunnel/tunnel_harness.h"
#include <signal.h>

namespace outpost::agent {
namespace {

using nlohmann::json;
using outpost::testing::eventually;
using outpost::testing::IoThread;
using outpost::testing::read_file;
using outpost::testing::wait_for;

class ReconcilerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cache = ArtifactCache::open(dir_.file("artifacts"), uint64_t{1} << 30);
    ASSERT_TRUE(cache.ok()) << cache.error().message();
    cache_ = std::move(cache).value();
    // The classifier's files are in the cache, as if fetched earlier.
    const std::string model_dir = std::string(OUTPOST_MODELS_DIR) + "/classifier/";
    for (const char* name : {"config.yaml", "model.pt"}) {
      const std::string bytes = read_file(model_dir + name);
      ASSERT_FALSE(bytes.empty()) << model_dir << name;
      artifacts_.push_back({name, sha256_hex(bytes), bytes.size()});
      auto writer = cache_->begin(artifacts_.back().sha256, bytes.size());
      ASSERT_TRUE(writer.ok()) << writer.error().message();
      ASSERT_TRUE((*writer)->append(bytes).ok());
      ASSERT_TRUE((*writer)->commit().ok());
    }
    AgentConfig config;
    config.state_dir = dir_.path();
    config.runtime_dir = dir_.path();
    config.worker_binary = OUTPOST_WORKER_BIN;
    config.worker_threads = 1;
    config.spare_workers = false;
    config.idle_worker_seconds = 0;
    config.restart_backoff_max_seconds = 1;
    auto inventory = detect_inventory("");
    ASSERT_TRUE(inventory.ok()) << inventory.error().message();
    router_ = std::make_shared<Router>(Router::Limits{16, 16});
    // No control plane: the session is never started, so a fetch fails.
    session_ = std::make_shared<ControlSession>(
        io_.io(), config, CredentialStore(dir_.path(), dir_.file("join-token")),
        [] { return json::object(); }, ControlSession::Callbacks{});
    reconciler_ = std::make_shared<Reconciler>(io_.io(), config, std::move(inventory).value(),
                                               *cache_, session_, router_);
  }

  void TearDown() override {
    if (!reconciler_) return;
    std::vector<int> pids;
    const json status = reconciler_->status();
    for (const auto& worker : status["workers"]) {
      if (worker.value("pid", 0) > 0) pids.push_back(worker.value("pid", 0));
    }
    std::promise<void> stopped;
    reconciler_->stop([&stopped] { stopped.set_value(); });
    auto future = stopped.get_future();
    wait_for(future, "the reconciler's stop");
    // Every worker it ran has ended (and was reaped: no zombie answers kill(pid, 0)).
    for (const int pid : pids) {
      EXPECT_NE(::kill(pid, 0), 0) << "worker " << pid << " outlived stop()";
    }
    reconciler_.reset();
  }

  protocol::DesiredReplica replica(const std::string& id, const std::string& deployment) const {
    protocol::DesiredReplica out;
    out.replica_id = id;
    out.deployment_id = deployment;
    out.user_id = "alice";
    out.model_id = "classifier";
    out.model_version_id = "v1";
    out.artifacts = artifacts_;
    out.cpu_millicores = 500;
    out.memory_bytes = uint64_t{256} << 20;
    return out;
  }

  // The state the last report gives `replica_id` ("" when the report lacks it).
  std::string state_of(const std::string& replica_id) const {
    for (const auto& status : reconciler_->report().replicas) {
      if (status.replica_id == replica_id) return status.state;
    }
    return "";
  }

  std::optional<protocol::ReplicaStatus> status_of(const std::string& replica_id) const {
    for (const auto& status : reconciler_->report().replicas) {
      if (status.replica_id == replica_id) return status;
    }
    return std::nullopt;
  }

  // PyTorch's inputs and outputs for the classifier (scripts/make-example-models).
  static json reference() {
    return json::parse(read_file(std::string(OUTPOST_MODELS_DIR) + "/reference/classifier.json"));
  }

  // The classifier's answer through the router's ready replica of `deployment`, compared with
  // PyTorch's.
  void expect_answers_like_pytorch(const std::string& deployment) {
    // A replica whose report says ready is in the router already: the control plane may route
    // to it at once.
    auto admission = router_->admit(deployment, "");
    ASSERT_TRUE(admission.ok()) << admission.error().message();
    const json expected = reference();
    auto future = admission->target.client->unary(admission->target.replica_id, "predict",
                                                  protocol::WireValue{expected["inputs"], {}});
    auto answer = wait_for(future, "the worker's answer");
    ASSERT_TRUE(answer.ok()) << answer.error().message();
    auto probs = protocol::decode_tensor(answer->value["probs"], answer->parts, 1 << 20, "probs");
    ASSERT_TRUE(probs.ok()) << probs.error().message();
    const json got = protocol::tensor_values_json(*probs);
    ASSERT_EQ(got["shape"], expected["outputs"]["probs"]["shape"]);
    const auto& want = expected["outputs"]["probs"]["values"];
    ASSERT_EQ(got["values"].size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(got["values"][i].get<double>(), want[i].get<double>(), 1e-5) << "element " << i;
    }
  }

  outpost::testing::TempDir dir_;
  IoThread io_;
  std::unique_ptr<ArtifactCache> cache_;
  std::vector<protocol::ArtifactRef> artifacts_;
  std::shared_ptr<Router> router_;
  std::shared_ptr<ControlSession> session_;
  std::shared_ptr<Reconciler> reconciler_;
};

TEST_F(ReconcilerTest, AReplicaGoesReadyAnswersLikePyTorchAndLeavesWhenNoLongerDesired) {
  reconciler_->apply({1, {replica("dep-a/np/0", "dep-a")}});
  ASSERT_TRUE(eventually([&] { return state_of("dep-a/np/0") == "ready"; }))
      << reconciler_->status().dump();
  EXPECT_EQ(reconciler_->report().applied_version, 1);
  EXPECT_EQ(reconciler_->summary(), "1 of 1 replicas ready");
  expect_answers_like_pytorch("dep-a");

  // An older desired state changes nothing. apply() wakes the reconcile thread at once, so a
  // state taken by mistake would show within a few passes (500 ms apart at most).
  reconciler_->apply({0, {}});
  EXPECT_FALSE(eventually(
      [&] {
        return reconciler_->report().applied_version != 1 || state_of("dep-a/np/0") != "ready";
      },
      std::chrono::milliseconds(1500)))
      << reconciler_->status().dump();

  reconciler_->apply({2, {}});
  ASSERT_TRUE(eventually([&] { return reconciler_->report().replicas.empty(); }))
      << reconciler_->status().dump();
  EXPECT_EQ(reconciler_->report().applied_version, 2);
  const auto refused = router_->admit("dep-a", "");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnavailable);
  // No spare and no idle time: the worker goes with its last replica.
  EXPECT_TRUE(eventually([&] { return reconciler_->status()["workers"].empty(); }))
      << reconciler_->status().dump();
}

TEST_F(ReconcilerTest, AnArtifactThatCannotBeFetchedHoldsUpOnlyItsOwnReplica) {
  auto missing = replica("dep-b/np/0", "dep-b");
  const std::string other_bytes = "bytes this agent has never seen";
  missing.artifacts[1] = {"model.pt", sha256_hex(other_bytes), other_bytes.size()};
  reconciler_->apply({1, {replica("dep-a/np/0", "dep-a"), missing}});
  ASSERT_TRUE(eventually([&] { return state_of("dep-a/np/0") == "ready"; }))
      << reconciler_->status().dump();
  expect_answers_like_pytorch("dep-a");
  const auto waiting = status_of("dep-b/np/0");
  ASSERT_TRUE(waiting.has_value());
  EXPECT_EQ(waiting->state, "fetching");
  EXPECT_NE(waiting->message.find("model.pt"), std::string::npos)
      << "a fetching replica names what it waits for: " << waiting->message;
  EXPECT_FALSE(router_->admit("dep-b", "").ok());
}

TEST_F(ReconcilerTest, AWorkerKilledUnderItsReplicaIsRestartedAndTheReplicaIsReadyAgain) {
  reconciler_->apply({1, {replica("dep-a/np/0", "dep-a")}});
  ASSERT_TRUE(eventually([&] { return state_of("dep-a/np/0") == "ready"; }))
      << reconciler_->status().dump();
  const json workers = reconciler_->status()["workers"];
  ASSERT_EQ(workers.size(), 1u) << workers.dump();
  const int pid = workers[0].value("pid", 0);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);

  ASSERT_TRUE(eventually([&] {
    const json now = reconciler_->status()["workers"];
    return now.size() == 1 && now[0].value("restarts", 0) >= 1 && state_of("dep-a/np/0") == "ready";
  })) << reconciler_->status().dump();
  EXPECT_NE(reconciler_->status()["workers"][0].value("pid", 0), pid);
  expect_answers_like_pytorch("dep-a");
}

}  // namespace
}  // namespace outpost::agent
