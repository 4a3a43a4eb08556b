// Fuzz target: the parsers of km/bpf/tls_capture.h on untrusted bytes: plaintext a sandboxed
// process sent or received (HTTP heads), ring-buffer records, ld.so.cache and ELF images (a
// program a sandbox ran). Properties checked:
//   - a request head's method is an upper-case token and its path and Host hold no CR, LF or
//     space; what was parsed from some bytes does not change when more bytes follow;
//   - a status is 0 or 100..999, with an HTTP/1.x protocol;
//   - an ld.so.cache answer is an absolute path;
//   - a decoded record's payload is at most 4 KiB and at most the bytes the call moved.
// Any crash, sanitizer report or abort is a bug.
#include <linux/types.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "km/bpf/tls_capture.h"
#include "km/bpf_abi/tls_capture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using km::fuzz::die;

namespace bpf = km::bpf;

bool has_any(std::string_view s, std::string_view chars) { return s.find_first_of(chars) != std::string_view::npos; }

void check_request(std::string_view buf) {
  auto h = bpf::parse_http_request_head(buf);
  if (h.protocol.empty() || h.protocol == "h2") {
    if (!h.method.empty() || !h.path.empty() || !h.host.empty()) die("fields without a protocol");
    return;
  }
  if (h.protocol != "HTTP/1.0" && h.protocol != "HTTP/1.1") die("unexpected protocol");
  if (h.method.empty()) die("empty method");
  for (char c : h.method) {
    if (c < 'A' || c > 'Z') die("method not an upper-case token");
  }
  if (h.path.empty() || has_any(h.path, std::string_view(" \r\n\t\0", 5))) die("bad path");
  if (has_any(h.host, std::string_view("\r\n\0", 3))) die("CR, LF or NUL in Host");
  std::string longer = std::string(buf) + "X-More: 1\r\nHost: other\r\n\r\n";
  auto again = bpf::parse_http_request_head(longer);
  if (again.method != h.method || again.path != h.path || again.protocol != h.protocol) die("more bytes changed the request line");
  if (!h.host.empty() && again.host != h.host) die("more bytes changed a complete Host");
}

void check_response(std::string_view buf) {
  auto h = bpf::parse_http_response_head(buf);
  if (h.status == 0) return;
  if (h.status < 100 || h.status > 999) die("status out of range");
  if (h.protocol != "HTTP/1.0" && h.protocol != "HTTP/1.1") die("status without an HTTP/1.x protocol");
}

void check_record(std::string_view buf, size_t size) {
  std::string rec(buf.substr(0, size));
  rec.resize(size, '\0');
  auto r = bpf::decode_tls_event(rec.data(), rec.size());
  if (!r) return;
  if (r->payload && (r->payload->size() > KM_TLS_DATA_MAX || r->payload->size() > r->bytes)) die("payload over its bounds");
  if (r->payload && size != sizeof(km_tls_event_data)) die("payload from a count-only record");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view buf(reinterpret_cast<const char*>(data), size);
  check_request(buf);
  check_response(buf);
  for (std::string_view soname : {std::string_view("libssl.so.3"), buf.substr(0, 16)}) {
    auto path = bpf::ld_cache_lookup(buf, soname);
    if (path && (path->empty() || (*path)[0] != '/')) die("ld.so.cache answer not absolute");
  }
  auto facts = bpf::elf_tls_facts_of_image(buf);
  if (!facts.elf && (!facts.needed.empty() || facts.ssl_symbols)) die("facts from something that is not ELF");
  check_record(buf, sizeof(km_tls_event));
  check_record(buf, sizeof(km_tls_event_data));
  return 0;
}
