// km::audit events: the one schema every source of a sandbox's audit trail is mapped onto, its
// canonical serialisation and the hash chain that makes a gap or an edit detectable.
//
// An event, as stored (one line of NDJSON, keys sorted, no whitespace):
//
//   {"detail":{...},"hash":"<sha256 hex>","prev":"<hash of the previous event>","sandbox":"qs-1a2b3c4d",
//    "seq":42,"source":"kernel","ts":"2026-11-24T01:02:03.456Z","type":"exec"}
//
//   ts       when it happened, RFC 3339 UTC with milliseconds
//   source   who saw it: kernel (the exec audit), enforcer (DNS filter, proxy, inspector, kernel
//            gate), kmd (lifecycle, budgets, the trail's own records), shell (km shell sessions),
//            tls (TLS observation: uprobes on the sandbox's copy of OpenSSL/GnuTLS)
//   type     exec | dns | net | http | session | lifecycle | budget | audit (see kTypes)
//   detail   the typed fields of that type; detail.kind, when present, names the sub-kind
//            (net: connect|packet|socket; http: ai for metered AI calls, absent for inspected
//            requests, tls for a message head seen by TLS observation, tls-conn for its summary
//            of a connection; session: start|input|output|end; lifecycle and budget: the event, e.g.
//            created, ttl-warning, budget-warning; audit: dropped|suppressed|truncated|malformed|
//            recovered|exec-lost|tls-lost|tls-unobserved)
//   seq      1, 2, 3, ... per sandbox
//   prev     the previous event's hash; for seq 1, genesis(sandbox)
//   hash     sha256 of the canonical JSON of the event without "hash"
//
// Canonical JSON is nlohmann's compact dump: object keys in byte order, no whitespace, strings
// as UTF-8 with invalid bytes replaced by U+FFFD. A stored line re-parses and re-dumps to the
// same text, so a verifier recomputes every hash from the line alone.
//
// Pure code, no I/O. Thread-safety: free functions are reentrant; Chain and ChainVerifier are
// values (one thread at a time).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace km::audit {

// The event types, in the order `km logs --type` lists them. Sources with kinds km does not
// know yet keep their own type name (letters, digits and '-').
inline constexpr std::string_view kTypes[] = {"exec", "dns", "http", "net", "session", "lifecycle", "budget", "audit"};
bool is_known_type(std::string_view type);

// "2026-11-24T01:02:03.456Z" for a time in milliseconds since the epoch, and back. parse_ts
// accepts RFC 3339 in UTC ("Z") with 0 to 9 fractional digits; nullopt for anything else.
std::string format_ts(int64_t unix_ms);
std::optional<int64_t> parse_ts(std::string_view text);
int64_t now_ms();  // the system clock

std::string sha256_hex(std::string_view data);
// The prev of a sandbox's first event: sha256 of "km-audit-genesis:" + the sandbox ID.
std::string genesis(std::string_view sandbox);

// Canonical JSON (see above).
std::string canonical(const nlohmann::json& value);

// An event before it is placed in a trail.
struct Event {
  int64_t ts_ms = 0;
  std::string source;
  std::string type;
  nlohmann::json detail = nlohmann::json::object();
};

// The sub-kind of an event (detail.kind when it is a string, else its type). `km logs --type`
// and `km audit --kind` select on it.
std::string kind_of(std::string_view type, const nlohmann::json& detail);

// One sandbox's chain: seals events with the next seq and the running hash.
class Chain {
 public:
  // A new chain (next seq 1, prev genesis), or one continuing after (seq, hash).
  explicit Chain(std::string sandbox);
  Chain(std::string sandbox, uint64_t last_seq, std::string last_hash);

  struct Sealed {
    uint64_t seq = 0;
    std::string hash;
    std::string line;  // canonical JSON of the whole event, without the newline
  };
  Sealed seal(const Event& e);

  const std::string& sandbox() const { return sandbox_; }
  uint64_t last_seq() const { return seq_; }
  const std::string& last_hash() const { return hash_; }

 private:
  std::string sandbox_;
  uint64_t seq_ = 0;
  std::string hash_;
};

// Checks a trail line by line, in order. The first problem found is kept (later lines are
// still counted); a problem names the event by seq and says what is wrong: an edit (the hash
// does not match the content), a gap (events missing), an insertion or a reordering (seq or
// prev out of order), or a line that is not an event of this sandbox.
class ChainVerifier {
 public:
  explicit ChainVerifier(std::string sandbox);

  struct Problem {
    uint64_t seq = 0;    // the event where the chain breaks (0 when the line has none)
    uint64_t line = 0;   // 1-based line number over the whole trail
    std::string where;   // e.g. "events-2.jsonl.gz line 17"
    std::string reason;
  };

  // Feeds the next line (without its newline). `where` names it in a problem. False once a
  // problem has been found.
  bool feed(std::string_view line, const std::string& where);
  // After the last line: the trail must end at (seq, hash) when the caller knows its head (the
  // index's record); a trail cut short is a problem like any other.
  void finish(std::optional<uint64_t> expected_last_seq, const std::string& expected_last_hash = "");

  const std::optional<Problem>& problem() const { return problem_; }
  uint64_t events() const { return events_; }
  uint64_t last_seq() const { return seq_; }
  const std::string& last_hash() const { return hash_; }

 private:
  void report(uint64_t seq, const std::string& where, std::string reason);
  std::string sandbox_;
  uint64_t seq_ = 0;
  std::string hash_;
  uint64_t lines_ = 0, events_ = 0;
  std::optional<Problem> problem_;
};

// The enforcer's audit lines (km/enforcer/audit.h: {"ts","sandbox","kind",...fields}) mapped
// onto the schema: dns -> dns; connect, packet, socket -> net (detail.kind); http -> http;
// ai -> http with detail.kind "ai"; suppressed and the enforcer's own loss reports -> audit;
// any other kind -> a type of that name. ts is taken from the line when it parses, else `now`.
// The line's "sandbox" is ignored: the caller knows whose descriptor it came from. nullopt
// for a line that is not an object with a kind.
std::optional<Event> from_enforcer_line(const nlohmann::json& line, int64_t now);

// kmd's own records (Service::event names): budget-* -> budget, everything else -> lifecycle;
// the name goes into detail.kind.
Event from_lifecycle(std::string_view name, nlohmann::json detail, int64_t ts_ms);

}  // namespace km::audit
