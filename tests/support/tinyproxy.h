// A real HTTP CONNECT proxy for tests: Debian's tinyproxy, started on a free loopback port with
// basic authentication, stopped on destruction.
#pragma once

#include <cstdint>
#include <string>

#include "tests/support/test_pki.h"
#include <sys/types.h>

namespace outpost::testing {

class Tinyproxy {
 public:
  Tinyproxy(const std::string& user, const std::string& password);
  ~Tinyproxy();
  Tinyproxy(const Tinyproxy&) = delete;
  Tinyproxy& operator=(const Tinyproxy&) = delete;

  uint16_t port() const { return port_; }
  // http://user:password@127.0.0.1:port
  std::string url(const std::string& user, const std::string& password) const;
  // The proxy's own log, for assertions on what it saw.
  std::string log() const;

 private:
  TempDir dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
uint16_t free_loopback_port();

}  // namespace outpost::testing
