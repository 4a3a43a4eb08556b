// Fuzz target: km/audit/redact.h on untrusted text, JSON and argv.
// Input: one flags byte, then [literals "\0\0"] body.
//   flags bits 0-1: 0 and 3 text, 1 JSON, 2 argv (one argument per line);
//   bit 2: expand the body as a corpus template first (km/audit/corpus_template.h), so seeds can
//          hold credential-shaped values without the repository holding any;
//   bits 3-5: how many more literal secrets to cut from the body itself.
//   literals: explicit literal secrets, separated by \x01.
// Properties checked:
//   - no crash, no sanitizer report;
//   - idempotent: redacting the output again gives the same output;
//   - no literal secret the Redactor accepted survives: every occurrence of one in the output
//     overlaps a marker (it can only be there as marker text);
//   - text: the output holds the input's markers plus one per entry of `found`;
//   - valid UTF-8 in (body and literals) gives valid UTF-8 out.
// Any crash, sanitizer report or abort is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_support.h"
#include "km/audit/corpus_template.h"
#include "km/audit/redact.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using km::fuzz::die;
using km::fuzz::Rng;

using km::audit::marker;
using km::audit::marker_types;
using km::audit::Redactor;
using nlohmann::json;

// Known markers in `s`, as [begin, end) pairs.
std::vector<std::pair<size_t, size_t>> markers_in(std::string_view s) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t pos = 0;
  while ((pos = s.find("[REDACTED:", pos)) != std::string_view::npos) {
    size_t end = 0;
    for (std::string_view t : marker_types()) {
      std::string m = marker(t);
      if (s.compare(pos, m.size(), m) == 0) end = pos + m.size();
    }
    if (end) {
      out.emplace_back(pos, end);
      pos = end;
    } else {
      ++pos;
    }
  }
  return out;
}

// The rules a literal has to pass to be used (Redactor's constructor).
bool accepted(const std::string& lit) {
  if (lit.size() < km::audit::kMinLiteralSecretBytes) return false;
  if (lit.find_first_not_of(" \t\r\n\v\f") == std::string::npos) return false;
  for (std::string_view t : marker_types()) {
    if (marker(t).find(lit) != std::string::npos) return false;
  }
  return true;
}

void check_literals(std::string_view out, const std::vector<std::string>& literals) {
  std::vector<std::pair<size_t, size_t>> m;
  bool have_markers = false;
  for (const std::string& lit : literals) {
    if (!accepted(lit)) continue;
    for (size_t p = out.find(lit); p != std::string_view::npos; p = out.find(lit, p + 1)) {
      if (!have_markers) {
        m = markers_in(out);
        have_markers = true;
      }
      bool covered = false;
      for (const auto& [b, e] : m) covered = covered || (b < p + lit.size() && p < e);
      if (!covered) die("a literal secret survived");
    }
  }
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = len == 1 ? c : c & (0xff >> (len + 1));
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 2) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += len;
  }
  return true;
}

// nlohmann's comparison and copies recurse; keep fuzzed JSON shallow.
bool shallow(std::string_view text) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > 64) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

void strings_of(const json& j, std::vector<std::string>& out) {
  if (j.is_string()) {
    out.push_back(j.get<std::string>());
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      out.push_back(it.key());
      strings_of(it.value(), out);
    }
  } else if (j.is_array()) {
    for (const json& e : j) strings_of(e, out);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const int kind = flags & 3;

  std::vector<std::string> literals;
  std::string body(in);
  size_t sep = in.find(std::string_view("\0\0", 2));
  if (sep != std::string_view::npos) {
    std::string_view lits = in.substr(0, sep);
    body = std::string(in.substr(sep + 2));
    size_t p = 0;
    while (p <= lits.size()) {
      size_t q = lits.find('\x01', p);
      if (q == std::string_view::npos) q = lits.size();
      literals.emplace_back(lits.substr(p, q - p));
      p = q + 1;
    }
  }
  if (flags & 4) body = km::audit::testing::expand_template(body, 7, kind != 1).text;
  Rng rng(body);
  for (int k = (flags >> 3) & 7; k > 0 && body.size() >= 8; --k) {
    size_t len = 8 + rng.below(std::min<size_t>(body.size() - 8, 40) + 1);
    size_t off = rng.below(body.size() - len + 1);
    literals.push_back(body.substr(off, len));
  }
  Redactor r(literals);
  bool utf8 = valid_utf8(body);
  for (const std::string& l : literals) utf8 = utf8 && valid_utf8(l);

  if (kind == 1) {
    if (!shallow(body)) return 0;
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded()) return 0;
    std::vector<std::string> found;
    json once = r.redact_json(j, &found);
    if (r.redact_json(once) != once) die("redact_json is not idempotent");
    std::vector<std::string> strings;
    strings_of(once, strings);
    for (const std::string& s : strings) check_literals(s, literals);
    (void)once.dump(-1, ' ', false, json::error_handler_t::replace);
    return 0;
  }
  if (kind == 2) {
    std::vector<std::string> argv;
    size_t p = 0;
    while (p <= body.size()) {
      size_t q = body.find('\n', p);
      if (q == std::string::npos) q = body.size();
      argv.push_back(body.substr(p, q - p));
      p = q + 1;
    }
    auto once = r.redact_argv(argv);
    if (once.size() != argv.size()) die("redact_argv changed the number of arguments");
    if (r.redact_argv(once) != once) die("redact_argv is not idempotent");
    for (size_t k = 0; k < once.size(); ++k) {
      check_literals(once[k], literals);
      if (utf8 && !valid_utf8(once[k])) die("redact_argv broke UTF-8");
    }
    return 0;
  }
  std::vector<std::string> found;
  std::string once = r.redact(body, &found);
  if (r.redact(once) != once) die("redact is not idempotent");
  check_literals(once, literals);
  if (markers_in(once).size() != markers_in(body).size() + found.size()) die("markers and `found` disagree");
  if (utf8 && !valid_utf8(once)) die("redact broke UTF-8");
  if (once == body && !found.empty()) die("found secrets but changed nothing");
  return 0;
}
