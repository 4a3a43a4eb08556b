// kmd's audit trails: kmd is the single writer of each sandbox's trail (km/store/trail.h), and
// every source is ingested here, redacted, sealed into the sandbox's hash chain (km/audit/
// event.h), appended and indexed (km/store/audit_index.h):
//
//   the exec audit (kernel)      Service's ring-buffer reader calls record()
//   the enforcer (enforcer)      JSON lines on a FIFO per sandbox (0600, in its runtime
//                                directory), read here by one thread for all sandboxes
//   lifecycle, budgets (kmd)     Service::event() calls record()
//   km shell sessions (shell)    op_shell calls record() with transcript chunks
//   TLS observation (tls)        TlsObserver's ring-buffer reader calls record() (tls_observer.h)
//
// Nothing that records ever waits on the disk: record() puts the event on a bounded queue that
// one writer thread empties in batches (one write(2) and one index transaction per sandbox per
// batch). The queue is bounded in events and in bytes (queue_limit, queue_bytes: memory stays
// bounded however long the events are). When it is full, or the sandbox already holds three
// quarters of it (half of it while another has events waiting: a flood in one cannot take the
// whole queue from the others), the event is dropped and counted (dropped_kmd), and the count
// is written into the trail as {"type":"audit","detail":{"kind":"dropped",...}} as soon as the
// writer catches up. The enforcer's pipe is read only while the queue has room, so a slow disk
// fills the pipe and the enforcer counts its own drops (it never blocks either; its reports
// arrive as audit events and add to dropped_enforcer). Enforcer lines longer than the bound
// are recorded cut ({"kind":"truncated"}), lines that are not events are counted (malformed)
// and skipped; neither stops the reader.
//
// Redaction happens before anything is stored: each event's detail goes through a
// km::audit::Redactor built with the sandbox's own secrets (Options::secrets), so a secret in
// a command line, a DNS name, a URL or a transcript never reaches the trail, the index or a
// reader.
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/audit/event.h"
#include "km/base/log.h"
#include "km/base/result.h"
#include "km/base/unique_fd.h"
#include "km/store/audit_index.h"

namespace km::daemon {

// What a sandbox's trail lost, and why (kept in the index with the trail; shown by km status
// and km logs).
struct AuditCounters {
  uint64_t events = 0;            // written to the trail
  uint64_t dropped_kmd = 0;       // lost in kmd: its queue was full, or the disk refused a write
  uint64_t dropped_enforcer = 0;  // lost in the enforcer: its pipe to kmd was full (its reports)
  uint64_t suppressed = 0;        // held back by the enforcer's rate limit (its reports)
  uint64_t truncated = 0;         // enforcer lines over the bound, recorded cut
  uint64_t malformed = 0;         // enforcer lines that were not events, skipped
  uint64_t exec_lost = 0;         // commands the kernel could not queue (host-wide) while watched
  uint64_t tls_lost = 0;          // TLS records the kernel could not queue (host-wide) while observed
  uint64_t dropped() const { return dropped_kmd + dropped_enforcer; }
  nlohmann::json to_json() const;
  static AuditCounters from_json(const nlohmann::json& j);
};

struct AuditTrailsOptions {
  std::string db_path;  // the index lives in kmd's store (km.db)
  // Where a sandbox's live trail is (<state>/sandboxes/<id>/audit).
  std::function<std::string(const std::string& id)> live_dir;
  // The sandbox's literal secrets, for its Redactor (values of its environment whose names
  // say they are secrets). Called on the writer thread when a trail is opened.
  std::function<std::vector<std::string>(const std::string& id)> secrets;
  uint64_t rotate_bytes = uint64_t{16} << 20;
  size_t queue_limit = 65536;     // events waiting for the writer, all sandboxes together
  size_t queue_bytes = size_t{64} << 20;  // about how much memory they may take, all together
  size_t max_line = size_t{1} << 20;  // enforcer lines longer than this are cut
  int pipe_bytes = 1 << 20;       // capacity of each enforcer pipe
};

class AuditTrails {
 public:
  static Result<std::unique_ptr<AuditTrails>> create(AuditTrailsOptions options, log::Logger& log);
  ~AuditTrails();  // writes what is queued, then stops its threads
  AuditTrails(const AuditTrails&) = delete;
  AuditTrails& operator=(const AuditTrails&) = delete;

  // Queues an event for the sandbox's trail (ts 0: now). False when it was dropped (counted).
  bool record(const std::string& id, audit::Event e);

  // The enforcer's pipe: makes the FIFO (0600) if needed, reads it, and returns a descriptor for
  // the enforcer (read-write, so the pipe keeps a reader while kmd restarts: the enforcer's
  // lines wait in it, up to its capacity).
  Result<UniqueFd> enforcer_writer(const std::string& id, const std::string& fifo);
  // Reads an existing FIFO again (kmd restarted while the enforcer ran). Idempotent.
  Status read_enforcer(const std::string& id, const std::string& fifo);
  // Reads what is left in the pipe and stops reading it (the enforcer is gone).
  void detach_enforcer(const std::string& id);

  // Waits (bounded) until every event recorded for `id` before the call is in the trail.
  bool flush(const std::string& id, int timeout_ms = 10000);
  // flush(), after reading what every enforcer wrote to its pipe before the call: a reader
  // that syncs sees every event that happened before it asked.
  bool sync(const std::string& id, int timeout_ms = 5000);
  // After flush: moves the trail's files to `dest` (kept after the sandbox is destroyed);
  // later events go there.
  Status archive(const std::string& id, const std::string& dest);
  // Writes what is queued and closes the trail (it is opened again if more events come).
  void close(const std::string& id);
  // Drops the index rows of a trail whose files are gone.
  Status forget(const std::string& id);

  AuditCounters counters(const std::string& id);
  // The seq of the last event written (0: none).
  uint64_t head(const std::string& id);
  // Waits up to timeout_ms for an event after `seq`; returns the head.
  uint64_t wait_after(const std::string& id, uint64_t seq, int timeout_ms);

  // Events from the index and the files, oldest first, as stored (parsed).
  Result<std::vector<nlohmann::json>> query(const std::string& id, const store::AuditIndex::Query& q);
  // The same as stored lines (canonical JSON), with their seqs: nothing is parsed.
  struct Line {
    uint64_t seq = 0;
    std::string text;
  };
  Result<std::vector<Line>> query_lines(const std::string& id, const store::AuditIndex::Query& q);
  struct Verified {
    uint64_t events = 0;
    uint64_t head = 0;
    std::optional<audit::ChainVerifier::Problem> problem;
  };
  // Recomputes the whole chain from the files, against the head kmd wrote.
  Result<Verified> verify(const std::string& id);
  // Where the trail's files are.
  std::string dir(const std::string& id);

 private:
  struct State;  // (its `unindexed` rows wait for a retry after a failed index commit)
  struct Pipe;
  struct Item {
    std::string id;
    audit::Event event;
    std::function<void()> control;  // runs on the writer thread, after the events queued before it
    size_t bytes = 0;               // about what the event takes in memory (0 for control items)
  };

  AuditTrails(AuditTrailsOptions o, log::Logger& log);
  std::unique_ptr<State> load_state(const std::string& id);
  // The sandbox's state, made if it has none: mu_ (held in `g`) is let go while the index is read.
  State& state_for(std::unique_lock<std::mutex>& g, const std::string& id);
  State& state_locked(const std::string& id);
  void push_locked(const std::string& id, audit::Event e, size_t bytes);
  // What one sandbox may hold of the queue while others have events waiting (half of it), in
  // events and in bytes.
  uint64_t share() const { return std::max<uint64_t>(1, options_.queue_limit / 2); }
  uint64_t byte_share() const { return std::max<uint64_t>(1, options_.queue_bytes / 2); }
  Status run_control(const std::string& id, std::function<Status()> f, int timeout_ms);
  void write_loop();
  void write_group(const std::string& id, std::vector<audit::Event> events, size_t recorded);
  Status open_trail(const std::string& id, State& t);
  void read_loop();
  void read_pipe(Pipe& p, bool drain);
  void compress_loop();
  std::string dir_locked(const std::string& id, State* t);

  AuditTrailsOptions options_;
  log::Logger& log_;
  std::unique_ptr<store::AuditIndex> index_;

  std::mutex mu_;
  std::condition_variable queue_cv_, done_cv_;
  std::deque<Item> queue_;
  uint64_t queued_bytes_ = 0;  // the sum of queue_'s Item::bytes
  std::map<std::string, std::unique_ptr<State>> states_;
  bool stopping_ = false;         // the pipe reader stops
  bool writer_stopping_ = false;  // then the writer and the compressor

  std::mutex pipes_mu_;
  std::condition_variable pipes_cv_;
  std::map<std::string, std::unique_ptr<Pipe>> pipes_;
  uint64_t reader_passes_ = 0;  // completed rounds of the pipe reader
  UniqueFd wake_;  // eventfd: the pipe reader looks at pipes_ again

  std::deque<std::pair<std::string, std::string>> compress_;  // (id, path), under mu_
  std::condition_variable compress_cv_;

  std::thread writer_, reader_, compressor_;
};

}  // namespace km::daemon
