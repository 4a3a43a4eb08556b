#include "km/audit/lines.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace km::audit {
namespace {

using Lines = std::vector<std::pair<std::string, size_t>>;

Lines split(LineSplitter& s, const std::vector<std::string>& reads, bool finish = false) {
  Lines out;
  auto sink = [&out](std::string_view l, size_t cut) { out.emplace_back(std::string(l), cut); };
  for (const auto& r : reads) s.feed(r, sink);
  if (finish) s.finish(sink);
  return out;
}

TEST(LineSplitter, LinesAcrossReads) {
  LineSplitter s(100);
  EXPECT_EQ(split(s, {"a\nb", "c\n\nd", "e\n"}), (Lines{{"a", 0}, {"bc", 0}, {"", 0}, {"de", 0}}));
  EXPECT_EQ(s.buffered(), 0u);
  EXPECT_EQ(split(s, {"tail"}, true), (Lines{{"tail", 0}}));
}

TEST(LineSplitter, ALongLineIsCutAndTheReaderGoesOn) {
  LineSplitter s(8);
  std::string big(100000, 'x');
  auto out = split(s, {"ok\n" + big.substr(0, 50000), big.substr(50000) + "\nnext\n"});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0], (std::pair<std::string, size_t>{"ok", 0}));
  EXPECT_EQ(out[1], (std::pair<std::string, size_t>{"xxxxxxxx", 100000 - 8}));
  EXPECT_EQ(out[2], (std::pair<std::string, size_t>{"next", 0}));
  EXPECT_LE(s.buffered(), 8u);
}

TEST(LineSplitter, NeverHoldsMoreThanTheBound) {
  LineSplitter s(1024);
  for (int i = 0; i < 1000; ++i) {
    split(s, {std::string(4096, 'y')});
    ASSERT_LE(s.buffered(), 1024u);
  }
  auto out = split(s, {"\n"});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first.size(), 1024u);
  EXPECT_EQ(out[0].second, 4096u * 1000 - 1024);
}

TEST(LineSplitter, ALineOfExactlyTheBoundIsWhole) {
  LineSplitter s(4);
  EXPECT_EQ(split(s, {"abcd\nabcde\n"}), (Lines{{"abcd", 0}, {"abcd", 1}}));
}

}  // namespace
}  // namespace km::audit
