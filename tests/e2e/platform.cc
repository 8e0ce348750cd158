#include "tests/e2e/platform.h"

#include <filesystem>
#include <fstream>
#include <thread>
#include <utility>

namespace outpost::testing {

namespace fs = std::filesystem;

namespace {

void write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

bool wait_for_file(const std::string& path, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!read_file(path).empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace

Platform::Platform(PlatformOptions options) : options_(std::move(options)) {
  write(dir() + "/compute_cluster.yaml",
        "compute_cluster:\n  id: cc-e2e\n  cloud_provider: {id: local}\n  region: na\n"
        "  managed_by: user\n  cluster_type: local-dev\n");
  start_control();
}

Platform::~Platform() {
  for (auto& agent : agents_) {
    if (agent.process) agent.process->stop(std::chrono::seconds(30));
  }
  stop_control();
}

std::string Platform::models_dir() const { return OUTPOST_MODELS_DIR; }

std::string Platform::admin_token() const {
  auto token = read_file(dir() + "/admin.token");
  while (!token.empty() && (token.back() == '\n' || token.back() == ' ')) token.pop_back();
  return token;
}

void Platform::start_control() {
  const std::string port_file = dir() + "/control.port";
  fs::remove(port_file);
  const std::string listen =
      control_port_ == 0 ? "127.0.0.1:0" : "127.0.0.1:" + std::to_string(control_port_);
  write(dir() + "/control.yaml",
        "listen: \"" + listen + "\"\n" + "data_dir: " + dir() + "/control-data\n" +
            "tls: {cert_file: " + pki_.cert_file() + ", key_file: " + pki_.key_file() + "}\n" +
            "worker_path: " + OUTPOST_WORKER_BIN + "\n" + "admin: {user: admin, token_file: " +
            dir() + "/admin.token}\n" + "port_file: " + port_file + "\n" + options_.control_yaml);
  control_ = std::make_unique<ChildProcess>(
      std::vector<std::string>{OUTPOST_CONTROL_BIN, "--config", dir() + "/control.yaml"},
      std::vector<std::string>{"OUTPOST_LOG_LEVEL=" + options_.log_level}, dir() + "/control.log");
  if (!wait_for_file(port_file, std::chrono::seconds(60))) {
    ADD_FAILURE() << "outpost-control did not start:\n" << control_->log();
    std::abort();
  }
  control_port_ = static_cast<uint16_t>(std::stoi(read_file(port_file)));
  write_cli_files();
}

void Platform::stop_control() {
  if (control_) control_->stop(std::chrono::seconds(20));
  control_.reset();
}

void Platform::write_cli_files() {
  // The admin token stays in its 0600 file; the CLI reads it with --pat-file.
  ASSERT_TRUE(wait_for_file(dir() + "/admin.token", std::chrono::seconds(10)));
}

CommandResult Platform::cli(std::vector<std::string> args, bool expect_ok) {
  std::vector<std::string> argv = {
      OUTPOST_CLI_BIN,       "--base-url",   "https://localhost:" + std::to_string(control_port_),
      "--ca-file",           pki_.ca_file(), "--pat-file",
      dir() + "/admin.token"};
  argv.insert(argv.end(), args.begin(), args.end());
  // The CLI keeps its login under $HOME/.config/outpost: give it a home of its own.
  auto result = run_command(argv, {"HOME=" + dir() + "/home"}, std::chrono::seconds(180));
  if (expect_ok && result.exit_code != 0) {
    std::string line;
    for (const auto& arg : args) line += arg + " ";
    ADD_FAILURE() << "outpost " << line << "exited " << result.exit_code << ":\n"
                  << result.err << result.out;
  }
  return result;
}

nlohmann::json Platform::cli_json(std::vector<std::string> args) {
  args.insert(args.begin(), {"-o", "json"});
  const auto result = cli(args);
  auto parsed = nlohmann::json::parse(result.out, nullptr, false);
  if (parsed.is_discarded()) ADD_FAILURE() << "not JSON: " << result.out;
  return parsed;
}

void Platform::create_pool(const std::string& cluster, const std::string& pool) {
  if (cli({"computecluster", "get", cluster}, false).exit_code != 0) {
    cli({"computecluster", "create", cluster, "--config", dir() + "/compute_cluster.yaml"});
  }
  const std::string path = dir() + "/" + pool + ".yaml";
  write(path, "nodepool:\n  id: " + pool + "\n  compute_cluster: {id: " + cluster +
                  "}\n  instance_types:\n    - id: cpu-host\n      compute_info:\n"
                  "        cpu_limit: \"2\"\n        cpu_memory: \"4Gi\"\n"
                  "        num_accelerators: 0\n  min_instances: 0\n  max_instances: 2\n");
  cli({"nodepool", "create", cluster, pool, "--config", path});
}

std::string Platform::join_token(const std::string& cluster, const std::string& pool) {
  auto token = cli({"nodepool", "join-token", cluster, pool}).out;
  while (!token.empty() && (token.back() == '\n' || token.back() == ' ')) token.pop_back();
  return token;
}

std::string Platform::agent_runtime_dir(const std::string& name) const {
  return dir() + "/" + name + "/run";
}

ChildProcess& Platform::start_agent(const std::string& cluster, const std::string& pool,
                                    const AgentOptions& options) {
  const std::string base = dir() + "/" + options.name;
  write(base + "/join-token", join_token(cluster, pool) + "\n");
  const std::string port = options.control_port_override.empty() ? std::to_string(control_port_)
                                                                 : options.control_port_override;
  const std::string config = base + "/agent.yaml";
  write(config,
        "control_plane:\n  url: wss://localhost:" + port +
            "/v1/tunnel\n  ca_file: " + pki_.ca_file() + "\n  connections: 2\n" +
            options.control_plane_yaml + "node:\n  name: " + options.name +
            "\n  join_token_file: " + base + "/join-token\nstate_dir: " + base +
            "/state\nruntime_dir: " + base + "/run\nworkers:\n  binary: " + OUTPOST_WORKER_BIN +
            "\n  threads: " + std::to_string(options.worker_threads) + "\n" + options.workers_yaml +
            "log_level: " + options_.log_level + "\n" + options.extra_yaml);
  AgentProcess agent;
  agent.name = options.name;
  agent.config_path = config;
  agent.environment = options.environment;
  agent.process =
      std::make_unique<ChildProcess>(std::vector<std::string>{OUTPOSTD_BIN, "--config", config},
                                     options.environment, base + "/agent.log");
  agents_.push_back(std::move(agent));
  return *agents_.back().process;
}

ChildProcess& Platform::restart_agent(const std::string& name) {
  for (auto& agent : agents_) {
    if (agent.name != name) continue;
    if (agent.process) agent.process->stop(std::chrono::seconds(30));
    // A log of its own, so that the test reads only what the new process wrote.
    ++agent.restarts;
    agent.process = std::make_unique<ChildProcess>(
        std::vector<std::string>{OUTPOSTD_BIN, "--config", agent.config_path}, agent.environment,
        dir() + "/" + name + "/agent-restart-" + std::to_string(agent.restarts) + ".log");
    return *agent.process;
  }
  ADD_FAILURE() << "no agent " << name;
  std::abort();
}

ChildProcess& Platform::agent(const std::string& name) {
  for (auto& agent : agents_) {
    if (agent.name == name) return *agent.process;
  }
  ADD_FAILURE() << "no agent " << name;
  std::abort();
}

void Platform::upload_model(const std::string& model) {
  cli({"model", "upload", models_dir() + "/" + model});
}

void Platform::deploy(const std::string& pool, const std::string& deployment,
                      const std::string& model) {
  const std::string path = dir() + "/" + deployment + ".yaml";
  write(path, "deployment:\n  id: " + deployment +
                  "\n  autoscale_config:\n"
                  "    min_replicas: 1\n    max_replicas: 1\n    traffic_history_seconds: 60\n"
                  "    scale_up_delay_seconds: 30\n    scale_down_delay_seconds: 30\n"
                  "    scale_to_zero_delay_seconds: 60\n    disable_packing: false\n"
                  "  worker:\n    model:\n      id: " +
                  model +
                  "\n  scheduling_choice: 4\n"
                  "  nodepools:\n    - id: " +
                  pool + "\n      compute_cluster: {id: cc-e2e}\n");
  cli({"deployment", "create", pool, deployment, "--config", path});
}

void Platform::deploy_yaml(const std::string& pool, const std::string& deployment,
                           const std::string& body) {
  const std::string path = dir() + "/" + deployment + ".yaml";
  write(path, "deployment:\n  id: " + deployment + "\n" + body);
  cli({"deployment", "create", pool, deployment, "--config", path});
}

bool Platform::wait_live(const std::string& deployment, int count, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto result = cli({"-o", "json", "deployment", "get", deployment}, false);
    const auto doc = nlohmann::json::parse(result.out, nullptr, false);
    if (!doc.is_discarded()) {
      const auto& metrics = doc.contains("deployment") ? doc["deployment"] : doc;
      if (metrics.contains("deployment_metrics") &&
          metrics["deployment_metrics"].value("live_replicas", 0) >= count) {
        return true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return false;
}

}  // namespace outpost::testing
