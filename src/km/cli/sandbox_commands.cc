#include "km/cli/sandbox_commands.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>

#include "km/base/duration.h"
#include "km/base/money.h"
#include "km/base/strings.h"
#include "km/cli/budget_commands.h"
#include "km/cli/kmd_client.h"
#include "km/cli/logs_command.h"
#include "km/profile/builtins.h"
#include "km/profile/inherit.h"
#include "km/yaml/emit.h"

namespace km::cli {

namespace {

using Json = nlohmann::json;

std::string socket_path(const GlobalOptions& g) { return g.socket.empty() ? default_socket() : g.socket; }

Result<Json> call(const GlobalOptions& g, const Json& req) {
  KM_ASSIGN_OR_RETURN(KmdClient c, KmdClient::connect(socket_path(g)));
  return c.call(req);
}

std::string ago(int64_t seconds) {
  if (seconds < 0) return "-";
  return format_duration({seconds});
}

std::string remaining(const Json& s, int64_t now) {
  int64_t exp = s.value("expires_at", int64_t{0});
  if (exp == 0) return "never";
  return exp > now ? format_duration({exp - now}) : "due";
}

// Prints a reply: `text` on a terminal, or the reply's `key` member as JSON.
int finish(const Result<Json>& r, const GlobalOptions& g, const std::function<void(const Json&)>& text,
           const char* key = "sandbox") {
  if (!r) {
    print_error(r.error());
    return kExitFailure;
  }
  if (g.output == "json") {
    const Json& body = r->contains(key) ? (*r)[key] : *r;
    std::printf("%s\n", body.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
  } else {
    text(*r);
  }
  return kExitOk;
}

int cmd_create(const GlobalOptions& g, const std::string& ref, const std::string& alias, const std::string& ttl,
               const std::string& idle, const std::string& compute, const std::string& ai) {
  // Budgets in USD, converted to micro-dollars from the decimal text (no floating point).
  Json budget = Json::object();
  for (auto [flag, text] : {std::pair<const char*, const std::string*>{"compute", &compute}, {"ai", &ai}}) {
    if (text->empty()) continue;
    auto micros = parse_usd_micros(*text);
    if (!micros) {
      print_error(Error(micros.error()).wrap(std::string("--") + flag));
      return kExitUsage;
    }
    budget[std::string(flag) + "_micros"] = *micros;
  }
  profile::ResolveOptions o;
  o.search_paths = g.profile_paths;
  struct stat st {};
  bool is_file = ::stat(ref.c_str(), &st) == 0;
  profile::Checked c = !is_file && profile::find_builtin(ref) ? profile::check_builtin(ref, o) : profile::check_file(ref, o);
  for (const auto& f : c.findings.items()) {
    if (f.severity == profile::Severity::kError) std::fprintf(stderr, "%s\n", f.to_string().c_str());
  }
  if (!c.resolved || c.findings.has_errors()) {
    print_error(ref + " is not a valid profile", "run `km validate " + ref + "`");
    return kExitFailure;
  }
  if (c.resolved->abstract) {
    print_error(ref + " is an abstract profile (a fragment for extends) and cannot be created");
    return kExitFailure;
  }
  auto yaml_text = yaml::emit(c.resolved->root);
  if (!yaml_text) {
    print_error(yaml_text.error());
    return kExitFailure;
  }
  Json req{{"op", "create"}, {"profile", *yaml_text}, {"profile_source", ref}};
  req.update(budget);
  if (!alias.empty()) req["alias"] = alias;
  for (auto [flag, value] : {std::pair<const char*, const std::string*>{"ttl", &ttl}, {"idle", &idle}}) {
    if (value->empty()) continue;
    auto d = parse_duration(*value);
    if (!d) {
      print_error(std::string("--") + flag + ": " + d.error().message());
      return kExitUsage;
    }
    req[flag] = d->seconds;
  }
  bool tty = ::isatty(STDERR_FILENO);
  auto t0 = std::chrono::steady_clock::now();
  if (tty) std::fprintf(stderr, "creating a sandbox from %s ...", ref.c_str());
  auto r = call(g, req);
  if (tty) std::fprintf(stderr, "\r\033[K");
  if (!r) {
    print_error(r.error());
    return kExitFailure;
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  const Json& s = (*r)["sandbox"];
  if (g.output == "json") {
    std::printf("%s\n", s.dump(2).c_str());
  } else {
    std::printf("%s\n", s["id"].get<std::string>().c_str());
    if (tty) std::fprintf(stderr, "sandbox %s (#%lld) running, created in %lld ms\n", s["id"].get<std::string>().c_str(),
                          static_cast<long long>(s["number"].get<int64_t>()), static_cast<long long>(ms));
  }
  return kExitOk;
}

// A compact listing's rows: lines of tab-separated fields, with \\, \t and \n escaped.
std::vector<std::vector<std::string>> split_rows(const std::string& text, size_t nfields) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  row.reserve(nfields);
  std::string cell;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {
      char e = text[++i];
      cell += e == 't' ? '\t' : e == 'n' ? '\n' : e;
    } else if (c == '\t') {
      row.push_back(std::move(cell));
      cell.clear();
    } else if (c == '\n') {
      row.push_back(std::move(cell));
      cell.clear();
      if (row.size() == nfields) rows.push_back(std::move(row));
      row.clear();
      row.reserve(nfields);
    } else {
      cell += c;
    }
  }
  return rows;
}

int cmd_list(const GlobalOptions& g, bool all) {
  // kmd answers with a compact listing (see Service::op_list).
  auto r = call(g, Json{{"op", "list"}, {"all", all}, {"compact", true}});
  if (!r) {
    print_error(r.error());
    return kExitFailure;
  }
  const Json& fields = (*r)["fields"];
  std::string types = r->value("types", std::string());
  if (!fields.is_array() || types.size() != fields.size() || !(*r)["rows"].is_string()) {
    print_error("kmd's listing is not in the expected form", "km and kmd are different versions");
    return kExitFailure;
  }
  std::map<std::string, size_t> col;
  for (size_t i = 0; i < fields.size(); ++i) col[fields[i].get<std::string>()] = i;
  for (const char* need : {"id", "alias", "number", "profile", "state", "created_at", "expires_at", "locked"}) {
    if (!col.count(need)) {
      print_error("kmd's listing has no field " + std::string(need), "km and kmd are different versions");
      return kExitFailure;
    }
  }
  auto data = split_rows((*r)["rows"].get_ref<const std::string&>(), fields.size());
  if (g.output == "json") {
    // Objects, as `km status -o json` shows them; written directly (a listing can be large).
    std::vector<std::string> keys;
    for (const auto& f : fields) keys.push_back(f.dump() + ": ");
    std::string out = "[";
    for (size_t i = 0; i < data.size(); ++i) {
      out += i ? ",\n  {" : "\n  {";
      for (size_t f = 0; f < keys.size(); ++f) {
        if (f) out += ", ";
        out += keys[f];
        const std::string& v = data[i][f];
        bool number = !v.empty() && v.find_first_not_of("-0123456789") == std::string::npos;
        if (types[f] == 's') out += Json(v).dump(-1, ' ', false, Json::error_handler_t::replace);
        else if ((types[f] == 'i' && number) || (types[f] == 'b' && (v == "true" || v == "false"))) out += v;
        else out += "null";
      }
      out += "}";
    }
    out += data.empty() ? "]\n" : "\n]\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    return kExitOk;
  }
  int64_t now = (*r)["now"];
  std::vector<std::vector<std::string>> rows;
  rows.reserve(data.size());
  size_t c_number = col["number"], c_alias = col["alias"], c_id = col["id"], c_profile = col["profile"],
         c_state = col["state"], c_exp = col["expires_at"], c_created = col["created_at"], c_locked = col["locked"];
  for (auto& s : data) {
    int64_t exp = std::strtoll(s[c_exp].c_str(), nullptr, 10);
    int64_t created = std::strtoll(s[c_created].c_str(), nullptr, 10);
    rows.push_back({std::move(s[c_number]), s[c_alias].empty() ? "-" : std::move(s[c_alias]), std::move(s[c_id]),
                    std::move(s[c_profile]), std::move(s[c_state]),
                    exp == 0 ? "never" : exp > now ? format_duration({exp - now}) : "due", ago(now - created),
                    s[c_locked] == "true" ? "locked" : ""});
  }
  std::string table = render_table({"#", "ALIAS", "ID", "PROFILE", "STATE", "TTL", "AGE", ""}, rows);
  std::fwrite(table.data(), 1, table.size(), stdout);
  return kExitOk;
}

int cmd_audit(const GlobalOptions& g, const std::string& ref, const std::string& kind, int64_t limit) {
  Json req{{"op", "audit"}, {"ref", ref}};
  if (!kind.empty()) req["kind"] = kind;
  auto client = KmdClient::connect(socket_path(g));
  auto reply = client ? fetch_newest(*client, req, limit) : Result<Json>(fail(client.error()));
  return finish(reply, g, [](const Json& r) {
    std::vector<std::vector<std::string>> rows;
    auto str = [](const Json& e, const char* k) { return e.contains(k) && e[k].is_string() ? e[k].get<std::string>() : std::string(); };
    for (const auto& e : r["events"]) {
      std::string what = str(e, "name");
      std::string addr = str(e, "addr");
      if (e.contains("port") && e["port"].is_number()) addr += (addr.empty() ? "" : ":") + std::to_string(e["port"].get<int64_t>());
      if (!addr.empty()) what += (what.empty() ? "" : " ") + std::string("(") + addr + ")";
      std::string why = str(e, "verdict") == "allow" ? str(e, "rule") : str(e, "reason");
      std::string kindcol = str(e, "kind");
      if (kindcol == "exec") {
        // A command: its argv where the destination goes, its process in the last column.
        what.clear();
        for (const auto& a : e.value("argv", Json::array())) what += (what.empty() ? "" : " ") + (a.is_string() ? a.get<std::string>() : "");
        if (e.value("truncated", false)) what += " ...";
        // One line per command in the table: control characters shown escaped, long ones cut
        // (-o json has them whole).
        std::string shown;
        for (char c : what) {
          if (c == '\n') shown += "\\n";
          else if (c == '\t') shown += "\\t";
          else if (static_cast<unsigned char>(c) < 0x20) shown += '?';
          else shown += c;
        }
        if (shown.size() > 100) shown = shown.substr(0, 97) + "...";
        what = std::move(shown);
        why = "pid " + std::to_string(e.value("pid", 0)) + " ppid " + std::to_string(e.value("ppid", 0)) + " uid " +
              std::to_string(e.value("uid", -1));
      }
      if (kindcol == "http") {
        // An inspected request: host and path, the status it got.
        what = str(e, "method") + " " + str(e, "host") + str(e, "path");
        if (e.contains("status") && e["status"].is_number()) what += " -> " + std::to_string(e["status"].get<int64_t>());
        if (!str(e, "repo").empty()) what += " (" + str(e, "repo") + ")";
      }
      if (kindcol == "ai") {
        // A metered AI call: model, tokens and cost.
        what = str(e, "provider") + " " + str(e, "model");
        why = std::to_string(e.value("input_tokens", int64_t{0})) + " in, " + std::to_string(e.value("output_tokens", int64_t{0})) +
              " out, " + format_usd(e.value("cost_micros", int64_t{0})) + (e.value("estimated", false) ? " (estimated)" : "");
        rows.push_back({str(e, "ts"), kindcol, "", what, why});
        continue;
      }
      if (kindcol == "connect") kindcol += "/" + str(e, "mode");
      if (kindcol == "dns") kindcol += "/" + str(e, "rcode");
      rows.push_back({str(e, "ts"), kindcol, str(e, "verdict"), what, why});
    }
    std::fputs(render_table({"TIME", "KIND", "VERDICT", "DESTINATION", "RULE OR REASON"}, rows).c_str(), stdout);
  }, "events");
}

std::string utc(int64_t t) {
  if (t == 0) return "-";
  std::time_t tt = t;
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int cmd_status(const GlobalOptions& g, const std::string& ref) {
  return finish(call(g, Json{{"op", "status"}, {"ref", ref}}), g, [](const Json& r) {
    const Json& s = r["sandbox"];
    int64_t now = r["now"];
    auto line = [](const char* k, const std::string& v) { std::printf("%-14s %s\n", k, v.c_str()); };
    line("id", s["id"]);
    line("number", std::to_string(s["number"].get<int64_t>()));
    if (!s["alias"].get<std::string>().empty()) line("alias", s["alias"]);
    line("profile", s["profile"]);
    line("state", s["state"].get<std::string>() + (s["reason"].get<std::string>().empty() ? "" : " (" + s["reason"].get<std::string>() + ")"));
    line("locked", s["locked"].get<bool>() ? "yes" : "no");
    line("created", utc(s["created_at"]));
    line("expires", s["expires_at"].get<int64_t>() ? utc(s["expires_at"]) + " (in " + remaining(s, now) + ")" : "never");
    line("idle timeout", s["idle_timeout"].get<int64_t>() ? format_duration({s["idle_timeout"].get<int64_t>()}) : "off");
    line("teardown", s["teardown_policy"]);
    if (s.contains("processes")) line("processes", std::to_string(s["processes"].get<int64_t>()));
    if (s.contains("memory_bytes")) line("memory", std::to_string(s["memory_bytes"].get<int64_t>() >> 20) + " MiB");
    if (s.contains("budget") && s["budget"].is_object()) print_spend(s["budget"], 14);
    if (s.contains("audit") && s["audit"].is_object()) {
      // The trail's size and what it lost (km logs shows the events).
      const Json& a = s["audit"];
      auto n = [&a](const char* k) { return std::to_string(a.value(k, uint64_t{0})); };
      line("audit", n("events") + " events, " + n("dropped") + " dropped (enforcer " + n("dropped_enforcer") + ", kmd " +
                        n("dropped_kmd") + "), " + n("suppressed") + " suppressed, " + n("truncated") + " truncated, " +
                        n("malformed") + " malformed" + (a.value("exec_lost", uint64_t{0}) ? ", " + n("exec_lost") + " commands lost host-wide" : "") +
                        (a.value("tls_lost", uint64_t{0}) ? ", " + n("tls_lost") + " TLS records lost host-wide" : ""));
    }
    if (s.contains("tls") && s["tls"].is_object()) {
      // TLS observation (profile observability.tlsCapture): what is probed, and what it saw.
      const Json& t = s["tls"];
      std::string libs;
      for (const auto& l : t.value("libraries", Json::array())) libs += (libs.empty() ? "" : ", ") + l.get<std::string>();
      std::string text = "on (" + (libs.empty() ? std::string("no library") : libs) + ")" +
                         (t.value("payloads", false) ? ", payloads captured" : "") + ", " +
                         std::to_string(t.value("heads", uint64_t{0})) + " messages seen, " +
                         std::to_string(t.value("connections", uint64_t{0})) + " connections open";
      line("tls capture", text);
    }
    std::printf("events:\n");
    for (const auto& e : s["events"]) {
      std::printf("  %s  %-16s %s\n", utc(e["ts"]).c_str(), e["type"].get<std::string>().c_str(),
                  e["detail"].is_object() && !e["detail"].empty() ? e["detail"].dump().c_str() : "");
    }
  });
}

// Pipes that stand in for a terminal: a sandbox never receives a host terminal fd (it could
// push input into it with TIOCSTI, or change its settings).
struct Relay {
  int local = -1;   // our end of the stdio we relay
  int pipe_ours = -1;
  int pipe_theirs = -1;
  bool input = false;
};

int cmd_exec(const GlobalOptions& g, const std::string& ref, const std::vector<std::string>& argv, bool root,
             const std::string& cwd) {
  auto client = KmdClient::connect(socket_path(g));
  if (!client) {
    print_error(client.error());
    return kExitFailure;
  }
  std::vector<Relay> relays;
  int fds[3] = {0, 1, 2};
  for (int i = 0; i < 3; ++i) {
    if (!::isatty(i)) continue;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return kExitFailure;
    Relay r;
    r.local = i;
    r.input = i == 0;
    r.pipe_ours = r.input ? p[1] : p[0];
    r.pipe_theirs = r.input ? p[0] : p[1];
    fds[i] = r.pipe_theirs;
    relays.push_back(r);
  }
  Json req{{"op", "exec"}, {"ref", ref}, {"argv", argv}, {"root", root}};
  if (!cwd.empty()) req["cwd"] = cwd;
  auto started = client->call(req, {fds[0], fds[1], fds[2]});
  for (auto& r : relays) ::close(r.pipe_theirs);
  if (!started) {
    print_error(started.error());
    return kExitFailure;
  }
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&mask, s);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  int sfd = ::signalfd(-1, &mask, SFD_CLOEXEC);
  char buf[65536];
  for (;;) {
    std::vector<pollfd> p = {{client->fd(), POLLIN, 0}, {sfd, POLLIN, 0}};
    for (auto& r : relays) {
      if (r.pipe_ours >= 0) p.push_back({r.input ? r.local : r.pipe_ours, POLLIN, 0});
    }
    if (::poll(p.data(), p.size(), -1) < 0) continue;
    if (p[1].revents & POLLIN) {
      signalfd_siginfo si{};
      if (::read(sfd, &si, sizeof si) == sizeof si) {
        (void)client->send(Json{{"op", "signal"}, {"sig", static_cast<int>(si.ssi_signo)}});
      }
    }
    size_t k = 2;
    for (auto& r : relays) {
      if (r.pipe_ours < 0) continue;
      pollfd& pf = p[k++];
      if (!(pf.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(pf.fd, buf, sizeof buf);
      if (n <= 0) {
        ::close(r.pipe_ours);
        r.pipe_ours = -1;
        continue;
      }
      int dst = r.input ? r.pipe_ours : r.local;
      if (::write(dst, buf, static_cast<size_t>(n)) < 0 && r.input) {
        ::close(r.pipe_ours);
        r.pipe_ours = -1;
      }
    }
    if (p[0].revents) {
      auto done = client->receive();
      // Drain what the process wrote before it ended.
      for (auto& r : relays) {
        if (r.input || r.pipe_ours < 0) continue;
        ::fcntl(r.pipe_ours, F_SETFL, O_NONBLOCK);
        ssize_t n;
        while ((n = ::read(r.pipe_ours, buf, sizeof buf)) > 0) {
          if (::write(r.local, buf, static_cast<size_t>(n)) < 0) break;
        }
      }
      if (!done) {
        print_error(done.error());
        return kExitFailure;
      }
      return (*done).value("exit", 1);
    }
  }
}

// An interactive shell: the terminal goes raw here, kmd relays to the sandbox's pty and records
// the session in the sandbox's audit trail (unless --no-record); window size changes are
// forwarded.
int cmd_shell(const GlobalOptions& g, const std::string& ref, bool root, bool record) {
  auto client = KmdClient::connect(socket_path(g));
  if (!client) {
    print_error(client.error());
    return kExitFailure;
  }
  winsize ws{};
  bool tty = ::isatty(0) && ::ioctl(0, TIOCGWINSZ, &ws) == 0;
  const char* term = std::getenv("TERM");
  Json req{{"op", "shell"}, {"ref", ref}, {"root", root}, {"cols", tty ? ws.ws_col : 80}, {"rows", tty ? ws.ws_row : 24},
           {"term", term ? term : "xterm-256color"}, {"record", record}};
  termios saved{};
  if (tty) {
    ::tcgetattr(0, &saved);
    termios raw = saved;
    ::cfmakeraw(&raw);
    ::tcsetattr(0, TCSANOW, &raw);
  }
  auto restore = [&] {
    if (tty) ::tcsetattr(0, TCSANOW, &saved);
  };
  auto started = client->call(req, {0, 1});
  if (!started) {
    restore();
    print_error(started.error());
    return kExitFailure;
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGWINCH);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  int sfd = ::signalfd(-1, &mask, SFD_CLOEXEC);
  for (;;) {
    pollfd p[2] = {{client->fd(), POLLIN, 0}, {sfd, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) continue;
    if (p[1].revents & POLLIN) {
      signalfd_siginfo si{};
      if (::read(sfd, &si, sizeof si) == sizeof si && ::ioctl(0, TIOCGWINSZ, &ws) == 0) {
        (void)client->send(Json{{"op", "resize"}, {"cols", ws.ws_col}, {"rows", ws.ws_row}});
      }
    }
    if (p[0].revents) {
      auto done = client->receive();
      restore();
      if (!done) {
        print_error(done.error());
        return kExitFailure;
      }
      return (*done).value("exit", 1);
    }
  }
}

int cmd_simple(const GlobalOptions& g, const std::string& op, const std::string& ref, Json extra = Json::object()) {
  Json req = extra;
  req["op"] = op;
  req["ref"] = ref;
  return finish(call(g, req), g, [&](const Json& r) {
    const Json& s = r["sandbox"];
    std::string msg = s["id"].get<std::string>() + ": " + s["state"].get<std::string>();
    if (op == "lock" || op == "unlock") msg += s["locked"].get<bool>() ? " (locked)" : " (unlocked)";
    if (op == "extend") {
      msg += ", expires " + utc(s["expires_at"]);
      if (r.value("capped", false)) msg += " (capped by maxLifetime)";
    }
    std::printf("%s\n", msg.c_str());
  });
}

}  // namespace

void add_sandbox_commands(CLI::App& app, GlobalOptions& global, int* exit_code) {
  struct CreateOpts {
    std::string profile, alias, ttl, idle, compute, ai;
  };
  auto co = std::make_shared<CreateOpts>();
  CLI::App* create = app.add_subcommand("create", "Create a sandbox from a profile (file or built-in) and print its ID");
  create->add_option("profile", co->profile, "Profile file or built-in name")->required();
  create->add_option("--alias", co->alias, "A name to use instead of the ID");
  create->add_option("--ttl", co->ttl, "Override the profile's ttl (e.g. 2h)");
  create->add_option("--idle", co->idle, "Override the profile's idleTimeout");
  create->add_option("--compute", co->compute, "Compute budget in USD (replaces the profile's spec.budget.compute.maxSpendUSD)")
      ->type_name("USD");
  create->add_option("--ai", co->ai, "AI budget in USD (replaces the profile's spec.budget.ai.maxSpendUSD)")->type_name("USD");
  create->callback([&global, co, exit_code] {
    *exit_code = cmd_create(global, co->profile, co->alias, co->ttl, co->idle, co->compute, co->ai);
  });

  auto all = std::make_shared<bool>(false);
  CLI::App* list = app.add_subcommand("list", "List sandboxes");
  list->alias("ls");
  list->add_flag("--all", *all, "Include destroyed sandboxes");
  list->callback([&global, all, exit_code] { *exit_code = cmd_list(global, *all); });

  auto ref = std::make_shared<std::string>();
  CLI::App* status = app.add_subcommand("status", "Show a sandbox: state, timers, resources, events");
  status->add_option("ref", *ref, "ID, alias or number")->required();
  status->callback([&global, ref, exit_code] { *exit_code = cmd_status(global, *ref); });

  struct AuditOpts {
    std::string ref, kind;
    int64_t limit = 50;
  };
  auto ao = std::make_shared<AuditOpts>();
  CLI::App* audit = app.add_subcommand("audit", "Show a sandbox's commands and egress verdicts from its audit trail, newest last (see also km logs)");
  audit->add_option("ref", ao->ref, "ID, alias or number")->required();
  audit->add_option("--kind", ao->kind, "Only exec (commands), dns, connect, packet, http (inspected requests) or ai (metered calls) events")
      ->check(CLI::IsMember({"exec", "dns", "connect", "packet", "http", "ai"}));
  audit->add_option("-n,--limit", ao->limit, "How many of the newest events (default 50)")->check(CLI::Range(1, 100000));
  audit->callback([&global, ao, exit_code] { *exit_code = cmd_audit(global, ao->ref, ao->kind, ao->limit); });

  struct ExecOpts {
    std::string ref, cwd;
    std::vector<std::string> argv;
    bool root = false;
  };
  auto eo = std::make_shared<ExecOpts>();
  CLI::App* exec = app.add_subcommand("exec", "Run a command in a sandbox (km exec REF -- CMD ...)");
  exec->add_option("ref", eo->ref, "ID, alias or number")->required();
  exec->add_option("command", eo->argv, "The command and its arguments")->required();
  exec->add_flag("--root", eo->root, "Run as root inside (privileged profiles only)");
  exec->add_option("--cwd", eo->cwd, "Working directory inside the sandbox");
  exec->callback([&global, eo, exit_code] { *exit_code = cmd_exec(global, eo->ref, eo->argv, eo->root, eo->cwd); });

  auto cl = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* clone = app.add_subcommand("clone", "Create a sandbox from another's profile, with a copy of its workspace");
  clone->add_option("ref", cl->first, "ID, alias or number of the source")->required();
  clone->add_option("--alias", cl->second, "Alias of the new sandbox");
  clone->callback([&global, cl, exit_code] {
    Json req{{"op", "clone"}, {"ref", cl->first}};
    if (!cl->second.empty()) req["alias"] = cl->second;
    auto r = call(global, req);
    if (!r) {
      print_error(r.error());
      *exit_code = kExitFailure;
      return;
    }
    std::printf("%s\n", global.output == "json" ? (*r)["sandbox"].dump(2).c_str() : (*r)["sandbox"]["id"].get<std::string>().c_str());
    *exit_code = kExitOk;
  });

  struct ShellOpts {
    std::string ref;
    bool root = false, record = true;
  };
  auto so = std::make_shared<ShellOpts>();
  CLI::App* shell = app.add_subcommand("shell", "Open an interactive shell in a sandbox (recorded in its audit trail: km logs --type session)");
  shell->add_option("ref", so->ref, "ID, alias or number")->required();
  shell->add_flag("--root", so->root, "Root inside (privileged profiles only)");
  shell->add_flag("--record,!--no-record", so->record,
                  "Record what is typed and shown as session events (the default); --no-record keeps only the session's start and end");
  shell->callback([&global, so, exit_code] { *exit_code = cmd_shell(global, so->ref, so->root, so->record); });

  for (const char* op : {"stop", "pause", "resume", "lock", "unlock", "destroy"}) {
    auto r = std::make_shared<std::string>();
    std::string help = std::string(op) == "stop"      ? "Stop a sandbox (processes end, disk is kept)"
                       : std::string(op) == "pause"   ? "Freeze a sandbox's processes"
                       : std::string(op) == "resume"  ? "Thaw a paused sandbox, or restart a stopped one"
                       : std::string(op) == "lock"    ? "Lock a sandbox: it refuses stop, pause and destroy"
                       : std::string(op) == "unlock"  ? "Unlock a sandbox"
                                                      : "Destroy a sandbox (artifacts are collected first)";
    CLI::App* sub = app.add_subcommand(op, help);
    sub->add_option("ref", *r, "ID, alias or number")->required();
    std::string name = op;
    sub->callback([&global, r, name, exit_code] { *exit_code = cmd_simple(global, name, *r); });
  }
  auto er = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* ext = app.add_subcommand("extend", "Extend a sandbox's TTL (capped by maxLifetime)");
  ext->add_option("ref", er->first, "ID, alias or number")->required();
  ext->add_option("duration", er->second, "e.g. 2h")->required();
  ext->callback([&global, er, exit_code] {
    auto d = parse_duration(er->second);
    if (!d) {
      print_error("duration: " + d.error().message());
      *exit_code = kExitUsage;
      return;
    }
    *exit_code = cmd_simple(global, "extend", er->first, Json{{"seconds", d->seconds}});
  });
}

}  // namespace km::cli
