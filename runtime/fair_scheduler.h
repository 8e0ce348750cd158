// Shares one device among the models packed in a worker, so that a heavy model cannot starve a
// light one (start-time fair queuing over device time). Each model is a tenant; an execution
// thread acquires a slot before each execution (a batch, a generate step, a stream item) and
// releases it afterwards, charging the time it held the device, divided by the tenant's weight,
// to the tenant's virtual time. A free slot goes to the waiting tenant with the least virtual
// time, so a light model that waits gets the device as soon as the running execution ends, and
// keeps it until it has used as much device time as the heavy one. A thread whose tenant has more
// work releases and waits again in one step (requeue), so that a backlogged tenant competes
// continuously rather than only when its thread happens to be waiting. A tenant that was idle
// starts from the current virtual time (no credit is saved up while idle). Executions are never
// preempted: the longest wait is one execution of another tenant per slot.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"

namespace outpost::runtime {

class FairScheduler {
 public:
  // `slots`: executions that may run on the device at once (the spec's device_concurrency).
  FairScheduler(int slots, const Clock& clock);

  using TenantId = int;
  TenantId add_tenant(std::string name, double weight = 1.0);
  // Precondition: the tenant holds no slot and has no waiting thread.
  void remove_tenant(TenantId tenant);

  class Grant {
   public:
    Grant() = default;
    bool valid() const { return tenant_ >= 0; }

   private:
    friend class FairScheduler;
    TenantId tenant_ = -1;
    TimePoint started_{};
    std::optional<TimePoint> ended_;
  };

  // Blocks until `tenant` may use the device.
  Grant acquire(TenantId tenant);
  // Ends the charged time now (the execution is over; its results are still being sent).
  void stop_clock(Grant& grant);
  // Frees the slot and charges the time from acquire to stop_clock (or now).
  void release(Grant& grant);
  // release() and acquire() for the same tenant in one step.
  Grant requeue(Grant& grant);
  // Frees the slot without charging (the thread found nothing to do).
  void release_unused(Grant& grant);

  struct TenantStats {
    TenantId id = -1;
    std::string name;
    Duration device_time{};
    uint64_t grants = 0;
    double virtual_seconds = 0;
  };
  std::vector<TenantStats> stats() const;

 private:
  struct Tenant {
    std::string name;
    double weight = 1;
    double virtual_time = 0;  // seconds of device time / weight
    Duration device_time{};
    uint64_t grants = 0;
    int running = 0;
    int waiting = 0;
  };
  struct Waiter {
    uint64_t ticket;
    TenantId tenant;
  };
  // The waiter that gets the next free slot. Precondition: waiters_ is not empty.
  size_t next_waiter() const;
  void release_locked(Grant& grant, Duration charge);
  Duration charge_of(const Grant& grant) const;
  Grant wait_locked(std::unique_lock<std::mutex>& lock, TenantId tenant);

  const Clock& clock_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  int free_slots_;
  double virtual_now_ = 0;
  uint64_t next_ticket_ = 0;
  TenantId next_tenant_ = 0;
  std::map<TenantId, Tenant> tenants_;
  std::vector<Waiter> waiters_;
};

}  // namespace outpost::runtime
