#include "km/store/store.h"

#include <sqlite3.h>

#include <memory>

#include "km/store/statement.h"

namespace km::store {

namespace {

constexpr std::string_view kStates[] = {"starting", "running", "paused", "stopped", "failed", "destroying", "destroyed"};

Error db_error(sqlite3* db, const std::string& what) {
  return Error(ErrorCode::kInternal, what + ": " + sqlite3_errmsg(db));
}

constexpr const char* kColumns =
    "id, COALESCE(alias,''), number, slot, profile_name, profile_yaml, state, reason, created_at, expires_at, "
    "idle_timeout, max_lifetime, teardown_policy, locked, last_activity, ttl_warned, idle_warned, pid, "
    "pid_start, cloned_from, running_seconds, COALESCE(running_since, 0)";

// The same columns without the profile text, for listings (a profile is kilobytes; a listing
// of 10,000 sandboxes must not read them all).
constexpr const char* kSummaryColumns =
    "id, COALESCE(alias,''), number, slot, profile_name, '', state, reason, created_at, expires_at, "
    "idle_timeout, max_lifetime, teardown_policy, locked, last_activity, ttl_warned, idle_warned, pid, "
    "pid_start, cloned_from, running_seconds, COALESCE(running_since, 0)";

Sandbox row(const Stmt& s) {
  Sandbox b;
  b.id = s.text(0);
  b.alias = s.text(1);
  b.number = s.integer(2);
  b.slot = s.integer(3);
  b.profile_name = s.text(4);
  b.profile_yaml = s.text(5);
  b.state = parse_state(s.text(6)).value_or(State::kFailed);
  b.reason = s.text(7);
  b.created_at = s.integer(8);
  b.expires_at = s.integer(9);
  b.idle_timeout = s.integer(10);
  b.max_lifetime = s.integer(11);
  b.teardown_policy = s.text(12);
  b.locked = s.integer(13) != 0;
  b.last_activity = s.integer(14);
  b.ttl_warned = s.integer(15) != 0;
  b.idle_warned = s.integer(16) != 0;
  b.pid = s.integer(17);
  b.pid_start = s.integer(18);
  b.cloned_from = s.text(19);
  b.running_seconds = s.integer(20);
  b.running_since = s.integer(21);
  return b;
}

// Schema migrations, applied in order; the version is SQLite's user_version.
const char* const kMigrations[] = {
    // 1: sandboxes and events.
    "CREATE TABLE sandboxes ("
    "  id TEXT PRIMARY KEY, alias TEXT, number INTEGER NOT NULL, slot INTEGER NOT NULL,"
    "  profile_name TEXT NOT NULL, profile_yaml TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',"
    "  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL DEFAULT 0, idle_timeout INTEGER NOT NULL DEFAULT 0,"
    "  max_lifetime INTEGER NOT NULL DEFAULT 0, teardown_policy TEXT NOT NULL DEFAULT 'destroy',"
    "  locked INTEGER NOT NULL DEFAULT 0, last_activity INTEGER NOT NULL DEFAULT 0,"
    "  ttl_warned INTEGER NOT NULL DEFAULT 0, idle_warned INTEGER NOT NULL DEFAULT 0,"
    "  pid INTEGER NOT NULL DEFAULT 0, pid_start INTEGER NOT NULL DEFAULT 0, cloned_from TEXT NOT NULL DEFAULT '');"
    // Live sandboxes hold their alias, number and slot exclusively; destroyed ones release them.
    "CREATE UNIQUE INDEX sandboxes_alias ON sandboxes(alias) WHERE alias IS NOT NULL AND state != 'destroyed';"
    "CREATE UNIQUE INDEX sandboxes_number ON sandboxes(number) WHERE state != 'destroyed';"
    "CREATE UNIQUE INDEX sandboxes_slot ON sandboxes(slot) WHERE state != 'destroyed';"
    "CREATE INDEX sandboxes_state ON sandboxes(state);"
    "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, sandbox TEXT NOT NULL, ts INTEGER NOT NULL,"
    "  type TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}');"
    "CREATE INDEX events_sandbox ON events(sandbox, id);",
    // 2: running time, for compute spend: closed running intervals, and the start of the open
    // one (NULL while not running). Sandboxes running at the upgrade count from then.
    "ALTER TABLE sandboxes ADD COLUMN running_seconds INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE sandboxes ADD COLUMN running_since INTEGER;"
    "UPDATE sandboxes SET running_since = CAST(strftime('%s', 'now') AS INTEGER) WHERE state = 'running';",
};

}  // namespace

std::string_view state_name(State s) { return kStates[static_cast<int>(s)]; }

std::optional<State> parse_state(std::string_view s) {
  for (int i = 0; i < 7; ++i) {
    if (kStates[i] == s) return static_cast<State>(i);
  }
  return std::nullopt;
}

Result<std::unique_ptr<Store>> Store::open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return fail(ErrorCode::kUnavailable, "opening the store " + path + ": " + msg);
  }
  std::unique_ptr<Store> s(new Store(db));
  sqlite3_busy_timeout(db, 5000);
  KM_TRY(s->exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"));
  KM_TRY(s->migrate());
  return s;
}

Store::~Store() { sqlite3_close(db_); }

Status Store::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown";
    sqlite3_free(err);
    return fail(ErrorCode::kInternal, std::string("store: ") + msg);
  }
  return ok();
}

Status Store::migrate() {
  Stmt v(db_, "PRAGMA user_version");
  if (v.step() == SQLITE_ROW) version_ = static_cast<int>(v.integer(0));
  const int target = static_cast<int>(sizeof kMigrations / sizeof kMigrations[0]);
  if (version_ > target) {
    return fail(Error(ErrorCode::kFailedPrecondition, "the store is from a newer km (schema " + std::to_string(version_) + ")")
                    .with_hint("upgrade km, or point kmd at another state directory"));
  }
  for (int i = version_; i < target; ++i) {
    KM_TRY(exec("BEGIN IMMEDIATE"));
    auto s = exec(kMigrations[i]);
    if (s) s = exec(("PRAGMA user_version = " + std::to_string(i + 1)).c_str());
    if (!s) {
      (void)exec("ROLLBACK");
      return s;
    }
    KM_TRY(exec("COMMIT"));
    version_ = i + 1;
  }
  return ok();
}

Result<Sandbox> Store::insert(Sandbox s) {
  std::lock_guard<std::mutex> lock(mu_);
  KM_TRY(exec("BEGIN IMMEDIATE"));
  auto rollback = [&](Error e) {
    (void)exec("ROLLBACK");
    return fail(std::move(e));
  };
  // Smallest free local number and slot among live sandboxes.
  // Smallest free value of `column` among live sandboxes. Usually the values are dense and the
  // answer is max + 1 (an index lookup); after a destroy, the first gap.
  auto smallest_free = [&](const std::string& column, int64_t first) -> int64_t {
    Stmt dense(db_, ("SELECT COUNT(*), MAX(" + column + ") FROM sandboxes WHERE state != 'destroyed'").c_str());
    if (dense.step() != SQLITE_ROW || dense.integer(0) == 0) return first;
    int64_t count = dense.integer(0), max = dense.integer(1);
    if (max - first + 1 == count) return max + 1;
    Stmt head(db_, ("SELECT 1 FROM sandboxes WHERE " + column + " = ? AND state != 'destroyed'").c_str());
    head.bind(1, first);
    if (head.step() != SQLITE_ROW) return first;
    Stmt gap(db_, ("SELECT MIN(a." + column + " + 1) FROM sandboxes a WHERE a.state != 'destroyed' AND NOT EXISTS "
                   "(SELECT 1 FROM sandboxes b WHERE b." + column + " = a." + column + " + 1 AND b.state != 'destroyed')").c_str());
    return gap.step() == SQLITE_ROW ? gap.integer(0) : max + 1;
  };
  s.number = smallest_free("number", 1);
  s.slot = smallest_free("slot", 0);
  Stmt ins(db_,
           "INSERT INTO sandboxes (id, alias, number, slot, profile_name, profile_yaml, state, created_at, expires_at,"
           " idle_timeout, max_lifetime, teardown_policy, last_activity, cloned_from) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  ins.bind(1, s.id);
  if (s.alias.empty()) ins.bind_null(2);
  else ins.bind(2, s.alias);
  ins.bind(3, s.number).bind(4, s.slot).bind(5, s.profile_name).bind(6, s.profile_yaml);
  ins.bind(7, std::string(state_name(State::kStarting))).bind(8, s.created_at).bind(9, s.expires_at);
  ins.bind(10, s.idle_timeout).bind(11, s.max_lifetime).bind(12, s.teardown_policy).bind(13, s.created_at);
  ins.bind(14, s.cloned_from);
  int rc = ins.step();
  if (rc == SQLITE_CONSTRAINT) {
    return rollback(Error(ErrorCode::kAlreadyExists, s.alias.empty() ? "sandbox ID already in use" : "alias " + s.alias + " is already in use"));
  }
  if (rc != SQLITE_DONE) return rollback(db_error(db_, "inserting sandbox"));
  KM_TRY(exec("COMMIT"));
  s.state = State::kStarting;
  s.last_activity = s.created_at;
  return s;
}

Result<std::optional<Sandbox>> Store::get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, (std::string("SELECT ") + kColumns + " FROM sandboxes WHERE id = ?").c_str());
  q.bind(1, id);
  int rc = q.step();
  if (rc == SQLITE_ROW) return std::optional<Sandbox>(row(q));
  if (rc == SQLITE_DONE) return std::optional<Sandbox>();
  return fail(db_error(db_, "reading sandbox"));
}

Result<std::optional<Sandbox>> Store::resolve(const std::string& ref) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt q(db_, (std::string("SELECT ") + kColumns + " FROM sandboxes WHERE alias = ? AND state != 'destroyed'").c_str());
    q.bind(1, ref);
    if (q.step() == SQLITE_ROW) return std::optional<Sandbox>(row(q));
  }
  KM_ASSIGN_OR_RETURN(auto by_id, get(ref));
  if (by_id) return by_id;
  bool numeric = !ref.empty() && ref.size() < 10 && ref.find_first_not_of("0123456789") == std::string::npos;
  if (numeric) {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt q(db_, (std::string("SELECT ") + kColumns + " FROM sandboxes WHERE number = ? AND state != 'destroyed'").c_str());
    q.bind(1, static_cast<int64_t>(std::stoll(ref)));
    if (q.step() == SQLITE_ROW) return std::optional<Sandbox>(row(q));
  }
  return std::optional<Sandbox>();
}

Result<std::vector<Sandbox>> Store::list(bool include_destroyed) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string sql = std::string("SELECT ") + kSummaryColumns + " FROM sandboxes" +
                    (include_destroyed ? "" : " WHERE state != 'destroyed'") + " ORDER BY number, created_at";
  Stmt q(db_, sql.c_str());
  std::vector<Sandbox> out;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) out.push_back(row(q));
  if (rc != SQLITE_DONE) return fail(db_error(db_, "listing sandboxes"));
  return out;
}

Result<bool> Store::transition(const std::string& id, std::initializer_list<State> from, State to, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string in;
  for (State s : from) in += std::string(in.empty() ? "'" : ",'") + std::string(state_name(s)) + "'";
  // Leaving running closes the open running interval; entering it opens one (a sandbox that
  // stays running keeps its start). In the same UPDATE as the state, so they never disagree.
  std::string sql =
      "UPDATE sandboxes SET state = ?1, reason = ?2,"
      " running_seconds = running_seconds + CASE WHEN state = 'running' AND ?1 != 'running' AND running_since IS NOT NULL"
      "   THEN MAX(0, ?4 - running_since) ELSE 0 END,"
      " running_since = CASE WHEN ?1 != 'running' THEN NULL WHEN state = 'running' AND running_since IS NOT NULL"
      "   THEN running_since ELSE ?4 END"
      " WHERE id = ?3 AND state IN (" + in + ")";
  Stmt u(db_, sql.c_str());
  u.bind(1, std::string(state_name(to))).bind(2, reason).bind(3, id).bind(4, now_());
  if (u.step() != SQLITE_DONE) return fail(db_error(db_, "updating sandbox state"));
  return sqlite3_changes(db_) == 1;
}

#define KM_STORE_UPDATE(sql, ...)                                           \
  std::lock_guard<std::mutex> lock(mu_);                                    \
  Stmt u(db_, sql);                                                         \
  __VA_ARGS__;                                                              \
  if (u.step() != SQLITE_DONE) return fail(db_error(db_, "updating sandbox")); \
  return ok()

Status Store::set_process(const std::string& id, int64_t pid, int64_t start) {
  KM_STORE_UPDATE("UPDATE sandboxes SET pid = ?, pid_start = ? WHERE id = ?", u.bind(1, pid).bind(2, start).bind(3, id));
}
Status Store::set_locked(const std::string& id, bool locked) {
  KM_STORE_UPDATE("UPDATE sandboxes SET locked = ? WHERE id = ?", u.bind(1, int64_t{locked}).bind(2, id));
}
Status Store::set_expiry(const std::string& id, int64_t expires_at) {
  KM_STORE_UPDATE("UPDATE sandboxes SET expires_at = ?, ttl_warned = 0 WHERE id = ?", u.bind(1, expires_at).bind(2, id));
}
Status Store::touch(const std::string& id, int64_t now) {
  KM_STORE_UPDATE("UPDATE sandboxes SET last_activity = ?, idle_warned = 0 WHERE id = ? AND last_activity < ?",
                  u.bind(1, now).bind(2, id).bind(3, now));
}
Status Store::set_warned(const std::string& id, bool ttl, bool idle) {
  KM_STORE_UPDATE("UPDATE sandboxes SET ttl_warned = ?, idle_warned = ? WHERE id = ?",
                  u.bind(1, int64_t{ttl}).bind(2, int64_t{idle}).bind(3, id));
}
Status Store::add_event(const std::string& sandbox, int64_t ts, const std::string& type, const std::string& detail) {
  KM_STORE_UPDATE("INSERT INTO events (sandbox, ts, type, detail) VALUES (?,?,?,?)",
                  u.bind(1, sandbox).bind(2, ts).bind(3, type).bind(4, detail));
}

Result<std::vector<Event>> Store::events(const std::string& sandbox) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, "SELECT id, sandbox, ts, type, detail FROM events WHERE sandbox = ? ORDER BY id");
  q.bind(1, sandbox);
  std::vector<Event> out;
  while (q.step() == SQLITE_ROW) out.push_back(Event{q.integer(0), q.text(1), q.integer(2), q.text(3), q.text(4)});
  return out;
}

}  // namespace km::store
