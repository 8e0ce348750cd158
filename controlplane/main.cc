// outpost-control: the control plane's executable. Reads its config (--config and flags), opens
// its state, serves HTTPS until SIGTERM or SIGINT, then drains. On the very first start it
// creates the administrator and shows the token once: written 0600 to admin.token_file when the
// config names one, else printed on stdout (never logged).
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/log.h"
#include "controlplane/control_config.h"
#include "controlplane/control_plane.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

bool write_private_file(const std::string& path, const std::string& content) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  fchmod(fd, 0600);  // the file may have existed with looser permissions
  const ssize_t written = write(fd, content.data(), content.size());
  const bool ok = written == static_cast<ssize_t>(content.size()) && fsync(fd) == 0;
  close(fd);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::printf(
        "usage: outpost-control --config FILE [--listen ADDR:PORT] [--data-dir DIR]\n"
        "         [--tls-cert FILE] [--tls-key FILE] [--worker-path FILE]\n"
        "         [--admin-token-file FILE] [--port-file FILE]\n");
    return 0;
  }
  auto config = outpost::control::load_control_config(args);
  if (!config.ok()) {
    std::fprintf(stderr, "outpost-control: %s\n", config.error().message().c_str());
    return 2;
  }
  // Signals are taken synchronously by this thread, so they are blocked before any other starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Everything it creates (database, artifacts, uploads, the port file) is private to its user,
  // under systemd (UMask=0077 in the unit) or not.
  umask(0077);
  auto control = outpost::control::ControlPlane::create(config.value());
  if (!control.ok()) {
    std::fprintf(stderr, "outpost-control: %s\n", control.error().message().c_str());
    return 1;
  }
  const std::string& token = control.value()->initial_admin_token();
  if (!token.empty()) {
    if (!config->admin_token_file.empty()) {
      if (!write_private_file(config->admin_token_file, token + "\n")) {
        std::fprintf(stderr, "outpost-control: cannot write the admin token to %s: %s\n",
                     config->admin_token_file.c_str(), std::strerror(errno));
        return 1;
      }
      LOG_NOTICE("control.admin_token_written",
                 "the admin token was written to " << config->admin_token_file);
    } else {
      std::printf("outpost-control: the administrator's token (shown once; keep it safe):\n%s\n",
                  token.c_str());
      std::fflush(stdout);
    }
  }
  auto port = control.value()->start();
  if (!port.ok()) {
    std::fprintf(stderr, "outpost-control: %s\n", port.error().message().c_str());
    return 1;
  }
  if (!config->port_file.empty()) {
    const std::string temp = config->port_file + ".tmp";
    std::ofstream(temp) << port.value() << "\n";
    std::rename(temp.c_str(), config->port_file.c_str());
  }
  int received = 0;
  for (;;) {
    sigwait(&signals, &received);
    if (received != SIGHUP) break;
    // systemd's ExecReload sends SIGHUP; nothing is reloadable yet, so say so and carry on.
    LOG_NOTICE("control.reload_ignored",
               "SIGHUP: the configuration is read at start only; restart to apply changes");
  }
  LOG_NOTICE("control.stopping", "signal " << received << ": draining and stopping");
  control.value()->stop();
  return 0;
}
