// TLS observation into the audit trail: the records of one sandbox's TLS capture
// (km/bpf/tls_capture.h) become audit events (km/audit/event.h), without one event per
// SSL_read of a body.
//
//   a message head (HTTP/1.x request or response, the HTTP/2 preface)
//     -> {"type":"http","source":"tls","detail":{"kind":"tls","pid","comm","function",
//         "direction":"write|read","conn","bytes", "method","path","host" (requests),
//         "status" (responses),"protocol","remote","sport","fd", "payload" (capturePayloads only)}}
//   the end of a connection (its SSL* freed, idle for Options::idle_ms, the sandbox stopping,
//   or pushed out by Options::max_connections)
//     -> {"type":"http","source":"tls","detail":{"kind":"tls-conn","pid","comm","conn",
//         "sent","received","calls","requests","responses","protocol","host","remote","sport",
//         "duration_ms","end":"freed|idle|stopped|evicted"}}
//
// Every other record (the body of a message, non-HTTP traffic) only adds to its connection's
// counts, so a download of a gigabyte is one head event and one summary. `sport` is the
// connection's local port as the sandbox's kernel saw it: the enforcer's connect and http
// events carry the same port for the same TCP connection (their "sport"), which joins the two
// while the connection lives (docs/tls-capture.md). `conn` is the SSL* (or GnuTLS session),
// which with pid names the connection.
//
// Pure logic, no I/O. Thread-safety: a value; one thread at a time.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/audit/event.h"
#include "km/bpf/tls_capture.h"

namespace km::daemon {

struct TlsEventOptions {
  int64_t idle_ms = 60000;         // a connection without calls for this long is summarised
  size_t max_connections = 4096;   // per sandbox; beyond, the least recently active is summarised
};

// Whether a head record is a message km can name (an HTTP/1.x request or response, h2).
bool is_http_head(const bpf::TlsRecord& r);
// The detail of a message head's event (exposed for tests).
nlohmann::json tls_head_detail(const bpf::TlsRecord& r);

class TlsConnections {
 public:
  explicit TlsConnections(TlsEventOptions o = {}) : o_(o) {}

  // One record, arriving at `now_ms` (wall clock); appends the events it gives.
  void feed(const bpf::TlsRecord& r, int64_t now_ms, std::vector<audit::Event>& out);
  // Summarises the connections idle for Options::idle_ms.
  void expire(int64_t now_ms, std::vector<audit::Event>& out);
  // Summarises every connection (the sandbox stops), with end `why`.
  void finish(int64_t now_ms, const std::string& why, std::vector<audit::Event>& out);
  size_t open() const { return conns_.size(); }

 private:
  struct Conn {
    uint32_t pid = 0;
    uint64_t conn = 0;
    std::string comm;
    std::optional<bpf::TlsEndpoint> remote;
    uint16_t sport = 0;
    std::string protocol, host;
    uint64_t sent = 0, received = 0, calls = 0, requests = 0, responses = 0;
    int64_t first_ms = 0, last_ms = 0;
  };
  using Key = std::pair<uint32_t, uint64_t>;  // pid, SSL*
  audit::Event summary(const Conn& c, int64_t now_ms, const char* why) const;

  TlsEventOptions o_;
  std::map<Key, Conn> conns_;
};

}  // namespace km::daemon
