#include "km/base/strings.h"

#include <gtest/gtest.h>

namespace km {
namespace {

TEST(Strings, ClosestMatchFindsTypos) {
  std::vector<std::string> keys = {"lifecycle", "runtime", "network", "budget", "email"};
  EXPECT_EQ(closest_match("lifecylce", keys), "lifecycle");
  EXPECT_EQ(closest_match("netwrok", keys), "network");
  EXPECT_EQ(closest_match("emial", keys), "email");
  EXPECT_EQ(closest_match("zzzzzzzz", keys), "");
}

TEST(Strings, QuotedEscapesAndTruncates) {
  EXPECT_EQ(quoted("a\"b"), "\"a\\\"b\"");
  EXPECT_EQ(quoted("\x01"), "\"\\x01\"");
  EXPECT_EQ(quoted("abcdef", 3), "\"abc...\"");
}

TEST(Strings, Split) {
  auto v = split("a:b::c", ':');
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[2], "");
  EXPECT_EQ(v[3], "c");
}

}  // namespace
}  // namespace km
