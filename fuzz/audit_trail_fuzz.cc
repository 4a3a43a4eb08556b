// Fuzz target: the audit trail's readers on untrusted bytes: the enforcer's pipe as kmd reads it
// (km/audit/lines.h, from_enforcer_line) and a trail as `km logs --verify` reads it
// (ChainVerifier), with the properties the trail relies on:
//   - the lines do not depend on how the bytes were split into reads; no line is longer than
//     the bound and the splitter never holds more than it;
//   - every event mapped from a line seals to canonical JSON that parses back to the same text
//     and verifies, whatever bytes its strings held (invalid UTF-8, NUL, control characters);
//   - the verifier takes any line without crashing and reports the first problem only once.
// Any crash, sanitizer report or abort is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "km/audit/event.h"
#include "km/audit/lines.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using km::fuzz::die;

using Json = nlohmann::json;

std::vector<std::pair<std::string, size_t>> split(std::string_view bytes, size_t step, size_t max) {
  km::audit::LineSplitter s(max);
  std::vector<std::pair<std::string, size_t>> out;
  auto sink = [&](std::string_view l, size_t cut) {
    if (l.size() > max) die("a line longer than the bound");
    out.emplace_back(std::string(l), cut);
  };
  for (size_t at = 0; at < bytes.size(); at += step) {
    s.feed(bytes.substr(at, step), sink);
    if (s.buffered() > max) die("the splitter holds more than the bound");
  }
  s.finish(sink);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  size_t max = 64 + (size % 512);
  auto whole = split(bytes, bytes.size() ? bytes.size() : 1, max);
  if (split(bytes, 1, max) != whole || split(bytes, 7, max) != whole) die("lines depend on how the bytes were read");

  km::audit::Chain chain("sb-fuzz");
  km::audit::ChainVerifier sealed("sb-fuzz"), raw("sb-fuzz");
  for (const auto& [line, cut] : whole) {
    raw.feed(line, "fuzz");
    if (cut) continue;
    Json j = Json::parse(line, nullptr, false);
    auto e = km::audit::from_enforcer_line(j, 1);
    if (!e) continue;
    auto s = chain.seal(*e);
    Json back = Json::parse(s.line, nullptr, false);
    if (!back.is_object() || km::audit::canonical(back) != s.line) die("a sealed line is not canonical JSON");
    if (!sealed.feed(s.line, "fuzz")) die("a sealed event does not verify");
  }
  raw.finish(std::nullopt);
  sealed.finish(chain.last_seq(), chain.last_hash());
  if (sealed.problem()) die("an intact chain reports a problem");
  return 0;
}
