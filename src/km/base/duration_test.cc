#include "km/base/duration.h"

#include <gtest/gtest.h>

namespace km {
namespace {

int64_t secs(std::string_view s) {
  auto r = parse_duration(s);
  EXPECT_TRUE(r) << s << ": " << (r ? "" : r.error().message());
  return r ? r->seconds : -1;
}

TEST(Duration, AcceptsDocumentedForms) {
  EXPECT_EQ(secs("0"), 0);
  EXPECT_EQ(secs("30s"), 30);
  EXPECT_EQ(secs("45m"), 45 * 60);
  EXPECT_EQ(secs("8h"), 8 * 3600);
  EXPECT_EQ(secs("2d"), 2 * 86400);
  EXPECT_EQ(secs("4h30m"), 4 * 3600 + 30 * 60);
  EXPECT_EQ(secs("1d2h3m4s"), 86400 + 7200 + 180 + 4);
  EXPECT_EQ(secs("0s"), 0);
  EXPECT_EQ(secs("90m"), 5400);
}

TEST(Duration, RejectsWithUsefulMessages) {
  auto r = parse_duration("90");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("missing unit"), std::string::npos);
  EXPECT_NE(r.error().message().find("90s"), std::string::npos);

  for (const char* bad : {"", "h", "1x", "30m4h", "1h1h", "1.5h", "-1h", " 1h", "1h ", "1H",
                          "1hr", "4h30", "99999999999999999999d", "36600d"}) {
    EXPECT_FALSE(parse_duration(bad)) << bad;
  }
  auto order = parse_duration("30m4h");
  EXPECT_NE(order.error().message().find("largest first"), std::string::npos);
}

TEST(Duration, CapIsOneHundredYears) {
  EXPECT_TRUE(parse_duration("36500d"));
  EXPECT_FALSE(parse_duration("36501d"));
}

TEST(Duration, FormatIsCanonicalAndRoundTrips) {
  EXPECT_EQ(format_duration({0}), "0");
  EXPECT_EQ(format_duration({16200}), "4h30m");
  EXPECT_EQ(format_duration({172800}), "2d");
  EXPECT_EQ(format_duration({90061}), "1d1h1m1s");
  for (int64_t s : {1, 59, 60, 61, 3599, 3600, 86399, 86400, 1000000}) {
    EXPECT_EQ(secs(format_duration({s})), s);
  }
}

}  // namespace
}  // namespace km
