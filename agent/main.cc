// outpostd: the outpost edge agent.
//
//   outpostd [--config /etc/outpost/agent.yaml] [--control-plane URL] [--state-dir DIR]
//            [--runtime-dir DIR] [--log-level LEVEL]
//   outpostd --check-config [--config FILE]    validate and explain every error
//   outpostd status [--json] [--runtime-dir DIR | --config FILE]
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "agent/agent.h"
#include "agent/local_files.h"
#include "agent/status_server.h"
#include "common/log.h"
#include <sys/stat.h>
#include <unistd.h>

namespace {

using outpost::agent::AgentConfig;

struct Flags {
  std::string config_path = "/etc/outpost/agent.yaml";
  std::string control_plane;
  std::string state_dir;
  std::string runtime_dir;
  std::string log_level;
  bool check_config = false;
  bool json = false;
};

void apply_flags(const Flags& flags, AgentConfig& config) {
  if (!flags.control_plane.empty()) config.control_plane_url = flags.control_plane;
  if (!flags.state_dir.empty()) config.state_dir = flags.state_dir;
  if (!flags.runtime_dir.empty()) config.runtime_dir = flags.runtime_dir;
  // --log-level, then OUTPOST_LOG_LEVEL, then the file.
  if (const char* level = std::getenv("OUTPOST_LOG_LEVEL"); level != nullptr && *level != '\0') {
    config.log_level = level;
  }
  if (!flags.log_level.empty()) config.log_level = flags.log_level;
}

outpost::log::Severity severity_of(const std::string& level) {
  using outpost::log::Severity;
  if (level == "error") return Severity::kError;
  if (level == "warning") return Severity::kWarning;
  if (level == "notice") return Severity::kNotice;
  if (level == "debug") return Severity::kDebug;
  return Severity::kInfo;
}

outpost::Result<AgentConfig> load(const Flags& flags) {
  auto config = outpost::agent::load_agent_config(flags.config_path);
  if (!config.ok()) return config;
  apply_flags(flags, config.value());
  return config;
}

int check_config(const Flags& flags) {
  auto config = load(flags);
  if (!config.ok()) {
    std::cerr << config.error().message() << "\n";
    return 1;
  }
  if (auto host = outpost::agent::check_agent_config_on_host(config.value()); !host.ok()) {
    std::cerr << host.error().message() << "\n";
    return 1;
  }
  // Warnings do not fail the check (ExecStartPre would keep the agent down for them).
  for (const auto& warning : outpost::agent::config_file_warnings(flags.config_path, *config)) {
    std::cerr << "warning: " << warning << "\n";
  }
  std::cout << flags.config_path << ": ok (control plane " << config->control_plane_url << ", node "
            << config->node_name << ")\n";
  return 0;
}

std::string bytes_text(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f GiB", static_cast<double>(bytes) / (1u << 30));
  return text;
}

int status(const Flags& flags) {
  std::string socket;
  if (!flags.runtime_dir.empty()) {
    socket = flags.runtime_dir + "/outpostd.sock";
  } else {
    auto config = load(flags);
    socket = config.ok() ? config->socket_path() : AgentConfig{}.socket_path();
  }
  auto document = outpost::agent::query_status(socket);
  if (!document.ok()) {
    std::cerr << "outpostd status: " << document.error().message() << "\n";
    return 1;
  }
  const auto& s = document.value();
  if (flags.json) {
    std::cout << s.dump(2) << "\n";
    return 0;
  }
  std::cout << "node        " << s.value("node", "?") << "\n"
            << "state       " << s.value("state", "?") << "\n"
            << "enrolled    " << (s.value("enrolled", false) ? "yes" : "no") << "\n"
            << "desired     version " << s.value("desired_version", 0) << "\n"
            << "replicas    " << s.value("summary", "none") << "\n";
  if (s.contains("inventory")) {
    const auto& inv = s["inventory"];
    std::cout << "hardware    " << inv.value("cpu_cores", 0) << " cores, "
              << bytes_text(inv.value("memory_bytes", uint64_t{0})) << ", "
              << inv.value("gpus", nlohmann::json::array()).size() << " GPU(s)\n";
  }
  if (s.contains("replicas") && !s["replicas"].empty()) {
    std::printf("%-32s %-10s %-12s %8s  %s\n", "REPLICA", "STATE", "DEVICE", "INFLIGHT", "MESSAGE");
    for (const auto& replica : s["replicas"]) {
      std::printf("%-32s %-10s %-12s %8d  %s\n", replica.value("replica_id", "").c_str(),
                  replica.value("state", "").c_str(), replica.value("device", "").c_str(),
                  replica.value("ongoing_requests", 0), replica.value("message", "").c_str());
    }
  }
  return 0;
}

int run(const Flags& flags) {
  auto config = load(flags);
  if (!config.ok()) {
    LOG_ERROR("agent.bad_config", config.error().message());
    return 1;
  }
  outpost::log::set_min_severity(severity_of(config->log_level));
  if (auto host = outpost::agent::check_agent_config_on_host(config.value()); !host.ok()) {
    LOG_ERROR("agent.bad_config", host.error().message());
    return 1;
  }
  for (const auto& warning : outpost::agent::config_file_warnings(flags.config_path, *config)) {
    LOG_WARNING("agent.config_readable", warning);
  }
  boost::asio::io_context io;
  auto agent = outpost::agent::Agent::create(io, config.value());
  if (!agent.ok()) {
    LOG_ERROR("agent.start_failed", agent.error().message());
    return 1;
  }
  boost::asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  std::function<void()> wait_signal;
  int stop_signals = 0;
  wait_signal = [&] {
    signals.async_wait([&](boost::system::error_code ec, int signal) {
      if (ec) return;
      if (signal == SIGHUP) {
        auto reloaded = load(flags);
        if (reloaded.ok()) {
          outpost::log::set_min_severity(severity_of(reloaded->log_level));
          agent.value()->reload(reloaded.value());
        } else {
          LOG_ERROR("agent.reload_failed",
                    "kept the running configuration: " << reloaded.error().message());
        }
        return wait_signal();
      }
      if (++stop_signals > 1) {
        LOG_WARNING("agent.stop_forced", "second stop signal: exiting without draining");
        io.stop();
        return;
      }
      agent.value()->stop([&io] { io.stop(); });
      wait_signal();
    });
  };
  wait_signal();
  agent.value()->start();
  // Two threads: tunnel I/O and worker I/O must not wait on each other.
  std::thread second([&io] { io.run(); });
  io.run();
  second.join();
  LOG_NOTICE("agent.stopped", "outpostd stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // First, before any file exists: whatever umask it was started under (022 from a shell), the
  // agent's directories, files and sockets, and its workers', are its user's alone.
  ::umask(outpost::agent::kAgentUmask);
  CLI::App app{"outpostd: the outpost edge agent (docs/operations.md)"};
  Flags flags;
  app.add_option("--config", flags.config_path, "configuration file")->capture_default_str();
  app.add_flag("--check-config", flags.check_config, "validate the configuration and exit");
  app.add_option("--control-plane", flags.control_plane, "override control_plane.url");
  app.add_option("--state-dir", flags.state_dir, "override state_dir");
  app.add_option("--runtime-dir", flags.runtime_dir, "override runtime_dir");
  app.add_option("--log-level", flags.log_level, "error|warning|notice|info|debug");
  app.fallthrough();  // `outpostd status --runtime-dir DIR` takes the top-level options
  auto* status_command = app.add_subcommand("status", "show the running agent's status");
  status_command->add_flag("--json", flags.json, "print the raw JSON document");
  CLI11_PARSE(app, argc, argv);
  if (flags.check_config) return check_config(flags);
  if (status_command->parsed()) return status(flags);
  return run(flags);
}
