// The agent's router on its own: which ready replica a call goes to, its limits, and the places
// a call holds until it ends. The worker calls themselves run in the e2e tests (real workers);
// here the targets have no worker client, which admission never touches.
#include "agent/router.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace outpost::agent {
namespace {

Router::Target target(const std::string& replica, const std::string& deployment) {
  return {replica, deployment, nullptr};
}

TEST(RouterTest, EachCallGoesToTheReadyReplicaWithTheFewestCallsInFlight) {
  Router router({100, 100});
  router.publish({target("d/np/0", "d"), target("d/np/1", "d"), target("e/np/0", "e")});
  std::map<std::string, int> chosen;
  std::vector<std::unique_ptr<Router::Lease>> held;
  for (int i = 0; i < 6; ++i) {
    auto admitted = router.admit("d", "");
    ASSERT_TRUE(admitted.ok()) << admitted.error().to_string();
    EXPECT_EQ(admitted->target.deployment_id, "d");
    ++chosen[admitted->target.replica_id];
    held.push_back(std::move(admitted->lease));
  }
  // Calls held open spread evenly; the other deployment's replica gets none.
  EXPECT_EQ(chosen["d/np/0"], 3);
  EXPECT_EQ(chosen["d/np/1"], 3);
  EXPECT_EQ(router.inflight("d/np/0"), 3);
  EXPECT_EQ(router.inflight("e/np/0"), 0);
  EXPECT_EQ(router.open_streams(), 6);
}

TEST(RouterTest, TheControlPlanesHintBreaksATieButNotALoadDifference) {
  Router router({100, 100});
  router.publish({target("d/np/0", "d"), target("d/np/1", "d")});
  auto first = router.admit("d", "d/np/1");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->target.replica_id, "d/np/1");  // a tie: the hint wins
  auto second = router.admit("d", "d/np/1");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->target.replica_id, "d/np/0");  // the hinted one is busier now
}

TEST(RouterTest, AnEndedCallGivesBackItsPlaces) {
  Router router({100, 100});
  router.publish({target("d/np/0", "d")});
  {
    auto admitted = router.admit("d", "");
    ASSERT_TRUE(admitted.ok());
    EXPECT_EQ(router.inflight("d/np/0"), 1);
    EXPECT_EQ(router.open_streams(), 1);
  }
  EXPECT_EQ(router.inflight("d/np/0"), 0);
  EXPECT_EQ(router.open_streams(), 0);
}

TEST(RouterTest, NoReadyReplicaIsUnavailableSoTheControlPlaneTriesAnotherNode) {
  Router router({100, 100});
  auto none = router.admit("d", "");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(none.error().message().find("no ready replica of deployment d"), std::string::npos);
  router.publish({target("e/np/0", "e")});
  EXPECT_EQ(router.admit("d", "").error().code(), ErrorCode::kUnavailable);
  // A refused call holds nothing.
  EXPECT_EQ(router.open_streams(), 0);
}

TEST(RouterTest, PastMaxStreamsACallIsRefusedNamingTheLimit) {
  Router router({2, 100});
  router.publish({target("d/np/0", "d")});
  auto a = router.admit("d", "");
  auto b = router.admit("d", "");
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = router.admit("d", "");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(c.error().message().find("workers.max_streams"), std::string::npos);
  EXPECT_EQ(router.open_streams(), 2);
  a->lease.reset();
  EXPECT_TRUE(router.admit("d", "").ok());
}

TEST(RouterTest, PastMaxInflightPerReplicaACallIsRefusedNamingTheLimit) {
  Router router({100, 1});
  router.publish({target("d/np/0", "d"), target("d/np/1", "d")});
  auto a = router.admit("d", "");
  auto b = router.admit("d", "");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->target.replica_id, b->target.replica_id);
  auto c = router.admit("d", "");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(c.error().message().find("workers.max_inflight_per_replica"), std::string::npos);
  EXPECT_EQ(router.open_streams(), 2);
  EXPECT_EQ(router.inflight("d/np/0") + router.inflight("d/np/1"), 2);
}

TEST(RouterTest, NewLimitsApplyToTheNextCall) {
  Router router({1, 100});
  router.publish({target("d/np/0", "d")});
  auto a = router.admit("d", "");
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(router.admit("d", "").ok());
  router.set_limits({2, 100});
  EXPECT_TRUE(router.admit("d", "").ok());
}

TEST(RouterTest, AReplicaNoLongerReadyTakesNoNewCallsButCountsItsOpenOnesUntilTheyEnd) {
  Router router({100, 100});
  router.publish({target("d/np/0", "d")});
  auto open = router.admit("d", "");
  ASSERT_TRUE(open.ok());
  router.publish({});  // the reconciler stops the replica
  EXPECT_EQ(router.admit("d", "").error().code(), ErrorCode::kUnavailable);
  // The reconciler unloads it only once this reaches 0.
  EXPECT_EQ(router.inflight("d/np/0"), 1);
  open->lease.reset();
  EXPECT_EQ(router.inflight("d/np/0"), 0);
  router.publish({target("d/np/0", "d")});  // loaded again: counts from 0
  EXPECT_EQ(router.inflight("d/np/0"), 0);
  EXPECT_TRUE(router.admit("d", "").ok());
}

}  // namespace
}  // namespace outpost::agent
