#include "tunnel/backoff.h"

#include <gtest/gtest.h>

#include "tests/support/fake_clock.h"

namespace outpost::tunnel {
namespace {

using outpost::testing::FakeClock;
using outpost::testing::FakeRandom;
using std::chrono::milliseconds;

TEST(BackoffTest, FullJitterDoublesUpToTheCap) {
  FakeClock clock;
  FakeRandom random({0.999});  // near the top of each range
  ReconnectBackoff backoff({}, clock, random);
  // The defaults: from 250 ms, doubling, capped at 2 s.
  const int64_t expected_ceilings[] = {250, 500, 1000, 2000, 2000, 2000};
  for (const int64_t ceiling : expected_ceilings) {
    const auto delay = backoff.next_delay(FailureKind::kTransient);
    EXPECT_LT(delay.count(), ceiling);
    EXPECT_GE(delay.count(), ceiling * 99 / 100);
  }
}

TEST(BackoffTest, ALongOutageNeverWaitsMoreThanTheCapBetweenDials) {
  FakeClock clock;
  FakeRandom random({0.999});
  ReconnectBackoff backoff({}, clock, random);
  // An hour of failures (a partition, a control plane down): each wait stays under 2 s, so the
  // dial after the network heals comes within 2 s of it.
  for (int i = 0; i < 3600; ++i) {
    ASSERT_LT(backoff.next_delay(FailureKind::kTransient), milliseconds(2000)) << "failure " << i;
  }
  // A cap of its own (agent.yaml's control_plane.reconnect_max_seconds).
  BackoffOptions one_second;
  one_second.cap = milliseconds(1000);
  ReconnectBackoff capped(one_second, clock, random);
  const int64_t ceilings[] = {250, 500, 1000, 1000};
  for (const int64_t ceiling : ceilings) {
    const auto delay = capped.next_delay(FailureKind::kTransient);
    EXPECT_LT(delay.count(), ceiling);
    EXPECT_GE(delay.count(), ceiling * 99 / 100);
  }
}

TEST(BackoffTest, JitterSpreadsDelaysDownToZero) {
  FakeClock clock;
  FakeRandom random({0.0, 0.5});
  ReconnectBackoff backoff({}, clock, random);
  EXPECT_EQ(backoff.next_delay(FailureKind::kTransient), milliseconds(0));
  EXPECT_EQ(backoff.next_delay(FailureKind::kTransient), milliseconds(250));  // 0.5 * 500 ms
}

TEST(BackoffTest, RefusalsStartAtSecondsAndDoubleToMinutesWithHalfJitter) {
  FakeClock clock;
  FakeRandom random({0.0, 0.999});
  ReconnectBackoff backoff({}, clock, random);
  // The first refusal in a row waits 5-10 s (a fixed credential or a proxy's one-off 407 is
  // tried again soon), the next 10-20 s, ...
  EXPECT_EQ(backoff.next_delay(FailureKind::kRefused), milliseconds(5'000));
  const auto second = backoff.next_delay(FailureKind::kRefused);
  EXPECT_GE(second, milliseconds(19'900));
  EXPECT_LT(second, milliseconds(20'000));
  // ... up to 2.5-5 min for a credential that stays wrong.
  FakeRandom low({0.0});
  ReconnectBackoff many({}, clock, low);
  milliseconds last{0};
  for (int i = 0; i < 12; ++i) last = many.next_delay(FailureKind::kRefused);
  EXPECT_EQ(last, milliseconds(150'000));
  // The short cap of transient failures does not shorten them.
  BackoffOptions short_cap;
  short_cap.cap = milliseconds(1000);
  ReconnectBackoff capped(short_cap, clock, low);
  EXPECT_EQ(capped.next_delay(FailureKind::kRefused), milliseconds(5'000));
}

TEST(BackoffTest, ResetsOnlyAfterAStableConnection) {
  FakeClock clock;
  FakeRandom random({0.999});
  ReconnectBackoff backoff({}, clock, random);
  for (int i = 0; i < 4; ++i) (void)backoff.next_delay(FailureKind::kTransient);
  // Up for 5 s, then lost: a flap, the count stays.
  backoff.on_connected();
  clock.advance(std::chrono::seconds(5));
  backoff.on_disconnected();
  EXPECT_EQ(backoff.consecutive_failures(), 4);
  EXPECT_GE(backoff.next_delay(FailureKind::kTransient), milliseconds(1'990));  // at the cap
  // Up for 61 s: stable, so the next failure starts from the base again.
  backoff.on_connected();
  clock.advance(std::chrono::seconds(61));
  backoff.on_disconnected();
  EXPECT_EQ(backoff.consecutive_failures(), 0);
  EXPECT_LT(backoff.next_delay(FailureKind::kTransient), milliseconds(250));
}

}  // namespace
}  // namespace outpost::tunnel
