#include "km/daemon/lifecycle.h"

#include <gtest/gtest.h>

namespace km::daemon {
namespace {

using store::State;

store::Sandbox running(int64_t created, int64_t ttl, int64_t idle) {
  store::Sandbox s;
  s.state = State::kRunning;
  s.created_at = created;
  s.expires_at = ttl ? created + ttl : 0;
  s.idle_timeout = idle;
  s.last_activity = created;
  return s;
}

bool has(const std::vector<Due>& v, Due d) { return std::find(v.begin(), v.end(), d) != v.end(); }

TEST(Lifecycle, TtlWarnsThenExpires) {
  FakeClock clock(1000);
  auto s = running(1000, 3600, 0);
  EXPECT_TRUE(due(s, clock.now(), 0).empty());
  clock.advance(3600 - 301);
  EXPECT_TRUE(due(s, clock.now(), 0).empty());
  clock.advance(2);  // inside the 5-minute lead
  EXPECT_TRUE(has(due(s, clock.now(), 0), Due::kTtlWarning));
  s.ttl_warned = true;
  EXPECT_TRUE(due(s, clock.now(), 0).empty());  // one warning
  clock.advance(300);
  EXPECT_EQ(due(s, clock.now(), 0), std::vector<Due>{Due::kTtlExpired});
}

TEST(Lifecycle, ShortTtlWarnsATenthBefore) {
  auto s = running(0, 60, 0);
  EXPECT_TRUE(due(s, 53, 0).empty());
  EXPECT_TRUE(has(due(s, 54, 0), Due::kTtlWarning));
}

TEST(Lifecycle, TtlZeroNeverExpires) {
  auto s = running(0, 0, 0);
  EXPECT_TRUE(due(s, int64_t{1} << 40, 0).empty());
}

TEST(Lifecycle, IdleCountsFromLastActivityAndNotWhileASessionIsOpen) {
  auto s = running(0, 0, 600);
  EXPECT_TRUE(has(due(s, 600 - 60, 0), Due::kIdleWarning));
  EXPECT_TRUE(has(due(s, 600, 0), Due::kIdleExpired));
  EXPECT_TRUE(due(s, 600, 1).empty());  // an open km exec or shell
  s.last_activity = 500;
  EXPECT_TRUE(due(s, 600, 0).empty());
  EXPECT_TRUE(has(due(s, 1100, 0), Due::kIdleExpired));
}

TEST(Lifecycle, PausedAndStoppedAreNotIdleButStillExpire) {
  auto s = running(0, 100, 10);
  s.state = State::kPaused;
  EXPECT_EQ(due(s, 50, 0), std::vector<Due>{});
  EXPECT_EQ(due(s, 100, 0), std::vector<Due>{Due::kTtlExpired});
  s.state = State::kStopped;
  EXPECT_EQ(due(s, 100, 0), std::vector<Due>{Due::kTtlExpired});
  s.state = State::kFailed;
  EXPECT_TRUE(due(s, 100, 0).empty());
}

TEST(Lifecycle, ExtendFromLaterOfNowAndExpiryCappedByMaxLifetime) {
  auto s = running(0, 3600, 0);
  s.max_lifetime = 4 * 3600;
  auto e = extend(s, 100, 3600);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->expires_at, 7200);
  EXPECT_FALSE(e->capped);
  s.expires_at = 7200;
  e = extend(s, 8000, 3600);  // already past expiry: from now
  EXPECT_EQ(e->expires_at, 11600);
  s.expires_at = 11600;
  e = extend(s, 9000, 36000);
  EXPECT_EQ(e->expires_at, 4 * 3600);
  EXPECT_TRUE(e->capped);
  auto late = extend(s, 4 * 3600, 60);
  ASSERT_FALSE(late);
  EXPECT_NE(late.error().message().find("maxLifetime"), std::string::npos);
  EXPECT_FALSE(extend(s, 0, 0));
}

}  // namespace
}  // namespace km::daemon
