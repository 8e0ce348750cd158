// The SQLite state: it survives reopening, migrations run once, join tokens are single use and
// expire (on an injected clock), and the store itself keeps one deployment per model per
// nodepool; the autoscaler's counts survive a restart and go with their deployment; what the
// predict path reads is kept in memory, and a read after a write sees the write.
#include "controlplane/state/store.h"

#include <gtest/gtest.h>

#include "controlplane/auth/secrets.h"
#include "tests/controlplane/control_fixture.h"

namespace outpost::control {
namespace {

using nlohmann::json;
using testing::FakeWallClock;
using testing::TempDir;

std::unique_ptr<Store> open_store(const TempDir& dir, const WallClock& clock) {
  auto store = Store::open(dir.file("state.db"), clock);
  EXPECT_TRUE(store.ok()) << store.error().message();
  return std::move(store).value();
}

void seed(Store& store) {
  ASSERT_TRUE(store.create_user("alice", false).ok());
  ASSERT_TRUE(store.create_cluster({"alice", "cc", json{{"id", "cc"}}, 1}).ok());
  ASSERT_TRUE(
      store.create_nodepool({"alice", "np", "cc", std::nullopt, json{{"id", "np"}}, 1}).ok());
  ModelVersion version;
  version.user_id = "alice";
  version.model_id = "m";
  version.id = "v1";
  version.config = json::object();
  version.methods = json::array();
  version.artifacts = json::array();
  ASSERT_TRUE(store.create_version(version).ok());
}

// Nodes of alice's nodepool "np" (seed()), each enrolled with a join token of its own.
void enroll_nodes(Store& store, const FakeWallClock& clock, const std::vector<std::string>& ids) {
  const int64_t now = clock.now_seconds();
  for (const auto& id : ids) {
    const std::string token = "t" + id;
    ASSERT_TRUE(
        store.create_join_token({token, "alice", "cc", "np", "h", now, now + 60, std::nullopt})
            .ok());
    Node node;
    node.id = id;
    node.user_id = "alice";
    node.compute_cluster_id = "cc";
    node.nodepool_id = "np";
    node.inventory = json::object();
    ASSERT_TRUE(store.enroll_node(token, now, node).ok());
  }
}

TEST(StoreTest, StateSurvivesReopening) {
  TempDir dir;
  FakeWallClock clock;
  {
    auto store = open_store(dir, clock);
    EXPECT_EQ(store->schema_version(), Store::kSchemaVersion);
    seed(*store);
  }
  auto store = open_store(dir, clock);
  EXPECT_EQ(store->schema_version(), Store::kSchemaVersion);
  auto cluster = store->get_cluster("alice", "cc");
  ASSERT_TRUE(cluster.ok());
  EXPECT_EQ(cluster->doc["id"], "cc");
  auto latest = store->latest_version("alice", "m");
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->seq, 1);
}

TEST(StoreTest, ThrottleWindowsAreKeptAcrossReopeningUntilTheyAreOld) {
  TempDir dir;
  FakeWallClock clock;
  {
    auto store = open_store(dir, clock);
    ASSERT_TRUE(store->save_throttle_window({"10.0.0.1", 100, 10}).ok());
    ASSERT_TRUE(store->save_throttle_window({"10.0.0.2", 150, 10}).ok());
    ASSERT_TRUE(store->save_throttle_window({"10.0.0.1", 200, 10}).ok());  // a newer window
  }
  auto store = open_store(dir, clock);
  auto kept = store->list_throttle_windows(0);
  ASSERT_TRUE(kept.ok()) << kept.error().message();
  EXPECT_EQ(*kept, (std::vector<ThrottleWindow>{{"10.0.0.1", 200, 10}, {"10.0.0.2", 150, 10}}));
  // Windows that started at or before the cut-off are over: gone for good.
  kept = store->list_throttle_windows(150);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, (std::vector<ThrottleWindow>{{"10.0.0.1", 200, 10}}));
  EXPECT_EQ(store->list_throttle_windows(0)->size(), 1u);
}

TEST(StoreTest, ANewerSchemaIsRefused) {
  TempDir dir;
  FakeWallClock clock;
  { open_store(dir, clock); }
  {
    auto db = Database::open(dir.file("state.db"));
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->exec("UPDATE schema_version SET version = 99").ok());
  }
  auto store = Store::open(dir.file("state.db"), clock);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.error().message().find("newer"), std::string::npos);
}

TEST(StoreTest, TenancyIsPartOfEveryKey) {
  TempDir dir;
  FakeWallClock clock;
  auto store = open_store(dir, clock);
  seed(*store);
  ASSERT_TRUE(store->create_user("bob", false).ok());
  EXPECT_EQ(store->get_cluster("bob", "cc").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store->get_model("bob", "m").error().code(), ErrorCode::kNotFound);
  // Bob may reuse the same ids in his own namespace.
  EXPECT_TRUE(store->create_cluster({"bob", "cc", json{{"id", "cc"}}, 1}).ok());
}

TEST(StoreTest, OneDeploymentPerModelPerNodepool) {
  TempDir dir;
  FakeWallClock clock;
  auto store = open_store(dir, clock);
  seed(*store);
  Deployment first{"alice", "d1", "m", "v1", {"np"}, json::object(), 1};
  ASSERT_TRUE(store->create_deployment(first).ok());
  Deployment second{"alice", "d2", "m", "v1", {"np"}, json::object(), 1};
  const Status refused = store->create_deployment(second);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(refused.error().message().find("d1"), std::string::npos);
  // The nodepool cannot go while the deployment uses it.
  EXPECT_EQ(store->delete_nodepool("alice", "cc", "np").error().code(),
            ErrorCode::kFailedPrecondition);
}

TEST(StoreTest, ScalesSurviveReopeningAndGoWithTheirDeployment) {
  TempDir dir;
  FakeWallClock clock;
  {
    auto store = open_store(dir, clock);
    seed(*store);
    ASSERT_TRUE(
        store->create_deployment({"alice", "d1", "m", "v1", {"np"}, json::object(), 1}).ok());
    ASSERT_TRUE(store->set_scale({"alice", "d1", "np", 3}).ok());
    ASSERT_TRUE(store->set_scale({"alice", "d1", "np", 0}).ok());  // replaced, not added
  }
  auto store = open_store(dir, clock);
  EXPECT_EQ(*store->list_scales(), (std::vector<DeploymentScale>{{"alice", "d1", "np", 0}}));
  // A count for a deployment that does not exist is refused.
  EXPECT_FALSE(store->set_scale({"alice", "nope", "np", 1}).ok());
  ASSERT_TRUE(store->delete_deployment("alice", "d1").ok());
  EXPECT_TRUE(store->list_scales()->empty());
}

TEST(StoreTest, JoinTokensAreSingleUseAndExpire) {
  TempDir dir;
  FakeWallClock clock;
  auto store = open_store(dir, clock);
  seed(*store);
  const int64_t now = clock.now_seconds();
  JoinToken token{"t1", "alice", "cc", "np", hash_secret("s", 1000), now, now + 60, std::nullopt};
  ASSERT_TRUE(store->create_join_token(token).ok());
  Node node;
  node.id = "node-1";
  node.user_id = "alice";
  node.compute_cluster_id = "cc";
  node.nodepool_id = "np";
  node.name = "h";
  node.secret_hash = "x";
  node.inventory = json::object();
  ASSERT_TRUE(store->enroll_node("t1", now, node).ok());
  node.id = "node-2";
  EXPECT_EQ(store->enroll_node("t1", now, node).error().code(), ErrorCode::kUnauthenticated);

  JoinToken expiring{"t2", "alice", "cc", "np", "h", now, now + 60, std::nullopt};
  ASSERT_TRUE(store->create_join_token(expiring).ok());
  clock.advance(61);
  EXPECT_EQ(store->enroll_node("t2", clock.now_seconds(), node).error().code(),
            ErrorCode::kUnauthenticated);
  EXPECT_EQ(store->list_nodes("alice", "np")->size(), 1u);
}

TEST(StoreTest, MaxInstancesLimitsEnrollment) {
  TempDir dir;
  FakeWallClock clock;
  auto store = open_store(dir, clock);
  ASSERT_TRUE(store->create_user("alice", false).ok());
  ASSERT_TRUE(store->create_cluster({"alice", "cc", json::object(), 1}).ok());
  ASSERT_TRUE(store->create_nodepool({"alice", "np", "cc", 1, json::object(), 1}).ok());
  const int64_t now = clock.now_seconds();
  Node node;
  node.user_id = "alice";
  node.compute_cluster_id = "cc";
  node.nodepool_id = "np";
  node.inventory = json::object();
  for (const char* id : {"t1", "t2"}) {
    ASSERT_TRUE(
        store->create_join_token({id, "alice", "cc", "np", "h", now, now + 60, std::nullopt}).ok());
  }
  node.id = "n1";
  ASSERT_TRUE(store->enroll_node("t1", now, node).ok());
  node.id = "n2";
  EXPECT_EQ(store->enroll_node("t2", now, node).error().code(), ErrorCode::kResourceExhausted);
}

TEST(StoreTest, ReplacingReplicasBumpsOnlyTheNodesThatChanged) {
  TempDir dir;
  FakeWallClock clock;
  auto store = open_store(dir, clock);
  seed(*store);
  enroll_nodes(*store, clock, {"a", "b"});
  auto changed = store->replace_replicas("alice", {{"alice", "d/np/0", "d", "np", "a"}});
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(*changed, std::vector<std::string>{"a"});
  EXPECT_EQ(store->get_node("a")->desired_version, 1);
  EXPECT_EQ(store->get_node("b")->desired_version, 0);
  changed = store->replace_replicas("alice", {{"alice", "d/np/0", "d", "np", "a"}});
  EXPECT_TRUE(changed->empty());
  changed = store->replace_replicas("alice", {{"alice", "d/np/0", "d", "np", "b"}});
  EXPECT_EQ(*changed, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(store->get_node("a")->desired_version, 2);  // versions only grow
}

// Predicts read the model, the deployment, its version and the replicas from memory
// (store.h): every read here comes after the same read filled that memory, and must see the
// write between them.
TEST(StoreTest, AReadAfterAWriteSeesTheWriteThoughTheReadsAreKeptInMemory) {
  TempDir dir;
  FakeWallClock clock;
  auto store = open_store(dir, clock);
  seed(*store);
  enroll_nodes(*store, clock, {"a", "b"});
  ASSERT_TRUE(store->create_deployment({"alice", "d1", "m", "v1", {"np"}, json::object(), 1}).ok());
  const Replica on_a{"alice", "d1/np/0", "d1", "np", "a"};
  const Replica on_b{"alice", "d1/np/1", "d1", "np", "b"};
  ASSERT_TRUE(store->replace_replicas("alice", {on_a}).ok());
  for (int read = 0; read < 2; ++read) {  // the second read is the one kept in memory
    EXPECT_EQ(*store->list_replicas("alice"), std::vector<Replica>{on_a});
    EXPECT_EQ(store->get_deployment("alice", "d1")->nodepool_ids, std::vector<std::string>{"np"});
    EXPECT_EQ(store->get_version("alice", "m", "v1")->seq, 1);
    EXPECT_EQ(store->get_model("alice", "m")->id, "m");
    EXPECT_EQ(store->deployment_on_nodepool("alice", "np", "m")->id, "d1");
    EXPECT_EQ(store->get_nodepool("alice", "np")->compute_cluster_id, "cc");
  }
  EXPECT_EQ(store->deployment_on_nodepool("alice", "np", "other").error().code(),
            ErrorCode::kNotFound);
  // Another user's rows are not the same rows.
  EXPECT_EQ(store->get_deployment("bob", "d1").error().code(), ErrorCode::kNotFound);

  // Replicas replaced, then a node removed with its replica.
  ASSERT_TRUE(store->replace_replicas("alice", {on_b, on_a}).ok());
  EXPECT_EQ(*store->list_replicas("alice"), (std::vector<Replica>{on_a, on_b}));
  ASSERT_TRUE(store->delete_node("alice", "b").ok());
  EXPECT_EQ(*store->list_replicas("alice"), std::vector<Replica>{on_a});

  // The deployment deleted: it is gone, and so are its replicas once rescheduled.
  ASSERT_TRUE(store->delete_deployment("alice", "d1").ok());
  EXPECT_EQ(store->get_deployment("alice", "d1").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store->deployment_on_nodepool("alice", "np", "m").error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(store->replace_replicas("alice", {}).ok());
  EXPECT_TRUE(store->list_replicas("alice")->empty());

  // The model deleted: it and its versions are gone.
  ASSERT_TRUE(store->delete_model("alice", "m").ok());
  EXPECT_EQ(store->get_model("alice", "m").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store->get_version("alice", "m", "v1").error().code(), ErrorCode::kNotFound);

  // The nodepool deleted.
  ASSERT_TRUE(store->delete_nodepool("alice", "cc", "np").ok());
  EXPECT_EQ(store->get_nodepool("alice", "np").error().code(), ErrorCode::kNotFound);
}

}  // namespace
}  // namespace outpost::control
