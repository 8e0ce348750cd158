// The fair scheduler and the batch queue on an injected clock: exact and instant. The compute
// threads that executions are handed to, on real threads.
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/batch_queue.h"
#include "runtime/compute_threads.h"
#include "runtime/fair_scheduler.h"
#include "tests/support/fake_clock.h"

namespace outpost::runtime {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using testing::FakeClock;

// Waits (really) until `condition` holds; the scheduler's waiters are real threads.
template <class F>
bool eventually(F condition) {
  for (int i = 0; i < 5000; ++i) {
    if (condition()) return true;
    std::this_thread::sleep_for(microseconds(200));
  }
  return false;
}

// A heavy and a light tenant both waiting: the free slot goes to the one with less device
// time, again and again, until the light one has caught up.
TEST(FairScheduler, TheTenantWithLessDeviceTimeGoesFirst) {
  FakeClock clock;
  FairScheduler scheduler(1, clock);
  const auto heavy = scheduler.add_tenant("heavy");
  const auto light = scheduler.add_tenant("light");

  std::mutex mutex;
  std::vector<std::string> order;
  // The heavy tenant holds the device for 50 ms of (fake) time.
  auto first = scheduler.acquire(heavy);
  clock.advance(milliseconds(50));

  std::atomic<int> light_runs{0};
  std::atomic<bool> stop{false};
  std::atomic<int> waiting{0};
  // Both tenants are backlogged: each thread requeues while it has work.
  std::thread heavy_thread([&] {
    ++waiting;
    auto grant = scheduler.acquire(heavy);
    while (true) {
      {
        std::lock_guard lock(mutex);
        order.emplace_back("H");
      }
      clock.advance(milliseconds(50));
      if (stop) break;
      grant = scheduler.requeue(grant);
    }
    scheduler.release(grant);
  });
  std::thread light_thread([&] {
    ++waiting;
    auto grant = scheduler.acquire(light);
    for (int i = 0; i < 30; ++i) {
      {
        std::lock_guard lock(mutex);
        order.emplace_back("L");
      }
      clock.advance(milliseconds(2));
      ++light_runs;
      if (i + 1 < 30) grant = scheduler.requeue(grant);
    }
    scheduler.release(grant);
  });
  // Both wait now; release the first heavy execution.
  ASSERT_TRUE(eventually([&] { return waiting.load() == 2; }));
  std::this_thread::sleep_for(milliseconds(20));
  scheduler.release(first);
  ASSERT_TRUE(eventually([&] { return light_runs.load() == 30; }));
  stop = true;
  light_thread.join();
  heavy_thread.join();
  // 30 light runs of 2 ms = 60 ms: the light tenant runs first, 25 times (50 ms), before the
  // heavy one gets its second turn; with first-come-first-served they would alternate.
  size_t first_heavy = 0;
  while (first_heavy < order.size() && order[first_heavy] != "H") ++first_heavy;
  EXPECT_GE(first_heavy, 24u) << "order starts with " << first_heavy << " light runs";
  const auto stats = scheduler.stats();
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats[1].name, "light");
  EXPECT_EQ(stats[1].device_time, milliseconds(60));
  EXPECT_EQ(stats[1].grants, 30u);
}

TEST(FairScheduler, AnIdleTenantSavesNoCredit) {
  FakeClock clock;
  FairScheduler scheduler(1, clock);
  const auto busy = scheduler.add_tenant("busy");
  // 10 s of work while nobody else competes.
  for (int i = 0; i < 10; ++i) {
    auto grant = scheduler.acquire(busy);
    clock.advance(std::chrono::seconds(1));
    scheduler.release(grant);
  }
  const auto late = scheduler.add_tenant("late");
  auto grant = scheduler.acquire(late);
  clock.advance(milliseconds(10));
  scheduler.release(grant);
  const auto stats = scheduler.stats();
  // The newcomer starts at the current virtual time (the start of the busy tenant's last
  // execution), not 10 s behind it.
  EXPECT_GE(stats[1].virtual_seconds, 9.0);
  EXPECT_LT(stats[1].virtual_seconds, 9.1);
}

TEST(FairScheduler, SlotsBoundConcurrentExecutions) {
  FakeClock clock;
  FairScheduler scheduler(2, clock);
  const auto a = scheduler.add_tenant("a");
  auto g1 = scheduler.acquire(a);
  auto g2 = scheduler.acquire(a);
  std::atomic<bool> third{false};
  std::thread waiter([&] {
    auto g3 = scheduler.acquire(a);
    third = true;
    scheduler.release_unused(g3);
  });
  std::this_thread::sleep_for(milliseconds(20));
  EXPECT_FALSE(third.load());
  scheduler.release(g1);
  waiter.join();
  EXPECT_TRUE(third.load());
  scheduler.release(g2);
}

struct Entry {
  int64_t rows_ = 1;
  std::string key_ = "k";
  TimePoint at_{};
  int64_t rows() const { return rows_; }
  const std::string& batch_key() const { return key_; }
  TimePoint enqueued() const { return at_; }
};
using EntryPtr = std::shared_ptr<Entry>;

EntryPtr entry(int64_t rows, std::string key, TimePoint at) {
  return std::make_shared<Entry>(Entry{rows, std::move(key), at});
}

TEST(BatchQueue, TakesInOrderUpToMaxRowsAndStopsAtAnotherShape) {
  BatchingConfig config;
  config.max_batch_size = 8;
  BatchQueue<EntryPtr> queue(config);
  const TimePoint t0{};
  for (auto rows : {3, 3, 3}) ASSERT_TRUE(queue.push(entry(rows, "a", t0)));
  ASSERT_TRUE(queue.push(entry(1, "b", t0)));
  ASSERT_TRUE(queue.push(entry(1, "a", t0)));
  auto first = queue.take();
  ASSERT_EQ(first.size(), 2u);  // 3 + 3; a third would make 9 rows
  auto second = queue.take();
  ASSERT_EQ(second.size(), 1u);  // the next "a", then "b" has another shape
  auto third = queue.take();
  ASSERT_EQ(third.size(), 1u);
  EXPECT_EQ(third[0]->key_, "b");
  EXPECT_EQ(queue.take().size(), 1u);
  EXPECT_TRUE(queue.empty());
}

TEST(BatchQueue, DelayHoldsAPartialBatchUntilTheOldestWaitedLongEnough) {
  BatchingConfig config;
  config.max_batch_size = 4;
  config.max_queue_delay_us = 500;
  BatchQueue<EntryPtr> queue(config);
  const TimePoint t0{std::chrono::seconds(5)};
  EXPECT_FALSE(queue.ready_at().has_value());
  queue.push(entry(1, "a", t0));
  EXPECT_EQ(*queue.ready_at(), t0 + microseconds(500));
  queue.push(entry(1, "a", t0 + microseconds(100)));
  EXPECT_EQ(*queue.ready_at(), t0 + microseconds(500));
  queue.push(entry(2, "a", t0 + microseconds(200)));
  // A full batch is ready at once.
  EXPECT_EQ(*queue.ready_at(), t0);
  EXPECT_EQ(queue.take().size(), 3u);

  config.max_queue_delay_us = 0;
  BatchQueue<EntryPtr> eager(config);
  eager.push(entry(1, "a", t0));
  EXPECT_EQ(*eager.ready_at(), t0);
}

TEST(BatchQueue, IsBoundedAndRemovesCancelledEntries) {
  BatchingConfig config;
  config.max_queue_size = 2;
  BatchQueue<EntryPtr> queue(config);
  auto a = entry(1, "a", {});
  ASSERT_TRUE(queue.push(a));
  ASSERT_TRUE(queue.push(entry(1, "a", {})));
  EXPECT_FALSE(queue.push(entry(1, "a", {})));
  EXPECT_TRUE(queue.remove(a));
  EXPECT_FALSE(queue.remove(a));
  EXPECT_TRUE(queue.push(entry(1, "a", {})));
  // Without batching, one request per execution.
  EXPECT_EQ(queue.take().size(), 1u);
}

// Executions from many models' threads run on no more threads than the device has slots: each
// thread that runs a model has an OpenMP team of its own (compute_threads.h).
TEST(ComputeThreads, ManyCallersShareTheSlotsThreads) {
  ComputeThreads compute(2);
  std::mutex mutex;
  std::set<std::thread::id> ran_on;
  std::atomic<int> ran{0};
  constexpr int kCallers = 8;
  std::vector<std::thread> callers;
  callers.reserve(kCallers);
  for (int caller = 0; caller < kCallers; ++caller) {
    callers.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        int value = 0;
        compute.run([&] {
          {
            std::lock_guard lock(mutex);
            ran_on.insert(std::this_thread::get_id());
          }
          value = i + 1;
          ++ran;
        });
        // run() returns once the task is done: its effects are visible to the caller.
        EXPECT_EQ(value, i + 1);
      }
    });
  }
  for (auto& caller : callers) caller.join();
  EXPECT_EQ(ran.load(), 400);
  EXPECT_LE(ran_on.size(), 2u);
  EXPECT_EQ(ran_on.count(std::this_thread::get_id()), 0u);
}

TEST(ComputeThreads, ATasksExceptionReachesItsCallerAndTheThreadGoesOn) {
  ComputeThreads compute(1);
  EXPECT_THROW(compute.run([] { throw std::runtime_error("model raised"); }), std::runtime_error);
  bool ran = false;
  compute.run([&] { ran = true; });
  EXPECT_TRUE(ran);
}

}  // namespace
}  // namespace outpost::runtime
