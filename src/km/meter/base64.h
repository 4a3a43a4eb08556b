// Base64 (RFC 4648 §4, the standard alphabet) decoding, for the payloads Bedrock wraps in
// {"bytes": "..."}. Strict: no whitespace or other characters, '=' padding only at the end and
// only as much as the length calls for (it may be left out), no unused bits set in the last
// character. Thread-safety: stateless; no I/O.
#pragma once

#include <string>
#include <string_view>

namespace km::meter {

// Decodes `in` into `out` (replacing its contents); false on malformed input.
bool base64_decode(std::string_view in, std::string& out);

}  // namespace km::meter
