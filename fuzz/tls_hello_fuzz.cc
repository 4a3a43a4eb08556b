// Fuzz target: km/proxy/tls_hello.h on untrusted bytes, twice per input:
//   1. the bytes as a client's first flight (records and all);
//   2. the bytes as a ClientHello body, wrapped in a handshake header and cut into records of
//      input-derived sizes, so mutations reach the extension parsers without having to keep
//      the outer lengths right.
// Properties checked: a parsed hello is a function of its own records (the same from
// data[0, consumed), every shorter prefix needs more bytes); the answer does not depend on how
// the handshake was split into records; the SNI is a normalised host name; a first byte that
// is not 0x16 is an error. Any crash, sanitizer report or abort is a bug.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "fuzz_support.h"
#include "km/proxy/tls_hello.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using km::fuzz::die;
using km::fuzz::Rng;

namespace tls = km::proxy::tls;
using Bytes = std::vector<uint8_t>;

bool same(const tls::ClientHello& a, const tls::ClientHello& b) {
  return a.sni == b.sni && a.alpn == b.alpn && a.has_ech == b.has_ech && a.legacy_version == b.legacy_version &&
         a.supported_versions == b.supported_versions;
}

void check_sni(const std::string& sni) {
  if (sni.size() > 253) die("SNI longer than 253 accepted");
  if (!sni.empty() && (sni.back() == '.' || sni.front() == '.')) die("SNI with a leading or trailing dot");
  for (char c : sni) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) die("SNI with a character outside lowercase LDH, '_' and '.'");
  }
}

// Checks a successful parse against its own bytes; returns the hello.
void check_parsed(std::span<const uint8_t> input, const tls::ClientHello& hello, Rng& rng) {
  if (hello.consumed < 9 || hello.consumed > input.size()) die("consumed outside the input");
  if (!tls::looks_like_tls(input[0])) die("parsed a hello that does not look like TLS");
  check_sni(hello.sni);
  for (const std::string& p : hello.alpn) {
    if (p.empty() || p.size() > 255) die("ALPN protocol name of a bad length");
  }
  auto own = tls::parse_client_hello(input.first(hello.consumed));
  if (!own || !*own || !same(**own, hello) || (*own)->consumed != hello.consumed) {
    die("hello does not parse the same from its own records");
  }
  for (size_t cut : {hello.consumed - 1, rng.below(hello.consumed)}) {
    auto prefix = tls::parse_client_hello(input.first(cut));
    if (!prefix || *prefix) die("a prefix of a valid hello did not ask for more bytes");
  }
}

Bytes wrap(std::span<const uint8_t> body, Rng& rng, bool split) {
  Bytes hs = {1, static_cast<uint8_t>(body.size() >> 16), static_cast<uint8_t>(body.size() >> 8),
              static_cast<uint8_t>(body.size())};
  hs.insert(hs.end(), body.begin(), body.end());
  Bytes out;
  size_t pos = 0;
  while (pos < hs.size()) {
    size_t n = split ? 1 + rng.below(rng.below(3) == 0 ? 400 : 8) : 16384;
    n = std::min(n, hs.size() - pos);
    out.insert(out.end(), {22, 3, static_cast<uint8_t>(rng.below(4)), static_cast<uint8_t>(n >> 8),
                           static_cast<uint8_t>(n)});
    out.insert(out.end(), hs.begin() + static_cast<std::ptrdiff_t>(pos),
               hs.begin() + static_cast<std::ptrdiff_t>(pos + n));
    pos += n;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> input(data, size);
  Rng rng(input);

  auto raw = tls::parse_client_hello(input);
  if (size == 0 && (!raw || *raw)) die("empty input is not 'need more'");
  if (size > 0 && !tls::looks_like_tls(data[0]) && raw) die("non-handshake first byte accepted");
  if (raw && *raw) check_parsed(input, **raw, rng);

  if (size + 4 > tls::kMaxHandshakeSize) return 0;
  Bytes whole = wrap(input, rng, false);
  Bytes split = wrap(input, rng, true);
  auto a = tls::parse_client_hello(whole);
  auto b = tls::parse_client_hello(split);
  if (a.has_value() != b.has_value()) die("record splitting changed whether the hello is valid");
  if (!a) return 0;
  if (!*a || !*b) die("a complete wrapped hello asked for more bytes");
  if (!same(**a, **b)) die("record splitting changed the parsed hello");
  if ((*a)->consumed != whole.size() || (*b)->consumed != split.size()) die("wrapped hello not fully consumed");
  check_parsed(whole, **a, rng);
  check_parsed(split, **b, rng);
  return 0;
}
