// kmd and km together, as a user runs them: lifecycle through the CLI, TTL expiry, kmd
// restarts that leave sandboxes running, and crash safety with kill -9 at random points of
// create and destroy, with and without an enforcer.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <random>
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

class Kmd : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "e2e test: kmd needs root";
    char tmpl[] = "/tmp/km-e2e-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    ::chmod(root_.c_str(), 0711);
    socket_ = root_ + "/run/kmd.sock";
    cgroup_ = "km-e2e-" + std::to_string(::getpid());
    // Enforcers need an upstream resolver configured; these tests never send a query.
    std::ofstream(root_ + "/kmd.yaml") << "upstreamDNS: [\"198.51.100.53\"]\n";
    start_kmd();
  }
  void TearDown() override {
    if (root_.empty()) return;
    if (pid_ > 0) {
      auto l = km({"-o", "json", "list"});
      if (l.status == 0) {
        for (const auto& s : Json::parse(l.out)) km({"unlock", s["id"]}), km({"destroy", s["id"]});
      }
      stop_kmd(SIGTERM);
    }
    // kmd pinned its exec audit in a bpffs under its runtime directory.
    std::system(("umount -l '" + root_ + "/run/bpf' 2>/dev/null; rm -rf '" + root_ + "'").c_str());
    // Every hierarchy kmd used (hybrid hosts have v1 ones for cpu, memory and pids too).
    // Every hierarchy; a cgroup whose last tasks are still being reaped is busy for a moment.
    std::system(("for i in $(seq 50); do rmdir /sys/fs/cgroup/*/" + cgroup_ + " 2>/dev/null; "
                 "ls -d /sys/fs/cgroup/*/" + cgroup_ + " >/dev/null 2>&1 || break; sleep 0.1; done").c_str());
  }

  void start_kmd() {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::string log = root_ + "/kmd.log";
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execl(KMD_BIN, "kmd", "--foreground", "--config", (root_ + "/kmd.yaml").c_str(), "--state-dir", (root_ + "/state").c_str(), "--runtime-dir",
              (root_ + "/run").c_str(), "--group", "", "--cgroup-name", cgroup_.c_str(), nullptr);
      _exit(127);
    }
    for (int i = 0; i < 500; ++i) {  // wait (bounded) for the socket
      if (::access(socket_.c_str(), F_OK) == 0 && km({"list"}).status == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "kmd did not come up: " << km::read_file(root_ + "/kmd.log", 1 << 20).value_or("");
  }
  void stop_kmd(int sig) {
    ::kill(pid_, sig);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  RunResult km(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), KM_BIN);
    return run(args, {{"KM_SOCKET", socket_}}, input);
  }
  Json list() {
    auto r = km({"-o", "json", "list", "--all"});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.status == 0 ? Json::parse(r.out) : Json::array();
  }
  std::string create(const std::vector<std::string>& extra = {}, const std::string& profile = "quickstart") {
    std::vector<std::string> args = {"create", profile};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = km(args);
    EXPECT_EQ(r.status, 0) << r.err;
    std::string id = r.out;
    while (!id.empty() && id.back() == '\n') id.pop_back();
    return id;
  }
  std::string cgroup_dir() const { return "/sys/fs/cgroup/unified/" + cgroup_; }
  // Live km-enforcer processes of this kmd: pid -> sandbox ID (from their config path).
  std::map<pid_t, std::string> enforcers() const {
    std::map<pid_t, std::string> out;
    std::string prefix = root_ + "/run/sandboxes/";
    auto ls = run({"/bin/ls", "/proc"});
    std::istringstream in(ls.out);
    std::string entry;
    while (in >> entry) {
      if (entry.find_first_not_of("0123456789") != std::string::npos) continue;
      auto cmd = km::read_file("/proc/" + entry + "/cmdline", 1 << 16);
      if (!cmd || cmd->find("km-enforcer") != 0) continue;
      auto at = cmd->find(prefix);
      if (at == std::string::npos) continue;
      std::string rest = cmd->substr(at + prefix.size());
      out[std::stoi(entry)] = rest.substr(0, rest.find('/'));
    }
    return out;
  }

  std::string root_, socket_, cgroup_;
  pid_t pid_ = -1;
};

TEST_F(Kmd, CreateExecAndDestroyThroughTheCli) {
  std::string id = create({"--alias", "demo"});
  ASSERT_EQ(id.substr(0, 3), "qs-");
  auto r = km({"exec", "demo", "--", "sh", "-c", "cat; echo to-err >&2; exit 42"}, "from stdin\n");
  EXPECT_EQ(r.status, 42);
  EXPECT_EQ(r.out, "from stdin\n");
  EXPECT_EQ(r.err, "to-err\n");
  auto by_number = km({"exec", "1", "--", "hostname"});
  EXPECT_EQ(by_number.out, id + "\n");
  auto missing = km({"exec", "demo", "--", "no-such-command"});
  EXPECT_EQ(missing.status, 127);
  EXPECT_NE(missing.err.find("no-such-command"), std::string::npos);
  EXPECT_EQ(km({"destroy", "demo"}).status, 0);
  EXPECT_EQ(list()[0]["state"], "destroyed");
  EXPECT_NE(km({"exec", "demo", "--", "true"}).status, 0);
}

TEST_F(Kmd, ShellRunsInAPtyAndIsRecorded) {
  std::string id = create();
  auto r = km({"shell", id}, "tty; echo shell-says-$((6*7)); exit 4\n");
  EXPECT_EQ(r.status, 4) << r.err;
  EXPECT_NE(r.out.find("/dev/pts/"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("shell-says-42"), std::string::npos) << r.out;
  auto st = km({"-o", "json", "status", id});
  auto events = Json::parse(st.out)["events"];
  std::string session;
  for (const auto& e : events) {
    if (e["type"] == "shell-ended") session = e["detail"]["session"];
  }
  ASSERT_FALSE(session.empty()) << st.out;
  // The transcript is in the sandbox's audit trail, as session events (recorded by default).
  auto logs = km({"-o", "json", "logs", id, "--type", "session"});
  EXPECT_EQ(logs.status, 0) << logs.err;
  EXPECT_NE(logs.out.find("shell-says-42"), std::string::npos) << logs.out;
  EXPECT_NE(logs.out.find(session), std::string::npos) << logs.out;
  // --no-record keeps the session's start and end only.
  auto quiet = km({"shell", "--no-record", id}, "echo unrecorded-$((6*7)); exit 0\n");
  EXPECT_EQ(quiet.status, 0) << quiet.err;
  EXPECT_NE(quiet.out.find("unrecorded-42"), std::string::npos);
  auto after = km({"-o", "json", "logs", id, "--type", "session"});
  EXPECT_EQ(after.out.find("unrecorded-42"), std::string::npos) << after.out;
  EXPECT_NE(after.out.find("\"recorded\":false"), std::string::npos) << after.out;
}

TEST_F(Kmd, CloneCopiesTheWorkspaceOwnedByTheClone) {
  std::string id = create({"--alias", "src"});
  ASSERT_EQ(km({"exec", "src", "--", "sh", "-c", "mkdir -p /workspace/d && echo data > /workspace/d/f && ln -s d/f /workspace/link"}).status, 0);
  auto c = km({"clone", "src", "--alias", "copy"});
  ASSERT_EQ(c.status, 0) << c.err;
  auto r = km({"exec", "copy", "--", "sh", "-c", "cat /workspace/link; stat -c %U /workspace/d/f; echo more >> /workspace/d/f"});
  EXPECT_EQ(r.out, "data\nsandbox\n") << r.err;
  EXPECT_EQ(r.status, 0);
  // The source is untouched and running again.
  auto s = km({"exec", "src", "--", "cat", "/workspace/d/f"});
  EXPECT_EQ(s.out, "data\n");
  auto st = km({"-o", "json", "status", "copy"});
  EXPECT_EQ(Json::parse(st.out)["cloned_from"], id);
}

TEST_F(Kmd, LockedSandboxRefusesStopPauseDestroy) {
  std::string id = create();
  ASSERT_EQ(km({"lock", id}).status, 0);
  for (const char* op : {"stop", "pause", "destroy"}) {
    auto r = km({op, id});
    EXPECT_EQ(r.status, 1) << op;
    EXPECT_NE(r.err.find("locked"), std::string::npos) << r.err;
  }
  ASSERT_EQ(km({"unlock", id}).status, 0);
  EXPECT_EQ(km({"pause", id}).status, 0);
  EXPECT_NE(km({"exec", id, "--", "true"}).status, 0);
  EXPECT_EQ(km({"resume", id}).status, 0);
  EXPECT_EQ(km({"exec", id, "--", "true"}).status, 0);
}

TEST_F(Kmd, StopKeepsTheWorkspaceAndResumeRestarts) {
  std::string id = create();
  ASSERT_EQ(km({"exec", id, "--", "sh", "-c", "echo kept > /workspace/file"}).status, 0);
  ASSERT_EQ(km({"stop", id}).status, 0);
  ASSERT_EQ(km({"resume", id}).status, 0);
  auto r = km({"exec", id, "--", "cat", "/workspace/file"});
  EXPECT_EQ(r.out, "kept\n");
}

TEST_F(Kmd, TtlExpiryAppliesTheTeardownPolicy) {
  std::string id = create({"--ttl", "2s", "--idle", "0"});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::string state;
  while (std::chrono::steady_clock::now() < deadline) {
    state = list()[0]["state"];
    if (state == "destroyed") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(state, "destroyed");
  auto st = km({"status", id});
  EXPECT_NE(st.out.find("ttl expired"), std::string::npos) << st.out;
}

TEST_F(Kmd, SandboxesKeepRunningWhileKmdIsDownAndAfterRestart) {
  std::string id = create();
  ASSERT_EQ(km({"exec", id, "--", "sh", "-c", "echo before > /workspace/f"}).status, 0);
  stop_kmd(SIGKILL);
  auto down = km({"list"});
  EXPECT_EQ(down.status, 1);
  EXPECT_NE(down.err.find("cannot reach kmd"), std::string::npos);
  // The sandbox's processes are still there.
  auto procs = km::read_file(cgroup_dir() + "/" + id + "/cgroup.procs", 1 << 16);
  ASSERT_TRUE(procs);
  EXPECT_FALSE(procs->empty());
  start_kmd();
  auto r = km({"exec", id, "--", "cat", "/workspace/f"});
  EXPECT_EQ(r.out, "before\n") << r.err;
  EXPECT_EQ(list()[0]["state"], "running");
}

TEST_F(Kmd, KillNineAtRandomPointsLeavesNoOrphans) {
  std::mt19937 rng(12345);
  for (int round = 0; round < 30; ++round) {
    // A create (two rounds in three) or a destroy in flight, and kmd killed somewhere inside
    // it. Odd rounds use a profile with egress, so an enforcer is part of what is made.
    bool destroy = round % 3 == 2;
    const char* profile = round % 2 ? "restricted-dev" : "quickstart";
    std::string victim = destroy ? create({}, profile) : "";
    pid_t client = ::fork();
    if (client == 0) {
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      ::setenv("KM_SOCKET", socket_.c_str(), 1);
      if (destroy) {
        ::execl(KM_BIN, "km", "destroy", victim.c_str(), nullptr);
      } else {
        ::execl(KM_BIN, "km", "create", profile, nullptr);
      }
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, destroy ? 20000 : 80000)(rng)));
    stop_kmd(SIGKILL);
    ::waitpid(client, nullptr, 0);
    start_kmd();
    // Invariants after the restart: no half-made sandbox, nothing the store does not know.
    std::set<std::string> running;
    for (const auto& s : list()) {
      std::string state = s["state"];
      EXPECT_TRUE(state == "running" || state == "failed" || state == "destroyed") << state;
      if (state == "running") running.insert(s["id"]);
    }
    for (const std::string& dir : {cgroup_dir(), root_ + "/run/sandboxes", root_ + "/state/sandboxes"}) {
      auto ls = run({"/bin/ls", dir});
      std::istringstream in(ls.out);
      std::string id;
      while (in >> id) {
        if (dir == cgroup_dir() && id.rfind("cgroup.", 0) == 0) continue;
        if (id.find('.') != std::string::npos) continue;
        bool known = running.count(id) > 0;
        if (!known) {
          // Failed sandboxes keep their disk (for inspection) but nothing that runs.
          for (const auto& s : list()) known = known || (s["id"] == id && s["state"] == "failed" && dir == root_ + "/state/sandboxes");
        }
        EXPECT_TRUE(known) << "orphan " << dir << "/" << id << " after round " << round;
      }
    }
    // Every enforcer belongs to a running sandbox, and every running sandbox with egress has one.
    auto enf = enforcers();
    for (const auto& [pid, id] : enf) EXPECT_TRUE(running.count(id)) << "orphan enforcer " << pid << " of " << id << " after round " << round;
    for (const auto& s : list()) {
      if (s["state"] != "running" || s["profile"] != "restricted-dev") continue;
      bool has = false;
      for (const auto& [pid, id] : enf) has = has || id == s["id"];
      EXPECT_TRUE(has) << "no enforcer for " << s["id"] << " after round " << round;
    }
  }
}

TEST_F(Kmd, LargeListingsArriveWhole) {
  // 3,000 stopped sandboxes written into the store while kmd is down: a listing larger than
  // what kmd sends inline (it comes in a memory file).
  stop_kmd(SIGTERM);
  std::string py =
      "import sqlite3, time\n"
      "db = sqlite3.connect('" + root_ + "/state/km.db'); now = int(time.time())\n"
      "rows = [('sb-%08x' % i, None, i + 1, i + 100000, 'quickstart', 'x', 'stopped', 'tab\\there', now, 0, 0, 0, 'destroy', 0, now, 0, 0, 0, 0, '') for i in range(3000)]\n"
      "db.executemany('INSERT INTO sandboxes (id, alias, number, slot, profile_name, profile_yaml, state, reason, created_at, expires_at, "
      "idle_timeout, max_lifetime, teardown_policy, locked, last_activity, ttl_warned, idle_warned, pid, pid_start, cloned_from) "
      "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)', rows)\n"
      "db.commit()\n";
  ASSERT_EQ(run({"/usr/bin/python3", "-c", py}).status, 0);
  start_kmd();
  auto text = km({"list"});
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_EQ(std::count(text.out.begin(), text.out.end(), '\n'), 3001);
  auto json = Json::parse(km({"-o", "json", "list"}).out, nullptr, false);
  ASSERT_TRUE(json.is_array());
  ASSERT_EQ(json.size(), 3000u);
  EXPECT_EQ(json[2999]["id"], "sb-00000bb7");
  EXPECT_EQ(json[2999]["number"], 3000);
  EXPECT_EQ(json[0]["reason"], "tab\there");  // escaped and restored
  EXPECT_EQ(json[0]["locked"], false);
  // Take the records out again (they own nothing), so tear-down need not destroy 3,000.
  stop_kmd(SIGTERM);
  ASSERT_EQ(run({"/usr/bin/python3", "-c",
                 "import sqlite3\ndb = sqlite3.connect('" + root_ + "/state/km.db')\n"
                 "db.execute(\"DELETE FROM sandboxes WHERE id LIKE 'sb-%'\"); db.commit()\n"})
                .status,
            0);
  start_kmd();
}

TEST_F(Kmd, OnlyRootOrTheGroupMayUseKmd) {
  auto r = run({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", KM_BIN, "list"}, {{"KM_SOCKET", socket_}});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(r.err.find("Permission denied") != std::string::npos || r.err.find("permission denied") != std::string::npos) << r.err;
}

TEST_F(Kmd, EveryCommandIsRecordedHoweverItIsStarted) {
  std::string id = create();
  ASSERT_EQ(km({"exec", id, "--", "sh", "-c", "ls /workspace >/dev/null; bash -c 'echo hi-from-bash' >/dev/null"}).status, 0);
  ASSERT_EQ(km({"exec", id, "--", "sh", "-c", "mkdir -p /workspace/a/b && cd /workspace/a/b && true marker-cwd"}).status, 0);
  auto commands = [&] {
    std::vector<std::vector<std::string>> out;
    auto r = km({"-o", "json", "audit", id, "--kind", "exec", "-n", "1000"});
    EXPECT_EQ(r.status, 0) << r.err;
    for (const auto& e : Json::parse(r.out, nullptr, false)) {
      EXPECT_EQ(e["kind"], "exec");
      EXPECT_EQ(e["sandbox"], id);
      out.push_back(e["argv"].get<std::vector<std::string>>());
      if (e["argv"][0] == "ls") {
        EXPECT_EQ(e["uid"], 1000);  // the sandbox user, as seen inside
        EXPECT_EQ(e["cwd"], "/workspace");  // as the sandbox sees it, not the host's path
      }
      if (e["argv"].size() == 3 && e["argv"][2].get<std::string>().find("marker-cwd") != std::string::npos) {
        EXPECT_EQ(e["cwd"], "/workspace");
      }
    }
    return out;
  };
  auto has = [](const std::vector<std::vector<std::string>>& all, const std::vector<std::string>& argv) {
    return std::find(all.begin(), all.end(), argv) != all.end();
  };
  // The reader is asynchronous: wait (bounded) for the records.
  std::vector<std::vector<std::string>> seen;
  for (int i = 0; i < 100 && !has(seen, {"bash", "-c", "echo hi-from-bash"}); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    seen = commands();
  }
  EXPECT_TRUE(has(seen, {"sh", "-c", "ls /workspace >/dev/null; bash -c 'echo hi-from-bash' >/dev/null"}));
  EXPECT_TRUE(has(seen, {"ls", "/workspace"}));
  EXPECT_TRUE(has(seen, {"bash", "-c", "echo hi-from-bash"}));
  // After a kmd restart, the sandbox's commands are still recorded.
  stop_kmd(SIGKILL);
  start_kmd();
  ASSERT_EQ(km({"exec", id, "--", "sh", "-c", "true after-restart"}).status, 0);
  for (int i = 0; i < 100 && !has(seen, {"sh", "-c", "true after-restart"}); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    seen = commands();
  }
  EXPECT_TRUE(has(seen, {"sh", "-c", "true after-restart"}));
  auto text = km({"audit", id, "--kind", "exec"});
  EXPECT_NE(text.out.find("bash -c echo hi-from-bash"), std::string::npos) << text.out;
}

TEST_F(Kmd, KernelEnforcementRefusesConnectionsAtConnect) {
  std::ofstream(root_ + "/ebpf.yaml") << "apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\n"
                                         "metadata: {name: k, prefix: k}\nextends: quickstart\n"
                                         "spec:\n  network:\n    enforcement: ebpf\n"
                                         "    egress: {allowedDNSSuffixes: [.allowed.test]}\n";
  auto c = km({"create", root_ + "/ebpf.yaml"});
  ASSERT_EQ(c.status, 0) << c.err;
  std::string id = c.out.substr(0, c.out.find('\n'));
  // No packet leaves: the cgroup program refuses the connect() itself.
  auto r = km({"exec", id, "--", "python3", "-c",
               "import socket\ntry:\n  socket.create_connection(('203.0.113.99', 80), 2)\nexcept PermissionError:\n  print('EPERM')"});
  EXPECT_EQ(r.out, "EPERM\n") << r.err;
  std::string pins = root_ + "/run/bpf/" + id;
  EXPECT_EQ(::access((pins + "/connect4").c_str(), F_OK), 0);
  EXPECT_EQ(km({"destroy", id}).status, 0);
  EXPECT_NE(::access(pins.c_str(), F_OK), 0);  // unpinned with the sandbox
}

TEST_F(Kmd, ProfilesWithEgressGetAnEnforcerThatGoesWithThem) {
  std::string id = create({}, "restricted-dev");
  ASSERT_FALSE(id.empty());
  auto pids = enforcers();
  ASSERT_EQ(pids.size(), 1u);
  EXPECT_EQ(pids.begin()->second, id);
  auto r = km({"exec", id, "--", "sh", "-c", "cat /etc/resolv.conf; echo $HTTPS_PROXY"});
  EXPECT_NE(r.out.find("nameserver 10.88."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(":3128"), std::string::npos) << r.out;
  EXPECT_EQ(km({"destroy", id}).status, 0);
  EXPECT_TRUE(enforcers().empty());
}

// Events of `type` in a sandbox's record (km status -o json).
std::vector<Json> events_of(const Json& status, const std::string& type) {
  std::vector<Json> out;
  for (const auto& e : status["events"]) {
    if (e["type"] == type) out.push_back(e["detail"]);
  }
  return out;
}

TEST_F(Kmd, ComputeBudgetFreezesTheSandboxAtItsCeilingAndATopUpThawsIt) {
  // $18 per running hour is 5,000 µ$ a second: the $0.02 ceiling is 4 s of running time, the
  // warning (at half) 2 s.
  std::ofstream(root_ + "/budget.yaml") << "apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\n"
                                           "metadata: {name: b, prefix: b}\nextends: quickstart\n"
                                           "spec:\n  budget:\n    compute: {maxSpendUSD: 0.02, ratePerHourUSD: 18}\n"
                                           "    warningThreshold: 0.5\n";
  auto c = km({"create", root_ + "/budget.yaml"});
  ASSERT_EQ(c.status, 0) << c.err;
  std::string id = c.out.substr(0, c.out.find('\n'));
  // A process that counts, as long as it is allowed to run.
  ASSERT_EQ(km({"exec", id, "--", "sh", "-c",
                "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /workspace/n.tmp; mv /workspace/n.tmp /workspace/n; "
                "sleep 0.05; done' </dev/null >/dev/null 2>&1 &"})
                .status,
            0);
  std::string counter_path = root_ + "/state/sandboxes/" + id + "/workspace/n";
  auto counter = [&] { return std::atoll(km::read_file(counter_path, 64).value_or("0").c_str()); };
  auto status = [&] { return Json::parse(km({"-o", "json", "status", id}).out, nullptr, false); };
  auto wait_for = [&](const std::function<bool(const Json&)>& done) {
    Json st;
    for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30); std::chrono::steady_clock::now() < deadline;) {
      st = status();
      if (st.is_object() && done(st)) return st;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "condition not reached; last status: " << st.dump();
    return st;
  };
  Json st = wait_for([](const Json& s) { return s["state"] == "paused"; });
  EXPECT_EQ(st["reason"], "compute budget exhausted");
  // Frozen: the cgroup says so, and the counter stops.
  auto events = km::read_file(cgroup_dir() + "/" + id + "/cgroup.events", 4096).value_or("");
  EXPECT_NE(events.find("frozen 1"), std::string::npos) << events;
  int64_t at_freeze = counter();
  EXPECT_GT(at_freeze, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // an observation window, not a wait
  EXPECT_EQ(counter(), at_freeze);
  // One warning and one exhausted event, in that order, with the figures.
  st = status();
  auto warnings = events_of(st, "budget-warning"), exhausted = events_of(st, "budget-exhausted");
  ASSERT_EQ(warnings.size(), 1u) << st.dump();
  ASSERT_EQ(exhausted.size(), 1u) << st.dump();
  EXPECT_EQ(warnings[0]["pool"], "compute");
  EXPECT_EQ(warnings[0]["limit"], 20000);
  EXPECT_GE(warnings[0]["spent"].get<int64_t>(), 10000);
  EXPECT_EQ(exhausted[0]["pool"], "compute");
  EXPECT_EQ(exhausted[0]["limit_usd"], "0.020000");
  EXPECT_EQ(events_of(st, "paused").size(), 1u);
  // Caught within a tick (a second, 5,000 µ$) of the ceiling, and the spend stands still while frozen.
  auto show = km({"-o", "json", "budget", "show", id});
  ASSERT_EQ(show.status, 0) << show.err;
  Json b = Json::parse(show.out);
  int64_t spent = b["compute"]["spent_micros"];
  EXPECT_GE(spent, 20000);
  EXPECT_LE(spent, 20000 + 2 * 5000);
  EXPECT_EQ(b["compute"]["limit_micros"], 20000);
  EXPECT_EQ(b["compute"]["rate_micros_per_hour"], 18000000);
  EXPECT_EQ(b["compute"]["rate_usd_per_hour"], "18.000000");
  EXPECT_EQ(b["compute"]["exhausted"], true);
  EXPECT_EQ(b["ai"]["limit_micros"], 1000000);  // quickstart's, inherited
  EXPECT_EQ(b["epoch"], 0);
  EXPECT_EQ(Json::parse(km({"-o", "json", "budget", "show", id}).out)["compute"]["spent_micros"], spent);
  // km resume cannot thaw it while the budget is spent; the hint says what can.
  auto resume = km({"resume", id});
  EXPECT_EQ(resume.status, 1);
  EXPECT_NE(resume.err.find("compute budget"), std::string::npos) << resume.err;
  EXPECT_NE(resume.err.find("km budget add"), std::string::npos) << resume.err;
  // A top-up thaws it at once, and the counter moves again.
  auto add = km({"budget", "add", id, "--compute", "0.02"});
  ASSERT_EQ(add.status, 0) << add.err;
  EXPECT_NE(add.out.find("of $0.040000"), std::string::npos) << add.out;
  EXPECT_NE(add.out.find("resumed"), std::string::npos) << add.out;
  st = status();
  EXPECT_EQ(st["state"], "running");
  EXPECT_EQ(st["reason"], "");
  auto resumed = events_of(st, "resumed");
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0]["reason"], "compute budget raised");
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       counter() == at_freeze && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GT(counter(), at_freeze);
  // The warnings were re-armed: past half of the new $0.04 at once (a second warning), then the
  // new ceiling freezes it again.
  st = wait_for([](const Json& s) { return events_of(s, "budget-exhausted").size() == 2 && s["state"] == "paused"; });
  EXPECT_EQ(events_of(st, "budget-warning").size(), 2u);
  EXPECT_EQ(events_of(st, "paused").size(), 2u);
  b = Json::parse(km({"-o", "json", "budget", "show", id}).out);
  EXPECT_EQ(b["compute"]["limit_micros"], 40000);
  EXPECT_EQ(b["epoch"], 1);
  EXPECT_EQ(km({"destroy", id}).status, 0);
}

TEST_F(Kmd, AiBudgetIsInTheLedgerAndStatusShowsTheSpend) {
  std::ofstream(root_ + "/ai.yaml") << "apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\n"
                                       "metadata: {name: ai, prefix: ai}\nextends: quickstart\n"
                                       "spec:\n  budget:\n    ai: {maxSpendUSD: 2.5}\n    warningThreshold: 0.9\n";
  auto c = km({"create", root_ + "/ai.yaml"});
  ASSERT_EQ(c.status, 0) << c.err;
  std::string id = c.out.substr(0, c.out.find('\n'));
  // The ledger: the sandbox's own enforcer uid's (2,000,000,000 + its slot, not shared with any
  // other sandbox), with the profile's limits in it.
  std::string ledger = root_ + "/state/sandboxes/" + id + "/ledger/spend.db";
  struct stat st {};
  ASSERT_EQ(::stat(ledger.c_str(), &st), 0);
  EXPECT_GE(st.st_uid, 2'000'000'000u);
  EXPECT_EQ(st.st_gid, st.st_uid);
  const std::string owner = std::to_string(st.st_uid);
  auto sql = [&](const std::string& statement, const std::string& as = "") {
    const std::string& who = as.empty() ? owner : as;
    return run({"/usr/bin/setpriv", "--reuid=" + who, "--regid=" + who, "--clear-groups", "/usr/bin/python3", "-c",
                "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\n"
                "for q in sys.argv[2].split(';'):\n  for r in db.execute(q): print(*r)\ndb.commit()\n",
                ledger, statement});
  };
  auto limits = sql("SELECT ai_micros, compute_micros, warning_threshold FROM limits");
  EXPECT_EQ(limits.out, "2500000 1000000 0.9\n") << limits.err;
  auto text = km({"status", id});
  EXPECT_NE(text.out.find("ai spend       $0.000000 of $2.500000 (0.0%)"), std::string::npos) << text.out;
  // What the enforcer writes for a metered call (the enforcer's uid can): 96% of the ceiling.
  auto w = sql("INSERT INTO models VALUES ('claude-sonnet-4-5', 120000, 4000, 0, 0, 1, 2400000);"
               "INSERT INTO calls VALUES ('c1', 1700000000, 'anthropic', 'messages', 'claude-sonnet-4-5', 'exact', 200, 0,"
               " 120000, 4000, 0, 0, 2400000)");
  ASSERT_EQ(w.status, 0) << w.err;
  auto status = [&] { return Json::parse(km({"-o", "json", "status", id}).out, nullptr, false); };
  Json s;
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15); std::chrono::steady_clock::now() < deadline;) {
    s = status();
    if (!events_of(s, "budget-warning").empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto warnings = events_of(s, "budget-warning");
  ASSERT_EQ(warnings.size(), 1u) << s.dump();
  EXPECT_EQ(warnings[0]["pool"], "ai");
  EXPECT_EQ(warnings[0]["spent"], 2400000);
  EXPECT_EQ(s["budget"]["ai"]["percent"], 96.0);
  EXPECT_EQ(s["budget"]["models"][0]["model"], "claude-sonnet-4-5");
  EXPECT_EQ(s["budget"]["models"][0]["input_tokens"], 120000);
  text = km({"status", id});
  EXPECT_NE(text.out.find("ai spend       $2.400000 of $2.500000 (96.0%)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("claude-sonnet-4-5: 1 requests, 120.0k in, 4000 out, $2.400000"), std::string::npos) << text.out;
  // Past the ceiling: one budget-exhausted event; the sandbox keeps running (the enforcer
  // refuses AI requests; compute is another pool).
  ASSERT_EQ(sql("UPDATE models SET cost_micros = 2600000, requests = 2").status, 0);
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15); std::chrono::steady_clock::now() < deadline;) {
    s = status();
    if (!events_of(s, "budget-exhausted").empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(events_of(s, "budget-exhausted").size(), 1u) << s.dump();
  EXPECT_EQ(events_of(s, "budget-exhausted")[0]["pool"], "ai");
  EXPECT_EQ(s["state"], "running");
  // A top-up: the new limit is in the ledger at once.
  auto add = km({"-o", "json", "budget", "add", id, "--ai", "1.000001"});
  ASSERT_EQ(add.status, 0) << add.err;
  Json b = Json::parse(add.out);
  EXPECT_EQ(b["ai"]["limit_micros"], 3500001);
  EXPECT_EQ(b["ai"]["limit_usd"], "3.500001");
  EXPECT_EQ(b["resumed"], false);
  EXPECT_EQ(sql("SELECT ai_micros FROM limits").out, "3500001\n");
  auto show = km({"-o", "json", "budget", "show", id});
  b = Json::parse(show.out);
  ASSERT_EQ(b["calls"].size(), 1u);
  EXPECT_EQ(b["calls"][0]["id"], "c1");
  EXPECT_EQ(b["calls"][0]["cost_usd"], "2.400000");
  EXPECT_EQ(b["models"][0]["requests"], 2);
  text = km({"budget", "show", id});
  EXPECT_NE(text.out.find("claude-sonnet-4-5"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("$2.6000"), std::string::npos) << text.out;
  // km create's --ai and --compute replace the profile's ceilings, to the micro-dollar.
  auto c2 = km({"create", root_ + "/ai.yaml", "--ai", "0.1", "--compute", "$3.000007"});
  ASSERT_EQ(c2.status, 0) << c2.err;
  std::string id2 = c2.out.substr(0, c2.out.find('\n'));
  b = Json::parse(km({"-o", "json", "budget", "show", id2}).out);
  EXPECT_EQ(b["ai"]["limit_micros"], 100000);
  EXPECT_EQ(b["compute"]["limit_micros"], 3000007);
  auto bad = km({"create", root_ + "/ai.yaml", "--ai", "0.0000001"});
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("six decimal places"), std::string::npos) << bad.err;
  EXPECT_EQ(km({"budget", "add", id}).status, 2);  // nothing to add
  // A destroyed sandbox's spend can still be read, by ID.
  ASSERT_EQ(km({"destroy", id}).status, 0);
  show = km({"-o", "json", "budget", "show", id});
  ASSERT_EQ(show.status, 0) << show.err;
  EXPECT_EQ(Json::parse(show.out)["ai"]["spent_micros"], 2600000);
}

TEST_F(Kmd, ThePriceTableSetsComputeRatesAndABadOneStopsKmdNamingIt) {
  stop_kmd(SIGTERM);
  std::string config = km::read_file(root_ + "/kmd.yaml", 1 << 16).value_or("");
  auto kmd = [&] {
    return run({KMD_BIN, "--foreground", "--config", root_ + "/kmd.yaml", "--state-dir", root_ + "/state", "--runtime-dir",
                root_ + "/run", "--group", "", "--cgroup-name", cgroup_});
  };
  std::ofstream(root_ + "/bad-prices.json") << "{\"version\": 1, \"compute\": {\"local_vcpu_hour\": \"cheap\"}}\n";
  std::ofstream(root_ + "/kmd.yaml") << config << "priceTable: " << root_ << "/bad-prices.json\n";
  auto bad = kmd();
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("priceTable " + root_ + "/bad-prices.json"), std::string::npos) << bad.err;
  std::ofstream(root_ + "/kmd.yaml") << config << "priceTable: " << root_ << "/missing.json\n";
  EXPECT_NE(kmd().err.find(root_ + "/missing.json"), std::string::npos);
  // A valid override: $0.50 per vCPU-hour; quickstart names no rate of its own and has 1 vCPU.
  std::ofstream(root_ + "/prices.json") << "{\"version\": 1, \"compute\": {\"local_vcpu_hour\": 0.5}}\n";
  std::ofstream(root_ + "/kmd.yaml") << config << "priceTable: " << root_ << "/prices.json\n";
  start_kmd();
  std::string id = create();
  Json b = Json::parse(km({"-o", "json", "budget", "show", id}).out);
  EXPECT_EQ(b["compute"]["rate_micros_per_hour"], 500000);
  EXPECT_EQ(b["compute"]["limit_micros"], 1000000);  // quickstart's $1
}

}  // namespace
