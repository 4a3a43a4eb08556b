#include "km/store/ledger.h"

#include <sqlite3.h>
#include <sys/fsuid.h>

#include <algorithm>
#include <cstdint>

#include "km/store/statement.h"

namespace km::store {

namespace {

// The largest ceiling a raise may produce (10^9 USD): sums stay far from int64's end, where
// SQLite would turn them into floating point.
constexpr int64_t kMaxLimitMicros = int64_t{1'000'000'000} * 1'000'000;

// While alive, the calling thread opens and creates files as uid/gid (setfsuid/setfsgid are
// per thread). Without an identity it does nothing.
class FsIdentity {
 public:
  explicit FsIdentity(const std::optional<std::pair<uid_t, gid_t>>& as) : active_(as.has_value()) {
    if (!active_) return;
    old_gid_ = static_cast<gid_t>(::setfsgid(as->second));
    old_uid_ = static_cast<uid_t>(::setfsuid(as->first));
  }
  ~FsIdentity() {
    if (!active_) return;
    ::setfsuid(old_uid_);
    ::setfsgid(old_gid_);
  }
  FsIdentity(const FsIdentity&) = delete;
  FsIdentity& operator=(const FsIdentity&) = delete;

 private:
  bool active_;
  uid_t old_uid_ = 0;
  gid_t old_gid_ = 0;
};

Error db_error(sqlite3* db, const std::string& what) {
  return Error(ErrorCode::kInternal, what + ": " + sqlite3_errmsg(db));
}

const char* const kMigrations[] = {
    // 1: limits (one row), per-model totals, per-call rows.
    "CREATE TABLE limits ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  ai_micros INTEGER, compute_micros INTEGER,"
    "  warning_threshold REAL NOT NULL DEFAULT 0.8,"
    "  compute_rate_micros_per_hour INTEGER NOT NULL DEFAULT 0,"
    "  epoch INTEGER NOT NULL DEFAULT 0,"
    "  ai_warned INTEGER NOT NULL DEFAULT 0, ai_exhausted INTEGER NOT NULL DEFAULT 0,"
    "  compute_warned INTEGER NOT NULL DEFAULT 0, compute_exhausted INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE models (model TEXT PRIMARY KEY, input INTEGER NOT NULL DEFAULT 0, output INTEGER NOT NULL DEFAULT 0,"
    "  cache_read INTEGER NOT NULL DEFAULT 0, cache_write INTEGER NOT NULL DEFAULT 0,"
    "  requests INTEGER NOT NULL DEFAULT 0, cost_micros INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE calls (id TEXT PRIMARY KEY, ts INTEGER NOT NULL, provider TEXT NOT NULL, api TEXT NOT NULL,"
    "  model TEXT NOT NULL, price_basis TEXT NOT NULL, status INTEGER NOT NULL, estimated INTEGER NOT NULL,"
    "  input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL, cache_write INTEGER NOT NULL,"
    "  cost_micros INTEGER NOT NULL);"
    "CREATE INDEX calls_ts ON calls(ts);",
};

constexpr const char* kLimitColumns =
    "ai_micros, compute_micros, warning_threshold, compute_rate_micros_per_hour, epoch";

Limits limits_row(const Stmt& q) {
  Limits l;
  if (!q.is_null(0)) l.ai_micros = q.integer(0);
  if (!q.is_null(1)) l.compute_micros = q.integer(1);
  l.warning_threshold = q.real(2);
  l.compute_rate_micros_per_hour = q.integer(3);
  l.epoch = q.integer(4);
  return l;
}

}  // namespace

Result<std::unique_ptr<SpendLedger>> SpendLedger::open(const std::string& path) { return open_impl(path, std::nullopt); }

Result<std::unique_ptr<SpendLedger>> SpendLedger::open_as(const std::string& path, uid_t uid, gid_t gid) {
  return open_impl(path, std::make_pair(uid, gid));
}

Result<std::unique_ptr<SpendLedger>> SpendLedger::open_impl(const std::string& path,
                                                            std::optional<std::pair<uid_t, gid_t>> as) {
  FsIdentity id(as);
  sqlite3* db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return fail(ErrorCode::kUnavailable, "opening the spend ledger " + path + ": " + msg);
  }
  std::unique_ptr<SpendLedger> l(new SpendLedger(db, path, as));
  sqlite3_busy_timeout(db, 5000);
  // The file is written by a less trusted process than some of its readers: no triggers or
  // views run, no functions with side effects from the schema, no writes to the schema itself.
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, nullptr);
  auto init = [&]() -> Status {
    KM_TRY(l->exec("PRAGMA trusted_schema=OFF; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"));
    return l->migrate();
  };
  if (Status s = init(); !s) return fail(std::move(s).error().wrap("opening the spend ledger " + path));
  return l;
}

SpendLedger::~SpendLedger() {
  FsIdentity id(as_);  // the last connection to close checkpoints and removes the -wal file
  sqlite3_close(db_);
}

Status SpendLedger::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return fail(ErrorCode::kInternal, std::string("spend ledger: ") + msg);
  }
  return ok();
}

Status SpendLedger::migrate() {
  // Two processes may open a new ledger at once: the version is read inside the transaction.
  KM_TRY(exec("BEGIN IMMEDIATE"));
  auto rollback = [&](Error e) {
    (void)exec("ROLLBACK");
    return fail(std::move(e));
  };
  int version = 0;
  {
    Stmt v(db_, "PRAGMA user_version");
    if (v.step() == SQLITE_ROW) version = static_cast<int>(v.integer(0));
  }
  const int target = static_cast<int>(sizeof kMigrations / sizeof kMigrations[0]);
  if (version > target) {
    return rollback(Error(ErrorCode::kFailedPrecondition, "the ledger is from a newer km (schema " + std::to_string(version) + ")")
                        .with_hint("upgrade km"));
  }
  for (int i = version; i < target; ++i) {
    if (Status s = exec(kMigrations[i]); !s) return rollback(std::move(s).error());
  }
  if (version < target) {
    if (Status s = exec(("PRAGMA user_version = " + std::to_string(target)).c_str()); !s) return rollback(std::move(s).error());
  }
  return exec("COMMIT");
}

Result<int64_t> SpendLedger::record(const AiCall& call, const TokenDelta& d, int64_t cost_delta) {
  if (call.id.empty()) return fail(ErrorCode::kInvalidArgument, "an AI call needs an id");
  std::lock_guard<std::mutex> lock(mu_);
  FsIdentity id(as_);
  KM_TRY(exec("BEGIN IMMEDIATE"));
  auto rollback = [&](const std::string& what) {
    Error e = db_error(db_, what);
    (void)exec("ROLLBACK");
    return fail(std::move(e));
  };
  // Adds (sign +1) or removes (-1) tokens, cost and requests to a model's totals.
  auto add_to_model = [&](const std::string& model, const TokenDelta& t, int64_t cost, int64_t requests) {
    Stmt m(db_,
           "INSERT INTO models (model, input, output, cache_read, cache_write, requests, cost_micros) VALUES (?,?,?,?,?,?,?) "
           "ON CONFLICT(model) DO UPDATE SET input = input + excluded.input, output = output + excluded.output,"
           " cache_read = cache_read + excluded.cache_read, cache_write = cache_write + excluded.cache_write,"
           " requests = requests + excluded.requests, cost_micros = cost_micros + excluded.cost_micros");
    m.bind(1, model).bind(2, t.input).bind(3, t.output).bind(4, t.cache_read).bind(5, t.cache_write);
    m.bind(6, requests).bind(7, cost);
    return m.step() == SQLITE_DONE;
  };
  bool known = false;
  std::string old_model;
  TokenDelta old;
  int64_t old_cost = 0;
  {
    Stmt q(db_, "SELECT model, input, output, cache_read, cache_write, cost_micros FROM calls WHERE id = ?");
    q.bind(1, call.id);
    int rc = q.step();
    if (rc == SQLITE_ROW) {
      known = true;
      old_model = q.text(0);
      old = {q.integer(1), q.integer(2), q.integer(3), q.integer(4)};
      old_cost = q.integer(5);
    } else if (rc != SQLITE_DONE) {
      return rollback("reading an AI call");
    }
  }
  if (known && old_model != call.model) {
    // The call's model changed (learned late): what it had counted moves to the new model.
    TokenDelta neg{-old.input, -old.output, -old.cache_read, -old.cache_write};
    if (!add_to_model(old_model, neg, -old_cost, -1) || !add_to_model(call.model, old, old_cost, 1)) {
      return rollback("moving an AI call to its model");
    }
  }
  {
    Stmt u(db_,
           "INSERT INTO calls (id, ts, provider, api, model, price_basis, status, estimated, input, output, cache_read,"
           " cache_write, cost_micros) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
           "ON CONFLICT(id) DO UPDATE SET provider = excluded.provider, api = excluded.api, model = excluded.model,"
           " price_basis = excluded.price_basis, status = excluded.status, estimated = excluded.estimated,"
           " input = input + excluded.input, output = output + excluded.output, cache_read = cache_read + excluded.cache_read,"
           " cache_write = cache_write + excluded.cache_write, cost_micros = cost_micros + excluded.cost_micros");
    u.bind(1, call.id).bind(2, call.ts).bind(3, call.provider).bind(4, call.api).bind(5, call.model);
    u.bind(6, call.price_basis).bind(7, int64_t{call.status}).bind(8, int64_t{call.estimated});
    u.bind(9, d.input).bind(10, d.output).bind(11, d.cache_read).bind(12, d.cache_write).bind(13, cost_delta);
    if (u.step() != SQLITE_DONE) return rollback("recording an AI call");
  }
  if (!add_to_model(call.model, d, cost_delta, known ? 0 : 1)) return rollback("adding to the model's totals");
  int64_t total = 0;
  {
    Stmt s(db_, "SELECT COALESCE(SUM(cost_micros), 0) FROM models");
    if (s.step() != SQLITE_ROW) return rollback("summing AI spend");
    total = s.integer(0);
  }
  if (Status s = exec("COMMIT"); !s) {
    (void)exec("ROLLBACK");
    return fail(std::move(s).error());
  }
  return total;
}

Result<int64_t> SpendLedger::ai_spent() {
  std::lock_guard<std::mutex> lock(mu_);
  FsIdentity id(as_);
  Stmt s(db_, "SELECT COALESCE(SUM(cost_micros), 0) FROM models");
  if (s.step() != SQLITE_ROW) return fail(db_error(db_, "summing AI spend"));
  return s.integer(0);
}

Result<Limits> SpendLedger::read_limits() {
  Stmt q(db_, (std::string("SELECT ") + kLimitColumns + " FROM limits WHERE id = 1").c_str());
  int rc = q.step();
  if (rc == SQLITE_ROW) return limits_row(q);
  if (rc == SQLITE_DONE) return Limits{};
  return fail(db_error(db_, "reading the limits"));
}

Result<Limits> SpendLedger::limits() {
  std::lock_guard<std::mutex> lock(mu_);
  FsIdentity id(as_);
  return read_limits();
}

Result<std::vector<ModelSpend>> SpendLedger::models() {
  std::lock_guard<std::mutex> lock(mu_);
  FsIdentity id(as_);
  Stmt q(db_,
         "SELECT model, input, output, cache_read, cache_write, requests, cost_micros FROM models "
         "WHERE requests != 0 OR cost_micros != 0 ORDER BY cost_micros DESC, model");
  std::vector<ModelSpend> out;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    out.push_back(ModelSpend{q.text(0), q.integer(1), q.integer(2), q.integer(3), q.integer(4), q.integer(5), q.integer(6)});
  }
  if (rc != SQLITE_DONE) return fail(db_error(db_, "reading per-model spend"));
  return out;
}

Result<std::vector<CallSpend>> SpendLedger::calls(size_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  FsIdentity id(as_);
  Stmt q(db_,
         "SELECT id, ts, provider, api, model, price_basis, status, estimated, input, output, cache_read, cache_write,"
         " cost_micros FROM calls ORDER BY ts DESC, rowid DESC LIMIT ?");
  q.bind(1, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
  std::vector<CallSpend> out;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    CallSpend c;
    c.call = AiCall{q.text(0), q.integer(1), q.text(2), q.text(3), q.text(4), q.text(5), static_cast<int>(q.integer(6)),
                    q.integer(7) != 0};
    c.tokens = {q.integer(8), q.integer(9), q.integer(10), q.integer(11)};
    c.cost_micros = q.integer(12);
    out.push_back(std::move(c));
  }
  if (rc != SQLITE_DONE) return fail(db_error(db_, "reading AI calls"));
  return out;
}

Status SpendLedger::init_limits(const Limits& l) {
  if (!(l.warning_threshold > 0 && l.warning_threshold <= 1)) {
    return fail(ErrorCode::kInvalidArgument, "the warning threshold must be in (0, 1]");
  }
  std::lock_guard<std::mutex> lock(mu_);
  FsIdentity id(as_);
  Stmt u(db_,
         "INSERT OR IGNORE INTO limits (id, ai_micros, compute_micros, warning_threshold, compute_rate_micros_per_hour)"
         " VALUES (1, ?, ?, ?, ?)");
  if (l.ai_micros) u.bind(1, *l.ai_micros);
  else u.bind_null(1);
  if (l.compute_micros) u.bind(2, *l.compute_micros);
  else u.bind_null(2);
  u.bind(3, l.warning_threshold).bind(4, l.compute_rate_micros_per_hour);
  if (u.step() != SQLITE_DONE) return fail(db_error(db_, "setting the limits"));
  return ok();
}

Result<Limits> SpendLedger::raise_limits(int64_t ai_add, int64_t compute_add) {
  if (ai_add < 0 || compute_add < 0 || ai_add > kMaxLimitMicros || compute_add > kMaxLimitMicros) {
    return fail(ErrorCode::kInvalidArgument, "a raise must be between $0 and $1,000,000,000");
  }
  if (ai_add == 0 && compute_add == 0) return fail(ErrorCode::kInvalidArgument, "nothing to raise");
  std::lock_guard<std::mutex> lock(mu_);
  FsIdentity id(as_);
  KM_TRY(exec("BEGIN IMMEDIATE"));
  auto rollback = [&](Error e) {
    (void)exec("ROLLBACK");
    return fail(std::move(e));
  };
  {
    Stmt ins(db_, "INSERT OR IGNORE INTO limits (id) VALUES (1)");
    if (ins.step() != SQLITE_DONE) return rollback(db_error(db_, "raising the limits"));
  }
  Limits out;
  {
    Stmt u(db_,
           (std::string("UPDATE limits SET"
                        " ai_micros = CASE WHEN ?1 > 0 THEN COALESCE(ai_micros, 0) + ?1 ELSE ai_micros END,"
                        " compute_micros = CASE WHEN ?2 > 0 THEN COALESCE(compute_micros, 0) + ?2 ELSE compute_micros END,"
                        " ai_warned = CASE WHEN ?1 > 0 THEN 0 ELSE ai_warned END,"
                        " ai_exhausted = CASE WHEN ?1 > 0 THEN 0 ELSE ai_exhausted END,"
                        " compute_warned = CASE WHEN ?2 > 0 THEN 0 ELSE compute_warned END,"
                        " compute_exhausted = CASE WHEN ?2 > 0 THEN 0 ELSE compute_exhausted END,"
                        " epoch = epoch + 1"
                        " WHERE id = 1 AND COALESCE(ai_micros, 0) <= ?3 - ?1 AND COALESCE(compute_micros, 0) <= ?3 - ?2"
                        " RETURNING ") + kLimitColumns).c_str());
    u.bind(1, ai_add).bind(2, compute_add).bind(3, kMaxLimitMicros);
    int rc = u.step();
    if (rc == SQLITE_DONE) {
      return rollback(Error(ErrorCode::kInvalidArgument, "a ceiling cannot exceed $1,000,000,000"));
    }
    if (rc != SQLITE_ROW) return rollback(db_error(db_, "raising the limits"));
    out = limits_row(u);
    if (u.step() != SQLITE_DONE) return rollback(db_error(db_, "raising the limits"));
  }
  if (Status s = exec("COMMIT"); !s) return rollback(std::move(s).error());
  return out;
}

Result<bool> SpendLedger::claim(std::string_view pool, std::string_view kind) {
  // The column names come from this fixed set, never from the caller's text.
  const char* column = nullptr;
  if (pool == "ai") column = kind == "warning" ? "ai_warned" : "ai_exhausted";
  else if (pool == "compute") column = kind == "warning" ? "compute_warned" : "compute_exhausted";
  else return fail(ErrorCode::kInvalidArgument, "unknown budget pool " + std::string(pool));
  std::lock_guard<std::mutex> lock(mu_);
  FsIdentity id(as_);
  std::string sql = std::string("UPDATE limits SET ") + column + " = 1 WHERE id = 1 AND " + column + " = 0";
  Stmt u(db_, sql.c_str());
  if (u.step() != SQLITE_DONE) return fail(db_error(db_, "claiming a budget notice"));
  return sqlite3_changes(db_) == 1;
}

Result<bool> SpendLedger::claim_warning(std::string_view pool) { return claim(pool, "warning"); }
Result<bool> SpendLedger::claim_exhausted(std::string_view pool) { return claim(pool, "exhausted"); }

}  // namespace km::store
