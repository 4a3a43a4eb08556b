// The enforcer's configuration: what kmd tells one km-enforcer about its sandbox, written as
// JSON into the sandbox's runtime directory. The listening sockets are created by kmd in the
// sandbox's link namespace and inherited; the enforcer itself opens none towards the sandbox.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "km/base/result.h"
#include "km/proxy/egress_policy.h"

namespace km::enforcer {

// Descriptor numbers the enforcer inherits.
inline constexpr int kDnsUdpFd = 3;
inline constexpr int kDnsTcpFd = 4;
inline constexpr int kProxyFd = 5;
inline constexpr int kAuditFd = 6;
// Written once ("1") when the enforcer serves and has recorded itself in pid_file; closed.
inline constexpr int kReadyFd = 7;
// NETLINK_NETFILTER socket bound to the link rules' NFLOG group: packets the rules dropped.
inline constexpr int kPacketLogFd = 8;
// With kernel enforcement: the programs' maps (allow4, allow6, orig_dst, port_cookie, events).
inline constexpr int kKernelMapsFd = 9;

inline constexpr uint16_t kDnsPort = 53;
inline constexpr uint16_t kProxyPort = 3128;

struct Config {
  std::string sandbox;                 // the sandbox ID, in every audit event
  std::string link_address;            // where the enforcer listens, e.g. 10.88.0.1
  uint16_t proxy_port = kProxyPort;
  proxy::EgressPolicy::Lists policy;
  std::vector<std::string> upstream_dns;  // "ip" or "ip:port"; empty: /etc/resolv.conf's
  std::string upstream_proxy;             // "" or "http://host:port"
  std::string ca_bundle;                  // extra CA bundle for upstream TLS, besides the system's
  uint32_t dns_ttl_floor = 600;           // seconds an allowed answer keeps its addresses open
  uint32_t max_bindings = 65536;
  double audit_rate = 500;                // audit events per second per kind (bursts of 10x); 0: no limit
  std::string pid_file;                   // "pid starttime", written before ready
  bool kernel = false;                    // cgroup BPF programs gate the sandbox (ebpf, both)
  uint32_t run_as_uid = 0;                // drop to this uid/gid after start (0: stay)
  uint32_t run_as_gid = 0;
  // L7 inspection (TLS terminated with the sandbox's own CA) of AI provider and GitHub hosts.
  std::string mitm_ca_cert;               // PEM files; the key never enters the sandbox
  std::string mitm_ca_key;
  std::string ledger_path;                // the sandbox's spend ledger (store::SpendLedger)
  std::string price_table;                // "" or kmd's price override file (meter::PriceTable JSON)
  bool github = false;                    // sourceAccess.github is set: inspect GitHub hosts
  std::vector<std::string> github_repos;  // allowedRepos
  bool github_refs_set = false;           // allowedRefs given (even empty)
  std::vector<std::string> github_refs;
  // Agent telemetry (OTLP/HTTP to the proxy's own address) is kept here; "" : not received.
  std::string telemetry_dir;
};

std::string to_json(const Config& c);
Result<Config> config_from_json(const std::string& text);

// Upstream DNS servers from a resolv.conf text ("nameserver" lines), IPv4 and IPv6.
std::vector<std::string> nameservers_from_resolv_conf(const std::string& text);

}  // namespace km::enforcer
