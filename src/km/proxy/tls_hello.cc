#include "km/proxy/tls_hello.h"

#include <algorithm>
#include <cstdio>
#include <string_view>

#include "km/base/strings.h"
#include "km/policy/egress_rules.h"

namespace km::proxy::tls {

namespace {

constexpr uint8_t kContentHandshake = 22;
constexpr uint8_t kHandshakeClientHello = 1;
constexpr size_t kRecordHeaderSize = 5;
constexpr size_t kHandshakeHeaderSize = 4;
constexpr size_t kMaxRecordSize = 16384;  // 2^14, RFC 8446 §5.1

constexpr uint16_t kExtServerName = 0;
constexpr uint16_t kExtAlpn = 16;
constexpr uint16_t kExtSupportedVersions = 43;
constexpr uint16_t kExtEncryptedClientHello = 0xfe0d;

constexpr uint8_t kNameTypeHostName = 0;

Unexpected<Error> invalid(std::string message) { return fail(ErrorCode::kInvalidArgument, std::move(message)); }

std::string hex(unsigned v, int width) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*x", width, v);
  return buf;
}

// Bounds-checked big-endian reads over a byte span; every read fails instead of overrunning.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> data) : data_(data) {}

  bool empty() const { return pos_ == data_.size(); }

  bool u8(uint8_t& v) {
    if (data_.size() - pos_ < 1) return false;
    v = data_[pos_++];
    return true;
  }
  bool u16(uint16_t& v) {
    if (data_.size() - pos_ < 2) return false;
    v = static_cast<uint16_t>((data_[pos_] << 8) | data_[pos_ + 1]);
    pos_ += 2;
    return true;
  }
  bool bytes(size_t n, std::span<const uint8_t>& out) {
    if (data_.size() - pos_ < n) return false;
    out = data_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  // A vector with a one- or two-byte length prefix (TLS presentation language <..2^8-1>, <..2^16-1>).
  bool vec8(std::span<const uint8_t>& out) {
    uint8_t n = 0;
    return u8(n) && bytes(n, out);
  }
  bool vec16(std::span<const uint8_t>& out) {
    uint16_t n = 0;
    return u16(n) && bytes(n, out);
  }

 private:
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

std::string_view as_chars(std::span<const uint8_t> s) {
  return std::string_view(reinterpret_cast<const char*>(s.data()), s.size());
}

Status parse_server_name(std::span<const uint8_t> ext, ClientHello& hello) {
  Reader r(ext);
  std::span<const uint8_t> list;
  if (!r.vec16(list) || !r.empty()) return invalid("server_name list length does not match its extension");
  if (list.empty()) return invalid("empty server_name list");
  Reader names(list);
  bool have_host = false;
  while (!names.empty()) {
    uint8_t type = 0;
    std::span<const uint8_t> name;
    // RFC 6066 defines only host_name; other types are skipped with the same opaque<1..2^16-1>
    // layout every implementation assumes.
    if (!names.u8(type) || !names.vec16(name)) return invalid("server_name entry overruns its list");
    if (name.empty()) return invalid("empty server_name entry");
    if (type != kNameTypeHostName) continue;
    if (have_host) return invalid("more than one host_name in server_name");
    have_host = true;
    std::string_view raw = as_chars(name);
    std::string host = policy::normalize_name(raw);
    if (policy::is_ip_literal(host)) {
      return invalid("SNI " + quoted(raw) + " is an IP address (RFC 6066 allows only host names)");
    }
    if (auto err = policy::check_dns_name(host)) return invalid("SNI is not a valid host name: " + *err);
    hello.sni = std::move(host);
  }
  return ok();
}

Status parse_alpn(std::span<const uint8_t> ext, ClientHello& hello) {
  Reader r(ext);
  std::span<const uint8_t> list;
  if (!r.vec16(list) || !r.empty()) return invalid("ALPN list length does not match its extension");
  if (list.empty()) return invalid("empty ALPN protocol list");
  Reader protocols(list);
  while (!protocols.empty()) {
    std::span<const uint8_t> name;
    if (!protocols.vec8(name)) return invalid("ALPN protocol name overruns its list");
    if (name.empty()) return invalid("empty ALPN protocol name");
    hello.alpn.emplace_back(as_chars(name));
  }
  return ok();
}

Status parse_supported_versions(std::span<const uint8_t> ext, ClientHello& hello) {
  Reader r(ext);
  std::span<const uint8_t> list;
  if (!r.vec8(list) || !r.empty()) return invalid("supported_versions list length does not match its extension");
  if (list.empty() || list.size() % 2 != 0) return invalid("supported_versions list is empty or of odd length");
  Reader versions(list);
  uint16_t v = 0;
  while (versions.u16(v)) hello.supported_versions.push_back(v);
  return ok();
}

Result<ClientHello> parse_body(std::span<const uint8_t> body) {
  ClientHello hello;
  Reader r(body);
  std::span<const uint8_t> random, session_id, cipher_suites, compression, extensions;
  if (!r.u16(hello.legacy_version)) return invalid("ClientHello is truncated");
  if ((hello.legacy_version >> 8) != 3) {
    return invalid("ClientHello version " + hex(hello.legacy_version, 4) + " is not SSL 3 or TLS");
  }
  if (!r.bytes(32, random)) return invalid("ClientHello is truncated in random");
  if (!r.vec8(session_id)) return invalid("ClientHello session id overruns the message");
  if (session_id.size() > 32) return invalid("ClientHello session id is longer than 32 bytes");
  if (!r.vec16(cipher_suites)) return invalid("ClientHello cipher suites overrun the message");
  if (cipher_suites.empty() || cipher_suites.size() % 2 != 0) {
    return invalid("ClientHello cipher suite list is empty or of odd length");
  }
  if (!r.vec8(compression)) return invalid("ClientHello compression methods overrun the message");
  if (compression.empty()) return invalid("ClientHello has no compression methods");
  if (r.empty()) return hello;  // no extensions (a pre-TLS 1.2 style hello)
  if (!r.vec16(extensions)) return invalid("ClientHello extensions overrun the message");
  if (!r.empty()) return invalid("data after the ClientHello extensions");

  std::vector<bool> seen(65536);
  Reader exts(extensions);
  while (!exts.empty()) {
    uint16_t type = 0;
    std::span<const uint8_t> ext;
    if (!exts.u16(type) || !exts.vec16(ext)) return invalid("ClientHello extension overruns the extension list");
    if (seen[type]) return invalid("duplicate ClientHello extension " + hex(type, 4));
    seen[type] = true;
    Status s;
    switch (type) {
      case kExtServerName: s = parse_server_name(ext, hello); break;
      case kExtAlpn: s = parse_alpn(ext, hello); break;
      case kExtSupportedVersions: s = parse_supported_versions(ext, hello); break;
      case kExtEncryptedClientHello: hello.has_ech = true; break;
      default: break;
    }
    if (!s) return fail(std::move(s).error());
  }
  return hello;
}

}  // namespace

bool looks_like_tls(uint8_t first_byte) { return first_byte == kContentHandshake; }

Result<std::optional<ClientHello>> parse_client_hello(std::span<const uint8_t> data) {
  std::vector<uint8_t> handshake;  // reassembled from the records' fragments
  std::optional<size_t> message_size;  // header and body, once the header has arrived
  size_t pos = 0;
  for (;;) {
    std::span<const uint8_t> rest = data.subspan(pos);
    // Refuse as soon as a header byte is wrong, so a client speaking something else is told early.
    if (!rest.empty() && rest[0] != kContentHandshake) {
      if (pos == 0) return invalid("not a TLS handshake record (first byte " + hex(rest[0], 2) + ")");
      return invalid("TLS record of content type " + std::to_string(rest[0]) + " before the ClientHello ended");
    }
    if (rest.size() >= 2 && rest[1] != 3) {
      return invalid("TLS record version " + hex(rest[1], 2) + ".. is not SSL 3 or TLS");
    }
    if (rest.size() < kRecordHeaderSize) return std::optional<ClientHello>();
    size_t length = static_cast<size_t>((rest[3] << 8) | rest[4]);
    if (length == 0) return invalid("empty TLS handshake record");
    if (length > kMaxRecordSize) return invalid("TLS record of " + std::to_string(length) + " bytes is over 2^14");
    std::span<const uint8_t> fragment = rest.subspan(kRecordHeaderSize);
    bool complete = fragment.size() >= length;
    fragment = fragment.first(std::min(fragment.size(), length));
    handshake.insert(handshake.end(), fragment.begin(), fragment.end());
    if (!message_size && handshake.size() >= kHandshakeHeaderSize) {
      if (handshake[0] != kHandshakeClientHello) {
        return invalid("first handshake message is of type " + std::to_string(handshake[0]) + ", not ClientHello");
      }
      size_t body = (size_t{handshake[1]} << 16) | (size_t{handshake[2]} << 8) | handshake[3];
      if (kHandshakeHeaderSize + body > kMaxHandshakeSize) {
        return invalid("ClientHello of " + std::to_string(body) + " bytes is over " +
                       std::to_string(kMaxHandshakeSize));
      }
      message_size = kHandshakeHeaderSize + body;
    }
    if (!complete) return std::optional<ClientHello>();
    pos += kRecordHeaderSize + length;
    if (message_size && handshake.size() >= *message_size) {
      if (handshake.size() > *message_size) {
        return invalid("more handshake data after the ClientHello in its last record");
      }
      auto hello = parse_body(std::span<const uint8_t>(handshake).subspan(kHandshakeHeaderSize));
      if (!hello) return fail(std::move(hello).error());
      hello->consumed = pos;
      return std::optional<ClientHello>(std::move(*hello));
    }
  }
}

}  // namespace km::proxy::tls
