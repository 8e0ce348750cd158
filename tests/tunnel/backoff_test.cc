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
  const int64_t expected_ceilings[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
  for (const int64_t ceiling : expected_ceilings) {
    const auto delay = backoff.next_delay(FailureKind::kTransient);
    EXPECT_LT(delay.count(), ceiling);
    EXPECT_GE(delay.count(), ceiling * 99 / 100);
  }
}

TEST(BackoffTest, JitterSpreadsDelaysDownToZero) {
  FakeClock clock;
  FakeRandom random({0.0, 0.5});
  ReconnectBackoff backoff({}, clock, random);
  EXPECT_EQ(backoff.next_delay(FailureKind::kTransient), milliseconds(0));
  EXPECT_EQ(backoff.next_delay(FailureKind::kTransient), milliseconds(1000));  // 0.5 * 2 s
}

TEST(BackoffTest, RefusalsWaitMinutesWithHalfJitter) {
  FakeClock clock;
  FakeRandom random({0.0, 0.999});
  ReconnectBackoff backoff({}, clock, random);
  EXPECT_EQ(backoff.next_delay(FailureKind::kRefused), milliseconds(150'000));
  EXPECT_GE(backoff.next_delay(FailureKind::kRefused), milliseconds(299'000));
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
  EXPECT_GE(backoff.next_delay(FailureKind::kTransient), milliseconds(15'000));
  // Up for 61 s: stable, so the next failure starts from the base again.
  backoff.on_connected();
  clock.advance(std::chrono::seconds(61));
  backoff.on_disconnected();
  EXPECT_EQ(backoff.consecutive_failures(), 0);
  EXPECT_LT(backoff.next_delay(FailureKind::kTransient), milliseconds(1000));
}

}  // namespace
}  // namespace outpost::tunnel
