#include "km/audit/transcript.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace km::audit {
namespace {

std::string joined(const std::vector<TranscriptChunker::Chunk>& chunks) {
  std::string s;
  for (const auto& c : chunks) s += c.data;
  return s;
}

TEST(TranscriptChunker, LinesWaitForTheDelayThenGoOutWhole) {
  TranscriptChunker t(4096, 500);
  std::vector<TranscriptChunker::Chunk> out;
  t.feed("ls -l\r\n", 1000, out);
  t.feed("total 0\r\nprompt$ ", 1100, out);
  EXPECT_TRUE(out.empty());
  t.tick(1400, out);
  EXPECT_TRUE(out.empty());
  t.tick(1500, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "ls -l\r\ntotal 0\r\n");  // the prompt (no line end yet) waits
  EXPECT_EQ(out[0].ts_ms, 1000);
  t.tick(1900, out);
  EXPECT_EQ(out.size(), 1u);
  t.tick(3500, out);  // a partial line waits four times the delay
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].data, "prompt$ ");
  EXPECT_EQ(t.next_due(), 0);
}

TEST(TranscriptChunker, TypedKeystrokesBecomeOneChunkPerLine) {
  TranscriptChunker t(4096, 500);
  std::vector<TranscriptChunker::Chunk> out;
  std::string typed = "export TOKEN=ghp_0123456789abcdef\r";
  for (size_t i = 0; i < typed.size(); ++i) t.feed(typed.substr(i, 1), 1000 + static_cast<int64_t>(i) * 50, out);
  t.tick(1000 + static_cast<int64_t>(typed.size()) * 50 + 500, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, typed);  // the secret reaches the redactor whole
}

TEST(TranscriptChunker, BigOutputIsCutAtLineEndsOrCharacterBoundaries) {
  TranscriptChunker t(64, 500);
  std::vector<TranscriptChunker::Chunk> out;
  std::string text;
  for (int i = 0; i < 20; ++i) text += "line " + std::to_string(i) + "\n";
  t.feed(text, 0, out);
  for (const auto& c : out) {
    EXPECT_LE(c.data.size(), 64u);
    EXPECT_EQ(c.data.back(), '\n');
  }
  // No newline: cut on a UTF-8 boundary (é is two bytes).
  TranscriptChunker u(9, 500);
  std::vector<TranscriptChunker::Chunk> v;
  u.feed("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 0, v);
  ASSERT_FALSE(v.empty());
  EXPECT_EQ(v[0].data, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
  u.finish(0, v);
  EXPECT_EQ(joined(v), "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
  t.finish(0, out);
  EXPECT_EQ(joined(out), text);
  EXPECT_EQ(t.bytes(), text.size());
}

}  // namespace
}  // namespace km::audit
