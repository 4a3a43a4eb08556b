// The index of the sandboxes' audit trails, in kmd's store (km.db; tables of its own, made if
// missing): one row per event (sandbox, seq, ts, type, kind, file, offset, length) and one per
// trail (where its files are, its head, its loss counters).
//
// The trail files are the record; the index is what makes `km logs --type X --since D` fast:
// the rows of one sandbox of one type from a time on come from one index range
// (sandbox, type, ts), and each event is then read at its position (file, offset, length)
// without scanning the trail. An index that fell behind its files (a crash between the write
// and the index commit) is brought up to date from the files when the trail is opened.
//
// Thread-safety: all methods are serialised by an internal mutex. It uses its own connection
// to the database (WAL), so it never waits on the Store's lock, only on SQLite's.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "km/base/result.h"
#include "km/store/trail.h"

struct sqlite3;

namespace km::store {

class AuditIndex {
 public:
  static Result<std::unique_ptr<AuditIndex>> open(const std::string& db_path);
  ~AuditIndex();
  AuditIndex(const AuditIndex&) = delete;
  AuditIndex& operator=(const AuditIndex&) = delete;

  struct Row {
    uint64_t seq = 0;
    int64_t ts_ms = 0;
    std::string type, kind;
    TrailPosition at;
  };
  // What kmd keeps about one trail besides its events.
  struct Trail {
    std::string dir;       // where its files are now (they move at destroy)
    uint64_t seq = 0;      // its head: the last event written
    std::string hash;
    std::string counters;  // JSON: loss counters (see daemon/audit_trails.h)
  };

  // Adds rows (ignoring ones already there) and sets the trail's record, in one transaction.
  Status add(const std::string& sandbox, const std::vector<Row>& rows, const Trail& trail);
  Status set_trail(const std::string& sandbox, const Trail& trail);
  Result<std::optional<Trail>> trail(const std::string& sandbox);
  // The highest seq indexed (0 when none).
  Result<uint64_t> last_seq(const std::string& sandbox);

  struct Query {
    std::vector<std::string> types;  // empty: any
    std::vector<std::string> kinds;  // empty: any
    int64_t since_ms = 0;  // 0: from the start
    uint64_t after_seq = 0;
    uint64_t before_seq = 0;  // 0: no bound
    size_t limit = 100;
    bool newest = true;    // the newest `limit` (else the oldest after after_seq); rows come oldest first
  };
  Result<std::vector<Row>> find(const std::string& sandbox, const Query& q);
  Result<uint64_t> count(const std::string& sandbox);

  // Drops a sandbox's rows and record (its trail is gone).
  Status forget(const std::string& sandbox);
  // Drops the rows after `seq` (the files lost them in a crash the index survived: their
  // positions name other events now).
  Status drop_after(const std::string& sandbox, uint64_t seq);

 private:
  explicit AuditIndex(sqlite3* db) : db_(db) {}
  Status exec(const char* sql);
  Status write_trail(const std::string& sandbox, const Trail& trail);
  sqlite3* db_;
  std::mutex mu_;
};

}  // namespace km::store
