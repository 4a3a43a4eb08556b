#include "km/meter/sse.h"

#include <gtest/gtest.h>

namespace km::meter {
namespace {

std::vector<SseEvent> parse_all(std::string_view bytes, size_t step = 0) {
  SseParser p;
  std::vector<SseEvent> out;
  if (step == 0) {
    EXPECT_TRUE(p.feed(bytes, out));
  } else {
    for (size_t i = 0; i < bytes.size(); i += step) EXPECT_TRUE(p.feed(bytes.substr(i, step), out));
  }
  p.finish();
  return out;
}

TEST(SseParser, AnthropicStyleEvents) {
  auto evs = parse_all(
      "event: message_start\n"
      "data: {\"type\":\"message_start\"}\n"
      "\n"
      "event: ping\n"
      "data: {\"type\": \"ping\"}\n"
      "\n");
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_EQ(evs[0].event, "message_start");
  EXPECT_EQ(evs[0].data, "{\"type\":\"message_start\"}");
  EXPECT_EQ(evs[1].event, "ping");
  EXPECT_EQ(evs[1].data, "{\"type\": \"ping\"}");
}

TEST(SseParser, DataLinesJoinAndDefaultEventName) {
  auto evs = parse_all("data: a\ndata:b\ndata:  c\ndata\n\n");
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].event, "message");
  EXPECT_EQ(evs[0].data, "a\nb\n c\n");
}

TEST(SseParser, LineEndingsCrLfCrAndLf) {
  for (const char* text : {"event: e\r\ndata: x\r\n\r\n", "event: e\rdata: x\r\r", "event: e\ndata: x\n\n",
                           "event: e\r\ndata: x\n\r"}) {
    for (size_t step : {0, 1, 2, 3}) {
      auto evs = parse_all(text, step);
      ASSERT_EQ(evs.size(), 1u) << step;
      EXPECT_EQ(evs[0].event, "e");
      EXPECT_EQ(evs[0].data, "x");
    }
  }
}

TEST(SseParser, CrLfSplitAcrossFeedsIsOneLineEnd) {
  SseParser p;
  std::vector<SseEvent> out;
  ASSERT_TRUE(p.feed("data: 1\r", out));
  ASSERT_TRUE(p.feed("\n", out));  // not an empty line: still the same line end
  EXPECT_TRUE(out.empty());
  ASSERT_TRUE(p.feed("\r\n", out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "1");
}

TEST(SseParser, CommentsAndUnknownFieldsAreIgnored) {
  auto evs = parse_all(": keep-alive\n\nretry: 100\nfoo: bar\ndata: x\n: note\n\n");
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, "x");
}

TEST(SseParser, EventWithoutDataIsNotDispatched) {
  auto evs = parse_all("event: lonely\n\ndata: y\n\n");
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].event, "message");  // the name was reset with the empty event
  EXPECT_EQ(evs[0].data, "y");
}

TEST(SseParser, EmptyDataLineDispatchesEmptyData) {
  auto evs = parse_all("data:\n\n");
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, "");
}

TEST(SseParser, IdPersistsAndNulIsIgnored) {
  using namespace std::string_literals;
  auto evs = parse_all("id: 7\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\nid\ndata: d\n\n"s);
  ASSERT_EQ(evs.size(), 4u);
  EXPECT_EQ(evs[0].id, "7");
  EXPECT_EQ(evs[1].id, "7");
  EXPECT_EQ(evs[2].id, "7");
  EXPECT_EQ(evs[3].id, "");
}

TEST(SseParser, LeadingBomIsSkippedOnce) {
  for (size_t step : {0, 1, 2}) {
    auto evs = parse_all("\xEF\xBB\xBF" "data: x\n\n\xEF\xBB\xBF" "data: y\n\n", step);
    ASSERT_EQ(evs.size(), 1u) << step;  // a second BOM is part of a field name, which is unknown
    EXPECT_EQ(evs[0].data, "x");
  }
}

TEST(SseParser, PartialBomIsContent) {
  auto evs = parse_all("\xEF\xBB" "data: x\n\ndata: y\n\n", 1);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, "y");
}

TEST(SseParser, UnterminatedEventIsDiscardedAtFinish) {
  SseParser p;
  std::vector<SseEvent> out;
  ASSERT_TRUE(p.feed("data: complete\n\ndata: cut", out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(p.finish());
  SseParser q;
  ASSERT_TRUE(q.feed("data: complete\n\n", out));
  EXPECT_FALSE(q.finish());
}

TEST(SseParser, EventSizeLimitIsAnError) {
  SseParser p(64);
  std::vector<SseEvent> out;
  ASSERT_TRUE(p.feed("data: " + std::string(40, 'a') + "\n", out));
  auto s = p.feed("data: " + std::string(40, 'b') + "\n", out);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(p.failed());
  EXPECT_FALSE(p.feed("\n", out));  // stays failed
  EXPECT_TRUE(out.empty());
}

TEST(SseParser, LongLineWithoutEndHitsTheLimit) {
  SseParser p(1024);
  std::vector<SseEvent> out;
  Status s = ok();
  for (int i = 0; i < 100 && s; ++i) s = p.feed(std::string(100, 'x'), out);
  EXPECT_FALSE(s);
  EXPECT_LE(p.buffered(), 1024u);
}

TEST(SseParser, ManyEventsUnderTheLimitAreFine) {
  SseParser p(64);
  std::vector<SseEvent> out;
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(p.feed("data: " + std::string(40, 'a') + "\n\n", out));
  EXPECT_EQ(out.size(), 1000u);
}

TEST(SseParser, OneByteAtATimeMatchesWhole) {
  std::string text =
      "\xEF\xBB\xBF: hi\r\nevent: a\r\ndata: 1\r\ndata: 2\r\n\r\nid: 9\rdata: 3\r\revent: b\ndata: {\"x\":1}\n\n";
  auto whole = parse_all(text);
  auto bytewise = parse_all(text, 1);
  ASSERT_EQ(whole.size(), 3u);
  ASSERT_EQ(bytewise.size(), whole.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    EXPECT_EQ(whole[i].event, bytewise[i].event);
    EXPECT_EQ(whole[i].data, bytewise[i].data);
    EXPECT_EQ(whole[i].id, bytewise[i].id);
  }
  EXPECT_EQ(whole[0].data, "1\n2");
  EXPECT_EQ(whole[1].id, "9");
  EXPECT_EQ(whole[2].event, "b");
}

}  // namespace
}  // namespace km::meter
