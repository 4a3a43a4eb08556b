// HTTP/1.x request heads from a sandboxed agent, parsed strictly enough that the proxy and the
// upstream server cannot disagree about where a request starts, ends or is going (request
// smuggling, host confusion). Pure code over caller-owned bytes; no I/O, no exceptions.
//
// What is refused (RFC 9112 / 9110, choosing the safe reading wherever the RFCs allow leniency):
//   - bare LF or bare CR anywhere in the head; only one leading CRLF is skipped;
//   - a request line other than `token SP target SP HTTP/1.0|HTTP/1.1` (one SP each);
//   - header names that are not tokens, whitespace before ':', obs-fold (a line starting with
//     SP or HTAB), control characters other than HTAB in values (NUL, CR, LF, DEL, ...);
//   - more than kMaxHeaders header lines, more than one Host header, heads over max_size.
// CONNECT authority-form and absolute-form targets are normal for a proxy and accepted.
//
// Errors never quote header values or request targets (they may carry credentials); they name
// the header or the part of the request instead. Limits give kResourceExhausted (a 431/414
// reply), everything else kInvalidArgument (a 400 reply).
// Thread-safety: values; ChunkedScanner is a single-owner state machine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"

namespace km::proxy::http {

inline constexpr size_t kMaxHeaders = 100;
inline constexpr size_t kDefaultMaxHeadSize = 64 * 1024;
// Content-Length and chunk sizes above 2^53 are refused: every peer can represent them exactly.
inline constexpr uint64_t kMaxBodyLength = uint64_t{1} << 53;
// Longest chunk-size line (size and extensions) or trailer line a ChunkedScanner accepts.
inline constexpr size_t kMaxChunkLine = 8 * 1024;
// Longest trailer section (all trailer lines together) a ChunkedScanner accepts.
inline constexpr size_t kMaxTrailerSection = 16 * 1024;

struct Header {
  std::string name;   // as sent
  std::string value;  // surrounding SP/HTAB trimmed
};

struct RequestHead {
  std::string method;     // e.g. "GET", "CONNECT"
  std::string target;     // request-target as sent
  int minor_version = 1;  // 0 or 1
  std::vector<Header> headers;
  size_t size = 0;        // bytes of the head from the start of the buffer, final CRLFCRLF included

  // First value of a header (case-insensitive name); nullopt if absent. Views into *this.
  std::optional<std::string_view> header(std::string_view name) const;
  size_t count(std::string_view name) const;
};

// Parses the request head at the start of `buf`. Stateless: call again with the grown buffer
// (cost is linear in buf.size()). nullopt: the head has not ended yet and nothing seen so far is
// malformed. Error: malformed, or the head exceeds max_size bytes (ended or not). The body,
// if any, starts at buf[head.size].
Result<std::optional<RequestHead>> parse_request_head(std::string_view buf,
                                                      size_t max_size = kDefaultMaxHeadSize);

struct Authority {
  std::string host;  // lowercase, one trailing dot removed; IPv6 without brackets
  uint16_t port = 0;
  bool explicit_port = false;
  bool ip_literal = false;
};

// `host[:port]` or `[v6]:port` (a CONNECT target, a Host header, the authority of a URI).
// Refuses an empty host, userinfo ('@'), empty, zero, non-digit or >65535 ports, whitespace,
// control characters, percent-encoding, bare IPv6 without brackets, IPv6 zone ids, a trailing
// dot on an IP address, and hosts that are neither a DNS name (LDH and '_' labels, with a
// non-numeric last label, so "127.1" and "0x7f000001" are refused) nor an IPv4/IPv6 literal.
Result<Authority> parse_authority(std::string_view text, uint16_t default_port);

struct AbsoluteUri {
  std::string scheme;   // lowercase: http, https, ws or wss
  Authority authority;  // default port 80 (http, ws) or 443 (https, wss)
  std::string path;     // path and query as sent; "/" when empty
};

// An absolute-form request-target: scheme "://" authority [path-abempty] ["?" query].
// Refuses other schemes, a missing authority, fragments, and bytes outside visible ASCII.
Result<AbsoluteUri> parse_absolute_uri(std::string_view target);

// How the request body is framed (RFC 9112 §6).
struct BodyFraming {
  enum Kind { kNone, kLength, kChunked } kind = kNone;
  uint64_t length = 0;  // kLength only
};

// Error for: Transfer-Encoding whose final coding is not exactly "chunked" (case-insensitive),
// chunked applied twice, codings that are not tokens or carry parameters, Transfer-Encoding in
// an HTTP/1.0 request, Transfer-Encoding together with Content-Length, Content-Length values
// that are not all digits, that differ, or that exceed kMaxBodyLength. "Content-Length: 5, 5"
// and repeated equal headers are one length. Neither header: kNone (no body).
Result<BodyFraming> request_body_framing(const RequestHead& head);

// A response head from an upstream server the enforcer inspects (a terminated TLS connection):
// `HTTP/1.x SP 3DIGIT SP [reason]` then header lines, parsed as strictly as request heads.
struct ResponseHead {
  int status = 0;
  std::string reason;
  int minor_version = 1;
  std::vector<Header> headers;
  size_t size = 0;  // bytes of the head, final CRLFCRLF included

  std::optional<std::string_view> header(std::string_view name) const;
  size_t count(std::string_view name) const;
};
Result<std::optional<ResponseHead>> parse_response_head(std::string_view buf, size_t max_size = kDefaultMaxHeadSize);

// How a response body is framed (RFC 9112 §6.3), given the request's method: none for HEAD,
// 1xx, 204 and 304; chunked; Content-Length; or until the server closes. The same strictness
// as request_body_framing about Transfer-Encoding and Content-Length.
struct ResponseFraming {
  enum Kind { kNone, kLength, kChunked, kUntilClose } kind = kNone;
  uint64_t length = 0;
};
Result<ResponseFraming> response_body_framing(const ResponseHead& head, std::string_view request_method);

// Finds the end of a chunked body as bytes arrive. feed() says how many of `data` belong to the
// body (chunk-size lines, extensions, data, CRLFs, trailer section and the final CRLF); once the
// body has ended it consumes nothing more and the rest of `data` belongs to the next message.
// Strict: hex sizes up to kMaxBodyLength, only SP/HTAB before ';' after a size, no control
// characters but HTAB in extensions or trailers, trailers are well-formed field lines without
// obs-fold, size and trailer lines up to kMaxChunkLine bytes, the trailer section up to
// kMaxTrailerSection bytes in all, every line ends in CRLF (a bare LF or CR is an error). After
// an error every later feed() returns an error too.
class ChunkedScanner {
 public:
  Result<size_t> feed(std::string_view data);
  // The same, appending the chunk data (the body without its framing) to `payload`.
  Result<size_t> feed(std::string_view data, std::string* payload);
  bool done() const { return state_ == State::kDone; }

 private:
  enum class State {
    kSizeStart,    // first byte of a chunk-size line: a hex digit
    kSize,         // more hex digits, ';', BWS or CR
    kSizeSpace,    // BWS after the size: SP/HTAB or ';'
    kExt,          // chunk extensions up to CR
    kSizeLf,       // LF ending the chunk-size line
    kData,         // chunk data, remaining_ bytes
    kDataCr,       // CR after chunk data
    kDataLf,       // LF after chunk data
    kTrailerStart, // first byte of a trailer line, or CR of the final CRLF
    kTrailerName,  // field name up to ':'
    kTrailerValue, // field value up to CR
    kTrailerLf,    // LF ending a trailer line
    kEndLf,        // LF of the final CRLF
    kDone,
    kError,
  };
  Status step(char c);

  State state_ = State::kSizeStart;
  uint64_t remaining_ = 0;  // chunk size being read, then data bytes left in the chunk
  size_t line_len_ = 0;     // bytes of the current size or trailer line so far
  size_t trailer_bytes_ = 0;  // bytes of the trailer section so far
  std::optional<Error> error_;  // the first error, returned again by later feeds
};

// Would a lenient HTTP server take these first bytes for a request? After any CR, LF, SP or
// HTAB: a first line of `token SP ... SP HTTP/...` (any case, any run of blanks), or a known
// method followed by a blank (HTTP/0.9), or the HTTP/2 preface. The proxy treats such bytes as
// HTTP and requires them to parse strictly, so a request the strict parser refuses is denied,
// never relayed as opaque bytes. Text protocols like SSH banners are not HTTP.
enum class HttpSniff { kNotHttp, kNeedMore, kHttp };
HttpSniff sniff_http(std::string_view buf, size_t max_line = 8192);

}  // namespace km::proxy::http
