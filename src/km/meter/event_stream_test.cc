#include "km/meter/event_stream.h"

#include <gtest/gtest.h>

namespace km::meter {
namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int v : b) s += static_cast<char>(v);
  return s;
}

EventStreamHeader header(std::string name, HeaderType type, int64_t integer = 0, std::string value = "") {
  EventStreamHeader h;
  h.name = std::move(name);
  h.type = type;
  h.integer = integer;
  h.bytes = std::move(value);
  return h;
}

// A published encoding of {"foo": "bar"} with no headers, and with one content-type header.
const std::string kNoHeaders = bytes({0, 0, 0, 30, 0, 0, 0, 0, 186, 242, 246, 138}) + "{\"foo\": \"bar\"}" +
                               bytes({174, 114, 88, 228});
const std::string kContentType = bytes({0, 0, 0, 62, 0, 0, 0, 32, 64, 93, 249, 70, 12}) + "content-type" +
                                 bytes({7, 0, 16}) + "application/json" + "{\"foo\": \"bar\"}" +
                                 bytes({111, 162, 191, 59});

std::vector<EventStreamMessage> decode_all(std::string_view data, size_t step = 0) {
  EventStreamDecoder d;
  std::vector<EventStreamMessage> out;
  if (step == 0) {
    EXPECT_TRUE(d.feed(data, out));
  } else {
    for (size_t i = 0; i < data.size(); i += step) EXPECT_TRUE(d.feed(data.substr(i, step), out));
  }
  EXPECT_FALSE(d.mid_message());
  return out;
}

TEST(Crc32, KnownValues) {
  EXPECT_EQ(crc32_ieee(""), 0u);
  EXPECT_EQ(crc32_ieee("123456789"), 0xCBF43926u);
  EXPECT_EQ(crc32_ieee("6789", crc32_ieee("12345")), 0xCBF43926u);
}

TEST(EventStreamDecoder, PublishedVectors) {
  auto msgs = decode_all(kNoHeaders + kContentType);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_TRUE(msgs[0].headers.empty());
  EXPECT_EQ(msgs[0].payload, "{\"foo\": \"bar\"}");
  ASSERT_EQ(msgs[1].headers.size(), 1u);
  EXPECT_EQ(msgs[1].string_header("content-type"), "application/json");
  EXPECT_EQ(msgs[1].payload, "{\"foo\": \"bar\"}");
}

TEST(EventStreamEncoder, MatchesPublishedVectors) {
  EventStreamMessage m;
  m.payload = "{\"foo\": \"bar\"}";
  EXPECT_EQ(encode_event_stream_message(m), kNoHeaders);
  m.headers.push_back(header("content-type", HeaderType::kString, 0, "application/json"));
  EXPECT_EQ(encode_event_stream_message(m), kContentType);
}

TEST(EventStreamDecoder, AllTenHeaderTypesRoundTrip) {
  EventStreamMessage m;
  m.headers = {header("t", HeaderType::kBoolTrue, 1),
               header("f", HeaderType::kBoolFalse, 0),
               header("byte", HeaderType::kByte, -2),
               header("short", HeaderType::kShort, -300),
               header("int", HeaderType::kInt, -70000),
               header("long", HeaderType::kLong, -5'000'000'000),
               header("bin", HeaderType::kBytes, 0, std::string("\0\x01\xff", 3)),
               header(":event-type", HeaderType::kString, 0, "chunk"),
               header("ts", HeaderType::kTimestamp, 1'700'000'000'123),
               header("id", HeaderType::kUuid, 0, "0123456789abcdef")};
  m.payload = std::string("payload\0bytes", 13);
  auto msgs = decode_all(encode_event_stream_message(m));
  ASSERT_EQ(msgs.size(), 1u);
  const auto& got = msgs[0];
  ASSERT_EQ(got.headers.size(), m.headers.size());
  for (size_t i = 0; i < m.headers.size(); ++i) {
    EXPECT_EQ(got.headers[i].name, m.headers[i].name);
    EXPECT_EQ(got.headers[i].type, m.headers[i].type);
    EXPECT_EQ(got.headers[i].integer, m.headers[i].integer) << m.headers[i].name;
    EXPECT_EQ(got.headers[i].bytes, m.headers[i].bytes) << m.headers[i].name;
  }
  EXPECT_EQ(got.payload, m.payload);
  EXPECT_EQ(got.string_header(":event-type"), "chunk");
  EXPECT_EQ(got.string_header("bin"), std::nullopt);  // not a string header
  EXPECT_EQ(got.header("missing"), nullptr);
  EXPECT_EQ(got.header("long")->integer, -5'000'000'000);
}

TEST(EventStreamDecoder, OneByteAtATimeMatchesWhole) {
  std::string stream;
  for (int i = 0; i < 5; ++i) {
    EventStreamMessage m;
    m.headers.push_back(header(":event-type", HeaderType::kString, 0, "e" + std::to_string(i)));
    m.payload = std::string(static_cast<size_t>(i * 37), 'x');
    stream += encode_event_stream_message(m);
  }
  for (size_t step : {1, 3, 11, 64}) {
    auto msgs = decode_all(stream, step);
    ASSERT_EQ(msgs.size(), 5u) << step;
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(msgs[static_cast<size_t>(i)].string_header(":event-type"), "e" + std::to_string(i));
      EXPECT_EQ(msgs[static_cast<size_t>(i)].payload.size(), static_cast<size_t>(i * 37));
    }
  }
}

TEST(EventStreamDecoder, MidMessage) {
  EventStreamDecoder d;
  std::vector<EventStreamMessage> out;
  ASSERT_TRUE(d.feed(kNoHeaders.substr(0, 20), out));
  EXPECT_TRUE(d.mid_message());
  ASSERT_TRUE(d.feed(kNoHeaders.substr(20), out));
  EXPECT_FALSE(d.mid_message());
  EXPECT_EQ(out.size(), 1u);
}

Status feed_once(std::string_view data, size_t max = kMaxEventStreamMessage) {
  EventStreamDecoder d(max);
  std::vector<EventStreamMessage> out;
  return d.feed(data, out);
}

TEST(EventStreamDecoder, BadPreludeCrc) {
  std::string m = kNoHeaders;
  m[8] ^= 1;
  auto s = feed_once(m);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message(), "event-stream prelude CRC mismatch");
}

TEST(EventStreamDecoder, BadMessageCrc) {
  std::string m = kNoHeaders;
  m[15] ^= 1;  // a payload byte
  auto s = feed_once(m);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message(), "event-stream message CRC mismatch");
}

// A message with a correct prelude CRC for the given lengths and a correct message CRC.
std::string with_lengths(uint32_t total, uint32_t headers, std::string_view rest) {
  std::string m;
  for (uint32_t v : {total, headers}) {
    for (int s = 24; s >= 0; s -= 8) m += static_cast<char>((v >> s) & 0xff);
  }
  uint32_t crc = crc32_ieee(m);
  for (int s = 24; s >= 0; s -= 8) m += static_cast<char>((crc >> s) & 0xff);
  m += rest;
  uint32_t mcrc = crc32_ieee(m);
  for (int s = 24; s >= 0; s -= 8) m += static_cast<char>((mcrc >> s) & 0xff);
  return m;
}

TEST(EventStreamDecoder, LengthInconsistencies) {
  EXPECT_FALSE(feed_once(with_lengths(15, 0, "")));
  EXPECT_FALSE(feed_once(with_lengths(20, 5, "abcd")));  // headers longer than the message allows
  auto s = feed_once(with_lengths(1000, 0, ""), 512);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_FALSE(feed_once(with_lengths(16 + 200000, 200000, std::string(200000, 'a'))));  // headers > 128 KiB
}

TEST(EventStreamDecoder, OversizeIsRefusedBeforeBuffering) {
  EventStreamDecoder d(1024);
  std::vector<EventStreamMessage> out;
  std::string m = with_lengths(1 << 20, 0, "");
  EXPECT_FALSE(d.feed(m.substr(0, 12), out));
  EXPECT_FALSE(d.mid_message());
}

TEST(EventStreamDecoder, MalformedHeaders) {
  // name length 0
  EXPECT_FALSE(feed_once(with_lengths(16 + 3, 3, std::string("\0\x07\x00", 3))));
  // unknown value type 10
  EXPECT_FALSE(feed_once(with_lengths(16 + 3, 3, std::string("\x01" "a\x0a", 3))));
  // string length runs past the header section
  EXPECT_FALSE(feed_once(with_lengths(16 + 6, 6, std::string("\x01" "a\x07\x00\x05x", 6))));
  // int value cut short
  EXPECT_FALSE(feed_once(with_lengths(16 + 5, 5, std::string("\x01" "a\x04\x00\x00", 5))));
  // name runs past the section
  EXPECT_FALSE(feed_once(with_lengths(16 + 2, 2, std::string("\x05" "a", 2))));
  // well-formed: a bool header then a payload
  EXPECT_TRUE(feed_once(with_lengths(16 + 3 + 2, 3, std::string("\x01" "a\x00" "{}", 5))));
}

TEST(EventStreamDecoder, ErrorStateIsSticky) {
  EventStreamDecoder d;
  std::vector<EventStreamMessage> out;
  std::string bad = kNoHeaders;
  bad[0] = 1;
  EXPECT_FALSE(d.feed(bad, out));
  EXPECT_TRUE(d.failed());
  EXPECT_FALSE(d.feed(kNoHeaders, out));
  EXPECT_TRUE(out.empty());
}

TEST(EventStreamDecoder, MessagesBeforeAnErrorAreKept) {
  EventStreamDecoder d;
  std::vector<EventStreamMessage> out;
  std::string bad = kNoHeaders;
  bad[20] ^= 0x20;
  EXPECT_FALSE(d.feed(kNoHeaders + bad, out));
  EXPECT_EQ(out.size(), 1u);
}

}  // namespace
}  // namespace km::meter
