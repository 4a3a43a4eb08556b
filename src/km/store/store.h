// kmd's state in SQLite (WAL): sandboxes and their lifecycle events.
//
// Writes are targeted and, where they change state, conditional on the state the caller
// expects (`UPDATE ... WHERE id=? AND state IN (...)`), the shape DynamoDB's conditional
// writes will take on the AWS substrate; no operation rewrites a whole row.
// Thread-safety: all methods are serialised by an internal mutex.
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "km/base/result.h"

struct sqlite3;

namespace km::store {

enum class State { kStarting, kRunning, kPaused, kStopped, kFailed, kDestroying, kDestroyed };
std::string_view state_name(State s);
std::optional<State> parse_state(std::string_view s);

struct Sandbox {
  std::string id;
  std::string alias;          // "" when none
  int64_t number = 0;         // local number, stable while the sandbox lives
  int64_t slot = 0;           // uid range and link addresses
  std::string profile_name;
  std::string profile_yaml;   // the resolved profile it was created from
  State state = State::kStarting;
  std::string reason;         // why failed / how it ended
  int64_t created_at = 0;     // unix seconds, UTC
  int64_t expires_at = 0;     // 0: never
  int64_t idle_timeout = 0;   // seconds; 0: off
  int64_t max_lifetime = 0;   // seconds; 0: no cap
  std::string teardown_policy = "destroy";
  bool locked = false;
  int64_t last_activity = 0;
  bool ttl_warned = false;
  bool idle_warned = false;
  int64_t pid = 0;
  int64_t pid_start = 0;
  std::string cloned_from;
  // Time spent running (not paused, stopped or starting), for compute spend: seconds in
  // closed intervals, and the start of the open one (0 while not running). Kept by transition().
  int64_t running_seconds = 0;
  int64_t running_since = 0;
};

struct Event {
  int64_t id = 0;
  std::string sandbox;
  int64_t ts = 0;
  std::string type;
  std::string detail;  // JSON
};

class Store {
 public:
  static Result<std::unique_ptr<Store>> open(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Inserts a new sandbox in state starting, allocating its local number and slot.
  Result<Sandbox> insert(Sandbox s);
  Result<std::optional<Sandbox>> get(const std::string& id);
  // Resolves a reference: alias first, then ID, then local number.
  Result<std::optional<Sandbox>> resolve(const std::string& ref);
  // Every sandbox (destroyed ones only when asked), without profile_yaml (left empty; get()
  // and resolve() return it).
  Result<std::vector<Sandbox>> list(bool include_destroyed = false);

  // The time transitions are stamped with (default: the system clock). Set before use.
  void set_clock(std::function<int64_t()> now) { now_ = std::move(now); }

  // Sets state (and reason) only if the current state is one of `from`; false if not. Moving
  // into or out of running also opens or closes a running interval (see Sandbox).
  Result<bool> transition(const std::string& id, std::initializer_list<State> from, State to,
                          const std::string& reason = "");
  Status set_process(const std::string& id, int64_t pid, int64_t pid_start);
  Status set_locked(const std::string& id, bool locked);
  Status set_expiry(const std::string& id, int64_t expires_at);
  Status touch(const std::string& id, int64_t now);  // activity
  Status set_warned(const std::string& id, bool ttl, bool idle);

  Status add_event(const std::string& sandbox, int64_t ts, const std::string& type, const std::string& detail_json);
  Result<std::vector<Event>> events(const std::string& sandbox);

  int schema_version() const { return version_; }

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  Status exec(const char* sql);
  Status migrate();
  sqlite3* db_;
  int version_ = 0;
  std::function<int64_t()> now_ = [] { return static_cast<int64_t>(std::time(nullptr)); };
  std::mutex mu_;
};

}  // namespace km::store
