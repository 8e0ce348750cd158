#include "tests/support/tinyproxy.h"

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/spawn.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace outpost::testing {
namespace {

bool can_connect(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = 0;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot bind a loopback port");
  }
  socklen_t size = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
  ::close(fd);
  return ntohs(address.sin_port);
}

Tinyproxy::Tinyproxy(const std::string& user, const std::string& password) {
  const std::string binary = "/usr/bin/tinyproxy";
  if (::access(binary.c_str(), X_OK) != 0) {
    throw std::runtime_error("tinyproxy is not installed (scripts/setup installs it)");
  }
  port_ = free_loopback_port();
  const std::string config = dir_.file("tinyproxy.conf");
  {
    std::ofstream out(config);
    out << "Port " << port_ << "\n"
        << "Listen 127.0.0.1\n"
        << "Timeout 600\n"
        << "MaxClients 200\n"
        << "Allow 127.0.0.1\n"
        << "LogLevel Info\n"
        << "LogFile \"" << dir_.file("tinyproxy.log") << "\"\n"
        << "PidFile \"" << dir_.file("tinyproxy.pid") << "\"\n";
    if (!user.empty()) out << "BasicAuth " << user << " " << password << "\n";
  }
  const std::string output = dir_.file("tinyproxy.out");
  SpawnOptions options;  // nothing else of the test's reaches tinyproxy
  options.argv = {binary, "-d", "-c", config};
  options.environment = current_environment();
  options.out.file = output;
  options.err_to_out = true;
  auto pid = spawn_process(options);
  if (!pid.ok()) throw std::runtime_error("cannot start tinyproxy: " + pid.error().message());
  pid_ = pid.value();
  for (int i = 0; i < 500; ++i) {
    if (can_connect(port_)) return;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("tinyproxy exited at start; see " + output);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("tinyproxy did not start listening");
}

Tinyproxy::~Tinyproxy() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

std::string Tinyproxy::url(const std::string& user, const std::string& password) const {
  std::string auth = user.empty() ? "" : user + ":" + password + "@";
  return "http://" + auth + "127.0.0.1:" + std::to_string(port_);
}

std::string Tinyproxy::log() const {
  std::ifstream in(dir_.file("tinyproxy.log"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace outpost::testing
