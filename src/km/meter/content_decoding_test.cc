#include "km/meter/content_decoding.h"

#include <gtest/gtest.h>

#include "km/meter/test_payloads.h"

namespace km::meter {
namespace {

using testing::Wrap;

std::string sample_text() {
  std::string s;
  for (int i = 0; i < 2000; ++i) s += "data: {\"type\":\"content_block_delta\",\"index\":" + std::to_string(i) + "}\n\n";
  return s;
}

struct Decoded {
  bool ok = true;
  std::string out;
  std::string error;
};

Decoded decode(std::string_view coding, std::string_view body, size_t step = 0, uint64_t max = kMaxDecodedBody) {
  Decoded d;
  auto dec = ContentDecoder::create(coding, max);
  if (!dec) return {false, "", dec.error().message()};
  auto sink = [&](std::string_view b) { d.out.append(b); };
  size_t n = step == 0 ? std::max<size_t>(body.size(), 1) : step;
  for (size_t i = 0; i < body.size(); i += n) {
    auto s = dec->feed(body.substr(i, n), sink);
    if (!s) return {false, d.out, s.error().message()};
  }
  auto s = dec->finish();
  if (!s) return {false, d.out, s.error().message()};
  return d;
}

TEST(ContentDecoder, EachCodingRoundTrips) {
  std::string text = sample_text();
  for (const char* coding : {"gzip", "x-gzip", "deflate", "br", "zstd", "identity", ""}) {
    std::string body = testing::encode_as(coding, text);
    for (size_t step : {0, 1, 7, 4096}) {
      auto d = decode(coding, body, step);
      ASSERT_TRUE(d.ok) << coding << " step " << step << ": " << d.error;
      EXPECT_EQ(d.out, text) << coding << " step " << step;
    }
  }
}

TEST(ContentDecoder, NamesAreCaseInsensitiveAndTrimmed) {
  std::string text = "hello";
  auto d = decode(" GZip ", testing::encode_as("gzip", text));
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_EQ(d.out, text);
}

TEST(ContentDecoder, RawDeflateIsAccepted) {
  std::string text = sample_text();
  auto d = decode("deflate", testing::deflate_compress(text, Wrap::kRawDeflate), 1);
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_EQ(d.out, text);
}

TEST(ContentDecoder, StackOfTwoCodingsDecodesInReverse) {
  std::string text = sample_text();
  std::string body = testing::encode_as("br", testing::encode_as("gzip", text));  // gzip applied first
  auto d = decode("gzip, br", body, 13);
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_EQ(d.out, text);
  body = testing::encode_as("gzip", testing::encode_as("zstd", text));
  d = decode("zstd,identity,gzip", body, 5);
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_EQ(d.out, text);
}

TEST(ContentDecoder, TooManyOrUnknownCodings) {
  EXPECT_EQ(decode("gzip, br, zstd", "").error, "more than 2 content codings stacked");
  EXPECT_EQ(decode("compress", "").error, "unsupported content coding \"compress\"");
}

TEST(ContentDecoder, MultiMemberGzip) {
  std::string body = testing::encode_as("gzip", "first ") + testing::encode_as("gzip", "second");
  auto d = decode("gzip", body, 3);
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_EQ(d.out, "first second");
}

TEST(ContentDecoder, TruncatedStreamsFailAtFinish) {
  std::string text = sample_text();
  for (const char* coding : {"gzip", "deflate", "br", "zstd"}) {
    std::string body = testing::encode_as(coding, text);
    auto d = decode(coding, body.substr(0, body.size() / 2));
    EXPECT_FALSE(d.ok) << coding;
    EXPECT_EQ(d.error, std::string(coding) + " body truncated");
    // What arrived was decoded as far as the coding allows (zstd emits whole blocks only).
    if (std::string_view(coding) != "zstd") {
      EXPECT_FALSE(d.out.empty()) << coding;
    }
    EXPECT_EQ(d.out, text.substr(0, d.out.size())) << coding;
  }
}

TEST(ContentDecoder, EmptyBodyIsFine) {
  for (const char* coding : {"gzip", "deflate", "br", "zstd"}) EXPECT_TRUE(decode(coding, "").ok) << coding;
}

TEST(ContentDecoder, CorruptStreamsAreErrors) {
  std::string text = sample_text();
  for (const char* coding : {"gzip", "deflate", "br", "zstd"}) {
    std::string body = testing::encode_as(coding, text);
    for (size_t i = 0; i < 8; ++i) body[body.size() / 3 + i] ^= 0x5a;
    auto d = decode(coding, body, 100);
    // gzip and zlib carry checksums; brotli and zstd (without a frame checksum) may decode
    // corruption into other bytes, which the layers above then fail to parse.
    EXPECT_TRUE(!d.ok || d.out != text) << coding;
    if (!d.ok) {
      EXPECT_NE(d.error.find(coding), std::string::npos) << d.error;
    }
    if (std::string_view(coding) == "gzip" || std::string_view(coding) == "deflate") {
      EXPECT_FALSE(d.ok) << coding;
    }
  }
  // A zstd frame whose header is damaged is refused.
  std::string z = testing::encode_as("zstd", text);
  z[0] ^= 0x01;
  EXPECT_FALSE(decode("zstd", z).ok);
  EXPECT_FALSE(decode("gzip", "this is not gzip").ok);
  EXPECT_FALSE(decode("br", std::string(64, '\xff')).ok);
}

TEST(ContentDecoder, TrailingGarbageIsAnError) {
  for (const char* coding : {"deflate", "br"}) {
    auto d = decode(coding, testing::encode_as(coding, "abc") + "junk");
    EXPECT_FALSE(d.ok) << coding;
  }
  EXPECT_FALSE(decode("gzip", testing::encode_as("gzip", "abc") + "junkjunkjunk").ok);
}

TEST(ContentDecoder, OutputCapStopsABomb) {
  std::string zeros(4 << 20, '\0');
  for (const char* coding : {"gzip", "br", "zstd"}) {
    std::string body = testing::encode_as(coding, zeros);
    EXPECT_LT(body.size(), 64u << 10) << coding;
    auto d = decode(coding, body, 0, 1 << 20);
    EXPECT_FALSE(d.ok) << coding;
    EXPECT_NE(d.error.find("more than 1048576 bytes"), std::string::npos) << d.error;
    EXPECT_LE(d.out.size(), 1u << 20) << coding;
  }
  auto d = decode("", zeros, 0, 1 << 20);
  EXPECT_FALSE(d.ok);
}

TEST(ContentDecoder, StaysFailed) {
  auto dec = ContentDecoder::create("gzip");
  ASSERT_TRUE(dec);
  auto sink = [](std::string_view) {};
  EXPECT_FALSE(dec->feed("not gzip at all", sink));
  EXPECT_TRUE(dec->failed());
  EXPECT_FALSE(dec->feed(testing::encode_as("gzip", "x"), sink));
}

}  // namespace
}  // namespace km::meter
