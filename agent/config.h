// outpostd's configuration: /etc/outpost/agent.yaml, overridable by flags (docs/configuration.md).
// Loading is strict: an unknown key, a wrong type or a bad value is an error that names the key
// and says what is expected, and every error in the file is reported, not just the first.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace outpost::agent {

enum class SlicingMode { kFraction, kMps, kMig, kTimeslice };
std::string_view slicing_mode_name(SlicingMode mode);

struct AgentConfig {
  // control_plane:
  std::string control_plane_url;  // wss://host[:port][/path]
  std::string ca_file;            // empty: the system's roots
  std::vector<std::string> pins;  // sha256/<base64> SPKI pins
  std::string proxy;              // http://[user:pass@]host:port; empty: HTTPS_PROXY / NO_PROXY
  // A file holding the proxy's `user:password` (one line; owned by the agent's user, no
  // group/other access), so that `proxy` carries only the address. Read at start-up, never
  // logged: tunnel_proxy_url() (local_files.h) puts the two together for the tunnel.
  std::string proxy_credentials_file;
  int connections = 2;
  // Tunnel keepalive: a PING every keepalive_seconds; a peer silent for dead_after_seconds (a
  // link that drops packets without closing) is declared dead and the tunnel reconnects.
  int keepalive_seconds = 2;
  int dead_after_seconds = 8;
  // The longest wait between two dials after a transient failure (full jitter, from 250 ms
  // doubling up to this), so that a healed link is used again within about this long. A
  // refused credential or TLS trust waits minutes instead, whatever this says.
  int reconnect_max_seconds = 2;

  // node:
  std::string node_name;        // default: the host name
  std::string join_token_file;  // default: $CREDENTIALS_DIRECTORY/join-token when set

  std::string state_dir = "/var/lib/outpost";
  std::string runtime_dir = "/run/outpost";

  // reserved: what the agent never hands to workers.
  uint64_t reserved_cpu_millicores = 0;
  uint64_t reserved_memory_bytes = 0;
  uint64_t reserved_accelerator_memory_bytes = 0;

  // devices:
  SlicingMode default_slicing = SlicingMode::kFraction;
  std::map<int, SlicingMode> slicing_per_gpu;  // GPU index -> mode

  // workers:
  std::string worker_binary;  // default: outpost-worker next to outpostd, then /usr/lib/outpost/
  int max_workers = 16;
  int max_inflight_per_replica = 64;  // requests beyond this get resource_exhausted
  int max_streams = 4096;             // predict streams at once, all replicas together
  int restart_backoff_max_seconds = 60;
  // A worker whose last replica left is kept this long (process and libtorch loaded, no model),
  // so that a replica placed on its device again (a cold start after scaling to zero) skips
  // the process start. 0: stop it at once.
  int idle_worker_seconds = 300;
  // Each device whose replicas share one worker keeps that worker started while no replica is
  // placed there (from the agent's start on), so that the first load on the device, and a scale
  // from zero, pay only the model's own load. MPS devices (one worker per replica) have none.
  bool spare_workers = true;
  int worker_threads = 0;  // intra-op threads per worker; 0: the worker decides

  // A JSON file that replaces hardware detection (tests, and hosts whose NVML lies). Named as
  // a fake in the logs whenever it is used.
  std::string inventory_override;

  std::string log_level = "info";

  std::string socket_path() const { return runtime_dir + "/outpostd.sock"; }
  // A worker's files: its ZeroMQ socket (".sock"), pid file (".pid") and log (".log"). `tag` names
  // the worker in 16 hex digits (the reconciler hashes the worker's id).
  std::string worker_dir() const { return runtime_dir + "/workers"; }
  std::string worker_file(const std::string& tag, const char* suffix) const {
    return worker_dir() + "/w-" + tag + suffix;
  }
  std::string credential_path() const { return state_dir + "/node-credential"; }
  std::string artifact_dir() const { return state_dir + "/artifacts"; }
};

// Parses YAML text. `source` names the file in errors. All errors are collected into one
// Error whose message lists them, one per line.
Result<AgentConfig> parse_agent_config(const std::string& yaml_text, const std::string& source);
Result<AgentConfig> load_agent_config(const std::string& path);

// Checks what can only be checked on the host: files exist and are readable, the proxy
// credentials file is private, and state_dir and runtime_dir are made fit for private state or
// refused (prepare_private_dir in local_files.h: created 0700, owned by this user, not writable
// by others). Used by `outpostd --check-config` and at start-up.
Status check_agent_config_on_host(const AgentConfig& config);

}  // namespace outpost::agent
