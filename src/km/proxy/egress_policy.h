// The egress policy of one sandbox, compiled from its profile, and the decisions the DNS filter
// and the egress proxy take with it. Pure: no I/O, no clock of its own (callers pass `now`).
//
//   names      a name may be resolved when it matches allowedDNSSuffixes or is an allowedHosts
//              host (any port).
//   hosts      a connection to name:port is allowed when the name matches a suffix rule, or a
//              host rule whose port (if it has one) is `port`;
//   addresses  and the address dialled must be one the name resolved to through the DNS filter
//              (AddressBook), or be covered by an allowedCIDRs rule for that port.
//   literals   an IP literal is allowed only by an allowedCIDRs rule.
//   special    private, CGNAT, link-local, multicast and reserved addresses are denied unless
//              allowPrivateRanges is set or a CIDR rule names them; loopback and cloud metadata
//              (169.254.169.254, fd00:ec2::254) only when a CIDR rule names them, because the
//              enforcer dials from the host: its loopback is the host's.
//
// Thread-safety: EgressPolicy is immutable after compile(); AddressBook is not synchronised.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"
#include "km/policy/egress_rules.h"

namespace km::proxy {

// An IPv4 or IPv6 address. IPv4 sits in the first four bytes.
struct IpAddress {
  int family = 0;  // AF_INET or AF_INET6
  std::array<uint8_t, 16> bytes{};

  static std::optional<IpAddress> parse(std::string_view text);  // brackets allowed for IPv6
  static IpAddress v4(uint32_t host_order);
  static IpAddress from_bytes(const uint8_t* data, size_t len);  // 4 or 16 bytes
  std::string to_string() const;
  // ::ffff:a.b.c.d as a.b.c.d; anything else unchanged.
  IpAddress unmapped() const;
  friend bool operator==(const IpAddress&, const IpAddress&) = default;
  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;
};

// Why a decision was taken: the rule that allowed it (as written in the profile), or the reason
// for a denial and how to allow it. Audit events carry these fields.
struct Decision {
  bool allowed = false;
  std::string rule;    // "allowedDNSSuffixes: .example.com", "allowedCIDRs: 10.0.0.0/8:443", ...
  std::string reason;  // for denials: "name is not in the allowlist", ...
  std::string hint;    // for denials: what to add to the profile
};

class EgressPolicy {
 public:
  struct Lists {
    std::vector<std::string> dns_suffixes = {};
    std::vector<std::string> hosts = {};
    std::vector<std::string> cidrs = {};
    bool allow_private_ranges = false;
    bool https_only = false;
  };
  // Errors name the bad entry (profiles are validated before this, so that means a bug or a
  // hand-written config).
  static Result<EgressPolicy> compile(const Lists& lists);

  // May `name` (any case, trailing dot allowed) be resolved?
  Decision check_name(std::string_view name) const;
  // May a connection to `name`:`port` be made (before address checks)?
  Decision check_host(std::string_view name, uint16_t port) const;
  // Does an allowedCIDRs rule cover addr:port? (IPv4-mapped IPv6 is checked as IPv4.)
  Decision check_cidr(const IpAddress& addr, uint16_t port) const;
  // May the proxy dial `addr`:`port` for a connection already allowed by name? Checks special
  // ranges (a CIDR rule or allowPrivateRanges lifts them as described above).
  Decision check_dial(const IpAddress& addr, uint16_t port) const;

  // The addresses of the host the enforcer dials from: reaching them is reaching the host's own
  // services, so, like loopback, they need an explicit allowedCIDRs entry.
  void set_host_addresses(std::vector<IpAddress> addrs) { host_ = std::move(addrs); }

  bool https_only() const { return https_only_; }
  bool allow_private_ranges() const { return allow_private_; }
  bool allows_any_egress() const { return !suffixes_.empty() || !hosts_.empty() || !cidrs_.empty(); }

  // The special range `addr` falls in ("private", "loopback", "link-local", "metadata", ...), or
  // nullopt for an ordinary public address.
  static std::optional<std::string_view> special_range(const IpAddress& addr);

 private:
  struct Suffix { policy::SuffixRule rule; std::string text; };
  struct Host { policy::HostRule rule; std::string text; };
  struct Cidr { policy::CidrRule rule; std::string text; };
  std::vector<Suffix> suffixes_;
  std::vector<Host> hosts_;
  std::vector<Cidr> cidrs_;
  bool allow_private_ = false;
  bool https_only_ = false;
  std::vector<IpAddress> host_;
};

// Name → address bindings learned from answers the DNS filter let through. A binding lives for
// max(TTL, floor) and is evicted after; the book holds at most `max_entries` bindings (the
// oldest expiry goes first), so a flood of names cannot grow it without bound.
class AddressBook {
 public:
  using Clock = std::chrono::steady_clock;
  AddressBook(std::chrono::seconds floor, size_t max_entries) : floor_(floor), max_(max_entries) {}

  void bind(std::string_view name, const IpAddress& addr, uint32_t ttl_seconds, Clock::time_point now);
  bool resolved_to(std::string_view name, const IpAddress& addr, Clock::time_point now) const;
  // Names bound to `addr`, for connections that carry no name (server-speaks-first protocols).
  std::vector<std::string> names_for(const IpAddress& addr, Clock::time_point now) const;
  // Addresses bound to `name`.
  std::vector<IpAddress> addresses_of(std::string_view name, Clock::time_point now) const;
  // Removes expired bindings; addresses left with none are appended to `gone`.
  size_t evict_expired(Clock::time_point now, std::vector<IpAddress>* gone = nullptr);
  size_t size() const { return by_key_.size(); }

 private:
  using Key = std::pair<std::string, IpAddress>;
  std::chrono::seconds floor_;
  size_t max_;
  std::map<Key, Clock::time_point> by_key_;
  std::multimap<Clock::time_point, Key> by_expiry_;
  std::map<IpAddress, std::map<std::string, Clock::time_point>> by_addr_;  // for names_for()
  void forget(const Key& key, std::vector<IpAddress>* gone = nullptr);
};

}  // namespace km::proxy
