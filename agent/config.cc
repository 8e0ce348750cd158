#include "agent/config.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "agent/local_files.h"
#include "common/quantity.h"
#include "common/yaml_document.h"
#include "tunnel/client.h"
#include "tunnel/proxy.h"
#include <unistd.h>

namespace outpost::agent {
namespace {

using nlohmann::json;

// Collects every problem in the file, each naming its key.
class Problems {
 public:
  void add(const std::string& key, const std::string& what) { lines_.push_back(key + ": " + what); }
  // A message that already starts with its key.
  void add_line(const std::string& line) { lines_.push_back(line); }
  bool empty() const { return lines_.empty(); }
  std::string text(const std::string& source) const {
    std::string out = source + " has " + std::to_string(lines_.size()) + " error" +
                      (lines_.size() == 1 ? "" : "s") + ":";
    for (const auto& line : lines_) out += "\n  " + line;
    return out;
  }

 private:
  std::vector<std::string> lines_;
};

// The document is read with every scalar as written (YamlScalars::kStrings): each key below
// says what it takes. `key` of `map`, or nullptr when the key is absent.
const json* field(const json* map, std::string_view key) {
  if (map == nullptr || !map->is_object()) return nullptr;
  const auto it = map->find(key);
  return it == map->end() ? nullptr : &*it;
}

void check_keys(const json& map, const std::string& prefix,
                const std::vector<std::string_view>& allowed, Problems& problems) {
  for (const auto& [key, value] : map.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      problems.add(prefix + key, "unknown key (" + unknown_key_hint(key, allowed) + ")");
    }
  }
}

bool is_map(const json* node, const std::string& key, Problems& problems) {
  if (node == nullptr) return false;
  if (!node->is_object()) {
    problems.add(key, "must be a mapping");
    return false;
  }
  return true;
}

// The scalar's text, or nothing for a mapping, a list or an empty value.
std::optional<std::string> scalar(const json* node) {
  if (node == nullptr || !node->is_string()) return std::nullopt;
  return node->get<std::string>();
}

void read_string(const json* node, const std::string& key, std::string& out, Problems& problems) {
  if (node == nullptr) return;
  auto text = scalar(node);
  if (!text) {
    problems.add(key, "must be a string");
    return;
  }
  out = std::move(*text);
}

void read_int(const json* node, const std::string& key, int min, int max, int& out,
              Problems& problems) {
  if (node == nullptr) return;
  const auto text = scalar(node);
  int64_t value = 0;
  const char* begin = text ? text->data() : nullptr;
  const char* end = text ? text->data() + text->size() : nullptr;
  if (!text || text->empty() || std::from_chars(begin, end, value).ptr != end) {
    problems.add(key, "must be an integer");
    return;
  }
  if (value < min || value > max) {
    problems.add(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                          ", got " + std::to_string(value));
    return;
  }
  out = static_cast<int>(value);
}

void read_bool(const json* node, const std::string& key, bool& out, Problems& problems) {
  if (node == nullptr) return;
  const auto text = scalar(node);
  if (text == "true") {
    out = true;
  } else if (text == "false") {
    out = false;
  } else {
    problems.add(key, "must be true or false");
  }
}

void read_memory(const json* node, const std::string& key, uint64_t& out, Problems& problems) {
  if (node == nullptr) return;
  const auto text = scalar(node);
  if (!text) {
    problems.add(key, "must be a quantity such as 2Gi");
    return;
  }
  auto parsed = parse_memory_quantity(*text, key);
  if (!parsed.ok()) {
    problems.add(key, parsed.error().message().substr(key.size() + 2));
    return;
  }
  out = parsed.value();
}

std::optional<SlicingMode> parse_slicing(const std::string& text) {
  if (text == "fraction") return SlicingMode::kFraction;
  if (text == "mps") return SlicingMode::kMps;
  if (text == "mig") return SlicingMode::kMig;
  if (text == "timeslice") return SlicingMode::kTimeslice;
  return std::nullopt;
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "outpost-node";
  return name;
}

}  // namespace

std::string_view slicing_mode_name(SlicingMode mode) {
  switch (mode) {
    case SlicingMode::kFraction:
      return "fraction";
    case SlicingMode::kMps:
      return "mps";
    case SlicingMode::kMig:
      return "mig";
    case SlicingMode::kTimeslice:
      return "timeslice";
  }
  return "unknown";
}

namespace {

Result<AgentConfig> parse_document(const std::string& yaml_text, const std::string& source) {
  auto document = parse_yaml(yaml_text, YamlScalars::kStrings);
  if (!document.ok()) {
    return invalid_argument(source + " is not valid YAML: " + document.error().message());
  }
  const json& root = document.value();
  AgentConfig config;
  Problems problems;
  if (root.is_null()) {
    problems.add("control_plane.url", "missing (the control plane's wss:// URL)");
    return invalid_argument(problems.text(source));
  }
  if (!root.is_object()) return invalid_argument(source + ": the top level must be a mapping");
  check_keys(root, "",
             {"control_plane", "node", "state_dir", "runtime_dir", "reserved", "devices", "workers",
              "inventory_override", "log_level"},
             problems);

  const json* cp = field(&root, "control_plane");
  if (is_map(cp, "control_plane", problems)) {
    check_keys(*cp, "control_plane.",
               {"url", "ca_file", "pins", "proxy", "proxy_credentials_file", "connections",
                "keepalive_seconds", "dead_after_seconds", "reconnect_max_seconds"},
               problems);
    read_string(field(cp, "url"), "control_plane.url", config.control_plane_url, problems);
    read_string(field(cp, "ca_file"), "control_plane.ca_file", config.ca_file, problems);
    read_string(field(cp, "proxy"), "control_plane.proxy", config.proxy, problems);
    read_string(field(cp, "proxy_credentials_file"), "control_plane.proxy_credentials_file",
                config.proxy_credentials_file, problems);
    read_int(field(cp, "connections"), "control_plane.connections", 1, 16, config.connections,
             problems);
    read_int(field(cp, "keepalive_seconds"), "control_plane.keepalive_seconds", 1, 3600,
             config.keepalive_seconds, problems);
    read_int(field(cp, "dead_after_seconds"), "control_plane.dead_after_seconds", 2, 7200,
             config.dead_after_seconds, problems);
    read_int(field(cp, "reconnect_max_seconds"), "control_plane.reconnect_max_seconds", 1, 300,
             config.reconnect_max_seconds, problems);
    if (config.dead_after_seconds <= config.keepalive_seconds) {
      problems.add("control_plane.dead_after_seconds",
                   "must be longer than keepalive_seconds (" +
                       std::to_string(config.keepalive_seconds) + ")");
    }
    if (const json* pins = field(cp, "pins")) {
      if (!pins->is_array()) {
        problems.add("control_plane.pins", "must be a list of sha256/<base64> pins");
      } else {
        for (size_t i = 0; i < pins->size(); ++i) {
          std::string pin;
          read_string(&(*pins)[i], "control_plane.pins[" + std::to_string(i) + "]", pin, problems);
          config.pins.push_back(pin);
        }
      }
    }
  }
  if (config.control_plane_url.empty()) {
    problems.add("control_plane.url", "missing (the control plane's wss:// URL)");
  } else if (auto url = tunnel::parse_tunnel_url(config.control_plane_url); !url.ok()) {
    problems.add("control_plane.url", url.error().message());
  }
  if (!config.proxy.empty()) {
    if (auto proxy = tunnel::parse_proxy_url(config.proxy); !proxy.ok()) {
      problems.add("control_plane.proxy", proxy.error().message());
    } else if (!config.proxy_credentials_file.empty() &&
               (!proxy->username.empty() || !proxy->password.empty())) {
      // Two sources for one secret: say which to drop rather than pick one silently.
      problems.add("control_plane.proxy_credentials_file",
                   "control_plane.proxy already holds credentials; keep them in one place "
                   "(remove user:password@ from the URL)");
    }
  } else if (!config.proxy_credentials_file.empty()) {
    problems.add("control_plane.proxy_credentials_file",
                 "needs control_plane.proxy (the proxy's URL, without credentials)");
  }
  for (size_t i = 0; i < config.pins.size(); ++i) {
    const auto& pin = config.pins[i];
    if (pin.rfind("sha256/", 0) != 0 || pin.size() != 51) {
      problems.add("control_plane.pins[" + std::to_string(i) + "]",
                   "must look like sha256/<44 characters of base64>");
    }
  }

  const json* node = field(&root, "node");
  if (is_map(node, "node", problems)) {
    check_keys(*node, "node.", {"name", "join_token_file"}, problems);
    read_string(field(node, "name"), "node.name", config.node_name, problems);
    read_string(field(node, "join_token_file"), "node.join_token_file", config.join_token_file,
                problems);
  }
  if (config.node_name.empty()) config.node_name = host_name();
  if (config.node_name.size() > 63) problems.add("node.name", "longer than 63 characters");

  read_string(field(&root, "state_dir"), "state_dir", config.state_dir, problems);
  read_string(field(&root, "runtime_dir"), "runtime_dir", config.runtime_dir, problems);
  read_string(field(&root, "inventory_override"), "inventory_override", config.inventory_override,
              problems);
  read_string(field(&root, "log_level"), "log_level", config.log_level, problems);
  if (config.log_level != "error" && config.log_level != "warning" &&
      config.log_level != "notice" && config.log_level != "info" && config.log_level != "debug") {
    problems.add("log_level", "must be one of error, warning, notice, info, debug");
  }
  // A Unix socket path is at most 107 bytes, and the longest under runtime_dir is a worker's.
  constexpr size_t kMaxSocketPath = 107;
  const size_t worker_socket = config.worker_file(std::string(16, '0'), ".sock").size();
  if (worker_socket > kMaxSocketPath) {
    const size_t suffix = worker_socket - config.runtime_dir.size();
    problems.add("runtime_dir",
                 "too long: worker sockets under it would not fit a Unix socket "
                 "path (at most " +
                     std::to_string(kMaxSocketPath - suffix) + " characters)");
  }

  const json* reserved = field(&root, "reserved");
  if (is_map(reserved, "reserved", problems)) {
    check_keys(*reserved, "reserved.", {"cpu", "memory", "accelerator_memory"}, problems);
    if (const json* cpu = field(reserved, "cpu")) {
      auto parsed = parse_cpu_quantity(scalar(cpu).value_or(""), "reserved.cpu");
      if (parsed.ok()) {
        config.reserved_cpu_millicores = parsed.value();
      } else {
        problems.add("reserved.cpu", "must be cores such as 1 or 500m");
      }
    }
    read_memory(field(reserved, "memory"), "reserved.memory", config.reserved_memory_bytes,
                problems);
    read_memory(field(reserved, "accelerator_memory"), "reserved.accelerator_memory",
                config.reserved_accelerator_memory_bytes, problems);
  }

  const json* devices = field(&root, "devices");
  if (is_map(devices, "devices", problems)) {
    check_keys(*devices, "devices.", {"slicing", "gpus"}, problems);
    if (const json* slicing = field(devices, "slicing")) {
      const auto mode = parse_slicing(scalar(slicing).value_or(""));
      if (mode) {
        config.default_slicing = *mode;
      } else {
        problems.add("devices.slicing", "must be fraction, mps, mig or timeslice");
      }
    }
    if (const json* gpus = field(devices, "gpus")) {
      if (!gpus->is_object()) {
        problems.add("devices.gpus", "must map GPU indexes to slicing modes, e.g. {0: mps}");
      } else {
        for (const auto& [name, value] : gpus->items()) {
          const std::string key = "devices.gpus." + name;
          int index = -1;
          if (std::from_chars(name.data(), name.data() + name.size(), index).ptr !=
              name.data() + name.size()) {
            index = -1;
          }
          const auto mode = parse_slicing(scalar(&value).value_or(""));
          if (index < 0 || index > 63) {
            problems.add(key, "the key must be a GPU index (0-63)");
          } else if (!mode) {
            problems.add(key, "must be fraction, mps, mig or timeslice");
          } else {
            config.slicing_per_gpu[index] = *mode;
          }
        }
      }
    }
  }

  const json* workers = field(&root, "workers");
  if (is_map(workers, "workers", problems)) {
    check_keys(*workers, "workers.",
               {"binary", "max_workers", "max_inflight_per_replica", "max_streams",
                "restart_backoff_max_seconds", "threads", "idle_seconds", "spare"},
               problems);
    read_string(field(workers, "binary"), "workers.binary", config.worker_binary, problems);
    read_int(field(workers, "max_workers"), "workers.max_workers", 1, 256, config.max_workers,
             problems);
    read_int(field(workers, "max_inflight_per_replica"), "workers.max_inflight_per_replica", 1,
             100000, config.max_inflight_per_replica, problems);
    read_int(field(workers, "max_streams"), "workers.max_streams", 1, 1000000, config.max_streams,
             problems);
    read_int(field(workers, "restart_backoff_max_seconds"), "workers.restart_backoff_max_seconds",
             1, 3600, config.restart_backoff_max_seconds, problems);
    read_int(field(workers, "threads"), "workers.threads", 0, 1024, config.worker_threads,
             problems);
    read_int(field(workers, "idle_seconds"), "workers.idle_seconds", 0, 86400,
             config.idle_worker_seconds, problems);
    read_bool(field(workers, "spare"), "workers.spare", config.spare_workers, problems);
  }

  if (!problems.empty()) return invalid_argument(problems.text(source));
  return config;
}

}  // namespace

Result<AgentConfig> parse_agent_config(const std::string& yaml_text, const std::string& source) {
  return parse_document(yaml_text, source);
}

Result<AgentConfig> load_agent_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) return invalid_argument("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_agent_config(text.str(), path);
}

Status check_agent_config_on_host(const AgentConfig& config) {
  Problems problems;
  const auto readable = [&](const std::string& key, const std::string& path) {
    if (!path.empty() && ::access(path.c_str(), R_OK) != 0) {
      problems.add(key, "cannot read " + path);
    }
  };
  readable("control_plane.ca_file", config.ca_file);
  readable("inventory_override", config.inventory_override);
  if (!config.worker_binary.empty() && ::access(config.worker_binary.c_str(), X_OK) != 0) {
    problems.add("workers.binary", config.worker_binary + " is not an executable");
  }
  if (!config.proxy_credentials_file.empty()) {
    if (auto credentials = read_proxy_credentials(config.proxy_credentials_file);
        !credentials.ok()) {
      problems.add_line(credentials.error().message());
    }
  }
  for (const auto& [key, dir] : {std::pair<std::string, std::string>{"state_dir", config.state_dir},
                                 {"runtime_dir", config.runtime_dir}}) {
    if (auto prepared = prepare_private_dir(key, dir); !prepared.ok()) {
      problems.add_line(prepared.error().message());
    }
  }
  if (!problems.empty()) return invalid_argument(problems.text("the configuration"));
  return {};
}

}  // namespace outpost::agent
