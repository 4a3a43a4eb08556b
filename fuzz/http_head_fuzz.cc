// Fuzz target: every public function of km/proxy/http_head.h on untrusted bytes, with the
// properties the proxy relies on checked as it goes:
//   - a parsed head is a function of its own bytes: the same head parses from buf[0, size),
//     every shorter prefix needs more bytes, and max_size = size is enough but size - 1 is not;
//   - parsed names are tokens and values hold no CR, LF or NUL and no surrounding whitespace;
//   - the chunked scanner gives the same answer (consumed bytes, done, error) whether a body is
//     fed at once or in random splits, including empty ones.
// Any crash, sanitizer report or abort is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "km/proxy/http_head.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using km::fuzz::die;
using km::fuzz::Rng;

namespace http = km::proxy::http;

// Splits derive from the input itself so every run of an input is the same.
struct ScanOutcome {
  bool ok = true;
  size_t consumed = 0;
  bool done = false;
  friend bool operator==(const ScanOutcome&, const ScanOutcome&) = default;
};

ScanOutcome scan_whole(std::string_view body) {
  http::ChunkedScanner s;
  auto r = s.feed(body);
  if (!r) return {false, 0, false};
  if (*r > body.size()) die("feed consumed more than it was given");
  if (!s.done() && *r != body.size()) die("feed stopped early without being done");
  bool done = s.done();
  if (done) {
    auto again = s.feed(body);
    if (!again || *again != 0) die("a finished scanner consumed more");
  }
  return {true, *r, done};
}

ScanOutcome scan_split(std::string_view body, Rng& rng) {
  http::ChunkedScanner s;
  ScanOutcome out;
  size_t pos = 0;
  while (pos < body.size() && !s.done()) {
    size_t n = std::min(body.size() - pos, rng.below(4) == 0 ? rng.below(64) : rng.below(6));
    auto r = s.feed(body.substr(pos, n));
    if (!r) return {false, 0, false};
    if (*r > n) die("feed consumed more than it was given");
    out.consumed += *r;
    pos += n;
  }
  out.done = s.done();
  return out;
}

void check_chunked(std::string_view body, Rng& rng) {
  ScanOutcome whole = scan_whole(body);
  for (int i = 0; i < 3; ++i) {
    if (!(scan_split(body, rng) == whole)) die("chunked scanner depends on how the bytes were split");
  }
}

bool has_forbidden(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

void check_head(std::string_view buf, const http::RequestHead& head, Rng& rng) {
  if (head.size == 0 || head.size > buf.size()) die("head size outside the buffer");
  if (head.minor_version != 0 && head.minor_version != 1) die("minor version not 0 or 1");
  if (head.method.empty() || head.target.empty()) die("empty method or target");
  if (head.headers.size() > http::kMaxHeaders) die("too many headers");
  if (head.count("host") > 1) die("two Host headers accepted");
  for (const http::Header& h : head.headers) {
    if (h.name.empty() || has_forbidden(h.name) || h.name.find_first_of(" \t:") != std::string::npos) {
      die("bad header name accepted");
    }
    if (has_forbidden(h.value)) die("CR, LF or NUL in a header value");
    if (!h.value.empty() && (h.value.front() == ' ' || h.value.front() == '\t' || h.value.back() == ' ' ||
                             h.value.back() == '\t')) {
      die("header value not trimmed");
    }
    if (!head.header(h.name)) die("header() misses a parsed header");
  }
  std::string_view own = buf.substr(0, head.size);
  auto exact = http::parse_request_head(own, head.size);
  if (!exact || !*exact || (*exact)->size != head.size || (*exact)->headers.size() != head.headers.size() ||
      (*exact)->target != head.target) {
    die("head does not parse the same from its own bytes");
  }
  auto tight = http::parse_request_head(own, head.size - 1);
  if (tight) die("head accepted with max_size below its size");
  for (size_t cut : {head.size - 1, rng.below(head.size)}) {
    auto prefix = http::parse_request_head(own.substr(0, cut));
    if (!prefix || *prefix) die("a prefix of a valid head did not ask for more bytes");
  }

  if (head.method == "CONNECT") {
    (void)http::parse_authority(head.target, 443);
  } else if (head.target.front() != '/' && head.target != "*") {
    auto uri = http::parse_absolute_uri(head.target);
    if (uri && (uri->path.empty() || uri->path.front() != '/')) die("absolute URI path not starting with '/'");
  }
  if (auto host = head.header("host")) (void)http::parse_authority(*host, 80);

  auto framing = http::request_body_framing(head);
  if (framing && framing->kind == http::BodyFraming::kLength && framing->length > http::kMaxBodyLength) {
    die("Content-Length over the cap accepted");
  }
  if (framing && framing->kind == http::BodyFraming::kChunked) check_chunked(buf.substr(head.size), rng);
}

void check_authority(std::string_view text) {
  auto a = http::parse_authority(text, 443);
  if (!a) return;
  if (a->host.empty() || a->port == 0) die("empty host or zero port accepted");
  for (char c : a->host) {
    if (c >= 'A' && c <= 'Z') die("host not lowercase");
    if (c == '@' || c == '%' || c == ' ' || c == '[' || c == ']') die("forbidden character in host");
  }
  if (!a->explicit_port && a->port != 443) die("default port not applied");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view buf(reinterpret_cast<const char*>(data), size);
  Rng rng(buf);

  auto head = http::parse_request_head(buf);
  if (head && *head) check_head(buf, **head, rng);
  // A small limit exercises the size checks on every input.
  size_t small = 1 + rng.below(256);
  auto limited = http::parse_request_head(buf, small);
  if (limited && *limited && (*limited)->size > small) die("head over max_size accepted");
  if (head && !*head && limited && *limited) die("a smaller limit completed a head the default did not");

  check_authority(buf);
  (void)http::parse_absolute_uri(buf);
  check_chunked(buf, rng);
  return 0;
}
