#include "controlplane/control_config.h"

#include <fstream>
#include <sstream>

#include "common/json_reader.h"
#include "controlplane/resources/document.h"
#include "controlplane/state/ids.h"

namespace outpost::control {

Status parse_host_port(std::string_view text, std::string_view field, std::string& address,
                       uint16_t& port_out) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return field_error(field, "expected [address]:port");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return field_error(field, "expected address:port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  int value = 0;
  if (port.empty()) return field_error(field, "the port is missing");
  for (const char c : port) {
    if (c < '0' || c > '9' || value > 65535) return field_error(field, "bad port");
    value = value * 10 + (c - '0');
  }
  if (value > 65535) return field_error(field, "bad port");
  address = host.empty() ? "0.0.0.0" : std::string(host);
  port_out = static_cast<uint16_t>(value);
  return {};
}

Result<ControlConfig> parse_control_config(std::string_view yaml, ControlConfig config) {
  OUTPOST_ASSIGN_OR_RETURN(auto doc, parse_yaml(yaml));
  if (doc.is_null()) return config;
  OUTPOST_ASSIGN_OR_RETURN(auto root, ObjectReader::create(doc, ""));
  OUTPOST_RETURN_IF_ERROR(
      root.only({"listen", "data_dir", "tls", "worker_path", "admin", "limits", "url_inputs",
                 "threads", "port_file", "scaling", "metrics", "tunnel", "auth_throttle"}));
  OUTPOST_ASSIGN_OR_RETURN(auto listen, root.optional_string("listen"));
  if (listen.has_value()) OUTPOST_RETURN_IF_ERROR(parse_listen(*listen, config));
  const auto assign = [](std::string& target, const std::optional<std::string>& value) {
    if (value.has_value()) target = *value;
  };
  OUTPOST_ASSIGN_OR_RETURN(auto data_dir, root.optional_string("data_dir"));
  assign(config.data_dir, data_dir);
  OUTPOST_ASSIGN_OR_RETURN(auto worker, root.optional_string("worker_path"));
  assign(config.worker_path, worker);
  OUTPOST_ASSIGN_OR_RETURN(auto port_file, root.optional_string("port_file"));
  assign(config.port_file, port_file);

  OUTPOST_ASSIGN_OR_RETURN(auto tls, root.object("tls"));
  OUTPOST_RETURN_IF_ERROR(tls.only({"cert_file", "key_file"}));
  OUTPOST_ASSIGN_OR_RETURN(auto cert, tls.optional_string("cert_file"));
  assign(config.tls_cert_file, cert);
  OUTPOST_ASSIGN_OR_RETURN(auto key, tls.optional_string("key_file"));
  assign(config.tls_key_file, key);

  OUTPOST_ASSIGN_OR_RETURN(auto admin, root.object("admin"));
  OUTPOST_RETURN_IF_ERROR(admin.only({"user", "token_file"}));
  OUTPOST_ASSIGN_OR_RETURN(auto admin_user, admin.optional_string("user"));
  assign(config.admin_user, admin_user);
  OUTPOST_RETURN_IF_ERROR(check_id(config.admin_user, "admin.user"));
  OUTPOST_ASSIGN_OR_RETURN(auto token_file, admin.optional_string("token_file"));
  assign(config.admin_token_file, token_file);

  OUTPOST_ASSIGN_OR_RETURN(auto limits, root.object("limits"));
  OUTPOST_RETURN_IF_ERROR(limits.only(
      {"max_request_bytes", "max_model_bytes", "inspect_timeout_seconds", "predict_timeout_seconds",
       "max_connections", "max_connections_per_address", "max_body_memory_bytes",
       "max_body_disk_bytes", "body_idle_timeout_seconds", "body_min_bytes_per_second"}));
  struct SizeField {
    const char* name;
    int64_t min;
    int64_t max;
    uint64_t* target;
  };
  for (const SizeField& field :
       {SizeField{"max_connections", 1, 1'000'000, &config.max_connections},
        SizeField{"max_connections_per_address", 1, 1'000'000, &config.max_connections_per_address},
        SizeField{"max_body_memory_bytes", 1024, int64_t{1} << 40, &config.max_body_memory_bytes},
        SizeField{"max_body_disk_bytes", 1024, int64_t{1} << 50, &config.max_body_disk_bytes},
        SizeField{"body_idle_timeout_seconds", 1, 3600, &config.body_idle_timeout_seconds},
        SizeField{"body_min_bytes_per_second", 0, int64_t{1} << 40,
                  &config.body_min_bytes_per_second}}) {
    OUTPOST_ASSIGN_OR_RETURN(auto value, limits.optional_int(field.name, field.min, field.max));
    if (value.has_value()) *field.target = static_cast<uint64_t>(*value);
  }
  OUTPOST_ASSIGN_OR_RETURN(auto max_request,
                           limits.optional_int("max_request_bytes", 1024, int64_t{1} << 32));
  if (max_request.has_value()) config.max_request_bytes = static_cast<uint64_t>(*max_request);
  OUTPOST_ASSIGN_OR_RETURN(auto max_model,
                           limits.optional_int("max_model_bytes", 1024, int64_t{1} << 40));
  if (max_model.has_value()) config.max_model_bytes = static_cast<uint64_t>(*max_model);
  OUTPOST_ASSIGN_OR_RETURN(auto inspect, limits.optional_int("inspect_timeout_seconds", 1, 3600));
  if (inspect.has_value()) config.inspect_timeout_seconds = static_cast<int>(*inspect);
  OUTPOST_ASSIGN_OR_RETURN(auto predict, limits.optional_int("predict_timeout_seconds", 1, 86400));
  if (predict.has_value()) config.predict_timeout_seconds = static_cast<int>(*predict);

  OUTPOST_ASSIGN_OR_RETURN(auto urls, root.object("url_inputs"));
  OUTPOST_RETURN_IF_ERROR(
      urls.only({"allow_private_addresses", "max_bytes", "timeout_seconds", "ca_file"}));
  OUTPOST_ASSIGN_OR_RETURN(auto allow, urls.optional_bool("allow_private_addresses"));
  if (allow.has_value()) config.url_allow_private = *allow;
  OUTPOST_ASSIGN_OR_RETURN(auto url_max, urls.optional_int("max_bytes", 1, int64_t{1} << 32));
  if (url_max.has_value()) config.url_max_bytes = static_cast<uint64_t>(*url_max);
  OUTPOST_ASSIGN_OR_RETURN(auto url_timeout, urls.optional_int("timeout_seconds", 1, 600));
  if (url_timeout.has_value()) config.url_timeout_seconds = static_cast<int>(*url_timeout);
  OUTPOST_ASSIGN_OR_RETURN(auto ca, urls.optional_string("ca_file"));
  assign(config.url_ca_file, ca);

  OUTPOST_ASSIGN_OR_RETURN(auto threads, root.object("threads"));
  OUTPOST_RETURN_IF_ERROR(threads.only({"io", "blocking"}));
  OUTPOST_ASSIGN_OR_RETURN(auto io, threads.optional_int("io", 1, 256));
  if (io.has_value()) config.io_threads = static_cast<int>(*io);
  OUTPOST_ASSIGN_OR_RETURN(auto blocking, threads.optional_int("blocking", 1, 256));
  if (blocking.has_value()) config.blocking_threads = static_cast<int>(*blocking);

  OUTPOST_ASSIGN_OR_RETURN(auto scaling, root.object("scaling"));
  OUTPOST_RETURN_IF_ERROR(scaling.only({"target_ongoing_requests", "max_ongoing_per_replica",
                                        "cold_start_timeout_seconds", "max_held_requests",
                                        "node_offline_grace_seconds"}));
  struct IntField {
    const char* name;
    int64_t min;
    int64_t max;
    int* target;
  };
  for (const IntField& field :
       {IntField{"target_ongoing_requests", 1, 10000, &config.target_ongoing_requests},
        IntField{"max_ongoing_per_replica", 1, 100000, &config.max_ongoing_per_replica},
        IntField{"cold_start_timeout_seconds", 1, 3600, &config.cold_start_timeout_seconds},
        IntField{"max_held_requests", 0, 1000000, &config.max_held_requests},
        IntField{"node_offline_grace_seconds", 0, 86400, &config.node_offline_grace_seconds}}) {
    OUTPOST_ASSIGN_OR_RETURN(auto value, scaling.optional_int(field.name, field.min, field.max));
    if (value.has_value()) *field.target = static_cast<int>(*value);
  }

  OUTPOST_ASSIGN_OR_RETURN(auto tunnel, root.object("tunnel"));
  OUTPOST_RETURN_IF_ERROR(tunnel.only({"keepalive_seconds", "dead_after_seconds"}));
  OUTPOST_ASSIGN_OR_RETURN(auto keepalive, tunnel.optional_int("keepalive_seconds", 1, 3600));
  if (keepalive.has_value()) config.tunnel_keepalive_seconds = static_cast<int>(*keepalive);
  OUTPOST_ASSIGN_OR_RETURN(auto dead_after, tunnel.optional_int("dead_after_seconds", 2, 7200));
  if (dead_after.has_value()) config.tunnel_dead_after_seconds = static_cast<int>(*dead_after);
  if (config.tunnel_dead_after_seconds <= config.tunnel_keepalive_seconds) {
    return invalid_argument(tunnel.path_of("dead_after_seconds") +
                            ": must be longer than keepalive_seconds (" +
                            std::to_string(config.tunnel_keepalive_seconds) + ")");
  }

  OUTPOST_ASSIGN_OR_RETURN(auto throttle, root.object("auth_throttle"));
  OUTPOST_RETURN_IF_ERROR(throttle.only({"max_failures", "window_seconds"}));
  OUTPOST_ASSIGN_OR_RETURN(auto max_failures, throttle.optional_int("max_failures", 0, 1'000'000));
  if (max_failures.has_value()) config.auth_max_failures = static_cast<int>(*max_failures);
  OUTPOST_ASSIGN_OR_RETURN(auto window, throttle.optional_int("window_seconds", 1, 86400));
  if (window.has_value()) config.auth_window_seconds = static_cast<int>(*window);

  OUTPOST_ASSIGN_OR_RETURN(auto metrics, root.object("metrics"));
  OUTPOST_RETURN_IF_ERROR(metrics.only({"listen"}));
  OUTPOST_ASSIGN_OR_RETURN(auto metrics_listen, metrics.optional_string("listen"));
  if (metrics_listen.has_value() && !metrics_listen->empty()) {
    OUTPOST_RETURN_IF_ERROR(parse_host_port(*metrics_listen, metrics.path_of("listen"),
                                            config.metrics_address, config.metrics_port));
  }
  return config;
}

Result<ControlConfig> load_control_config(const std::vector<std::string>& args) {
  ControlConfig config;
  std::vector<std::pair<std::string, std::string>> flags;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::string value;
    const auto eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return invalid_argument(name + " needs a value");
    }
    flags.emplace_back(name, value);
  }
  for (const auto& [name, value] : flags) {
    if (name != "--config") continue;
    std::ifstream in(value);
    if (!in) return invalid_argument("cannot read the config file " + value);
    std::stringstream text;
    text << in.rdbuf();
    auto parsed = parse_control_config(text.str(), config);
    if (!parsed.ok()) {
      return invalid_argument(value + ": " + parsed.error().message());
    }
    config = std::move(parsed).value();
  }
  for (const auto& [name, value] : flags) {
    if (name == "--config") continue;
    if (name == "--listen") {
      OUTPOST_RETURN_IF_ERROR(parse_listen(value, config));
    } else if (name == "--data-dir") {
      config.data_dir = value;
    } else if (name == "--tls-cert") {
      config.tls_cert_file = value;
    } else if (name == "--tls-key") {
      config.tls_key_file = value;
    } else if (name == "--worker-path") {
      config.worker_path = value;
    } else if (name == "--admin-token-file") {
      config.admin_token_file = value;
    } else if (name == "--port-file") {
      config.port_file = value;
    } else if (name == "--metrics-listen") {
      OUTPOST_RETURN_IF_ERROR(
          parse_host_port(value, "--metrics-listen", config.metrics_address, config.metrics_port));
    } else {
      return invalid_argument("unknown flag " + name +
                              " (flags: --config --listen --data-dir --tls-cert --tls-key "
                              "--worker-path --admin-token-file --port-file --metrics-listen)");
    }
  }
  if (config.tls_cert_file.empty() || config.tls_key_file.empty()) {
    return invalid_argument(
        "tls.cert_file and tls.key_file are required (outpost-control serves "
        "HTTPS only)");
  }
  return config;
}

}  // namespace outpost::control
