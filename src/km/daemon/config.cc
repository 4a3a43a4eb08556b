#include "km/daemon/config.h"

#include <sys/socket.h>

#include <cstdlib>
#include <map>

#include "km/base/strings.h"
#include "km/policy/egress_rules.h"
#include "km/yaml/parse.h"

namespace km::daemon {

std::optional<Config> parse_config(std::string_view text, const std::string& file, profile::Findings& f) {
  auto parsed = yaml::parse(text, file);
  if (!parsed) {
    f.error(parsed.error().mark, "(syntax)", parsed.error().message);
    return std::nullopt;
  }
  Config c;
  if (parsed->is_null()) return c;
  if (!parsed->is_mapping()) {
    f.error(parsed->mark, "(document)", "expected a mapping of settings");
    return std::nullopt;
  }
  std::map<std::string, std::string*> strings = {
      {"stateDir", &c.state_dir}, {"runtimeDir", &c.runtime_dir}, {"socket", &c.socket},
      {"group", &c.group}, {"linkPool", &c.link_pool}, {"extraCABundle", &c.extra_ca_bundle},
      {"upstreamProxy", &c.upstream_proxy}, {"priceTable", &c.price_table}, {"logLevel", &c.log_level},
      {"initPath", &c.init_path}};
  std::vector<std::string> known = {"upstreamDNS", "execAudit", "auditRateLimit"};
  for (const auto& [k, v] : strings) known.push_back(k);
  for (const yaml::Entry& e : parsed->entries) {
    if (auto it = strings.find(e.key); it != strings.end()) {
      if (!e.value.is_scalar()) {
        f.error(e.value.mark, e.key, "expected a string");
        continue;
      }
      *it->second = e.value.value;
    } else if (e.key == "execAudit") {
      if (!e.value.is_scalar() || (e.value.value != "true" && e.value.value != "false")) {
        f.error(e.value.mark, e.key, "expected true or false");
        continue;
      }
      c.exec_audit = e.value.value == "true";
    } else if (e.key == "auditRateLimit") {
      char* end = nullptr;
      double v = e.value.is_scalar() && !e.value.value.empty() ? std::strtod(e.value.value.c_str(), &end) : -1;
      if (!e.value.is_scalar() || end == nullptr || *end != '\0' || !(v >= 0) || v > 1e9) {
        f.error(e.value.mark, e.key, "expected a number of events per second (0 for no limit)");
        continue;
      }
      c.audit_rate_limit = v;
    } else if (e.key == "upstreamDNS") {
      if (!e.value.is_sequence()) {
        f.error(e.value.mark, e.key, "expected a list of addresses");
        continue;
      }
      for (size_t i = 0; i < e.value.items.size(); ++i) {
        const yaml::Node& item = e.value.items[i];
        if (!item.is_scalar() || !policy::is_ip_literal(item.value)) {
          f.error(item.mark, e.key + "[" + std::to_string(i) + "]", "expected an IP address");
          continue;
        }
        c.upstream_dns.push_back(item.value);
      }
    } else {
      std::string near = closest_match(e.key, known);
      f.error(e.key_mark, e.key, "unknown setting " + quoted(e.key) + (near.empty() ? "" : " (did you mean " + quoted(near) + "?)"));
    }
  }
  for (const char* key : {"stateDir", "runtimeDir"}) {
    const std::string& v = std::string(key) == "stateDir" ? c.state_dir : c.runtime_dir;
    if (v.empty() || v.front() != '/') {
      const yaml::Node* n = parsed->find(key);
      f.error(n ? n->mark : parsed->mark, key, "must be an absolute path");
    }
  }
  auto pool = policy::parse_cidr_rule(c.link_pool);
  if (!pool || pool->family != AF_INET || pool->prefix_len > 28 || !pool->ports.empty()) {
    const yaml::Node* n = parsed->find("linkPool");
    f.error(n ? n->mark : parsed->mark, "linkPool", "must be an IPv4 network of /28 or larger, e.g. 10.88.0.0/16");
  }
  if (f.has_errors()) return std::nullopt;
  return c;
}

}  // namespace km::daemon
