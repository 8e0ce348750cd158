// The control plane's state in SQLite: users and their keys, compute clusters, nodepools,
// models and versions, deployments, join tokens, nodes and the replicas assigned to them. One
// connection in WAL mode, serialized by a mutex (every call is short). The schema has a
// version; migrations run at open, in order, each in its own transaction, and a database written
// by a newer release is refused rather than damaged.
//
// Tenancy lives here as much as in the API: every lookup of a user's resource takes the user id,
// so a resource of another user is simply not found.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "controlplane/state/database.h"
#include "controlplane/state/wall_clock.h"

namespace outpost::control {

struct User {
  std::string id;
  bool is_admin = false;
  int64_t created_at = 0;
};

struct ApiKey {
  std::string id;
  std::string user_id;
  std::string secret_hash;
  std::string description;
  std::vector<std::string> scopes;  // "read", "write", "predict"
  int64_t created_at = 0;
  std::optional<int64_t> expires_at;
};

struct ComputeCluster {
  std::string user_id;
  std::string id;
  nlohmann::json doc;
  int64_t created_at = 0;
};

struct Nodepool {
  std::string user_id;
  std::string id;
  std::string compute_cluster_id;
  std::optional<int64_t> max_instances;
  nlohmann::json doc;
  int64_t created_at = 0;
};

struct Model {
  std::string user_id;
  std::string id;
  std::string description;
  int64_t created_at = 0;
};

struct ModelVersion {
  std::string user_id;
  std::string model_id;
  std::string id;
  int64_t seq = 0;           // 1, 2, ... per model: the latest is the highest
  nlohmann::json config;     // the package's config.yaml, as JSON
  nlohmann::json methods;    // the method signatures, verbatim from `outpost-worker inspect`
  nlohmann::json artifacts;  // [{"name", "sha256", "size"}]
  int64_t created_at = 0;
};

struct Deployment {
  std::string user_id;
  std::string id;
  std::string model_id;
  std::string model_version_id;
  std::vector<std::string> nodepool_ids;
  nlohmann::json doc;  // the normalized `deployment` object
  int64_t created_at = 0;
};

struct JoinToken {
  std::string id;
  std::string user_id;
  std::string compute_cluster_id;
  std::string nodepool_id;
  std::string secret_hash;
  int64_t created_at = 0;
  int64_t expires_at = 0;
  std::optional<int64_t> used_at;
};

struct Node {
  std::string id;
  std::string user_id;
  std::string compute_cluster_id;
  std::string nodepool_id;
  std::string name;
  std::string secret_hash;
  nlohmann::json inventory;  // as the agent reported it
  nlohmann::json replicas;   // the agent's last ReplicaStatus list
  int64_t desired_version = 0;
  int64_t applied_version = 0;
  int64_t created_at = 0;
  std::optional<int64_t> last_seen_at;
};

struct Replica {
  std::string user_id;
  std::string id;  // "<deployment>/<nodepool>/<index>"
  std::string deployment_id;
  std::string nodepool_id;
  std::string node_id;
  bool operator==(const Replica&) const = default;
};

// How many replicas the autoscaler wants for one deployment on one of its nodepools.
struct DeploymentScale {
  std::string user_id;
  std::string deployment_id;
  std::string nodepool_id;
  int64_t replicas = 0;
  bool operator==(const DeploymentScale&) const = default;
};

// A source address's window of refused credentials (auth_throttle.h), kept once it went over its
// budget.
struct ThrottleWindow {
  std::string source;
  int64_t start = 0;
  int failures = 0;
  bool operator==(const ThrottleWindow&) const = default;
};

class Store {
 public:
  static constexpr int kSchemaVersion = 3;

  static Result<std::unique_ptr<Store>> open(const std::string& path, const WallClock& clock);
  int schema_version() const { return schema_version_; }

  // Users and keys.
  Status create_user(const std::string& id, bool is_admin);
  Result<User> get_user(const std::string& id);
  Result<std::vector<User>> list_users();
  Result<int64_t> count_users();
  Status create_key(const ApiKey& key);
  Result<ApiKey> get_key(const std::string& id);
  Result<std::vector<ApiKey>> list_keys(const std::string& user_id);
  Status delete_key(const std::string& user_id, const std::string& id);

  // Compute clusters and nodepools. Nodepool ids are unique per user, across clusters, so that a
  // deployment can name a nodepool by id alone (as `outpost deployment create NP_ID ...` does).
  Status create_cluster(const ComputeCluster& cluster);
  Result<ComputeCluster> get_cluster(const std::string& user_id, const std::string& id);
  Result<std::vector<ComputeCluster>> list_clusters(const std::string& user_id);
  Status delete_cluster(const std::string& user_id, const std::string& id);
  Status create_nodepool(const Nodepool& nodepool);
  Result<Nodepool> get_nodepool(const std::string& user_id, const std::string& id);
  // `compute_cluster_id` empty: every nodepool of the user.
  Result<std::vector<Nodepool>> list_nodepools(const std::string& user_id,
                                               const std::string& compute_cluster_id);
  // Refused while deployments use the nodepool. Deletes its nodes (returns their ids, whose
  // connections the caller drops) and its unused join tokens.
  Result<std::vector<std::string>> delete_nodepool(const std::string& user_id,
                                                   const std::string& compute_cluster_id,
                                                   const std::string& id);

  // Models and versions.
  Status create_model(const Model& model);
  Result<Model> get_model(const std::string& user_id, const std::string& id);
  Result<std::vector<Model>> list_models(const std::string& user_id);
  Status delete_model(const std::string& user_id, const std::string& id);
  // Creates the model too when it does not exist yet; assigns `seq`.
  Result<ModelVersion> create_version(ModelVersion version);
  Result<ModelVersion> get_version(const std::string& user_id, const std::string& model_id,
                                   const std::string& id);
  Result<std::optional<ModelVersion>> latest_version(const std::string& user_id,
                                                     const std::string& model_id);
  Result<std::vector<ModelVersion>> list_versions(const std::string& user_id,
                                                  const std::string& model_id);
  // True when some version of any user lists an artifact with this hash.
  Result<bool> artifact_known(const std::string& sha256);

  // Deployments. Refuses a second deployment of one model on one nodepool (already_exists,
  // naming the deployment that holds it).
  Status create_deployment(const Deployment& deployment);
  Result<Deployment> get_deployment(const std::string& user_id, const std::string& id);
  // The deployment of model `model_id` on nodepool `nodepool_id` (there is one at most);
  // not_found when there is none.
  Result<Deployment> deployment_on_nodepool(const std::string& user_id,
                                            const std::string& nodepool_id,
                                            const std::string& model_id);
  // `nodepool_id` empty: all of the user's deployments.
  Result<std::vector<Deployment>> list_deployments(const std::string& user_id,
                                                   const std::string& nodepool_id);
  Status delete_deployment(const std::string& user_id, const std::string& id);

  // Enrollment.
  Status create_join_token(const JoinToken& token);
  Result<JoinToken> get_join_token(const std::string& id);
  // In one transaction: marks the token used (it must be unused and unexpired at `now`), checks
  // the nodepool's max_instances, and creates the node.
  Status enroll_node(const std::string& token_id, int64_t now, const Node& node);
  Result<Node> get_node(const std::string& id);
  Result<std::vector<Node>> list_nodes(const std::string& user_id, const std::string& nodepool_id);
  Status delete_node(const std::string& user_id, const std::string& id);
  // A node.report: the inventory (when given), replica states, the version applied.
  Status record_report(const std::string& node_id, const nlohmann::json* inventory,
                       const nlohmann::json& replicas, int64_t applied_version, int64_t now);

  // Replica assignments.
  Result<std::vector<Replica>> list_replicas(const std::string& user_id);
  Result<std::vector<Replica>> replicas_of_node(const std::string& node_id);
  // Replaces the user's assignments with `replicas` and bumps desired_version of every node whose
  // set changed. Returns those nodes' ids.
  Result<std::vector<std::string>> replace_replicas(const std::string& user_id,
                                                    const std::vector<Replica>& replicas);

  // The autoscaler's counts (deleted with their deployment).
  Result<std::vector<DeploymentScale>> list_scales();
  Status set_scale(const DeploymentScale& scale);

  // The credential throttle's kept windows: those started after `started_after` (older ones are
  // deleted); one per source, replaced by a newer one.
  Result<std::vector<ThrottleWindow>> list_throttle_windows(int64_t started_after);
  Status save_throttle_window(const ThrottleWindow& window);

 private:
  Store(std::unique_ptr<Database> db, const WallClock& clock) : db_(std::move(db)), clock_(clock) {}
  Status migrate();

  // What every predict reads (the model, the deployment or the nodepool and its deployment of the
  // model, the version, the user's replicas), kept in memory so that a call costs no SQLite read
  // and no parse of stored JSON. A read fills it
  // and every write that changes or removes such rows empties it, both under mutex_, so it never
  // holds a row older than the last write; a hit takes cache_mutex_ alone. Only rows that exist
  // are kept, so a write that only adds rows leaves it as it is.
  struct Cached {
    std::unordered_map<std::string, Model> models;
    std::unordered_map<std::string, ModelVersion> versions;
    std::unordered_map<std::string, Deployment> deployments;
    std::unordered_map<std::string, Nodepool> nodepools;
    std::unordered_map<std::string, Deployment> deployments_on_nodepools;
    std::unordered_map<std::string, std::vector<Replica>> replicas;
    size_t size() const {
      return models.size() + versions.size() + deployments.size() + nodepools.size() +
             deployments_on_nodepools.size() + replicas.size();
    }
  };
  // The row kept under `key` in `table`, else what load() reads (under mutex_), kept when it
  // is found.
  template <typename T, typename Load>
  Result<T> read_through(std::unordered_map<std::string, T> Cached::*table, std::string key,
                         const Load& load);
  void forget_cached();  // requires mutex_

  std::mutex mutex_;
  std::mutex cache_mutex_;
  Cached cached_;
  std::unique_ptr<Database> db_;
  const WallClock& clock_;
  int schema_version_ = 0;
};

}  // namespace outpost::control
