// login, compute clusters, nodepools (and their join tokens and nodes), deployments.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include <termios.h>
#include <unistd.h>

namespace outpost::cli {

using nlohmann::json;

namespace {

std::string path_escape(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

std::string user_path(const Session& s) {
  return "/v2/users/" + path_escape(s.config.user_id.empty() ? "me" : s.config.user_id);
}

Status print_resource(Session& s, const json& reply, const char* key) {
  const json& resource = reply.contains(key) ? reply[key] : reply;
  if (s.json_output()) {
    *s.out << resource.dump(2) << "\n";
  } else {
    print_fields(*s.out, resource);
  }
  return {};
}

Status confirm(Session& s, const std::string& message, const json& reply, const char* key) {
  if (s.json_output()) return print_resource(s, reply, key);
  *s.out << message << "\n";
  return {};
}

// A token typed at a prompt, without echo when stdin is a terminal.
Result<std::string> prompt_token() {
  const bool tty = isatty(STDIN_FILENO) != 0;
  termios saved{};
  if (tty) {
    std::cerr << "Personal access token: " << std::flush;
    tcgetattr(STDIN_FILENO, &saved);
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string token;
  std::getline(std::cin, token);
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    std::cerr << "\n";
  }
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) {
    return invalid_argument("no token given (use --pat-file FILE, $OUTPOST_PAT, or type it)");
  }
  return token;
}

}  // namespace

Result<json> Session::call(std::string_view method, const std::string& path,
                           const std::string& body, const std::string& content_type) {
  OUTPOST_ASSIGN_OR_RETURN(auto response, client->send(method, path, body, content_type));
  if (response.status >= 300) return error_from_response(response);
  json parsed = json::parse(response.body, nullptr, false);
  if (parsed.is_discarded()) {
    return internal_error("the server answered something that is not JSON (HTTP " +
                          std::to_string(response.status) + ")");
  }
  return parsed;
}

Result<Session> open_session(const GlobalFlags& flags) {
  Session session;
  session.format = flags.format;
  auto config = load_cli_config();
  if (config.ok()) {
    session.config = config.value();
  } else if (flags.base_url.empty()) {
    return config.error();
  }
  if (!flags.base_url.empty()) session.config.base_url = flags.base_url;
  if (!flags.ca_file.empty()) session.config.ca_file = flags.ca_file;
  if (!flags.pat_file.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(session.config.pat, read_token_file(flags.pat_file));
    session.config.user_id.clear();  // another token may be another user
  } else if (const char* pat = std::getenv("OUTPOST_PAT"); pat != nullptr && pat[0] != '\0') {
    session.config.pat = pat;
    session.config.user_id.clear();
  }
  if (session.config.pat.empty()) {
    return Error(
        ErrorCode::kUnauthenticated,
        "no personal access token: run `outpost login`, or give --pat-file or $OUTPOST_PAT");
  }
  ClientConfig client;
  client.base_url = session.config.base_url;
  client.ca_file = session.config.ca_file;
  client.pat = session.config.pat;
  OUTPOST_ASSIGN_OR_RETURN(session.client, HttpClient::create(client));
  return session;
}

Result<ConfigFile> read_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_argument("cannot read the config file " + path);
  std::stringstream text;
  text << in.rdbuf();
  const bool is_json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  return ConfigFile{text.str(), is_json ? "application/json" : "application/yaml"};
}

Status login(const LoginFlags& flags, std::ostream& out) {
  CliConfig config;
  auto existing = load_cli_config();
  if (existing.ok()) config = existing.value();
  if (!flags.base_url.empty()) config.base_url = flags.base_url;
  if (config.base_url.empty()) {
    return invalid_argument("give the control plane's address: --base-url https://HOST:PORT");
  }
  if (!flags.ca_file.empty()) {
    std::error_code ec;
    config.ca_file = std::filesystem::absolute(flags.ca_file, ec).string();
  }
  if (!flags.pat_file.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(config.pat, read_token_file(flags.pat_file));
  } else if (const char* pat = std::getenv("OUTPOST_PAT"); pat != nullptr && pat[0] != '\0') {
    config.pat = pat;
  } else {
    OUTPOST_ASSIGN_OR_RETURN(config.pat, prompt_token());
  }
  // Check the address, the CA and the token before saving anything.
  ClientConfig client_config{config.base_url, config.ca_file, config.pat, std::chrono::seconds(60)};
  OUTPOST_ASSIGN_OR_RETURN(auto client, HttpClient::create(client_config));
  OUTPOST_ASSIGN_OR_RETURN(auto response, client->send("GET", "/v2/users/me"));
  if (response.status != 200) return error_from_response(response);
  const json me = json::parse(response.body, nullptr, false);
  if (!me.is_object() || !me.contains("user")) {
    return internal_error("unexpected answer from " + config.base_url);
  }
  config.user_id = me["user"].value("id", "");
  OUTPOST_RETURN_IF_ERROR(save_cli_config(config));
  out << "Logged in to " << config.base_url << " as " << config.user_id << " (saved in "
      << config_path() << ")\n";
  return {};
}

// --- compute clusters ---

Status cluster_create(Session& s, const std::string& id, const std::string& config_file) {
  OUTPOST_ASSIGN_OR_RETURN(auto file, read_config_file(config_file));
  OUTPOST_ASSIGN_OR_RETURN(auto reply,
                           s.call("POST", user_path(s) + "/compute_clusters?id=" + path_escape(id),
                                  file.text, file.content_type));
  return confirm(s, "Compute cluster " + id + " created.", reply, "compute_cluster");
}

Status cluster_list(Session& s) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply, s.call("GET", user_path(s) + "/compute_clusters"));
  if (s.json_output()) {
    *s.out << reply["compute_clusters"].dump(2) << "\n";
    return {};
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& cluster : reply["compute_clusters"]) {
    rows.push_back({cell(cluster["id"]),
                    cell(cluster.value("cloud_provider", json::object()).value("id", json())),
                    cell(cluster["region"]), cell(cluster["cluster_type"]),
                    cell(cluster.value("description", json())), cell(cluster["created_at"])});
  }
  print_table(*s.out, {"ID", "PROVIDER", "REGION", "TYPE", "DESCRIPTION", "CREATED"}, rows);
  return {};
}

Status cluster_get(Session& s, const std::string& id) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply,
                           s.call("GET", user_path(s) + "/compute_clusters/" + path_escape(id)));
  return print_resource(s, reply, "compute_cluster");
}

Status cluster_delete(Session& s, const std::string& id) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply,
                           s.call("DELETE", user_path(s) + "/compute_clusters/" + path_escape(id)));
  return confirm(s, "Compute cluster " + id + " deleted.", reply, "status");
}

// --- nodepools ---

namespace {

std::string nodepool_path(const Session& s, const std::string& cluster, const std::string& id) {
  return user_path(s) + "/compute_clusters/" + path_escape(cluster) + "/nodepools/" +
         path_escape(id);
}

}  // namespace

Status nodepool_create(Session& s, const std::string& cluster, const std::string& id,
                       const std::string& config_file) {
  OUTPOST_ASSIGN_OR_RETURN(auto file, read_config_file(config_file));
  OUTPOST_ASSIGN_OR_RETURN(auto reply,
                           s.call("POST",
                                  user_path(s) + "/compute_clusters/" + path_escape(cluster) +
                                      "/nodepools?id=" + path_escape(id),
                                  file.text, file.content_type));
  return confirm(s, "Nodepool " + id + " created in compute cluster " + cluster + ".", reply,
                 "nodepool");
}

Status nodepool_list(Session& s, const std::string& cluster) {
  const std::string path =
      cluster.empty() ? user_path(s) + "/nodepools"
                      : user_path(s) + "/compute_clusters/" + path_escape(cluster) + "/nodepools";
  OUTPOST_ASSIGN_OR_RETURN(auto reply, s.call("GET", path));
  if (s.json_output()) {
    *s.out << reply["nodepools"].dump(2) << "\n";
    return {};
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& pool : reply["nodepools"]) {
    rows.push_back({cell(pool["id"]), cell(pool["compute_cluster"]["id"]), cell(pool["node_count"]),
                    cell(pool["online_node_count"]), cell(pool.value("max_instances", json())),
                    cell(pool["created_at"])});
  }
  print_table(*s.out, {"ID", "COMPUTE CLUSTER", "NODES", "ONLINE", "MAX", "CREATED"}, rows);
  return {};
}

Status nodepool_get(Session& s, const std::string& cluster, const std::string& id) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply, s.call("GET", nodepool_path(s, cluster, id)));
  return print_resource(s, reply, "nodepool");
}

Status nodepool_delete(Session& s, const std::string& cluster, const std::string& id) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply, s.call("DELETE", nodepool_path(s, cluster, id)));
  return confirm(s, "Nodepool " + id + " deleted; its nodes' credentials are revoked.", reply,
                 "status");
}

Status nodepool_join_token(Session& s, const std::string& cluster, const std::string& id,
                           int64_t ttl_seconds) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply,
                           s.call("POST", nodepool_path(s, cluster, id) + "/join_tokens",
                                  json{{"ttl_seconds", ttl_seconds}}.dump()));
  const json token = reply["join_token"];
  if (s.json_output()) {
    *s.out << token.dump(2) << "\n";
    return {};
  }
  *s.out << token["token"].get<std::string>() << "\n";
  std::cerr << "Single use; expires " << token["expires_at"].get<std::string>()
            << ". Give it to the agent of the node that joins " << cluster << "/" << id << ".\n";
  return {};
}

Status nodepool_nodes(Session& s, const std::string& cluster, const std::string& id) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply, s.call("GET", nodepool_path(s, cluster, id) + "/nodes"));
  if (s.json_output()) {
    *s.out << reply["nodes"].dump(2) << "\n";
    return {};
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& node : reply["nodes"]) {
    size_t ready = 0;
    for (const auto& replica : node["replicas"])
      ready += replica.value("state", "") == "ready" ? 1 : 0;
    rows.push_back({cell(node["id"]), cell(node["name"]), node["online"].get<bool>() ? "yes" : "no",
                    std::to_string(ready) + "/" + std::to_string(node["replicas"].size()),
                    cell(node.value("last_seen_at", json()))});
  }
  print_table(*s.out, {"ID", "NAME", "ONLINE", "READY REPLICAS", "LAST SEEN"}, rows);
  return {};
}

Status nodepool_remove_node(Session& s, const std::string& cluster, const std::string& id,
                            const std::string& node) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto reply, s.call("DELETE", nodepool_path(s, cluster, id) + "/nodes/" + path_escape(node)));
  return confirm(s,
                 "Node " + node + " removed; its credential is revoked and its connections closed.",
                 reply, "status");
}

// --- deployments ---

Status deployment_create(Session& s, const std::string& nodepool, const std::string& id,
                         const std::string& config_file) {
  OUTPOST_ASSIGN_OR_RETURN(auto file, read_config_file(config_file));
  OUTPOST_ASSIGN_OR_RETURN(auto reply, s.call("POST",
                                              user_path(s) + "/deployments?id=" + path_escape(id) +
                                                  "&nodepool_id=" + path_escape(nodepool),
                                              file.text, file.content_type));
  return confirm(s, "Deployment " + id + " created on nodepool " + nodepool + ".", reply,
                 "deployment");
}

namespace {

std::vector<std::string> deployment_row(const json& deployment) {
  std::string pools;
  for (const auto& pool : deployment["nodepools"])
    pools += (pools.empty() ? "" : ",") + cell(pool["id"]);
  const json metrics = deployment.value("deployment_metrics", json::object());
  return {cell(deployment["id"]),
          cell(deployment["worker"]["model"]["id"]),
          cell(deployment["worker"]["model"]["model_version"]["id"]),
          pools,
          cell(metrics.value("desired_replicas", json())),
          cell(metrics.value("live_replicas", json())),
          cell(deployment.value("state", json()))};
}

}  // namespace

Status deployment_list(Session& s, const std::string& nodepool) {
  std::string path = user_path(s) + "/deployments";
  if (!nodepool.empty()) path += "?nodepool_id=" + path_escape(nodepool);
  OUTPOST_ASSIGN_OR_RETURN(auto reply, s.call("GET", path));
  if (s.json_output()) {
    *s.out << reply["deployments"].dump(2) << "\n";
    return {};
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& deployment : reply["deployments"]) rows.push_back(deployment_row(deployment));
  print_table(*s.out, {"ID", "MODEL", "VERSION", "NODEPOOLS", "DESIRED", "LIVE", "STATE"}, rows);
  return {};
}

Status deployment_get(Session& s, const std::string& id) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply,
                           s.call("GET", user_path(s) + "/deployments/" + path_escape(id)));
  if (s.json_output()) return print_resource(s, reply, "deployment");
  const json deployment = reply["deployment"];
  print_table(*s.out, {"ID", "MODEL", "VERSION", "NODEPOOLS", "DESIRED", "LIVE", "STATE"},
              {deployment_row(deployment)});
  *s.out << "\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& replica : deployment["replicas"]) {
    rows.push_back({cell(replica["replica_id"]), cell(replica["node_id"]), cell(replica["state"]),
                    cell(replica["message"])});
  }
  print_table(*s.out, {"REPLICA", "NODE", "STATE", "MESSAGE"}, rows);
  return {};
}

Status deployment_delete(Session& s, const std::string& id) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply,
                           s.call("DELETE", user_path(s) + "/deployments/" + path_escape(id)));
  return confirm(s, "Deployment " + id + " deleted.", reply, "status");
}

}  // namespace outpost::cli
