#include "km/cli/logs_command.h"

#include <cinttypes>
#include <cstdio>
#include <memory>
#include <optional>

#include "km/audit/event.h"
#include "km/base/duration.h"
#include "km/base/money.h"
#include "km/cli/kmd_client.h"
#include "km/cli/output.h"

namespace km::cli {

namespace {

using Json = nlohmann::json;

std::string str(const Json& j, const char* k) {
  return j.is_object() && j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
}
int64_t num(const Json& j, const char* k, int64_t def = 0) {
  return j.is_object() && j.contains(k) && j[k].is_number_integer() ? j[k].get<int64_t>() : def;
}

// A DNS query type by its mnemonic (RFC 1035, 3596, 2782, 6672, 7477 ...), else TYPEnnn (RFC 3597).
std::string qtype_name(int64_t t) {
  switch (t) {
    case 1: return "A";
    case 2: return "NS";
    case 5: return "CNAME";
    case 6: return "SOA";
    case 12: return "PTR";
    case 15: return "MX";
    case 16: return "TXT";
    case 28: return "AAAA";
    case 33: return "SRV";
    case 39: return "DNAME";
    case 64: return "SVCB";
    case 65: return "HTTPS";
    case 255: return "ANY";
    default: return "TYPE" + std::to_string(t);
  }
}

// One line on a terminal: control characters escaped, cut to `max` bytes.
std::string shown(std::string_view s, size_t max = 120) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c == 0x1b) out += "\\e";
    else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string why(const Json& d) { return str(d, "verdict") == "allow" ? str(d, "rule") : str(d, "reason"); }

std::string summary(const std::string& type, const std::string& kind, const Json& d) {
  if (type == "exec") {
    std::string argv;
    for (const auto& a : d.value("argv", Json::array())) argv += (argv.empty() ? "" : " ") + (a.is_string() ? a.get<std::string>() : "");
    if (d.value("truncated", false)) argv += " ...";
    return shown(argv, 100) + "  (pid " + std::to_string(num(d, "pid")) + ", ppid " + std::to_string(num(d, "ppid")) + ", uid " +
           std::to_string(num(d, "uid", -1)) + ", " + shown(str(d, "cwd"), 40) + ")";
  }
  if (type == "dns") {
    std::string out = str(d, "verdict") + " " + shown(str(d, "name"), 80) + " " + qtype_name(num(d, "qtype")) + " -> " + str(d, "rcode");
    if (d.contains("addresses") && d["addresses"].is_array() && !d["addresses"].empty()) out += " " + shown(d["addresses"].dump(), 60);
    return out + " (" + shown(why(d), 80) + ")";
  }
  if (type == "net") {
    std::string dest = str(d, "addr");
    if (d.contains("port") && d["port"].is_number()) dest += (dest.empty() ? "" : ":") + std::to_string(num(d, "port"));
    std::string name = str(d, "name");
    return str(d, "verdict") + " " + (name.empty() ? "" : shown(name, 60) + " ") + dest + " " + str(d, "proto") +
           (str(d, "mode").empty() ? "" : " " + str(d, "mode")) + " (" + shown(why(d), 80) + ")";
  }
  if (type == "http" && kind == "ai") {
    return str(d, "provider") + " " + str(d, "model") + ": " + std::to_string(num(d, "input_tokens")) + " in, " +
           std::to_string(num(d, "output_tokens")) + " out, " + format_usd(num(d, "cost_micros")) +
           (d.value("estimated", false) ? " (estimated)" : "") + ", status " + std::to_string(num(d, "status"));
  }
  if (type == "http" && (kind == "tls" || kind == "tls-conn")) {
    // TLS observation (source tls): plaintext heads seen in the sandbox's processes.
    std::string who = " (" + shown(str(d, "comm"), 16) + " pid " + std::to_string(num(d, "pid"));
    if (d.contains("sport")) who += ", sport " + std::to_string(num(d, "sport"));
    who += ")";
    if (kind == "tls-conn") {
      return "tls connection ended (" + str(d, "end") + "): " + std::to_string(num(d, "sent")) + " bytes sent, " +
             std::to_string(num(d, "received")) + " received, " + std::to_string(num(d, "requests")) + " requests" +
             (str(d, "host").empty() ? "" : " to " + shown(str(d, "host"), 60)) + who;
    }
    if (str(d, "direction") == "read") {
      return "tls <- " + (d.contains("status") ? std::to_string(num(d, "status")) : str(d, "protocol")) + " " + str(d, "protocol") + who;
    }
    std::string target = str(d, "method").empty() ? str(d, "protocol") : str(d, "method") + " " + shown(str(d, "host") + str(d, "path"), 80);
    return "tls -> " + target + who;
  }
  if (type == "audit" && kind == "tls-unobserved") {
    std::string stacks;
    for (const auto& st : d.value("stacks", Json::array())) {
      if (st.is_object()) stacks += (stacks.empty() ? "" : ", ") + str(st, "stack") + " (" + shown(str(st, "object"), 60) + ")";
    }
    return "TLS not observed: " + shown(str(d, "executable"), 80) + " uses " + stacks;
  }
  if (type == "http") {
    std::string out = str(d, "verdict") + " " + str(d, "method") + " " + shown(str(d, "host") + str(d, "path"), 80);
    if (d.contains("status")) out += " -> " + std::to_string(num(d, "status"));
    if (!str(d, "repo").empty()) out += " (" + str(d, "repo") + ")";
    return out + " (" + shown(why(d), 60) + ")";
  }
  if (type == "session") {
    std::string s = str(d, "session");
    if (kind == "input" || kind == "output") return s + " \"" + shown(str(d, "data"), 100) + "\"";
    if (kind == "start") {
      return s + " started (pid " + std::to_string(num(d, "pid")) + (d.value("root", false) ? ", root" : "") +
             (d.value("recorded", true) ? ", recorded)" : ", not recorded)");
    }
    if (kind == "end") {
      return s + " ended: exit " + std::to_string(num(d, "exit", -1)) + ", " + std::to_string(num(d, "input_bytes")) + " bytes typed, " +
             std::to_string(num(d, "output_bytes")) + " shown";
    }
  }
  Json rest = d.is_object() ? d : Json::object();
  rest.erase("kind");
  return rest.empty() ? "" : shown(rest.dump(-1, ' ', false, Json::error_handler_t::replace), 160);
}

// Loss counters, on stderr, when anything was lost.
void report_losses(const Json& c) {
  if (!c.is_object()) return;
  auto n = [&c](const char* k) { return c.contains(k) && c[k].is_number_unsigned() ? c[k].get<uint64_t>() : uint64_t{0}; };
  if (n("dropped") + n("suppressed") + n("truncated") + n("malformed") + n("exec_lost") + n("tls_lost") == 0) return;
  std::fprintf(stderr,
               "km: audit losses: %" PRIu64 " dropped (%" PRIu64 " in the enforcer, %" PRIu64 " in kmd), %" PRIu64
               " suppressed by the rate limit, %" PRIu64 " truncated, %" PRIu64 " malformed, %" PRIu64 " commands lost host-wide\n",
               n("dropped"), n("dropped_enforcer"), n("dropped_kmd"), n("suppressed"), n("truncated"), n("malformed"), n("exec_lost"));
  if (n("tls_lost") > 0) std::fprintf(stderr, "km: %" PRIu64 " TLS records lost host-wide\n", n("tls_lost"));
}

struct LogsOptions {
  std::string ref, since;
  std::vector<std::string> types;
  int64_t limit = 0;  // 0: 100, or 10,000 with --since
  bool follow = false, verify = false;
};

// Prints stored events (lines of canonical JSON): as they are with -o json, else a line each.
int print_lines(const Json& lines, bool json) {
  std::string out;
  for (const auto& l : lines) {
    if (!l.is_string()) continue;
    if (json) out += l.get_ref<const std::string&>();
    else out += event_line(Json::parse(l.get_ref<const std::string&>(), nullptr, false));
    out += '\n';
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  return static_cast<int>(lines.size());
}

int cmd_logs(const GlobalOptions& g, const LogsOptions& o) {
  bool json = g.output == "json";
  auto client = KmdClient::connect(g.socket.empty() ? default_socket() : g.socket);
  if (!client) {
    print_error(client.error());
    return kExitFailure;
  }
  if (o.verify) {
    auto r = client->call(Json{{"op", "logs"}, {"ref", o.ref}, {"verify", true}});
    if (!r) {
      print_error(r.error());
      return kExitFailure;
    }
    const Json& v = (*r)["verify"];
    bool intact = v.value("intact", false);
    if (json) {
      std::printf("%s\n", v.dump(2).c_str());
    } else if (intact) {
      std::printf("chain intact: %" PRIu64 " events\n", v.value("events", uint64_t{0}));
    } else {
      const Json& p = v["problem"];
      std::printf("chain broken at event %" PRIu64 " (%s): %s\n", p.value("seq", uint64_t{0}), str(p, "where").c_str(),
                  str(p, "reason").c_str());
    }
    report_losses((*r)["counters"]);
    return intact ? kExitOk : kExitFailure;
  }
  std::optional<int64_t> since;
  if (!o.since.empty()) {
    since = parse_since(o.since, audit::now_ms());
    if (!since) {
      print_error("--since " + o.since + ": not a duration (e.g. 90m, 2h) or an RFC 3339 UTC time (2026-11-24T05:00:00Z)");
      return kExitUsage;
    }
  }
  Json req{{"op", "logs"}, {"ref", o.ref}};
  if (!o.types.empty()) req["types"] = o.types;
  if (since) req["since_ms"] = *since;
  auto r = fetch_newest(*client, req, o.limit > 0 ? o.limit : since ? 10000 : 100);
  if (!r) {
    print_error(r.error());
    return kExitFailure;
  }
  if (!json) std::printf("%-24s %7s  %-9s %-14s %s\n", "TIME", "SEQ", "TYPE", "KIND", "DETAIL");
  print_lines((*r)["lines"], json);
  if (!o.follow) {
    report_losses((*r)["counters"]);
    return kExitOk;
  }
  // Following: kmd answers as soon as there is an event after `next`, or after a few seconds.
  uint64_t next = r->value("next", uint64_t{0});
  Json counters = (*r)["counters"];
  for (;;) {
    Json f{{"op", "logs"}, {"ref", (*r).value("id", o.ref)}, {"after_seq", next}, {"wait_ms", 5000}, {"limit", 1000}};
    if (!o.types.empty()) f["types"] = o.types;
    auto more = client->call(f);
    if (!more) {
      print_error(more.error());
      return kExitFailure;
    }
    int n = print_lines((*more)["lines"], json);
    next = more->value("next", next);
    if ((*more)["counters"] != counters) {
      counters = (*more)["counters"];
      report_losses(counters);
    }
    // A destroyed sandbox's trail ends with its last event.
    if (n == 0 && more->value("state", std::string()) == "destroyed") return kExitOk;
  }
}

}  // namespace

Result<Json> fetch_newest(KmdClient& client, Json req, int64_t limit) {
  // km logs answers with "lines" (stored events as text) and the seq of the first; km audit
  // with "events" (objects with a seq).
  auto items = [](Json& r) -> Json& {
    const char* key = r.contains("lines") ? "lines" : "events";
    if (!r.contains(key) || !r[key].is_array()) r[key] = Json::array();
    return r[key];
  };
  auto first_seq = [](const Json& r, const Json& list) -> uint64_t {
    if (r.contains("first")) return r.value("first", uint64_t{0});
    return list.empty() || !list[0].is_object() ? 0 : list[0].value("seq", uint64_t{0});
  };
  req["limit"] = limit;
  KM_ASSIGN_OR_RETURN(Json first, client.call(req));
  Json all = items(first);
  uint64_t before = first_seq(first, all);
  uint64_t left = first.value("left_out", uint64_t{0});
  while (left > 0 && !all.empty() && static_cast<int64_t>(all.size()) < limit && before > 1) {
    req["limit"] = limit - static_cast<int64_t>(all.size());
    req["before_seq"] = before;
    KM_ASSIGN_OR_RETURN(Json page, client.call(req));
    Json merged = items(page);
    if (merged.empty()) break;
    before = first_seq(page, merged);
    for (auto& e : all) merged.push_back(std::move(e));
    all = std::move(merged);
    left = page.value("left_out", uint64_t{0});
  }
  items(first) = std::move(all);
  first["left_out"] = 0;
  return first;
}

std::optional<int64_t> parse_since(const std::string& text, int64_t now_ms) {
  if (auto t = audit::parse_ts(text)) return *t;
  auto d = parse_duration(text);
  if (!d || d->seconds == 0) return std::nullopt;
  return now_ms - d->seconds * 1000;
}

std::string event_line(const Json& e) {
  if (!e.is_object()) return "(not an event)";
  std::string type = str(e, "type");
  const Json& d = e.contains("detail") ? e["detail"] : Json::object();
  std::string kind = audit::kind_of(type, d);
  char head[96];
  std::snprintf(head, sizeof head, "%-24s %7" PRIu64 "  %-9s %-14s ", str(e, "ts").c_str(), e.value("seq", uint64_t{0}),
                shown(type, 9).c_str(), shown(kind, 14).c_str());
  return head + summary(type, kind, d);
}

void add_logs_command(CLI::App& app, GlobalOptions& global, int* exit_code) {
  auto o = std::make_shared<LogsOptions>();
  CLI::App* logs = app.add_subcommand(
      "logs", "Show a sandbox's audit trail: commands, DNS, connections, requests, sessions, lifecycle and budget events");
  logs->add_option("ref", o->ref, "ID, alias or number")->required();
  logs->add_flag("-f,--follow", o->follow, "Keep printing new events until interrupted");
  logs->add_option("--type", o->types, "Only events of these types (repeatable or comma-separated)")
      ->delimiter(',')
      ->check(CLI::IsMember({"exec", "dns", "http", "net", "session", "lifecycle", "budget", "audit"}));
  logs->add_option("--since", o->since, "Only events since a time (RFC 3339, UTC) or that long ago (e.g. 90m, 2h)");
  logs->add_option("-n,--limit", o->limit, "How many of the newest events (default 100; 10,000 with --since)")->check(CLI::Range(1, 100000));
  logs->add_flag("--verify", o->verify, "Recompute the hash chain: exit 0 if intact, 1 naming the first gap or edit");
  logs->callback([&global, o, exit_code] {
    if (o->verify && o->follow) {
      print_error("--verify and --follow do not go together");
      *exit_code = kExitUsage;
      return;
    }
    *exit_code = cmd_logs(global, *o);
  });
}

}  // namespace km::cli
