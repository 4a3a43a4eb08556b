#include "km/sandbox/plan.h"

#include <arpa/inet.h>

#include "km/profile/validate.h"

namespace km::sandbox {

std::string sandbox_dir(const HostLayout& h, const std::string& id) { return h.state_dir + "/sandboxes/" + id; }

std::vector<std::string> default_masks(const HostLayout& h) {
  return {"/root", "/home", h.state_dir, h.runtime_dir, "/run", "/var/run", "/var/lib/docker",
          "/var/lib/containerd", "/var/lib/kubelet", "/etc/ssh", "/boot", "/lost+found",
          "/var/spool/cron", "/var/log"};
}

uint32_t pool_capacity(const HostLayout& h) {
  int bits = 32 - h.pool_prefix;
  return bits >= 2 ? (1u << (bits - 2)) : 0;
}

Result<std::pair<std::string, std::string>> link_addresses(const HostLayout& h, uint32_t slot) {
  in_addr base{};
  if (inet_pton(AF_INET, h.pool_base.c_str(), &base) != 1) {
    return fail(ErrorCode::kInvalidArgument, "address pool " + h.pool_base + " is not an IPv4 address");
  }
  if (slot >= pool_capacity(h)) {
    return fail(Error(ErrorCode::kResourceExhausted, "the sandbox link address pool is exhausted")
                    .with_hint("raise link_pool in kmd's config (e.g. 10.88.0.0/14)"));
  }
  uint32_t net = ntohl(base.s_addr) + slot * 4;
  auto str = [](uint32_t host_order) {
    in_addr a{htonl(host_order)};
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, buf, sizeof buf);
    return std::string(buf);
  };
  return std::make_pair(str(net + 2), str(net + 1));
}

Result<Spec> plan(const profile::Model& m, const Allocation& a, const HostLayout& h) {
  Spec s;
  s.id = a.id;
  s.hostname = a.id;
  s.user = m.user;
  s.home = "/home/" + m.user;
  s.privileged = m.privileged;
  std::string dir = sandbox_dir(h, a.id);
  s.root_dir = h.runtime_dir + "/sandboxes/" + a.id + "/root";
  s.lower_dir = h.runtime_dir + "/sandboxes/" + a.id + "/lower";
  s.upper_dir = dir + "/upper";
  s.work_dir = dir + "/work";
  s.workspace_dir = dir + "/workspace";
  s.home_dir = dir + "/home";
  s.masks = default_masks(h);
  s.writable = m.writable;
  s.read_only = m.read_only;
  s.deny_read = m.deny_read;
  for (const std::string& p : profile::protected_paths()) {
    bool unprotected = false;
    for (const std::string& u : m.unprotect) unprotected = unprotected || u == p;
    if (!unprotected) s.protected_paths.push_back(p);
  }
  s.unprotect = m.unprotect;
  s.env = m.env;
  s.working_dir = m.working_dir;
  s.shell = m.shell;
  s.init_commands = m.init_commands;
  s.config_files = m.config_files;
  KM_ASSIGN_OR_RETURN(auto addrs, link_addresses(h, a.link_slot));
  s.net.address = addrs.first;
  s.net.peer_address = addrs.second;
  s.net.prefix_len = 30;
  s.net.egress = !m.allowed_dns_suffixes.empty() || !m.allowed_hosts.empty() || !m.allowed_cidrs.empty();
  s.net.enforcement = m.enforcement;
  if (s.net.egress) {
    // Clients that honour proxy variables use the proxy explicitly; the rest are redirected
    // to it transparently, so a profile that unsets these loses nothing but the 403 messages.
    std::string url = "http://" + s.net.peer_address + ":" + std::to_string(s.net.proxy_port);
    for (const char* k : {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}) {
      s.env.emplace(k, url);
    }
    // The enforcer's own address is reached directly (its OTLP receiver).
    std::string no_proxy = "localhost,127.0.0.1,::1," + s.net.peer_address;
    s.env.emplace("NO_PROXY", no_proxy);
    s.env.emplace("no_proxy", no_proxy);
    if (m.claude_telemetry) {
      // Claude Code exports its logs and metrics to the enforcer, which keeps them per sandbox
      // (km otel). Prompts and tool parameters only when the profile asks.
      for (const auto& [k, v] : std::initializer_list<std::pair<const char*, std::string>>{
               {"CLAUDE_CODE_ENABLE_TELEMETRY", "1"},
               {"OTEL_LOGS_EXPORTER", "otlp"},
               {"OTEL_METRICS_EXPORTER", "otlp"},
               {"OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"},
               {"OTEL_EXPORTER_OTLP_ENDPOINT", "http://" + s.net.peer_address + ":" + std::to_string(s.net.proxy_port)},
               {"OTEL_METRIC_EXPORT_INTERVAL", "10000"},
               {"OTEL_LOGS_EXPORT_INTERVAL", "5000"}}) {
        s.env.emplace(k, v);
      }
      if (m.telemetry_log_prompts) s.env.emplace("OTEL_LOG_USER_PROMPTS", "1");
      if (m.telemetry_tool_details) s.env.emplace("OTEL_LOG_TOOL_DETAILS", "1");
    }
  }
  return s;
}

void trust_inspection_ca(Spec& spec, const std::string& ca_pem) {
  spec.trusted_ca = ca_pem;
  for (const char* k : {"SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE", "GIT_SSL_CAINFO"}) {
    spec.env.emplace(k, kTrustBundle);
  }
  // Node adds these to its built-in roots (it does not read the system bundle by default).
  spec.env.emplace("NODE_EXTRA_CA_CERTS", kInspectionCaFile);
}

}  // namespace km::sandbox
