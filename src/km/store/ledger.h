// One sandbox's spend ledger: a SQLite file (WAL) shared by two processes. The sandbox's
// enforcer records AI calls into it as their responses stream; kmd sets and raises the limits,
// claims the one-shot warnings and reads the totals for `km status` and `km budget`.
//
// Money is integer micro-dollars (µ$), tokens are integers, times are unix seconds (UTC).
//
// Every write is one transaction (BEGIN IMMEDIATE, so two writers queue on SQLite's lock
// instead of failing a read-to-write upgrade): a call's row and its model's totals move
// together, a raise of the limits is one UPDATE of the limits row, and a claim is one
// conditional UPDATE of it (the shape DynamoDB's single-item conditional writes take).
//
// Files: the enforcer runs unprivileged and owns the ledger's directory. kmd runs as root and
// opens the ledger with open_as(): every file the connection opens (the database, -wal, -shm)
// is then opened with the owner's filesystem identity, so a link the owner planted in its
// directory cannot make root write anywhere the owner could not.
//
// Thread-safety: one instance may be used from many threads (calls are serialised by an
// internal mutex); instances in several processes may share one file.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"

struct sqlite3;

namespace km::store {

struct TokenDelta {
  int64_t input = 0, output = 0, cache_read = 0, cache_write = 0;
};

// One metered request, upserted (by id) as its stream progresses.
struct AiCall {
  std::string id;  // unique per call (the enforcer makes it)
  int64_t ts = 0;  // unix seconds UTC, when the request was made
  std::string provider, api, model;
  std::string price_basis;  // "exact", "family:<m>", "fallback:<m>"
  int status = 0;           // the upstream's HTTP status (0 while unknown)
  bool estimated = false;   // output estimated from delivered text (stream cut before final usage)
};

// A call as recorded: its latest metadata and its cumulative tokens and cost.
struct CallSpend {
  AiCall call;
  TokenDelta tokens;
  int64_t cost_micros = 0;
};

struct ModelSpend {
  std::string model;
  int64_t input = 0, output = 0, cache_read = 0, cache_write = 0, requests = 0, cost_micros = 0;
};

struct Limits {
  std::optional<int64_t> ai_micros, compute_micros;  // nullopt: no ceiling for that pool
  double warning_threshold = 0.8;                    // fraction of a ceiling, in (0, 1]
  int64_t compute_rate_micros_per_hour = 0;          // fixed when the sandbox is created
  // Bumped by every raise_limits(). Raising a pool re-arms that pool's warning and exhausted
  // claims: each is granted once per pool per raise of that pool.
  int64_t epoch = 0;
};

class SpendLedger {
 public:
  // Opens (creating the file and schema if new) the ledger at `path`.
  static Result<std::unique_ptr<SpendLedger>> open(const std::string& path);
  // For a root process: as open(), but the files are opened and created with filesystem uid
  // and gid `uid`/`gid` (setfsuid, per thread, around every call), never following a link.
  static Result<std::unique_ptr<SpendLedger>> open_as(const std::string& path, uid_t uid, gid_t gid);
  ~SpendLedger();
  SpendLedger(const SpendLedger&) = delete;
  SpendLedger& operator=(const SpendLedger&) = delete;

  const std::string& path() const { return path_; }

  // Enforcer: adds signed deltas (a later correction may be negative) for one call, in one
  // transaction with its model's totals; a call counts one request for its model. The call's
  // metadata is replaced by `call`'s (a model learned late moves the call's totals to it).
  // Returns the new AI total (µ$).
  Result<int64_t> record(const AiCall& call, const TokenDelta& delta, int64_t cost_delta_micros);
  Result<int64_t> ai_spent();  // Σ cost over models, µ$
  Result<Limits> limits();     // default Limits (no ceilings) before init_limits()
  Result<std::vector<ModelSpend>> models();              // by cost, highest first
  Result<std::vector<CallSpend>> calls(size_t limit);    // newest first

  // kmd, at create: sets the limits if none are set yet (idempotent; later calls keep the first).
  Status init_limits(const Limits& l);
  // Adds to the ceilings in one UPDATE (adding to an absent ceiling creates it); amounts must
  // be >= 0. Bumps the epoch and re-arms the claims of each pool raised. Returns the new limits.
  Result<Limits> raise_limits(int64_t ai_add_micros, int64_t compute_add_micros);
  // "ai" or "compute": true exactly once per pool per epoch of that pool (see Limits::epoch).
  Result<bool> claim_warning(std::string_view pool);
  Result<bool> claim_exhausted(std::string_view pool);

 private:
  SpendLedger(sqlite3* db, std::string path, std::optional<std::pair<uid_t, gid_t>> as)
      : db_(db), path_(std::move(path)), as_(as) {}
  static Result<std::unique_ptr<SpendLedger>> open_impl(const std::string& path,
                                                        std::optional<std::pair<uid_t, gid_t>> as);
  Status exec(const char* sql);
  Status migrate();
  Result<bool> claim(std::string_view pool, std::string_view kind);
  Result<Limits> read_limits();

  sqlite3* db_;
  std::string path_;
  std::optional<std::pair<uid_t, gid_t>> as_;
  std::mutex mu_;
};

}  // namespace km::store
