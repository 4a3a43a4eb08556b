#include "km/profile/validate.h"

#include <sys/socket.h>

#include <cmath>
#include <optional>
#include <set>
#include <unordered_set>

#include "km/base/duration.h"
#include "km/base/strings.h"
#include "km/policy/egress_rules.h"
#include "km/profile/checks.h"
#include "km/profile/schema.h"

namespace km::profile {

namespace {

using schema::Type;
using yaml::Kind;
using yaml::ScalarType;

std::string join_path(const std::string& base, std::string_view key) {
  return base.empty() ? std::string(key) : base + "." + std::string(key);
}

std::string index_path(const std::string& base, size_t i) {
  return base + "[" + std::to_string(i) + "]";
}

std::string fmt_number(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string enum_list(const std::vector<std::string>& values) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += i + 1 == values.size() ? " or " : ", ";
    out += values[i];
  }
  return out;
}

// --- structural validation ------------------------------------------------------------------

class Structure {
 public:
  Structure(Findings& f, bool fragment) : f_(f), fragment_(fragment) {}

  void walk(const yaml::Node& n, const schema::Node& s, const std::string& path) {
    if (!s.ignored.empty() && !path.empty()) {
      f_.warning(n.mark, path, s.ignored);
    }
    switch (s.type) {
      case Type::kObject: return object(n, s, path);
      case Type::kMap: return map(n, s, path);
      case Type::kList: return list(n, s, path);
      case Type::kStringOrList:
        if (n.is_sequence()) return list(n, s, path);
        return string(n, *s.items, path);
      case Type::kString: return string(n, s, path);
      case Type::kBool: return boolean(n, path);
      case Type::kInt: return number(n, s, path, true);
      case Type::kNumber: return number(n, s, path, false);
      case Type::kDuration: return duration(n, s, path);
      case Type::kEnum: return enumeration(n, s, path);
      case Type::kAny: return;
    }
  }

 private:
  void mismatch(const yaml::Node& n, const std::string& path, std::string_view expected) {
    std::string msg = "expected " + std::string(expected) + ", got " + std::string(n.describe());
    if (n.is_null()) msg += " (an empty value)";
    f_.error(n.mark, path, msg);
  }

  void object(const yaml::Node& n, const schema::Node& s, const std::string& path) {
    if (!n.is_mapping()) return mismatch(n, path, "a mapping");
    for (const yaml::Entry& e : n.entries) {
      const schema::Field* field = s.field(e.key);
      if (!field) {
        std::string msg = "unknown key " + quoted(e.key);
        std::string near = closest_match(e.key, s.field_names());
        if (!near.empty()) {
          msg += " (did you mean " + quoted(near) + "?)";
        } else {
          msg += "; allowed here: " + enum_list(s.field_names());
        }
        f_.error(e.key_mark, join_path(path, e.key), msg);
        continue;
      }
      walk(e.value, *field->node, join_path(path, e.key));
    }
    if (fragment_) return;
    for (const schema::Field& field : s.fields) {
      if (field.required && !n.find_entry(field.name)) {
        f_.error(n.mark, join_path(path, field.name), "required key is missing");
      }
    }
  }

  void map(const yaml::Node& n, const schema::Node& s, const std::string& path) {
    if (!n.is_mapping()) return mismatch(n, path, "a mapping");
    for (const yaml::Entry& e : n.entries) {
      std::string p = join_path(path, e.key);
      if (s.key_check) {
        if (auto msg = s.key_check(e.key)) f_.error(e.key_mark, p, *msg);
      }
      walk(e.value, *s.items, p);
    }
  }

  void list(const yaml::Node& n, const schema::Node& s, const std::string& path) {
    if (!n.is_sequence()) return mismatch(n, path, s.type == Type::kStringOrList ? "a string or a list" : "a list");
    if (s.non_empty && n.items.empty()) f_.error(n.mark, path, "must not be empty");
    std::unordered_set<std::string> seen;
    for (size_t i = 0; i < n.items.size(); ++i) {
      const yaml::Node& item = n.items[i];
      walk(item, *s.items, index_path(path, i));
      if (s.unique && !seen.insert(item.canonical()).second) {
        f_.warning(item.mark, index_path(path, i), "duplicate entry");
      }
    }
  }

  void string(const yaml::Node& n, const schema::Node& s, const std::string& path) {
    if (!n.is_scalar()) return mismatch(n, path, "a string");
    if (n.scalar_type() == ScalarType::kBool) {
      f_.error(n.mark, path, "expected a string, got the boolean " + n.value +
                                 "; quote it if you mean the text");
      return;
    }
    if (s.non_empty) {
      if (auto msg = checks::non_blank(n.value)) f_.error(n.mark, path, *msg);
    }
    if (s.check) {
      if (auto msg = s.check(n.value)) f_.error(n.mark, path, *msg);
    }
  }

  void boolean(const yaml::Node& n, const std::string& path) {
    if (n.scalar_type() == ScalarType::kBool) return;
    if (n.is_scalar()) {
      std::string v = to_lower(n.value);
      bool looks_bool = v == "true" || v == "false" || v == "yes" || v == "no" || v == "on" ||
                        v == "off" || v == "y" || v == "n";
      if (n.style != yaml::Style::kPlain && looks_bool && (v == "true" || v == "false")) {
        f_.error(n.mark, path, "expected a boolean, got the string " + quoted(n.value) + "; remove the quotes");
        return;
      }
      if (looks_bool) {
        f_.error(n.mark, path, "expected a boolean, got " + quoted(n.value) + "; write true or false");
        return;
      }
    }
    mismatch(n, path, "a boolean (true or false)");
  }

  void number(const yaml::Node& n, const schema::Node& s, const std::string& path, bool integral) {
    std::optional<double> v;
    if (integral) {
      if (n.scalar_type() == ScalarType::kInt) {
        auto i = n.as_int();
        if (!i) {
          f_.error(n.mark, path, "integer " + quoted(n.value) + " is out of range");
          return;
        }
        v = static_cast<double>(*i);
      }
    } else {
      v = n.as_number();
    }
    if (!v) {
      if (n.is_scalar() && n.style != yaml::Style::kPlain) {
        yaml::Node plain = yaml::Node::scalar(n.value);
        if ((integral && plain.scalar_type() == ScalarType::kInt) || (!integral && plain.as_number())) {
          f_.error(n.mark, path, "expected a number, got the string " + quoted(n.value) + "; remove the quotes");
          return;
        }
      }
      if (integral && n.scalar_type() == ScalarType::kFloat) {
        f_.error(n.mark, path, "expected a whole number, got " + n.value);
        return;
      }
      return mismatch(n, path, integral ? "an integer" : "a number");
    }
    if (s.min) {
      if (s.exclusive_min ? !(*v > *s.min) : *v < *s.min) {
        f_.error(n.mark, path, "must be " + std::string(s.exclusive_min ? "greater than " : "at least ") +
                                   fmt_number(*s.min) + ", got " + n.value);
      }
    }
    if (s.max && *v > *s.max) {
      f_.error(n.mark, path, "must be at most " + fmt_number(*s.max) + ", got " + n.value);
    }
  }

  void duration(const yaml::Node& n, const schema::Node& s, const std::string& path) {
    if (!n.is_scalar() || n.scalar_type() == ScalarType::kBool) {
      return mismatch(n, path, "a duration such as 30s, 45m, 8h, 2d or 4h30m");
    }
    auto d = parse_duration(n.value);
    if (!d) {
      f_.error(n.mark, path, d.error().message());
      return;
    }
    if (!s.allow_zero && d->is_zero()) f_.error(n.mark, path, "must be longer than 0");
  }

  void enumeration(const yaml::Node& n, const schema::Node& s, const std::string& path) {
    if (!n.is_scalar()) return mismatch(n, path, "one of " + enum_list(s.values));
    for (const std::string& v : s.values) {
      if (n.value == v) return;
    }
    std::string msg = quoted(n.value) + " is not one of " + enum_list(s.values);
    if (n.scalar_type() == ScalarType::kBool) {
      msg += " (a plain " + n.value + " is a boolean)";
    } else {
      std::string near = closest_match(n.value, s.values);
      if (!near.empty()) msg += " (did you mean " + quoted(near) + "?)";
    }
    f_.error(n.mark, path, msg);
  }

  Findings& f_;
  bool fragment_;
};

// --- semantic rules ---------------------------------------------------------------------------

// Typed reads of values that passed structural validation; nullopt when absent or ill-typed.
class View {
 public:
  explicit View(const yaml::Node& root) : root_(root) {}

  const yaml::Node* node(std::string_view path) const { return yaml::at_path(root_, path); }
  yaml::Mark mark(std::string_view path) const {
    const yaml::Node* n = node(path);
    return n ? n->mark : root_.mark;
  }
  std::optional<std::string> text(std::string_view path) const {
    const yaml::Node* n = node(path);
    if (!n || !n->is_scalar()) return std::nullopt;
    return n->value;
  }
  std::optional<Duration> duration(std::string_view path) const {
    auto t = text(path);
    if (!t) return std::nullopt;
    auto d = parse_duration(*t);
    if (!d) return std::nullopt;
    return *d;
  }
  std::optional<bool> flag(std::string_view path) const {
    const yaml::Node* n = node(path);
    return n ? n->as_bool() : std::nullopt;
  }
  std::optional<double> number(std::string_view path) const {
    const yaml::Node* n = node(path);
    return n ? n->as_number() : std::nullopt;
  }
  bool present(std::string_view path) const { return node(path) != nullptr; }
  std::vector<std::string> strings(std::string_view path) const {
    std::vector<std::string> out;
    const yaml::Node* n = node(path);
    if (!n || !n->is_sequence()) return out;
    for (const yaml::Node& i : n->items) {
      if (i.is_scalar()) out.push_back(i.value);
    }
    return out;
  }

 private:
  const yaml::Node& root_;
};

class Rules {
 public:
  Rules(const yaml::Node& root, Findings& f, bool fragment) : v_(root), f_(f), fragment_(fragment) {}

  void run() {
    lifecycle();
    runtime();
    network();
    filesystem();
    execution();
    observability();
    budget();
    notification();
    artifacts();
  }

 private:
  void lifecycle() {
    auto ttl = v_.duration("spec.lifecycle.ttl");
    auto idle = v_.duration("spec.lifecycle.idleTimeout");
    auto max = v_.duration("spec.lifecycle.maxLifetime");
    if (ttl && idle && !ttl->is_zero() && !idle->is_zero() && *idle > *ttl) {
      f_.error(v_.mark("spec.lifecycle.ttl"), "spec.lifecycle.ttl",
               "ttl (" + format_duration(*ttl) + ") is shorter than idleTimeout (" +
                   format_duration(*idle) + "); the sandbox would expire before it could ever be idle");
    }
    if (ttl && max && !max->is_zero()) {
      if (ttl->is_zero()) {
        f_.error(v_.mark("spec.lifecycle.ttl"), "spec.lifecycle.ttl",
                 "ttl 0 (never expire) contradicts maxLifetime " + format_duration(*max) +
                     "; set a ttl no longer than maxLifetime");
      } else if (*ttl > *max) {
        f_.error(v_.mark("spec.lifecycle.maxLifetime"), "spec.lifecycle.maxLifetime",
                 "maxLifetime (" + format_duration(*max) + ") is shorter than ttl (" +
                     format_duration(*ttl) + ")");
      }
    }
  }

  // The substrate when it is one km knows; nullopt for an invalid value (already reported).
  std::optional<std::string> substrate() const {
    std::string s = v_.text("spec.runtime.substrate").value_or("local");
    if (s == "local" || s == "ec2" || s == "ecs") return s;
    return std::nullopt;
  }

  void runtime() {
    auto known = substrate();
    if (!known) return;
    const std::string& substrate = *known;
    auto not_ec2 = [&](std::string_view key, bool active) {
      std::string path = "spec.runtime." + std::string(key);
      if (active && substrate != "ec2") {
        f_.error(v_.mark(path), path, std::string(key) + " is only available on the ec2 substrate, not " + substrate);
      }
    };
    not_ec2("hibernation", v_.flag("spec.runtime.hibernation").value_or(false));
    not_ec2("additionalVolume", v_.present("spec.runtime.additionalVolume"));
    const yaml::Node* snaps = v_.node("spec.runtime.additionalSnapshots");
    not_ec2("additionalSnapshots", snaps && snaps->is_sequence() && !snaps->items.empty());
    not_ec2("mountEFS", v_.flag("spec.runtime.mountEFS").value_or(false));

    if (v_.flag("spec.runtime.hibernation").value_or(false) && v_.flag("spec.runtime.spot").value_or(false)) {
      f_.error(v_.mark("spec.runtime.hibernation"), "spec.runtime.hibernation",
               "hibernation cannot be combined with spot: true; set spot: false");
    }
    if (substrate == "local") {
      for (const char* key : {"instanceType", "region", "spot", "ami", "rootVolumeSize", "azPreference", "efsMountPoint"}) {
        std::string path = std::string("spec.runtime.") + key;
        if (v_.present(path)) f_.warning(v_.mark(path), path, "ignored on the local substrate (AWS substrate only)");
      }
      if (v_.present("spec.execution.useBedrock")) {
        f_.warning(v_.mark("spec.execution.useBedrock"), "spec.execution.useBedrock", "ignored on the local substrate (AWS substrate only)");
      }
    } else {
      for (const char* key : {"resources", "image"}) {
        std::string path = std::string("spec.runtime.") + key;
        if (v_.present(path)) f_.warning(v_.mark(path), path, "applies to the local substrate only; ignored on " + substrate);
      }
      if (!fragment_) {
        if (substrate == "ec2" && !v_.present("spec.runtime.instanceType")) {
          f_.error(v_.mark("spec.runtime"), "spec.runtime.instanceType", "required when substrate is ec2");
        }
        if (!v_.present("spec.runtime.region")) {
          f_.error(v_.mark("spec.runtime"), "spec.runtime.region", "required when substrate is " + substrate);
        }
      }
      if (substrate == "ecs" && v_.present("spec.runtime.instanceType")) {
        f_.warning(v_.mark("spec.runtime.instanceType"), "spec.runtime.instanceType", "ignored on ecs (tasks have a fixed size)");
      }
    }
    std::string enforcement = v_.text("spec.network.enforcement").value_or("proxy");
    if (substrate == "ecs" && enforcement != "proxy") {
      f_.error(v_.mark("spec.network.enforcement"), "spec.network.enforcement",
               "enforcement " + enforcement + " needs cgroup BPF on the host, which ecs tasks do not have; use proxy, or substrate local or ec2");
    }
    snapshots();
    resources();
  }

  void resources() {
    if (auto mem = v_.text("spec.runtime.resources.memory")) {
      auto bytes = checks::parse_byte_size(*mem);
      if (bytes && *bytes < (16ull << 20)) {
        f_.error(v_.mark("spec.runtime.resources.memory"), "spec.runtime.resources.memory",
                 "memory limit " + *mem + " is below the minimum of 16Mi");
      }
    }
    if (auto disk = v_.text("spec.runtime.resources.disk")) {
      auto bytes = checks::parse_byte_size(*disk);
      if (bytes && *bytes < (64ull << 20)) {
        f_.error(v_.mark("spec.runtime.resources.disk"), "spec.runtime.resources.disk",
                 "disk quota " + *disk + " is below the minimum of 64Mi");
      }
    }
  }

  void snapshots() {
    const yaml::Node* list = v_.node("spec.runtime.additionalSnapshots");
    if (!list || !list->is_sequence()) return;
    static const std::set<std::string> reserved = {"/", "/shared", "/workspace", "/proc", "/sys", "/dev", "/etc", "/usr",
                                                   "/var", "/root", "/home", "/boot", "/tmp", "/run", "/opt"};
    std::set<std::string> mounts, devices;
    if (auto vol = v_.text("spec.runtime.additionalVolume.mountPoint")) mounts.insert(*vol);
    for (size_t i = 0; i < list->items.size(); ++i) {
      std::string base = "spec.runtime.additionalSnapshots[" + std::to_string(i) + "]";
      if (auto mp = v_.text(base + ".mountPoint")) {
        if (reserved.count(*mp)) {
          f_.error(v_.mark(base + ".mountPoint"), base + ".mountPoint", "mount point " + *mp + " is reserved");
        } else if (!mounts.insert(*mp).second) {
          f_.error(v_.mark(base + ".mountPoint"), base + ".mountPoint", "mount point " + *mp + " is used twice");
        }
      }
      if (auto dev = v_.text(base + ".device")) {
        if (!devices.insert(*dev).second) {
          f_.error(v_.mark(base + ".device"), base + ".device", "device " + *dev + " is used twice");
        }
      }
    }
  }

  void network() {
    const std::string sfx = "spec.network.egress.allowedDNSSuffixes";
    auto suffixes = v_.strings(sfx);
    bool any_suffix = false;
    for (const auto& s : suffixes) any_suffix = any_suffix || s == "*";
    if (any_suffix && suffixes.size() > 1) {
      f_.warning(v_.mark(sfx), sfx, "\"*\" already allows every name; the other entries are redundant");
    }
    for (size_t i = 0; i < suffixes.size(); ++i) {
      auto r = policy::parse_dns_suffix(suffixes[i]);
      if (r && !r->any && r->suffix.find('.') == std::string::npos) {
        std::string p = sfx + "[" + std::to_string(i) + "]";
        f_.warning(v_.mark(p), p, "allows every name under the top-level domain ." + r->suffix);
      }
    }
    const std::string hosts = "spec.network.egress.allowedHosts";
    auto host_list = v_.strings(hosts);
    bool any_host = false;
    for (const auto& h : host_list) any_host = any_host || h == "*";
    if (any_host && host_list.size() > 1) {
      f_.warning(v_.mark(hosts), hosts, "\"*\" already allows every host; the other entries are redundant");
    }
    const std::string cidrs = "spec.network.egress.allowedCIDRs";
    auto cidr_list = v_.strings(cidrs);
    for (size_t i = 0; i < cidr_list.size(); ++i) {
      auto r = policy::parse_cidr_rule(cidr_list[i]);
      if (r && r->covers_everything()) {
        std::string p = cidrs + "[" + std::to_string(i) + "]";
        f_.warning(v_.mark(p), p, cidr_list[i] + " allows every " +
                                      std::string(r->family == AF_INET6 ? "IPv6" : "IPv4") +
                                      " address, including private and metadata addresses");
      }
    }
    if (v_.flag("spec.network.allowPrivateRanges").value_or(false)) {
      f_.warning(v_.mark("spec.network.allowPrivateRanges"), "spec.network.allowPrivateRanges",
                 "allowed names may resolve to private, loopback, link-local and metadata addresses");
    }
  }

  void filesystem() {
    auto writable = v_.strings("spec.filesystem.writable");
    auto readonly = v_.strings("spec.filesystem.readOnly");
    auto unprotect = v_.strings("spec.filesystem.unprotect");
    std::set<std::string> unprotected;
    for (const auto& u : unprotect) unprotected.insert(normalize_path(u));
    for (size_t i = 0; i < unprotect.size(); ++i) {
      std::string p = "spec.filesystem.unprotect[" + std::to_string(i) + "]";
      if (!is_protected_member(unprotect[i])) {
        f_.error(v_.mark(p), p, unprotect[i] + " is not in the protected set; nothing to unprotect (protected: " +
                                    enum_list(protected_paths()) + ")");
      } else {
        f_.warning(v_.mark(p), p, unprotect[i] + " is unprotected: the agent can change a file that the host or a later session may run");
      }
    }
    std::set<std::string> ro;
    for (const auto& r : readonly) ro.insert(normalize_path(r));
    for (size_t i = 0; i < writable.size(); ++i) {
      std::string p = "spec.filesystem.writable[" + std::to_string(i) + "]";
      if (is_protected(writable[i]) && !unprotected.count(normalize_path(writable[i]))) {
        f_.error(v_.mark(p), p, writable[i] + " is in the protected set (shell rc files, .git/hooks, .git/config), which stays read-only; to make it writable, also list it under spec.filesystem.unprotect");
      }
      if (ro.count(normalize_path(writable[i]))) {
        f_.error(v_.mark(p), p, writable[i] + " is listed as both writable and readOnly");
      }
    }
  }

  void execution() {
    const yaml::Node* env = v_.node("spec.execution.env");
    if (!env || !env->is_mapping()) return;
    static const std::set<std::string> managed = {
        "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy",
        "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "KM_SANDBOX_ID"};
    for (const yaml::Entry& e : env->entries) {
      if (managed.count(e.key)) {
        std::string p = "spec.execution.env." + e.key;
        f_.warning(e.key_mark, p, e.key + " is set by km for enforcement; the profile's value is ignored");
      }
    }
  }

  void observability() {
    for (const std::string& lib : v_.strings("spec.observability.tlsCapture.libraries")) {
      if (lib != "openssl" && lib != "gnutls" && lib != "all") {
        f_.warning(v_.mark("spec.observability.tlsCapture.libraries"), "spec.observability.tlsCapture.libraries",
                   lib + " is not observed; only openssl and gnutls are, and programs using other stacks are reported "
                         "in the audit trail (tls-unobserved)");
      }
    }
    std::string substrate = this->substrate().value_or("");
    for (const char* log : {"commandLog", "networkLog"}) {
      std::string p = std::string("spec.observability.") + log + ".destination";
      auto dest = v_.text(p);
      if (dest && substrate == "local" && *dest != "store") {
        f_.warning(v_.mark(p), p, "the local substrate records to km's store; " + *dest + " applies to the AWS substrate");
      }
    }
  }

  void budget() {
    if (auto c = v_.number("spec.budget.compute.maxSpendUSD"); c && *c == 0) {
      f_.warning(v_.mark("spec.budget.compute.maxSpendUSD"), "spec.budget.compute.maxSpendUSD",
                 "a compute budget of 0 freezes the sandbox as soon as it starts");
    }
    if (auto a = v_.number("spec.budget.ai.maxSpendUSD"); a && *a == 0) {
      f_.warning(v_.mark("spec.budget.ai.maxSpendUSD"), "spec.budget.ai.maxSpendUSD",
                 "an AI budget of 0 refuses every AI request");
    }
  }

  void notification() {
    const std::string s = "spec.notification.slack";
    if (!v_.present(s)) return;
    bool enabled = v_.flag(s + ".enabled").value_or(false);
    bool per = v_.flag(s + ".perSandbox").value_or(false);
    bool override_set = v_.present(s + ".channelOverride");
    if (per && override_set) {
      f_.error(v_.mark(s + ".channelOverride"), s + ".channelOverride", "cannot be combined with perSandbox: true");
    }
    if (v_.present(s + ".channelName") && override_set) {
      f_.error(v_.mark(s + ".channelName"), s + ".channelName", "cannot be combined with channelOverride");
    } else if (v_.present(s + ".channelName") && !per) {
      f_.warning(v_.mark(s + ".channelName"), s + ".channelName", "only used with perSandbox: true");
    }
    for (const char* sub : {"inbound", "transcript"}) {
      std::string p = s + "." + sub + ".enabled";
      if (v_.flag(p).value_or(false)) {
        if (!enabled) f_.error(v_.mark(p), p, std::string(sub) + " needs slack.enabled: true");
        if (!per) f_.error(v_.mark(p), p, std::string(sub) + " needs slack.perSandbox: true");
        if (override_set) f_.error(v_.mark(p), p, std::string(sub) + " cannot be used with channelOverride");
      }
    }
    const yaml::Node* emails = v_.node(s + ".invites.emails");
    if (emails && emails->is_sequence() && !emails->items.empty() && !enabled) {
      f_.error(emails->mark, s + ".invites.emails", "invites need slack.enabled: true");
    }
  }

  void artifacts() {
    if (v_.present("spec.artifacts.maxSizeMB") && v_.strings("spec.artifacts.paths").empty()) {
      f_.warning(v_.mark("spec.artifacts.maxSizeMB"), "spec.artifacts.maxSizeMB", "has no effect without artifacts.paths");
    }
  }

  View v_;
  Findings& f_;
  bool fragment_;
};

}  // namespace

const std::vector<std::string>& protected_paths() {
  static const std::vector<std::string> paths = {
      "~/.bashrc",  "~/.bash_profile", "~/.bash_login", "~/.bash_logout", "~/.profile",
      "~/.zshrc",   "~/.zshenv",       "~/.zprofile",   "~/.zlogin",      "~/.zlogout",
      "~/.gitconfig", "~/.config/git/config", "**/.git/hooks", "**/.git/config"};
  return paths;
}

std::string normalize_path(const std::string& path) {
  std::vector<std::string> parts;
  for (const std::string& c : split(path, '/')) {
    if (c.empty() || c == ".") continue;
    parts.push_back(c);
  }
  std::string out = path.rfind("~", 0) == 0 ? "" : "/";
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0 || out == "/") out += (out.empty() || out == "/") && i == 0 ? "" : "/";
    out += parts[i];
  }
  if (out.empty()) out = "/";
  // /home/<user>/... and /root/... are homes too: compare them as ~/...
  auto p = split(out, '/');
  if (p.size() >= 3 && p[0].empty() && p[1] == "home") {
    std::string rest;
    for (size_t i = 3; i < p.size(); ++i) rest += "/" + p[i];
    return "~" + rest;
  }
  if (p.size() >= 2 && p[0].empty() && p[1] == "root") {
    std::string rest;
    for (size_t i = 2; i < p.size(); ++i) rest += "/" + p[i];
    return "~" + rest;
  }
  return out;
}

namespace {

// Index of the component that ends a git directory's hooks or config, or -1:
// .git/hooks, .git/config, bare.git/hooks, .git/modules/<name>/.../hooks|config.
int git_protected_end(const std::vector<std::string>& c) {
  for (size_t i = 0; i < c.size(); ++i) {
    bool git_dir = c[i] == ".git" || (c[i].size() > 4 && c[i].substr(c[i].size() - 4) == ".git");
    if (!git_dir) continue;
    size_t j = i + 1;
    while (j + 1 < c.size() && c[j] == "modules") j += 2;  // submodule git directories
    if (j < c.size() && (c[j] == "hooks" || c[j] == "config")) return static_cast<int>(j);
  }
  return -1;
}

}  // namespace

bool is_protected(const std::string& path) {
  std::string p = normalize_path(path);
  for (const std::string& prot : protected_paths()) {
    if (prot.rfind("**/", 0) == 0) continue;
    if (p == prot || p.rfind(prot + "/", 0) == 0) return true;
  }
  return git_protected_end(split(p, '/')) >= 0;
}

bool is_protected_member(const std::string& path) {
  std::string p = normalize_path(path);
  for (const std::string& prot : protected_paths()) {
    if (p == prot) return true;
  }
  auto c = split(p, '/');
  int end = git_protected_end(c);
  return end >= 0 && static_cast<size_t>(end) + 1 == c.size();
}

void validate_tree(const yaml::Node& root, const ValidateOptions& options, Findings& findings) {
  Structure(findings, options.fragment).walk(root, schema::profile_schema(), "");
  Rules(root, findings, options.fragment).run();
}

}  // namespace km::profile
