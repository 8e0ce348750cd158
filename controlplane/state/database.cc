#include "controlplane/state/database.h"

#include <cerrno>
#include <cstring>

#include <sqlite3.h>

#include "common/log.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace outpost::control {

namespace {

Error sqlite_error(sqlite3* db, std::string_view what) {
  const int code = db != nullptr ? sqlite3_extended_errcode(db) : SQLITE_ERROR;
  std::string message = std::string(what) + ": " + (db != nullptr ? sqlite3_errmsg(db) : "");
  if ((code & 0xff) == SQLITE_CONSTRAINT) return Error(ErrorCode::kAlreadyExists, message);
  if ((code & 0xff) == SQLITE_FULL) {
    return unavailable("the data directory's disk is full (" + message + ")");
  }
  if ((code & 0xff) == SQLITE_BUSY) return unavailable("the database is busy: " + message);
  return internal_error("database error: " + message);
}

}  // namespace

Statement::Statement(Statement&& other) noexcept : db_(other.db_), statement_(other.statement_) {
  other.statement_ = nullptr;
}

Statement::~Statement() {
  if (statement_ != nullptr) sqlite3_finalize(statement_);
}

Statement& Statement::bind(int index, std::string_view text) {
  sqlite3_bind_text(statement_, index, text.data(), static_cast<int>(text.size()),
                    SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::bind(int index, int64_t value) {
  sqlite3_bind_int64(statement_, index, value);
  return *this;
}

Statement& Statement::bind(int index, std::optional<int64_t> value) {
  if (value.has_value()) return bind(index, *value);
  return bind_null(index);
}

Statement& Statement::bind_null(int index) {
  sqlite3_bind_null(statement_, index);
  return *this;
}

Result<bool> Statement::step() {
  const int rc = sqlite3_step(statement_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return sqlite_error(db_, "statement failed");
}

Status Statement::run() {
  for (;;) {
    OUTPOST_ASSIGN_OR_RETURN(const bool row, step());
    if (!row) return {};
  }
}

std::string Statement::text(int column) const {
  const auto* data = sqlite3_column_text(statement_, column);
  if (data == nullptr) return {};
  return {reinterpret_cast<const char*>(data),
          static_cast<size_t>(sqlite3_column_bytes(statement_, column))};
}

int64_t Statement::integer(int column) const { return sqlite3_column_int64(statement_, column); }

bool Statement::is_null(int column) const {
  return sqlite3_column_type(statement_, column) == SQLITE_NULL;
}

Result<std::unique_ptr<Database>> Database::open(const std::string& path) {
  // The database holds every hash and every record: 0600. SQLite gives its -wal and -shm files
  // the database's mode, so creating it 0600 first (and tightening an older one) covers them.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return unavailable("cannot open the database " + path + ": " + std::strerror(errno));
  }
  ::fchmod(fd, 0600);
  ::close(fd);
  for (const char* suffix : {"-wal", "-shm"}) ::chmod((path + suffix).c_str(), 0600);
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = raw != nullptr ? sqlite3_errmsg(raw) : "out of memory";
    sqlite3_close(raw);
    return unavailable("cannot open the database " + path + ": " + message);
  }
  std::unique_ptr<Database> db(new Database(raw));
  sqlite3_busy_timeout(raw, 5000);
  // WAL: readers never block the writer and a crash loses no committed transaction.
  OUTPOST_RETURN_IF_ERROR(db->exec("PRAGMA journal_mode=WAL"));
  OUTPOST_RETURN_IF_ERROR(db->exec("PRAGMA synchronous=NORMAL"));
  OUTPOST_RETURN_IF_ERROR(db->exec("PRAGMA foreign_keys=ON"));
  return db;
}

Database::~Database() { sqlite3_close(db_); }

Status Database::exec(std::string_view sql) {
  const std::string text(sql);
  char* message = nullptr;
  if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    std::string why = message != nullptr ? message : "unknown";
    sqlite3_free(message);
    Error error = sqlite_error(db_, "statement failed");
    return Error(error.code(), "database error: " + why);
  }
  return {};
}

Result<Statement> Database::prepare(std::string_view sql) {
  sqlite3_stmt* statement = nullptr;
  if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &statement, nullptr) !=
      SQLITE_OK) {
    return sqlite_error(db_, "cannot prepare a statement");
  }
  return Statement(db_, statement);
}

int64_t Database::changes() const { return sqlite3_changes(db_); }

Result<Transaction> Transaction::begin(Database& db) {
  OUTPOST_RETURN_IF_ERROR(db.exec("BEGIN IMMEDIATE"));
  return Transaction(&db);
}

Transaction::~Transaction() {
  if (db_ != nullptr) {
    const Status rolled_back = db_->exec("ROLLBACK");
    if (!rolled_back.ok()) {
      LOG_ERROR("control.db_rollback_failed", rolled_back.error().message());
    }
  }
}

Status Transaction::commit() {
  Database* db = db_;
  db_ = nullptr;
  Status committed = db->exec("COMMIT");
  if (!committed.ok()) {
    db_ = db;  // roll back in the destructor
    return committed;
  }
  return {};
}

}  // namespace outpost::control
