#include "common/service_notify.h"

#include <cstdint>

#include <systemd/sd-daemon.h>

#include "common/log.h"

namespace outpost {

ServiceNotifier::ServiceNotifier() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) {
    watchdog_interval_ = std::chrono::microseconds(usec / 2);
  }
}

void ServiceNotifier::send(const std::string& state) {
  const int rc = sd_notify(0, state.c_str());
  if (rc < 0) LOG_DEBUG("service.sd_notify_failed", "sd_notify failed: " << rc);
}

void ServiceNotifier::ready() { send("READY=1"); }

void ServiceNotifier::status(const std::string& text) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (text == last_status_) return;
  last_status_ = text;
  send("STATUS=" + text);
}

void ServiceNotifier::watchdog() { send("WATCHDOG=1"); }

void ServiceNotifier::reloading() { send("RELOADING=1"); }

void ServiceNotifier::stopping() { send("STOPPING=1"); }

}  // namespace outpost
