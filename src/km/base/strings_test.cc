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

namespace km {
namespace {

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += len;
  }
  return true;
}

TEST(Strings, QuotedNeverSplitsACharacterAndEscapesBadBytes) {
  std::string e40;
  for (int i = 0; i < 40; ++i) e40 += "é";
  std::string q = quoted(e40, 5);
  EXPECT_EQ(q, "\"ééééé...\"");
  EXPECT_TRUE(valid_utf8(quoted("a\xff\xfe" "b")));
  EXPECT_EQ(quoted("a\xff" "b"), "\"a\\xffb\"");
  EXPECT_TRUE(valid_utf8(quoted("\xe2\x82")));  // truncated sequence
}

}  // namespace
}  // namespace km

namespace km {
namespace {

TEST(Strings, EqualsIgnoreCase) {
  EXPECT_TRUE(equals_ignore_case("Content-Length", "content-length"));
  EXPECT_FALSE(equals_ignore_case("Host", "Hosts"));
  EXPECT_FALSE(equals_ignore_case("a", "b"));
  EXPECT_TRUE(equals_ignore_case("", ""));
}

}  // namespace
}  // namespace km
