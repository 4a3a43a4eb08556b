// Test helpers shared by the profile tests (not part of the library).
#pragma once

#include <string>
#include <string_view>

#include "km/profile/findings.h"
#include "km/profile/inherit.h"
#include "km/yaml/node.h"

namespace km::profile::testing {

// A minimal valid profile (local substrate) as YAML text.
inline constexpr std::string_view kMinimal =
    "apiVersion: klankermaker.ai/v1alpha2\n"
    "kind: SandboxProfile\n"
    "metadata:\n"
    "  name: minimal\n"
    "spec:\n"
    "  lifecycle:\n"
    "    ttl: 8h\n"
    "    idleTimeout: 1h\n"
    "  network:\n"
    "    egress:\n"
    "      allowedDNSSuffixes: []\n"
    "      allowedHosts: []\n";

// Validates `text` as a standalone profile named "t.yaml".
inline Findings check(std::string_view text) { return check_text(text, "t.yaml", {}).findings; }

inline std::string dump(const Findings& f) {
  std::string out;
  for (const auto& i : f.items()) out += i.to_string() + "\n";
  return out;
}

// Finds the first finding with `path` (and severity); nullptr if none.
inline const Finding* find(const Findings& f, std::string_view path,
                           Severity sev = Severity::kError) {
  for (const auto& i : f.items()) {
    if (i.path == path && i.severity == sev) return &i;
  }
  return nullptr;
}

inline size_t count(const Findings& f, Severity sev) {
  size_t n = 0;
  for (const auto& i : f.items()) n += i.severity == sev;
  return n;
}

}  // namespace km::profile::testing
