#include "km/policy/egress_rules.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>

#include "km/base/strings.h"

namespace km::policy {

namespace {

bool is_label_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

Result<uint32_t> parse_uint(std::string_view s, uint32_t max, std::string_view what) {
  if (s.empty() || s.size() > 10) {
    return fail(ErrorCode::kInvalidArgument, std::string(what) + " " + quoted(s) + " is not a number");
  }
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return fail(ErrorCode::kInvalidArgument, std::string(what) + " " + quoted(s) + " is not a number");
    }
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > max) {
    return fail(ErrorCode::kInvalidArgument,
                std::string(what) + " " + std::string(s) + " is out of range (0-" + std::to_string(max) + ")");
  }
  return static_cast<uint32_t>(v);
}

Result<uint16_t> parse_port(std::string_view s) {
  auto v = parse_uint(s, 65535, "port");
  if (!v || *v == 0) {
    return fail(ErrorCode::kInvalidArgument, "port " + quoted(s) + " must be a number from 1 to 65535");
  }
  return static_cast<uint16_t>(*v);
}

Result<std::vector<PortRange>> parse_ports(std::string_view s) {
  std::vector<PortRange> out;
  if (s.empty()) return fail(ErrorCode::kInvalidArgument, "empty port list after ':'");
  for (const std::string& part : split(s, ',')) {
    size_t dash = part.find('-');
    PortRange r;
    if (dash == std::string::npos) {
      KM_ASSIGN_OR_RETURN(r.lo, parse_port(part));
      r.hi = r.lo;
    } else {
      KM_ASSIGN_OR_RETURN(r.lo, parse_port(std::string_view(part).substr(0, dash)));
      KM_ASSIGN_OR_RETURN(r.hi, parse_port(std::string_view(part).substr(dash + 1)));
      if (r.hi < r.lo) {
        return fail(ErrorCode::kInvalidArgument, "port range " + part + " runs backwards");
      }
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace

std::string normalize_name(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  return to_lower(name);
}

std::optional<std::string> check_dns_name(std::string_view name) {
  if (name.empty()) return "empty name";
  if (name.size() > 253) return "name is longer than 253 characters";
  size_t start = 0;
  for (;;) {
    size_t dot = name.find('.', start);
    std::string_view label =
        name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty()) return "empty label in " + quoted(name);
    if (label.size() > 63) return "label longer than 63 characters in " + quoted(name);
    for (char c : label) {
      unsigned char uc = static_cast<unsigned char>(c);
      if (uc >= 0x80) {
        return quoted(name) + " is not ASCII; write internationalised names in punycode (xn--...)";
      }
      if (c == '*') return "wildcard '*' inside " + quoted(name);
      if (!is_label_char(static_cast<char>(std::tolower(uc)))) {
        return "invalid character " + quoted(std::string(1, c)) + " in " + quoted(name);
      }
    }
    if (label.front() == '-' || label.back() == '-') {
      return "label " + quoted(label) + " starts or ends with '-'";
    }
    if (dot == std::string_view::npos) {
      // No top-level domain is numeric: "127.1", "2130706433" or "0x7f000001" are IP
      // addresses to resolvers (inet_aton), not names.
      bool numeric = std::all_of(label.begin(), label.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) ||
                     (label.size() > 2 && (label.substr(0, 2) == "0x" || label.substr(0, 2) == "0X"));
      if (numeric) {
        return quoted(name) + " looks like an IP address (its last label is numeric); IP destinations go under allowedCIDRs";
      }
      break;
    }
    start = dot + 1;
  }
  return std::nullopt;
}

bool is_ip_literal(std::string_view text) {
  std::string s(text);
  if (s.size() >= 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

Result<SuffixRule> parse_dns_suffix(std::string_view text) {
  SuffixRule r;
  if (text == "*") {
    r.any = true;
    return r;
  }
  if (text.empty()) return fail(ErrorCode::kInvalidArgument, "empty DNS suffix");
  if (text.size() >= 2 && text.substr(0, 2) == "*.") {
    return fail(ErrorCode::kInvalidArgument,
                "wildcard " + quoted(text) + " is not a suffix; write " +
                    quoted(text.substr(1)) + " (it already covers every subdomain)");
  }
  std::string_view body = text;
  if (body.front() == '.') body.remove_prefix(1);
  if (!body.empty() && body.back() == '.') body.remove_suffix(1);
  if (is_ip_literal(body) || is_ip_literal(text)) {
    return fail(ErrorCode::kInvalidArgument,
                quoted(text) + " is an IP address, not a DNS suffix; list it under allowedCIDRs");
  }
  if (body.find(':') != std::string_view::npos || body.find('/') != std::string_view::npos) {
    return fail(ErrorCode::kInvalidArgument,
                quoted(text) + " is not a DNS suffix (no ports or paths); hosts with ports go under allowedHosts");
  }
  if (auto err = check_dns_name(body)) return fail(ErrorCode::kInvalidArgument, *err);
  r.suffix = to_lower(body);
  return r;
}

bool suffix_matches(std::string_view name, const SuffixRule& rule) {
  if (rule.any) return true;
  const std::string& s = rule.suffix;
  if (name.size() == s.size()) return name == s;
  return name.size() > s.size() && name[name.size() - s.size() - 1] == '.' &&
         name.substr(name.size() - s.size()) == s;
}

Result<HostRule> parse_host_rule(std::string_view text) {
  HostRule r;
  if (text == "*") {
    r.any = true;
    return r;
  }
  if (text.empty()) return fail(ErrorCode::kInvalidArgument, "empty host");
  if (text.find("://") != std::string_view::npos || text.find('/') != std::string_view::npos) {
    return fail(ErrorCode::kInvalidArgument,
                quoted(text) + " is a URL; write just the host name, optionally with :port");
  }
  if (text.front() == '[' || is_ip_literal(text) || std::count(text.begin(), text.end(), ':') > 1) {
    return fail(ErrorCode::kInvalidArgument,
                quoted(text) + " is an IP address; IP destinations go under allowedCIDRs");
  }
  std::string_view host = text;
  size_t colon = text.rfind(':');
  if (colon != std::string_view::npos) {
    host = text.substr(0, colon);
    KM_ASSIGN_OR_RETURN(uint16_t port, parse_port(text.substr(colon + 1)));
    r.port = port;
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  if (is_ip_literal(host)) {
    return fail(ErrorCode::kInvalidArgument,
                quoted(text) + " is an IP address; IP destinations go under allowedCIDRs");
  }
  if (host.size() >= 2 && host.substr(0, 2) == "*.") {
    return fail(ErrorCode::kInvalidArgument,
                "allowedHosts takes exact host names; for every subdomain of " +
                    quoted(host.substr(2)) + " add " + quoted(host.substr(1)) +
                    " to allowedDNSSuffixes");
  }
  if (!host.empty() && host.front() == '.') {
    return fail(ErrorCode::kInvalidArgument,
                quoted(text) + " looks like a suffix; suffixes go under allowedDNSSuffixes");
  }
  if (auto err = check_dns_name(host)) return fail(ErrorCode::kInvalidArgument, *err);
  r.host = to_lower(host);
  return r;
}

Result<CidrRule> parse_cidr_rule(std::string_view text) {
  CidrRule r;
  if (text.empty()) return fail(ErrorCode::kInvalidArgument, "empty CIDR");
  std::string_view net = text;
  std::string_view ports;
  bool have_ports = false;
  if (text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return fail(ErrorCode::kInvalidArgument, "missing ']' in " + quoted(text));
    }
    net = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return fail(ErrorCode::kInvalidArgument, "expected ':ports' after ']' in " + quoted(text));
      }
      ports = rest.substr(1);
      have_ports = true;
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    size_t colon = text.find(':');
    net = text.substr(0, colon);
    ports = text.substr(colon + 1);
    have_ports = true;
  }
  std::string_view addr_text = net;
  std::optional<uint32_t> prefix;
  size_t slash = net.find('/');
  if (slash != std::string_view::npos) {
    addr_text = net.substr(0, slash);
    KM_ASSIGN_OR_RETURN(uint32_t p, parse_uint(net.substr(slash + 1), 128, "prefix length"));
    prefix = p;
  }
  std::string a(addr_text);
  if (inet_pton(AF_INET, a.c_str(), r.addr.data()) == 1) {
    r.family = AF_INET;
    if (prefix && *prefix > 32) {
      return fail(ErrorCode::kInvalidArgument, "IPv4 prefix length /" + std::to_string(*prefix) + " is over 32");
    }
    r.prefix_len = prefix ? static_cast<int>(*prefix) : 32;
  } else if (inet_pton(AF_INET6, a.c_str(), r.addr.data()) == 1) {
    r.family = AF_INET6;
    r.prefix_len = prefix ? static_cast<int>(*prefix) : 128;
    bool mapped = true;
    for (int i = 0; i < 10; ++i) mapped = mapped && r.addr[static_cast<size_t>(i)] == 0;
    mapped = mapped && r.addr[10] == 0xff && r.addr[11] == 0xff;
    if (mapped) {
      return fail(ErrorCode::kInvalidArgument,
                  quoted(text) + " is an IPv4-mapped IPv6 address; write the IPv4 form instead");
    }
  } else {
    if (text.find("::") == std::string_view::npos && std::count(text.begin(), text.end(), ':') > 1) {
      return fail(ErrorCode::kInvalidArgument,
                  quoted(text) + " is not a CIDR; IPv6 with ports is written [2001:db8::/32]:443");
    }
    return fail(ErrorCode::kInvalidArgument,
                quoted(text) + " is not a CIDR (e.g. 10.0.0.0/8, 192.0.2.7:443, 2001:db8::/32)");
  }
  // Host bits set means the intent is ambiguous (a host or the network?): refuse.
  int bytes = r.family == AF_INET ? 4 : 16;
  for (int bit = r.prefix_len; bit < bytes * 8; ++bit) {
    if (r.addr[static_cast<size_t>(bit / 8)] & (0x80 >> (bit % 8))) {
      std::array<uint8_t, 16> netaddr = r.addr;
      for (int b = r.prefix_len; b < bytes * 8; ++b) {
        netaddr[static_cast<size_t>(b / 8)] &= static_cast<uint8_t>(~(0x80 >> (b % 8)));
      }
      char buf[INET6_ADDRSTRLEN];
      inet_ntop(r.family, netaddr.data(), buf, sizeof buf);
      return fail(ErrorCode::kInvalidArgument,
                  quoted(text) + " has host bits set; did you mean " + buf + "/" +
                      std::to_string(r.prefix_len) + "?");
    }
  }
  if (have_ports) {
    KM_ASSIGN_OR_RETURN(r.ports, parse_ports(ports));
  }
  return r;
}

}  // namespace km::policy
