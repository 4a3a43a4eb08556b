#include "km/bpf/exec_audit.h"

#include <linux/types.h>

#include <gtest/gtest.h>

#include <cstring>

#include "km/bpf_abi/exec_event.h"

namespace km::bpf {
namespace {

km_exec_event raw(const char* args, size_t len) {
  km_exec_event e{};
  e.cgroup_id = 42;
  e.pid = 7;
  e.ppid = 1;
  e.uid = 1001000;
  std::memcpy(e.comm, "bash", 4);
  std::memcpy(e.filename, "/usr/bin/bash", 13);
  std::memcpy(e.args, args, len);
  e.args_len = static_cast<__u32>(len);
  return e;
}

TEST(ExecEvent, DecodesArgv) {
  auto r = raw("bash\0-c\0ls /tmp\0", 16);
  auto e = decode_exec_event(&r, sizeof r);
  ASSERT_TRUE(e) << e.error().to_string();
  EXPECT_EQ(e->argv, (std::vector<std::string>{"bash", "-c", "ls /tmp"}));
  EXPECT_EQ(e->filename, "/usr/bin/bash");
  EXPECT_EQ(e->comm, "bash");
  EXPECT_EQ(e->cgroup_id, 42u);
  EXPECT_FALSE(e->truncated);
}

TEST(ExecEvent, MarksTruncationAndRejectsBadSizes) {
  auto r = raw("a\0bc", 4);  // cut in the middle of the second argument
  auto e = decode_exec_event(&r, sizeof r);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->argv, (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(e->truncated);
  r.args_len = 100000;  // a lying length is clamped to the buffer
  EXPECT_TRUE(decode_exec_event(&r, sizeof r));
  EXPECT_FALSE(decode_exec_event(&r, sizeof r - 1));
}

}  // namespace
}  // namespace km::bpf
