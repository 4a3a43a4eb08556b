#include "km/enforcer/config.h"

#include <sstream>

#include <nlohmann/json.hpp>

namespace km::enforcer {

using Json = nlohmann::json;

std::string to_json(const Config& c) {
  Json j{{"sandbox", c.sandbox},
         {"linkAddress", c.link_address},
         {"proxyPort", c.proxy_port},
         {"allowedDNSSuffixes", c.policy.dns_suffixes},
         {"allowedHosts", c.policy.hosts},
         {"allowedCIDRs", c.policy.cidrs},
         {"allowPrivateRanges", c.policy.allow_private_ranges},
         {"httpsOnly", c.policy.https_only},
         {"upstreamDNS", c.upstream_dns},
         {"upstreamProxy", c.upstream_proxy},
         {"caBundle", c.ca_bundle},
         {"dnsTtlFloor", c.dns_ttl_floor},
         {"maxBindings", c.max_bindings},
         {"auditRate", c.audit_rate},
         {"pidFile", c.pid_file},
         {"kernel", c.kernel},
         {"runAsUid", c.run_as_uid},
         {"runAsGid", c.run_as_gid},
         {"mitmCaCert", c.mitm_ca_cert},
         {"mitmCaKey", c.mitm_ca_key},
         {"ledger", c.ledger_path},
         {"priceTable", c.price_table},
         {"github", c.github},
         {"githubRepos", c.github_repos},
         {"githubRefsSet", c.github_refs_set},
         {"githubRefs", c.github_refs},
         {"telemetryDir", c.telemetry_dir}};
  return j.dump(2);
}

Result<Config> config_from_json(const std::string& text) {
  Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return fail(ErrorCode::kInvalidArgument, "enforcer config is not a JSON object");
  try {
    Config c;
    c.sandbox = j.at("sandbox").get<std::string>();
    c.link_address = j.at("linkAddress").get<std::string>();
    c.proxy_port = j.value("proxyPort", kProxyPort);
    c.policy.dns_suffixes = j.value("allowedDNSSuffixes", std::vector<std::string>{});
    c.policy.hosts = j.value("allowedHosts", std::vector<std::string>{});
    c.policy.cidrs = j.value("allowedCIDRs", std::vector<std::string>{});
    c.policy.allow_private_ranges = j.value("allowPrivateRanges", false);
    c.policy.https_only = j.value("httpsOnly", false);
    c.upstream_dns = j.value("upstreamDNS", std::vector<std::string>{});
    c.upstream_proxy = j.value("upstreamProxy", std::string{});
    c.ca_bundle = j.value("caBundle", std::string{});
    c.dns_ttl_floor = j.value("dnsTtlFloor", 600u);
    c.max_bindings = j.value("maxBindings", 65536u);
    c.audit_rate = j.value("auditRate", 500.0);
    c.pid_file = j.value("pidFile", std::string{});
    c.kernel = j.value("kernel", false);
    c.run_as_uid = j.value("runAsUid", 0u);
    c.run_as_gid = j.value("runAsGid", 0u);
    c.mitm_ca_cert = j.value("mitmCaCert", std::string{});
    c.mitm_ca_key = j.value("mitmCaKey", std::string{});
    c.ledger_path = j.value("ledger", std::string{});
    c.price_table = j.value("priceTable", std::string{});
    c.github = j.value("github", false);
    c.github_repos = j.value("githubRepos", std::vector<std::string>{});
    c.github_refs_set = j.value("githubRefsSet", false);
    c.github_refs = j.value("githubRefs", std::vector<std::string>{});
    c.telemetry_dir = j.value("telemetryDir", std::string{});
    return c;
  } catch (const Json::exception& e) {
    return fail(ErrorCode::kInvalidArgument, std::string("enforcer config: ") + e.what());
  }
}

std::vector<std::string> nameservers_from_resolv_conf(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key, value;
    if (words >> key >> value && key == "nameserver") out.push_back(value);
  }
  return out;
}

}  // namespace km::enforcer
