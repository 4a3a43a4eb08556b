#include "km/profile/schema.h"

#include "km/profile/checks.h"

namespace km::profile::schema {

const Field* Node::field(std::string_view name) const {
  for (const Field& f : fields) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

std::vector<std::string> Node::field_names() const {
  std::vector<std::string> out;
  out.reserve(fields.size());
  for (const Field& f : fields) out.push_back(f.name);
  return out;
}

std::string_view type_name(Type t) {
  switch (t) {
    case Type::kObject: return "object";
    case Type::kMap: return "map";
    case Type::kList: return "list";
    case Type::kString: return "string";
    case Type::kBool: return "boolean";
    case Type::kInt: return "integer";
    case Type::kNumber: return "number";
    case Type::kDuration: return "duration";
    case Type::kEnum: return "enum";
    case Type::kStringOrList: return "string or list";
    case Type::kAny: return "any";
  }
  return "?";
}

namespace {

using checks::Msg;

// Builders. Each returns a fresh node; chaining setters keep the schema below readable.
struct B {
  std::shared_ptr<Node> n = std::make_shared<Node>();
  B& doc(std::string d) { n->doc = std::move(d); return *this; }
  B& def(std::string d) { n->default_text = std::move(d); return *this; }
  B& check(StringCheck c, std::string pattern = "") {
    n->check = c;
    n->pattern = std::move(pattern);
    return *this;
  }
  B& min(double v, bool exclusive = false) { n->min = v; n->exclusive_min = exclusive; return *this; }
  B& max(double v) { n->max = v; return *this; }
  B& unique() { n->unique = true; return *this; }
  B& non_empty() { n->non_empty = true; return *this; }
  B& no_zero() { n->allow_zero = false; return *this; }
  B& ignored(std::string why) { n->ignored = std::move(why); return *this; }
  B& keys(StringCheck c, std::string pattern = "") {
    n->key_check = c;
    n->key_pattern = std::move(pattern);
    return *this;
  }
  operator NodeRef() const { return n; }  // NOLINT: builder converts implicitly
};

B make(Type t) {
  B b;
  b.n->type = t;
  return b;
}
B str() { return make(Type::kString); }
B boolean() { return make(Type::kBool); }
B integer() { return make(Type::kInt); }
B number() { return make(Type::kNumber); }
B duration() { return make(Type::kDuration); }
B any() { return make(Type::kAny); }
B one_of(std::vector<std::string> values) {
  B b = make(Type::kEnum);
  b.n->values = std::move(values);
  return b;
}
B list(NodeRef item) {
  B b = make(Type::kList);
  b.n->items = std::move(item);
  return b;
}
B map(NodeRef value) {
  B b = make(Type::kMap);
  b.n->items = std::move(value);
  return b;
}
B string_or_list(NodeRef item) {
  B b = make(Type::kStringOrList);
  b.n->items = std::move(item);
  return b;
}
B object(std::vector<Field> fields) {
  B b = make(Type::kObject);
  b.n->fields = std::move(fields);
  return b;
}
Field req(std::string name, NodeRef node) { return Field{std::move(name), std::move(node), true}; }
Field opt(std::string name, NodeRef node) { return Field{std::move(name), std::move(node), false}; }

constexpr const char* kCompat =
    "accepted for Klanker Maker compatibility; km does not use it";

NodeRef log_sink(const char* what) {
  return object({
                    req("destination", one_of({"store", "cloudwatch", "s3", "stdout"})
                                           .doc("Where the " + std::string(what) +
                                                " goes. `store` is km's own audit store (local "
                                                "substrate); cloudwatch and s3 are for the AWS substrate.")),
                    opt("logGroup", str().doc("CloudWatch log group (AWS substrate).")),
                })
      .doc(std::string("The ") + what + ". It is always recorded; this only chooses the sink.");
}

NodeRef action_limit() {
  return object({
                    opt("lifetime", integer().min(0).doc("At most this many over the sandbox's life; 0 denies from the first attempt.")),
                    opt("perHour", integer().min(0).doc("At most this many per hour.")),
                    opt("perDay", integer().min(0).doc("At most this many per day.")),
                    opt("onBreach", one_of({"warn", "block", "freeze"}).def("warn").doc("What happens when a window is exceeded.")),
                })
      .doc("Quota for one kind of outbound action.");
}

NodeRef sidecar() {
  return object({req("enabled", boolean()), req("image", str().non_empty())});
}

NodeRef build() {
  NodeRef lifecycle =
      object({
                 req("ttl", duration().doc("Lifetime from creation (or the last resume/extend). `0` means never expire.")),
                 req("idleTimeout", duration().doc("Act after this long with no command, shell input or egress. `0` disables idle detection.")),
                 opt("teardownPolicy", one_of({"destroy", "stop", "retain"}).def("destroy")
                                           .doc("What TTL and idle expiry do: destroy the sandbox, stop it (keep its disk), or retain it running and only record the event.")),
                 opt("maxLifetime", duration().doc("Cap on the total lifetime including `km extend`. `0` or absent: no cap.")),
             })
          .doc("When the sandbox ends and what ending means.");

  NodeRef resources =
      object({
                 opt("cpus", number().min(0, true).max(1024).doc("CPU limit in cores, e.g. 0.5 or 2.")),
                 opt("memory", str().check(checks::byte_size, "^[0-9]+(K|k|M|G|T|Ki|Mi|Gi|Ti)?$").doc("Memory limit, e.g. 512Mi or 4Gi.")),
                 opt("pids", integer().min(1).max(4194304).doc("Maximum number of processes and threads.")),
                 opt("disk", str().check(checks::byte_size, "^[0-9]+(K|k|M|G|T|Ki|Mi|Gi|Ti)?$").doc("Disk quota for the sandbox's writable layer and workspace, e.g. 10Gi.")),
             })
          .doc("Resource limits for the local substrate (cgroup CPU, memory and pids; disk quota).");

  NodeRef runtime =
      object({
                 opt("substrate", one_of({"local", "ec2", "ecs"}).def("local").doc("Where the sandbox runs: `local` (namespaces and a cgroup on this host, managed by kmd), `ec2` or `ecs` (AWS).")),
                 opt("resources", resources),
                 opt("image", str().check(checks::image, "^(host|/.*)$").def("host").doc("Root filesystem for the local substrate: `host` (the host's root, read-only, with a private writable layer) or the absolute path of a root filesystem directory.")),
                 opt("instanceType", str().check(checks::instance_type, "^[a-z0-9-]+\\.[a-z0-9]+$").doc("EC2 instance type, e.g. t3.medium. Required for ec2.")),
                 opt("region", str().check(checks::aws_region, "^[a-z]{2}(-[a-z]+)+-[0-9]+$").doc("AWS region, e.g. us-east-1. Required for ec2 and ecs.")),
                 opt("spot", boolean().def("false").doc("Use spot capacity (ec2: spot instance; ecs: FARGATE_SPOT).")),
                 opt("hibernation", boolean().def("false").doc("Hibernate instead of stopping (ec2 only; incompatible with spot).")),
                 opt("rootVolumeSize", integer().min(0).max(65536).doc("Root volume size in GiB (ec2); 0 keeps the image default.")),
                 opt("ami", str().check(checks::ami, "^(|amazon-linux-2023|ubuntu-24\\.04|ubuntu-22\\.04|ami-[0-9a-f]{8,17})$").doc("EC2 image: amazon-linux-2023, ubuntu-24.04, ubuntu-22.04 or an ami- ID.")),
                 opt("additionalVolume",
                     object({req("size", integer().min(1).doc("GiB.")), req("mountPoint", str().check(checks::abs_path, "^/")),
                             opt("encrypted", boolean())})
                         .doc("An extra EBS volume (ec2 only).")),
                 opt("additionalSnapshots",
                     list(object({req("snapshotId", str().check(checks::snapshot_id, "^snap-[0-9a-f]{8,17}$")),
                                  req("mountPoint", str().check(checks::abs_path, "^/")),
                                  opt("device", str().check(checks::ebs_device, "^/dev/sd[f-p]$")),
                                  opt("encrypted", boolean()), opt("size", integer().min(0))}))
                         .doc("EBS snapshots restored and mounted at boot (ec2 only).")),
                 opt("mountEFS", boolean().doc("Mount the region's shared EFS filesystem (ec2 only).")),
                 opt("efsMountPoint", str().check(checks::abs_path, "^/").def("/shared")),
                 opt("azPreference", list(str().check(checks::aws_az, "^[a-z]{2}(-[a-z]+)+-[0-9]+[a-z]$")).unique().doc("Preferred availability zones, in order (ec2).")),
                 opt("vscode", object({opt("enabled", boolean())}).ignored(kCompat)),
                 opt("desktop", object({opt("enabled", boolean()), opt("mode", one_of({"kiosk", "full"})),
                                        opt("browsers", list(one_of({"firefox", "chromium", "chrome", "brave"}))),
                                        opt("geometry", str().check(checks::geometry, "^[0-9]+x[0-9]+$"))})
                                    .ignored(kCompat)),
             })
          .doc("Where and on what the sandbox runs.");

  NodeRef execution =
      object({
                 opt("user", str().check(checks::user_name, "^[a-z_][a-z0-9_-]{0,31}$").def("sandbox").doc("Name of the unprivileged user the agent runs as inside the sandbox.")),
                 opt("privileged", boolean().def("false").doc("Give the agent root inside the sandbox's user namespace (no privilege over the host).")),
                 opt("env", map(str()).keys(checks::env_name, "^[A-Za-z_][A-Za-z0-9_]*$").doc("Environment variables for every process in the sandbox.")),
                 opt("initCommands", list(str().non_empty()).doc("Shell commands run in order, as root inside the sandbox, before the agent starts; the first failure fails creation.")),
                 opt("initCommandsAppend", list(str().non_empty()).doc("Commands folded onto the end of initCommands after inheritance is resolved, so they run after every parent's commands.")),
                 opt("configFiles", map(str()).keys(checks::config_file_path, "^(/|~/)").doc("Files written into the sandbox after initCommands: path (absolute or ~/...) to content.")),
                 opt("workingDir", str().check(checks::abs_path, "^/").def("/workspace").doc("Working directory of the agent and of `km exec`.")),
                 opt("shell", str().check(checks::abs_path, "^/").def("/bin/bash").doc("Login shell for `km shell`.")),
                 opt("useBedrock", boolean().doc("Point Claude Code at Amazon Bedrock (AWS substrate).")),
                 opt("initScripts", list(str()).ignored(kCompat)),
                 opt("rsync", str().ignored(kCompat)),
                 opt("rsyncPaths", list(str()).ignored(kCompat)),
                 opt("rsyncFileList", str().ignored(kCompat)),
             })
          .doc("How processes run inside the sandbox.");

  NodeRef filesystem =
      object({
                 opt("writable", list(str().check(checks::sandbox_path, "^(/|~$|~/)")).unique().doc("Paths the agent may write besides the workspace, its home and /tmp.")),
                 opt("readOnly", list(str().check(checks::sandbox_path, "^(/|~$|~/)")).unique().doc("Paths made read-only even inside writable trees.")),
                 opt("denyRead", list(str().check(checks::sandbox_path_glob, "^(/|~$|~/)")).unique().doc("Paths or globs (`*`, `**`, `?`, `[...]`) the agent cannot read at all, e.g. `~/.ssh`, `/workspace/**/.env`.")),
                 opt("unprotect", list(str().check(checks::sandbox_path, "^(/|~$|~/)")).unique().doc("Paths to remove from the protected set (shell rc files, .git/hooks, .git/config), which are otherwise read-only. Each must be a member of the set.")),
             })
          .doc("Filesystem policy, enforced by the kernel (mounts and Landlock).");

  NodeRef egress =
      object({
                 req("allowedDNSSuffixes", list(str().check(checks::dns_suffix)).unique().doc("Names the sandbox may resolve: `.example.com` (or `example.com`) allows it and every subdomain; `*` allows all; `[]` allows none.")),
                 req("allowedHosts", list(str().check(checks::host_rule)).unique().doc("Exact hosts the sandbox may connect to, optionally with a port: `api.example.com`, `api.example.com:8443`.")),
                 opt("allowedCIDRs", list(str().check(checks::cidr_rule)).unique().doc("Addresses reachable without DNS, with optional ports: `10.0.0.0/8`, `192.0.2.7:443`, `203.0.113.0/24:8000-8100`, `2001:db8::/32`, `[2001:db8::/32]:443`.")),
             })
          .doc("Egress allowlists. Everything not listed is denied.");

  NodeRef network =
      object({
                 opt("enforcement", one_of({"proxy", "ebpf", "both"}).def("proxy").doc("How egress is enforced: `proxy` (DNS filter and egress proxy, traffic redirected in the sandbox's netns), `ebpf` (cgroup BPF programs), `both` (BPF as the gate, L7 hosts through the proxy).")),
                 req("egress", egress),
                 opt("allowPrivateRanges", boolean().def("false").doc("Allow private, loopback, link-local and metadata addresses that names resolve to. Off by default.")),
                 opt("httpsOnly", boolean().def("false").doc("Refuse plain HTTP.")),
             })
          .doc("Network policy.");

  NodeRef source_access =
      object({
                 opt("mode", one_of({"allowlist", "none"}).doc("Informational; GitHub access is governed by `github`.")),
                 opt("github", object({
                                          req("allowedRepos", list(str().check(checks::github_repo, "^(github\\.com/)?(\\*|[A-Za-z0-9-]+/(\\*|[A-Za-z0-9._-]+))$")).unique().doc("Repositories the sandbox may reach: `owner/repo`, `owner/*`, `*`. Empty: no GitHub access.")),
                                          opt("allowedRefs", list(str().check(checks::git_ref_glob)).unique().doc("Ref globs the sandbox may push to, e.g. `main`, `feature/*`.")),
                                      })
                                   .doc("GitHub access, inspected by the egress proxy.")),
             })
          .doc("Source-code access.");

  NodeRef iam =
      object({
                 opt("roleSessionDuration", duration().no_zero().doc("AWS role session duration.")),
                 opt("allowedRegions", list(str().check(checks::aws_region)).non_empty().unique().doc("Regions the sandbox's AWS role may act in.")),
                 opt("allowedSecretPaths", list(str().non_empty()).unique().doc("SSM parameter paths injected at boot (AWS substrate).")),
                 opt("allowBedrock", boolean().doc("Let the sandbox's role call Amazon Bedrock.")),
             })
          .doc("AWS identity of the sandbox (AWS substrate).");

  NodeRef sidecars = object({opt("dnsProxy", sidecar()), opt("httpProxy", sidecar()),
                             opt("auditLog", sidecar()), opt("tracing", sidecar())})
                         .ignored("km's per-sandbox enforcer replaces the sidecars; this section has no effect");

  NodeRef observability =
      object({
                 opt("commandLog", log_sink("command log")),
                 opt("networkLog", log_sink("network log")),
                 opt("claudeTelemetry", object({opt("enabled", boolean().def("true")), opt("logPrompts", boolean().def("false")),
                                               opt("logToolDetails", boolean().def("false"))})
                                            .doc("Claude Code OpenTelemetry export to the sandbox's enforcer.")),
                 opt("tlsCapture", object({req("enabled", boolean()),
                                           opt("libraries", list(one_of({"openssl", "gnutls", "nss", "go", "rustls", "all"})).unique().doc("TLS stacks to observe; empty means openssl.")),
                                           opt("capturePayloads", boolean().def("false"))})
                                       .doc("Observe plaintext of TLS connections made inside the sandbox (uprobes).")),
                 opt("learnMode", boolean().def("false").doc("Record the names and hosts the sandbox reaches, to propose an allowlist.")),
             })
          .doc("What is recorded.");

  NodeRef artifacts =
      object({
                 opt("paths", list(str().check(checks::sandbox_path_glob)).unique().doc("Files, directories or globs collected when the sandbox is destroyed.")),
                 opt("maxSizeMB", integer().min(0).doc("Skip files larger than this; 0 means no limit.")),
                 opt("replicationRegion", str().ignored(kCompat)),
             })
          .doc("What is kept when the sandbox goes away.");

  NodeRef budget =
      object({
                 opt("compute", object({req("maxSpendUSD", number().min(0).doc("Ceiling for compute spend in USD.")),
                                        opt("ratePerHourUSD", number().min(0).doc("Compute price per running hour; defaults to the price table's rate for the substrate."))})),
                 opt("ai", object({req("maxSpendUSD", number().min(0).doc("Ceiling for AI spend in USD, summed over models."))})),
                 opt("warningThreshold", number().min(0, true).max(1).def("0.8").doc("Fraction of a ceiling at which one warning is raised per pool.")),
             })
          .doc("Spending limits. At the AI ceiling new AI requests are refused; at the compute ceiling the sandbox is frozen.");

  NodeRef email_policy = one_of({"required", "optional", "off"});
  NodeRef email =
      object({
                 opt("signing", email_policy),
                 opt("verifyInbound", email_policy),
                 opt("encryption", email_policy),
                 opt("alias", str().check(checks::email_alias, "^[a-z][a-z0-9-]*\\.[a-z][a-z0-9-]*$").doc("Human-readable address, team.name.")),
                 opt("allowedSenders", list(str().check(checks::email_sender)).unique().doc("Who may mail this sandbox: `self`, `*`, a sandbox ID, an alias or `team.*`.")),
             })
          .doc("Signed mail between sandboxes (Ed25519 identity per sandbox).");

  NodeRef agent_tools = object({opt("autoApprove", list(str().non_empty()).unique()), opt("deny", list(str().non_empty()).unique())});
  NodeRef agent =
      object({
                 opt("default", one_of({"claude", "codex", "goose", "none"}).def("claude").doc("The agent `km agent` starts.")),
                 opt("claude", object({opt("trustedDirectories", list(str().check(checks::abs_path)).unique()),
                                       opt("tools", agent_tools),
                                       opt("permissions", map(any()).doc("Passed through to Claude Code's settings.json `permissions`.")),
                                       opt("args", list(str()).doc("Extra arguments for every `claude` launch."))})
                                   .doc("Claude Code settings.")),
                 opt("codex", object({opt("tools", agent_tools), opt("args", list(str())),
                                      opt("localBaseURL", str().check(checks::url, "^https?://")), opt("localModel", str().non_empty())})
                                  .doc("Codex settings.")),
                 opt("goose", object({opt("args", list(str()))}).doc("Goose settings.")),
             })
          .doc("The coding agent.");

  NodeRef slack =
      object({
                 opt("enabled", boolean().def("false")),
                 opt("perSandbox", boolean().def("false")),
                 opt("channelOverride", str().check(checks::slack_channel_id, "^C[A-Z0-9]+$")),
                 opt("channelName", str().non_empty()),
                 opt("archiveOnDestroy", boolean().def("true")),
                 opt("private", boolean()),
                 opt("inbound", object({opt("enabled", boolean()), opt("mentionOnly", boolean()), opt("reactAlways", boolean()),
                                        opt("allow", list(str().check(checks::slack_user_id, "^[UW][A-Z0-9]+$")).unique()),
                                        opt("maxConcurrentThreads", integer().min(1))})),
                 opt("transcript", object({opt("enabled", boolean())})),
                 opt("invites", object({opt("emails", list(str().check(checks::email_address)).unique()), opt("useConnect", boolean())})),
             })
          .doc("Slack bridge.");

  NodeRef notification =
      object({
                 opt("events", object({opt("onPermission", boolean()), opt("onIdle", boolean()), opt("cooldownSeconds", integer().min(0))})),
                 opt("email", object({opt("enabled", boolean().def("true")), opt("address", str().check(checks::email_address))})),
                 opt("slack", slack),
                 opt("github", object({opt("inbound", object({opt("enabled", boolean())}))})),
                 opt("h1", object({opt("inbound", object({opt("enabled", boolean())}))})),
             })
          .doc("Who hears about what the sandbox does.");

  NodeRef limits = object({opt("github_pr", action_limit()), opt("github_comment", action_limit()),
                           opt("github_review", action_limit()), opt("email_send", action_limit()),
                           opt("slack_post", action_limit()), opt("h1_comment", action_limit())})
                       .doc("Quotas on outbound actions.");

  NodeRef spec =
      object({
                 req("lifecycle", lifecycle),
                 opt("runtime", runtime),
                 opt("execution", execution),
                 opt("filesystem", filesystem),
                 req("network", network),
                 opt("sourceAccess", source_access),
                 opt("iam", iam),
                 opt("sidecars", sidecars),
                 opt("observability", observability),
                 opt("artifacts", artifacts),
                 opt("budget", budget),
                 opt("email", email),
                 opt("agent", agent),
                 opt("notification", notification),
                 opt("limits", limits),
                 opt("secrets", object({opt("sopsFile", str().check(checks::sops_file, "\\.enc\\.yaml$"))}).ignored(kCompat)),
                 opt("cli", object({opt("noBedrock", boolean())}).ignored(kCompat)),
             })
          .doc("The policy.");

  NodeRef metadata =
      object({
                 req("name", str().check(checks::profile_name, "^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$").doc("Profile name.")),
                 opt("prefix", str().check(checks::id_prefix, "^[a-z][a-z0-9]{0,11}$").def("sb").doc("Prefix of sandbox IDs: `<prefix>-<8 hex>`.")),
                 opt("labels", map(str()).keys(checks::label_key).doc("Free-form labels.")),
                 opt("abstract", boolean().def("false").doc("A fragment for `extends` only: validated without required fields, refused by `km create`.")),
                 opt("description", str().doc("One line shown by `km profile list`.")),
             })
          .doc("Identity of the profile.");

  return object({
                    req("apiVersion", str().check(checks::api_version, "^.+/v1alpha2$").doc("`<domain>/v1alpha2`, e.g. `klankermaker.ai/v1alpha2`.")),
                    req("kind", str().check(checks::kind, "^SandboxProfile$").doc("Always `SandboxProfile`.")),
                    req("metadata", metadata),
                    opt("extends", string_or_list(str().check(checks::extends_name)).doc("Parent profile(s): built-in names, files relative to this one, or names on the search path. Several parents fold left to right; this profile is applied last.")),
                    req("spec", spec),
                })
      .doc("A km SandboxProfile.");
}

}  // namespace

const Node& profile_schema() {
  static const NodeRef root = build();
  return *root;
}

}  // namespace km::profile::schema
