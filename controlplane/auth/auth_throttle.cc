#include "controlplane/auth/auth_throttle.h"

#include <array>

#include "common/log.h"
#include <arpa/inet.h>
#include <netinet/in.h>

namespace outpost::control {

namespace {

// Beyond this many tracked addresses, closed windows are dropped; if all are open, the table is
// cleared (an attacker holding that many addresses is not slowed by a per-address budget anyway).
constexpr size_t kMaxTracked = 100'000;

}  // namespace

std::string AuthThrottle::source_of(std::string_view remote) {
  std::string address(remote);
  const auto colon = address.rfind(':');
  if (colon != std::string::npos) address.resize(colon);  // the port
  if (address.size() > 2 && address.front() == '[' && address.back() == ']') {
    address = address.substr(1, address.size() - 2);
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, address.c_str(), &v6) != 1) return address;  // IPv4, or unparsable
  std::array<char, INET6_ADDRSTRLEN> text{};
  if (IN6_IS_ADDR_V4MAPPED(&v6)) {
    in_addr v4{};
    std::copy(v6.s6_addr + 12, v6.s6_addr + 16, reinterpret_cast<unsigned char*>(&v4));
    return inet_ntop(AF_INET, &v4, text.data(), text.size()) != nullptr ? text.data() : address;
  }
  std::fill(v6.s6_addr + 8, v6.s6_addr + 16, 0);
  if (inet_ntop(AF_INET6, &v6, text.data(), text.size()) == nullptr) return address;
  return std::string(text.data()) + "/64";
}

int64_t AuthThrottle::retry_after(std::string_view remote) {
  if (options_.max_failures <= 0) return 0;
  const std::string source = source_of(remote);
  const int64_t now = clock_.now_seconds();
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = windows_.find(source);
  if (it == windows_.end() || it->second.failures < options_.max_failures) return 0;
  const int64_t end = it->second.start + options_.window_seconds;
  // A clock set back also ends the window: the throttle never holds longer than one window.
  if (now >= end || now < it->second.start) {
    windows_.erase(it);
    return 0;
  }
  return end - now;
}

void AuthThrottle::record_failure(std::string_view remote) {
  if (options_.max_failures <= 0) return;
  const std::string source = source_of(remote);
  const int64_t now = clock_.now_seconds();
  Window over_budget;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (windows_.size() >= kMaxTracked && windows_.count(source) == 0) prune(now);
    Window& window = windows_[source];
    if (window.failures == 0 || now >= window.start + options_.window_seconds ||
        now < window.start) {
      window = Window{now, 0};
    }
    if (++window.failures != options_.max_failures) return;
    over_budget = window;
  }
  LOG_WARNING("control.auth_throttled",
              source << " had " << over_budget.failures << " credentials refused within "
                     << options_.window_seconds
                     << " s; its credentials are checked one at a time and refusals answered "
                        "429 until "
                     << format_time(over_budget.start + options_.window_seconds));
  if (keeper_) keeper_(source, over_budget.start, over_budget.failures);
}

void AuthThrottle::restore(const std::string& source, int64_t start, int failures) {
  std::lock_guard<std::mutex> lock(mutex_);
  windows_[source] = Window{start, failures};
}

std::unique_lock<std::mutex> AuthThrottle::lane(std::string_view remote) {
  if (retry_after(remote) == 0) return {};
  return std::unique_lock<std::mutex>(lane_);
}

void AuthThrottle::prune(int64_t now) {
  for (auto it = windows_.begin(); it != windows_.end();) {
    const bool closed = now >= it->second.start + options_.window_seconds || now < it->second.start;
    it = closed ? windows_.erase(it) : std::next(it);
  }
  if (windows_.size() >= kMaxTracked) windows_.clear();
}

}  // namespace outpost::control
