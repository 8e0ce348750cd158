#include "controlplane/state/store.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <variant>

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

// How each kind of field is stored: JSON documents and lists as text, booleans as 0/1.
void bind_value(Statement& s, int i, std::string_view value) { s.bind(i, value); }
void bind_value(Statement& s, int i, const std::string& value) { s.bind(i, value); }
// Not as a bool: a literal is passed as a std::string_view.
void bind_value(Statement& s, int i, const char* value) = delete;
void bind_value(Statement& s, int i, int64_t value) { s.bind(i, value); }
void bind_value(Statement& s, int i, int value) { s.bind(i, int64_t{value}); }
void bind_value(Statement& s, int i, bool value) { s.bind(i, int64_t{value ? 1 : 0}); }
void bind_value(Statement& s, int i, std::optional<int64_t> value) { s.bind(i, value); }
void bind_value(Statement& s, int i, const json& value) { s.bind(i, value.dump()); }
void bind_value(Statement& s, int i, const std::vector<std::string>& value) {
  s.bind(i, join(value));
}

void read_value(const Statement& s, int i, std::string& out) { out = s.text(i); }
void read_value(const Statement& s, int i, int64_t& out) { out = s.integer(i); }
void read_value(const Statement& s, int i, int& out) { out = static_cast<int>(s.integer(i)); }
void read_value(const Statement& s, int i, bool& out) { out = s.integer(i) != 0; }
void read_value(const Statement& s, int i, std::optional<int64_t>& out) {
  out = s.is_null(i) ? std::nullopt : std::optional<int64_t>(s.integer(i));
}
void read_value(const Statement& s, int i, json& out) { out = parse_stored(s.text(i)); }
void read_value(const Statement& s, int i, std::vector<std::string>& out) {
  out = split(s.text(i));
}

// Binds ?1, ?2, ... to `values`, in order.
template <class... V>
void bind_all(Statement& s, const V&... values) {
  int i = 0;
  (bind_value(s, ++i, values), ...);
}

// One table as rows of T: each column and the field of T it holds, in the table's order. The
// one list gives the SELECT's columns, the INSERT's and how a row is read and bound.
template <class T>
struct Column {
  const char* name;
  std::variant<std::string T::*, int64_t T::*, int T::*, bool T::*, std::optional<int64_t> T::*,
               json T::*, std::vector<std::string> T::*>
      field;
};

template <class T>
struct Table {
  const char* name;
  std::span<const Column<T>> columns;

  std::string select(std::string_view rest) const {
    std::string sql = "SELECT ";
    for (size_t i = 0; i < columns.size(); ++i)
      sql += (i > 0 ? ", " : "") + std::string(columns[i].name);
    return sql + " FROM " + name + " " + std::string(rest);
  }
  std::string insert() const {
    std::string names;
    std::string values;
    for (size_t i = 0; i < columns.size(); ++i) {
      names += (i > 0 ? ", " : "") + std::string(columns[i].name);
      values += (i > 0 ? ", ?" : "?") + std::to_string(i + 1);
    }
    return std::string("INSERT INTO ") + name + " (" + names + ") VALUES (" + values + ")";
  }
  T read(const Statement& s) const {
    T row{};
    for (size_t i = 0; i < columns.size(); ++i) {
      std::visit([&](auto field) { read_value(s, static_cast<int>(i), row.*field); },
                 columns[i].field);
    }
    return row;
  }
  void bind(Statement& s, const T& row) const {
    for (size_t i = 0; i < columns.size(); ++i) {
      std::visit([&](auto field) { bind_value(s, static_cast<int>(i + 1), row.*field); },
                 columns[i].field);
    }
  }
};

constexpr Column<User> kUsersColumns[] = {
    {"id", &User::id}, {"is_admin", &User::is_admin}, {"created_at", &User::created_at}};
constexpr Table<User> kUsers{"users", kUsersColumns};

constexpr Column<ApiKey> kKeysColumns[] = {{"id", &ApiKey::id},
                                           {"user_id", &ApiKey::user_id},
                                           {"secret_hash", &ApiKey::secret_hash},
                                           {"description", &ApiKey::description},
                                           {"scopes", &ApiKey::scopes},
                                           {"created_at", &ApiKey::created_at},
                                           {"expires_at", &ApiKey::expires_at}};
constexpr Table<ApiKey> kKeys{"api_keys", kKeysColumns};

constexpr Column<ComputeCluster> kClustersColumns[] = {{"user_id", &ComputeCluster::user_id},
                                                       {"id", &ComputeCluster::id},
                                                       {"doc", &ComputeCluster::doc},
                                                       {"created_at", &ComputeCluster::created_at}};
constexpr Table<ComputeCluster> kClusters{"compute_clusters", kClustersColumns};

constexpr Column<Nodepool> kNodepoolsColumns[] = {
    {"user_id", &Nodepool::user_id},
    {"id", &Nodepool::id},
    {"compute_cluster_id", &Nodepool::compute_cluster_id},
    {"max_instances", &Nodepool::max_instances},
    {"doc", &Nodepool::doc},
    {"created_at", &Nodepool::created_at}};
constexpr Table<Nodepool> kNodepools{"nodepools", kNodepoolsColumns};

constexpr Column<Model> kModelsColumns[] = {{"user_id", &Model::user_id},
                                            {"id", &Model::id},
                                            {"description", &Model::description},
                                            {"created_at", &Model::created_at}};
constexpr Table<Model> kModels{"models", kModelsColumns};

constexpr Column<ModelVersion> kVersionsColumns[] = {{"user_id", &ModelVersion::user_id},
                                                     {"model_id", &ModelVersion::model_id},
                                                     {"id", &ModelVersion::id},
                                                     {"seq", &ModelVersion::seq},
                                                     {"config", &ModelVersion::config},
                                                     {"methods", &ModelVersion::methods},
                                                     {"artifacts", &ModelVersion::artifacts},
                                                     {"created_at", &ModelVersion::created_at}};
constexpr Table<ModelVersion> kVersions{"model_versions", kVersionsColumns};

// nodepool_ids live in deployment_nodepools.
constexpr Column<Deployment> kDeploymentsColumns[] = {
    {"user_id", &Deployment::user_id},   {"id", &Deployment::id},
    {"model_id", &Deployment::model_id}, {"model_version_id", &Deployment::model_version_id},
    {"doc", &Deployment::doc},           {"created_at", &Deployment::created_at}};
constexpr Table<Deployment> kDeployments{"deployments", kDeploymentsColumns};

constexpr Column<JoinToken> kJoinTokensColumns[] = {
    {"id", &JoinToken::id},
    {"user_id", &JoinToken::user_id},
    {"compute_cluster_id", &JoinToken::compute_cluster_id},
    {"nodepool_id", &JoinToken::nodepool_id},
    {"secret_hash", &JoinToken::secret_hash},
    {"created_at", &JoinToken::created_at},
    {"expires_at", &JoinToken::expires_at},
    {"used_at", &JoinToken::used_at}};
constexpr Table<JoinToken> kJoinTokens{"join_tokens", kJoinTokensColumns};

constexpr Column<Node> kNodesColumns[] = {{"id", &Node::id},
                                          {"user_id", &Node::user_id},
                                          {"compute_cluster_id", &Node::compute_cluster_id},
                                          {"nodepool_id", &Node::nodepool_id},
                                          {"name", &Node::name},
                                          {"secret_hash", &Node::secret_hash},
                                          {"inventory", &Node::inventory},
                                          {"replicas", &Node::replicas},
                                          {"desired_version", &Node::desired_version},
                                          {"applied_version", &Node::applied_version},
                                          {"created_at", &Node::created_at},
                                          {"last_seen_at", &Node::last_seen_at}};
constexpr Table<Node> kNodes{"nodes", kNodesColumns};

constexpr Column<Replica> kReplicasColumns[] = {{"user_id", &Replica::user_id},
                                                {"id", &Replica::id},
                                                {"deployment_id", &Replica::deployment_id},
                                                {"nodepool_id", &Replica::nodepool_id},
                                                {"node_id", &Replica::node_id}};
constexpr Table<Replica> kReplicas{"replicas", kReplicasColumns};

constexpr Column<DeploymentScale> kScalesColumns[] = {
    {"user_id", &DeploymentScale::user_id},
    {"deployment_id", &DeploymentScale::deployment_id},
    {"nodepool_id", &DeploymentScale::nodepool_id},
    {"replicas", &DeploymentScale::replicas}};
constexpr Table<DeploymentScale> kScales{"deployment_scales", kScalesColumns};

constexpr Column<ThrottleWindow> kThrottleColumns[] = {{"source", &ThrottleWindow::source},
                                                       {"window_start", &ThrottleWindow::start},
                                                       {"failures", &ThrottleWindow::failures}};
constexpr Table<ThrottleWindow> kThrottle{"auth_throttle", kThrottleColumns};

// Runs `sql` with `keys` bound and collects each row through `read`.
template <class T, class Read, class... K>
Result<std::vector<T>> query(Database& db, std::string_view sql, Read read, const K&... keys) {
  OUTPOST_ASSIGN_OR_RETURN(auto statement, db.prepare(sql));
  bind_all(statement, keys...);
  std::vector<T> out;
  for (;;) {
    OUTPOST_ASSIGN_OR_RETURN(const bool row, statement.step());
    if (!row) break;
    out.push_back(read(statement));
  }
  return out;
}

// The rows of `table` that `rest` (WHERE ... ORDER BY ...) selects.
template <class T, class... K>
Result<std::vector<T>> select(Database& db, const Table<T>& table, std::string_view rest,
                              const K&... keys) {
  return query<T>(
      db, table.select(rest), [&](const Statement& s) { return table.read(s); }, keys...);
}

// The one row `rest` selects; not_found naming `what` when there is none.
template <class T, class... K>
Result<T> select_one(Database& db, const Table<T>& table, const std::string& what,
                     std::string_view rest, const K&... keys) {
  OUTPOST_ASSIGN_OR_RETURN(auto rows, select(db, table, rest, keys...));
  if (rows.empty()) return not_found(what);
  return std::move(rows.front());
}

// The first column of each row, as text.
template <class... K>
Result<std::vector<std::string>> texts(Database& db, std::string_view sql, const K&... keys) {
  return query<std::string>(
      db, sql, [](const Statement& s) { return s.text(0); }, keys...);
}

template <class... K>
Result<int64_t> integer(Database& db, std::string_view sql, const K&... keys) {
  OUTPOST_ASSIGN_OR_RETURN(auto rows,
                           query<int64_t>(
                               db, sql, [](const Statement& s) { return s.integer(0); }, keys...));
  return rows.empty() ? 0 : rows.front();
}

// Whether `sql` finds a row.
template <class... K>
Result<bool> exists(Database& db, std::string_view sql, const K&... keys) {
  OUTPOST_ASSIGN_OR_RETURN(auto statement, db.prepare(sql));
  bind_all(statement, keys...);
  return statement.step();
}

template <class... K>
Status execute(Database& db, std::string_view sql, const K&... values) {
  OUTPOST_ASSIGN_OR_RETURN(auto statement, db.prepare(sql));
  bind_all(statement, values...);
  return statement.run();
}

// Inserts `row`; a row with the same key is refused with `duplicate` (already_exists).
template <class T>
Status insert(Database& db, const Table<T>& table, const T& row, const std::string& duplicate) {
  OUTPOST_ASSIGN_OR_RETURN(auto statement, db.prepare(table.insert()));
  table.bind(statement, row);
  Status done = statement.run();
  if (!done.ok() && done.error().code() == ErrorCode::kAlreadyExists) {
    return Error(ErrorCode::kAlreadyExists, duplicate);
  }
  return done;
}

// Deletes what `sql` names; not_found naming `what` when it deleted nothing.
template <class... K>
Status delete_one(Database& db, const std::string& what, std::string_view sql, const K&... keys) {
  OUTPOST_RETURN_IF_ERROR(execute(db, sql, keys...));
  if (db.changes() == 0) return not_found(what);
  return {};
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
  OUTPOST_ASSIGN_OR_RETURN(int64_t version, integer(*db_, "SELECT version FROM schema_version"));
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
    OUTPOST_RETURN_IF_ERROR(
        execute(*db_, "INSERT INTO schema_version (version) VALUES (?1)", version + 1));
    OUTPOST_RETURN_IF_ERROR(tx.commit());
    ++version;
    LOG_NOTICE("control.db_migrated", "database schema migrated to version " << version);
  }
  schema_version_ = static_cast<int>(version);
  return {};
}

// --- the predict path's cache ---

namespace {

// Most entries a cache holds before it starts again empty: rows that predicts read stay few (a
// user's deployments and the versions they run), the bound is for a pathological reader.
constexpr size_t kMaxCached = 4096;

std::string cache_key(const std::string& a, const std::string& b, const std::string& c = {}) {
  std::string key = a;
  key += '\0';
  key += b;
  key += '\0';
  key += c;
  return key;
}

}  // namespace

template <typename T, typename Load>
Result<T> Store::read_through(std::unordered_map<std::string, T> Cached::*table, std::string key,
                              const Load& load) {
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto& rows = cached_.*table;
    if (const auto it = rows.find(key); it != rows.end()) return it->second;
  }
  // Read and kept under mutex_, which every write holds while it empties the cache.
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(T row, load());
  std::lock_guard<std::mutex> cache_lock(cache_mutex_);
  if (cached_.size() >= kMaxCached) cached_ = Cached{};
  (cached_.*table).insert_or_assign(std::move(key), row);
  return row;
}

void Store::forget_cached() {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  cached_ = Cached{};
}

// --- users and keys ---

Status Store::create_user(const std::string& id, bool is_admin) {
  std::lock_guard<std::mutex> lock(mutex_);
  return insert(*db_, kUsers, User{id, is_admin, clock_.now_seconds()},
                "user '" + id + "' already exists");
}

Result<User> Store::get_user(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select_one(*db_, kUsers, "user '" + id + "'", "WHERE id = ?1", id);
}

Result<std::vector<User>> Store::list_users() {
  std::lock_guard<std::mutex> lock(mutex_);
  return select(*db_, kUsers, "ORDER BY id");
}

Result<int64_t> Store::count_users() {
  std::lock_guard<std::mutex> lock(mutex_);
  return integer(*db_, "SELECT count(*) FROM users");
}

Status Store::create_key(const ApiKey& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  return insert(*db_, kKeys, key, "key '" + key.id + "' already exists");
}

Result<ApiKey> Store::get_key(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select_one(*db_, kKeys, "key '" + id + "'", "WHERE id = ?1", id);
}

Result<std::vector<ApiKey>> Store::list_keys(const std::string& user_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select(*db_, kKeys, "WHERE user_id = ?1 ORDER BY created_at, id", user_id);
}

Status Store::delete_key(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return delete_one(*db_, "key '" + id + "'", "DELETE FROM api_keys WHERE user_id = ?1 AND id = ?2",
                    user_id, id);
}

// --- compute clusters and nodepools ---

Status Store::create_cluster(const ComputeCluster& cluster) {
  std::lock_guard<std::mutex> lock(mutex_);
  return insert(*db_, kClusters, cluster, "compute cluster '" + cluster.id + "' already exists");
}

Result<ComputeCluster> Store::get_cluster(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select_one(*db_, kClusters, "compute cluster '" + id + "'",
                    "WHERE user_id = ?1 AND id = ?2", user_id, id);
}

Result<std::vector<ComputeCluster>> Store::list_clusters(const std::string& user_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select(*db_, kClusters, "WHERE user_id = ?1 ORDER BY id", user_id);
}

Status Store::delete_cluster(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      const bool found,
      exists(*db_, "SELECT 1 FROM compute_clusters WHERE user_id = ?1 AND id = ?2", user_id, id));
  if (!found) return not_found("compute cluster '" + id + "'");
  OUTPOST_ASSIGN_OR_RETURN(
      auto pools,
      texts(*db_, "SELECT id FROM nodepools WHERE user_id = ?1 AND compute_cluster_id = ?2",
            user_id, id));
  if (!pools.empty()) {
    return Error(ErrorCode::kFailedPrecondition, "compute cluster '" + id +
                                                     "' still has nodepools (" + join(pools) +
                                                     "); delete them first");
  }
  return execute(*db_, "DELETE FROM compute_clusters WHERE user_id = ?1 AND id = ?2", user_id, id);
}

Status Store::create_nodepool(const Nodepool& nodepool) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      const bool cluster_exists,
      exists(*db_, "SELECT 1 FROM compute_clusters WHERE user_id = ?1 AND id = ?2",
             nodepool.user_id, nodepool.compute_cluster_id));
  if (!cluster_exists) return not_found("compute cluster '" + nodepool.compute_cluster_id + "'");
  return insert(*db_, kNodepools, nodepool,
                "nodepool '" + nodepool.id +
                    "' already exists (nodepool ids are unique across your compute clusters)");
}

Result<Nodepool> Store::get_nodepool(const std::string& user_id, const std::string& id) {
  return read_through(&Cached::nodepools, cache_key(user_id, id), [&] {
    return select_one(*db_, kNodepools, "nodepool '" + id + "'", "WHERE user_id = ?1 AND id = ?2",
                      user_id, id);
  });
}

Result<std::vector<Nodepool>> Store::list_nodepools(const std::string& user_id,
                                                    const std::string& compute_cluster_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select(*db_, kNodepools,
                "WHERE user_id = ?1 AND (?2 = '' OR compute_cluster_id = ?2) "
                "ORDER BY compute_cluster_id, id",
                user_id, compute_cluster_id);
}

Result<std::vector<std::string>> Store::delete_nodepool(const std::string& user_id,
                                                        const std::string& compute_cluster_id,
                                                        const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  forget_cached();
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_ASSIGN_OR_RETURN(const bool found,
                           exists(*db_,
                                  "SELECT 1 FROM nodepools WHERE user_id = ?1 AND id = ?2 AND "
                                  "compute_cluster_id = ?3",
                                  user_id, id, compute_cluster_id));
  if (!found) {
    return not_found("nodepool '" + id + "' in compute cluster '" + compute_cluster_id + "'");
  }
  OUTPOST_ASSIGN_OR_RETURN(auto deployments,
                           texts(*db_,
                                 "SELECT deployment_id FROM deployment_nodepools WHERE user_id = "
                                 "?1 AND nodepool_id = ?2 ORDER BY deployment_id",
                                 user_id, id));
  if (!deployments.empty()) {
    return Error(ErrorCode::kFailedPrecondition, "nodepool '" + id + "' is used by deployments (" +
                                                     join(deployments) + "); delete them first");
  }
  OUTPOST_ASSIGN_OR_RETURN(
      auto nodes,
      texts(*db_, "SELECT id FROM nodes WHERE user_id = ?1 AND nodepool_id = ?2", user_id, id));
  for (const char* sql : {"DELETE FROM replicas WHERE user_id = ?1 AND nodepool_id = ?2",
                          "DELETE FROM nodes WHERE user_id = ?1 AND nodepool_id = ?2",
                          "DELETE FROM join_tokens WHERE user_id = ?1 AND nodepool_id = ?2",
                          "DELETE FROM nodepools WHERE user_id = ?1 AND id = ?2"}) {
    OUTPOST_RETURN_IF_ERROR(execute(*db_, sql, user_id, id));
  }
  OUTPOST_RETURN_IF_ERROR(tx.commit());
  return nodes;
}

// --- models ---

Status Store::create_model(const Model& model) {
  std::lock_guard<std::mutex> lock(mutex_);
  return insert(*db_, kModels, model, "model '" + model.id + "' already exists");
}

Result<Model> Store::get_model(const std::string& user_id, const std::string& id) {
  return read_through(&Cached::models, cache_key(user_id, id), [&] {
    return select_one(*db_, kModels, "model '" + id + "'", "WHERE user_id = ?1 AND id = ?2",
                      user_id, id);
  });
}

Result<std::vector<Model>> Store::list_models(const std::string& user_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select(*db_, kModels, "WHERE user_id = ?1 ORDER BY id", user_id);
}

Status Store::delete_model(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  forget_cached();
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_ASSIGN_OR_RETURN(
      const bool found,
      exists(*db_, "SELECT 1 FROM models WHERE user_id = ?1 AND id = ?2", user_id, id));
  if (!found) return not_found("model '" + id + "'");
  OUTPOST_ASSIGN_OR_RETURN(
      auto deployments,
      texts(*db_, "SELECT id FROM deployments WHERE user_id = ?1 AND model_id = ?2 ORDER BY id",
            user_id, id));
  if (!deployments.empty()) {
    return Error(ErrorCode::kFailedPrecondition,
                 "model '" + id + "' is deployed (" + join(deployments) + "); delete those first");
  }
  for (const char* sql : {"DELETE FROM artifacts WHERE user_id = ?1 AND model_id = ?2",
                          "DELETE FROM model_versions WHERE user_id = ?1 AND model_id = ?2",
                          "DELETE FROM models WHERE user_id = ?1 AND id = ?2"}) {
    OUTPOST_RETURN_IF_ERROR(execute(*db_, sql, user_id, id));
  }
  return tx.commit();
}

Result<ModelVersion> Store::create_version(ModelVersion version) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_RETURN_IF_ERROR(execute(*db_,
                                  "INSERT OR IGNORE INTO models (user_id, id, description, "
                                  "created_at) VALUES (?1, ?2, '', ?3)",
                                  version.user_id, version.model_id, version.created_at));
  OUTPOST_ASSIGN_OR_RETURN(const int64_t last,
                           integer(*db_,
                                   "SELECT coalesce(max(seq), 0) FROM model_versions "
                                   "WHERE user_id = ?1 AND model_id = ?2",
                                   version.user_id, version.model_id));
  version.seq = last + 1;
  OUTPOST_RETURN_IF_ERROR(
      insert(*db_, kVersions, version,
             "version '" + version.id + "' of model '" + version.model_id + "' already exists"));
  for (const auto& artifact : version.artifacts) {
    OUTPOST_RETURN_IF_ERROR(execute(*db_,
                                    "INSERT OR IGNORE INTO artifacts (sha256, user_id, model_id, "
                                    "version_id) VALUES (?1, ?2, ?3, ?4)",
                                    artifact.value("sha256", ""), version.user_id, version.model_id,
                                    version.id));
  }
  OUTPOST_RETURN_IF_ERROR(tx.commit());
  return version;
}

Result<ModelVersion> Store::get_version(const std::string& user_id, const std::string& model_id,
                                        const std::string& id) {
  return read_through(&Cached::versions, cache_key(user_id, model_id, id), [&] {
    return select_one(*db_, kVersions, "version '" + id + "' of model '" + model_id + "'",
                      "WHERE user_id = ?1 AND model_id = ?2 AND id = ?3", user_id, model_id, id);
  });
}

Result<std::optional<ModelVersion>> Store::latest_version(const std::string& user_id,
                                                          const std::string& model_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto rows,
      select(*db_, kVersions, "WHERE user_id = ?1 AND model_id = ?2 ORDER BY seq DESC LIMIT 1",
             user_id, model_id));
  if (rows.empty()) return std::optional<ModelVersion>();
  return std::optional<ModelVersion>(std::move(rows.front()));
}

Result<std::vector<ModelVersion>> Store::list_versions(const std::string& user_id,
                                                       const std::string& model_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select(*db_, kVersions, "WHERE user_id = ?1 AND model_id = ?2 ORDER BY seq DESC", user_id,
                model_id);
}

Result<bool> Store::artifact_known(const std::string& sha256) {
  std::lock_guard<std::mutex> lock(mutex_);
  return exists(*db_, "SELECT 1 FROM artifacts WHERE sha256 = ?1", sha256);
}

// --- deployments ---

Status Store::create_deployment(const Deployment& deployment) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_ASSIGN_OR_RETURN(const bool found,
                           exists(*db_, "SELECT 1 FROM deployments WHERE user_id = ?1 AND id = ?2",
                                  deployment.user_id, deployment.id));
  if (found) {
    return Error(ErrorCode::kAlreadyExists, "deployment '" + deployment.id + "' already exists");
  }
  for (const auto& pool : deployment.nodepool_ids) {
    OUTPOST_ASSIGN_OR_RETURN(auto holders,
                             texts(*db_,
                                   "SELECT deployment_id FROM deployment_nodepools WHERE user_id "
                                   "= ?1 AND nodepool_id = ?2 AND model_id = ?3",
                                   deployment.user_id, pool, deployment.model_id));
    if (!holders.empty()) {
      return Error(ErrorCode::kAlreadyExists,
                   "deployment.nodepools: model '" + deployment.model_id +
                       "' is already deployed on nodepool '" + pool + "' by deployment '" +
                       holders.front() + "' (one deployment per model per nodepool)");
    }
  }
  OUTPOST_RETURN_IF_ERROR(
      insert(*db_, kDeployments, deployment, "deployment '" + deployment.id + "' already exists"));
  int64_t position = 0;
  for (const auto& pool : deployment.nodepool_ids) {
    OUTPOST_RETURN_IF_ERROR(execute(*db_,
                                    "INSERT INTO deployment_nodepools (user_id, deployment_id, "
                                    "nodepool_id, model_id, position) VALUES (?1, ?2, ?3, ?4, ?5)",
                                    deployment.user_id, deployment.id, pool, deployment.model_id,
                                    position++));
  }
  return tx.commit();
}

namespace {

Status load_nodepool_ids(Database& db, Deployment& deployment) {
  OUTPOST_ASSIGN_OR_RETURN(deployment.nodepool_ids,
                           texts(db,
                                 "SELECT nodepool_id FROM deployment_nodepools WHERE user_id = ?1 "
                                 "AND deployment_id = ?2 ORDER BY position",
                                 deployment.user_id, deployment.id));
  return {};
}

}  // namespace

Result<Deployment> Store::get_deployment(const std::string& user_id, const std::string& id) {
  return read_through(&Cached::deployments, cache_key(user_id, id), [&]() -> Result<Deployment> {
    OUTPOST_ASSIGN_OR_RETURN(auto deployment,
                             select_one(*db_, kDeployments, "deployment '" + id + "'",
                                        "WHERE user_id = ?1 AND id = ?2", user_id, id));
    OUTPOST_RETURN_IF_ERROR(load_nodepool_ids(*db_, deployment));
    return deployment;
  });
}

Result<Deployment> Store::deployment_on_nodepool(const std::string& user_id,
                                                 const std::string& nodepool_id,
                                                 const std::string& model_id) {
  return read_through(
      &Cached::deployments_on_nodepools, cache_key(user_id, nodepool_id, model_id),
      [&]() -> Result<Deployment> {
        OUTPOST_ASSIGN_OR_RETURN(
            auto deployment,
            select_one(*db_, kDeployments,
                       "deployment of model '" + model_id + "' on nodepool '" + nodepool_id + "'",
                       "d WHERE user_id = ?1 AND model_id = ?3 AND EXISTS (SELECT 1 FROM "
                       "deployment_nodepools p WHERE p.user_id = d.user_id AND p.deployment_id = "
                       "d.id AND p.nodepool_id = ?2)",
                       user_id, nodepool_id, model_id));
        OUTPOST_RETURN_IF_ERROR(load_nodepool_ids(*db_, deployment));
        return deployment;
      });
}

Result<std::vector<Deployment>> Store::list_deployments(const std::string& user_id,
                                                        const std::string& nodepool_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto deployments,
      select(*db_, kDeployments,
             "d WHERE user_id = ?1 AND (?2 = '' OR EXISTS (SELECT 1 FROM deployment_nodepools p "
             "WHERE p.user_id = d.user_id AND p.deployment_id = d.id AND p.nodepool_id = ?2)) "
             "ORDER BY id",
             user_id, nodepool_id));
  for (auto& deployment : deployments) {
    OUTPOST_RETURN_IF_ERROR(load_nodepool_ids(*db_, deployment));
  }
  return deployments;
}

Status Store::delete_deployment(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  forget_cached();
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_RETURN_IF_ERROR(delete_one(*db_, "deployment '" + id + "'",
                                     "DELETE FROM deployments WHERE user_id = ?1 AND id = ?2",
                                     user_id, id));
  // Its replicas stay until the next reschedule removes them: that is what bumps the versions of
  // the nodes that held them.
  return tx.commit();
}

// --- enrollment and nodes ---

Status Store::create_join_token(const JoinToken& token) {
  std::lock_guard<std::mutex> lock(mutex_);
  return insert(*db_, kJoinTokens, token, "join token '" + token.id + "' already exists");
}

Result<JoinToken> Store::get_join_token(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select_one(*db_, kJoinTokens, "join token", "WHERE id = ?1", id);
}

Status Store::enroll_node(const std::string& token_id, int64_t now, const Node& node) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  // The single use is this conditional UPDATE: of two concurrent enrollments, one changes the row.
  OUTPOST_RETURN_IF_ERROR(execute(*db_,
                                  "UPDATE join_tokens SET used_at = ?2 WHERE id = ?1 AND "
                                  "used_at IS NULL AND expires_at > ?2",
                                  token_id, now));
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
          [](const Statement& s) {
            Limit limit;
            read_value(s, 0, limit.first);
            read_value(s, 1, limit.second);
            return limit;
          },
          node.user_id, node.nodepool_id));
  if (limits.empty()) {
    return Error(ErrorCode::kFailedPrecondition, "the join token's nodepool no longer exists");
  }
  const auto [max_instances, count] = limits.front();
  if (max_instances.has_value() && count >= *max_instances) {
    return Error(ErrorCode::kResourceExhausted,
                 "nodepool '" + node.nodepool_id + "' already has max_instances (" +
                     std::to_string(*max_instances) + ") nodes; raise it or remove a node");
  }
  Node row = node;
  row.replicas = json::array();
  row.desired_version = 0;
  row.applied_version = 0;
  row.created_at = now;
  row.last_seen_at = now;
  OUTPOST_RETURN_IF_ERROR(insert(*db_, kNodes, row, "node '" + node.id + "' already exists"));
  return tx.commit();
}

Result<Node> Store::get_node(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select_one(*db_, kNodes, "node '" + id + "'", "WHERE id = ?1", id);
}

Result<std::vector<Node>> Store::list_nodes(const std::string& user_id,
                                            const std::string& nodepool_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select(*db_, kNodes,
                "WHERE user_id = ?1 AND (?2 = '' OR nodepool_id = ?2) ORDER BY created_at, id",
                user_id, nodepool_id);
}

Status Store::delete_node(const std::string& user_id, const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  forget_cached();
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_RETURN_IF_ERROR(
      execute(*db_, "DELETE FROM replicas WHERE user_id = ?1 AND node_id = ?2", user_id, id));
  OUTPOST_RETURN_IF_ERROR(delete_one(
      *db_, "node '" + id + "'", "DELETE FROM nodes WHERE user_id = ?1 AND id = ?2", user_id, id));
  return tx.commit();
}

Status Store::record_report(const std::string& node_id, const json* inventory, const json& replicas,
                            int64_t applied_version, int64_t now) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(
      auto s, db_->prepare("UPDATE nodes SET inventory = coalesce(?2, inventory), replicas = ?3, "
                           "applied_version = ?4, last_seen_at = ?5 WHERE id = ?1"));
  bind_all(s, node_id, std::string_view(), replicas, applied_version, now);
  if (inventory != nullptr) {
    bind_value(s, 2, *inventory);
  } else {
    s.bind_null(2);
  }
  return s.run();
}

// --- replicas ---

Result<std::vector<Replica>> Store::list_replicas(const std::string& user_id) {
  return read_through(&Cached::replicas, user_id, [&] {
    return select(*db_, kReplicas, "WHERE user_id = ?1 ORDER BY id", user_id);
  });
}

Result<std::vector<Replica>> Store::replicas_of_node(const std::string& node_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return select(*db_, kReplicas, "WHERE node_id = ?1 ORDER BY id", node_id);
}

Result<std::vector<std::string>> Store::replace_replicas(const std::string& user_id,
                                                         const std::vector<Replica>& replicas) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  OUTPOST_ASSIGN_OR_RETURN(auto old,
                           select(*db_, kReplicas, "WHERE user_id = ?1 ORDER BY id", user_id));
  std::vector<Replica> now = replicas;
  for (auto& row : now) row.user_id = user_id;
  std::sort(now.begin(), now.end(), [](const Replica& a, const Replica& b) { return a.id < b.id; });
  // A reschedule that changes nothing (the usual case) writes nothing and keeps the cache.
  if (now == old) return std::vector<std::string>();
  forget_cached();
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
  OUTPOST_RETURN_IF_ERROR(execute(*db_, "DELETE FROM replicas WHERE user_id = ?1", user_id));
  for (Replica row : replicas) {
    row.user_id = user_id;
    OUTPOST_RETURN_IF_ERROR(
        insert(*db_, kReplicas, row, "replica '" + row.id + "' is listed twice"));
  }
  for (const auto& node : nodes) {
    OUTPOST_RETURN_IF_ERROR(execute(
        *db_, "UPDATE nodes SET desired_version = desired_version + 1 WHERE id = ?1", node));
  }
  OUTPOST_RETURN_IF_ERROR(tx.commit());
  return std::vector<std::string>(nodes.begin(), nodes.end());
}

// --- the autoscaler's counts ---

Result<std::vector<DeploymentScale>> Store::list_scales() {
  std::lock_guard<std::mutex> lock(mutex_);
  return select(*db_, kScales, "ORDER BY user_id, deployment_id, nodepool_id");
}

Result<std::vector<ThrottleWindow>> Store::list_throttle_windows(int64_t started_after) {
  std::lock_guard<std::mutex> lock(mutex_);
  OUTPOST_RETURN_IF_ERROR(
      execute(*db_, "DELETE FROM auth_throttle WHERE window_start <= ?1", started_after));
  return select(*db_, kThrottle, "ORDER BY source");
}

Status Store::save_throttle_window(const ThrottleWindow& window) {
  std::lock_guard<std::mutex> lock(mutex_);
  return execute(*db_,
                 kThrottle.insert() +
                     " ON CONFLICT (source) DO UPDATE SET window_start = excluded.window_start, "
                     "failures = excluded.failures",
                 window.source, window.start, window.failures);
}

Status Store::set_scale(const DeploymentScale& scale) {
  std::lock_guard<std::mutex> lock(mutex_);
  return execute(*db_,
                 kScales.insert() +
                     " ON CONFLICT (user_id, deployment_id, nodepool_id) DO UPDATE SET replicas = "
                     "excluded.replicas",
                 scale.user_id, scale.deployment_id, scale.nodepool_id, scale.replicas);
}

}  // namespace outpost::control
