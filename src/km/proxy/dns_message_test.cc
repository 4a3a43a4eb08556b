#include "km/proxy/dns_message.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace km::proxy::dns {
namespace {

// Builds wire bytes by hand, so tests can say exactly what a hostile peer sends.
class Wire {
 public:
  Wire& u8(uint8_t v) {
    b_.push_back(v);
    return *this;
  }
  Wire& u16(uint16_t v) { return u8(static_cast<uint8_t>(v >> 8)).u8(static_cast<uint8_t>(v)); }
  Wire& u32(uint32_t v) { return u16(static_cast<uint16_t>(v >> 16)).u16(static_cast<uint16_t>(v)); }
  Wire& raw(const std::vector<uint8_t>& v) {
    b_.insert(b_.end(), v.begin(), v.end());
    return *this;
  }
  Wire& label(std::string_view l) {
    u8(static_cast<uint8_t>(l.size()));
    for (char c : l) u8(static_cast<uint8_t>(c));
    return *this;
  }
  // Uncompressed "www.example.com" (case kept), with the root byte.
  Wire& name(std::string_view dotted) {
    size_t start = 0;
    while (start < dotted.size()) {
      size_t dot = dotted.find('.', start);
      if (dot == std::string_view::npos) dot = dotted.size();
      label(dotted.substr(start, dot - start));
      start = dot + 1;
    }
    return u8(0);
  }
  Wire& ptr(size_t offset) { return u16(static_cast<uint16_t>(0xc000 | offset)); }
  Wire& header(uint16_t qd, uint16_t an = 0, uint16_t ns = 0, uint16_t ar = 0, uint16_t id = 0x1234,
               uint16_t flags = 0x0100) {
    return u16(id).u16(flags).u16(qd).u16(an).u16(ns).u16(ar);
  }
  // Record fixed fields after the owner name; rdlength is given explicitly.
  Wire& rr(uint16_t type, uint16_t rdlength, uint32_t ttl = 300, uint16_t klass = kClassIN) {
    return u16(type).u16(klass).u32(ttl).u16(rdlength);
  }
  size_t size() const { return b_.size(); }
  const std::vector<uint8_t>& bytes() const { return b_; }

 private:
  std::vector<uint8_t> b_;
};

void expect_invalid(const Wire& w, std::string_view message_part) {
  auto m = parse(w.bytes());
  ASSERT_FALSE(m.has_value()) << "parsed although it should fail with: " << message_part;
  EXPECT_EQ(m.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(m.error().to_string().find(message_part), std::string::npos) << m.error().to_string();
}

// A query for `name` of `qtype`, as a stub resolver sends it.
Wire query(std::string_view name, uint16_t qtype = type::kA) {
  Wire w;
  w.header(1).name(name).u16(qtype).u16(kClassIN);
  return w;
}

TEST(DnsMessage, ParsesQueryHeaderAndLowercasesName) {
  Wire w;
  w.header(1, 0, 0, 0, 0xabcd, 0x0100).name("WWW.Example.COM").u16(type::kAAAA).u16(kClassIN);
  auto m = parse(w.bytes());
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  EXPECT_EQ(m->id, 0xabcd);
  EXPECT_FALSE(m->qr);
  EXPECT_TRUE(m->rd);
  EXPECT_EQ(m->opcode, 0);
  EXPECT_EQ(m->rcode, Rcode::kNoError);
  ASSERT_EQ(m->questions.size(), 1u);
  EXPECT_EQ(m->questions[0].name, "www.example.com");
  EXPECT_EQ(m->questions[0].type, type::kAAAA);
  EXPECT_EQ(m->questions[0].klass, kClassIN);
}

TEST(DnsMessage, ParsesEveryHeaderFlag) {
  Wire w;
  // QR, opcode 2, AA, TC, RD | RA, Z, AD, CD, rcode 3.
  w.header(0, 0, 0, 0, 7, static_cast<uint16_t>((0x80 | (2 << 3) | 0x07) << 8 | 0xf3));
  auto m = parse(w.bytes());
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  EXPECT_TRUE(m->qr && m->aa && m->tc && m->rd && m->ra && m->ad && m->cd);
  EXPECT_EQ(m->opcode, 2);
  EXPECT_EQ(m->rcode, Rcode::kNxDomain);
  // Z is not kept: it must be zero (RFC 1035) and is written as zero.
  auto out = serialize(*m);
  EXPECT_EQ(out[2], 0x80 | (2 << 3) | 0x07);
  EXPECT_EQ(out[3], 0xb3);
}

TEST(DnsMessage, ParsesCompressedCnameChainAndAddress) {
  Wire w;
  w.header(1, 3, 0, 0, 0xbeef, 0x8180);
  w.name("www.Example.com").u16(type::kA).u16(kClassIN);
  w.ptr(12).rr(type::kCNAME, 14, 60);
  size_t cdn = w.size();
  w.label("CDN").label("example").ptr(24);  // cdn.example.com, "com" from the question
  w.ptr(cdn).rr(type::kA, 4).u8(192).u8(0).u8(2).u8(7);
  w.ptr(cdn).rr(type::kAAAA, 16).raw({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1});
  auto m = parse(w.bytes());
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  ASSERT_EQ(m->answers.size(), 3u);
  const Record& cname = m->answers[0];
  EXPECT_EQ(cname.name, "www.example.com");
  EXPECT_EQ(cname.type, type::kCNAME);
  EXPECT_EQ(cname.ttl, 60u);
  EXPECT_EQ(cname.target, "cdn.example.com");
  // rdata is the decompressed, lowercased wire name.
  EXPECT_EQ(cname.rdata, *encode_name("cdn.example.com"));
  EXPECT_EQ(m->answers[1].name, "cdn.example.com");
  EXPECT_EQ(a_address(m->answers[1]), (std::array<uint8_t, 4>{192, 0, 2, 7}));
  EXPECT_FALSE(aaaa_address(m->answers[1]).has_value());
  auto v6 = aaaa_address(m->answers[2]);
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ((*v6)[0], 0x20);
  EXPECT_EQ((*v6)[15], 1);
  EXPECT_FALSE(a_address(m->answers[2]).has_value());
}

TEST(DnsMessage, AddressHelpersRequireClassIn) {
  Record r;
  r.type = type::kA;
  r.klass = 3;  // CHAOS
  r.rdata = {1, 2, 3, 4};
  EXPECT_FALSE(a_address(r).has_value());
  r.klass = kClassIN;
  EXPECT_TRUE(a_address(r).has_value());
}

TEST(DnsMessage, RejectsAddressRecordsOfTheWrongLength) {
  Wire a;
  a.header(0, 1).name("a.test").rr(type::kA, 5).raw({1, 2, 3, 4, 5});
  expect_invalid(a, "A record data is 5 bytes, not 4");
  Wire aaaa;
  aaaa.header(0, 1).name("a.test").rr(type::kAAAA, 4).raw({1, 2, 3, 4});
  expect_invalid(aaaa, "AAAA record data is 4 bytes, not 16");
  // In any class: the filter reads addresses and must never see a short one.
  Wire chaos;
  chaos.header(0, 1).name("a.test").rr(type::kA, 0, 0, 3);
  expect_invalid(chaos, "A record data is 0 bytes");
}

TEST(DnsMessage, RejectsShortHeader) {
  Wire w;
  w.u16(1).u16(0x0100).u16(0).u16(0).u16(0).u8(0);
  expect_invalid(w, "shorter than the 12-byte header");
  EXPECT_FALSE(parse({}).has_value());
}

TEST(DnsMessage, RejectsTruncatedQuestion) {
  Wire no_class;
  no_class.header(1).name("example.com").u16(type::kA);
  expect_invalid(no_class, "question 1: question extends past end of message");
  Wire cut_label;
  cut_label.header(1).u8(7).u8('e').u8('x').u8('a').u8('m').u8(0);
  expect_invalid(cut_label, "name extends past end of message");
  Wire no_root;
  no_root.header(1).label("example").label("com");
  expect_invalid(no_root, "name extends past end of message");
}

TEST(DnsMessage, RejectsTruncatedRecord) {
  Wire fixed;
  fixed.header(0, 1).name("a.test").u16(type::kA).u16(kClassIN).u32(1).u8(0);
  expect_invalid(fixed, "answer 1: record extends past end of message");
  Wire data;
  data.header(0, 0, 0, 1).name("a.test").rr(type::kTXT, 10).raw({3, 'a', 'b', 'c'});
  expect_invalid(data, "additional 1: record data extends past end of message");
}

TEST(DnsMessage, RejectsTrailingBytes) {
  Wire w = query("example.com");
  EXPECT_TRUE(parse(w.bytes()).has_value());
  w.u8(0);
  expect_invalid(w, "1 trailing bytes after the last record");
}

TEST(DnsMessage, RejectsCountsThatCannotFit) {
  Wire w;  // 17 bytes of body could hold 3 minimal questions, so this passes the first check
  w.header(2).name("example.com").u16(type::kA).u16(kClassIN);
  expect_invalid(w, "question 2: name extends past end of message");
  Wire tiny;
  tiny.header(1).u8(0).u16(type::kA);
  expect_invalid(tiny, "section counts do not fit in the message");
  Wire records;
  records.header(0, 100, 100, 100);
  expect_invalid(records, "section counts do not fit");
}

TEST(DnsMessage, CapsQuestionsAndRecords) {
  // 64 root questions parse (the filter rejects more than one; the parser reads them all).
  Wire ok;
  ok.header(64);
  for (int i = 0; i < 64; ++i) ok.u8(0).u16(type::kA).u16(kClassIN);
  auto m = parse(ok.bytes());
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  EXPECT_EQ(m->questions.size(), 64u);

  Wire many_q;
  many_q.header(65);
  for (int i = 0; i < 65; ++i) many_q.u8(0).u16(type::kA).u16(kClassIN);
  expect_invalid(many_q, "too many questions (65, at most 64)");

  Wire many_rr;
  many_rr.header(0, 1000, 20, 5);
  for (int i = 0; i < 1025; ++i) many_rr.u8(0).rr(type::kTXT, 0);
  expect_invalid(many_rr, "too many records (1025, at most 1024)");

  Wire max_rr;
  max_rr.header(0, 1000, 20, 4);
  for (int i = 0; i < 1024; ++i) max_rr.u8(0).rr(type::kTXT, 0);
  EXPECT_TRUE(parse(max_rr.bytes()).has_value());
}

TEST(DnsMessage, RejectsForwardCompressionPointer) {
  Wire w;
  w.header(0, 1).ptr(14).rr(type::kTXT, 0);  // points at its own rr fields, after itself
  expect_invalid(w, "name compression pointer loops or points forward");
}

TEST(DnsMessage, RejectsSelfPointer) {
  Wire w;
  w.header(1).ptr(12).u16(type::kA).u16(kClassIN);
  expect_invalid(w, "name compression pointer loops");
}

TEST(DnsMessage, RejectsPointerLoop) {
  // A loop needs one pointer that goes forward; hide it in TXT data, which is not read as a
  // name. Owner 2 (at 27) points back at the data (23): "x", then a pointer to 27 again.
  Wire w;
  w.header(0, 2);
  w.u8(0).rr(type::kTXT, 4);                // owner "." at 12, data at 23
  w.label("x").ptr(27);
  ASSERT_EQ(w.size(), 27u);
  w.ptr(23).rr(type::kTXT, 0);
  expect_invalid(w, "answer 2: name compression pointer loops or points forward");
}

TEST(DnsMessage, RejectsPointerIntoHeader) {
  Wire w;
  w.header(1).ptr(4).u16(type::kA).u16(kClassIN);
  expect_invalid(w, "name compression pointer into the header");
}

TEST(DnsMessage, RejectsCompressedNameRunningIntoItsPointer) {
  // Owner 2 (at 27) points at TXT data (23) holding a 5-byte label: it would cover the pointer.
  Wire w;
  w.header(0, 2);
  w.u8(0).rr(type::kTXT, 4).u8(5).u8('a').u8('b').u8('c');
  ASSERT_EQ(w.size(), 27u);
  w.ptr(23).rr(type::kTXT, 0);
  expect_invalid(w, "answer 2: compressed name runs into the bytes that point to it");
}

TEST(DnsMessage, FollowsPointersIntoTheMiddleOfEarlierNames) {
  Wire w;
  w.header(0, 0, 0, 2);
  w.label("a").label("b").u8(0).rr(type::kTXT, 0);  // "a.b" at 12, "b" at 14
  w.label("c").ptr(14).rr(type::kTXT, 0);
  auto m = parse(w.bytes());
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  EXPECT_EQ(m->additional[1].name, "c.b");
}

TEST(DnsMessage, LimitsPointerChainsTo128Jumps) {
  // TXT data holds a chain of pointers, each to the one before it (the first to the root owner
  // at 12); the name under test points at the last of them.
  auto build = [](size_t jumps) {
    Wire w;
    w.header(0, 0, 0, 2);
    w.u8(0).rr(type::kTXT, static_cast<uint16_t>(2 * (jumps - 1)));  // owner "." at 12
    size_t prev = 12;
    for (size_t i = 0; i + 1 < jumps; ++i) {
      size_t here = w.size();
      w.ptr(prev);
      prev = here;
    }
    w.ptr(prev).rr(type::kTXT, 0);  // the name: one more jump, `jumps` in all
    return w;
  };
  auto ok = parse(build(128).bytes());
  ASSERT_TRUE(ok.has_value()) << ok.error().to_string();
  EXPECT_EQ(ok->additional[1].name, "");
  expect_invalid(build(129), "more than 128 compression pointers in a name");
}

TEST(DnsMessage, RejectsExtendedAndBinaryLabelTypes) {
  Wire ext;
  ext.header(1).u8(0x41).u8(0).u16(type::kA).u16(kClassIN);
  expect_invalid(ext, "unsupported label type");
  Wire bin;
  bin.header(1).u8(0x80).u8(0).u16(type::kA).u16(kClassIN);
  expect_invalid(bin, "unsupported label type");
}

TEST(DnsMessage, LimitsNamesTo255Bytes) {
  // Four 63-byte labels and one of 1: 4*64 + 2 + root = 259 > 255. Three 63s and one 61: 255.
  std::string l63(63, 'a');
  auto build = [&](size_t last) {
    Wire w;
    w.header(1).label(l63).label(l63).label(l63).label(std::string(last, 'b')).u8(0);
    w.u16(type::kA).u16(kClassIN);
    return w;
  };
  auto ok = parse(build(61).bytes());
  ASSERT_TRUE(ok.has_value()) << ok.error().to_string();
  EXPECT_EQ(encode_name(ok->questions[0].name)->size(), 255u);
  expect_invalid(build(62), "name longer than 255 bytes");
}

TEST(DnsMessage, LimitsDecompressedNamesTo255Bytes) {
  // Each part is short on the wire; the name they make through pointers is not.
  std::string l63(63, 'a');
  Wire w;
  w.header(0, 0, 0, 3);
  w.label(l63).label(l63).u8(0).rr(type::kTXT, 0);  // 12: 129-byte name
  w.label(l63).ptr(12).rr(type::kTXT, 0);           // 193 bytes
  w.label(l63).ptr(12 + 129 + 10).rr(type::kTXT, 0);  // 257 bytes
  expect_invalid(w, "additional 3: name longer than 255 bytes");
}

TEST(DnsMessage, EscapesBytesOutsideHostnameCharacters) {
  Wire w;
  w.header(1).label(std::string("a.b", 3)).label("C\\d").label(std::string("x y\0*", 5));
  w.label("\xff\x80_-9").u8(0).u16(type::kA).u16(kClassIN);
  auto m = parse(w.bytes());
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  const std::string& name = m->questions[0].name;
  EXPECT_EQ(name, "a\\046b.c\\092d.x\\032y\\000\\042.\\255\\128_-9");
  EXPECT_FALSE(is_plain_hostname(name));
  // The escapes invert exactly: the name encodes back to the (lowercased) labels.
  auto wire = encode_name(name);
  ASSERT_TRUE(wire.has_value()) << wire.error().to_string();
  std::vector<uint8_t> expected(w.bytes().begin() + 12, w.bytes().end() - 4);
  expected[5] = 'c';
  EXPECT_EQ(*wire, expected);
}

TEST(DnsMessage, PlainHostnames) {
  EXPECT_TRUE(is_plain_hostname("api.example.com"));
  EXPECT_TRUE(is_plain_hostname("_dmarc.my-host.example"));
  EXPECT_TRUE(is_plain_hostname(""));
  EXPECT_FALSE(is_plain_hostname("evil\\046example.com"));
  EXPECT_FALSE(is_plain_hostname("\\042.example.com"));
}

TEST(DnsMessage, EncodeNameAcceptsOnlyCanonicalForm) {
  EXPECT_EQ(*encode_name(""), std::vector<uint8_t>{0});
  EXPECT_EQ(*encode_name("a.bc"), (std::vector<uint8_t>{1, 'a', 2, 'b', 'c', 0}));
  EXPECT_EQ(*encode_name("\\046"), (std::vector<uint8_t>{1, '.', 0}));
  EXPECT_EQ(*encode_name("\\000\\255"), (std::vector<uint8_t>{2, 0, 255, 0}));
  for (const char* bad : {"a..b", ".a", "a.", ".", "Example.com", "a b", "a\\", "a\\12", "a\\12x",
                          "a\\256", "\\097", "\\065", "\\045", "\\095", "a*b", "caf\xc3\xa9"}) {
    auto r = encode_name(bad);
    EXPECT_FALSE(r.has_value()) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    }
  }
  EXPECT_TRUE(encode_name(std::string(63, 'a')).has_value());
  EXPECT_FALSE(encode_name(std::string(64, 'a')).has_value());
  // 63 escaped bytes make one label of 63.
  std::string escaped;
  for (int i = 0; i < 63; ++i) escaped += "\\046";
  EXPECT_TRUE(encode_name(escaped).has_value());
  EXPECT_FALSE(encode_name(escaped + "\\046").has_value());
  std::string l63(63, 'a');
  EXPECT_TRUE(encode_name(l63 + "." + l63 + "." + l63 + "." + std::string(61, 'b')).has_value());
  EXPECT_FALSE(encode_name(l63 + "." + l63 + "." + l63 + "." + std::string(62, 'b')).has_value());
}

TEST(DnsMessage, DecompressesNamesInsideSoaAndMx) {
  Wire soa;
  soa.header(1, 0, 1, 0, 1, 0x8183);
  soa.name("nope.example.com").u16(type::kA).u16(kClassIN);  // 12; "example.com" at 17
  soa.ptr(17).rr(type::kSOA, 5 + 8 + 20);
  soa.label("NS").ptr(17);                           // ns.example.com (5 bytes)
  soa.label("admin").ptr(17);                        // admin.example.com (8 bytes)
  soa.u32(2024010101).u32(7200).u32(3600).u32(1209600).u32(300);
  auto m = parse(soa.bytes());
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  ASSERT_EQ(m->authority.size(), 1u);
  const Record& r = m->authority[0];
  EXPECT_EQ(r.name, "example.com");
  EXPECT_EQ(r.target, "");  // two names: no single target
  std::vector<uint8_t> expected = *encode_name("ns.example.com");
  auto admin = *encode_name("admin.example.com");
  expected.insert(expected.end(), admin.begin(), admin.end());
  expected.insert(expected.end(), soa.bytes().end() - 20, soa.bytes().end());
  EXPECT_EQ(r.rdata, expected);

  Wire mx;
  mx.header(1, 1, 0, 0, 1, 0x8180);
  mx.name("example.com").u16(type::kMX).u16(kClassIN);
  mx.ptr(12).rr(type::kMX, 2 + 7).u16(10).label("mail").ptr(12);
  auto mm = parse(mx.bytes());
  ASSERT_TRUE(mm.has_value()) << mm.error().to_string();
  EXPECT_EQ(mm->answers[0].target, "mail.example.com");
  std::vector<uint8_t> mx_rdata{0, 10};
  auto mail = *encode_name("mail.example.com");
  mx_rdata.insert(mx_rdata.end(), mail.begin(), mail.end());
  EXPECT_EQ(mm->answers[0].rdata, mx_rdata);
}

TEST(DnsMessage, RejectsMalformedNameRecordData) {
  Wire soa_short;  // SOA missing its five numbers
  soa_short.header(0, 1).name("a.test").rr(type::kSOA, 4).u8(0).u8(0).u16(1);
  expect_invalid(soa_short, "answer 1: SOA record data has 2 bytes after its names, not 20");
  Wire cname_extra;  // CNAME with a byte after its name
  cname_extra.header(0, 1).name("a.test").rr(type::kCNAME, 3).u8(0).u8(0).u8(0);
  expect_invalid(cname_extra, "CNAME record data has 2 bytes after its names, not 0");
  Wire cname_cut;  // CNAME name running past rdlength, into the next record
  cname_cut.header(0, 2).name("a.test").rr(type::kCNAME, 2).label("b").u8(0);
  cname_cut.u8(0).rr(type::kTXT, 0);
  expect_invalid(cname_cut, "CNAME record data: name extends past end of record data");
  Wire mx_short;
  mx_short.header(0, 1).name("a.test").rr(type::kMX, 1).u8(0);
  expect_invalid(mx_short, "MX record data is too short");
  Wire cname_empty;
  cname_empty.header(0, 1).name("a.test").rr(type::kCNAME, 0);
  expect_invalid(cname_empty, "CNAME record data: name extends past end of record data");
}

TEST(DnsMessage, KeepsOtherRecordDataRaw) {
  Wire w;
  w.header(1, 1, 0, 1, 9, 0x8180);
  w.name("example.com").u16(type::kTXT).u16(kClassIN);
  // TXT data that looks like a compression pointer stays as it is.
  w.ptr(12).rr(type::kTXT, 4).u8(3).u8(0xc0).u8(12).u8('x');
  w.u8(0).rr(type::kOPT, 0, 0x00008000, 1232);  // EDNS: DO bit, 1232-byte UDP payload
  auto m = parse(w.bytes());
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  EXPECT_EQ(m->answers[0].rdata, (std::vector<uint8_t>{3, 0xc0, 12, 'x'}));
  EXPECT_EQ(m->answers[0].target, "");
  const Record& opt = m->additional[0];
  EXPECT_EQ(opt.name, "");
  EXPECT_EQ(opt.type, type::kOPT);
  EXPECT_EQ(opt.klass, 1232);
  EXPECT_EQ(opt.ttl, 0x8000u);
  auto again = parse(serialize(*m));
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
  EXPECT_EQ(*again, *m);
}

Message sample_response() {
  Message m;
  m.id = 0x4242;
  m.qr = m.rd = m.ra = true;
  m.questions.push_back({"www.example.com", type::kA, kClassIN});
  Record cname;
  cname.name = "www.example.com";
  cname.type = type::kCNAME;
  cname.ttl = 30;
  cname.target = "edge.cdn.example.com";
  cname.rdata = *encode_name(cname.target);
  m.answers.push_back(cname);
  for (uint8_t i = 1; i <= 3; ++i) {
    Record a;
    a.name = "edge.cdn.example.com";
    a.type = type::kA;
    a.ttl = 20;
    a.rdata = {198, 51, 100, i};
    m.answers.push_back(a);
  }
  Record ns;
  ns.name = "example.com";
  ns.type = type::kNS;
  ns.target = "ns1.example.com";
  ns.rdata = *encode_name(ns.target);
  m.authority.push_back(ns);
  Record odd;
  odd.name = "a\\046b.example.com";
  odd.type = type::kTXT;
  odd.rdata = {2, 'h', 'i'};
  m.additional.push_back(odd);
  return m;
}

TEST(DnsMessage, SerializeRoundTripsAndCompresses) {
  Message m = sample_response();
  std::vector<uint8_t> wire = serialize(m);
  auto back = parse(wire);
  ASSERT_TRUE(back.has_value()) << back.error().to_string();
  EXPECT_EQ(*back, m);
  // Names repeat: compressed, the message is much smaller than with every name in full.
  size_t uncompressed = 12;
  for (const Question& q : m.questions) uncompressed += encode_name(q.name)->size() + 4;
  for (const auto* section : {&m.answers, &m.authority, &m.additional}) {
    for (const Record& r : *section) uncompressed += encode_name(r.name)->size() + 10 + r.rdata.size();
  }
  EXPECT_LT(wire.size() + 100, uncompressed);
  // The answer's owner is a pointer to the question name.
  EXPECT_EQ(wire[12 + 17 + 4], 0xc0);
  EXPECT_EQ(wire[12 + 17 + 4 + 1], 12);
  // Writing what was read gives the same bytes.
  EXPECT_EQ(serialize(*back), wire);
}

TEST(DnsMessage, SerializeKeepsPointersWithinRange) {
  // Past 16 KiB of output no new suffix can be a pointer target; names must stay correct.
  Message m;
  m.qr = true;
  for (int i = 0; i < 600; ++i) {
    Record r;
    r.name = "host-" + std::to_string(i) + ".zone-" + std::to_string(i % 7) + ".example";
    r.type = type::kTXT;
    r.rdata = std::vector<uint8_t>(20, 'x');
    r.rdata[0] = 19;
    m.answers.push_back(r);
  }
  std::vector<uint8_t> wire = serialize(m);
  ASSERT_GT(wire.size(), 0x4000u);
  auto back = parse(wire);
  ASSERT_TRUE(back.has_value()) << back.error().to_string();
  EXPECT_EQ(*back, m);
}

TEST(DnsMessage, SerializeCompressesOnlyWhereRfc1035Allows) {
  // MX exchange names may be compressed; SRV targets must not be (RFC 2782), since a
  // receiver is not required to decompress them.
  Message m;
  Record mx;
  mx.name = "example.com";
  mx.type = type::kMX;
  mx.rdata = {0, 10};
  auto exchange = *encode_name("example.com");
  mx.rdata.insert(mx.rdata.end(), exchange.begin(), exchange.end());
  mx.target = "example.com";
  Record srv;
  srv.name = "_x._tcp.example.com";
  srv.type = type::kSRV;
  srv.rdata = {0, 1, 0, 2, 0, 3};
  srv.rdata.insert(srv.rdata.end(), exchange.begin(), exchange.end());
  srv.target = "example.com";
  m.answers = {mx, srv};
  std::vector<uint8_t> wire = serialize(m);
  // Header, owner (13), fixed fields (10), preference (2), then a pointer to the owner.
  EXPECT_EQ(std::vector<uint8_t>(wire.begin() + 37, wire.begin() + 39), (std::vector<uint8_t>{0xc0, 12}));
  // The SRV data closes the message with the full name.
  EXPECT_EQ(std::vector<uint8_t>(wire.end() - 13, wire.end()), exchange);
  auto back = parse(wire);
  ASSERT_TRUE(back.has_value()) << back.error().to_string();
  EXPECT_EQ(*back, m);
}

TEST(DnsMessage, DecompressedSrvTargetsCanOutgrowTheWireLimit) {
  // 300 SRV records whose targets are 2-byte pointers to a 255-byte name: a 6 KiB message
  // whose SRV targets must be written in full (RFC 2782), over 64 KiB. It still reads back.
  std::string l63(63, 'a');
  Wire w;
  w.header(0, 0, 0, 301);
  w.label(l63).label(l63).label(l63).label(std::string(61, 'b')).u8(0).rr(type::kTXT, 0);
  for (int i = 0; i < 300; ++i) w.ptr(12).rr(type::kSRV, 8).u16(0).u16(0).u16(443).ptr(12);
  auto m = parse(w.bytes());
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  EXPECT_EQ(m->additional[300].rdata.size(), 6u + 255u);
  std::vector<uint8_t> wire = serialize(*m);
  EXPECT_GT(wire.size(), 65535u);
  auto back = parse(wire);
  ASSERT_TRUE(back.has_value()) << back.error().to_string();
  EXPECT_EQ(*back, *m);
}

TEST(DnsMessage, SerializeWritesMalformedNameDataAsGiven) {
  // A CNAME built by hand with data that is not a name is written as it is; parse then
  // rejects it, as it would from a peer.
  Message m;
  Record r;
  r.name = "a.test";
  r.type = type::kCNAME;
  r.rdata = {0x41, 0x00};
  m.answers.push_back(r);
  std::vector<uint8_t> wire = serialize(m);
  EXPECT_EQ(std::vector<uint8_t>(wire.end() - 2, wire.end()), r.rdata);
  EXPECT_FALSE(parse(wire).has_value());
}

TEST(DnsMessage, ErrorReplyEchoesIdOpcodeRdAndQuestion) {
  Wire q;
  q.header(1, 0, 0, 1, 0x9a9a, 0x0100).name("ExAmPle.COM").u16(type::kAAAA).u16(kClassIN);
  q.u8(0).rr(type::kOPT, 0, 0, 4096);
  std::vector<uint8_t> reply = make_error_reply(q.bytes(), Rcode::kRefused);
  auto m = parse(reply);
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  EXPECT_EQ(m->id, 0x9a9a);
  EXPECT_TRUE(m->qr);
  EXPECT_TRUE(m->rd);
  EXPECT_TRUE(m->ra);
  EXPECT_FALSE(m->aa || m->tc || m->ad || m->cd);
  EXPECT_EQ(m->rcode, Rcode::kRefused);
  ASSERT_EQ(m->questions.size(), 1u);
  EXPECT_EQ(m->questions[0].type, type::kAAAA);
  EXPECT_TRUE(m->answers.empty() && m->authority.empty() && m->additional.empty());
  // The client's case survives (resolvers using 0x20 randomisation compare it).
  EXPECT_EQ(std::vector<uint8_t>(reply.begin() + 12, reply.end()),
            std::vector<uint8_t>(q.bytes().begin() + 12, q.bytes().begin() + 12 + 13 + 4));
}

TEST(DnsMessage, ErrorReplyCopiesOpcodeAndClearsRd) {
  Wire q;
  q.header(1, 0, 0, 0, 7, static_cast<uint16_t>(4 << 11)).name("a.test").u16(type::kSOA).u16(kClassIN);
  auto m = parse(make_error_reply(q.bytes(), Rcode::kNotImp));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->opcode, 4);
  EXPECT_FALSE(m->rd);
  EXPECT_EQ(m->rcode, Rcode::kNotImp);
}

TEST(DnsMessage, ErrorReplyToGarbageNeverFails) {
  std::vector<uint8_t> empty;
  auto r0 = parse(make_error_reply(empty, Rcode::kFormErr));
  ASSERT_TRUE(r0.has_value());
  EXPECT_EQ(r0->id, 0);
  EXPECT_TRUE(r0->questions.empty());

  std::vector<uint8_t> one{0xff};
  EXPECT_EQ(parse(make_error_reply(one, Rcode::kFormErr))->id, 0);

  std::vector<uint8_t> two{0x12, 0x34};
  auto r2 = parse(make_error_reply(two, Rcode::kFormErr));
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->id, 0x1234);
  EXPECT_EQ(r2->rcode, Rcode::kFormErr);

  // A question whose name is a pointer, one cut short, one with a bad label: no question.
  Wire ptr;
  ptr.header(1).ptr(12).u16(type::kA).u16(kClassIN);
  Wire cut;
  cut.header(1).name("example.com").u16(type::kA);
  Wire bad;
  bad.header(1).u8(0x41).u8(0).u16(type::kA).u16(kClassIN);
  Wire none;
  none.header(0).name("example.com").u16(type::kA).u16(kClassIN);
  for (const Wire* w : {&ptr, &cut, &bad, &none}) {
    auto m = parse(make_error_reply(w->bytes(), Rcode::kFormErr));
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->id, 0x1234);
    EXPECT_TRUE(m->questions.empty());
  }

  // Rcode bits above 4 are dropped, not spilled into other fields.
  auto r = make_error_reply(two, static_cast<Rcode>(0x1f));
  EXPECT_EQ(r[3], 0x8f);
}

}  // namespace
}  // namespace km::proxy::dns
