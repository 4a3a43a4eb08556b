#include "km/proxy/tls_hello.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "km/base/file.h"

namespace km::proxy::tls {
namespace {

using Bytes = std::vector<uint8_t>;

void put16(Bytes& b, size_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

void append(Bytes& b, const Bytes& more) { b.insert(b.end(), more.begin(), more.end()); }

void append(Bytes& b, std::string_view s) { b.insert(b.end(), s.begin(), s.end()); }

Bytes vec16(const Bytes& inner) {
  Bytes b;
  put16(b, inner.size());
  append(b, inner);
  return b;
}

// server_name extension data with the given (name_type, name) entries.
Bytes server_names(std::initializer_list<std::pair<uint8_t, std::string_view>> entries) {
  Bytes list;
  for (const auto& [type, name] : entries) {
    list.push_back(type);
    put16(list, name.size());
    append(list, name);
  }
  return vec16(list);
}

Bytes sni(std::string_view host) { return server_names({{0, host}}); }

Bytes alpn(std::initializer_list<std::string_view> protocols) {
  Bytes list;
  for (std::string_view p : protocols) {
    list.push_back(static_cast<uint8_t>(p.size()));
    append(list, p);
  }
  return vec16(list);
}

Bytes versions(std::initializer_list<uint16_t> vs) {
  Bytes b{static_cast<uint8_t>(vs.size() * 2)};
  for (uint16_t v : vs) put16(b, v);
  return b;
}

// A ClientHello built field by field, so each test can break exactly one thing.
struct HelloBuilder {
  uint16_t version = 0x0303;
  Bytes session_id = Bytes(32, 0xab);
  Bytes ciphers = {0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f};
  Bytes compression = {0};
  bool with_extensions = true;
  std::vector<std::pair<uint16_t, Bytes>> extensions;

  HelloBuilder& ext(uint16_t type, Bytes data) {
    extensions.emplace_back(type, std::move(data));
    return *this;
  }

  Bytes body() const {
    Bytes b;
    put16(b, version);
    append(b, Bytes(32, 0x42));
    b.push_back(static_cast<uint8_t>(session_id.size()));
    append(b, session_id);
    append(b, vec16(ciphers));
    b.push_back(static_cast<uint8_t>(compression.size()));
    append(b, compression);
    if (with_extensions) {
      Bytes exts;
      for (const auto& [type, data] : extensions) {
        put16(exts, type);
        append(exts, vec16(data));
      }
      append(b, vec16(exts));
    }
    return b;
  }

  Bytes handshake() const { return handshake_of(body()); }

  static Bytes handshake_of(const Bytes& body) {
    Bytes h{1, static_cast<uint8_t>(body.size() >> 16), static_cast<uint8_t>(body.size() >> 8),
            static_cast<uint8_t>(body.size())};
    append(h, body);
    return h;
  }

  Bytes records(size_t fragment = 16384) const { return records_of(handshake(), fragment); }

  static Bytes records_of(const Bytes& hs, size_t fragment = 16384) {
    Bytes out;
    for (size_t pos = 0; pos < hs.size(); pos += fragment) {
      size_t n = std::min(fragment, hs.size() - pos);
      out.insert(out.end(), {22, 3, 1});
      put16(out, n);
      out.insert(out.end(), hs.begin() + static_cast<std::ptrdiff_t>(pos),
                 hs.begin() + static_cast<std::ptrdiff_t>(pos + n));
    }
    return out;
  }
};

ClientHello parse_ok(const Bytes& data) {
  auto r = parse_client_hello(data);
  EXPECT_TRUE(r) << r.error().to_string();
  if (!r || !*r) {
    ADD_FAILURE() << "ClientHello incomplete";
    return {};
  }
  return **r;
}

std::string error_of(const Bytes& data) {
  auto r = parse_client_hello(data);
  if (r) return *r ? "(parsed)" : "(needs more)";
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  return r.error().message();
}

Bytes corpus_file(const std::string& name) {
  auto text = read_file(std::string(KM_SOURCE_DIR) + "/fuzz/corpus/tls/" + name, 1 << 20);
  EXPECT_TRUE(text) << text.error().to_string();
  if (!text) return {};
  return Bytes(text->begin(), text->end());
}

TEST(TlsHello, RealClientHellos) {
  struct Case {
    const char* file;
    const char* sni;
    std::vector<std::string> alpn;
    uint16_t legacy_version;
    bool tls13;
  };
  const std::vector<std::string> h2_h1 = {"h2", "http/1.1"};
  for (const Case& c : std::vector<Case>{
           {"curl-https.bin", "x.test", h2_h1, 0x0303, true},
           {"curl-http11.bin", "api.github.com", {"http/1.1"}, 0x0303, true},
           {"curl-ip.bin", "", h2_h1, 0x0303, true},  // curl sends no SNI for an IP address
           {"curl-tls12.bin", "pypi.org", h2_h1, 0x0303, false},
           {"python-ssl.bin", "files.pythonhosted.org", h2_h1, 0x0303, true},
           {"s_client-alpn.bin", "api.example.com", h2_h1, 0x0303, true},
           {"s_client-nosni.bin", "", {}, 0x0303, true},
           {"s_client-sess.bin", "mixed.case.example.org", {}, 0x0303, true},
           {"s_client-tls11.bin", "x.test", {}, 0x0302, false},
           {"s_client-tls12.bin", "x.test", {}, 0x0303, false},
           {"s_client-ciphers.bin", "long-name-with-dashes.sub.example.co.uk", {}, 0x0303, false},
       }) {
    Bytes data = corpus_file(c.file);
    ClientHello h = parse_ok(data);
    EXPECT_EQ(h.sni, c.sni) << c.file;
    EXPECT_EQ(h.alpn, c.alpn) << c.file;
    EXPECT_EQ(h.legacy_version, c.legacy_version) << c.file;
    bool has13 = std::find(h.supported_versions.begin(), h.supported_versions.end(), 0x0304) !=
                 h.supported_versions.end();
    EXPECT_EQ(has13, c.tls13) << c.file;
    EXPECT_FALSE(h.has_ech) << c.file;
    EXPECT_EQ(h.consumed, data.size()) << c.file;
    EXPECT_TRUE(looks_like_tls(data[0]));
  }
}

TEST(TlsHello, FieldsFromABuiltHello) {
  HelloBuilder b;
  b.ext(0x0a0a, {})  // GREASE
      .ext(0, sni("API.Example.COM."))
      .ext(16, alpn({"h2", "http/1.1"}))
      .ext(43, versions({0x7a7a, 0x0304, 0x0303}))
      .ext(0xfe0d, Bytes{0, 0, 1, 0, 1, 7});
  ClientHello h = parse_ok(b.records());
  EXPECT_EQ(h.sni, "api.example.com");
  EXPECT_EQ(h.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  EXPECT_EQ(h.supported_versions, (std::vector<uint16_t>{0x7a7a, 0x0304, 0x0303}));
  EXPECT_TRUE(h.has_ech);
  EXPECT_EQ(h.legacy_version, 0x0303);
  EXPECT_EQ(h.consumed, b.records().size());

  // No extensions at all, or an empty extension block: a valid (old-style) hello.
  HelloBuilder bare;
  bare.with_extensions = false;
  EXPECT_EQ(parse_ok(bare.records()).sni, "");
  EXPECT_EQ(parse_ok(HelloBuilder{}.records()).sni, "");
  // Underscores and a 253-character name are fine.
  EXPECT_EQ(parse_ok(HelloBuilder{}.ext(0, sni("_dmarc.example.com")).records()).sni, "_dmarc.example.com");
  std::string longest = std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
                        std::string(61, 'd');
  EXPECT_EQ(parse_ok(HelloBuilder{}.ext(0, sni(longest)).records()).sni, longest);
  // server_name entries of other types are skipped.
  EXPECT_EQ(parse_ok(HelloBuilder{}.ext(0, server_names({{1, "opaque"}, {0, "x.test"}})).records()).sni,
            "x.test");
}

TEST(TlsHello, ReassemblesRecordsAndStopsAtTheHello) {
  HelloBuilder b;
  b.ext(0, sni("x.test")).ext(16, alpn({"h2"})).ext(21, Bytes(600, 0));
  Bytes hs = b.handshake();
  for (size_t fragment : {size_t{1}, size_t{2}, size_t{3}, size_t{5}, size_t{100}, hs.size()}) {
    Bytes data = HelloBuilder::records_of(hs, fragment);
    size_t hello_bytes = data.size();
    data.insert(data.end(), {0x14, 3, 3, 0, 1, 1});  // a ChangeCipherSpec record after it
    ClientHello h = parse_ok(data);
    EXPECT_EQ(h.sni, "x.test") << fragment;
    EXPECT_EQ(h.alpn, std::vector<std::string>{"h2"}) << fragment;
    EXPECT_EQ(h.consumed, hello_bytes) << fragment;
  }
  // A hello bigger than one record (2^14) spans two.
  HelloBuilder big;
  big.ext(0, sni("big.test")).ext(0xffce, Bytes(20000, 7));
  Bytes data = big.records();
  EXPECT_GT(data.size(), 16384u + 10);
  EXPECT_EQ(parse_ok(data).sni, "big.test");
}

TEST(TlsHello, NeedsMoreBytesForEveryPrefix) {
  Bytes data = HelloBuilder{}.ext(0, sni("x.test")).records(50);
  for (size_t n = 0; n < data.size(); ++n) {
    auto r = parse_client_hello(std::span<const uint8_t>(data).first(n));
    ASSERT_TRUE(r) << n << ": " << r.error().to_string();
    EXPECT_FALSE(*r) << n;
  }
  EXPECT_EQ(parse_ok(data).sni, "x.test");
}

TEST(TlsHello, RejectsWhatIsNotATlsHandshake) {
  auto text = [](std::string_view s) { return Bytes(s.begin(), s.end()); };
  EXPECT_NE(error_of(text("GET / HTTP/1.1\r\n")).find("not a TLS handshake"), std::string::npos);
  EXPECT_NE(error_of(text("G")).find("not a TLS handshake"), std::string::npos);
  EXPECT_NE(error_of({0x80, 0x2b, 0x01, 0x03, 0x01}), "(needs more)");  // SSLv2-compatible hello
  EXPECT_NE(error_of({0x15, 3, 1, 0, 2, 2, 40}), "(needs more)");      // alert
  EXPECT_NE(error_of({0x16, 2}).find("version"), std::string::npos);
  EXPECT_NE(error_of({0x16, 3, 1, 0, 0}).find("empty"), std::string::npos);
  EXPECT_NE(error_of({0x16, 3, 1, 0x40, 0x01}).find("2^14"), std::string::npos);
  EXPECT_NE(error_of({0x16, 3, 1, 0, 4, 2, 0, 0, 0}).find("not ClientHello"), std::string::npos);  // ServerHello
  // A handshake header claiming more than 64 KiB is refused as soon as it arrives.
  EXPECT_NE(error_of({0x16, 3, 1, 0, 4, 1, 1, 0, 0}).find("over"), std::string::npos);
  EXPECT_FALSE(looks_like_tls('G'));
  EXPECT_FALSE(looks_like_tls(0x80));
  EXPECT_TRUE(looks_like_tls(0x16));
}

TEST(TlsHello, RejectsRecordsInterleavedOrTrailingInTheLastRecord) {
  Bytes hs = HelloBuilder{}.ext(0, sni("x.test")).handshake();
  Bytes first = HelloBuilder::records_of(Bytes(hs.begin(), hs.begin() + 20));
  Bytes rest = HelloBuilder::records_of(Bytes(hs.begin() + 20, hs.end()));
  Bytes interleaved = first;
  interleaved.insert(interleaved.end(), {0x17, 3, 3, 0, 1, 0});
  append(interleaved, rest);
  EXPECT_NE(error_of(interleaved).find("content type 23"), std::string::npos);
  Bytes extra = hs;
  extra.insert(extra.end(), {11, 0, 0, 0});  // another handshake message in the same record
  EXPECT_NE(error_of(HelloBuilder::records_of(extra)).find("after the ClientHello"), std::string::npos);
}

TEST(TlsHello, RejectsLengthsThatDisagreeWithTheirParent) {
  HelloBuilder ok;
  ok.ext(0, sni("x.test"));
  Bytes body = ok.body();
  // Handshake length shorter than the body: the rest is left in the record.
  Bytes hs = HelloBuilder::handshake_of(body);
  hs[3] = static_cast<uint8_t>(hs[3] - 1);
  EXPECT_NE(error_of(HelloBuilder::records_of(hs)), "(parsed)");
  // Body cut short (handshake length matches the cut body).
  for (size_t cut : {size_t{1}, size_t{20}, size_t{35}, size_t{40}, body.size() - 1}) {
    Bytes shorter(body.begin(), body.end() - static_cast<std::ptrdiff_t>(cut));
    EXPECT_NE(error_of(HelloBuilder::records_of(HelloBuilder::handshake_of(shorter))), "(parsed)") << cut;
  }
  // Extra bytes after the extension block.
  Bytes longer = body;
  longer.push_back(0);
  EXPECT_NE(error_of(HelloBuilder::records_of(HelloBuilder::handshake_of(longer))).find("after"),
            std::string::npos);
  HelloBuilder sid;
  sid.session_id = Bytes(33, 1);
  EXPECT_NE(error_of(sid.records()).find("session id"), std::string::npos);
  HelloBuilder odd;
  odd.ciphers = {0x13, 0x01, 0x13};
  EXPECT_NE(error_of(odd.records()).find("cipher"), std::string::npos);
  HelloBuilder none;
  none.ciphers = {};
  EXPECT_NE(error_of(none.records()).find("cipher"), std::string::npos);
  HelloBuilder nocomp;
  nocomp.compression = {};
  EXPECT_NE(error_of(nocomp.records()).find("compression"), std::string::npos);
  HelloBuilder v2;
  v2.version = 0x0200;
  EXPECT_NE(error_of(v2.records()).find("version"), std::string::npos);

  // Extension data that overruns or underfills its extension.
  auto ext_error = [](uint16_t type, Bytes data) { return error_of(HelloBuilder{}.ext(type, std::move(data)).records()); };
  Bytes sni_long = sni("x.test");
  sni_long.push_back(0);
  EXPECT_NE(ext_error(0, sni_long).find("server_name"), std::string::npos);
  EXPECT_EQ(ext_error(0, {0, 9, 0, 0, 6, 'x', '.', 't', 'e', 's', 't'}), "(parsed)");   // (well-formed)
  EXPECT_NE(ext_error(0, {0, 10, 0, 0, 6, 'x', '.', 't', 'e', 's', 't'}), "(parsed)");  // list overruns
  EXPECT_NE(ext_error(0, {0, 4, 0, 0, 6, 'x'}), "(parsed)");                           // name overruns list
  EXPECT_NE(ext_error(0, {0, 0}).find("empty server_name list"), std::string::npos);
  EXPECT_NE(ext_error(0, {}), "(parsed)");
  EXPECT_NE(ext_error(0, server_names({{0, ""}})).find("empty"), std::string::npos);
  EXPECT_NE(ext_error(16, {0, 0}).find("empty ALPN"), std::string::npos);
  EXPECT_NE(ext_error(16, alpn({"h2", ""})).find("empty ALPN protocol name"), std::string::npos);
  EXPECT_NE(ext_error(16, {0, 3, 2, 'h', '2', 0}), "(parsed)");
  EXPECT_NE(ext_error(16, {0, 3, 5, 'h', '2'}), "(parsed)");
  EXPECT_NE(ext_error(43, {3, 3, 4, 3}).find("odd"), std::string::npos);
  EXPECT_NE(ext_error(43, {0}).find("empty"), std::string::npos);
  EXPECT_NE(ext_error(43, {4, 3, 4}), "(parsed)");
  EXPECT_NE(ext_error(43, {2, 3, 4, 0}), "(parsed)");

  // An extension whose length runs past the extension block.
  Bytes bad = ok.body();
  bad[bad.size() - 13] = 0x40;  // high byte of the server_name extension's own length
  EXPECT_NE(error_of(HelloBuilder::records_of(HelloBuilder::handshake_of(bad))).find("overruns"), std::string::npos);
}

TEST(TlsHello, RejectsSniConfusion) {
  auto sni_error = [](Bytes ext) { return error_of(HelloBuilder{}.ext(0, std::move(ext)).records()); };
  EXPECT_NE(sni_error(server_names({{0, "allowed.test"}, {0, "evil.test"}})).find("more than one host_name"),
            std::string::npos);
  EXPECT_NE(error_of(HelloBuilder{}.ext(0, sni("allowed.test")).ext(0, sni("evil.test")).records())
                .find("duplicate"),
            std::string::npos);
  EXPECT_NE(error_of(HelloBuilder{}.ext(16, alpn({"h2"})).ext(16, alpn({"h2"})).records()).find("duplicate"),
            std::string::npos);
  for (std::string_view bad : {"192.0.2.1", "192.0.2.1.", "2001:db8::1", "[::1]", "127.1", "0x7f000001"}) {
    EXPECT_NE(sni_error(sni(bad)), "(parsed)") << bad;
  }
  EXPECT_NE(sni_error(sni("192.0.2.1")).find("IP address"), std::string::npos);
  using namespace std::string_view_literals;
  for (std::string_view bad : {"allowed.test\0.evil.test"sv, "a b.test"sv, "x.test:443"sv, "*.x.test"sv,
                               "b\xc3\xbc" "cher.de"sv, "a..b"sv, ".x.test"sv, "x.test.."sv, "-a.test"sv,
                               "x/y.test"sv, "x.test\n"sv, "."sv}) {
    EXPECT_NE(sni_error(sni(bad)), "(parsed)") << bad;
  }
  EXPECT_NE(sni_error(sni(std::string(64, 'a') + ".test")), "(parsed)");
  EXPECT_NE(sni_error(sni(std::string(250, 'a') + ".test")), "(parsed)");
}

}  // namespace
}  // namespace km::proxy::tls
