#include "km/store/audit_index.h"

#include <sqlite3.h>

#include <algorithm>

#include "km/store/statement.h"

namespace km::store {

namespace {

Error db_error(sqlite3* db, const std::string& what) { return Error(ErrorCode::kInternal, "audit index: " + what + ": " + sqlite3_errmsg(db)); }

// Tables of their own beside the Store's (whose migrations own user_version): made if missing.
constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS audit_events ("
    "  sandbox TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, type TEXT NOT NULL, kind TEXT NOT NULL,"
    "  file INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,"
    "  PRIMARY KEY (sandbox, seq)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS audit_events_type ON audit_events(sandbox, type, ts);"
    "CREATE INDEX IF NOT EXISTS audit_events_kind ON audit_events(sandbox, kind, ts);"
    "CREATE INDEX IF NOT EXISTS audit_events_ts ON audit_events(sandbox, ts);"
    "CREATE TABLE IF NOT EXISTS audit_trails ("
    "  sandbox TEXT PRIMARY KEY, dir TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0, hash TEXT NOT NULL DEFAULT '',"
    "  counters TEXT NOT NULL DEFAULT '{}');";

}  // namespace

Result<std::unique_ptr<AuditIndex>> AuditIndex::open(const std::string& db_path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return fail(ErrorCode::kUnavailable, "opening the audit index " + db_path + ": " + msg);
  }
  std::unique_ptr<AuditIndex> x(new AuditIndex(db));
  sqlite3_busy_timeout(db, 5000);
  KM_TRY(x->exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"));
  KM_TRY(x->exec(kSchema));
  return x;
}

AuditIndex::~AuditIndex() { sqlite3_close(db_); }

Status AuditIndex::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown";
    sqlite3_free(err);
    return fail(ErrorCode::kInternal, std::string("audit index: ") + msg);
  }
  return ok();
}

Status AuditIndex::write_trail(const std::string& sandbox, const Trail& t) {
  Stmt s(db_,
         "INSERT INTO audit_trails (sandbox, dir, seq, hash, counters) VALUES (?, ?, ?, ?, ?) "
         "ON CONFLICT(sandbox) DO UPDATE SET dir = excluded.dir, seq = excluded.seq, hash = excluded.hash, counters = excluded.counters");
  s.bind(1, sandbox).bind(2, t.dir).bind(3, static_cast<int64_t>(t.seq)).bind(4, t.hash).bind(5, t.counters.empty() ? std::string("{}") : t.counters);
  if (s.step() != SQLITE_DONE) return fail(db_error(db_, "recording the trail of " + sandbox));
  return ok();
}

Status AuditIndex::add(const std::string& sandbox, const std::vector<Row>& rows, const Trail& trail) {
  std::lock_guard<std::mutex> g(mu_);
  KM_TRY(exec("BEGIN IMMEDIATE"));
  auto rollback = [this](Error e) -> Status {
    (void)exec("ROLLBACK");
    return fail(std::move(e));
  };
  sqlite3_stmt* ins = nullptr;
  if (sqlite3_prepare_v2(db_,
                         "INSERT OR IGNORE INTO audit_events (sandbox, seq, ts, type, kind, file, offset, length) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         -1, &ins, nullptr) != SQLITE_OK) {
    return rollback(db_error(db_, "preparing"));
  }
  for (const Row& r : rows) {
    sqlite3_bind_text(ins, 1, sandbox.data(), static_cast<int>(sandbox.size()), SQLITE_STATIC);
    sqlite3_bind_int64(ins, 2, static_cast<sqlite3_int64>(r.seq));
    sqlite3_bind_int64(ins, 3, r.ts_ms);
    sqlite3_bind_text(ins, 4, r.type.data(), static_cast<int>(r.type.size()), SQLITE_STATIC);
    sqlite3_bind_text(ins, 5, r.kind.data(), static_cast<int>(r.kind.size()), SQLITE_STATIC);
    sqlite3_bind_int64(ins, 6, r.at.file);
    sqlite3_bind_int64(ins, 7, static_cast<sqlite3_int64>(r.at.offset));
    sqlite3_bind_int64(ins, 8, r.at.length);
    int rc = sqlite3_step(ins);
    sqlite3_reset(ins);
    if (rc != SQLITE_DONE) {
      Error e = db_error(db_, "indexing event " + std::to_string(r.seq) + " of " + sandbox);
      sqlite3_finalize(ins);
      return rollback(std::move(e));
    }
  }
  sqlite3_finalize(ins);
  if (Status st = write_trail(sandbox, trail); !st) return rollback(st.error());
  return exec("COMMIT");
}

Status AuditIndex::set_trail(const std::string& sandbox, const Trail& trail) {
  std::lock_guard<std::mutex> g(mu_);
  return write_trail(sandbox, trail);
}

Result<std::optional<AuditIndex::Trail>> AuditIndex::trail(const std::string& sandbox) {
  std::lock_guard<std::mutex> g(mu_);
  Stmt s(db_, "SELECT dir, seq, hash, counters FROM audit_trails WHERE sandbox = ?");
  s.bind(1, sandbox);
  int rc = s.step();
  if (rc == SQLITE_DONE) return std::optional<Trail>();
  if (rc != SQLITE_ROW) return fail(db_error(db_, "reading the trail of " + sandbox));
  return std::optional<Trail>(Trail{s.text(0), static_cast<uint64_t>(s.integer(1)), s.text(2), s.text(3)});
}

Result<uint64_t> AuditIndex::last_seq(const std::string& sandbox) {
  std::lock_guard<std::mutex> g(mu_);
  Stmt s(db_, "SELECT COALESCE(MAX(seq), 0) FROM audit_events WHERE sandbox = ?");
  s.bind(1, sandbox);
  if (s.step() != SQLITE_ROW) return fail(db_error(db_, "reading the index of " + sandbox));
  return static_cast<uint64_t>(s.integer(0));
}

Result<uint64_t> AuditIndex::count(const std::string& sandbox) {
  std::lock_guard<std::mutex> g(mu_);
  Stmt s(db_, "SELECT COUNT(*) FROM audit_events WHERE sandbox = ?");
  s.bind(1, sandbox);
  if (s.step() != SQLITE_ROW) return fail(db_error(db_, "counting the events of " + sandbox));
  return static_cast<uint64_t>(s.integer(0));
}

Result<std::vector<AuditIndex::Row>> AuditIndex::find(const std::string& sandbox, const Query& q) {
  std::lock_guard<std::mutex> g(mu_);
  std::string sql = "SELECT seq, ts, type, kind, file, offset, length FROM audit_events WHERE sandbox = ? AND seq > ?";
  auto in_list = [&sql](const char* column, size_t n) {
    if (n == 0) return;
    sql += std::string(" AND ") + column + " IN (";
    for (size_t i = 0; i < n; ++i) sql += i ? ",?" : "?";
    sql += ")";
  };
  if (q.before_seq > 0) sql += " AND seq < ?";
  in_list("type", q.types.size());
  in_list("kind", q.kinds.size());
  if (q.since_ms > 0) sql += " AND ts >= ?";
  sql += q.newest ? " ORDER BY seq DESC LIMIT ?" : " ORDER BY seq ASC LIMIT ?";
  Stmt s(db_, sql.c_str());
  int at = 1;
  s.bind(at++, sandbox);
  s.bind(at++, static_cast<int64_t>(q.after_seq));
  if (q.before_seq > 0) s.bind(at++, static_cast<int64_t>(q.before_seq));
  for (const auto& t : q.types) s.bind(at++, t);
  for (const auto& k : q.kinds) s.bind(at++, k);
  if (q.since_ms > 0) s.bind(at++, q.since_ms);
  s.bind(at++, static_cast<int64_t>(q.limit));
  std::vector<Row> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    out.push_back(Row{static_cast<uint64_t>(s.integer(0)), s.integer(1), s.text(2), s.text(3),
                      TrailPosition{static_cast<uint32_t>(s.integer(4)), static_cast<uint64_t>(s.integer(5)),
                                    static_cast<uint32_t>(s.integer(6))}});
  }
  if (rc != SQLITE_DONE) return fail(db_error(db_, "querying the events of " + sandbox));
  if (q.newest) std::reverse(out.begin(), out.end());
  return out;
}

Status AuditIndex::forget(const std::string& sandbox) {
  std::lock_guard<std::mutex> g(mu_);
  KM_TRY(exec("BEGIN IMMEDIATE"));
  Stmt a(db_, "DELETE FROM audit_events WHERE sandbox = ?");
  a.bind(1, sandbox);
  Stmt b(db_, "DELETE FROM audit_trails WHERE sandbox = ?");
  b.bind(1, sandbox);
  if (a.step() != SQLITE_DONE || b.step() != SQLITE_DONE) {
    Error e = db_error(db_, "forgetting " + sandbox);
    (void)exec("ROLLBACK");
    return fail(std::move(e));
  }
  return exec("COMMIT");
}

Status AuditIndex::drop_after(const std::string& sandbox, uint64_t seq) {
  std::lock_guard<std::mutex> g(mu_);
  Stmt a(db_, "DELETE FROM audit_events WHERE sandbox = ? AND seq > ?");
  a.bind(1, sandbox);
  a.bind(2, static_cast<int64_t>(seq));
  if (a.step() != SQLITE_DONE) return fail(db_error(db_, "dropping index rows of " + sandbox));
  return ok();
}

}  // namespace km::store
