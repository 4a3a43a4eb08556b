#include "km/proxy/http_head.h"

#include <gtest/gtest.h>

#include <string>

namespace km::proxy::http {
namespace {

using namespace std::string_literals;

RequestHead parse_ok(std::string_view text) {
  auto r = parse_request_head(text);
  EXPECT_TRUE(r) << r.error().to_string();
  if (!r || !*r) {
    ADD_FAILURE() << "head incomplete: " << text;
    return {};
  }
  return **r;
}

// The error message, or "" when the head parsed or needs more bytes.
std::string head_error(std::string_view text, size_t max_size = kDefaultMaxHeadSize) {
  auto r = parse_request_head(text, max_size);
  return r ? "" : r.error().message();
}

TEST(HttpHead, ParsesOriginFormRequest) {
  std::string text =
      "GET /v1/models?limit=5 HTTP/1.1\r\n"
      "Host: api.example.com\r\n"
      "User-Agent:curl/8.0\r\n"
      "X-Empty:\r\n"
      "Accept: \t */* \t\r\n"
      "\r\n"
      "body";
  RequestHead h = parse_ok(text);
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.target, "/v1/models?limit=5");
  EXPECT_EQ(h.minor_version, 1);
  ASSERT_EQ(h.headers.size(), 4u);
  EXPECT_EQ(h.headers[1].name, "User-Agent");
  EXPECT_EQ(h.headers[1].value, "curl/8.0");
  EXPECT_EQ(h.headers[2].value, "");
  EXPECT_EQ(h.headers[3].value, "*/*");
  EXPECT_EQ(h.size, text.size() - 4);
  EXPECT_EQ(h.header("HOST").value_or(""), "api.example.com");
  EXPECT_EQ(h.header("accept").value_or(""), "*/*");
  EXPECT_FALSE(h.header("Cookie"));
  EXPECT_EQ(h.count("host"), 1u);
  EXPECT_EQ(h.count("cookie"), 0u);
}

TEST(HttpHead, AcceptsProxyTargetsAndHttp10) {
  RequestHead c = parse_ok("CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n");
  EXPECT_EQ(c.method, "CONNECT");
  EXPECT_EQ(c.target, "api.example.com:443");
  RequestHead a = parse_ok("GET http://example.com/x HTTP/1.0\r\n\r\n");
  EXPECT_EQ(a.target, "http://example.com/x");
  EXPECT_EQ(a.minor_version, 0);
  EXPECT_TRUE(a.headers.empty());
  EXPECT_EQ(parse_ok("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").target, "*");
  // Repeated headers keep their order; header() returns the first.
  RequestHead r = parse_ok("GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\naccept: b\r\n\r\n");
  EXPECT_EQ(r.count("Accept"), 2u);
  EXPECT_EQ(r.header("ACCEPT").value_or(""), "a");
  // obs-text (bytes >= 0x80) in values is allowed by RFC 9110.
  EXPECT_EQ(parse_ok("GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n").headers[0].value, "caf\xc3\xa9");
}

TEST(HttpHead, NeedsMoreBytesUntilTheHeadEnds) {
  std::string full = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
  for (size_t n = 0; n < full.size(); ++n) {
    auto r = parse_request_head(std::string_view(full).substr(0, n));
    ASSERT_TRUE(r) << n << ": " << r.error().to_string();
    EXPECT_FALSE(*r) << n;
  }
  RequestHead h = parse_ok(full + "abc");
  EXPECT_EQ(h.size, full.size());
}

TEST(HttpHead, SkipsExactlyOneLeadingCrlf) {
  RequestHead h = parse_ok("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.size, 2 + 16 + 9 + 2u);  // the skipped CRLF is part of the head's bytes
  EXPECT_NE(head_error("\r\n\r\nGET / HTTP/1.1\r\n\r\n"), "");
  EXPECT_NE(head_error(" GET / HTTP/1.1\r\n\r\n"), "");
  EXPECT_NE(head_error("\tGET / HTTP/1.1\r\n\r\n"), "");
  EXPECT_NE(head_error("\nGET / HTTP/1.1\r\n\r\n"), "");
}

TEST(HttpHead, RejectsBareLfAndBareCr) {
  EXPECT_NE(head_error("GET / HTTP/1.1\nHost: x\r\n\r\n").find("bare LF"), std::string::npos);
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nHost: x\n\r\n").find("bare LF"), std::string::npos);
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nHost: x\r\n\n").find("bare LF"), std::string::npos);
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n").find("bare CR"), std::string::npos);
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nHost: x\r\r\n\r\n").find("bare CR"), std::string::npos);
  // Refused before the head ends: no need to wait for more bytes.
  EXPECT_NE(head_error("GET / HTTP/1.1\nHost"), "");
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nHost: a\rb"), "");
}

TEST(HttpHead, RequestLineNeedsOneSpaceBetweenThreeParts) {
  for (const char* bad : {"GET  / HTTP/1.1\r\n\r\n", "GET /  HTTP/1.1\r\n\r\n", "GET / HTTP/1.1 \r\n\r\n",
                          "GET\t/ HTTP/1.1\r\n\r\n", "GET /\tHTTP/1.1\r\n\r\n", "GET /\r\n\r\n",
                          "GET\r\n\r\n", "GET / x HTTP/1.1\r\n\r\n", "G(T / HTTP/1.1\r\n\r\n",
                          "G\xc3\x89T / HTTP/1.1\r\n\r\n", "GET /a\x01 HTTP/1.1\r\n\r\n",
                          "GET /\xff HTTP/1.1\r\n\r\n"}) {
    EXPECT_NE(head_error(bad), "") << bad;
  }
  EXPECT_NE(head_error("GET  / HTTP/1.1\r\n\r\n").find("more than one SP"), std::string::npos);
}

TEST(HttpHead, OnlyHttp10And11) {
  for (const char* bad : {"GET / HTTP/1.2\r\n\r\n", "GET / HTTP/2.0\r\n\r\n", "PRI * HTTP/2.0\r\n\r\n",
                          "GET / HTTP/0.9\r\n\r\n", "GET / http/1.1\r\n\r\n", "GET / HTTP/1.10\r\n\r\n",
                          "GET / HTTP/1\r\n\r\n", "GET / HTTPS/1.1\r\n\r\n"}) {
    EXPECT_NE(head_error(bad), "") << bad;
  }
  EXPECT_NE(head_error("PRI * HTTP/2.0\r\n\r\n").find("HTTP/2.0"), std::string::npos);
}

TEST(HttpHead, HeaderNamesAreTokensWithoutWhitespaceBeforeColon) {
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n").find("whitespace between"),
            std::string::npos);
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nHost\t: x\r\n\r\n"), "");
  EXPECT_NE(head_error("GET / HTTP/1.1\r\n: x\r\n\r\n").find("empty header name"), std::string::npos);
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nNo colon here\r\n\r\n").find("has no ':'"), std::string::npos);
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nX(y): z\r\n\r\n").find("not a token"), std::string::npos);
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nX Y: z\r\n\r\n"), "");
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nX\xc3\xa9: z\r\n\r\n"), "");
}

TEST(HttpHead, RejectsObsFold) {
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nX-A: 1\r\n  continued\r\n\r\n").find("obs-fold"), std::string::npos);
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nX-A: 1\r\n\tcontinued\r\n\r\n"), "");
  // Whitespace between the request line and the first header is the same trick.
  EXPECT_NE(head_error("GET / HTTP/1.1\r\n Host: x\r\n\r\n"), "");
}

TEST(HttpHead, RejectsControlCharactersInValues) {
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"s).find("NUL"), std::string::npos);
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nX: a\x01" "b\r\n\r\n"), "");
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n"), "");
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nX: a\x0b" "b\r\n\r\n"), "");
  // HTAB is allowed inside a value.
  EXPECT_EQ(parse_ok("GET / HTTP/1.1\r\nX: a\tb\r\n\r\n").headers[0].value, "a\tb");
}

TEST(HttpHead, ErrorsDoNotQuoteHeaderValuesOrTargets) {
  std::string e = head_error("GET / HTTP/1.1\r\nAuthorization: Bearer sk-secret\x01\r\n\r\n");
  EXPECT_NE(e.find("Authorization"), std::string::npos) << e;
  EXPECT_EQ(e.find("sk-secret"), std::string::npos) << e;
  e = head_error("GET /?token=sk-secret\x01 HTTP/1.1\r\n\r\n");
  EXPECT_EQ(e.find("sk-secret"), std::string::npos) << e;
  for (const char* userinfo : {"user:sk-secret@example.com", "user:sk-secret%40@example.com",
                               "user:sk-secret @example.com", "[::1:sk-secret@x.com"}) {
    e = parse_authority(userinfo, 443).error().message();
    EXPECT_EQ(e.find("sk-secret"), std::string::npos) << e;
  }
}

TEST(HttpHead, AtMostOneHostHeader) {
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nHost: allowed.test\r\nhost: evil.test\r\n\r\n").find("Host"),
            std::string::npos);
  EXPECT_NE(head_error("GET / HTTP/1.1\r\nHost: a\r\nHOST: a\r\n\r\n"), "");
}

TEST(HttpHead, AtMostOneHundredHeaders) {
  std::string head = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 100; ++i) head += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(parse_ok(head + "\r\n").headers.size(), 100u);
  auto r = parse_request_head(head + "X-100: v\r\n\r\n");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kResourceExhausted);
}

TEST(HttpHead, SizeLimit) {
  std::string head = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";  // 27 bytes
  EXPECT_TRUE(parse_request_head(head, head.size()));
  EXPECT_EQ(parse_ok(head).size, head.size());
  auto over = parse_request_head(head, head.size() - 1);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code(), ErrorCode::kResourceExhausted);
  // A head that has not ended by max_size bytes is refused without waiting for the rest.
  auto unended = parse_request_head("GET / HTTP/1.1\r\nX: " + std::string(100, 'a'), 64);
  ASSERT_FALSE(unended);
  EXPECT_EQ(unended.error().code(), ErrorCode::kResourceExhausted);
  auto partial = parse_request_head("GET / HTTP/1.1\r\nX: " + std::string(40, 'a'), 64);
  ASSERT_TRUE(partial);
  EXPECT_FALSE(*partial);
  // The default limit is 64 KiB.
  std::string big = "GET / HTTP/1.1\r\nX: " + std::string(70000, 'a');
  EXPECT_FALSE(parse_request_head(big));
}

TEST(HttpAuthority, HostsAndPorts) {
  auto a = parse_authority("API.Example.COM.:8443", 443);
  ASSERT_TRUE(a) << a.error().to_string();
  EXPECT_EQ(a->host, "api.example.com");
  EXPECT_EQ(a->port, 8443);
  EXPECT_TRUE(a->explicit_port);
  EXPECT_FALSE(a->ip_literal);
  auto d = parse_authority("example.com", 80);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->port, 80);
  EXPECT_FALSE(d->explicit_port);
  auto v4 = parse_authority("192.0.2.7:443", 80);
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->host, "192.0.2.7");
  EXPECT_TRUE(v4->ip_literal);
  auto v6 = parse_authority("[2001:DB8:0::1]:8080", 80);
  ASSERT_TRUE(v6) << v6.error().to_string();
  EXPECT_EQ(v6->host, "2001:db8::1");  // canonical, lowercase, no brackets
  EXPECT_EQ(v6->port, 8080);
  EXPECT_TRUE(v6->ip_literal);
  auto v6d = parse_authority("[::1]", 443);
  ASSERT_TRUE(v6d);
  EXPECT_EQ(v6d->host, "::1");
  EXPECT_EQ(v6d->port, 443);
  EXPECT_TRUE(parse_authority("_acme.example.com:1", 80));
  EXPECT_EQ(parse_authority("x.test:00443", 80)->port, 443);
  EXPECT_EQ(parse_authority("x.test:65535", 80)->port, 65535);
}

TEST(HttpAuthority, Rejects) {
  for (const char* bad :
       {"", ":443", "user@example.com", "user:pw@example.com:443", "example.com:0", "example.com:65536",
        "example.com:99999", "example.com:-1", "example.com:+80", "example.com:8o", "example.com:",
        "example.com:443:443", "exa mple.com", "example.com :443", "example.com\t", "exa\x01mple.com",
        "ex%61mple.com", "[fe80::1%25eth0]:443", "2001:db8::1", "::1", "[::1", "[::1]x", "[::1]:",
        "[192.0.2.1]", "[v1.fe]:80", "[]", "a..b", ".example.com", "-a.example.com", "*.example.com",
        "ex_ample.com/path", "b\xc3\xbc" "cher.de", "127.1", "0x7f000001", "2130706433", "192.0.2.1.",
        "example.com..", "example.com:443\r\n"}) {
    EXPECT_FALSE(parse_authority(bad, 443)) << bad;
  }
  EXPECT_FALSE(parse_authority(std::string(64, 'a') + ".com", 443));
  EXPECT_NE(parse_authority("2001:db8::1", 443).error().message().find("brackets"), std::string::npos);
  EXPECT_NE(parse_authority("user@x.com", 443).error().message().find("userinfo"), std::string::npos);
}

TEST(HttpAbsoluteUri, Forms) {
  auto u = parse_absolute_uri("HTTP://API.Example.com/v1/x?q=1&r=%20");
  ASSERT_TRUE(u) << u.error().to_string();
  EXPECT_EQ(u->scheme, "http");
  EXPECT_EQ(u->authority.host, "api.example.com");
  EXPECT_EQ(u->authority.port, 80);
  EXPECT_FALSE(u->authority.explicit_port);
  EXPECT_EQ(u->path, "/v1/x?q=1&r=%20");
  EXPECT_EQ(parse_absolute_uri("https://example.com")->path, "/");
  EXPECT_EQ(parse_absolute_uri("https://example.com")->authority.port, 443);
  EXPECT_EQ(parse_absolute_uri("https://example.com?x=1")->path, "/?x=1");
  EXPECT_EQ(parse_absolute_uri("wss://example.com:8443/socket")->authority.port, 8443);
  EXPECT_EQ(parse_absolute_uri("ws://[::1]/")->authority.host, "::1");
  EXPECT_EQ(parse_absolute_uri("http://example.com/a@b")->path, "/a@b");  // '@' in a path is fine
}

TEST(HttpAbsoluteUri, Rejects) {
  for (const char* bad :
       {"", "/relative", "example.com:443", "ftp://example.com/", "file:///etc/passwd", "http:/x.com/",
        "http//x.com/", "://x.com/", "http://", "http:///path", "http://user:pw@x.com/", "http://x.com/#frag",
        "http://x.com#", "http://x.com/a b", "http://x.com/\x7f", "http://x.com/\xc3\xa9", "http://x.com:0/",
        "http://x.com:/", "http://[::1/", "h\xc3\xa9://x.com/", "ht tp://x.com/", "http://x.com\\@evil.test/",
        "http://%65vil.test/"}) {
    EXPECT_FALSE(parse_absolute_uri(bad)) << bad;
  }
}

BodyFraming framing_ok(const std::string& headers, int minor = 1) {
  RequestHead h = parse_ok("POST / HTTP/1." + std::to_string(minor) + "\r\n" + headers + "\r\n");
  auto f = request_body_framing(h);
  EXPECT_TRUE(f) << headers << ": " << f.error().to_string();
  return f ? *f : BodyFraming{};
}

std::string framing_error(const std::string& headers, int minor = 1) {
  RequestHead h = parse_ok("POST / HTTP/1." + std::to_string(minor) + "\r\n" + headers + "\r\n");
  auto f = request_body_framing(h);
  return f ? "" : f.error().message();
}

TEST(HttpBodyFraming, NoneLengthChunked) {
  EXPECT_EQ(framing_ok("Host: x\r\n").kind, BodyFraming::kNone);
  EXPECT_EQ(framing_ok("Host: x\r\n").length, 0u);
  BodyFraming cl = framing_ok("Content-Length: 42\r\n");
  EXPECT_EQ(cl.kind, BodyFraming::kLength);
  EXPECT_EQ(cl.length, 42u);
  EXPECT_EQ(framing_ok("Content-Length: 0\r\n").kind, BodyFraming::kLength);
  EXPECT_EQ(framing_ok("Content-Length: 5\r\ncontent-length: 5\r\n").length, 5u);
  EXPECT_EQ(framing_ok("Content-Length: 5, 5,5\r\n").length, 5u);
  EXPECT_EQ(framing_ok("Content-Length: 9007199254740992\r\n").length, uint64_t{1} << 53);
  EXPECT_EQ(framing_ok("Content-Length: 0010\r\n").length, 10u);
  EXPECT_EQ(framing_ok("Transfer-Encoding: chunked\r\n").kind, BodyFraming::kChunked);
  EXPECT_EQ(framing_ok("Transfer-Encoding: CHUNKED\r\n").kind, BodyFraming::kChunked);
  EXPECT_EQ(framing_ok("Transfer-Encoding: gzip, chunked\r\n").kind, BodyFraming::kChunked);
  EXPECT_EQ(framing_ok("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n").kind, BodyFraming::kChunked);
}

TEST(HttpBodyFraming, RejectsAmbiguousFraming) {
  // TE.CL / CL.TE smuggling: both present.
  EXPECT_NE(framing_error("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n").find("both"), std::string::npos);
  EXPECT_NE(framing_error("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"), "");
  // Final coding must be exactly chunked.
  for (const char* te : {"Transfer-Encoding: xchunked\r\n", "Transfer-Encoding: chunked-false\r\n",
                         "Transfer-Encoding: chunked, gzip\r\n", "Transfer-Encoding: identity\r\n",
                         "Transfer-Encoding: chunked;q=1\r\n", "Transfer-Encoding: \"chunked\"\r\n",
                         "Transfer-Encoding: chunked,\r\n", "Transfer-Encoding: ,chunked\r\n",
                         "Transfer-Encoding:\r\n", "Transfer-Encoding: chunked, chunked\r\n",
                         "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                         "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                         "Transfer-Encoding: ch\xc3\xbcnked\r\n", "Transfer-Encoding: chunked chunked\r\n"}) {
    EXPECT_NE(framing_error(te), "") << te;
  }
  EXPECT_NE(framing_error("Transfer-Encoding: chunked\r\n", 0).find("HTTP/1.0"), std::string::npos);
  // Content-Length: digits only, all equal, at most 2^53.
  for (const char* cl : {"Content-Length: 5\r\nContent-Length: 6\r\n", "Content-Length: 5, 6\r\n",
                         "Content-Length: -1\r\n", "Content-Length: +5\r\n", "Content-Length: 0x10\r\n",
                         "Content-Length: 5 5\r\n", "Content-Length:\r\n", "Content-Length: 5,\r\n",
                         "Content-Length: 1e3\r\n", "Content-Length: 9007199254740993\r\n",
                         "Content-Length: 99999999999999999999999999\r\n"}) {
    EXPECT_NE(framing_error(cl), "") << cl;
  }
}

// Feeds `body` to a fresh scanner in pieces of `step` bytes; returns consumed bytes or the error.
struct ScanResult {
  bool ok = false;
  size_t consumed = 0;
  bool done = false;
  std::string error;
};

ScanResult scan(std::string_view body, size_t step = std::string_view::npos) {
  ChunkedScanner s;
  ScanResult out;
  for (size_t pos = 0; pos < body.size() || pos == 0;) {
    size_t n = std::min(step, body.size() - pos);
    auto r = s.feed(body.substr(pos, n));
    if (!r) {
      out.error = r.error().message();
      return out;
    }
    out.consumed += *r;
    pos += n;
    if (s.done() || body.empty()) break;
  }
  out.ok = true;
  out.done = s.done();
  return out;
}

TEST(HttpChunked, FindsTheEndInAnySplit) {
  std::string body =
      "5\r\nhello\r\n"
      "1A;name=value;q=\"x y\"\r\n" + std::string(26, 'z') + "\r\n"
      "0 ;last\r\n"
      "Trailer-A: 1\r\n"
      "x-b:\t2 \r\n"
      "\r\n";
  std::string next = "GET / HTTP/1.1\r\n\r\n";
  for (size_t step : {size_t{1}, size_t{2}, size_t{3}, size_t{7}, size_t{64}, std::string_view::npos}) {
    ScanResult r = scan(body + next, step);
    EXPECT_TRUE(r.ok) << step << ": " << r.error;
    EXPECT_TRUE(r.done) << step;
    EXPECT_EQ(r.consumed, body.size()) << step;
  }
  ScanResult minimal = scan("0\r\n\r\n");
  EXPECT_TRUE(minimal.done);
  EXPECT_EQ(minimal.consumed, 5u);
  EXPECT_TRUE(scan("000\r\n\r\n").done);
  EXPECT_TRUE(scan("a\r\n0123456789\r\n0\r\n\r\n").done);
}

TEST(HttpChunked, NotDoneUntilTheFinalCrlf) {
  std::string body = "3\r\nabc\r\n0\r\nT: v\r\n\r\n";
  for (size_t n = 0; n < body.size(); ++n) {
    ScanResult r = scan(body.substr(0, n));
    EXPECT_TRUE(r.ok) << n << ": " << r.error;
    EXPECT_FALSE(r.done) << n;
    EXPECT_EQ(r.consumed, n);
  }
  ChunkedScanner s;
  ASSERT_TRUE(s.feed(body));
  EXPECT_TRUE(s.done());
  auto after = s.feed("more");
  ASSERT_TRUE(after);
  EXPECT_EQ(*after, 0u);
}

TEST(HttpChunked, RejectsMalformed) {
  for (const char* bad : {
           "x\r\n", "\r\n", " 5\r\nhello\r\n0\r\n\r\n", "-5\r\n", "+5\r\n", "0x5\r\nhello\r\n",
           "5\nhello\r\n0\r\n\r\n",        // bare LF after the size
           "5\r\nhello\n0\r\n\r\n",        // bare LF after the data
           "5\r\nhelloX\r\n",              // data longer than the size
           "5\r\nhello\r\n0\n\r\n",        // bare LF after the last chunk
           "0\r\n\n",                      // bare LF as the final line
           "0\r\nT: v\n\r\n",              // bare LF in a trailer
           "0\r\n\rX",                     // bare CR
           "5 \r\nhello\r\n",              // whitespace not followed by ';'
           "5 x\r\n", "5;a=\x01\r\n", "5;a\nb\r\nhello\r\n", "5;a\rb\r\n",
           "0\r\n T: folded\r\n\r\n", "0\r\nT : v\r\n\r\n", "0\r\n: v\r\n\r\n", "0\r\nno-colon\r\n\r\n",
           "20000000000001\r\n",           // 2^53 + 1
           "FFFFFFFFFFFFFFFFFFFF\r\n",     // would overflow 64 bits
       }) {
    ScanResult r = scan(bad);
    EXPECT_FALSE(r.ok) << bad;
  }
  EXPECT_FALSE(scan("0\r\nT: a\0b\r\n\r\n"s).ok);
  EXPECT_TRUE(scan("20000000000000\r\n").ok);  // exactly 2^53 is allowed (still waiting for data)
}

TEST(HttpChunked, LineLimits) {
  // kMaxChunkLine bytes before the CRLF are fine, one more is not.
  EXPECT_TRUE(scan("1;" + std::string(kMaxChunkLine - 2, 'e') + "\r\nx\r\n0\r\n\r\n").done);
  ChunkedScanner s;
  auto r = s.feed("1;" + std::string(kMaxChunkLine - 1, 'e') + "\r\n");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kResourceExhausted);
  // A size made of many leading zeros is a long line too.
  EXPECT_TRUE(scan(std::string(kMaxChunkLine - 1, '0') + "1\r\nx\r\n0\r\n\r\n").done);
  EXPECT_FALSE(scan(std::string(kMaxChunkLine, '0') + "1\r\n").ok);
  EXPECT_TRUE(scan("0\r\nT: " + std::string(kMaxChunkLine - 3, 'v') + "\r\n\r\n").done);
  EXPECT_FALSE(scan("0\r\nT: " + std::string(kMaxChunkLine - 2, 'v') + "\r\n\r\n").ok);
}

TEST(HttpChunked, ErrorsAreSticky) {
  ChunkedScanner s;
  auto first = s.feed("5\nhello");
  ASSERT_FALSE(first);
  auto again = s.feed("0\r\n\r\n");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message(), first.error().message());
  EXPECT_FALSE(s.done());
}

}  // namespace
}  // namespace km::proxy::http

namespace km::proxy::http {
namespace {

TEST(HttpSniff, WhatALenientServerWouldReadAsARequest) {
  for (std::string_view s : {"GET / HTTP/1.1\r\n", "\r\n\r\nGET / HTTP/1.1\r\n", "get / HTTP/1.1\r\n", "GET /\n",
                             "GET  /x  http/1.0\n", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "FOO /x HTTP/1.1\r\n", "GET ",
                             "POST\t/x"}) {
    EXPECT_EQ(sniff_http(s), HttpSniff::kHttp) << s;
  }
  for (std::string_view s : std::initializer_list<std::string_view>{"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "EHLO mail.example\r\n",
                                                                   "\x16\x03\x01", std::string_view("\x00\x01", 2),
                                                                   "{\"json\": 1}\n", "hello world\n"}) {
    EXPECT_EQ(sniff_http(s), HttpSniff::kNotHttp) << s;
  }
  for (std::string_view s : {"", "\r\n", "GE", "GET", "SSH-2.0"}) EXPECT_EQ(sniff_http(s), HttpSniff::kNeedMore) << s;
  EXPECT_EQ(sniff_http(std::string(9000, 'A')), HttpSniff::kHttp);  // an endless first line is suspect
}

}  // namespace
}  // namespace km::proxy::http

namespace km::proxy::http {
namespace {

TEST(ResponseHead, ParsesStatusHeadersAndFraming) {
  std::string raw = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nrest";
  auto h = parse_response_head(raw);
  ASSERT_TRUE(h && *h) << (h ? "" : h.error().to_string());
  EXPECT_EQ((*h)->status, 200);
  EXPECT_EQ((*h)->reason, "OK");
  EXPECT_EQ((*h)->size, raw.size() - 4);
  EXPECT_EQ((*h)->header("content-type").value_or(""), "text/event-stream");
  auto f = response_body_framing(**h, "POST");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->kind, ResponseFraming::kChunked);
  // The same head to a HEAD request has no body.
  EXPECT_EQ(response_body_framing(**h, "HEAD")->kind, ResponseFraming::kNone);
}

TEST(ResponseHead, FramingByStatusAndLength) {
  auto framing = [](std::string raw, std::string method = "GET") {
    auto h = parse_response_head(raw);
    EXPECT_TRUE(h && *h) << raw;
    return response_body_framing(**h, method);
  };
  EXPECT_EQ(framing("HTTP/1.1 204 No Content\r\n\r\n")->kind, ResponseFraming::kNone);
  EXPECT_EQ(framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")->kind, ResponseFraming::kNone);
  EXPECT_EQ(framing("HTTP/1.1 100 Continue\r\n\r\n")->kind, ResponseFraming::kNone);
  auto len = framing("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n");
  ASSERT_TRUE(len);
  EXPECT_EQ(len->kind, ResponseFraming::kLength);
  EXPECT_EQ(len->length, 42u);
  EXPECT_EQ(framing("HTTP/1.0 200 OK\r\n\r\n")->kind, ResponseFraming::kUntilClose);
  EXPECT_EQ(framing("HTTP/1.1 200\r\n\r\n")->kind, ResponseFraming::kUntilClose);  // empty reason
  // Smuggling shapes are refused in this direction too.
  EXPECT_FALSE(framing("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"));
  EXPECT_FALSE(framing("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"));
  EXPECT_FALSE(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"));
}

TEST(ResponseHead, RefusesMalformedHeads) {
  for (std::string raw : {"HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 200OK\r\n\r\n",
                          "HTTP/1.1 099 Low\r\n\r\n", "HTTP/1.1 200 OK\nX: y\r\n\r\n", "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
                          "HTTP/1.1 200 O\x01K\r\n\r\n", "HTTP/1.1 200 OK\r\n folded\r\n\r\n"}) {
    EXPECT_FALSE(parse_response_head(raw)) << raw;
  }
  auto partial = parse_response_head("HTTP/1.1 200 OK\r\nContent-Ty");
  ASSERT_TRUE(partial);
  EXPECT_FALSE(*partial);
  EXPECT_FALSE(parse_response_head("HTTP/1.1 200 OK\r\n" + std::string(70000, 'a'), 65536));
}

TEST(ChunkedScanner, PayloadIsTheBodyWithoutFraming) {
  std::string body = "5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
  // Any fragmentation gives the same payload and the same end.
  for (size_t step : {1u, 2u, 3u, 7u, 100u}) {
    ChunkedScanner s;
    std::string payload;
    size_t consumed = 0;
    for (size_t i = 0; i < body.size() && !s.done(); i += step) {
      auto n = s.feed(std::string_view(body).substr(i, step), &payload);
      ASSERT_TRUE(n);
      consumed += *n;
    }
    EXPECT_TRUE(s.done());
    EXPECT_EQ(payload, "hello, world");
    EXPECT_EQ(consumed, body.size() - 4);
  }
}

}  // namespace
}  // namespace km::proxy::http

namespace km::proxy::http {
namespace {

TEST(ChunkedScanner, EndlessTrailersAreRefused) {
  ChunkedScanner s;
  ASSERT_TRUE(s.feed("0\r\n"));
  Result<size_t> r = size_t{0};
  for (int i = 0; i < 1000 && r; ++i) r = s.feed("a: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kResourceExhausted);
}

}  // namespace
}  // namespace km::proxy::http
