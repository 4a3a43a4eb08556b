// Audit events of one enforcer: every DNS verdict and every connection verdict, as JSON lines
// written to a descriptor kmd gave it: the write end of a pipe (a FIFO, 0600, in the sandbox's
// runtime directory) that kmd reads, seals into the sandbox's audit trail and indexes
// (daemon/audit_trails.h). Events are data (STYLE.md): lines are whole objects, written in
// batches; a reader never sees half an event, and a crash loses at most the batch being written.
//
// The enforcer never blocks on its audit: the descriptor is non-blocking, what the pipe cannot
// take waits in a bounded buffer (written later, from where it stopped), and an event that does
// not fit is dropped and counted; the count is reported in a later line
// {"kind":"audit","dropped":N,"dropped_total":T,"reason":"..."} once there is room.
//
//   {"ts":"...Z","sandbox":"sb-1a2b3c4d","kind":"dns","name":"x.test","qtype":1,
//    "verdict":"deny","rule":"default deny","reason":"...","rcode":"NXDOMAIN"}
//   {"ts":"...Z","sandbox":"...","kind":"connect","mode":"explicit|transparent","proto":"tls|http|tcp",
//    "name":"x.test","addr":"203.0.113.10","port":443,"sport":40123,"verdict":"allow","rule":"allowedDNSSuffixes: .x.test"}
//
// "sport" (connect and inspected http events) is the client's source port: kmd's TLS
// observation records the same port for the same connection (docs/tls-capture.md).
//
// Thread-safety: single-threaded (the enforcer's event loop).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace km::enforcer {

class AuditLog {
 public:
  // Makes `fd` non-blocking (it is not owned).
  AuditLog(std::string sandbox, int fd);
  ~AuditLog() { flush(); }
  // Adds ts, sandbox and kind to `fields` and appends the line. Write errors are counted, never
  // fatal (the enforcer keeps enforcing).
  void emit(std::string_view kind, nlohmann::json fields);
  // Deferred mode: lines emitted while the event loop handles one batch of work are written
  // together by one write(2) that `post` schedules right after it (a crash loses at most that
  // batch). Without it, every line is written at once.
  void set_deferred(std::function<void(std::function<void()>)> post) { post_ = std::move(post); }
  void flush();
  // When the pipe is full, `later(f)` must run f a little later (a timer), to write the rest.
  // Without it, the rest waits for the next event.
  void set_retry(std::function<void(std::function<void()>)> later) { later_ = std::move(later); }
  // What may wait for the pipe (default 1 MiB); beyond it events are dropped and counted.
  void set_max_pending(size_t bytes) { max_pending_ = bytes; }
  // At most `per_second` events of each kind (bursts up to ten times that); the rest are
  // counted and reported as one {"kind":"suppressed","of":kind,"count":N} line when that kind
  // is written again. A sandbox cannot fill the disk with denied queries.
  void set_rate_limit(double per_second) { rate_ = per_second; }
  uint64_t suppressed() const { return suppressed_total_; }
  uint64_t write_errors() const { return write_errors_; }
  uint64_t events() const { return events_; }
  uint64_t dropped() const { return dropped_; }
  size_t pending_bytes() const { return pending_.size(); }

 private:
  std::string sandbox_;
  int fd_;
  uint64_t events_ = 0;
  uint64_t write_errors_ = 0;
  std::function<void(std::function<void()>)> post_;
  std::string pending_;
  bool flush_scheduled_ = false;
  std::function<void(std::function<void()>)> later_;
  bool retry_scheduled_ = false;
  size_t max_pending_ = 1u << 20;
  uint64_t dropped_ = 0, dropped_unreported_ = 0;
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point last{};
    uint64_t suppressed = 0;
  };
  double rate_ = 0;  // 0: unlimited
  std::map<std::string, Bucket, std::less<>> buckets_;
  uint64_t suppressed_total_ = 0;
  void append(std::string_view kind, nlohmann::json fields);
  std::string line(std::string_view kind, const nlohmann::json& fields) const;
  void report_drops();
};

}  // namespace km::enforcer
