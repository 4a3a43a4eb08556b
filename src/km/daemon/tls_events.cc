#include "km/daemon/tls_events.h"

#include <algorithm>
#include <cstdio>

namespace km::daemon {

using Json = nlohmann::json;

namespace {

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

void endpoint_fields(Json& d, const std::optional<bpf::TlsEndpoint>& remote, uint16_t sport) {
  if (remote) d["remote"] = remote->to_string();
  if (sport != 0) d["sport"] = sport;
}

audit::Event http_event(int64_t ts_ms, Json detail) { return audit::Event{ts_ms, "tls", "http", std::move(detail)}; }

}  // namespace

bool is_http_head(const bpf::TlsRecord& r) {
  return r.head && !r.closed && (!r.http.protocol.empty() || !r.http.method.empty() || r.http.status != 0);
}

Json tls_head_detail(const bpf::TlsRecord& r) {
  Json d{{"kind", "tls"},
         {"pid", r.pid},
         {"comm", r.comm},
         {"function", r.function},
         {"direction", std::string(bpf::tls_direction_name(r.direction))},
         {"conn", hex(r.conn)},
         {"bytes", r.bytes}};
  if (!r.http.protocol.empty()) d["protocol"] = r.http.protocol;
  if (!r.http.method.empty()) d["method"] = r.http.method;
  if (!r.http.path.empty()) d["path"] = r.http.path;
  if (!r.http.host.empty()) d["host"] = r.http.host;
  if (r.http.status != 0) d["status"] = r.http.status;
  endpoint_fields(d, r.remote, r.local_port);
  if (r.fd >= 0) d["fd"] = r.fd;
  // Plaintext only from sandboxes that asked for it (capturePayloads): the kernel sends none
  // otherwise, and the trail redacts what it gets like every event's detail.
  if (r.payload) d["payload"] = *r.payload;
  if (r.payload_unreadable) d["payload_unreadable"] = true;
  return d;
}

audit::Event TlsConnections::summary(const Conn& c, int64_t now_ms, const char* why) const {
  Json d{{"kind", "tls-conn"},
         {"pid", c.pid},
         {"comm", c.comm},
         {"conn", hex(c.conn)},
         {"sent", c.sent},
         {"received", c.received},
         {"calls", c.calls},
         {"requests", c.requests},
         {"responses", c.responses},
         {"duration_ms", c.last_ms - c.first_ms},
         {"end", why}};
  if (!c.protocol.empty()) d["protocol"] = c.protocol;
  if (!c.host.empty()) d["host"] = c.host;
  endpoint_fields(d, c.remote, c.sport);
  return http_event(now_ms, std::move(d));
}

void TlsConnections::feed(const bpf::TlsRecord& r, int64_t ts_ms, std::vector<audit::Event>& out) {
  Key key{r.pid, r.conn};
  auto it = conns_.find(key);
  if (r.closed) {
    // A connection that moved no bytes (a failed handshake's SSL*) has nothing to summarise.
    if (it == conns_.end()) return;
    if (r.remote && !it->second.remote) it->second.remote = r.remote, it->second.sport = r.local_port;
    it->second.last_ms = std::max(it->second.last_ms, ts_ms);  // it lived until it was freed
    out.push_back(summary(it->second, ts_ms, "freed"));
    conns_.erase(it);
    return;
  }
  if (it == conns_.end()) {
    if (conns_.size() >= o_.max_connections && !conns_.empty()) {
      auto oldest = conns_.begin();
      for (auto c = conns_.begin(); c != conns_.end(); ++c) {
        if (c->second.last_ms < oldest->second.last_ms) oldest = c;
      }
      out.push_back(summary(oldest->second, ts_ms, "evicted"));
      conns_.erase(oldest);
    }
    Conn fresh;
    fresh.pid = r.pid;
    fresh.conn = r.conn;
    fresh.first_ms = ts_ms;
    it = conns_.emplace(key, std::move(fresh)).first;
  }
  Conn& c = it->second;
  c.comm = r.comm;
  c.last_ms = ts_ms;
  ++c.calls;
  (r.direction == bpf::TlsDirection::kWrite ? c.sent : c.received) += r.bytes;
  // The socket is learnt on a connection's first calls: later records carry it too.
  if (r.remote) c.remote = r.remote, c.sport = r.local_port;
  if (!is_http_head(r)) return;
  if (!r.http.protocol.empty()) c.protocol = r.http.protocol;
  if (!r.http.host.empty()) c.host = r.http.host;
  if (r.direction == bpf::TlsDirection::kWrite) ++c.requests;
  else ++c.responses;
  out.push_back(http_event(ts_ms, tls_head_detail(r)));
}

void TlsConnections::expire(int64_t now_ms, std::vector<audit::Event>& out) {
  for (auto it = conns_.begin(); it != conns_.end();) {
    if (now_ms - it->second.last_ms >= o_.idle_ms) {
      out.push_back(summary(it->second, now_ms, "idle"));
      it = conns_.erase(it);
    } else {
      ++it;
    }
  }
}

void TlsConnections::finish(int64_t now_ms, const std::string& why, std::vector<audit::Event>& out) {
  for (const auto& [key, c] : conns_) out.push_back(summary(c, now_ms, why.c_str()));
  conns_.clear();
}

}  // namespace km::daemon
