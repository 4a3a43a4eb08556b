#include "km/otel/protobuf_reader.h"

#include <gtest/gtest.h>

#include <vector>

#include "km/otel/test_requests.h"

namespace km::otel {
namespace {

using testing::ProtoWriter;

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int v : b) s += static_cast<char>(v);
  return s;
}

// Every field of `buf`, or the error message.
struct Read {
  std::vector<ProtoField> fields;
  std::string error;
};

Read read_all(std::string_view buf) {
  Read r;
  ProtoReader reader(buf);
  ProtoField f;
  for (;;) {
    auto more = reader.next(f);
    if (!more) {
      r.error = more.error().message();
      return r;
    }
    if (!*more) return r;
    r.fields.push_back(f);
  }
}

TEST(ProtoReader, ReadsEachWireType) {
  ProtoWriter w;
  w.varint(1, 150).fixed64(2, 0x0102030405060708ULL).bytes(3, "testing").fixed32(4, 0xdeadbeef).dbl(5, 2.5);
  auto r = read_all(w.str());
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.fields.size(), 5u);
  EXPECT_EQ(r.fields[0].number, 1u);
  EXPECT_EQ(r.fields[0].type, WireType::kVarint);
  EXPECT_EQ(r.fields[0].scalar, 150u);
  EXPECT_EQ(r.fields[1].type, WireType::kFixed64);
  EXPECT_EQ(r.fields[1].scalar, 0x0102030405060708ULL);
  EXPECT_EQ(r.fields[2].type, WireType::kLen);
  EXPECT_EQ(r.fields[2].bytes, "testing");
  EXPECT_EQ(r.fields[3].type, WireType::kFixed32);
  EXPECT_EQ(r.fields[3].scalar, 0xdeadbeefu);
  EXPECT_EQ(as_double(r.fields[4]), 2.5);
}

TEST(ProtoReader, MatchesThePublishedEncodingExample) {
  // protobuf.dev's encoding guide: field 1 = 150 is 08 96 01; field 2 = "testing" is 12 07 ...
  std::string encoded = bytes({0x08, 0x96, 0x01, 0x12, 0x07, 't', 'e', 's', 't', 'i', 'n', 'g'});
  auto r = read_all(encoded);  // the fields point into `encoded`
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.fields.size(), 2u);
  EXPECT_EQ(r.fields[0].scalar, 150u);
  EXPECT_EQ(r.fields[1].number, 2u);
  EXPECT_EQ(r.fields[1].bytes, "testing");
}

TEST(ProtoReader, NegativeInt64IsATenByteVarint) {
  ProtoWriter w;
  w.varint(3, static_cast<uint64_t>(int64_t{-2}));
  EXPECT_EQ(w.str().size(), 11u);
  auto r = read_all(w.str());
  ASSERT_EQ(r.fields.size(), 1u);
  EXPECT_EQ(as_int64(r.fields[0]), -2);
  EXPECT_EQ(as_int32(r.fields[0]), -2);
}

TEST(ProtoReader, LargestFieldNumberAndMaxVarint) {
  ProtoWriter w;
  w.varint(0x1fffffff, UINT64_MAX);
  auto r = read_all(w.str());
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.fields.size(), 1u);
  EXPECT_EQ(r.fields[0].number, 0x1fffffffu);
  EXPECT_EQ(r.fields[0].scalar, UINT64_MAX);
}

TEST(ProtoReader, EmptyMessageHasNoFields) {
  auto r = read_all("");
  EXPECT_EQ(r.error, "");
  EXPECT_TRUE(r.fields.empty());
}

TEST(ProtoReader, RejectsMalformedFraming) {
  struct Case {
    std::string name, input, error;
  };
  std::vector<Case> cases = {
      {"truncated tag", bytes({0x80}), "truncated varint"},
      {"truncated varint value", bytes({0x08, 0xff, 0xff}), "truncated varint"},
      {"eleven-byte varint", bytes({0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}),
       "varint over"},
      {"varint over 64 bits", bytes({0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}),
       "varint over 64 bits"},
      {"field number 0", bytes({0x00, 0x01}), "field number out of range"},
      {"field number over 2^29", ProtoWriter::varint_bytes(uint64_t{1} << 32 | 0) + bytes({0}),
       "field number out of range"},
      {"start group", bytes({0x0b}), "group wire types"},
      {"end group", bytes({0x0c}), "group wire types"},
      {"wire type 6", bytes({0x0e}), "invalid wire type 6"},
      {"wire type 7", bytes({0x0f}), "invalid wire type 7"},
      {"truncated fixed64", bytes({0x09, 1, 2, 3}), "truncated fixed-width"},
      {"truncated fixed32", bytes({0x0d, 1, 2, 3}), "truncated fixed-width"},
      {"length past the end", bytes({0x12, 0x05, 'a', 'b'}), "runs past the end"},
      {"huge length", bytes({0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}), "runs past the end"},
  };
  for (const Case& c : cases) {
    auto r = read_all(c.input);
    EXPECT_NE(r.error.find(c.error), std::string::npos) << c.name << ": " << r.error;
    EXPECT_NE(r.error.find("at byte"), std::string::npos) << c.name;
  }
}

TEST(ProtoReader, ErrorAfterGoodFieldsKeepsThem) {
  ProtoWriter w;
  w.varint(1, 7);
  std::string buf = w.str() + bytes({0x12, 0x09, 'x'});
  auto r = read_all(buf);
  ASSERT_EQ(r.fields.size(), 1u);
  EXPECT_NE(r.error.find("at byte 2"), std::string::npos) << r.error;
}

TEST(ProtoReader, ExpectWireTypeNamesBoth) {
  ProtoWriter w;
  w.bytes(4, "x");
  auto r = read_all(w.str());
  ASSERT_EQ(r.fields.size(), 1u);
  EXPECT_TRUE(expect_wire_type(r.fields[0], WireType::kLen));
  auto s = expect_wire_type(r.fields[0], WireType::kFixed64);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message(), "field 4 is length-delimited, expected fixed64");
}

}  // namespace
}  // namespace km::otel
