#include "km/proxy/http_head.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "km/base/strings.h"
#include "km/policy/egress_rules.h"

namespace km::proxy::http {

namespace {

constexpr std::string_view kMaxBodyLengthText = "2^53";

bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar); }

bool is_ows(char c) { return c == ' ' || c == '\t'; }

// field-vchar, SP, HTAB (RFC 9110 §5.5): every control character but HTAB is refused, not
// just NUL/CR/LF, because some peers end or split a field at them.
bool is_field_char(char c) {
  auto u = static_cast<unsigned char>(c);
  return c == '\t' || (u >= 0x20 && u != 0x7f);
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

uint64_t hex_value(char c) {
  if (c >= '0' && c <= '9') return static_cast<uint64_t>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<uint64_t>(c - 'a' + 10);
  return static_cast<uint64_t>(c - 'A' + 10);
}


std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

// Elements of a comma-separated list, each with OWS trimmed (empty elements kept, so callers
// can refuse them).
std::vector<std::string_view> split_list(std::string_view s) {
  std::vector<std::string_view> out;
  for (;;) {
    size_t comma = s.find(',');
    out.push_back(trim_ows(s.substr(0, comma)));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

Unexpected<Error> invalid(std::string message) { return fail(ErrorCode::kInvalidArgument, std::move(message)); }

Status parse_request_line(std::string_view line, RequestHead& head) {
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) {
    return invalid("request line is not \"method SP request-target SP HTTP-version\"");
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (method.empty()) return invalid("request line starts with whitespace");
  if (!is_token(method)) return invalid("method " + quoted(method) + " is not a token");
  if (target.empty()) return invalid("request line has more than one SP between method and target");
  for (char c : target) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      return invalid("request target contains a control character, whitespace or a non-ASCII byte");
    }
  }
  if (version == "HTTP/1.1") {
    head.minor_version = 1;
  } else if (version == "HTTP/1.0") {
    head.minor_version = 0;
  } else {
    return invalid("unsupported HTTP version " + quoted(version, 16) + " (only HTTP/1.0 and HTTP/1.1)");
  }
  head.method = std::string(method);
  head.target = std::string(target);
  return ok();
}

Status parse_header_line(std::string_view line, RequestHead& head) {
  if (is_ows(line.front())) {
    return invalid("header line starts with whitespace (obs-fold line folding is not accepted)");
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    return invalid("header line " + std::to_string(head.headers.size() + 1) + " has no ':'");
  }
  std::string_view name = line.substr(0, colon);
  if (name.empty()) return invalid("empty header name");
  if (is_ows(name.back())) {
    return invalid("whitespace between header name " + quoted(trim_ows(name)) + " and ':'");
  }
  if (!is_token(name)) return invalid("header name " + quoted(name) + " is not a token");
  std::string_view value = trim_ows(line.substr(colon + 1));
  for (char c : value) {
    if (!is_field_char(c)) {
      std::string what = c == '\0' ? "NUL" : "a control character";
      return invalid("value of header " + quoted(name) + " contains " + what);
    }
  }
  if (equals_ignore_case(name, "host") && head.count("host") > 0) return invalid("more than one Host header");
  head.headers.push_back(Header{std::string(name), std::string(value)});
  return ok();
}

Result<uint16_t> parse_port(std::string_view s) {
  if (s.empty()) return invalid("empty port after ':'");
  if (s.size() > 5 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return invalid("port " + quoted(s, 16) + " is not a number from 1 to 65535");
  }
  uint32_t v = 0;
  for (char c : s) v = v * 10 + static_cast<uint32_t>(c - '0');
  if (v == 0 || v > 65535) return invalid("port " + std::string(s) + " is not a number from 1 to 65535");
  return static_cast<uint16_t>(v);
}

}  // namespace

std::optional<std::string_view> RequestHead::header(std::string_view name) const {
  for (const Header& h : headers) {
    if (equals_ignore_case(h.name, name)) return std::string_view(h.value);
  }
  return std::nullopt;
}

size_t RequestHead::count(std::string_view name) const {
  return static_cast<size_t>(
      std::count_if(headers.begin(), headers.end(), [&](const Header& h) { return equals_ignore_case(h.name, name); }));
}

Result<std::optional<RequestHead>> parse_request_head(std::string_view buf, size_t max_size) {
  // Bytes past max_size can only belong to a head that is too long.
  std::string_view window = buf.substr(0, std::min(buf.size(), max_size));
  auto too_long = [&] {
    return fail(ErrorCode::kResourceExhausted,
                "request head is longer than " + std::to_string(max_size) + " bytes");
  };
  size_t pos = 0;
  // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
  // Exactly one is skipped; more is not a request.
  if (window.substr(0, 2) == "\r\n") pos = 2;
  RequestHead head;
  bool have_request_line = false;
  for (;;) {
    size_t lf = window.find('\n', pos);
    if (lf == std::string_view::npos) {
      // A CR that is not the last byte seen can no longer be followed by its LF.
      size_t cr = window.find('\r', pos);
      if (cr != std::string_view::npos && cr + 1 < window.size()) return invalid("bare CR in request head");
      if (buf.size() >= max_size) return too_long();
      return std::optional<RequestHead>();
    }
    if (lf == pos || window[lf - 1] != '\r') return invalid("bare LF in request head (lines must end in CRLF)");
    std::string_view line = window.substr(pos, lf - 1 - pos);
    if (line.find('\r') != std::string_view::npos) return invalid("bare CR in request head");
    pos = lf + 1;
    if (!have_request_line) {
      if (line.empty()) return invalid("more than one empty line before the request line");
      KM_TRY(parse_request_line(line, head));
      have_request_line = true;
      continue;
    }
    if (line.empty()) break;
    if (head.headers.size() == kMaxHeaders) {
      return fail(ErrorCode::kResourceExhausted,
                  "more than " + std::to_string(kMaxHeaders) + " header lines in request head");
    }
    KM_TRY(parse_header_line(line, head));
  }
  head.size = pos;
  return std::optional<RequestHead>(std::move(head));
}

std::optional<std::string_view> ResponseHead::header(std::string_view name) const {
  for (const Header& h : headers) {
    if (equals_ignore_case(h.name, name)) return std::string_view(h.value);
  }
  return std::nullopt;
}

size_t ResponseHead::count(std::string_view name) const {
  return static_cast<size_t>(
      std::count_if(headers.begin(), headers.end(), [&](const Header& h) { return equals_ignore_case(h.name, name); }));
}

Result<std::optional<ResponseHead>> parse_response_head(std::string_view buf, size_t max_size) {
  std::string_view window = buf.substr(0, std::min(buf.size(), max_size));
  RequestHead fields;  // header lines parse the same way in both directions
  ResponseHead head;
  bool have_status_line = false;
  size_t pos = 0;
  for (;;) {
    size_t lf = window.find('\n', pos);
    if (lf == std::string_view::npos) {
      size_t cr = window.find('\r', pos);
      if (cr != std::string_view::npos && cr + 1 < window.size()) return invalid("bare CR in response head");
      if (buf.size() >= max_size) {
        return fail(ErrorCode::kResourceExhausted, "response head is longer than " + std::to_string(max_size) + " bytes");
      }
      return std::optional<ResponseHead>();
    }
    if (lf == pos || window[lf - 1] != '\r') return invalid("bare LF in response head (lines must end in CRLF)");
    std::string_view line = window.substr(pos, lf - 1 - pos);
    if (line.find('\r') != std::string_view::npos) return invalid("bare CR in response head");
    pos = lf + 1;
    if (!have_status_line) {
      // HTTP/1.x SP 3DIGIT SP reason-phrase (the reason may be empty; RFC 9112 §4).
      if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
          !std::all_of(line.begin() + 9, line.begin() + 12, [](char c) { return c >= '0' && c <= '9'; }) ||
          (line.size() > 12 && line[12] != ' ')) {
        return invalid("malformed status line");
      }
      head.minor_version = line[7] - '0';
      head.status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
      if (head.status < 100) return invalid("status code below 100");
      if (line.size() > 13) head.reason = std::string(line.substr(13));
      for (char c : head.reason) {
        auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && c != '\t') || u == 0x7f) return invalid("control character in the reason phrase");
      }
      have_status_line = true;
      continue;
    }
    if (line.empty()) break;
    if (fields.headers.size() == kMaxHeaders) {
      return fail(ErrorCode::kResourceExhausted, "more than " + std::to_string(kMaxHeaders) + " header lines in response head");
    }
    KM_TRY(parse_header_line(line, fields));
  }
  head.headers = std::move(fields.headers);
  head.size = pos;
  return std::optional<ResponseHead>(std::move(head));
}

Result<ResponseFraming> response_body_framing(const ResponseHead& head, std::string_view request_method) {
  if (request_method == "HEAD" || head.status < 200 || head.status == 204 || head.status == 304) return ResponseFraming{};
  if (request_method == "CONNECT" && head.status / 100 == 2) return ResponseFraming{};
  RequestHead as_request;
  as_request.minor_version = head.minor_version;
  as_request.headers = head.headers;
  auto framing = request_body_framing(as_request);
  if (!framing) return fail(Error(framing.error()).wrap("response"));
  switch (framing->kind) {
    case BodyFraming::kChunked:
      return ResponseFraming{ResponseFraming::kChunked, 0};
    case BodyFraming::kLength:
      return ResponseFraming{ResponseFraming::kLength, framing->length};
    case BodyFraming::kNone:
      break;
  }
  return ResponseFraming{ResponseFraming::kUntilClose, 0};
}

Result<Authority> parse_authority(std::string_view text, uint16_t default_port) {
  if (text.empty()) return invalid("empty authority");
  // Checked before anything is quoted: userinfo is a credential.
  if (text.find('@') != std::string_view::npos) {
    return invalid("userinfo (user@host) is not accepted in an authority");
  }
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return invalid("authority contains whitespace or a control character");
    if (c == '%') return invalid("percent-encoding is not accepted in a host: " + quoted(text));
  }
  Authority a;
  std::string_view host;
  std::optional<std::string_view> port_text;
  if (text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return invalid("missing ']' in " + quoted(text));
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return invalid("expected ':port' after ']' in " + quoted(text));
      port_text = rest.substr(1);
    }
    unsigned char addr[16];
    if (inet_pton(AF_INET6, std::string(host).c_str(), addr) != 1) {
      return invalid(quoted(host) + " in brackets is not an IPv6 address");
    }
    char canonical[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, addr, canonical, sizeof canonical);
    a.host = canonical;
    a.ip_literal = true;
  } else {
    size_t colons = static_cast<size_t>(std::count(text.begin(), text.end(), ':'));
    if (colons > 1) return invalid(quoted(text) + " has several ':'; an IPv6 address goes in brackets ([2001:db8::1]:443)");
    size_t colon = text.find(':');
    host = text.substr(0, colon);
    if (colon != std::string_view::npos) port_text = text.substr(colon + 1);
    if (host.empty()) return invalid("empty host in authority " + quoted(text));
    bool trailing_dot = host.back() == '.';
    if (trailing_dot) host.remove_suffix(1);
    unsigned char addr[4];
    if (inet_pton(AF_INET, std::string(host).c_str(), addr) == 1) {
      // "192.0.2.1." is a name to some resolvers and an address to others: refuse both readings.
      if (trailing_dot) return invalid("IP address " + quoted(host) + " with a trailing dot");
      a.ip_literal = true;
    } else if (auto err = policy::check_dns_name(host)) {
      return invalid("host is not a DNS name or IP address: " + *err);
    }
    a.host = to_lower(host);
  }
  if (port_text) {
    KM_ASSIGN_OR_RETURN(a.port, parse_port(*port_text));
    a.explicit_port = true;
  } else {
    a.port = default_port;
  }
  return a;
}

Result<AbsoluteUri> parse_absolute_uri(std::string_view target) {
  for (char c : target) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return invalid("URI contains a control character, whitespace or a non-ASCII byte");
  }
  if (target.find('#') != std::string_view::npos) return invalid("URI has a fragment ('#')");
  size_t sep = target.find("://");
  if (sep == std::string_view::npos || sep == 0) return invalid("not an absolute URI (scheme://host[:port]/path)");
  std::string_view scheme = target.substr(0, sep);
  bool scheme_ok = std::all_of(scheme.begin(), scheme.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '-' || c == '.';
  });
  AbsoluteUri uri;
  uri.scheme = to_lower(scheme);
  uint16_t default_port = 0;
  if (scheme_ok && (uri.scheme == "http" || uri.scheme == "ws")) {
    default_port = 80;
  } else if (scheme_ok && (uri.scheme == "https" || uri.scheme == "wss")) {
    default_port = 443;
  } else {
    return invalid("URI scheme " + quoted(scheme, 16) + " is not supported (http, https, ws, wss)");
  }
  std::string_view rest = target.substr(sep + 3);
  size_t end = rest.find_first_of("/?");
  auto authority = parse_authority(rest.substr(0, end), default_port);
  if (!authority) return fail(std::move(authority).error().wrap("URI authority"));
  uri.authority = std::move(*authority);
  std::string_view path = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  if (path.empty() || path.front() == '?') {
    uri.path = "/" + std::string(path);
  } else {
    uri.path = std::string(path);
  }
  return uri;
}

Result<BodyFraming> request_body_framing(const RequestHead& head) {
  bool has_te = false;
  bool has_cl = false;
  std::vector<std::string_view> codings;
  uint64_t length = 0;
  for (const Header& h : head.headers) {
    if (equals_ignore_case(h.name, "transfer-encoding")) {
      has_te = true;
      for (std::string_view coding : split_list(h.value)) {
        // An empty element or a parameter is where peers' readings of the final coding diverge.
        if (!is_token(coding)) {
          return invalid("Transfer-Encoding has an empty or malformed coding (or a parameter)");
        }
        codings.push_back(coding);
      }
    } else if (equals_ignore_case(h.name, "content-length")) {
      for (std::string_view v : split_list(h.value)) {
        if (v.empty() || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
          return invalid("Content-Length " + quoted(v, 24) + " is not a number");
        }
        uint64_t n = 0;
        for (char c : v) {
          n = n * 10 + static_cast<uint64_t>(c - '0');
          if (n > kMaxBodyLength) {
            return invalid("Content-Length is over " + std::string(kMaxBodyLengthText));
          }
        }
        if (has_cl && n != length) return invalid("Content-Length values differ");
        length = n;
        has_cl = true;
      }
    }
  }
  if (has_te) {
    if (head.minor_version == 0) {
      // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
      return invalid("Transfer-Encoding in an HTTP/1.0 request");
    }
    if (has_cl) return invalid("both Transfer-Encoding and Content-Length");
    if (!equals_ignore_case(codings.back(), "chunked")) {
      return invalid("final Transfer-Encoding " + quoted(codings.back(), 24) + " is not chunked");
    }
    for (size_t i = 0; i + 1 < codings.size(); ++i) {
      if (equals_ignore_case(codings[i], "chunked")) return invalid("Transfer-Encoding applies chunked more than once");
    }
    return BodyFraming{BodyFraming::kChunked, 0};
  }
  if (has_cl) return BodyFraming{BodyFraming::kLength, length};
  return BodyFraming{};
}

Result<size_t> ChunkedScanner::feed(std::string_view data) { return feed(data, nullptr); }

Result<size_t> ChunkedScanner::feed(std::string_view data, std::string* payload) {
  if (state_ == State::kError) return fail(*error_);
  size_t i = 0;
  while (i < data.size() && state_ != State::kDone) {
    if (state_ == State::kData) {
      uint64_t take = std::min<uint64_t>(remaining_, data.size() - i);
      if (payload) payload->append(data.data() + i, static_cast<size_t>(take));
      i += static_cast<size_t>(take);
      remaining_ -= take;
      if (remaining_ == 0) state_ = State::kDataCr;
      continue;
    }
    Status s = step(data[i]);
    if (!s) {
      state_ = State::kError;
      error_ = s.error();
      return fail(*error_);
    }
    ++i;
  }
  return i;
}

Status ChunkedScanner::step(char c) {
  // Counts the bytes of a size or trailer line, CRLF excluded.
  auto line_byte = [&]() -> Status {
    if (c != '\r' && ++line_len_ > kMaxChunkLine) {
      return fail(ErrorCode::kResourceExhausted,
                  "chunked body line is longer than " + std::to_string(kMaxChunkLine) + " bytes");
    }
    return ok();
  };
  switch (state_) {
    case State::kSizeStart:
      if (!is_hex(c)) return invalid("chunk size is not a hex number");
      remaining_ = hex_value(c);
      line_len_ = 1;
      state_ = State::kSize;
      return ok();
    case State::kSize:
      KM_TRY(line_byte());
      if (is_hex(c)) {
        uint64_t d = hex_value(c);
        if (remaining_ > (kMaxBodyLength - d) / 16) {
          return invalid("chunk size is over " + std::string(kMaxBodyLengthText));
        }
        remaining_ = remaining_ * 16 + d;
      } else if (c == ';') {
        state_ = State::kExt;
      } else if (is_ows(c)) {
        state_ = State::kSizeSpace;
      } else if (c == '\r') {
        state_ = State::kSizeLf;
      } else {
        return invalid("invalid character after chunk size");
      }
      return ok();
    case State::kSizeSpace:
      KM_TRY(line_byte());
      if (c == ';') {
        state_ = State::kExt;
      } else if (!is_ows(c)) {
        return invalid("whitespace after a chunk size must be followed by ';'");
      }
      return ok();
    case State::kExt:
      KM_TRY(line_byte());
      if (c == '\r') {
        state_ = State::kSizeLf;
      } else if (!is_field_char(c)) {
        return invalid("control character in chunk extension");
      }
      return ok();
    case State::kSizeLf:
      if (c != '\n') return invalid("chunk-size line does not end in CRLF");
      if (remaining_ == 0) {
        state_ = State::kTrailerStart;
      } else {
        state_ = State::kData;
      }
      return ok();
    case State::kDataCr:
      if (c != '\r') return invalid("chunk data is not followed by CRLF");
      state_ = State::kDataLf;
      return ok();
    case State::kDataLf:
      if (c != '\n') return invalid("chunk data is not followed by CRLF");
      state_ = State::kSizeStart;
      return ok();
    case State::kTrailerStart:
      line_len_ = 1;
      // The trailer section as a whole is bounded too: endless trailer lines are no body.
      if ((trailer_bytes_ += 1) > kMaxTrailerSection) {
        return fail(ErrorCode::kResourceExhausted, "chunked trailer section is longer than " + std::to_string(kMaxTrailerSection) + " bytes");
      }
      if (c == '\r') {
        state_ = State::kEndLf;
      } else if (is_ows(c)) {
        return invalid("trailer line starts with whitespace (obs-fold is not accepted)");
      } else if (is_tchar(c)) {
        state_ = State::kTrailerName;
      } else {
        return invalid("trailer field name is not a token");
      }
      return ok();
    case State::kTrailerName:
      KM_TRY(line_byte());
      if (++trailer_bytes_ > kMaxTrailerSection) return fail(ErrorCode::kResourceExhausted, "chunked trailer section too long");
      if (c == ':') {
        state_ = State::kTrailerValue;
      } else if (is_ows(c)) {
        return invalid("whitespace between a trailer field name and ':'");
      } else if (!is_tchar(c)) {
        return invalid("trailer field name is not a token");
      }
      return ok();
    case State::kTrailerValue:
      KM_TRY(line_byte());
      if (++trailer_bytes_ > kMaxTrailerSection) return fail(ErrorCode::kResourceExhausted, "chunked trailer section too long");
      if (c == '\r') {
        state_ = State::kTrailerLf;
      } else if (!is_field_char(c)) {
        return invalid("control character in a trailer field value");
      }
      return ok();
    case State::kTrailerLf:
      if (c != '\n') return invalid("bare CR in a trailer line");
      state_ = State::kTrailerStart;
      return ok();
    case State::kEndLf:
      if (c != '\n') return invalid("chunked body does not end in CRLF");
      state_ = State::kDone;
      return ok();
    case State::kData:
    case State::kDone:
    case State::kError:
      break;
  }
  KM_CHECK(false && "ChunkedScanner::step in a state that consumes no single bytes");
  return ok();
}

HttpSniff sniff_http(std::string_view buf, size_t max_line) {
  size_t i = 0;
  while (i < buf.size() && (buf[i] == '\r' || buf[i] == '\n' || buf[i] == ' ' || buf[i] == '\t')) ++i;
  if (i == buf.size()) return buf.size() >= max_line ? HttpSniff::kHttp : HttpSniff::kNeedMore;
  auto is_tchar = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  };
  if (!is_tchar(buf[i])) return HttpSniff::kNotHttp;
  size_t eol = buf.find_first_of("\r\n", i);
  std::string_view line = buf.substr(i, eol == std::string_view::npos ? std::string_view::npos : eol - i);
  // The words of the first line, as far as it has arrived.
  std::vector<std::string_view> words;
  size_t p = 0;
  while (p < line.size()) {
    while (p < line.size() && (line[p] == ' ' || line[p] == '\t')) ++p;
    size_t q = p;
    while (q < line.size() && line[q] != ' ' && line[q] != '\t') ++q;
    if (q > p) words.push_back(line.substr(p, q - p));
    p = q;
  }
  auto upper = [](std::string_view w) {
    std::string u(w);
    for (char& c : u) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return u;
  };
  static const char* kMethods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI"};
  if (!words.empty()) {
    bool method_done = words.size() > 1 || (!line.empty() && (line.back() == ' ' || line.back() == '\t'));
    std::string m = upper(words[0]);
    for (const char* k : kMethods) {
      if (method_done && m == k) return HttpSniff::kHttp;
    }
    if (words.size() >= 3 && upper(words[2]).rfind("HTTP/", 0) == 0) return HttpSniff::kHttp;
    for (char c : words[0]) {
      if (!is_tchar(c)) return HttpSniff::kNotHttp;  // the first word is no method
    }
  }
  if (eol != std::string_view::npos) return HttpSniff::kNotHttp;  // a complete line that is not a request line
  return line.size() >= max_line ? HttpSniff::kHttp : HttpSniff::kNeedMore;
}

}  // namespace km::proxy::http
