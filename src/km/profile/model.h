// The typed SandboxProfile that km acts on, decoded from a resolved tree that validated
// without errors (decode() assumes that and fills defaults for what is absent).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "km/base/duration.h"
#include "km/base/result.h"
#include "km/yaml/node.h"

namespace km::profile {

struct Model {
  std::string name;
  std::string prefix = "sb";
  // lifecycle
  Duration ttl;
  Duration idle_timeout;
  std::string teardown_policy = "destroy";
  Duration max_lifetime;
  // runtime
  std::string substrate = "local";
  std::string image = "host";
  double cpus = 0;
  uint64_t memory = 0;
  uint64_t pids = 0;
  uint64_t disk = 0;
  // execution
  std::string user = "sandbox";
  bool privileged = false;
  std::map<std::string, std::string> env;
  std::vector<std::string> init_commands;
  std::map<std::string, std::string> config_files;
  std::string working_dir = "/workspace";
  std::string shell = "/bin/bash";
  // filesystem
  std::vector<std::string> writable, read_only, deny_read, unprotect;
  // network
  std::string enforcement = "proxy";
  std::vector<std::string> allowed_dns_suffixes, allowed_hosts, allowed_cidrs;
  bool allow_private_ranges = false;
  bool https_only = false;
  // sourceAccess.github (inspected by the enforcer when set)
  bool github = false;
  std::vector<std::string> github_repos;
  std::optional<std::vector<std::string>> github_refs;  // nullopt: any ref of an allowed repo
  // observability.claudeTelemetry: Claude Code exports OTLP to the sandbox's enforcer
  bool claude_telemetry = true;
  bool telemetry_log_prompts = false;
  bool telemetry_tool_details = false;
  // observability.tlsCapture: kmd observes the plaintext of TLS made inside (docs/tls-capture.md)
  struct TlsCapture {
    bool enabled = false;
    std::vector<std::string> libraries;  // openssl|gnutls|nss|go|rustls|all; empty: openssl
    bool capture_payloads = false;
  } tls_capture;
  // artifacts
  std::vector<std::string> artifact_paths;
  int64_t artifact_max_mb = 0;
  // budget (micro-dollars; nullopt: no budget)
  std::optional<int64_t> compute_budget_micros, ai_budget_micros;
  std::optional<int64_t> compute_rate_micros_per_hour;  // nullopt: the price table's rate
  double warning_threshold = 0.8;
};

Result<Model> decode(const yaml::Node& resolved);

}  // namespace km::profile
