// Semantic rules and exact positions, written by hand (schema_cases_test.cc covers types).
#include "km/profile/validate.h"

#include <gtest/gtest.h>

#include "km/profile/testing.h"

namespace km::profile {
namespace {

using testing::check;
using testing::dump;
using testing::find;

// The minimal profile with `spec_extra` appended under spec (indented by the caller).
std::string with(std::string_view spec_extra, std::string_view lifecycle = "    ttl: 8h\n    idleTimeout: 1h\n") {
  std::string s =
      "apiVersion: klankermaker.ai/v1alpha2\n"
      "kind: SandboxProfile\n"
      "metadata:\n"
      "  name: t\n"
      "spec:\n"
      "  lifecycle:\n";
  s += lifecycle;
  s += "  network:\n    egress:\n      allowedDNSSuffixes: []\n      allowedHosts: []\n";
  s += spec_extra;
  return s;
}

// As with(), plus `network_extra` lines directly under spec.network.
std::string with_network(std::string_view network_extra, std::string_view spec_extra = "") {
  std::string s = with(spec_extra);
  s.insert(s.find("  network:\n") + 11, network_extra);
  return s;
}

TEST(Validate, MinimalIsValidWithNoFindings) {
  Findings f = check(testing::kMinimal);
  EXPECT_TRUE(f.empty()) << dump(f);
}

TEST(Validate, ExactLineAndColumnOfValuesAndKeys) {
  std::string text =
      "apiVersion: klankermaker.ai/v1alpha2\n"  // 1
      "kind: SandboxProfile\n"                   // 2
      "metadata:\n"                              // 3
      "  name: t\n"                              // 4
      "spec:\n"                                  // 5
      "  lifecycle:\n"                           // 6
      "    ttl: 8h\n"                            // 7
      "    idleTimeout: 1h\n"                    // 8
      "    teardownPolicy: destory\n"            // 9  value at col 21
      "  network:\n"                             // 10
      "    egress:\n"                            // 11
      "      allowedDNSSuffixes: [ok.example, \"*.bad.example\"]\n"  // 12 item 2 at col 39
      "      allowedHosts: []\n"                 // 13
      "      colour: blue\n";                    // 14 key at col 7
  Findings f = check(text);
  const Finding* a = find(f, "spec.lifecycle.teardownPolicy");
  ASSERT_NE(a, nullptr) << dump(f);
  EXPECT_EQ(a->to_string(),
            "t.yaml:9:21: error: spec.lifecycle.teardownPolicy: \"destory\" is not one of destroy, stop or retain (did you mean \"destroy\"?)");
  const Finding* b = find(f, "spec.network.egress.allowedDNSSuffixes[1]");
  ASSERT_NE(b, nullptr) << dump(f);
  EXPECT_EQ(b->mark.line, 12);
  EXPECT_EQ(b->mark.col, 40);  // the opening quote
  const Finding* c = find(f, "spec.network.egress.colour");
  ASSERT_NE(c, nullptr) << dump(f);
  EXPECT_EQ(c->mark.line, 14);
  EXPECT_EQ(c->mark.col, 7);
  EXPECT_EQ(f.error_count(), 3u) << dump(f);
}

TEST(Validate, AllFindingsInOnePassSortedByPosition) {
  Findings f = check(with("  runtime: {substrate: local, resources: {cpus: 0, pids: 0}}\n  budget: {warningThreshold: 2}\n",
                          "    ttl: 8x\n    idleTimeout: forever\n"));
  ASSERT_EQ(f.error_count(), 5u) << dump(f);
  int last = 0;
  for (const auto& i : f.items()) {
    EXPECT_GE(i.mark.line, last);
    last = i.mark.line;
  }
}

TEST(Validate, ApiVersionAndKind) {
  std::string v1 = std::string(testing::kMinimal);
  v1.replace(v1.find("v1alpha2"), 8, "v1alpha1");
  Findings f1 = check(v1);
  const Finding* e = find(f1, "apiVersion");
  ASSERT_NE(e, nullptr);
  EXPECT_NE(e->message.find("v1alpha1 profiles are no longer accepted"), std::string::npos);
  EXPECT_NE(e->message.find("klankermaker.ai/v1alpha2"), std::string::npos);

  std::string other = std::string(testing::kMinimal);
  other.replace(0, other.find('\n'), "apiVersion: example.org/v1alpha2");
  EXPECT_FALSE(check(other).has_errors());
  other.replace(0, other.find('\n'), "apiVersion: v1alpha2");
  Findings f2 = check(other);
  EXPECT_NE(find(f2, "apiVersion"), nullptr);
  other.replace(0, other.find('\n'), "apiVersion: example.org/v1beta1");
  Findings f3 = check(other);
  EXPECT_NE(find(f3, "apiVersion"), nullptr);

  std::string kind = std::string(testing::kMinimal);
  kind.replace(kind.find("SandboxProfile"), 14, "Sandbox");
  Findings f4 = check(kind);
  EXPECT_NE(find(f4, "kind"), nullptr);
}

struct Rule {
  const char* name;
  std::string text;
  const char* path;        // expected finding path ("" for: must be valid)
  Severity severity;
  const char* message;     // substring
};

void PrintTo(const Rule& r, std::ostream* os) { *os << r.name; }

class RuleCase : public ::testing::TestWithParam<Rule> {};

TEST_P(RuleCase, Applies) {
  const Rule& r = GetParam();
  Findings f = check(r.text);
  if (std::string(r.path).empty()) {
    EXPECT_FALSE(f.has_errors()) << dump(f);
    return;
  }
  const Finding* hit = find(f, r.path, r.severity);
  ASSERT_NE(hit, nullptr) << dump(f);
  EXPECT_NE(hit->message.find(r.message), std::string::npos) << hit->message;
  if (r.severity == Severity::kWarning) {
    EXPECT_FALSE(f.has_errors()) << dump(f);
  }
}

const Severity E = Severity::kError;
const Severity W = Severity::kWarning;

std::vector<Rule> rules() {
  return {
      // lifecycle
      {"ttl_shorter_than_idle", with("", "    ttl: 1h\n    idleTimeout: 2h\n"), "spec.lifecycle.ttl", E, "shorter than idleTimeout"},
      {"ttl_equal_idle_ok", with("", "    ttl: 1h\n    idleTimeout: 60m\n"), "", E, ""},
      {"ttl_zero_never_ok", with("", "    ttl: 0\n    idleTimeout: 2h\n"), "", E, ""},
      {"idle_zero_ok", with("", "    ttl: 1h\n    idleTimeout: \"0\"\n"), "", E, ""},
      {"compound_durations", with("", "    ttl: 1d12h\n    idleTimeout: 4h30m\n    maxLifetime: 2d\n"), "", E, ""},
      {"max_lifetime_shorter", with("", "    ttl: 8h\n    idleTimeout: 1h\n    maxLifetime: 4h\n"), "spec.lifecycle.maxLifetime", E, "shorter than ttl"},
      {"max_lifetime_with_ttl_zero", with("", "    ttl: 0\n    idleTimeout: 1h\n    maxLifetime: 4h\n"), "spec.lifecycle.ttl", E, "contradicts maxLifetime"},
      {"max_lifetime_zero_ok", with("", "    ttl: 8h\n    idleTimeout: 1h\n    maxLifetime: 0\n"), "", E, ""},
      {"duration_without_unit", with("", "    ttl: 3600\n    idleTimeout: 1h\n"), "spec.lifecycle.ttl", E, "missing unit"},
      {"duration_order", with("", "    ttl: 30m8h\n    idleTimeout: 1h\n"), "spec.lifecycle.ttl", E, "largest first"},
      {"duration_bool", with("", "    ttl: true\n    idleTimeout: 1h\n"), "spec.lifecycle.ttl", E, "expected a duration"},
      {"role_session_zero", with("  iam: {roleSessionDuration: \"0\"}\n"), "spec.iam.roleSessionDuration", E, "longer than 0"},
      // runtime
      {"hibernation_spot", with("  runtime: {substrate: ec2, instanceType: t3.large, region: us-east-1, spot: true, hibernation: true}\n"), "spec.runtime.hibernation", E, "cannot be combined with spot"},
      {"hibernation_on_demand_ok", with("  runtime: {substrate: ec2, instanceType: t3.large, region: us-east-1, spot: false, hibernation: true}\n"), "", E, ""},
      {"hibernation_local", with("  runtime: {hibernation: true}\n"), "spec.runtime.hibernation", E, "only available on the ec2 substrate"},
      {"efs_ecs", with("  runtime: {substrate: ecs, region: us-east-1, mountEFS: true}\n"), "spec.runtime.mountEFS", E, "only available on the ec2"},
      {"volume_local", with("  runtime: {additionalVolume: {size: 10, mountPoint: /data}}\n"), "spec.runtime.additionalVolume", E, "only available on the ec2"},
      {"ec2_needs_instance_type", with("  runtime: {substrate: ec2, region: us-east-1}\n"), "spec.runtime.instanceType", E, "required when substrate is ec2"},
      {"ec2_needs_region", with("  runtime: {substrate: ec2, instanceType: t3.small}\n"), "spec.runtime.region", E, "required when substrate is ec2"},
      {"ecs_needs_region", with("  runtime: {substrate: ecs}\n"), "spec.runtime.region", E, "required when substrate is ecs"},
      {"ecs_ebpf", with_network("    enforcement: ebpf\n", "  runtime: {substrate: ecs, region: us-east-1}\n"), "spec.network.enforcement", E, "ecs tasks do not have"},
      {"ecs_proxy_ok", with("  runtime: {substrate: ecs, region: us-east-1}\n"), "", E, ""},
      {"ec2_ebpf_ok", with_network("    enforcement: both\n", "  runtime: {substrate: ec2, instanceType: t3.small, region: us-east-1}\n"), "", E, ""},
      {"local_ebpf_ok", with_network("    enforcement: ebpf\n"), "", E, ""},
      {"docker_substrate", with("  runtime: {substrate: docker}\n"), "spec.runtime.substrate", E, "not one of local, ec2 or ecs"},
      {"aws_fields_on_local_warn", with("  runtime: {instanceType: t3.small}\n"), "spec.runtime.instanceType", W, "ignored on the local substrate"},
      {"resources_on_ec2_warn", with("  runtime: {substrate: ec2, instanceType: t3.small, region: us-east-1, resources: {cpus: 1}}\n"), "spec.runtime.resources", W, "local substrate only"},
      {"memory_too_small", with("  runtime: {resources: {memory: 1Mi}}\n"), "spec.runtime.resources.memory", E, "below the minimum of 16Mi"},
      {"memory_bad_unit", with("  runtime: {resources: {memory: 1GB}}\n"), "spec.runtime.resources.memory", E, "Ki, Mi, Gi"},
      {"cpus_zero", with("  runtime: {resources: {cpus: 0}}\n"), "spec.runtime.resources.cpus", E, "greater than 0"},
      {"cpus_fraction_ok", with("  runtime: {resources: {cpus: 0.5, memory: 512Mi, pids: 64, disk: 1Gi}}\n"), "", E, ""},
      {"pids_float", with("  runtime: {resources: {pids: 1.5}}\n"), "spec.runtime.resources.pids", E, "whole number"},
      {"pids_quoted", with("  runtime: {resources: {pids: \"100\"}}\n"), "spec.runtime.resources.pids", E, "remove the quotes"},
      {"image_relative", with("  runtime: {image: rootfs}\n"), "spec.runtime.image", E, "absolute path"},
      {"snapshot_reserved_mount", with("  runtime: {substrate: ec2, instanceType: t3.small, region: us-east-1, additionalSnapshots: [{snapshotId: snap-0123456789abcdef0, mountPoint: /etc}]}\n"), "spec.runtime.additionalSnapshots[0].mountPoint", E, "reserved"},
      {"snapshot_duplicate_device", with("  runtime: {substrate: ec2, instanceType: t3.small, region: us-east-1, additionalSnapshots: [{snapshotId: snap-0123456789abcdef0, mountPoint: /a, device: /dev/sdf}, {snapshotId: snap-0123456789abcdef1, mountPoint: /b, device: /dev/sdf}]}\n"), "spec.runtime.additionalSnapshots[1].device", E, "used twice"},
      {"snapshot_volume_collision", with("  runtime: {substrate: ec2, instanceType: t3.small, region: us-east-1, additionalVolume: {size: 1, mountPoint: /data}, additionalSnapshots: [{snapshotId: snap-0123456789abcdef0, mountPoint: /data}]}\n"), "spec.runtime.additionalSnapshots[0].mountPoint", E, "used twice"},
      // network
      {"suffix_wildcard_star_dot", with("").replace(with("").find("allowedDNSSuffixes: []"), 22, "allowedDNSSuffixes: [\"*.x.com\"]"), "spec.network.egress.allowedDNSSuffixes[0]", E, "write \".x.com\""},
      {"suffix_ip", with("").replace(with("").find("allowedDNSSuffixes: []"), 22, "allowedDNSSuffixes: [192.0.2.1]"), "spec.network.egress.allowedDNSSuffixes[0]", E, "allowedCIDRs"},
      {"suffix_tld_warn", with("").replace(with("").find("allowedDNSSuffixes: []"), 22, "allowedDNSSuffixes: [.com]"), "spec.network.egress.allowedDNSSuffixes[0]", W, "top-level domain"},
      {"suffix_star_redundant", with("").replace(with("").find("allowedDNSSuffixes: []"), 22, "allowedDNSSuffixes: [\"*\", .x.com]"), "spec.network.egress.allowedDNSSuffixes", W, "redundant"},
      {"suffix_uppercase_trailing_dot_ok", with("").replace(with("").find("allowedDNSSuffixes: []"), 22, "allowedDNSSuffixes: [.Example.COM.]"), "", E, ""},
      {"suffix_duplicate_warn", with("").replace(with("").find("allowedDNSSuffixes: []"), 22, "allowedDNSSuffixes: [.x.com, .x.com]"), "spec.network.egress.allowedDNSSuffixes[1]", W, "duplicate"},
      {"suffix_not_list", with("").replace(with("").find("allowedDNSSuffixes: []"), 22, "allowedDNSSuffixes: .x.com"), "spec.network.egress.allowedDNSSuffixes", E, "expected a list"},
      {"host_ip", with("").replace(with("").find("allowedHosts: []"), 16, "allowedHosts: [\"10.0.0.1:443\"]"), "spec.network.egress.allowedHosts[0]", E, "allowedCIDRs"},
      {"host_url", with("").replace(with("").find("allowedHosts: []"), 16, "allowedHosts: [\"https://x.com\"]"), "spec.network.egress.allowedHosts[0]", E, "is a URL"},
      {"host_port_ok", with("").replace(with("").find("allowedHosts: []"), 16, "allowedHosts: [\"x.com:8443\", y.com]"), "", E, ""},
      {"host_port_zero", with("").replace(with("").find("allowedHosts: []"), 16, "allowedHosts: [\"x.com:0\"]"), "spec.network.egress.allowedHosts[0]", E, "1 to 65535"},
      {"host_wildcard", with("").replace(with("").find("allowedHosts: []"), 16, "allowedHosts: [\"*.x.com\"]"), "spec.network.egress.allowedHosts[0]", E, "allowedDNSSuffixes"},
      {"cidr_ok_forms", with("").replace(with("").find("allowedHosts: []"), 16, "allowedHosts: []\n      allowedCIDRs: [10.0.0.0/8, \"192.0.2.7:443\", \"203.0.113.0/24:8000-8100,9000\", \"2001:db8::/32\", \"[2001:db8::/32]:443\"]"), "", E, ""},
      {"cidr_host_bits", with("").replace(with("").find("allowedHosts: []"), 16, "allowedHosts: []\n      allowedCIDRs: [10.1.0.0/8]"), "spec.network.egress.allowedCIDRs[0]", E, "host bits"},
      {"cidr_bad", with("").replace(with("").find("allowedHosts: []"), 16, "allowedHosts: []\n      allowedCIDRs: [10.0.0.0/33]"), "spec.network.egress.allowedCIDRs[0]", E, "over 32"},
      {"cidr_v6_ports_unbracketed", with("").replace(with("").find("allowedHosts: []"), 16, "allowedHosts: []\n      allowedCIDRs: [\"2001:db8::1:443\"]"), "", E, ""},
      {"cidr_everything_warn", with("").replace(with("").find("allowedHosts: []"), 16, "allowedHosts: []\n      allowedCIDRs: [0.0.0.0/0]"), "spec.network.egress.allowedCIDRs[0]", W, "every IPv4 address"},
      {"cidr_mapped", with("").replace(with("").find("allowedHosts: []"), 16, "allowedHosts: []\n      allowedCIDRs: [\"::ffff:192.0.2.0/120\"]"), "spec.network.egress.allowedCIDRs[0]", E, "IPv4 form"},
      {"private_ranges_warn", with_network("    allowPrivateRanges: true\n"), "spec.network.allowPrivateRanges", W, "private"},
      {"egress_missing", with("").replace(with("").find("    egress:\n"), 12, "    egres:\n"), "spec.network.egress", E, "required key is missing"},
      {"egress_typo_suggests", with("").replace(with("").find("    egress:\n"), 12, "    egres:\n"), "spec.network.egres", E, "did you mean \"egress\""},
      {"enforcement_bool", with_network("    enforcement: true\n"), "spec.network.enforcement", E, "is a boolean"},
      {"https_only_quoted", with_network("    httpsOnly: \"true\"\n"), "spec.network.httpsOnly", E, "remove the quotes"},
      {"https_only_yes", with_network("    httpsOnly: yes\n"), "spec.network.httpsOnly", E, "write true or false"},
      // filesystem
      {"fs_protected_writable", with("  filesystem: {writable: [~/.bashrc]}\n"), "spec.filesystem.writable[0]", E, "protected set"},
      {"fs_protected_git_hooks", with("  filesystem: {writable: [/workspace/repo/.git/hooks]}\n"), "spec.filesystem.writable[0]", E, "protected set"},
      {"fs_protected_inside", with("  filesystem: {writable: [/workspace/repo/.git/hooks/pre-commit]}\n"), "spec.filesystem.writable[0]", E, "protected set"},
      {"fs_unprotect_explicit", with("  filesystem: {writable: [~/.bashrc], unprotect: [~/.bashrc]}\n"), "spec.filesystem.unprotect[0]", W, "unprotected"},
      {"fs_unprotect_non_member", with("  filesystem: {unprotect: [~/.vimrc]}\n"), "spec.filesystem.unprotect[0]", E, "not in the protected set"},
      {"fs_broad_writable_ok", with("  filesystem: {writable: [\"~\", /workspace, /workspace/repo/.github]}\n"), "", E, ""},
      {"fs_git_lookalike_ok", with("  filesystem: {writable: [/workspace/.git/hooksx, /workspace/.gitconfig]}\n"), "", E, ""},
      {"fs_both", with("  filesystem: {writable: [/data], readOnly: [/data]}\n"), "spec.filesystem.writable[0]", E, "both writable and readOnly"},
      {"fs_relative", with("  filesystem: {writable: [data]}\n"), "spec.filesystem.writable[0]", E, "must be absolute"},
      {"fs_dotdot", with("  filesystem: {denyRead: [/workspace/../etc]}\n"), "spec.filesystem.denyRead[0]", E, "'..'"},
      {"fs_glob_in_writable", with("  filesystem: {writable: [\"/workspace/*\"]}\n"), "spec.filesystem.writable[0]", E, "only accepted in denyRead"},
      {"fs_glob_in_deny_ok", with("  filesystem: {denyRead: [\"/workspace/**/.env\", \"~/.ssh\", \"/srv/[ab]?\"]}\n"), "", E, ""},
      // execution
      {"env_bad_name", with("  execution: {env: {\"1BAD\": x}}\n"), "spec.execution.env.1BAD", E, "must match"},
      {"env_managed_warn", with("  execution: {env: {HTTPS_PROXY: http://x}}\n"), "spec.execution.env.HTTPS_PROXY", W, "set by km"},
      {"env_value_number_ok", with("  execution: {env: {PORT: 8080, RATIO: 0.5}}\n"), "", E, ""},
      {"env_value_bool", with("  execution: {env: {DEBUG: true}}\n"), "spec.execution.env.DEBUG", E, "quote it"},
      {"user_root", with("  execution: {user: root}\n"), "spec.execution.user", E, "privileged: true"},
      {"config_file_relative", with("  execution: {configFiles: {\"etc/x\": y}}\n"), "spec.execution.configFiles.etc/x", E, "must be absolute"},
      {"config_file_home_ok", with("  execution: {configFiles: {\"~/.claude/settings.json\": \"{}\", /etc/motd: hi}}\n"), "", E, ""},
      {"init_command_blank", with("  execution: {initCommands: [\"  \"]}\n"), "spec.execution.initCommands[0]", E, "must not be empty"},
      {"use_bedrock_local_warn", with("  execution: {useBedrock: true}\n"), "spec.execution.useBedrock", W, "ignored on the local substrate"},
      {"compat_rsync_warn", with("  execution: {rsync: snap}\n"), "spec.execution.rsync", W, "Klanker Maker compatibility"},
      // budget
      {"budget_negative", with("  budget: {compute: {maxSpendUSD: -0.01}}\n"), "spec.budget.compute.maxSpendUSD", E, "at least 0"},
      {"budget_threshold_zero", with("  budget: {warningThreshold: 0}\n"), "spec.budget.warningThreshold", E, "greater than 0"},
      {"budget_threshold_over", with("  budget: {warningThreshold: 1.01}\n"), "spec.budget.warningThreshold", E, "at most 1"},
      {"budget_threshold_one_ok", with("  budget: {warningThreshold: 1}\n"), "", E, ""},
      {"budget_compute_needs_max", with("  budget: {compute: {ratePerHourUSD: 0.1}}\n"), "spec.budget.compute.maxSpendUSD", E, "required key is missing"},
      {"budget_ai_zero_warn", with("  budget: {ai: {maxSpendUSD: 0}}\n"), "spec.budget.ai.maxSpendUSD", W, "refuses every AI request"},
      {"budget_compute_zero_warn", with("  budget: {compute: {maxSpendUSD: 0}}\n"), "spec.budget.compute.maxSpendUSD", W, "freezes"},
      {"budget_nan", with("  budget: {ai: {maxSpendUSD: .nan}}\n"), "spec.budget.ai.maxSpendUSD", E, "expected a number"},
      // source access
      {"repo_forms_ok", with("  sourceAccess: {github: {allowedRepos: [a/b, \"c/*\", \"github.com/d/e.f\"], allowedRefs: [main, \"feature/*\"]}}\n"), "", E, ""},
      {"repo_bad", with("  sourceAccess: {github: {allowedRepos: [justowner]}}\n"), "spec.sourceAccess.github.allowedRepos[0]", E, "owner/repo"},
      {"repo_too_deep", with("  sourceAccess: {github: {allowedRepos: [a/b/c]}}\n"), "spec.sourceAccess.github.allowedRepos[0]", E, "owner/repo"},
      {"ref_bad", with("  sourceAccess: {github: {allowedRepos: [a/b], allowedRefs: [\"a..b\"]}}\n"), "spec.sourceAccess.github.allowedRefs[0]", E, "git does not allow"},
      // email
      {"email_policies_ok", with("  email: {signing: required, verifyInbound: optional, encryption: off, alias: team.bot, allowedSenders: [self, \"build.*\", sb-1a2b3c4d, \"*\"]}\n"), "", E, ""},
      {"email_alias_bad", with("  email: {alias: Team}\n"), "spec.email.alias", E, "team.name"},
      {"email_sender_bad", with("  email: {allowedSenders: [\"sb-XYZ\"]}\n"), "spec.email.allowedSenders[0]", E, "must be self"},
      {"email_policy_bool", with("  email: {encryption: false}\n"), "spec.email.encryption", E, "is a boolean"},
      // observability
      {"tls_go_warn", with("  observability: {tlsCapture: {enabled: true, libraries: [go]}}\n"), "spec.observability.tlsCapture.libraries", W, "go is not observed"},
      {"tls_needs_enabled", with("  observability: {tlsCapture: {libraries: [openssl]}}\n"), "spec.observability.tlsCapture.enabled", E, "required key is missing"},
      {"command_log_cloudwatch_local_warn", with("  observability: {commandLog: {destination: cloudwatch}}\n"), "spec.observability.commandLog.destination", W, "local substrate records"},
      // notification
      {"slack_per_sandbox_override", with("  notification: {slack: {enabled: true, perSandbox: true, channelOverride: C0123}}\n"), "spec.notification.slack.channelOverride", E, "cannot be combined"},
      {"slack_name_override", with("  notification: {slack: {enabled: true, channelOverride: C0123, channelName: x}}\n"), "spec.notification.slack.channelName", E, "cannot be combined"},
      {"slack_inbound_needs_enabled", with("  notification: {slack: {perSandbox: true, inbound: {enabled: true}}}\n"), "spec.notification.slack.inbound.enabled", E, "needs slack.enabled"},
      {"slack_transcript_needs_per_sandbox", with("  notification: {slack: {enabled: true, transcript: {enabled: true}}}\n"), "spec.notification.slack.transcript.enabled", E, "perSandbox"},
      {"slack_invites_need_enabled", with("  notification: {slack: {invites: {emails: [a@b.io]}}}\n"), "spec.notification.slack.invites.emails", E, "slack.enabled"},
      {"slack_channel_bad", with("  notification: {slack: {enabled: true, channelOverride: general}}\n"), "spec.notification.slack.channelOverride", E, "C0123ABCD"},
      {"slack_ok", with("  notification: {slack: {enabled: true, perSandbox: true, channelName: \"{profile}-{alias}\", inbound: {enabled: true, allow: [U012ABCDE]}, transcript: {enabled: true}}}\n"), "", E, ""},
      // limits
      {"limits_ok", with("  limits: {github_pr: {lifetime: 5, onBreach: block}, email_send: {perHour: 10}}\n"), "", E, ""},
      {"limits_negative", with("  limits: {github_pr: {perDay: -1}}\n"), "spec.limits.github_pr.perDay", E, "at least 0"},
      {"limits_unknown_action", with("  limits: {github_issue: {perDay: 1}}\n"), "spec.limits.github_issue", E, "unknown key"},
      {"limits_on_breach", with("  limits: {github_pr: {onBreach: stop}}\n"), "spec.limits.github_pr.onBreach", E, "warn, block or freeze"},
      // artifacts, metadata, misc
      {"artifacts_size_without_paths_warn", with("  artifacts: {maxSizeMB: 10}\n"), "spec.artifacts.maxSizeMB", W, "no effect"},
      {"sidecars_ignored_warn", with("  sidecars: {dnsProxy: {enabled: true, image: x}}\n"), "spec.sidecars", W, "enforcer replaces"},
      {"agent_default_ok", with("  agent: {default: goose, claude: {permissions: {defaultMode: acceptEdits, allow: [Read]}, args: [--verbose]}}\n"), "", E, ""},
      {"agent_unknown", with("  agent: {default: cursor}\n"), "spec.agent.default", E, "claude, codex, goose or none"},
      {"codex_url_bad", with("  agent: {codex: {localBaseURL: localhost:8001}}\n"), "spec.agent.codex.localBaseURL", E, "http://"},
      {"spec_null", std::string("apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\nmetadata: {name: t}\nspec:\n"), "spec", E, "an empty value"},
      {"document_list", std::string("- a\n- b\n"), "(document)", E, "must be a mapping"},
  };
}

INSTANTIATE_TEST_SUITE_P(Semantic, RuleCase, ::testing::ValuesIn(rules()),
                         [](const ::testing::TestParamInfo<Rule>& p) { return std::string(p.param.name); });

TEST(Validate, PrefixAndName) {
  Findings f = check(with("").replace(with("").find("  name: t\n"), 10, "  name: \"-x\"\n  prefix: Sb\n"));
  EXPECT_NE(find(f, "metadata.prefix"), nullptr) << dump(f);
  EXPECT_NE(find(f, "metadata.name"), nullptr) << dump(f);
}

TEST(Validate, SyntaxErrorsAreFindingsWithPosition) {
  Findings f = check("apiVersion: x\nspec:\n  a: [1, 2\n");
  ASSERT_EQ(f.error_count(), 1u);
  EXPECT_EQ(f.items()[0].path, "(syntax)");
  EXPECT_GT(f.items()[0].mark.line, 1);
}

TEST(Protected, PathsAreNormalisedBeforeTheCheck) {
  for (const char* p : {"~/./.bashrc", "~//.bashrc", "/home/sandbox/.bashrc", "/root/.profile",
                        "/workspace/.git/./hooks", "/workspace/.git//hooks", "/workspace/r/.git/modules/sub/hooks",
                        "/workspace/r/.git/modules/sub/config", "/workspace/bare.git/hooks", "~/.gitconfig",
                        "~/.config/git/config", "~/.bashrc/"}) {
    EXPECT_TRUE(is_protected(p)) << p;
  }
  EXPECT_TRUE(is_protected_member("~/.bashrc/"));
  EXPECT_FALSE(is_protected_member("~/.bashrc/x"));
  EXPECT_FALSE(is_protected_member("/workspace/.git"));
  EXPECT_TRUE(is_protected_member("/workspace/x/.git/hooks"));
  EXPECT_EQ(normalize_path("/workspace//a/./b/"), "/workspace/a/b");
  EXPECT_EQ(normalize_path("~/./x"), "~/x");
  EXPECT_EQ(normalize_path("/home/bob/x"), "~/x");
  EXPECT_EQ(normalize_path("/"), "/");
}

TEST(Protected, ValidatorUsesNormalisedPaths) {
  Findings f = check(with("  filesystem: {writable: [\"~/./.bashrc\", /workspace/x/, /workspace/bare.git/hooks], readOnly: [/workspace/x], unprotect: [\"~/.bashrc/x\"]}\n"));
  EXPECT_NE(find(f, "spec.filesystem.writable[0]"), nullptr) << dump(f);
  EXPECT_NE(find(f, "spec.filesystem.writable[1]"), nullptr) << dump(f);  // both writable and readOnly
  EXPECT_NE(find(f, "spec.filesystem.writable[2]"), nullptr) << dump(f);
  EXPECT_NE(find(f, "spec.filesystem.unprotect[0]"), nullptr) << dump(f);  // not a member
  Findings ok = check(with("  filesystem: {writable: [\"~/.bashrc\"], unprotect: [\"/home/sandbox/.bashrc/\"]}\n"));
  EXPECT_EQ(find(ok, "spec.filesystem.writable[0]"), nullptr) << dump(ok);
}

TEST(Validate, ThousandsOfFindingsAreCappedAndCountedRight) {
  std::string extra = "  budget: {}\n";
  std::string text = with("");
  for (int i = 0; i < 1500; ++i) text += "  k" + std::to_string(i) + ": 1\n";
  Findings f = check(text);
  EXPECT_EQ(f.error_count(), 1500u);
  EXPECT_EQ(f.warning_count(), 0u);
  EXPECT_EQ(f.items().size(), Findings::kMaxFindings);
  EXPECT_EQ(f.suppressed(), 500u);
}

TEST(Protected, Membership) {
  EXPECT_TRUE(is_protected("~/.bashrc"));
  EXPECT_TRUE(is_protected("~/.zshrc"));
  EXPECT_TRUE(is_protected("/workspace/a/.git/config"));
  EXPECT_TRUE(is_protected("/workspace/a/.git/hooks/"));
  EXPECT_TRUE(is_protected("/workspace/a/.git/hooks/post-checkout"));
  EXPECT_FALSE(is_protected("~/.bashrc.d"));
  EXPECT_FALSE(is_protected("/workspace/a/.git/configs"));
  EXPECT_FALSE(is_protected("/workspace/a/.git"));
  EXPECT_FALSE(is_protected("~"));
}

}  // namespace
}  // namespace km::profile
