#include "km/base/result.h"

#include <gtest/gtest.h>

namespace km {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0) return fail(ErrorCode::kInvalidArgument, "not positive");
  return v;
}

Result<int> doubled(int v) {
  KM_ASSIGN_OR_RETURN(int x, parse_positive(v));
  return x * 2;
}

Status check_both(int a, int b) {
  KM_TRY(parse_positive(a));
  KM_TRY(parse_positive(b));
  return ok();
}

TEST(Result, ValueAndError) {
  auto good = doubled(4);
  ASSERT_TRUE(good);
  EXPECT_EQ(*good, 8);
  auto bad = doubled(-1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad.value_or(7), 7);
}

TEST(Result, StatusPropagates) {
  EXPECT_TRUE(check_both(1, 2));
  auto s = check_both(1, 0);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message(), "not positive");
}

TEST(Error, ContextChainReadsOutermostFirst) {
  Error e = Error::from_errno("mkdir", EACCES);
  e.wrap("creating cgroup /sys/fs/cgroup/km/sb-1a2b3c4d");
  EXPECT_EQ(e.to_string(), "creating cgroup /sys/fs/cgroup/km/sb-1a2b3c4d: mkdir: Permission denied");
  EXPECT_EQ(e.code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(e.sys_errno(), EACCES);
  Error outer = std::move(e).wrap("creating sandbox sb-1a2b3c4d");
  EXPECT_EQ(outer.to_string().rfind("creating sandbox sb-1a2b3c4d: creating cgroup", 0), 0u);
}

TEST(Error, Hint) {
  Error e = Error(ErrorCode::kUnavailable, "no BTF").with_hint("install a kernel with BTF");
  EXPECT_EQ(e.hint(), "install a kernel with BTF");
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
  Result<int> r = fail(ErrorCode::kInternal, "x");
  EXPECT_DEATH((void)r.value(), "invariant broken");
}

}  // namespace
}  // namespace km
