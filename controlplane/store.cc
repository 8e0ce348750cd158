#include "controlplane/store.h"

#include <algorithm>
#include <map>
#include <set>

#include "common/log.h"

namespace outpost::control {

using nlohmann::json;

namespace {

// Each entry takes the schema from version i to i + 1. Append only: never edit a released one.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE users (
  id TEXT PRIMARY KEY,
  is_admin INTEGER NOT NULL,
  created_at INTEGER NOT NULL);
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users(id),
  secret_hash TEXT NOT NULL,
  description TEXT NOT NULL,
  scopes TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER);
CREATE TABLE compute_clusters (
  user_id TEXT NOT NULL REFERENCES users(id),
  id TEXT NOT NULL,
  doc TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, id));
CREATE TABLE nodepools (
  user_id TEXT NOT NULL,
  id TEXT NOT NULL,
  compute_cluster_id TEXT NOT NULL,
  max_instances INTEGER,
  doc TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, compute_cluster_id) REFERENCES compute_clusters(user_id, id));
CREATE TABLE models (
  user_id TEXT NOT NULL REFERENCES users(id),
  id TEXT NOT NULL,
  description TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, id));
CREATE TABLE model_versions (
  user_id TEXT NOT NULL,
  model_id TEXT NOT NULL,
  id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  config TEXT NOT NULL,
  methods TEXT NOT NULL,
  artifacts TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, model_id, id),
  UNIQUE (user_id, model_id, seq),
  FOREIGN KEY (user_id, model_id) REFERENCES models(user_id, id));
CREATE TABLE artifacts (
  sha256 TEXT NOT NULL,
  user_id TEXT NOT NULL,
  model_id TEXT NOT NULL,
  version_id TEXT NOT NULL,
  PRIMARY KEY (sha256, user_id, model_id, version_id));
CREATE TABLE deployments (
  user_id TEXT NOT NULL,
  id TEXT NOT NULL,
  model_id TEXT NOT NULL,
  model_version_id TEXT NOT NULL,
  doc TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, model_id, model_version_id) REFERENCES model_versions(user_id, model_id, id));
CREATE TABLE deployment_nodepools (
  user_id TEXT NOT NULL,
  deployment_id TEXT NOT NULL,
  nodepool_id TEXT NOT NULL,
  model_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  PRIMARY KEY (user_id, deployment_id, nodepool_id),
  UNIQUE (user_id, nodepool_id, model_id),
  FOREIGN KEY (user_id, deployment_id) REFERENCES deployments(user_id, id) ON DELETE CASCADE,
  FOREIGN KEY (user_id, nodepool_id) REFERENCES nodepools(user_id, id));
CREATE TABLE join_tokens (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  compute_cluster_id TEXT NOT NULL,
  nodepool_id TEXT NOT NULL,
  secret_hash TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at INTEGER);
CREATE TABLE nodes (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  compute_cluster_id TEXT NOT NULL,
  nodepool_id TEXT NOT NULL,
  name TEXT NOT NULL,
  secret_hash TEXT NOT NULL,
  inventory TEXT NOT NULL,
  replicas TEXT NOT NULL,
  desired_version INTEGER NOT NULL,
  applied_version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  last_seen_at INTEGER,
  FOREIGN KEY (user_id, nodepool_id) REFERENCES nodepools(user_id, id));
CREATE TABLE replicas (
  user_id TEXT NOT NULL,
  id TEXT NOT NULL,
  deployment_id TEXT NOT NULL,
  nodepool_id TEXT NOT NULL,
  node_id TEXT NOT NULL REFERENCES nodes(id),
  PRIMARY KEY (user_id, id));
CREATE INDEX replicas_by_node ON replicas(node_id);
)sql",
    // 2: the autoscaler's replica counts, so that a restart keeps a deployment's scale.
    R"sql(
CREATE TABLE deployment_scales (
  user_id TEXT NOT NULL,
  deployment_id TEXT NOT NULL,
  nodepool_id TEXT NOT NULL,
  replicas INTEGER NOT NULL,
  PRIMARY KEY (user_id, deployment_id, nodepool_id),
  FOREIGN KEY (user_id, deployment_id) REFERENCES deployments(user_id, id) ON DELETE CASCADE);
)sql",
    // 3: the credential throttle's windows that went over their budget, so that a restart does
    // not hand a guesser a fresh one.
    R"sql(
CREATE TABLE auth_throttle (
  source TEXT PRIMARY KEY,
  window_start INTEGER NOT NULL,
  failures INTEGER NOT NULL);
)sql",
};

json parse_stored(const std::string& text) {
  json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return value.is_discarded() ? json(nullptr) : value;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

Error not_found(const std::string& what) { return {ErrorCode::kNotFound, what + " not found"}; }

// Runs `sql` with its binds and collects each row through `read`.
template <class T, class Bind, class Read>
Result<std::vector<T>> query(Database& db, std::string_view sql, Bind bind, Read read) {
  OUTPOST_ASSIGN_OR_RETURN(auto statement, db.prepare(sql));
  bind(statement);
  std::vector<T> out;
  for (;;) {
    OUTPOST_ASSIGN_OR_RETURN(const bool row, statement.step());
    if (!row) break;
    out.push_back(read(statement));
  }
  return out;
}

template <class T>
Result<T> single(Result<std::vector<T>> rows, const std::string& what) {
  if (!rows.ok()) return rows.error();
  if (rows.value().empty()) return not_found(what);
  return std::move(rows.value().front());
}

User read_user(const Statement& s) { return {s.text(0), s.integer(1) != 0, s.integer(2)}; }

ApiKey read_key(const Statement& s) {
  ApiKey key;
  key.id = s.text(0);
  key.user_id = s.text(1);
  key.secret_hash = s.text(2);
  key.description = s.text(3);
  key.scopes = split(s.text(4));
  key.created_at = s.integer(5);
  if (!s.is_null(6)) key.expires_at = s.integer(6);
  return key;
}
constexpr const char* kKeyColumns =
    "id, user_id, secret_hash, description, scopes, created_at, expires_at";

ComputeCluster read_cluster(const Statement& s) {
  return {s.text(0), s.text(1), parse_stored(s.text(2)), s.integer(3)};
}

Nodepool read_nodepool(const Statement& s) {
  Nodepool pool;
  pool.user_id = s.text(0);
  pool.id = s.text(1);
  pool.compute_cluster_id = s.text(2);
  if (!s.is_null(3)) pool.max_instances = s.integer(3);
  pool.doc = parse_stored(s.text(4));
  pool.created_at = s.integer(5);
  return pool;
}
constexpr const char* kNodepoolColumns =
    "user_id, id, compute_cluster_id, max_instances, doc, created_at";

Model read_model(const Statement& s) { return {s.text(0), s.text(1), s.text(2), s.integer(3)}; }

ModelVersion read_version(const Statement& s) {
  ModelVersion v;
  v.user_id = s.text(0);
  v.model_id = s.text(1);
  v.id = s.text(2);
  v.seq = s.integer(3);
  v.config = parse_stored(s.text(4));
  v.methods = parse_stored(s.text(5));
  v.artifacts = parse_stored(s.text(6));
  v.created_at = s.integer(7);
  return v;
}
constexpr const char* kVersionColumns =
    "user_id, model_id, id, seq, config, methods, artifacts, created_at";

Deployment read_deployment(const Statement& s) {
  Deployment d;
  d.user_id = s.text(0);
  d.id = s.text(1);
  d.model_id = s.text(2);
  d.model_version_id = s.text(3);
  d.doc = parse_stored(s.text(4));
  d.created_at = s.integer(5);
  return d;
}
constexpr const char* kDeploymentColumns =
    "user_id, id, model_id, model_version_id, doc, created_at";

JoinToken read_join_token(const Statement& s) {
  JoinToken t;
  t.id = s.text(0);
  t.user_id = s.text(1);
  t.compute_cluster_id = s.text(2);
  t.nodepool_id = s.text(3);
  t.secret_hash = s.text(4);
  t.created_at = s.integer(5);
  t.expires_at = s.integer(6);
  if (!s.is_null(7)) t.used_at = s.integer(7);
  return t;
}

Node read_node(const Statement& s) {
  Node n;
  n.id = s.text(0);
  n.user_id = s.text(1);
  n.compute_cluster_id = s.text(2);
  n.nodepool_id = s.text(3);
  n.name = s.text(4);
  n.secret_hash = s.text(5);
  n.inventory = parse_stored(s.text(6));
  n.replicas = parse_stored(s.text(7));
  n.desired_version = s.integer(8);
  n.applied_version = s.integer(9);
  n.created_at = s.integer(10);
  if (!s.is_null(11)) n.last_seen_at = s.integer(11);
  return n;
}
constexpr const char* kNodeColumns =
    "id, user_id, compute_cluster_id, nodepool_id, name, secret_hash, inventory, replicas, "
    "desired_version, applied_version, created_at, last_seen_at";

Replica read_replica(const Statement& s) {
  return {s.text(0), s.text(1), s.text(2), s.text(3), s.text(4)};
}

std::string columns(const char* list, const char* rest) {
  return std::string("SELECT ") + list + rest;
}

}  // namespace

Result<std::unique_ptr<Store>> Store::open(const std::string& path, const WallClock& clock) {
  OUTPOST_ASSIGN_OR_RETURN(auto db, Database::open(path));
  std::unique_ptr<Store> store(new Store(std::move(db), clock));
  OUTPOST_RETURN_IF_ERROR(store->migrate());
  return store;
}

Status Store::migrate() {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_RETURN_IF_ERROR(
      db_->exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"));
  OUTPOST_ASSIGN_OR_RETURN(auto versions,
                           query<int64_t>(
                               *db_, "SELECT version FROM schema_version", [](Statement&) {},
                               [](const Statement& s) { return s.integer(0); }));
  int64_t version = versions.empty() ? 0 : versions.front();
  constexpr int64_t kKnown = std::size(kMigrations);
  static_assert(std::size(kMigrations) == kSchemaVersion);
  if (version > kKnown) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the database has schema version " + std::to_string(version) +
                     ", newer than this outpost-control knows (" + std::to_string(kKnown) +
                     "); run a newer release or restore a backup");
  }
  while (version < kKnown) {
    OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
    OUTPOST_RETURN_IF_ERROR(db_->exec(kMigrations[version]));
    OUTPOST_RETURN_IF_ERROR(db_->exec("DELETE FROM schema_version"));
    OUTPOST_ASSIGN_OR_RETURN(auto insert,
                             db_->prepare("INSERT INTO schema_version (version) VALUES (?1)"));
    OUTPOST_RETURN_IF_ERROR(insert.bind(1, version + 1).run());
    OUTPOST_RETURN_IF_ERROR(tx.commit());
    ++version;
    LOG_NOTICE("control.db_migrated", "database schema migrated to version " << version);
  }
  schema_version_ = static_cast<int>(version);
  return {};
}

// --- users and keys ---

Status Store::create_user(const std::string& id, bool is_admin) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto s, db_->prepare("INSERT INTO users (id, is_admin, created_at) VALUES (?1, ?2, ?3)"));
  Status done =
      s.bind(1, id).bind(2, int64_t{is_admin ? 1 : 0}).bind(3, clock_.now_seconds()).run();
  if (!done.ok() && done.error().code() == ErrorCode::kAlreadyExists) {
    return Error(ErrorCode::kAlreadyExists, "user '" + id + "' already exists");
  }
  return done;
}

Result<User> Store::get_user(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return single(query<User>(
                    *db_, "SELECT id, is_admin, created_at FROM users WHERE id = ?1",
                    [&](Statement& s) { s.bind(1, id); }, read_user),
                "user '" + id + "'");
}

Result<std::vector<User>> Store::list_users() {
  std::lock_guard<std::mutex> lock(mutex_);
  return query<User>(
      *db_, "SELECT id, is_admin, created_at FROM users ORDER BY id", [](Statement&) {}, read_user);
}

Result<int64_t> Store::count_users() {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto rows, query<int64_t>(
                                          *db_, "SELECT count(*) FROM users", [](Statement&) {},
                                          [](const Statement& s) { return s.integer(0); }));
  return rows.empty() ? 0 : rows.front();
}

Status Store::create_key(const ApiKey& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto s, db_->prepare("INSERT INTO api_keys (id, user_id, secret_hash, description, scopes, "
                           "created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
  return s.bind(1, key.id)
      .bind(2, key.user_id)
      .bind(3, key.secret_hash)
      .bind(4, key.description)
      .bind(5, join(key.scopes))
      .bind(6, key.created_at)
      .bind(7, key.expires_at)
      .run();
}

Result<ApiKey> Store::get_key(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return single(query<ApiKey>(
                    *db_, columns(kKeyColumns, " FROM api_keys WHERE id = ?1"),
                    [&](Statement& s) { s.bind(1, id); }, read_key),
                "key '" + id + "'");
}

Result<std::vector<ApiKey>> Store::list_keys(const std::string& user_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return query<ApiKey>(
      *db_, columns(kKeyColumns, " FROM api_keys WHERE user_id = ?1 ORDER BY created_at, id"),
      [&](Statement& s) { s.bind(1, user_id); }, read_key);
}

Status Store::delete_key(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto s,
                           db_->prepare("DELETE FROM api_keys WHERE user_id = ?1 AND id = ?2"));
  OUTPOST_RETURN_IF_ERROR(s.bind(1, user_id).bind(2, id).run());
  if (db_->changes() == 0) return not_found("key '" + id + "'");
  return {};
}

// --- compute clusters and nodepools ---

Status Store::create_cluster(const ComputeCluster& cluster) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto s, db_->prepare("INSERT INTO compute_clusters (user_id, id, doc, "
                                                "created_at) VALUES (?1, ?2, ?3, ?4)"));
  Status done = s.bind(1, cluster.user_id)
                    .bind(2, cluster.id)
                    .bind(3, cluster.doc.dump())
                    .bind(4, cluster.created_at)
                    .run();
  if (!done.ok() && done.error().code() == ErrorCode::kAlreadyExists) {
    return Error(ErrorCode::kAlreadyExists, "compute cluster '" + cluster.id + "' already exists");
  }
  return done;
}

Result<ComputeCluster> Store::get_cluster(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return single(query<ComputeCluster>(
                    *db_,
                    "SELECT user_id, id, doc, created_at FROM compute_clusters "
                    "WHERE user_id = ?1 AND id = ?2",
                    [&](Statement& s) { s.bind(1, user_id).bind(2, id); }, read_cluster),
                "compute cluster '" + id + "'");
}

Result<std::vector<ComputeCluster>> Store::list_clusters(const std::string& user_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return query<ComputeCluster>(
      *db_,
      "SELECT user_id, id, doc, created_at FROM compute_clusters WHERE user_id = ?1 ORDER BY id",
      [&](Statement& s) { s.bind(1, user_id); }, read_cluster);
}

Status Store::delete_cluster(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto pools,
      query<std::string>(
          *db_, "SELECT id FROM nodepools WHERE user_id = ?1 AND compute_cluster_id = ?2",
          [&](Statement& s) { s.bind(1, user_id).bind(2, id); },
          [](const Statement& s) { return s.text(0); }));
  OUTPOST_ASSIGN_OR_RETURN(
      auto s, db_->prepare("SELECT 1 FROM compute_clusters WHERE user_id = ?1 AND id = ?2"));
  OUTPOST_ASSIGN_OR_RETURN(const bool exists, s.bind(1, user_id).bind(2, id).step());
  if (!exists) return not_found("compute cluster '" + id + "'");
  if (!pools.empty()) {
    return Error(ErrorCode::kFailedPrecondition, "compute cluster '" + id +
                                                     "' still has nodepools (" + join(pools) +
                                                     "); delete them first");
  }
  OUTPOST_ASSIGN_OR_RETURN(
      auto del, db_->prepare("DELETE FROM compute_clusters WHERE user_id = ?1 AND id = ?2"));
  return del.bind(1, user_id).bind(2, id).run();
}

Status Store::create_nodepool(const Nodepool& nodepool) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto check, db_->prepare("SELECT 1 FROM compute_clusters WHERE user_id = ?1 AND id = ?2"));
  OUTPOST_ASSIGN_OR_RETURN(
      const bool cluster_exists,
      check.bind(1, nodepool.user_id).bind(2, nodepool.compute_cluster_id).step());
  if (!cluster_exists) return not_found("compute cluster '" + nodepool.compute_cluster_id + "'");
  OUTPOST_ASSIGN_OR_RETURN(
      auto s, db_->prepare("INSERT INTO nodepools (user_id, id, compute_cluster_id, max_instances, "
                           "doc, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
  Status done = s.bind(1, nodepool.user_id)
                    .bind(2, nodepool.id)
                    .bind(3, nodepool.compute_cluster_id)
                    .bind(4, nodepool.max_instances)
                    .bind(5, nodepool.doc.dump())
                    .bind(6, nodepool.created_at)
                    .run();
  if (!done.ok() && done.error().code() == ErrorCode::kAlreadyExists) {
    return Error(ErrorCode::kAlreadyExists,
                 "nodepool '" + nodepool.id +
                     "' already exists (nodepool ids are unique across your compute clusters)");
  }
  return done;
}

Result<Nodepool> Store::get_nodepool(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return single(
      query<Nodepool>(
          *db_, columns(kNodepoolColumns, " FROM nodepools WHERE user_id = ?1 AND id = ?2"),
          [&](Statement& s) { s.bind(1, user_id).bind(2, id); }, read_nodepool),
      "nodepool '" + id + "'");
}

Result<std::vector<Nodepool>> Store::list_nodepools(const std::string& user_id,
                                                    const std::string& compute_cluster_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return query<Nodepool>(
      *db_,
      columns(kNodepoolColumns,
              " FROM nodepools WHERE user_id = ?1 AND (?2 = '' OR compute_cluster_id = ?2) "
              "ORDER BY compute_cluster_id, id"),
      [&](Statement& s) { s.bind(1, user_id).bind(2, compute_cluster_id); }, read_nodepool);
}

Result<std::vector<std::string>> Store::delete_nodepool(const std::string& user_id,
                                                        const std::string& compute_cluster_id,
                                                        const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_ASSIGN_OR_RETURN(
      auto check, db_->prepare("SELECT 1 FROM nodepools WHERE user_id = ?1 AND id = ?2 AND "
                               "compute_cluster_id = ?3"));
  OUTPOST_ASSIGN_OR_RETURN(const bool exists,
                           check.bind(1, user_id).bind(2, id).bind(3, compute_cluster_id).step());
  if (!exists)
    return not_found("nodepool '" + id + "' in compute cluster '" + compute_cluster_id + "'");
  OUTPOST_ASSIGN_OR_RETURN(
      auto deployments,
      query<std::string>(
          *db_,
          "SELECT deployment_id FROM deployment_nodepools WHERE user_id = ?1 AND nodepool_id = ?2 "
          "ORDER BY deployment_id",
          [&](Statement& s) { s.bind(1, user_id).bind(2, id); },
          [](const Statement& s) { return s.text(0); }));
  if (!deployments.empty()) {
    return Error(ErrorCode::kFailedPrecondition, "nodepool '" + id + "' is used by deployments (" +
                                                     join(deployments) + "); delete them first");
  }
  OUTPOST_ASSIGN_OR_RETURN(auto nodes,
                           query<std::string>(
                               *db_, "SELECT id FROM nodes WHERE user_id = ?1 AND nodepool_id = ?2",
                               [&](Statement& s) { s.bind(1, user_id).bind(2, id); },
                               [](const Statement& s) { return s.text(0); }));
  for (const char* sql : {"DELETE FROM replicas WHERE user_id = ?1 AND nodepool_id = ?2",
                          "DELETE FROM nodes WHERE user_id = ?1 AND nodepool_id = ?2",
                          "DELETE FROM join_tokens WHERE user_id = ?1 AND nodepool_id = ?2",
                          "DELETE FROM nodepools WHERE user_id = ?1 AND id = ?2"}) {
    OUTPOST_ASSIGN_OR_RETURN(auto s, db_->prepare(sql));
    OUTPOST_RETURN_IF_ERROR(s.bind(1, user_id).bind(2, id).run());
  }
  OUTPOST_RETURN_IF_ERROR(tx.commit());
  return nodes;
}

// --- models ---

Status Store::create_model(const Model& model) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto s, db_->prepare("INSERT INTO models (user_id, id, description, "
                                                "created_at) VALUES (?1, ?2, ?3, ?4)"));
  Status done = s.bind(1, model.user_id)
                    .bind(2, model.id)
                    .bind(3, model.description)
                    .bind(4, model.created_at)
                    .run();
  if (!done.ok() && done.error().code() == ErrorCode::kAlreadyExists) {
    return Error(ErrorCode::kAlreadyExists, "model '" + model.id + "' already exists");
  }
  return done;
}

Result<Model> Store::get_model(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return single(query<Model>(
                    *db_,
                    "SELECT user_id, id, description, created_at FROM models "
                    "WHERE user_id = ?1 AND id = ?2",
                    [&](Statement& s) { s.bind(1, user_id).bind(2, id); }, read_model),
                "model '" + id + "'");
}

Result<std::vector<Model>> Store::list_models(const std::string& user_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return query<Model>(
      *db_,
      "SELECT user_id, id, description, created_at FROM models WHERE user_id = ?1 ORDER BY id",
      [&](Statement& s) { s.bind(1, user_id); }, read_model);
}

Status Store::delete_model(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_ASSIGN_OR_RETURN(auto check,
                           db_->prepare("SELECT 1 FROM models WHERE user_id = ?1 AND id = ?2"));
  OUTPOST_ASSIGN_OR_RETURN(const bool exists, check.bind(1, user_id).bind(2, id).step());
  if (!exists) return not_found("model '" + id + "'");
  OUTPOST_ASSIGN_OR_RETURN(
      auto deployments,
      query<std::string>(
          *db_, "SELECT id FROM deployments WHERE user_id = ?1 AND model_id = ?2 ORDER BY id",
          [&](Statement& s) { s.bind(1, user_id).bind(2, id); },
          [](const Statement& s) { return s.text(0); }));
  if (!deployments.empty()) {
    return Error(ErrorCode::kFailedPrecondition,
                 "model '" + id + "' is deployed (" + join(deployments) + "); delete those first");
  }
  for (const char* sql : {"DELETE FROM artifacts WHERE user_id = ?1 AND model_id = ?2",
                          "DELETE FROM model_versions WHERE user_id = ?1 AND model_id = ?2",
                          "DELETE FROM models WHERE user_id = ?1 AND id = ?2"}) {
    OUTPOST_ASSIGN_OR_RETURN(auto s, db_->prepare(sql));
    OUTPOST_RETURN_IF_ERROR(s.bind(1, user_id).bind(2, id).run());
  }
  return tx.commit();
}

Result<ModelVersion> Store::create_version(ModelVersion version) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_ASSIGN_OR_RETURN(auto model,
                           db_->prepare("INSERT OR IGNORE INTO models (user_id, id, description, "
                                        "created_at) VALUES (?1, ?2, '', ?3)"));
  OUTPOST_RETURN_IF_ERROR(
      model.bind(1, version.user_id).bind(2, version.model_id).bind(3, version.created_at).run());
  OUTPOST_ASSIGN_OR_RETURN(
      auto seqs, query<int64_t>(
                     *db_,
                     "SELECT coalesce(max(seq), 0) FROM model_versions "
                     "WHERE user_id = ?1 AND model_id = ?2",
                     [&](Statement& s) { s.bind(1, version.user_id).bind(2, version.model_id); },
                     [](const Statement& s) { return s.integer(0); }));
  version.seq = (seqs.empty() ? 0 : seqs.front()) + 1;
  OUTPOST_ASSIGN_OR_RETURN(
      auto insert,
      db_->prepare("INSERT INTO model_versions (user_id, model_id, id, seq, config, methods, "
                   "artifacts, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"));
  OUTPOST_RETURN_IF_ERROR(insert.bind(1, version.user_id)
                              .bind(2, version.model_id)
                              .bind(3, version.id)
                              .bind(4, version.seq)
                              .bind(5, version.config.dump())
                              .bind(6, version.methods.dump())
                              .bind(7, version.artifacts.dump())
                              .bind(8, version.created_at)
                              .run());
  for (const auto& artifact : version.artifacts) {
    OUTPOST_ASSIGN_OR_RETURN(auto s, db_->prepare("INSERT OR IGNORE INTO artifacts (sha256, "
                                                  "user_id, model_id, version_id) VALUES "
                                                  "(?1, ?2, ?3, ?4)"));
    OUTPOST_RETURN_IF_ERROR(s.bind(1, artifact.value("sha256", ""))
                                .bind(2, version.user_id)
                                .bind(3, version.model_id)
                                .bind(4, version.id)
                                .run());
  }
  OUTPOST_RETURN_IF_ERROR(tx.commit());
  return version;
}

Result<ModelVersion> Store::get_version(const std::string& user_id, const std::string& model_id,
                                        const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return single(
      query<ModelVersion>(
          *db_,
          columns(kVersionColumns,
                  " FROM model_versions WHERE user_id = ?1 AND model_id = ?2 AND id = ?3"),
          [&](Statement& s) { s.bind(1, user_id).bind(2, model_id).bind(3, id); }, read_version),
      "version '" + id + "' of model '" + model_id + "'");
}

Result<std::optional<ModelVersion>> Store::latest_version(const std::string& user_id,
                                                          const std::string& model_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto rows, query<ModelVersion>(
                     *db_,
                     columns(kVersionColumns,
                             " FROM model_versions WHERE user_id = ?1 AND model_id = ?2 "
                             "ORDER BY seq DESC LIMIT 1"),
                     [&](Statement& s) { s.bind(1, user_id).bind(2, model_id); }, read_version));
  if (rows.empty()) return std::optional<ModelVersion>();
  return std::optional<ModelVersion>(std::move(rows.front()));
}

Result<std::vector<ModelVersion>> Store::list_versions(const std::string& user_id,
                                                       const std::string& model_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return query<ModelVersion>(
      *db_,
      columns(kVersionColumns,
              " FROM model_versions WHERE user_id = ?1 AND model_id = ?2 ORDER BY seq DESC"),
      [&](Statement& s) { s.bind(1, user_id).bind(2, model_id); }, read_version);
}

Result<bool> Store::artifact_known(const std::string& sha256) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto s, db_->prepare("SELECT 1 FROM artifacts WHERE sha256 = ?1"));
  return s.bind(1, sha256).step();
}

// --- deployments ---

Status Store::create_deployment(const Deployment& deployment) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_ASSIGN_OR_RETURN(
      auto check, db_->prepare("SELECT 1 FROM deployments WHERE user_id = ?1 AND id = ?2"));
  OUTPOST_ASSIGN_OR_RETURN(const bool exists,
                           check.bind(1, deployment.user_id).bind(2, deployment.id).step());
  if (exists) {
    return Error(ErrorCode::kAlreadyExists, "deployment '" + deployment.id + "' already exists");
  }
  for (const auto& pool : deployment.nodepool_ids) {
    OUTPOST_ASSIGN_OR_RETURN(
        auto holders,
        query<std::string>(
            *db_,
            "SELECT deployment_id FROM deployment_nodepools WHERE user_id = ?1 AND "
            "nodepool_id = ?2 AND model_id = ?3",
            [&](Statement& s) {
              s.bind(1, deployment.user_id).bind(2, pool).bind(3, deployment.model_id);
            },
            [](const Statement& s) { return s.text(0); }));
    if (!holders.empty()) {
      return Error(ErrorCode::kAlreadyExists,
                   "deployment.nodepools: model '" + deployment.model_id +
                       "' is already deployed on nodepool '" + pool + "' by deployment '" +
                       holders.front() + "' (one deployment per model per nodepool)");
    }
  }
  OUTPOST_ASSIGN_OR_RETURN(
      auto insert, db_->prepare("INSERT INTO deployments (user_id, id, model_id, model_version_id, "
                                "doc, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
  OUTPOST_RETURN_IF_ERROR(insert.bind(1, deployment.user_id)
                              .bind(2, deployment.id)
                              .bind(3, deployment.model_id)
                              .bind(4, deployment.model_version_id)
                              .bind(5, deployment.doc.dump())
                              .bind(6, deployment.created_at)
                              .run());
  int64_t position = 0;
  for (const auto& pool : deployment.nodepool_ids) {
    OUTPOST_ASSIGN_OR_RETURN(
        auto s, db_->prepare("INSERT INTO deployment_nodepools (user_id, deployment_id, "
                             "nodepool_id, model_id, position) VALUES (?1, ?2, ?3, ?4, ?5)"));
    OUTPOST_RETURN_IF_ERROR(s.bind(1, deployment.user_id)
                                .bind(2, deployment.id)
                                .bind(3, pool)
                                .bind(4, deployment.model_id)
                                .bind(5, position++)
                                .run());
  }
  return tx.commit();
}

namespace {

Status load_nodepool_ids(Database& db, Deployment& deployment) {
  OUTPOST_ASSIGN_OR_RETURN(
      deployment.nodepool_ids,
      query<std::string>(
          db,
          "SELECT nodepool_id FROM deployment_nodepools WHERE user_id = ?1 AND "
          "deployment_id = ?2 ORDER BY position",
          [&](Statement& s) { s.bind(1, deployment.user_id).bind(2, deployment.id); },
          [](const Statement& s) { return s.text(0); }));
  return {};
}

}  // namespace

Result<Deployment> Store::get_deployment(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto deployment,
      single(
          query<Deployment>(
              *db_, columns(kDeploymentColumns, " FROM deployments WHERE user_id = ?1 AND id = ?2"),
              [&](Statement& s) { s.bind(1, user_id).bind(2, id); }, read_deployment),
          "deployment '" + id + "'"));
  OUTPOST_RETURN_IF_ERROR(load_nodepool_ids(*db_, deployment));
  return deployment;
}

Result<std::vector<Deployment>> Store::list_deployments(const std::string& user_id,
                                                        const std::string& nodepool_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto deployments,
      query<Deployment>(
          *db_,
          columns(kDeploymentColumns,
                  " FROM deployments d WHERE user_id = ?1 AND (?2 = '' OR EXISTS (SELECT 1 FROM "
                  "deployment_nodepools p WHERE p.user_id = d.user_id AND p.deployment_id = d.id "
                  "AND p.nodepool_id = ?2)) ORDER BY id"),
          [&](Statement& s) { s.bind(1, user_id).bind(2, nodepool_id); }, read_deployment));
  for (auto& deployment : deployments) {
    OUTPOST_RETURN_IF_ERROR(load_nodepool_ids(*db_, deployment));
  }
  return deployments;
}

Status Store::delete_deployment(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_ASSIGN_OR_RETURN(auto s,
                           db_->prepare("DELETE FROM deployments WHERE user_id = ?1 AND id = ?2"));
  OUTPOST_RETURN_IF_ERROR(s.bind(1, user_id).bind(2, id).run());
  if (db_->changes() == 0) return not_found("deployment '" + id + "'");
  // Its replicas stay until the next reschedule removes them: that is what bumps the versions of
  // the nodes that held them.
  return tx.commit();
}

// --- enrollment and nodes ---

Status Store::create_join_token(const JoinToken& token) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto s, db_->prepare("INSERT INTO join_tokens (id, user_id, compute_cluster_id, nodepool_id, "
                           "secret_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
                           "?7)"));
  return s.bind(1, token.id)
      .bind(2, token.user_id)
      .bind(3, token.compute_cluster_id)
      .bind(4, token.nodepool_id)
      .bind(5, token.secret_hash)
      .bind(6, token.created_at)
      .bind(7, token.expires_at)
      .run();
}

Result<JoinToken> Store::get_join_token(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return single(query<JoinToken>(
                    *db_,
                    "SELECT id, user_id, compute_cluster_id, nodepool_id, secret_hash, created_at, "
                    "expires_at, used_at FROM join_tokens WHERE id = ?1",
                    [&](Statement& s) { s.bind(1, id); }, read_join_token),
                "join token");
}

Status Store::enroll_node(const std::string& token_id, int64_t now, const Node& node) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  // The single use is this conditional UPDATE: of two concurrent enrollments, one changes the row.
  OUTPOST_ASSIGN_OR_RETURN(auto consume,
                           db_->prepare("UPDATE join_tokens SET used_at = ?2 WHERE id = ?1 AND "
                                        "used_at IS NULL AND expires_at > ?2"));
  OUTPOST_RETURN_IF_ERROR(consume.bind(1, token_id).bind(2, now).run());
  if (db_->changes() != 1) {
    return Error(ErrorCode::kUnauthenticated,
                 "the join token was already used or has expired; create a new one with "
                 "`outpost nodepool join-token`");
  }
  using Limit = std::pair<std::optional<int64_t>, int64_t>;  // max_instances, nodes enrolled
  OUTPOST_ASSIGN_OR_RETURN(
      auto limits,
      query<Limit>(
          *db_,
          "SELECT p.max_instances, (SELECT count(*) FROM nodes n WHERE n.user_id = p.user_id AND "
          "n.nodepool_id = p.id) FROM nodepools p WHERE p.user_id = ?1 AND p.id = ?2",
          [&](Statement& s) { s.bind(1, node.user_id).bind(2, node.nodepool_id); },
          [](const Statement& s) {
            return Limit(s.is_null(0) ? std::nullopt : std::optional<int64_t>(s.integer(0)),
                         s.integer(1));
          }));
  if (limits.empty()) {
    return Error(ErrorCode::kFailedPrecondition, "the join token's nodepool no longer exists");
  }
  const auto [max_instances, count] = limits.front();
  if (max_instances.has_value() && count >= *max_instances) {
    return Error(ErrorCode::kResourceExhausted,
                 "nodepool '" + node.nodepool_id + "' already has max_instances (" +
                     std::to_string(*max_instances) + ") nodes; raise it or remove a node");
  }
  OUTPOST_ASSIGN_OR_RETURN(
      auto insert,
      db_->prepare("INSERT INTO nodes (id, user_id, compute_cluster_id, nodepool_id, name, "
                   "secret_hash, inventory, replicas, desired_version, applied_version, "
                   "created_at, last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '[]', 0, 0, "
                   "?8, ?8)"));
  OUTPOST_RETURN_IF_ERROR(insert.bind(1, node.id)
                              .bind(2, node.user_id)
                              .bind(3, node.compute_cluster_id)
                              .bind(4, node.nodepool_id)
                              .bind(5, node.name)
                              .bind(6, node.secret_hash)
                              .bind(7, node.inventory.dump())
                              .bind(8, now)
                              .run());
  return tx.commit();
}

Result<Node> Store::get_node(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return single(query<Node>(
                    *db_, columns(kNodeColumns, " FROM nodes WHERE id = ?1"),
                    [&](Statement& s) { s.bind(1, id); }, read_node),
                "node '" + id + "'");
}

Result<std::vector<Node>> Store::list_nodes(const std::string& user_id,
                                            const std::string& nodepool_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return query<Node>(
      *db_,
      columns(kNodeColumns,
              " FROM nodes WHERE user_id = ?1 AND (?2 = '' OR nodepool_id = ?2) ORDER BY "
              "created_at, id"),
      [&](Statement& s) { s.bind(1, user_id).bind(2, nodepool_id); }, read_node);
}

Status Store::delete_node(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_ASSIGN_OR_RETURN(
      auto replicas, db_->prepare("DELETE FROM replicas WHERE user_id = ?1 AND node_id = ?2"));
  OUTPOST_RETURN_IF_ERROR(replicas.bind(1, user_id).bind(2, id).run());
  OUTPOST_ASSIGN_OR_RETURN(auto s,
                           db_->prepare("DELETE FROM nodes WHERE user_id = ?1 AND id = ?2"));
  OUTPOST_RETURN_IF_ERROR(s.bind(1, user_id).bind(2, id).run());
  if (db_->changes() == 0) return not_found("node '" + id + "'");
  return tx.commit();
}

Status Store::record_report(const std::string& node_id, const json* inventory, const json& replicas,
                            int64_t applied_version, int64_t now) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto s, db_->prepare("UPDATE nodes SET inventory = coalesce(?2, inventory), replicas = ?3, "
                           "applied_version = ?4, last_seen_at = ?5 WHERE id = ?1"));
  s.bind(1, node_id);
  if (inventory != nullptr) {
    s.bind(2, inventory->dump());
  } else {
    s.bind_null(2);
  }
  return s.bind(3, replicas.dump()).bind(4, applied_version).bind(5, now).run();
}

// --- replicas ---

Result<std::vector<Replica>> Store::list_replicas(const std::string& user_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return query<Replica>(
      *db_,
      "SELECT user_id, id, deployment_id, nodepool_id, node_id FROM replicas WHERE user_id = ?1 "
      "ORDER BY id",
      [&](Statement& s) { s.bind(1, user_id); }, read_replica);
}

Result<std::vector<Replica>> Store::replicas_of_node(const std::string& node_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return query<Replica>(
      *db_,
      "SELECT user_id, id, deployment_id, nodepool_id, node_id FROM replicas WHERE node_id = ?1 "
      "ORDER BY id",
      [&](Statement& s) { s.bind(1, node_id); }, read_replica);
}

Result<std::vector<std::string>> Store::replace_replicas(const std::string& user_id,
                                                         const std::vector<Replica>& replicas) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_ASSIGN_OR_RETURN(
      auto old, query<Replica>(
                    *db_,
                    "SELECT user_id, id, deployment_id, nodepool_id, node_id FROM replicas "
                    "WHERE user_id = ?1",
                    [&](Statement& s) { s.bind(1, user_id); }, read_replica));
  std::map<std::string, std::set<std::string>> before;
  std::map<std::string, std::set<std::string>> after;
  for (const auto& r : old) before[r.node_id].insert(r.id);
  for (const auto& r : replicas) after[r.node_id].insert(r.id);
  std::set<std::string> nodes;
  for (const auto& [node, ids] : before) {
    const auto it = after.find(node);
    if (it == after.end() || it->second != ids) nodes.insert(node);
  }
  for (const auto& [node, ids] : after) {
    const auto it = before.find(node);
    if (it == before.end() || it->second != ids) nodes.insert(node);
  }
  OUTPOST_ASSIGN_OR_RETURN(auto clear, db_->prepare("DELETE FROM replicas WHERE user_id = ?1"));
  OUTPOST_RETURN_IF_ERROR(clear.bind(1, user_id).run());
  for (const auto& r : replicas) {
    OUTPOST_ASSIGN_OR_RETURN(auto s, db_->prepare("INSERT INTO replicas (user_id, id, "
                                                  "deployment_id, nodepool_id, node_id) VALUES "
                                                  "(?1, ?2, ?3, ?4, ?5)"));
    OUTPOST_RETURN_IF_ERROR(s.bind(1, user_id)
                                .bind(2, r.id)
                                .bind(3, r.deployment_id)
                                .bind(4, r.nodepool_id)
                                .bind(5, r.node_id)
                                .run());
  }
  for (const auto& node : nodes) {
    OUTPOST_ASSIGN_OR_RETURN(auto s, db_->prepare("UPDATE nodes SET desired_version = "
                                                  "desired_version + 1 WHERE id = ?1"));
    OUTPOST_RETURN_IF_ERROR(s.bind(1, node).run());
  }
  OUTPOST_RETURN_IF_ERROR(tx.commit());
  return std::vector<std::string>(nodes.begin(), nodes.end());
}

// --- the autoscaler's counts ---

Result<std::vector<DeploymentScale>> Store::list_scales() {
  std::lock_guard<std::mutex> lock(mutex_);
  return query<DeploymentScale>(
      *db_,
      "SELECT user_id, deployment_id, nodepool_id, replicas FROM deployment_scales ORDER BY "
      "user_id, deployment_id, nodepool_id",
      [](Statement&) {},
      [](const Statement& s) {
        return DeploymentScale{s.text(0), s.text(1), s.text(2), s.integer(3)};
      });
}

Result<std::vector<ThrottleWindow>> Store::list_throttle_windows(int64_t started_after) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto expired,
                           db_->prepare("DELETE FROM auth_throttle WHERE window_start <= ?1"));
  OUTPOST_RETURN_IF_ERROR(expired.bind(1, started_after).run());
  return query<ThrottleWindow>(
      *db_, "SELECT source, window_start, failures FROM auth_throttle ORDER BY source",
      [](Statement&) {},
      [](const Statement& s) {
        return ThrottleWindow{s.text(0), s.integer(1), static_cast<int>(s.integer(2))};
      });
}

Status Store::save_throttle_window(const ThrottleWindow& window) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto s, db_->prepare("INSERT INTO auth_throttle (source, window_start, failures) VALUES "
                           "(?1, ?2, ?3) ON CONFLICT (source) DO UPDATE SET window_start = "
                           "excluded.window_start, failures = excluded.failures"));
  return s.bind(1, window.source).bind(2, window.start).bind(3, int64_t{window.failures}).run();
}

Status Store::set_scale(const DeploymentScale& scale) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto s, db_->prepare("INSERT INTO deployment_scales (user_id, deployment_id, nodepool_id, "
                           "replicas) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id, deployment_id, "
                           "nodepool_id) DO UPDATE SET replicas = excluded.replicas"));
  return s.bind(1, scale.user_id)
      .bind(2, scale.deployment_id)
      .bind(3, scale.nodepool_id)
      .bind(4, scale.replicas)
      .run();
}

}  // namespace outpost::control
