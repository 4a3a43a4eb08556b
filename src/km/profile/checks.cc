#include "km/profile/checks.h"

#include <cctype>

#include "km/base/strings.h"
#include "km/policy/egress_rules.h"

namespace km::profile::checks {

namespace {

bool lower(char c) { return c >= 'a' && c <= 'z'; }
bool upper(char c) { return c >= 'A' && c <= 'Z'; }
bool digit(char c) { return c >= '0' && c <= '9'; }
bool alnum(char c) { return lower(c) || upper(c) || digit(c); }
bool hex(char c) { return digit(c) || (c >= 'a' && c <= 'f'); }

bool all_of(std::string_view s, bool (*pred)(char)) {
  for (char c : s) {
    if (!pred(c)) return false;
  }
  return true;
}

bool has_control(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool is_glob(std::string_view s) { return s.find_first_of("*?[") != std::string_view::npos; }

// Shared by path checks: absolute or ~-relative, no ".." components, no control characters.
Msg path_common(std::string_view v, bool globs) {
  if (v.empty()) return "empty path";
  if (has_control(v)) return "path " + quoted(v) + " contains control characters";
  if (!(v.front() == '/' || v == "~" || v.substr(0, 2) == "~/")) {
    return "path " + quoted(v) + " must be absolute (/...) or in the sandbox user's home (~/...)";
  }
  for (const std::string& part : split(v, '/')) {
    if (part == "..") return "path " + quoted(v) + " must not contain '..'";
  }
  if (!globs && is_glob(v)) {
    return "path " + quoted(v) + " contains a glob; globs are only accepted in denyRead";
  }
  return std::nullopt;
}

}  // namespace

Msg api_version(std::string_view v) {
  size_t slash = v.rfind('/');
  std::string_view version = slash == std::string_view::npos ? v : v.substr(slash + 1);
  if (version == "v1alpha1") {
    return "v1alpha1 profiles are no longer accepted; change apiVersion to "
           "klankermaker.ai/v1alpha2 (the v1alpha2 field layout is described in the README)";
  }
  if (slash == std::string_view::npos || slash == 0 || version != "v1alpha2") {
    return "apiVersion must be <domain>/v1alpha2, e.g. klankermaker.ai/v1alpha2, not " + quoted(v);
  }
  return std::nullopt;
}

Msg kind(std::string_view v) {
  if (v == "SandboxProfile") return std::nullopt;
  return "kind must be SandboxProfile, not " + quoted(v);
}

Msg profile_name(std::string_view v) {
  if (v.empty()) return "name must not be empty";
  if (v.size() > 128) return "name is longer than 128 characters";
  if (!alnum(v.front())) return "name must start with a letter or digit";
  for (char c : v) {
    if (!(alnum(c) || c == '-' || c == '_' || c == '.' || c == '/')) {
      return "name " + quoted(v) + " may contain only letters, digits, '-', '_', '.' and '/'";
    }
  }
  return std::nullopt;
}

Msg id_prefix(std::string_view v) {
  if (v.empty() || v.size() > 12 || !lower(v.front()) ||
      !all_of(v, [](char c) { return lower(c) || digit(c); })) {
    return "prefix " + quoted(v) +
           " must be 1-12 lowercase letters and digits, starting with a letter (IDs look like "
           "<prefix>-1a2b3c4d)";
  }
  return std::nullopt;
}

Msg extends_name(std::string_view v) {
  if (v.empty()) return "empty profile name in extends";
  if (v.size() > 4096 || has_control(v)) return "invalid profile name " + quoted(v) + " in extends";
  return std::nullopt;
}

Msg label_key(std::string_view v) {
  if (v.empty() || v.size() > 63 || has_control(v)) return "invalid label key " + quoted(v);
  return std::nullopt;
}

Msg dns_suffix(std::string_view v) {
  auto r = policy::parse_dns_suffix(v);
  if (!r) return r.error().message();
  return std::nullopt;
}

Msg host_rule(std::string_view v) {
  auto r = policy::parse_host_rule(v);
  if (!r) return r.error().message();
  return std::nullopt;
}

Msg cidr_rule(std::string_view v) {
  auto r = policy::parse_cidr_rule(v);
  if (!r) return r.error().message();
  return std::nullopt;
}

std::optional<unsigned long long> parse_byte_size(std::string_view v) {
  size_t i = 0;
  unsigned long long n = 0;
  while (i < v.size() && digit(v[i])) {
    if (n > (1ull << 50)) return std::nullopt;
    n = n * 10 + static_cast<unsigned long long>(v[i] - '0');
    ++i;
  }
  if (i == 0) return std::nullopt;
  std::string_view unit = v.substr(i);
  unsigned long long mult = 1;
  if (unit.empty()) mult = 1;
  else if (unit == "K" || unit == "k") mult = 1000ull;
  else if (unit == "M") mult = 1000ull * 1000;
  else if (unit == "G") mult = 1000ull * 1000 * 1000;
  else if (unit == "T") mult = 1000ull * 1000 * 1000 * 1000;
  else if (unit == "Ki") mult = 1ull << 10;
  else if (unit == "Mi") mult = 1ull << 20;
  else if (unit == "Gi") mult = 1ull << 30;
  else if (unit == "Ti") mult = 1ull << 40;
  else return std::nullopt;
  if (n > (1ull << 60) / mult) return std::nullopt;
  return n * mult;
}

Msg byte_size(std::string_view v) {
  if (!parse_byte_size(v)) {
    return "size " + quoted(v) + " must be a number with an optional unit (Ki, Mi, Gi, Ti, K, M, G, T), e.g. 512Mi or 4Gi";
  }
  return std::nullopt;
}

Msg env_name(std::string_view v) {
  if (v.empty() || digit(v.front()) ||
      !all_of(v, [](char c) { return alnum(c) || c == '_'; })) {
    return "environment variable name " + quoted(v) + " must match [A-Za-z_][A-Za-z0-9_]*";
  }
  return std::nullopt;
}

Msg abs_path(std::string_view v) {
  if (v.empty() || v.front() != '/') return "path " + quoted(v) + " must be absolute";
  if (has_control(v)) return "path " + quoted(v) + " contains control characters";
  return std::nullopt;
}

Msg config_file_path(std::string_view v) {
  if (auto m = path_common(v, false)) return m;
  if (v == "~" || v.back() == '/') return "configFiles key " + quoted(v) + " must name a file";
  return std::nullopt;
}

Msg sandbox_path(std::string_view v) { return path_common(v, false); }
Msg sandbox_path_glob(std::string_view v) { return path_common(v, true); }

Msg user_name(std::string_view v) {
  if (v.empty() || v.size() > 32 || !(lower(v.front()) || v.front() == '_') ||
      !all_of(v, [](char c) { return lower(c) || digit(c) || c == '_' || c == '-'; })) {
    return "user name " + quoted(v) + " must match [a-z_][a-z0-9_-]{0,31}";
  }
  if (v == "root") return "the agent never runs as host root; use privileged: true for root inside the sandbox's user namespace";
  return std::nullopt;
}

Msg github_repo(std::string_view v) {
  std::string_view s = v;
  if (s.substr(0, 11) == "github.com/") s.remove_prefix(11);
  if (s == "*") return std::nullopt;
  size_t slash = s.find('/');
  if (slash == std::string_view::npos || s.find('/', slash + 1) != std::string_view::npos) {
    return "repository " + quoted(v) + " must be owner/repo, owner/* or *";
  }
  std::string_view owner = s.substr(0, slash), repo = s.substr(slash + 1);
  if (owner.empty() || owner.size() > 39 || owner.front() == '-' ||
      !all_of(owner, [](char c) { return alnum(c) || c == '-'; })) {
    return "GitHub owner " + quoted(owner) + " may contain only letters, digits and '-' (1-39)";
  }
  if (repo == "*") return std::nullopt;
  if (repo.empty() || repo.size() > 100 || repo == "." || repo == ".." ||
      !all_of(repo, [](char c) { return alnum(c) || c == '-' || c == '_' || c == '.'; })) {
    return "GitHub repository name " + quoted(repo) +
           " may contain only letters, digits, '-', '_' and '.' (or be * for every repository of the owner)";
  }
  return std::nullopt;
}

Msg git_ref_glob(std::string_view v) {
  if (v.empty()) return "empty ref pattern";
  if (has_control(v) || v.find_first_of(" ~^:\\") != std::string_view::npos ||
      v.find("..") != std::string_view::npos || v.find("@{") != std::string_view::npos) {
    return "ref pattern " + quoted(v) + " contains characters git does not allow in ref names";
  }
  return std::nullopt;
}

namespace {
bool alias_part(std::string_view p) {
  return !p.empty() && lower(p.front()) &&
         all_of(p, [](char c) { return lower(c) || digit(c) || c == '-'; });
}
}  // namespace

Msg email_alias(std::string_view v) {
  size_t dot = v.find('.');
  if (dot == std::string_view::npos || v.find('.', dot + 1) != std::string_view::npos ||
      !alias_part(v.substr(0, dot)) || !alias_part(v.substr(dot + 1))) {
    return "alias " + quoted(v) + " must look like team.name (lowercase letters, digits and '-')";
  }
  return std::nullopt;
}

Msg email_sender(std::string_view v) {
  if (v == "self" || v == "*") return std::nullopt;
  // A sandbox ID: prefix-8hex.
  size_t dash = v.rfind('-');
  if (dash != std::string_view::npos && v.size() - dash - 1 == 8 &&
      all_of(v.substr(dash + 1), hex) && !id_prefix(v.substr(0, dash))) {
    return std::nullopt;
  }
  size_t dot = v.find('.');
  if (dot != std::string_view::npos && v.find('.', dot + 1) == std::string_view::npos &&
      alias_part(v.substr(0, dot)) && (v.substr(dot + 1) == "*" || alias_part(v.substr(dot + 1)))) {
    return std::nullopt;
  }
  return "sender " + quoted(v) + " must be self, *, a sandbox ID, an alias (team.name) or an alias pattern (team.*)";
}

Msg email_address(std::string_view v) {
  size_t at = v.find('@');
  if (at == std::string_view::npos || at == 0 || v.find('@', at + 1) != std::string_view::npos ||
      v.find('.', at) == std::string_view::npos || v.back() == '.' || has_control(v) ||
      v.find(' ') != std::string_view::npos) {
    return "email address " + quoted(v) + " does not look like name@example.com";
  }
  return std::nullopt;
}

Msg aws_region(std::string_view v) {
  // e.g. us-east-1, ap-southeast-2, us-gov-west-1
  auto parts = split(v, '-');
  bool ok = parts.size() >= 3 && parts.size() <= 4 && parts.front().size() == 2 &&
            all_of(parts.front(), lower) && !parts.back().empty() && all_of(parts.back(), digit);
  for (size_t i = 1; ok && i + 1 < parts.size(); ++i) ok = !parts[i].empty() && all_of(parts[i], lower);
  if (!ok) return "region " + quoted(v) + " does not look like an AWS region (e.g. us-east-1)";
  return std::nullopt;
}

Msg aws_az(std::string_view v) {
  if (v.size() < 2 || !lower(v.back()) || aws_region(v.substr(0, v.size() - 1))) {
    return "availability zone " + quoted(v) + " does not look like us-east-1a";
  }
  return std::nullopt;
}

Msg instance_type(std::string_view v) {
  size_t dot = v.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == v.size() ||
      !all_of(v.substr(0, dot), [](char c) { return lower(c) || digit(c) || c == '-'; }) ||
      !all_of(v.substr(dot + 1), [](char c) { return lower(c) || digit(c); })) {
    return "instance type " + quoted(v) + " does not look like t3.medium";
  }
  return std::nullopt;
}

Msg ami(std::string_view v) {
  if (v.empty() || v == "amazon-linux-2023" || v == "ubuntu-24.04" || v == "ubuntu-22.04") {
    return std::nullopt;
  }
  if (v.substr(0, 4) == "ami-" && v.size() >= 12 && v.size() <= 21 && all_of(v.substr(4), hex)) {
    return std::nullopt;
  }
  return "ami " + quoted(v) + " must be amazon-linux-2023, ubuntu-24.04, ubuntu-22.04 or an ami-<hex> ID";
}

Msg snapshot_id(std::string_view v) {
  if (v.substr(0, 5) == "snap-" && v.size() >= 13 && v.size() <= 22 && all_of(v.substr(5), hex)) {
    return std::nullopt;
  }
  return "snapshot ID " + quoted(v) + " must look like snap-0123456789abcdef0";
}

Msg ebs_device(std::string_view v) {
  if (v.size() == 8 && v.substr(0, 7) == "/dev/sd" && v[7] >= 'f' && v[7] <= 'p') return std::nullopt;
  return "device " + quoted(v) + " must be one of /dev/sdf ... /dev/sdp";
}

Msg slack_channel_id(std::string_view v) {
  if (v.size() >= 2 && v.front() == 'C' &&
      all_of(v.substr(1), [](char c) { return upper(c) || digit(c); })) {
    return std::nullopt;
  }
  return "Slack channel ID " + quoted(v) + " must look like C0123ABCD";
}

Msg slack_user_id(std::string_view v) {
  if (v.size() >= 2 && (v.front() == 'U' || v.front() == 'W') &&
      all_of(v.substr(1), [](char c) { return upper(c) || digit(c); })) {
    return std::nullopt;
  }
  return "Slack user ID " + quoted(v) + " must look like U012ABCDE";
}

Msg geometry(std::string_view v) {
  size_t x = v.find('x');
  if (x == std::string_view::npos || x == 0 || x + 1 == v.size() || !all_of(v.substr(0, x), digit) ||
      !all_of(v.substr(x + 1), digit)) {
    return "geometry " + quoted(v) + " must look like 1920x1080";
  }
  return std::nullopt;
}

Msg sops_file(std::string_view v) {
  if (v.size() > 9 && v.substr(v.size() - 9) == ".enc.yaml") return std::nullopt;
  return "sopsFile " + quoted(v) + " must end in .enc.yaml";
}

Msg url(std::string_view v) {
  if ((v.substr(0, 7) == "http://" && v.size() > 7) || (v.substr(0, 8) == "https://" && v.size() > 8)) {
    if (!has_control(v) && v.find(' ') == std::string_view::npos) return std::nullopt;
  }
  return "URL " + quoted(v) + " must start with http:// or https://";
}

Msg image(std::string_view v) {
  if (v == "host") return std::nullopt;
  if (auto m = abs_path(v)) {
    return "image " + quoted(v) + " must be \"host\" (the host's root, read-only) or the absolute path of a root filesystem directory";
  }
  return std::nullopt;
}

Msg non_blank(std::string_view v) {
  for (char c : v) {
    if (!std::isspace(static_cast<unsigned char>(c))) return std::nullopt;
  }
  return "must not be empty";
}

}  // namespace km::profile::checks
