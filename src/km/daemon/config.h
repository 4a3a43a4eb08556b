// kmd's configuration file (YAML, closed world like profiles: unknown keys are errors with
// file:line:col). Every key is optional.
//
//   stateDir: /var/lib/km        store, workspaces, homes, artifacts
//   runtimeDir: /run/km          sockets, mount points, pinned namespaces
//   socket: /run/km/kmd.sock
//   group: km                    members may use kmd besides root ("" = root only)
//   linkPool: 10.88.0.0/16       sandbox link addresses (/30 each)
//   upstreamDNS: [192.0.2.53]    for the enforcer
//   extraCABundle: /etc/km/ca.pem
//   upstreamProxy: http://proxy.corp.example:3128
//   priceTable: /etc/km/prices.json  prices over the built-in table (meter::PriceTable JSON; read at start)
//   logLevel: info
//   auditRateLimit: 500          enforcer audit events per second per kind per sandbox (0: none)
#pragma once

#include <string>
#include <vector>

#include "km/base/result.h"
#include "km/profile/findings.h"

namespace km::daemon {

struct Config {
  std::string state_dir = "/var/lib/km";
  std::string runtime_dir = "/run/km";
  std::string socket;  // default <runtime_dir>/kmd.sock
  std::string group = "km";
  std::string link_pool = "10.88.0.0/16";
  std::vector<std::string> upstream_dns;
  std::string extra_ca_bundle;
  std::string upstream_proxy;
  std::string price_table;  // "" or a file of prices laid over the built-in table
  std::string log_level = "info";
  std::string init_path;  // default: next to kmd, then /usr/local/libexec/km
  std::string enforcer_path;  // km-enforcer; found the same way
  // Record every command run in every sandbox (BPF). Without it sandboxes are refused unless
  // this is false (tests that do not need it).
  bool exec_audit = true;
  std::string cgroup_name = "km";  // directory beneath kmd's cgroups (tests use their own)
  // Each enforcer records at most this many audit events of one kind a second (bursts of ten
  // times that); the rest are counted as suppressed. 0: no limit.
  double audit_rate_limit = 500;

  std::string socket_path() const { return socket.empty() ? runtime_dir + "/kmd.sock" : socket; }
};

// Parses `text` (from `file`); findings carry positions. Returns nullopt on errors.
std::optional<Config> parse_config(std::string_view text, const std::string& file, profile::Findings& findings);

}  // namespace km::daemon
