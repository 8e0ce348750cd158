#include "runtime/fair_scheduler.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <utility>

namespace outpost::runtime {

FairScheduler::FairScheduler(int slots, const Clock& clock)
    : clock_(clock), free_slots_(std::max(1, slots)) {}

FairScheduler::TenantId FairScheduler::add_tenant(std::string name, double weight) {
  std::lock_guard lock(mutex_);
  const TenantId id = next_tenant_++;
  Tenant tenant;
  tenant.name = std::move(name);
  tenant.weight = weight > 0 ? weight : 1;
  tenant.virtual_time = virtual_now_;
  tenants_.emplace(id, std::move(tenant));
  return id;
}

void FairScheduler::remove_tenant(TenantId tenant) {
  std::lock_guard lock(mutex_);
  const auto it = tenants_.find(tenant);
  assert(it != tenants_.end() && it->second.running == 0 && it->second.waiting == 0);
  tenants_.erase(it);
}

size_t FairScheduler::next_waiter() const {
  size_t best = 0;
  for (size_t i = 1; i < waiters_.size(); ++i) {
    const double vt = tenants_.at(waiters_[i].tenant).virtual_time;
    const double best_vt = tenants_.at(waiters_[best].tenant).virtual_time;
    if (vt < best_vt || (vt == best_vt && waiters_[i].ticket < waiters_[best].ticket)) best = i;
  }
  return best;
}

FairScheduler::Grant FairScheduler::acquire(TenantId tenant_id) {
  std::unique_lock lock(mutex_);
  Tenant& tenant = tenants_.at(tenant_id);
  if (tenant.running == 0 && tenant.waiting == 0) {
    // Back from idle: no credit for the time it did not compete.
    tenant.virtual_time = std::max(tenant.virtual_time, virtual_now_);
  }
  return wait_locked(lock, tenant_id);
}

FairScheduler::Grant FairScheduler::wait_locked(std::unique_lock<std::mutex>& lock,
                                                TenantId tenant_id) {
  Tenant& tenant = tenants_.at(tenant_id);
  const uint64_t ticket = next_ticket_++;
  waiters_.push_back({ticket, tenant_id});
  ++tenant.waiting;
  changed_.wait(lock, [&] { return free_slots_ > 0 && waiters_[next_waiter()].ticket == ticket; });
  waiters_.erase(waiters_.begin() + static_cast<std::ptrdiff_t>(next_waiter()));
  --tenant.waiting;
  ++tenant.running;
  ++tenant.grants;
  --free_slots_;
  virtual_now_ = std::max(virtual_now_, tenant.virtual_time);
  // Another slot may be free for the next waiter.
  if (free_slots_ > 0 && !waiters_.empty()) changed_.notify_all();
  Grant grant;
  grant.tenant_ = tenant_id;
  grant.started_ = clock_.now();
  return grant;
}

void FairScheduler::release_locked(Grant& grant, Duration charge) {
  Tenant& tenant = tenants_.at(grant.tenant_);
  --tenant.running;
  tenant.device_time += charge;
  tenant.virtual_time += std::chrono::duration<double>(charge).count() / tenant.weight;
  ++free_slots_;
  grant.tenant_ = -1;
  grant.ended_.reset();
}

Duration FairScheduler::charge_of(const Grant& grant) const {
  return grant.ended_.value_or(clock_.now()) - grant.started_;
}

void FairScheduler::stop_clock(Grant& grant) {
  if (grant.valid() && !grant.ended_) grant.ended_ = clock_.now();
}

void FairScheduler::release(Grant& grant) {
  if (!grant.valid()) return;
  const Duration used = charge_of(grant);
  std::lock_guard lock(mutex_);
  release_locked(grant, used);
  changed_.notify_all();
}

FairScheduler::Grant FairScheduler::requeue(Grant& grant) {
  const TenantId tenant = grant.tenant_;
  const Duration used = charge_of(grant);
  std::unique_lock lock(mutex_);
  release_locked(grant, used);
  changed_.notify_all();
  return wait_locked(lock, tenant);
}

void FairScheduler::release_unused(Grant& grant) {
  if (!grant.valid()) return;
  std::lock_guard lock(mutex_);
  release_locked(grant, Duration::zero());
  changed_.notify_all();
}

std::vector<FairScheduler::TenantStats> FairScheduler::stats() const {
  std::lock_guard lock(mutex_);
  std::vector<TenantStats> out;
  for (const auto& [id, tenant] : tenants_) {
    out.push_back({id, tenant.name, tenant.device_time, tenant.grants, tenant.virtual_time});
  }
  return out;
}

}  // namespace outpost::runtime
