// The whole platform on loopback for end-to-end tests: a real outpost-control (SQLite in a
// temporary directory, TLS from a CA made at test time), real outpostd processes with their
// real outpost-worker children, and the real `outpost` CLI to drive them, as a user would.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/child_process.h"
#include "tests/support/test_pki.h"

namespace outpost::testing {

struct PlatformOptions {
  // Of outpost-control and every outpostd: debug for the tests' logs, info (the default of a
  // real installation) for bench_e2e, which measures through them.
  std::string log_level = "debug";
  std::string control_yaml;  // appended to outpost-control's config
};

struct AgentOptions {
  std::string name = "node-a";
  std::string control_port_override;  // connect through a relay instead
  std::string extra_yaml;
  std::vector<std::string> environment;
  int worker_threads = 1;          // intra-op threads of each worker (workers.threads)
  std::string workers_yaml;        // more `workers:` keys, each line indented by two spaces
  std::string control_plane_yaml;  // more `control_plane:` keys, likewise
};

class Platform {
 public:
  explicit Platform(PlatformOptions options = {});
  ~Platform();

  // outpost-control: started by the constructor; restartable with the same data directory.
  void start_control();
  void stop_control();
  uint16_t control_port() const { return control_port_; }
  ChildProcess& control() { return *control_; }

  // Runs `outpost ARGS...` as the admin user; fails the test on a non-zero exit unless
  // `expect_ok` is false.
  CommandResult cli(std::vector<std::string> args, bool expect_ok = true);
  nlohmann::json cli_json(std::vector<std::string> args);

  // A compute cluster, a nodepool, and a join token for it.
  void create_pool(const std::string& cluster, const std::string& pool);
  std::string join_token(const std::string& cluster, const std::string& pool);

  // Starts an outpostd enrolled into `cluster`/`pool` (a fresh join token) with its own state
  // and runtime directories.
  ChildProcess& start_agent(const std::string& cluster, const std::string& pool,
                            const AgentOptions& options = {});
  // Restarts the agent of that name, keeping its directories (and so its credential).
  ChildProcess& restart_agent(const std::string& name);
  ChildProcess& agent(const std::string& name);
  std::string agent_runtime_dir(const std::string& name) const;

  // Uploads an example model package (build/models/NAME) and deploys it on `pool`.
  void upload_model(const std::string& model);
  void deploy(const std::string& pool, const std::string& deployment, const std::string& model);
  // Creates a deployment from the body of its `deployment:` document (YAML, indented by 2),
  // which lists `pool` among its nodepools.
  void deploy_yaml(const std::string& pool, const std::string& deployment, const std::string& body);
  // Waits until the deployment has `count` live replicas; false after the hang guard.
  bool wait_live(const std::string& deployment, int count = 1,
                 std::chrono::seconds limit = std::chrono::seconds(120));

  const std::string& dir() const { return dir_.path(); }
  const TestPki& pki() const { return pki_; }
  // The admin's personal access token ("Authorization: Key <token>").
  std::string admin_token() const;
  std::string models_dir() const;

 private:
  void write_cli_files();

  PlatformOptions options_;
  TempDir dir_;
  TestPki pki_{"e2e"};
  std::unique_ptr<ChildProcess> control_;
  uint16_t control_port_ = 0;
  struct AgentProcess {
    std::string name;
    std::string config_path;
    std::vector<std::string> environment;
    std::unique_ptr<ChildProcess> process;
    int restarts = 0;
  };
  std::vector<AgentProcess> agents_;
};

}  // namespace outpost::testing
