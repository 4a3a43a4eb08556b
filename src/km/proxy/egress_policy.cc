#include "km/proxy/egress_policy.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "km/base/strings.h"

namespace km::proxy {

namespace {

constexpr std::string_view kNetworkPath = "spec.network.egress.";

bool prefix_matches(const IpAddress& a, const std::array<uint8_t, 16>& net, int len) {
  int full = len / 8;
  if (std::memcmp(a.bytes.data(), net.data(), static_cast<size_t>(full)) != 0) return false;
  int rest = len % 8;
  if (rest == 0) return true;
  auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a.bytes[static_cast<size_t>(full)] & mask) == (net[static_cast<size_t>(full)] & mask);
}

struct Range {
  int family;
  std::array<uint8_t, 16> net;
  int len;
  std::string_view kind;
};

std::array<uint8_t, 16> v4net(uint8_t a, uint8_t b = 0, uint8_t c = 0, uint8_t d = 0) {
  return {a, b, c, d};
}

std::array<uint8_t, 16> v6net(std::string_view text) {
  std::array<uint8_t, 16> out{};
  inet_pton(AF_INET6, std::string(text).c_str(), out.data());
  return out;
}

// Order matters: the first match names the range (metadata before link-local).
const std::vector<Range>& special_ranges() {
  static const std::vector<Range> ranges = {
      {AF_INET, v4net(169, 254, 169, 254), 32, "metadata"},
      {AF_INET, v4net(127), 8, "loopback"},
      {AF_INET, v4net(0), 8, "this-network"},
      {AF_INET, v4net(10), 8, "private"},
      {AF_INET, v4net(100, 64), 10, "shared (CGNAT)"},
      {AF_INET, v4net(169, 254), 16, "link-local"},
      {AF_INET, v4net(172, 16), 12, "private"},
      {AF_INET, v4net(192, 0, 0), 24, "IETF protocol assignments"},
      {AF_INET, v4net(192, 168), 16, "private"},
      {AF_INET, v4net(198, 18), 15, "benchmarking"},
      {AF_INET, v4net(224), 4, "multicast"},
      {AF_INET, v4net(240), 4, "reserved"},
      {AF_INET6, v6net("fd00:ec2::254"), 128, "metadata"},
      {AF_INET6, v6net("::1"), 128, "loopback"},
      {AF_INET6, v6net("::"), 128, "unspecified"},
      {AF_INET6, v6net("64:ff9b::"), 96, "NAT64"},
      {AF_INET6, v6net("64:ff9b:1::"), 48, "NAT64"},
      {AF_INET6, v6net("2002::"), 16, "6to4"},
      {AF_INET6, v6net("2001::"), 32, "Teredo"},
      {AF_INET6, v6net("fc00::"), 7, "private (ULA)"},
      {AF_INET6, v6net("fe80::"), 10, "link-local"},
      {AF_INET6, v6net("fec0::"), 10, "site-local"},
      {AF_INET6, v6net("ff00::"), 8, "multicast"},
      {AF_INET6, v6net("::"), 96, "IPv4-compatible"},
  };
  return ranges;
}

bool port_in(const std::vector<policy::PortRange>& ports, uint16_t port) {
  if (ports.empty()) return true;
  for (const auto& r : ports) {
    if (port >= r.lo && port <= r.hi) return true;
  }
  return false;
}

Decision allow(std::string_view list, const std::string& text) {
  return Decision{true, std::string(list) + ": " + text, "", ""};
}

Decision deny(std::string reason, std::string hint) {
  return Decision{false, "default deny", std::move(reason), std::move(hint)};
}

}  // namespace

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  std::string s(text);
  if (s.size() >= 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  IpAddress a;
  if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET;
    return a;
  }
  if (s.find('%') == std::string::npos && inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET6;
    return a;
  }
  return std::nullopt;
}

IpAddress IpAddress::v4(uint32_t host_order) {
  IpAddress a;
  a.family = AF_INET;
  a.bytes[0] = static_cast<uint8_t>(host_order >> 24);
  a.bytes[1] = static_cast<uint8_t>(host_order >> 16);
  a.bytes[2] = static_cast<uint8_t>(host_order >> 8);
  a.bytes[3] = static_cast<uint8_t>(host_order);
  return a;
}

IpAddress IpAddress::from_bytes(const uint8_t* data, size_t len) {
  IpAddress a;
  a.family = len == 4 ? AF_INET : AF_INET6;
  std::memcpy(a.bytes.data(), data, len == 4 ? 4 : 16);
  return a;
}

std::string IpAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == AF_INET ? AF_INET : AF_INET6, bytes.data(), buf, sizeof buf);
  return buf;
}

IpAddress IpAddress::unmapped() const {
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (family != AF_INET6 || std::memcmp(bytes.data(), kMapped, 12) != 0) return *this;
  return from_bytes(bytes.data() + 12, 4);
}

Result<EgressPolicy> EgressPolicy::compile(const Lists& lists) {
  EgressPolicy p;
  for (const auto& s : lists.dns_suffixes) {
    auto r = policy::parse_dns_suffix(s);
    if (!r) return fail(std::move(r).error().wrap(std::string(kNetworkPath) + "allowedDNSSuffixes"));
    p.suffixes_.push_back({*r, s});
  }
  for (const auto& h : lists.hosts) {
    auto r = policy::parse_host_rule(h);
    if (!r) return fail(std::move(r).error().wrap(std::string(kNetworkPath) + "allowedHosts"));
    p.hosts_.push_back({*r, h});
  }
  for (const auto& c : lists.cidrs) {
    auto r = policy::parse_cidr_rule(c);
    if (!r) return fail(std::move(r).error().wrap(std::string(kNetworkPath) + "allowedCIDRs"));
    p.cidrs_.push_back({*r, c});
  }
  p.allow_private_ = lists.allow_private_ranges;
  p.https_only_ = lists.https_only;
  return p;
}

Decision EgressPolicy::check_name(std::string_view raw) const {
  std::string name = policy::normalize_name(raw);
  if (name.empty() || policy::check_dns_name(name)) {
    return deny("not a valid host name", "");
  }
  for (const auto& s : suffixes_) {
    if (policy::suffix_matches(name, s.rule)) return allow("allowedDNSSuffixes", s.text);
  }
  for (const auto& h : hosts_) {
    if (h.rule.any || h.rule.host == name) return allow("allowedHosts", h.text);
  }
  return deny("name is not in the allowlist",
              "add \"." + name + "\" to " + std::string(kNetworkPath) + "allowedDNSSuffixes or \"" + name + "\" to " +
                  std::string(kNetworkPath) + "allowedHosts");
}

Decision EgressPolicy::check_host(std::string_view raw, uint16_t port) const {
  std::string name = policy::normalize_name(raw);
  if (name.empty() || policy::check_dns_name(name)) return deny("not a valid host name", "");
  for (const auto& s : suffixes_) {
    if (policy::suffix_matches(name, s.rule)) return allow("allowedDNSSuffixes", s.text);
  }
  bool other_port = false;
  for (const auto& h : hosts_) {
    if (!h.rule.any && h.rule.host != name) continue;
    if (!h.rule.port || *h.rule.port == port) return allow("allowedHosts", h.text);
    other_port = true;
  }
  std::string where = std::string(kNetworkPath) + "allowedHosts";
  if (other_port) {
    return deny("port " + std::to_string(port) + " is not allowed for this host",
                "add \"" + name + ":" + std::to_string(port) + "\" to " + where);
  }
  return deny("host is not in the allowlist", "add \"" + name + "\" to " + where);
}

Decision EgressPolicy::check_cidr(const IpAddress& raw, uint16_t port) const {
  IpAddress addr = raw.unmapped();
  for (const auto& c : cidrs_) {
    if (c.rule.family != addr.family) continue;
    if (prefix_matches(addr, c.rule.addr, c.rule.prefix_len) && port_in(c.rule.ports, port)) {
      return allow("allowedCIDRs", c.text);
    }
  }
  std::string a = addr.family == AF_INET6 ? "[" + addr.to_string() + "]" : addr.to_string();
  return deny("address is not covered by allowedCIDRs",
              "add \"" + a + ":" + std::to_string(port) + "\" to " + std::string(kNetworkPath) + "allowedCIDRs");
}

Decision EgressPolicy::check_dial(const IpAddress& raw, uint16_t port) const {
  IpAddress addr = raw.unmapped();
  if (std::find(host_.begin(), host_.end(), addr) != host_.end()) {
    if (auto c = check_cidr(addr, port); c.allowed) return c;
    return deny("address " + addr.to_string() + " belongs to the host the enforcer runs on",
                "add \"" + addr.to_string() + "/" + (addr.family == AF_INET ? "32" : "128") + ":" + std::to_string(port) +
                    "\" to " + std::string(kNetworkPath) + "allowedCIDRs");
  }
  auto kind = special_range(addr);
  if (!kind) return Decision{true, "", "", ""};
  if (auto c = check_cidr(addr, port); c.allowed) return c;
  bool needs_cidr = *kind == "metadata" || *kind == "loopback" || *kind == "this-network" ||
                    *kind == "unspecified" || *kind == "multicast" || *kind == "reserved";
  if (allow_private_ && !needs_cidr) return Decision{true, "allowPrivateRanges", "", ""};
  std::string a = addr.to_string();
  std::string hint = needs_cidr ? "add \"" + a + "/" + (addr.family == AF_INET ? "32" : "128") + "\" to " +
                                      std::string(kNetworkPath) + "allowedCIDRs"
                                : "set spec.network.allowPrivateRanges: true, or list the range in " +
                                      std::string(kNetworkPath) + "allowedCIDRs";
  return deny("address " + a + " is " + std::string(*kind), std::move(hint));
}

std::optional<std::string_view> EgressPolicy::special_range(const IpAddress& raw) {
  IpAddress addr = raw.unmapped();
  for (const auto& r : special_ranges()) {
    if (r.family == addr.family && prefix_matches(addr, r.net, r.len)) return r.kind;
  }
  if (addr.family == AF_INET && addr.bytes[0] == 255 && addr.bytes[1] == 255 && addr.bytes[2] == 255 &&
      addr.bytes[3] == 255) {
    return "broadcast";
  }
  return std::nullopt;
}

void AddressBook::bind(std::string_view raw, const IpAddress& addr, uint32_t ttl, Clock::time_point now) {
  Key key{policy::normalize_name(raw), addr.unmapped()};
  auto life = std::max<std::chrono::seconds>(floor_, std::chrono::seconds(ttl));
  auto expiry = now + life;
  by_addr_[key.second][key.first] = std::max(by_addr_[key.second][key.first], expiry);
  if (auto it = by_key_.find(key); it != by_key_.end()) {
    if (it->second >= expiry) return;
    auto range = by_expiry_.equal_range(it->second);
    for (auto e = range.first; e != range.second; ++e) {
      if (e->second == key) {
        by_expiry_.erase(e);
        break;
      }
    }
    it->second = expiry;
  } else {
    while (max_ > 0 && by_key_.size() >= max_ && !by_expiry_.empty()) {
      Key oldest = by_expiry_.begin()->second;
      by_expiry_.erase(by_expiry_.begin());
      forget(oldest);
    }
    by_key_.emplace(key, expiry);
  }
  by_expiry_.emplace(expiry, std::move(key));
}

bool AddressBook::resolved_to(std::string_view raw, const IpAddress& addr, Clock::time_point now) const {
  auto it = by_key_.find(Key{policy::normalize_name(raw), addr.unmapped()});
  return it != by_key_.end() && it->second > now;
}

std::vector<std::string> AddressBook::names_for(const IpAddress& raw, Clock::time_point now) const {
  std::vector<std::string> out;
  auto it = by_addr_.find(raw.unmapped());
  if (it == by_addr_.end()) return out;
  for (const auto& [name, expiry] : it->second) {
    if (expiry > now) out.push_back(name);
  }
  return out;
}

void AddressBook::forget(const Key& key, std::vector<IpAddress>* gone) {
  by_key_.erase(key);
  if (auto it = by_addr_.find(key.second); it != by_addr_.end()) {
    it->second.erase(key.first);
    if (it->second.empty()) {
      if (gone) gone->push_back(it->first);
      by_addr_.erase(it);
    }
  }
}

std::vector<IpAddress> AddressBook::addresses_of(std::string_view raw, Clock::time_point now) const {
  std::string name = policy::normalize_name(raw);
  std::vector<IpAddress> out;
  for (auto it = by_key_.lower_bound(Key{name, IpAddress{}}); it != by_key_.end() && it->first.first == name; ++it) {
    if (it->second > now) out.push_back(it->first.second);
  }
  return out;
}

size_t AddressBook::evict_expired(Clock::time_point now, std::vector<IpAddress>* gone) {
  size_t n = 0;
  while (!by_expiry_.empty() && by_expiry_.begin()->first <= now) {
    Key key = by_expiry_.begin()->second;
    by_expiry_.erase(by_expiry_.begin());
    forget(key, gone);
    ++n;
  }
  return n;
}

}  // namespace km::proxy
