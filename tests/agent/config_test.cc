#include "agent/config.h"

#include <gtest/gtest.h>

namespace outpost::agent {
namespace {

TEST(AgentConfigTest, ReadsEveryKeyOfAFullFile) {
  const auto config = parse_agent_config(R"(
control_plane:
  url: wss://control.example.com:8443/v1/tunnel
  ca_file: /etc/outpost/ca.pem
  pins: ["sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
  proxy: http://agent:secret@proxy.corp:3128
  connections: 3
node:
  name: gpu-host-1
  join_token_file: /etc/outpost/join-token
state_dir: /var/lib/outpost-test
runtime_dir: /run/outpost-test
reserved:
  cpu: 500m
  memory: 2Gi
  accelerator_memory: 1Gi
devices:
  slicing: mps
  gpus: {1: mig}
workers:
  binary: /usr/lib/outpost/outpost-worker
  max_workers: 4
  max_inflight_per_replica: 32
  max_streams: 100
  restart_backoff_max_seconds: 30
  threads: 2
  idle_seconds: 0
  spare: false
log_level: debug
)",
                                         "agent.yaml");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->control_plane_url, "wss://control.example.com:8443/v1/tunnel");
  EXPECT_EQ(config->connections, 3);
  EXPECT_EQ(config->node_name, "gpu-host-1");
  EXPECT_EQ(config->reserved_cpu_millicores, 500u);
  EXPECT_EQ(config->reserved_memory_bytes, 2ull << 30);
  EXPECT_EQ(config->default_slicing, SlicingMode::kMps);
  EXPECT_EQ(config->slicing_per_gpu.at(1), SlicingMode::kMig);
  EXPECT_EQ(config->max_workers, 4);
  EXPECT_EQ(config->idle_worker_seconds, 0);
  EXPECT_FALSE(config->spare_workers);
  EXPECT_EQ(config->socket_path(), "/run/outpost-test/outpostd.sock");
}

TEST(AgentConfigTest, MinimalFileGetsDefaults) {
  const auto config = parse_agent_config("control_plane: {url: 'wss://cp'}\n", "agent.yaml");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->connections, 2);
  EXPECT_EQ(config->state_dir, "/var/lib/outpost");
  EXPECT_FALSE(config->node_name.empty());  // the host name
  EXPECT_EQ(config->default_slicing, SlicingMode::kFraction);
  EXPECT_EQ(config->idle_worker_seconds, 300);
  EXPECT_TRUE(config->spare_workers);
  EXPECT_EQ(config->keepalive_seconds, 2);
  EXPECT_EQ(config->dead_after_seconds, 8);
  EXPECT_EQ(config->reconnect_max_seconds, 2);
}

TEST(AgentConfigTest, ReconnectCapIsConfigurableAndChecked) {
  const auto config = parse_agent_config(
      "control_plane: {url: 'wss://cp', reconnect_max_seconds: 1}\n", "agent.yaml");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->reconnect_max_seconds, 1);
  for (const char* bad : {"0", "301", "-1", "1.5", "soon"}) {
    const auto refused = parse_agent_config(
        std::string("control_plane: {url: 'wss://cp', reconnect_max_seconds: ") + bad + "}\n",
        "agent.yaml");
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_NE(refused.error().message().find("control_plane.reconnect_max_seconds"),
              std::string::npos)
        << refused.error().message();
  }
  const auto misspelled = parse_agent_config(
      "control_plane: {url: 'wss://cp', reconnect_max_second: 1}\n", "agent.yaml");
  EXPECT_FALSE(misspelled.ok());
}

TEST(AgentConfigTest, TunnelKeepaliveIsConfigurableAndChecked) {
  const auto config = parse_agent_config(
      "control_plane: {url: 'wss://cp', keepalive_seconds: 2, dead_after_seconds: 6}\n",
      "agent.yaml");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->keepalive_seconds, 2);
  EXPECT_EQ(config->dead_after_seconds, 6);
  const auto backwards = parse_agent_config(
      "control_plane: {url: 'wss://cp', keepalive_seconds: 30, dead_after_seconds: 30}\n",
      "agent.yaml");
  ASSERT_FALSE(backwards.ok());
  EXPECT_NE(backwards.error().message().find("control_plane.dead_after_seconds"), std::string::npos)
      << backwards.error().message();
}

TEST(AgentConfigTest, ReportsEveryErrorWithItsKey) {
  const auto config = parse_agent_config(R"(
control_plane:
  url: ws://plain-text
  connections: 99
  proxy: socks5://nope
  colour: blue
reserved: {memory: 2GB}
devices: {slicing: magic}
workers: {max_workers: many}
log_level: chatty
)",
                                         "/etc/outpost/agent.yaml");
  ASSERT_FALSE(config.ok());
  const std::string& message = config.error().message();
  EXPECT_NE(message.find("/etc/outpost/agent.yaml has 8 errors"), std::string::npos) << message;
  for (const char* expected :
       {"control_plane.url: control plane URL 'ws://plain-text' must start with wss://",
        "control_plane.connections: must be between 1 and 16, got 99",
        "control_plane.proxy: unsupported proxy scheme 'socks5'",
        "control_plane.colour: unknown key", "reserved.memory: unknown unit 'GB'",
        "devices.slicing: must be fraction, mps, mig or timeslice",
        "workers.max_workers: must be an integer", "log_level: must be one of"}) {
    EXPECT_NE(message.find(expected), std::string::npos) << "missing: " << expected << "\n"
                                                         << message;
  }
}

TEST(AgentConfigTest, RuntimeDirTooLongForWorkerSocketsIsRefused) {
  // Worker sockets are RUNTIME_DIR/workers/w-<16 hex>.sock, and a Unix socket path holds at
  // most 107 bytes: 75 characters fit, 76 do not.
  const auto with_runtime_dir = [](size_t length) {
    const std::string dir = "/" + std::string(length - 1, 'r');
    return parse_agent_config("control_plane: {url: 'wss://cp'}\nruntime_dir: " + dir + "\n",
                              "agent.yaml");
  };
  EXPECT_TRUE(with_runtime_dir(75).ok());
  const auto refused = with_runtime_dir(76);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("runtime_dir: too long"), std::string::npos)
      << refused.error().message();
  EXPECT_NE(refused.error().message().find("at most 75 characters"), std::string::npos);
}

TEST(AgentConfigTest, ARepeatedKeyIsAnErrorNotSilentlyDropped) {
  const auto config = parse_agent_config(
      "control_plane: {url: 'wss://cp'}\nworkers: {threads: 1}\nworkers: {idle_seconds: 0}\n",
      "agent.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.error().message().find("'workers' appears more than once"), std::string::npos)
      << config.error().message();
}

TEST(AgentConfigTest, MalformedYamlIsAClearError) {
  const auto config = parse_agent_config("control_plane: [unclosed\n", "agent.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.error().message().find("agent.yaml is not valid YAML"), std::string::npos);
  EXPECT_NE(parse_agent_config("", "agent.yaml").error().message().find("control_plane.url"),
            std::string::npos);
}

TEST(AgentConfigTest, ValuesOfTheWrongShapeAreErrorsNotCrashes) {
  const std::string head = "control_plane: {url: wss://cp.example:8443/v1/tunnel}\n";
  const std::pair<std::string, std::string> cases[] = {
      {"reserved: {cpu: [1]}\n", "reserved.cpu"},
      {"devices: {slicing: {mode: mps}}\n", "devices.slicing"},
      {"devices: {gpus: {0: [mps]}}\n", "devices.gpus.0"},
      {"devices: {gpus: {[0]: mps}}\n", "devices.gpus"},
      {"reserved: {[cpu]: 1}\n", "under reserved,"},
      {"workers: {idle_seconds: -1}\n", "workers.idle_seconds"},
      {"workers: {spare: maybe}\n", "workers.spare"},
  };
  for (const auto& [yaml, key] : cases) {
    const auto config = parse_agent_config(head + yaml, "agent.yaml");
    ASSERT_FALSE(config.ok()) << yaml;
    EXPECT_NE(config.error().message().find(key), std::string::npos)
        << yaml << " -> " << config.error().message();
  }
}

}  // namespace
}  // namespace outpost::agent
