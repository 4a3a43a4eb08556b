// The exec audit on a throwaway cgroup: commands run in a watched cgroup are recorded with
// their argv, however they are started; commands elsewhere are not.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "km/bpf/exec_audit.h"
#include "km/sys/cgroup.h"

namespace {

using km::bpf::ExecAudit;
using km::bpf::ExecEvent;

class ExecAuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "privileged test: needs root (BPF)";
    char tmpl[] = "/tmp/km-bpf-XXXXXX";
    pins_ = ::mkdtemp(tmpl);
    ASSERT_TRUE(km::bpf::ensure_bpffs(pins_));
    mounted_ = true;
    auto layout = km::sys::CgroupLayout::discover();
    ASSERT_TRUE(layout) << layout.error().to_string();
    layout->name = "km-exec-test-" + std::to_string(::getpid());
    cgroup_ = layout->v2_base();
    ASSERT_EQ(::mkdir(cgroup_.c_str(), 0755), 0) << cgroup_;
    auto id = km::bpf::cgroup_id(cgroup_);
    ASSERT_TRUE(id);
    cgid_ = *id;
  }
  void TearDown() override {
    audit_.reset();
    if (!cgroup_.empty()) ::rmdir(cgroup_.c_str());
    if (mounted_) {
      (void)ExecAudit::unpin(pins_);
      ::umount2(pins_.c_str(), MNT_DETACH);
    }
    if (!pins_.empty()) ::rmdir(pins_.c_str());
  }

  // Runs argv in a child placed in the test cgroup (or not); returns its pid once it exited.
  pid_t run(const std::vector<std::string>& argv, bool in_cgroup) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (in_cgroup) {
        int fd = ::open((cgroup_ + "/cgroup.procs").c_str(), O_WRONLY);
        if (fd < 0 || ::write(fd, "0", 1) != 1) _exit(120);
        ::close(fd);
      }
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
      ::execv(args[0], args.data());
      _exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << argv[0];
    return pid;
  }

  std::vector<ExecEvent> drain() {
    std::vector<ExecEvent> out;
    auto deliver = [&](const ExecEvent& e) { out.push_back(e); };
    for (int i = 0; i < 20; ++i) {
      auto n = audit_->poll(50, deliver);
      EXPECT_TRUE(n);
      if (n && *n == 0 && !out.empty()) break;
    }
    return out;
  }

  std::string pins_, cgroup_;
  uint64_t cgid_ = 0;
  bool mounted_ = false;
  std::unique_ptr<ExecAudit> audit_;
};

TEST_F(ExecAuditTest, RecordsCommandsOfWatchedCgroupsOnly) {
  auto a = ExecAudit::open(pins_);
  ASSERT_TRUE(a) << a.error().to_string();
  audit_ = std::move(*a);
  ASSERT_TRUE(audit_->watch(cgid_));
  pid_t watched = run({"/bin/sh", "-c", "cd /usr/share && /bin/echo from-the-sandbox one two; true"}, true);
  pid_t outside = run({"/bin/echo", "from-outside"}, false);
  auto events = drain();
  bool saw_sh = false, saw_echo = false;
  for (const auto& e : events) {
    EXPECT_EQ(e.cgroup_id, cgid_);
    EXPECT_NE(e.pid, static_cast<uint32_t>(outside));
    for (const auto& arg : e.argv) EXPECT_NE(arg, "from-outside");
    if (e.pid == static_cast<uint32_t>(watched) && e.argv.size() == 3 && e.argv[0] == "/bin/sh") saw_sh = true;
    if (e.argv == std::vector<std::string>{"/bin/echo", "from-the-sandbox", "one", "two"}) {
      saw_echo = true;
      EXPECT_EQ(e.ppid, static_cast<uint32_t>(watched));  // started by the shell
      EXPECT_EQ(e.filename, "/bin/echo");
      EXPECT_EQ(e.cwd, "/usr/share");  // the working directory at exec
    }
  }
  EXPECT_TRUE(saw_sh);
  EXPECT_TRUE(saw_echo);
  EXPECT_EQ(audit_->lost(), 0u);

  // Unwatched: nothing more.
  ASSERT_TRUE(audit_->unwatch(cgid_));
  run({"/bin/sh", "-c", "/bin/echo after-unwatch"}, true);
  for (const auto& e : drain()) {
    for (const auto& arg : e.argv) EXPECT_NE(arg, "after-unwatch");
  }
}

TEST_F(ExecAuditTest, StaysAttachedAndKeepsEventsAcrossAReopen) {
  auto a = ExecAudit::open(pins_);
  ASSERT_TRUE(a) << a.error().to_string();
  ASSERT_TRUE((*a)->watch(cgid_));
  a->reset();  // kmd gone: the pinned program keeps recording into the ring buffer
  run({"/bin/sh", "-c", "/bin/echo while-kmd-was-down"}, true);
  auto b = ExecAudit::open(pins_);
  ASSERT_TRUE(b) << b.error().to_string();
  audit_ = std::move(*b);
  bool found = false;
  for (const auto& e : drain()) found = found || (e.argv.size() == 2 && e.argv[1] == "while-kmd-was-down");
  EXPECT_TRUE(found);
}

TEST_F(ExecAuditTest, LongArgumentListsAreBoundedAndMarked) {
  auto a = ExecAudit::open(pins_);
  ASSERT_TRUE(a) << a.error().to_string();
  audit_ = std::move(*a);
  ASSERT_TRUE(audit_->watch(cgid_));
  std::string big(2000, 'x');
  run({"/bin/echo", big}, true);
  bool found = false;
  for (const auto& e : drain()) {
    if (e.filename != "/bin/echo") continue;
    found = true;
    EXPECT_TRUE(e.truncated);
    ASSERT_EQ(e.argv.size(), 2u);
    EXPECT_LT(e.argv[1].size(), big.size());
  }
  EXPECT_TRUE(found);
}

}  // namespace
