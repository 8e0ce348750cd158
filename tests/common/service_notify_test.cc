// ServiceNotifier: what systemd hears on $NOTIFY_SOCKET, and the watchdog interval it reads.
#include "common/service_notify.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/test_pki.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace outpost {
namespace {

using testing::TempDir;

// Sets an environment variable for one test and restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_.has_value()) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A datagram socket standing in for systemd's.
class FakeServiceManager {
 public:
  explicit FakeServiceManager(std::string path) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path_.c_str());
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  }
  ~FakeServiceManager() { ::close(fd_); }
  FakeServiceManager(const FakeServiceManager&) = delete;
  FakeServiceManager& operator=(const FakeServiceManager&) = delete;

  bool bound() const { return bound_; }
  // Every message waiting, in order (a local datagram is queued by the time sendto returns).
  std::vector<std::string> drain() const {
    std::vector<std::string> out;
    char buffer[4096];
    ssize_t n = 0;
    while ((n = ::recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT)) > 0) {
      out.emplace_back(buffer, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
};

TEST(ServiceNotifierTest, SystemdHearsEachStateOnceAndInOrder) {
  TempDir dir;
  FakeServiceManager manager(dir.file("notify.sock"));
  ASSERT_TRUE(manager.bound());
  const std::string socket = dir.file("notify.sock");
  const ScopedEnv env("NOTIFY_SOCKET", &socket);
  ServiceNotifier notifier;
  notifier.ready();
  notifier.status("connecting");
  notifier.status("connecting");  // a repeat is not sent
  notifier.status("connected");
  notifier.watchdog();
  notifier.reloading();
  notifier.stopping();
  EXPECT_EQ(manager.drain(),
            (std::vector<std::string>{"READY=1", "STATUS=connecting", "STATUS=connected",
                                      "WATCHDOG=1", "RELOADING=1", "STOPPING=1"}));
}

TEST(ServiceNotifierTest, OutsideSystemdEveryCallDoesNothing) {
  const ScopedEnv env("NOTIFY_SOCKET", nullptr);
  const ScopedEnv usec("WATCHDOG_USEC", nullptr);
  ServiceNotifier notifier;
  notifier.ready();
  notifier.status("serving");
  notifier.watchdog();
  notifier.stopping();
  EXPECT_EQ(notifier.watchdog_interval().count(), 0);
}

TEST(ServiceNotifierTest, WatchdogIntervalIsHalfOfWatchdogSecForThisProcessOnly) {
  const std::string usec_value = "30000000";
  const std::string own_pid = std::to_string(::getpid());
  const std::string other_pid = std::to_string(::getpid() + 1);
  const ScopedEnv usec("WATCHDOG_USEC", &usec_value);
  {
    const ScopedEnv pid("WATCHDOG_PID", &own_pid);
    EXPECT_EQ(ServiceNotifier().watchdog_interval(), std::chrono::seconds(15));
  }
  {
    const ScopedEnv pid("WATCHDOG_PID", nullptr);
    EXPECT_EQ(ServiceNotifier().watchdog_interval(), std::chrono::seconds(15));
  }
  {
    const ScopedEnv pid("WATCHDOG_PID", &other_pid);
    EXPECT_EQ(ServiceNotifier().watchdog_interval().count(), 0);
  }
}

}  // namespace
}  // namespace outpost
