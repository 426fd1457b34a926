// The few SQLite helpers the engine's SQLite files share (the snapshot
// store and the consumer checkpoint store): a prepared statement finalized
// on scope exit, opening a connection, running SQL text, and the error of
// a failed step. Every error names the file.
//
// Thread-safety: a SqlStmt and a connection belong to one thread at a time
// (connections are opened with SQLITE_OPEN_NOMUTEX; callers hold a lock).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "annal/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace annal {

// The checksum of a row: XXH3-64 (seed 0) over its fields in order, each
// integer as 8 little-endian bytes and each string as its length (8 bytes)
// then its bytes. docs/format.md lists each table's field order.
class RowChecksum {
 public:
  RowChecksum();
  ~RowChecksum();
  RowChecksum& U64(uint64_t v);
  RowChecksum& Str(std::string_view s);
  uint64_t Digest() const;

 private:
  void* state_;  // XXH3_state_t
};

// One prepared statement, finalized on scope exit.
class SqlStmt {
 public:
  SqlStmt(sqlite3* db, const char* sql);
  ~SqlStmt();
  SqlStmt(const SqlStmt&) = delete;
  SqlStmt& operator=(const SqlStmt&) = delete;

  // kIoError naming `path` when the statement did not compile.
  Status Prepared(const std::string& path) const;
  void Text(int i, std::string_view s);
  void Blob(int i, std::string_view s);
  void Int(int i, int64_t v);
  // Ready to bind and run again.
  void Reset();
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step();
  int64_t ColInt(int i) const;
  std::string ColText(int i) const;
  std::string ColBlob(int i) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

// Opens `path` read-write (creating it when `create`), without SQLite's own
// mutex, with a 5 s busy timeout. `what` names the file's role in the error
// ("snapshot store").
Result<sqlite3*> OpenConnection(const std::string& path, bool create, const char* what);

// Runs `sql` (one or more statements); kIoError naming `path` on failure.
Status Exec(sqlite3* db, const char* sql, const std::string& path);

// The error of a step that returned neither SQLITE_ROW nor SQLITE_DONE.
Status StepError(sqlite3* db, const std::string& path);

}  // namespace annal
