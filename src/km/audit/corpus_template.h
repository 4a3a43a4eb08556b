// Test and fuzz support for km::audit (not linked into km's binaries): expands the templates the
// redaction corpus (tests/redaction/) and fuzz seeds (fuzz/corpus/redact/) are written in, so
// that no file in the repository holds a string shaped like a real credential; the secrets exist
// only in memory, generated from a fixed seed, and start with FAKE where their alphabet allows.
//
// Template syntax:
//   {!  ...  !}        a secret region: after redaction, its text must be gone
//   {GEN:N}            N (1..4096) generated characters of one alphabet:
//                        b62 [A-Za-z0-9]  b64 [A-Za-z0-9+/]  b64url [A-Za-z0-9_-]  hex [0-9a-f]
//                        HEX [0-9A-F]  dig [0-9]  B32 [A-Z2-7]  UD [A-Z0-9]  alpha [A-Za-z]
//                        lower [a-z]  upper [A-Z]  pw (password characters, no quotes/blanks)
//                      (8 or more characters include a digit and both cases where the alphabet has
//                      them; 12 or more start with FAKE/fake/Fake where it can)
//   {jwt}              a signed JWT with an HS256 header
//   {b64u|TEXT|}       TEXT base64url-encoded, unpadded
//   {pem:LABEL:N}      -----BEGIN LABEL----- , N base64 lines, -----END LABEL----- (N <= 64)
//   escapes            only with `escapes`: \n \r \t \0 \\ \{ and \xHH; other backslashes stay
// Anything else, including malformed directives, is copied as it is.
// Thread-safety: stateless.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace km::audit::testing {

struct Expanded {
  std::string text;
  std::vector<std::string> secrets;  // the text of each {! !} region
  std::vector<std::string> fillers;  // generated runs of 8+ characters inside secret regions
};

// `escapes`: process backslash escapes (plain text templates); off for JSON templates, where
// JSON has its own, and there {pem:...} writes its line breaks as \n escapes.
Expanded expand_template(std::string_view tmpl, uint64_t seed, bool escapes);

}  // namespace km::audit::testing
