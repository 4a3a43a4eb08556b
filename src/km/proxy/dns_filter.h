// The DNS filter's decisions, without I/O: what to do with a query a sandbox sent, and what to
// let through of the answer an upstream server returned. The enforcer's transport (UDP/TCP,
// upstream retries, timeouts) applies these.
//
// Queries:  unparseable → FORMERR; not exactly one question → FORMERR; opcode other than QUERY →
//           NOTIMP; class other than IN, zone transfers → REFUSED; ANY → NOTIMP; a name with
//           escaped bytes or outside the allowlist → NXDOMAIN (never forwarded). Allowed names
//           are forwarded as a fresh, canonical query (one question, RD, EDNS 1232), never as
//           the client's bytes. AAAA, HTTPS and SVCB of allowed names are answered locally with
//           no data: sandboxes have no IPv6, and HTTPS records carry ECH keys that would hide
//           the real destination from the proxy.
// Answers:  the question must match; only records on the CNAME chain from the question name
//           are kept, and the chain is cut at the first target outside the allowlist; address
//           records whose owner is not allowed are dropped; authority keeps only an SOA for
//           negative caching; additional data is dropped. Every kept A record binds every name
//           of the chain to the address (the proxy's AddressBook).
// Thread-safety: const methods on an immutable policy; safe to share.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "km/base/result.h"
#include "km/proxy/dns_message.h"
#include "km/proxy/egress_policy.h"

namespace km::proxy {

struct DnsQueryPlan {
  enum class Action { kReply, kForward };
  Action action = Action::kReply;
  std::vector<uint8_t> reply;    // kReply: the complete answer for the client
  dns::Message upstream;         // kForward: the query to send (the transport sets the id)
  dns::Rcode rcode = dns::Rcode::kNoError;  // kReply: what the client is told
  std::string name;              // presentation form, lowercase ("" if unparseable)
  uint16_t qtype = 0;
  Decision decision;             // for the audit event
  // What the reply must echo.
  uint16_t client_id = 0;
  bool client_rd = true;
  bool client_edns = false;
  uint16_t client_udp_size = 512;
};

struct DnsAnswer {
  std::vector<uint8_t> reply;       // for the client
  dns::Rcode rcode = dns::Rcode::kNoError;
  bool truncated_upstream = false;  // upstream set TC: retry over TCP, reply is empty
  struct Binding {
    std::string name;
    IpAddress addr;
    uint32_t ttl = 0;
  };
  std::vector<Binding> bindings;
  std::vector<std::string> addresses;  // kept addresses, for the audit event
  std::string cut_at;                  // the CNAME target outside the allowlist, if the chain was cut
  size_t dropped = 0;                  // records removed
};

class DnsFilter {
 public:
  explicit DnsFilter(const EgressPolicy& policy) : policy_(policy) {}

  DnsQueryPlan on_query(std::span<const uint8_t> wire) const;
  // `max_size`: the largest reply the client can take (UDP: its EDNS size or 512; TCP: 65535).
  // An error means the upstream answer is unusable (the transport answers SERVFAIL).
  Result<DnsAnswer> on_answer(const DnsQueryPlan& plan, std::span<const uint8_t> upstream, size_t max_size) const;

  // The reply to send when no upstream answered.
  static std::vector<uint8_t> servfail(const DnsQueryPlan& plan);
  // The size limit for a UDP reply to this client.
  static size_t udp_limit(const DnsQueryPlan& plan);

 private:
  const EgressPolicy& policy_;
};

}  // namespace km::proxy
