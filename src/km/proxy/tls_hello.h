// The TLS ClientHello a sandboxed agent sends first: the proxy reads its server_name (SNI) and
// ALPN to decide egress before any byte goes upstream. Pure code over caller-owned bytes; no
// I/O, no exceptions.
//
// Strict on purpose: a ClientHello this parser reads differently from the upstream server
// (a second host name, a length that overruns its parent, a duplicated extension) could be
// used to name an allowed host to the proxy and another one to the server, so all of these are
// errors. Every vector length is checked against its parent and must fill it exactly.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "km/base/result.h"

namespace km::proxy::tls {

// Handshake bytes reassembled from records before giving up (a post-quantum key share makes a
// ClientHello a few KiB; nothing legitimate comes close to this).
inline constexpr size_t kMaxHandshakeSize = 64 * 1024;

struct ClientHello {
  std::string sni;                // server_name host_name: lowercase, trailing dot removed; "" if absent
  std::vector<std::string> alpn;  // protocol names as sent (bytes, not necessarily printable)
  bool has_ech = false;           // encrypted_client_hello (0xfe0d) present: sni is the outer name
  uint16_t legacy_version = 0;    // client_version field, e.g. 0x0303
  std::vector<uint16_t> supported_versions;  // from the supported_versions extension, as sent
  size_t consumed = 0;            // bytes of TLS records the ClientHello occupied
};

// Parses the first bytes a client sent: handshake records (content type 22) carrying one
// ClientHello, possibly split over several records. Stateless: call again with more bytes.
// nullopt: nothing malformed yet, need more bytes. Error (kInvalidArgument): not a TLS handshake
// record, a record that is empty, over 2^14 bytes or not of type 22 before the ClientHello ends,
// a first handshake message that is not a ClientHello or is over kMaxHandshakeSize, more data in
// the ClientHello's last record, malformed lengths anywhere, duplicate extensions, an empty
// server_name list or more than one host_name entry, an SNI that is not a valid DNS host name
// (IP literals included, RFC 6066 §3), an empty ALPN list or protocol name, a malformed
// supported_versions list.
Result<std::optional<ClientHello>> parse_client_hello(std::span<const uint8_t> data);

// True when the first byte a client sent looks like a TLS handshake record (0x16): the proxy's
// sniff before choosing the TLS or the HTTP path.
bool looks_like_tls(uint8_t first_byte);

}  // namespace km::proxy::tls
