// Real sandboxes, each isolation property checked from inside (issue: "Must show").
#include <sys/stat.h>

#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "fixture.h"

namespace km::testing {
namespace {

class Isolation : public SandboxTest {
 protected:
  void SetUp() override {
    SandboxTest::SetUp();
    if (IsSkipped()) return;
    auto st = start(profile_, &id_);
    ASSERT_TRUE(st) << st.error().to_string();
  }
  // Output of a shell snippet; fails the test if it cannot run.
  std::string out(const std::string& script, bool root = false) {
    auto r = sh(id_, script, root);
    EXPECT_TRUE(r) << (r ? "" : r.error().to_string());
    return r ? r->out : "";
  }
  int code(const std::string& script, bool root = false) {
    auto r = sh(id_, script, root);
    EXPECT_TRUE(r);
    return r ? r->status.code : -1;
  }
  std::string profile_ = kProfile;
  std::string id_;
};

TEST_F(Isolation, RunsAsTheUnprivilegedSandboxUserWithExitStatusPassedThrough) {
  auto r = sh(id_, "echo hello; id -un; id -u; echo oops >&2; exit 3");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->out, "hello\nsandbox\n1000\n");
  EXPECT_EQ(r->err, "oops\n");
  EXPECT_EQ(r->status.code, 3);
  EXPECT_EQ(out("grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status | awk '{print $2}' | sort -u"), "0000000000000000\n");
  EXPECT_EQ(out("grep NoNewPrivs /proc/self/status | awk '{print $2}'"), "1\n");
  EXPECT_EQ(out("grep Seccomp: /proc/self/status | awk '{print $2}'"), "2\n");
}

TEST_F(Isolation, OwnPidNamespaceHostnameAndWorkspace) {
  EXPECT_EQ(out("cat /proc/1/comm"), "km-sandbox-init\n");
  EXPECT_EQ(out("hostname"), id_ + "\n");
  EXPECT_EQ(out("pwd"), "/workspace\n");
  // Only the sandbox's own processes are visible.
  EXPECT_EQ(out("ls /proc | grep -c '^[0-9]'").size() < 4, true) << out("ls /proc | grep '^[0-9]'");
  EXPECT_EQ(out("echo $HOME; echo $KM_SANDBOX_ID"), "/home/sandbox\n" + id_ + "\n");
}

TEST_F(Isolation, RootInsideIsAnUnprivilegedUserOutside) {
  EXPECT_EQ(out("cat /proc/self/uid_map | awk '{print $1, $2, $3}'"), "0 1000000 65536\n");
  EXPECT_EQ(code("touch /workspace/made-inside"), 0);
  struct stat st {};
  ASSERT_EQ(::stat((root_ + "/state/sandboxes/" + id_ + "/workspace/made-inside").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000000u + 1000u);  // host sees the mapped range, never root
}

TEST_F(Isolation, HostPathsAreMasked) {
  std::ofstream(root_ + "/state/secret-of-the-host") << "secret";
  for (const char* p : {"/root", "/home", "/var/log"}) {
    EXPECT_EQ(out(std::string("ls -A ") + p + " | grep -v '^sandbox$' | wc -l"), "0\n") << p;
  }
  EXPECT_NE(code("cat " + root_ + "/state/secret-of-the-host"), 0);
  EXPECT_EQ(out("ls -A /run | wc -l"), "0\n");
}

TEST_F(Isolation, RootIsReadOnlyOutsideWritablePaths) {
  EXPECT_NE(code("touch /etc/x"), 0);
  EXPECT_NE(code("touch /usr/bin/x"), 0);
  EXPECT_NE(code("mkdir /opt/x"), 0);
  EXPECT_EQ(code("touch /workspace/a ~/b /tmp/c /var/tmp/d /dev/shm/e && echo ok > /dev/null"), 0);
  // The host root underneath is untouched by anything the sandbox does.
  EXPECT_NE(::access("/etc/x", F_OK), 0);
}

TEST_F(Isolation, ProtectedFilesAreReadOnly) {
  EXPECT_NE(code("echo evil >> ~/.bashrc"), 0);
  EXPECT_NE(code("echo evil >> ~/.profile"), 0);
  EXPECT_NE(code("rm -f ~/.bashrc"), 0);
  EXPECT_EQ(code("test -f ~/.bashrc"), 0);
}

TEST_F(Isolation, SyscallFilterAndNoEscapeFromNamespaces) {
  EXPECT_NE(code("unshare -n true"), 0);
  EXPECT_NE(code("unshare -U true"), 0);
  EXPECT_NE(code("unshare -m true"), 0);
  EXPECT_NE(code("mount -t tmpfs none /tmp"), 0);
  EXPECT_NE(code("python3 -c 'import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); sys.exit(0 if l.syscall(425,8,0)>=0 else 1)'"), 0)  // io_uring_setup
      ;
  EXPECT_NE(code("python3 -c 'import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); sys.exit(0 if l.syscall(250,0,0,0,0,0)>=0 else 1)'"), 0)  // keyctl
      ;
}

TEST_F(Isolation, NoNetworkEgressAndOnlyTheLink) {
  EXPECT_EQ(out("ls /sys/class/net | sort | tr '\\n' ' '"), "eth0 lo ");
  // Nothing is routed anywhere: an address off-link is unreachable, and the link peer has
  // nothing listening (the enforcer arrives with egress enforcement).
  EXPECT_NE(code("timeout 3 bash -c 'echo > /dev/tcp/198.51.100.1/80'"), 0);
  EXPECT_NE(code("timeout 3 bash -c 'echo > /dev/tcp/10.88.0.1/80'"), 0);
  EXPECT_EQ(out("cat /proc/sys/net/ipv6/conf/all/disable_ipv6"), "1\n");
}

class Privileged : public Isolation {
 protected:
  void SetUp() override {
    profile_ = std::string(kProfile) + "  execution: {privileged: true}\n";
    Isolation::SetUp();
  }
};

TEST_F(Privileged, RootInsideCannotTouchNetworkOrMounts) {
  EXPECT_EQ(out("id -u", true), "0\n");
  EXPECT_NE(code("ip link add dummy0 type dummy", true), 0);
  EXPECT_NE(code("ip route add default dev eth0", true), 0);
  EXPECT_NE(code("ip addr add 10.0.0.9/24 dev eth0", true), 0);
  EXPECT_NE(code("mount -t tmpfs none /mnt", true), 0);
  EXPECT_NE(code("umount /home", true), 0);
  // The host root underneath stays read-only (copy-up is not available to the agent:
  // Landlock), while root may write its own home.
  EXPECT_NE(code("touch /etc/evil", true), 0);
  EXPECT_EQ(code("touch /root/mine", true), 0);
}

class Limits : public SandboxTest {};

TEST_F(Limits, ForkBombIsContainedByThePidsLimit) {
  std::string id;
  // Ample memory, so that the pids limit (64) is what stops the bomb.
  std::string p = "apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\nmetadata: {name: t}\n"
                  "spec:\n  lifecycle: {ttl: 1h, idleTimeout: 30m}\n"
                  "  runtime: {resources: {cpus: 1, memory: 4Gi, pids: 64}}\n"
                  "  network: {egress: {allowedDNSSuffixes: [], allowedHosts: []}}\n";
  auto st = start(p, &id);
  ASSERT_TRUE(st) << st.error().to_string();
  auto bomb = sh(id, "timeout 3 bash -c 'b() { b | b & }; b' >/dev/null 2>&1; exit 0");
  ASSERT_TRUE(bomb);
  sys::SandboxCgroup cg = sys::SandboxCgroup::of(launcher_->cgroups(), id);
  // The bomb's first shell returns at once and the rest keeps forking in the background: wait
  // (bounded) until the kernel has refused a fork at the limit.
  auto hits = cg.pids_limit_hits();
  for (int i = 0; i < 500 && hits && *hits == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    hits = cg.pids_limit_hits();
  }
  ASSERT_TRUE(hits) << hits.error().to_string();
  EXPECT_GT(*hits, 0u);  // the kernel refused forks at the limit
  auto during = cg.pids();
  ASSERT_TRUE(during);
  EXPECT_LE(during->size(), 64u);
  // The host is unaffected and clears the bomb from outside; the sandbox's init survives.
  for (int i = 0; i < 250; ++i) {
    auto left = cg.pids();
    if (left && left->size() <= 1) break;
    for (pid_t q : left.value_or(std::vector<pid_t>{})) {
      if (q != st->pid) ::kill(q, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto after = sh(id, "echo survived");
  ASSERT_TRUE(after) << after.error().to_string();
  EXPECT_EQ(after->out, "survived\n");
}

TEST_F(Limits, MemoryHogIsKilledNotServed) {
  std::string id;
  auto st = start(kProfile, &id);  // memory.max 256Mi
  ASSERT_TRUE(st) << st.error().to_string();
  auto hog = sh(id, "python3 -c 'b = bytearray(1 << 30); print(len(b))'");
  ASSERT_TRUE(hog);
  EXPECT_NE(hog->status.code, 0);
  EXPECT_EQ(hog->out, "");
  auto alive = sh(id, "echo still-here");
  ASSERT_TRUE(alive);
  EXPECT_EQ(alive->out, "still-here\n");
}

TEST_F(Limits, InitCommandsRunAsRootIntoTheCopyOnWriteRoot) {
  std::string id;
  std::string p = std::string(kProfile) +
                  "  execution:\n    initCommands: [\"echo installed > /usr/local/bin/km-tool-marker\", \"mkdir -p /opt/tool\"]\n";
  auto st = start(p, &id);
  ASSERT_TRUE(st) << st.error().to_string();
  auto r = sh(id, "cat /usr/local/bin/km-tool-marker; test -d /opt/tool && echo dir");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->out, "installed\ndir\n");
  EXPECT_NE(::access("/usr/local/bin/km-tool-marker", F_OK), 0);  // not on the host
}

TEST_F(Limits, FailingInitCommandFailsCreationWithTheReason) {
  std::string id;
  auto st = start(std::string(kProfile) + "  execution:\n    initCommands: [\"exit 7\"]\n", &id);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().to_string().find("initCommands[0] (exit 7) exited with status 7"), std::string::npos)
      << st.error().to_string();
}

TEST_F(Limits, DenyReadHidesMatches) {
  std::string id;
  std::string p = std::string(kProfile) +
                  "  execution:\n    initCommands: [\"mkdir -p /workspace/app/cfg ~sandbox/.ssh && echo SECRET-ENV > /workspace/app/cfg/.env && echo id > /home/sandbox/.ssh/id_ed25519 && echo ok > /workspace/app/README\"]\n"
                  "  filesystem: {denyRead: [\"~/.ssh\", \"/workspace/**/.env\"]}\n";
  auto st = start(p, &id);
  ASSERT_TRUE(st) << st.error().to_string();
  auto r = sh(id, "cat /workspace/app/cfg/.env; echo rc=$?; ls ~/.ssh; echo rc=$?; cat /workspace/app/README");
  ASSERT_TRUE(r);
  EXPECT_NE(r->out.find("rc=1\n"), std::string::npos) << r->out;
  EXPECT_EQ(r->out.find("SECRET-ENV"), std::string::npos) << r->out;
  EXPECT_EQ(r->out.find("id_ed25519"), std::string::npos) << r->out;
  EXPECT_NE(r->out.find("ok\n"), std::string::npos) << r->out;
}

}  // namespace
}  // namespace km::testing
