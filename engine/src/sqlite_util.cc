#include "sqlite_util.h"

#include "annal/assert.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <sqlite3.h>

namespace annal {

SqlStmt::SqlStmt(sqlite3* db, const char* sql) : db_(db) {
  rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
}

SqlStmt::~SqlStmt() { sqlite3_finalize(stmt_); }

Status SqlStmt::Prepared(const std::string& path) const {
  if (rc_ == SQLITE_OK) return Status::Ok();
  return Status::IoError(path + ": " + sqlite3_errmsg(db_));
}

void SqlStmt::Text(int i, std::string_view s) {
  sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
}

void SqlStmt::Blob(int i, std::string_view s) {
  sqlite3_bind_blob(stmt_, i, s.empty() ? "" : s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
}

void SqlStmt::Int(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }

void SqlStmt::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

int SqlStmt::Step() { return sqlite3_step(stmt_); }

int64_t SqlStmt::ColInt(int i) const { return sqlite3_column_int64(stmt_, i); }

std::string SqlStmt::ColText(int i) const {
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, i));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, i))) : std::string();
}

std::string SqlStmt::ColBlob(int i) const {
  auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, i));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, i))) : std::string();
}

Result<sqlite3*> OpenConnection(const std::string& path, bool create, const char* what) {
  sqlite3* db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Status::IoError(std::string("cannot open ") + what + " " + path + ": " + message);
  }
  sqlite3_busy_timeout(db, 5000);
  return db;
}

Status Exec(sqlite3* db, const char* sql, const std::string& path) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) == SQLITE_OK) return Status::Ok();
  std::string message = err ? err : sqlite3_errmsg(db);
  sqlite3_free(err);
  return Status::IoError(path + ": " + message);
}

Status StepError(sqlite3* db, const std::string& path) {
  return Status::IoError(path + ": " + sqlite3_errmsg(db));
}

RowChecksum::RowChecksum() : state_(XXH3_createState()) {
  ANNAL_ASSERT(state_ != nullptr);
  XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_));
}

RowChecksum::~RowChecksum() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

RowChecksum& RowChecksum::U64(uint64_t v) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), &v, sizeof v);
  return *this;
}

RowChecksum& RowChecksum::Str(std::string_view s) {
  U64(s.size());
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), s.data(), s.size());
  return *this;
}

uint64_t RowChecksum::Digest() const { return XXH3_64bits_digest(static_cast<XXH3_state_t*>(state_)); }

}  // namespace annal
