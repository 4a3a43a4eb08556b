// The syntax of egress allowlist entries, shared by the profile validator and the enforcer.
//
//   DNS suffix   "*" | ".example.com" | "example.com"   (case-insensitive, trailing dot ignored)
//                A name matches when it equals the suffix or ends with "." + suffix.
//   host rule    "*" | "api.example.com" | "api.example.com:8443"
//   CIDR rule    "10.0.0.0/8" | "192.0.2.7" | "10.0.0.0/8:443" | "10.0.0.0/8:443,8000-8100"
//                "2001:db8::/32" | "[2001:db8::/32]:443" (IPv6 needs brackets to carry ports)
//
// Parsers return an error message (for "<path>: <message>") on bad input; pure, no I/O.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"

namespace km::policy {

struct SuffixRule {
  bool any = false;    // "*"
  std::string suffix;  // lowercase, no leading or trailing dot
};

struct HostRule {
  bool any = false;           // "*"
  std::string host;           // lowercase, no trailing dot
  std::optional<uint16_t> port;
};

struct PortRange {
  uint16_t lo = 0;
  uint16_t hi = 0;
  friend bool operator==(const PortRange&, const PortRange&) = default;
};

struct CidrRule {
  int family = 0;                    // AF_INET or AF_INET6
  std::array<uint8_t, 16> addr{};    // network address; IPv4 in the first 4 bytes
  int prefix_len = 0;
  std::vector<PortRange> ports;      // empty: every port
  bool covers_everything() const { return prefix_len == 0; }
};

Result<SuffixRule> parse_dns_suffix(std::string_view text);
Result<HostRule> parse_host_rule(std::string_view text);
Result<CidrRule> parse_cidr_rule(std::string_view text);

// Normalises a DNS name for matching: lowercase, one trailing dot removed.
std::string normalize_name(std::string_view name);
// True when `name` (already normalised) is covered by `rule`.
bool suffix_matches(std::string_view name, const SuffixRule& rule);

// Checks a DNS host name (no wildcard): LDH labels (underscore allowed), 1..63 each, total
// at most 253. Returns an error message, or nullopt when valid.
std::optional<std::string> check_dns_name(std::string_view name);

// True when `text` parses as an IPv4 or IPv6 address literal (brackets allowed for IPv6).
bool is_ip_literal(std::string_view text);

}  // namespace km::policy
