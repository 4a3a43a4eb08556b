#include "km/profile/model.h"

#include <cmath>

#include "km/base/money.h"
#include "km/profile/checks.h"

namespace km::profile {

namespace {

const yaml::Node* at(const yaml::Node& r, const char* p) { return yaml::at_path(r, p); }

std::string text(const yaml::Node& r, const char* p, const std::string& dflt) {
  const yaml::Node* n = at(r, p);
  return n && n->is_scalar() ? n->value : dflt;
}

bool flag(const yaml::Node& r, const char* p, bool dflt) {
  const yaml::Node* n = at(r, p);
  return n ? n->as_bool().value_or(dflt) : dflt;
}

std::vector<std::string> strings(const yaml::Node& r, const char* p) {
  std::vector<std::string> out;
  const yaml::Node* n = at(r, p);
  if (n && n->is_sequence()) {
    for (const auto& i : n->items) {
      if (i.is_scalar()) out.push_back(i.value);
    }
  }
  return out;
}

std::map<std::string, std::string> string_map(const yaml::Node& r, const char* p) {
  std::map<std::string, std::string> out;
  const yaml::Node* n = at(r, p);
  if (n && n->is_mapping()) {
    for (const auto& e : n->entries) {
      if (e.value.is_scalar()) out[e.key] = e.value.value;
    }
  }
  return out;
}

Duration dur(const yaml::Node& r, const char* p) {
  auto d = parse_duration(text(r, p, "0"));
  return d ? *d : Duration{};
}

// USD as micro-dollars: the decimal text exactly when it is plain decimal ("0.1" is 100000,
// not 100000.00000000001 rounded), other number forms ("1e3") through floating point.
std::optional<int64_t> micros(const yaml::Node& r, const char* p) {
  const yaml::Node* n = at(r, p);
  if (!n) return std::nullopt;
  if (n->is_scalar()) {
    if (auto exact = parse_usd_micros(n->value)) return *exact;
  }
  auto v = n->as_number();
  if (!v) return std::nullopt;
  return static_cast<int64_t>(std::llround(*v * 1e6));
}

}  // namespace

Result<Model> decode(const yaml::Node& r) {
  Model m;
  m.name = text(r, "metadata.name", "");
  m.prefix = text(r, "metadata.prefix", "sb");
  m.ttl = dur(r, "spec.lifecycle.ttl");
  m.idle_timeout = dur(r, "spec.lifecycle.idleTimeout");
  m.teardown_policy = text(r, "spec.lifecycle.teardownPolicy", "destroy");
  m.max_lifetime = dur(r, "spec.lifecycle.maxLifetime");
  m.substrate = text(r, "spec.runtime.substrate", "local");
  m.image = text(r, "spec.runtime.image", "host");
  if (const yaml::Node* c = at(r, "spec.runtime.resources.cpus")) m.cpus = c->as_number().value_or(0);
  m.memory = checks::parse_byte_size(text(r, "spec.runtime.resources.memory", "0")).value_or(0);
  if (const yaml::Node* p = at(r, "spec.runtime.resources.pids")) m.pids = static_cast<uint64_t>(p->as_int().value_or(0));
  m.disk = checks::parse_byte_size(text(r, "spec.runtime.resources.disk", "0")).value_or(0);
  m.user = text(r, "spec.execution.user", "sandbox");
  m.privileged = flag(r, "spec.execution.privileged", false);
  m.env = string_map(r, "spec.execution.env");
  m.init_commands = strings(r, "spec.execution.initCommands");
  m.config_files = string_map(r, "spec.execution.configFiles");
  m.working_dir = text(r, "spec.execution.workingDir", "/workspace");
  m.shell = text(r, "spec.execution.shell", "/bin/bash");
  m.writable = strings(r, "spec.filesystem.writable");
  m.read_only = strings(r, "spec.filesystem.readOnly");
  m.deny_read = strings(r, "spec.filesystem.denyRead");
  m.unprotect = strings(r, "spec.filesystem.unprotect");
  m.enforcement = text(r, "spec.network.enforcement", "proxy");
  m.allowed_dns_suffixes = strings(r, "spec.network.egress.allowedDNSSuffixes");
  m.allowed_hosts = strings(r, "spec.network.egress.allowedHosts");
  m.allowed_cidrs = strings(r, "spec.network.egress.allowedCIDRs");
  m.allow_private_ranges = flag(r, "spec.network.allowPrivateRanges", false);
  m.https_only = flag(r, "spec.network.httpsOnly", false);
  if (at(r, "spec.sourceAccess.github")) {
    m.github = true;
    m.github_repos = strings(r, "spec.sourceAccess.github.allowedRepos");
    if (at(r, "spec.sourceAccess.github.allowedRefs")) m.github_refs = strings(r, "spec.sourceAccess.github.allowedRefs");
  }
  m.claude_telemetry = flag(r, "spec.observability.claudeTelemetry.enabled", true);
  m.telemetry_log_prompts = flag(r, "spec.observability.claudeTelemetry.logPrompts", false);
  m.telemetry_tool_details = flag(r, "spec.observability.claudeTelemetry.logToolDetails", false);
  m.tls_capture.enabled = flag(r, "spec.observability.tlsCapture.enabled", false);
  m.tls_capture.libraries = strings(r, "spec.observability.tlsCapture.libraries");
  m.tls_capture.capture_payloads = flag(r, "spec.observability.tlsCapture.capturePayloads", false);
  m.artifact_paths = strings(r, "spec.artifacts.paths");
  if (const yaml::Node* a = at(r, "spec.artifacts.maxSizeMB")) m.artifact_max_mb = a->as_int().value_or(0);
  m.compute_budget_micros = micros(r, "spec.budget.compute.maxSpendUSD");
  m.ai_budget_micros = micros(r, "spec.budget.ai.maxSpendUSD");
  m.compute_rate_micros_per_hour = micros(r, "spec.budget.compute.ratePerHourUSD");
  if (const yaml::Node* w = at(r, "spec.budget.warningThreshold")) m.warning_threshold = w->as_number().value_or(0.8);
  if (m.name.empty()) return fail(ErrorCode::kInvalidArgument, "profile has no metadata.name");
  return m;
}

}  // namespace km::profile
