#include "km/audit/event.h"

#include <openssl/evp.h>

#include <chrono>
#include <cstdio>
#include <ctime>

namespace km::audit {

using Json = nlohmann::json;

bool is_known_type(std::string_view type) {
  for (std::string_view t : kTypes) {
    if (t == type) return true;
  }
  return false;
}

std::string format_ts(int64_t unix_ms) {
  int64_t secs = unix_ms >= 0 ? unix_ms / 1000 : (unix_ms - 999) / 1000;
  int ms = static_cast<int>(unix_ms - secs * 1000);
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

std::optional<int64_t> parse_ts(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z
  auto digits = [&s](size_t at, size_t n) -> std::optional<int> {
    if (at + n > s.size()) return std::nullopt;
    int v = 0;
    for (size_t i = at; i < at + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return std::nullopt;
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':') {
    return std::nullopt;
  }
  auto year = digits(0, 4), mon = digits(5, 2), day = digits(8, 2), hour = digits(11, 2), min = digits(14, 2),
       sec = digits(17, 2);
  if (!year || !mon || !day || !hour || !min || !sec) return std::nullopt;
  if (*mon < 1 || *mon > 12 || *day < 1 || *day > 31 || *hour > 23 || *min > 59 || *sec > 60) return std::nullopt;
  size_t at = 19;
  int64_t ms = 0;
  if (at < s.size() && s[at] == '.') {
    size_t start = ++at;
    while (at < s.size() && s[at] >= '0' && s[at] <= '9') ++at;
    size_t n = at - start;
    if (n == 0 || n > 9) return std::nullopt;
    for (size_t i = 0; i < 3; ++i) ms = ms * 10 + (i < n ? s[start + i] - '0' : 0);
  }
  if (at + 1 != s.size() || (s[at] != 'Z' && s[at] != 'z')) return std::nullopt;
  std::tm tm{};
  tm.tm_year = *year - 1900;
  tm.tm_mon = *mon - 1;
  tm.tm_mday = *day;
  tm.tm_hour = *hour;
  tm.tm_min = *min;
  tm.tm_sec = *sec;
  return static_cast<int64_t>(timegm(&tm)) * 1000 + ms;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  // One-shot digest; it fails only on allocation failure inside OpenSSL.
  if (EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr) != 1) n = 0;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (unsigned int i = 0; i < n; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

std::string genesis(std::string_view sandbox) { return sha256_hex("km-audit-genesis:" + std::string(sandbox)); }

std::string canonical(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string kind_of(std::string_view type, const Json& detail) {
  if (detail.is_object()) {
    auto it = detail.find("kind");
    if (it != detail.end() && it->is_string()) return it->get<std::string>();
  }
  return std::string(type);
}

Chain::Chain(std::string sandbox) : sandbox_(std::move(sandbox)), hash_(genesis(sandbox_)) {}

Chain::Chain(std::string sandbox, uint64_t last_seq, std::string last_hash)
    : sandbox_(std::move(sandbox)), seq_(last_seq), hash_(last_seq == 0 ? genesis(sandbox_) : std::move(last_hash)) {}

Chain::Sealed Chain::seal(const Event& e) {
  // The canonical text built directly: keys in byte order are detail, hash, prev, sandbox, seq,
  // source, ts, type, so the line with the hash is the line without it plus one member.
  // (event_test checks that this is exactly canonical() of the parsed line.)
  uint64_t seq = seq_ + 1;
  std::string head = "{\"detail\":" + canonical(e.detail.is_object() ? e.detail : Json::object());
  std::string tail = "\"prev\":\"" + hash_ + "\",\"sandbox\":" + canonical(Json(sandbox_)) + ",\"seq\":" + std::to_string(seq) +
                     ",\"source\":" + canonical(Json(e.source)) + ",\"ts\":\"" + format_ts(e.ts_ms) + "\",\"type\":" +
                     canonical(Json(e.type)) + "}";
  std::string hash = sha256_hex(head + "," + tail);
  Sealed s{seq, hash, head + ",\"hash\":\"" + hash + "\"," + tail};
  seq_ = seq;
  hash_ = std::move(hash);
  return s;
}

ChainVerifier::ChainVerifier(std::string sandbox) : sandbox_(std::move(sandbox)), hash_(genesis(sandbox_)) {}

void ChainVerifier::report(uint64_t seq, const std::string& where, std::string reason) {
  if (!problem_) problem_ = Problem{seq, lines_, where, std::move(reason)};
}

bool ChainVerifier::feed(std::string_view line, const std::string& where) {
  ++lines_;
  if (problem_) return false;
  Json j = Json::parse(line, nullptr, false);
  if (!j.is_object()) {
    report(0, where, "the line is not a JSON object (altered, or not part of a trail)");
    return false;
  }
  auto str = [&j](const char* k) { return j.contains(k) && j[k].is_string(); };
  if (!j.contains("seq") || !j["seq"].is_number_unsigned() || !str("hash") || !str("prev") || !str("sandbox") || !str("ts") ||
      !str("type") || !str("source") || !j.contains("detail") || !j["detail"].is_object() || j.size() != 8) {
    report(j.contains("seq") && j["seq"].is_number_unsigned() ? j["seq"].get<uint64_t>() : 0, where,
           "the line is not an audit event (fields missing, extra or of the wrong type)");
    return false;
  }
  uint64_t seq = j["seq"].get<uint64_t>();
  std::string hash = j["hash"].get<std::string>(), prev = j["prev"].get<std::string>();
  if (j["sandbox"].get<std::string>() != sandbox_) {
    report(seq, where, "the event belongs to sandbox " + j["sandbox"].get<std::string>() + ", not " + sandbox_);
    return false;
  }
  j.erase("hash");
  if (sha256_hex(canonical(j)) != hash) {
    report(seq, where, "event " + std::to_string(seq) + " does not match its hash: it was edited");
    return false;
  }
  if (seq != seq_ + 1) {
    if (seq > seq_ + 1) {
      report(seq, where,
             (seq == seq_ + 2 ? "event " + std::to_string(seq_ + 1) + " is missing"
                              : "events " + std::to_string(seq_ + 1) + " to " + std::to_string(seq - 1) + " are missing") +
                 " (deleted, or moved elsewhere): a gap before event " + std::to_string(seq));
    } else {
      report(seq, where, "event " + std::to_string(seq) + " comes after event " + std::to_string(seq_) +
                             ": events were inserted, duplicated or reordered");
    }
    return false;
  }
  if (prev != hash_) {
    report(seq, where, "event " + std::to_string(seq) + " does not follow the event before it (prev is not its hash): " +
                           "an event was replaced, inserted or reordered");
    return false;
  }
  seq_ = seq;
  hash_ = std::move(hash);
  ++events_;
  return true;
}

void ChainVerifier::finish(std::optional<uint64_t> expected_last_seq, const std::string& expected_last_hash) {
  if (problem_ || !expected_last_seq) return;
  uint64_t want = *expected_last_seq;
  std::string end = "end of the trail";
  if (seq_ < want) {
    ++lines_;
    report(seq_ + 1, end,
           "the trail ends at event " + std::to_string(seq_) + " but kmd wrote " + std::to_string(want) + ": " +
               (want == seq_ + 1 ? "event " + std::to_string(want) + " is missing"
                                 : "events " + std::to_string(seq_ + 1) + " to " + std::to_string(want) + " are missing"));
  } else if (seq_ > want) {
    report(want + 1, end, "the trail goes on after event " + std::to_string(want) + ", the last kmd wrote: events were appended");
  } else if (!expected_last_hash.empty() && hash_ != expected_last_hash) {
    report(seq_, end, "event " + std::to_string(seq_) + " is not the event kmd wrote last: the end of the trail was replaced");
  }
}

namespace {

bool plain_name(std::string_view k) {
  if (k.empty() || k.size() > 32) return false;
  for (char c : k) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  }
  return true;
}

}  // namespace

std::optional<Event> from_enforcer_line(const Json& line, int64_t now) {
  if (!line.is_object()) return std::nullopt;
  auto k = line.find("kind");
  if (k == line.end() || !k->is_string()) return std::nullopt;
  std::string kind = k->get<std::string>();
  Event e;
  e.source = "enforcer";
  e.ts_ms = now;
  if (auto t = line.find("ts"); t != line.end() && t->is_string()) {
    if (auto ms = parse_ts(t->get_ref<const std::string&>())) e.ts_ms = *ms;
  }
  for (auto it = line.begin(); it != line.end(); ++it) {
    if (it.key() == "ts" || it.key() == "sandbox" || it.key() == "kind") continue;
    e.detail[it.key()] = it.value();
  }
  if (kind == "dns" || kind == "http") {
    e.type = kind;
  } else if (kind == "connect" || kind == "packet" || kind == "socket") {
    e.type = "net";
    e.detail["kind"] = kind;
  } else if (kind == "ai") {
    e.type = "http";
    e.detail["kind"] = "ai";
  } else if (kind == "suppressed") {
    e.type = "audit";
    e.detail["kind"] = "suppressed";
  } else if (kind == "audit") {
    e.type = "audit";
    if (!e.detail.contains("kind")) e.detail["kind"] = "dropped";
  } else {
    e.type = plain_name(kind) ? kind : "enforcer";
    if (!plain_name(kind)) e.detail["kind"] = kind;
  }
  return e;
}

Event from_lifecycle(std::string_view name, Json detail, int64_t ts_ms) {
  Event e;
  e.ts_ms = ts_ms;
  e.source = "kmd";
  e.type = name.rfind("budget-", 0) == 0 ? "budget" : "lifecycle";
  e.detail = detail.is_object() ? std::move(detail) : Json::object();
  e.detail["kind"] = std::string(name);
  return e;
}

}  // namespace km::audit
