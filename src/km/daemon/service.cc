#include "km/daemon/service.h"

#include "km/tls/ca.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <set>
#include <cstdio>
#include <fstream>

#include "km/base/duration.h"
#include "km/base/file.h"
#include "km/base/money.h"
#include "km/base/strings.h"
#include "km/audit/transcript.h"
#include "km/daemon/budget.h"
#include "km/enforcer/config.h"
#include "km/profile/inherit.h"
#include "km/profile/model.h"
#include "km/sandbox/client.h"
#include "km/sandbox/plan.h"
#include "km/sandbox/protocol.h"
#include "km/sys/unix_socket.h"
#include "km/tls/ca.h"

namespace km::daemon {

using Json = nlohmann::json;
using store::State;

Json error_reply(const Error& e) {
  Json j{{"error", e.to_string()}, {"code", std::string(error_code_name(e.code()))}};
  if (!e.hint().empty()) j["hint"] = e.hint();
  return j;
}

namespace {

std::string random_hex8() {
  unsigned char b[4];
  if (::getrandom(b, sizeof b, 0) != sizeof b) {
    for (auto& x : b) x = static_cast<unsigned char>(std::rand());
  }
  char out[9];
  std::snprintf(out, sizeof out, "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
  return out;
}

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> out;
  DIR* d = ::opendir(path.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') out.emplace_back(e->d_name);
  }
  ::closedir(d);
  return out;
}

uint32_t uid_base_of(int64_t slot) { return 1000000u + static_cast<uint32_t>(slot) * sandbox::kIdRange; }

// The profile a sandbox was created from (stored resolved, so only built-ins may be named).
Result<profile::Model> stored_model(const store::Sandbox& s) {
  profile::ResolveOptions o;
  o.allow_files = false;
  profile::Checked checked = profile::check_text(s.profile_yaml, s.profile_name, o);
  if (!checked.resolved || checked.findings.has_errors()) {
    return fail(ErrorCode::kInternal, "the stored profile of " + s.id + " no longer validates");
  }
  return profile::decode(checked.resolved->root);
}

}  // namespace

bool bad_alias(const std::string& a);

namespace {
// Enforcers need no privilege once kmd has opened their sockets.
// Each sandbox's enforcer runs as a uid of its own, outside every sandbox's id range
// (1,000,000 + 65,536 per slot) and unused by the host: what one enforcer owns (its sandbox's
// spend ledger) no other enforcer, and no other unprivileged process, can write.
constexpr uint32_t kEnforcerUidBase = 2'000'000'000;
uint32_t enforcer_uid(int64_t slot) { return kEnforcerUidBase + static_cast<uint32_t>(slot); }
}  // namespace

Result<std::unique_ptr<Service>> Service::create(const Config& config, std::shared_ptr<Clock> clock, log::Logger& log) {
  std::unique_ptr<Service> s(new Service(config, std::move(clock), log));
  // Compute rates (and, in the enforcers, AI prices) come from the built-in table with the
  // operator's override file laid over it; a bad file stops kmd here, naming it.
  s->prices_ = meter::PriceTable::builtin();
  if (!config.price_table.empty()) {
    auto text = read_file(config.price_table, 1u << 20);
    auto table = text ? meter::PriceTable::from_json(*text) : Result<meter::PriceTable>(fail(text.error()));
    if (!table) return fail(std::move(table).error().wrap("priceTable " + config.price_table));
    s->prices_ = s->prices_.merged(*table);
  }
  s->layout_.state_dir = config.state_dir;
  s->layout_.runtime_dir = config.runtime_dir;
  auto pool = config.link_pool;
  s->layout_.pool_base = pool.substr(0, pool.find('/'));
  s->layout_.pool_prefix = std::stoi(pool.substr(pool.find('/') + 1));
  sandbox::LauncherConfig lc;
  lc.layout = s->layout_;
  lc.init_path = config.init_path;
  lc.enforcer_path = config.enforcer_path;
  // Pins of kernel enforcement and of the exec audit live on a bpffs under the runtime
  // directory; a profile that needs them fails at creation if there is none.
  ::mkdir(config.runtime_dir.c_str(), 0755);
  std::string pins = config.runtime_dir + "/bpf";
  Status fs = bpf::ensure_bpffs(pins);
  if (fs) lc.bpf_dir = pins;
  if (config.exec_audit) {
    // Loaded once per host and pinned under the runtime directory, so that it keeps recording
    // while kmd is down. If it cannot be loaded, kmd still starts (to manage what exists) but
    // refuses to create sandboxes, naming the reason.
    auto audit = fs ? bpf::ExecAudit::open(pins) : Result<std::unique_ptr<bpf::ExecAudit>>(fail(fs.error()));
    if (audit) {
      s->exec_audit_ = std::move(*audit);  // read once the trails exist (below)
    } else {
      s->exec_audit_error_ = audit.error();
      log.log(log::Level::kError, "the exec audit is not available; sandboxes will be refused", {{"error", audit.error().to_string()}});
    }
  }
  // Before anything runs in a sandbox's cgroup: the exec audit and TLS observation watch it.
  lc.on_cgroup = [svc = s.get()](const std::string& id, uint64_t cgroup_id, uint32_t uid_base) -> Status {
    if (svc->config_.exec_audit) KM_TRY(svc->watch_commands(id, cgroup_id, uid_base));
    return svc->tls_->watch(id, cgroup_id);
  };
  lc.cgroup_name = config.cgroup_name;
  // Enforcers write their audit lines into a pipe kmd reads into the sandbox's trail.
  lc.enforcer_audit = [svc = s.get()](const std::string& id) -> Result<UniqueFd> {
    return svc->trails_->enforcer_writer(id, svc->launcher_->enforcer_audit_fifo(id));
  };
  KM_ASSIGN_OR_RETURN(sandbox::Launcher l, sandbox::Launcher::create(lc));
  s->launcher_.emplace(std::move(l));
  KM_ASSIGN_OR_RETURN(s->store_, store::Store::open(config.state_dir + "/km.db"));
  s->store_->set_clock([clock = s->clock_] { return clock->now(); });  // running time, for compute spend
  AuditTrailsOptions ao;
  ao.db_path = config.state_dir + "/km.db";
  ao.live_dir = [layout = s->layout_](const std::string& id) { return sandbox::sandbox_dir(layout, id) + "/audit"; };
  ao.secrets = [svc = s.get()](const std::string& id) { return svc->sandbox_secrets(id); };
  KM_ASSIGN_OR_RETURN(s->trails_, AuditTrails::create(std::move(ao), log));
  TlsObserverOptions to;
  to.copies_dir = config.state_dir + "/tls";
  to.record = [svc = s.get()](const std::string& id, audit::Event e) { svc->trails_->record(id, std::move(e)); };
  to.sandbox_init = [svc = s.get()](const std::string& id) -> std::optional<pid_t> {
    auto sb = svc->store_->get(id);
    if (!sb || !*sb || (*sb)->pid <= 0) return std::nullopt;
    sandbox::Started st{static_cast<pid_t>((*sb)->pid), static_cast<uint64_t>((*sb)->pid_start)};
    if (!svc->launcher_->alive(st)) return std::nullopt;  // a stopped sandbox's pid may be another's now
    return st.pid;
  };
  s->tls_ = std::make_unique<TlsObserver>(std::move(to), log);
  if (s->exec_audit_) s->exec_reader_ = std::thread([svc = s.get()] { svc->record_commands(); });
  return s;
}

Service::~Service() {
  stopping_ = true;
  if (exec_reader_.joinable()) exec_reader_.join();
  tls_.reset();     // it records into the trails
  trails_.reset();  // writes what is queued
}

Status Service::watch_commands(const std::string& id, uint64_t cgroup_id, uint32_t uid_base) {
  if (exec_audit_error_) return fail(Error(*exec_audit_error_).wrap("the exec audit (every command run in a sandbox is recorded)"));
  if (!exec_audit_) return ok();
  KM_TRY(exec_audit_->watch(cgroup_id));
  std::lock_guard<std::mutex> g(exec_mu_);
  for (auto it = audited_.begin(); it != audited_.end();) it = it->second.id == id ? audited_.erase(it) : std::next(it);
  audited_[cgroup_id] = Audited{id, uid_base};
  return ok();
}

void Service::unwatch_commands(const std::string& id) {
  if (!exec_audit_) return;
  std::lock_guard<std::mutex> g(exec_mu_);
  for (auto it = audited_.begin(); it != audited_.end();) {
    if (it->second.id == id) {
      (void)exec_audit_->unwatch(it->first);
      it = audited_.erase(it);
    } else {
      ++it;
    }
  }
}

void Service::record_commands() {
  uint64_t reported_lost = 0;
  auto deliver = [this](const bpf::ExecEvent& e) {
    Audited who;
    {
      std::lock_guard<std::mutex> g(exec_mu_);
      auto it = audited_.find(e.cgroup_id);
      if (it == audited_.end()) return;
      who = it->second;
    }
    // Ids as the sandbox sees them (its user namespace maps 0.. onto uid_base..).
    auto inside = [&who](uint32_t host) -> int64_t {
      return host >= who.uid_base && host < who.uid_base + sandbox::kIdRange ? int64_t{host - who.uid_base} : -1;
    };
    Json detail{{"pid", e.pid}, {"ppid", e.ppid}, {"uid", inside(e.uid)}, {"gid", inside(e.gid)}, {"filename", e.filename},
                {"argv", e.argv}, {"comm", e.comm}, {"cwd", e.cwd}};
    if (e.truncated) detail["truncated"] = true;
    trails_->record(who.id, audit::Event{audit::now_ms(), "kernel", "exec", std::move(detail)});
    // Programs whose TLS the observation cannot see are reported (classified off this thread).
    tls_->exec_seen(who.id, e.pid, e.filename, e.cwd);
  };
  while (!stopping_) {
    auto n = exec_audit_->poll(200, deliver);
    if (!n) {
      log_.log(log::Level::kError, "reading the exec audit failed", {{"error", n.error().to_string()}});
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    uint64_t lost = exec_audit_->lost();
    if (lost > reported_lost) {
      log_.log(log::Level::kWarn, "exec audit events were lost (the reader fell behind)", {{"lost", lost - reported_lost}});
      // The kernel's count is host-wide: every sandbox watched now may miss commands.
      std::set<std::string> watched;
      {
        std::lock_guard<std::mutex> g(exec_mu_);
        for (const auto& [cg, who] : audited_) watched.insert(who.id);
      }
      for (const auto& id : watched) {
        trails_->record(id, audit::Event{audit::now_ms(), "kmd", "audit",
                                         Json{{"kind", "exec-lost"}, {"count", lost - reported_lost}, {"scope", "host"},
                                              {"reason", "the kernel could not queue commands for kmd (host-wide count)"}}});
      }
      reported_lost = lost;
    }
  }
}

std::mutex& Service::lock_for(const std::string& id) {
  std::lock_guard<std::mutex> g(locks_mu_);
  auto& m = locks_[id];
  if (!m) m = std::make_unique<std::mutex>();
  return *m;
}

void Service::event(const std::string& id, const std::string& type, Json detail) {
  (void)store_->add_event(id, clock_->now(), type, detail.dump(-1, ' ', false, Json::error_handler_t::replace));
  log_.log(log::Level::kInfo, type, {{"detail", detail}}, id);
  // Shell sessions have session events of their own in the trail (op_shell).
  if (type.rfind("shell-", 0) != 0) trails_->record(id, audit::from_lifecycle(type, std::move(detail), audit::now_ms()));
}

namespace {
// describe()'s fields, in the order compact listings carry them.
const std::vector<std::string> kListFields = {"id", "alias", "number", "profile", "state", "reason", "created_at",
                                              "expires_at", "idle_timeout", "max_lifetime", "teardown_policy",
                                              "locked", "last_activity", "cloned_from"};
// Their JSON types: s(tring), i(nteger), b(oolean).
const std::string kListTypes = "ssisssiiiisbis";
}  // namespace

Json Service::describe(const store::Sandbox& s) {
  Json j{{"id", s.id}, {"alias", s.alias}, {"number", s.number}, {"profile", s.profile_name},
         {"state", std::string(store::state_name(s.state))}, {"reason", s.reason}, {"created_at", s.created_at},
         {"expires_at", s.expires_at}, {"idle_timeout", s.idle_timeout}, {"max_lifetime", s.max_lifetime},
         {"teardown_policy", s.teardown_policy}, {"locked", s.locked}, {"last_activity", s.last_activity},
         {"cloned_from", s.cloned_from}};
  return j;
}

Result<store::Sandbox> Service::find(const Json& req) {
  std::string ref = req.value("ref", std::string());
  if (ref.empty()) return fail(ErrorCode::kInvalidArgument, "no sandbox given");
  KM_ASSIGN_OR_RETURN(auto s, store_->resolve(ref));
  if (!s) {
    return fail(Error(ErrorCode::kNotFound, "no sandbox " + km::quoted(ref)).with_hint("`km list` shows the sandboxes, their numbers and aliases"));
  }
  return *s;
}

Json Service::handle(const Json& req, std::vector<UniqueFd>& fds, int conn) {
  std::string op = req.is_object() ? req.value("op", std::string()) : "";
  try {
    if (op == "create") return op_create(req);
    if (op == "list") return op_list(req);
    if (op == "status") return op_status(req);
    if (op == "audit") return op_audit(req);
    if (op == "logs") return op_logs(req);
    if (op == "exec") return op_exec(req, fds, conn);
    if (op == "shell") return op_shell(req, fds, conn);
    if (op == "clone") return op_clone(req);
    if (op == "budget") return op_budget(req);
    if (op == "otel") return op_otel(req);
    if (op == "stop" || op == "pause" || op == "resume" || op == "lock" || op == "unlock" || op == "extend" ||
        op == "destroy") {
      return op_simple(op, req);
    }
  } catch (const std::exception& e) {
    // Bad JSON types from a client are its error, never a crash of kmd.
    return error_reply(Error(ErrorCode::kInvalidArgument, std::string("malformed request: ") + e.what()));
  }
  return error_reply(Error(ErrorCode::kInvalidArgument, "unknown operation " + km::quoted(op)));
}

Json Service::op_create(const Json& req) {
  std::string text = req.value("profile", std::string());
  std::string label = req.value("profile_source", std::string("profile"));
  // Never trust the client's validation: resolve (built-ins only) and validate again.
  profile::ResolveOptions ro;
  ro.allow_files = false;
  profile::Checked checked = profile::check_text(text, label, ro);
  if (!checked.resolved || checked.findings.has_errors()) {
    std::string msg = "the profile is not valid";
    for (const auto& f : checked.findings.items()) {
      if (f.severity == profile::Severity::kError) {
        msg += "\n" + f.to_string();
      }
    }
    return error_reply(Error(ErrorCode::kInvalidArgument, msg).with_hint("run `km validate` on it"));
  }
  if (checked.resolved->abstract) {
    return error_reply(Error(ErrorCode::kInvalidArgument, "the profile is abstract (a fragment for extends) and cannot be created"));
  }
  auto model = profile::decode(checked.resolved->root);
  if (!model) return error_reply(model.error());
  if (model->substrate != "local") {
    return error_reply(Error(ErrorCode::kFailedPrecondition, "kmd runs the local substrate; this profile asks for " + model->substrate)
                           .with_hint("set spec.runtime.substrate: local"));
  }
  int64_t now = clock_->now();
  store::Sandbox s;
  s.id = model->prefix + "-" + random_hex8();
  s.alias = req.value("alias", std::string());
  s.profile_name = model->name;
  s.profile_yaml = text;
  s.created_at = now;
  int64_t ttl = model->ttl.seconds, idle = model->idle_timeout.seconds;
  if (req.contains("ttl")) ttl = req["ttl"].get<int64_t>();
  if (req.contains("idle")) idle = req["idle"].get<int64_t>();
  s.max_lifetime = model->max_lifetime.seconds;
  if (s.max_lifetime > 0 && (ttl == 0 || ttl > s.max_lifetime)) {
    return error_reply(Error(ErrorCode::kInvalidArgument, "ttl " + format_duration({ttl}) + " exceeds maxLifetime " +
                                                               format_duration({s.max_lifetime})));
  }
  s.expires_at = ttl > 0 ? now + ttl : 0;
  s.idle_timeout = idle;
  s.teardown_policy = model->teardown_policy;
  if (!s.alias.empty() && bad_alias(s.alias)) {
    return error_reply(Error(ErrorCode::kInvalidArgument, "alias " + km::quoted(s.alias) + " must be 1-32 letters, digits, '-' or '_' and not look like a number"));
  }
  // km create --ai/--compute replace the profile's ceilings.
  std::optional<int64_t> ai, compute;
  for (auto [key, value] : {std::pair<const char*, std::optional<int64_t>*>{"ai_micros", &ai}, {"compute_micros", &compute}}) {
    if (!req.contains(key)) continue;
    *value = req[key].get<int64_t>();
    if (**value < 0 || **value > kMaxUsdMicros) {
      return error_reply(Error(ErrorCode::kInvalidArgument, std::string(key) + " must be between 0 and " + std::to_string(kMaxUsdMicros)));
    }
  }
  return create_and_start(s, [&](const store::Sandbox& made) { return prepare_ledger(made, *model, ai, compute); });
}

Json Service::create_and_start(store::Sandbox s, const std::function<Status(const store::Sandbox&)>& prepare) {
  auto inserted = store_->insert(s);
  if (!inserted) return error_reply(inserted.error());
  std::lock_guard<std::mutex> g(lock_for(inserted->id));
  event(inserted->id, "created", {{"profile", s.profile_name}, {"cloned_from", s.cloned_from}});
  Status prepared = prepare ? prepare(*inserted) : ok();
  auto started = prepared ? do_start(*inserted) : Result<store::Sandbox>(fail(prepared.error()));
  if (!started) {
    Error e = started.error();
    // What the failed sandbox did is kept, with the artifacts, before its directory goes.
    (void)launcher_->stop(inserted->id);
    tls_->unwatch(inserted->id);
    export_trail(inserted->id);
    (void)launcher_->destroy(inserted->id);
    (void)store_->transition(inserted->id, {State::kStarting}, State::kFailed, e.to_string());
    event(inserted->id, "failed", {{"reason", e.to_string()}});
    return error_reply(e.wrap("creating sandbox " + inserted->id));
  }
  return Json{{"ok", true}, {"sandbox", describe(*started)}};
}

Json Service::op_clone(const Json& req) {
  auto src = find(req);
  if (!src) return error_reply(src.error());
  if (src->state == State::kDestroyed || src->state == State::kDestroying || src->state == State::kStarting) {
    return error_reply(Error(ErrorCode::kFailedPrecondition, "sandbox " + src->id + " is " + std::string(store::state_name(src->state)) + "; cannot clone it"));
  }
  store::Sandbox s;
  std::string prefix = src->id.substr(0, src->id.rfind('-'));
  s.id = prefix + "-" + random_hex8();
  s.alias = req.value("alias", std::string());
  if (!s.alias.empty() && bad_alias(s.alias)) {
    return error_reply(Error(ErrorCode::kInvalidArgument, "alias " + km::quoted(s.alias) + " must be 1-32 letters, digits, '-' or '_' and not look like a number"));
  }
  int64_t now = clock_->now();
  s.profile_name = src->profile_name;
  s.profile_yaml = src->profile_yaml;
  s.created_at = now;
  int64_t ttl = src->expires_at > 0 ? src->expires_at - src->created_at : 0;
  s.expires_at = ttl > 0 ? now + ttl : 0;
  s.idle_timeout = src->idle_timeout;
  s.max_lifetime = src->max_lifetime;
  s.teardown_policy = src->teardown_policy;
  s.cloned_from = src->id;
  store::Sandbox source = *src;
  return create_and_start(s, [&](const store::Sandbox& dst) -> Status {
    // A consistent copy: the source is frozen while its workspace is read.
    std::lock_guard<std::mutex> g(lock_for(source.id));
    bool freeze = source.state == State::kRunning;
    if (freeze) KM_TRY(launcher_->freeze(source.id, true));
    std::string from = sandbox::sandbox_dir(layout_, source.id) + "/workspace";
    std::string to = sandbox::sandbox_dir(layout_, dst.id) + "/workspace";
    ::mkdir(sandbox::sandbox_dir(layout_, dst.id).c_str(), 0711);
    Status st = sandbox::copy_tree_shifted(from, to, uid_base_of(source.slot), uid_base_of(dst.slot));
    if (freeze) (void)launcher_->freeze(source.id, false);
    if (st) event(source.id, "cloned", {{"to", dst.id}});
    return st;
  });
}

bool bad_alias(const std::string& a) {
  if (a.empty() || a.size() > 32) return true;
  bool digits = a.find_first_not_of("0123456789") == std::string::npos;
  if (digits) return true;
  return a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != std::string::npos;
}

std::string Service::inspection_ca_dir(const std::string& id) const { return sandbox::sandbox_dir(layout_, id) + "/ca"; }

Result<std::string> Service::ensure_inspection_ca(const std::string& id) {
  std::string dir = inspection_ca_dir(id);
  if (auto cert = read_file(dir + "/ca.pem", 1u << 20); cert && ::access((dir + "/ca.key").c_str(), R_OK) == 0) return *cert;
  ::mkdir(sandbox::sandbox_dir(layout_, id).c_str(), 0711);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return fail(Error::from_errno("creating " + dir));
  KM_ASSIGN_OR_RETURN(tls::Pem ca, tls::make_ca("km sandbox " + id + " inspection CA", std::chrono::hours(24 * 400)));
  // The key first: a certificate on disk always has its key.
  KM_TRY(write_file_atomic(dir + "/ca.key", ca.key, 0600));
  KM_TRY(write_file_atomic(dir + "/ca.pem", ca.cert, 0644));
  return ca.cert;
}

Result<store::Sandbox> Service::do_start(store::Sandbox s) {
  KM_ASSIGN_OR_RETURN(profile::Model m, stored_model(s));
  KM_TRY(prepare_ledger(s, m, std::nullopt, std::nullopt));
  sandbox::Allocation a{s.id, uid_base_of(s.slot), static_cast<uint32_t>(s.slot)};
  KM_ASSIGN_OR_RETURN(sandbox::Spec spec, sandbox::plan(m, a, layout_));
  sys::CgroupLimits lim{m.cpus, m.memory, m.pids};
  std::string enforcer_config;
  if (spec.net.egress) {
    enforcer::Config ec;
    ec.sandbox = s.id;
    ec.link_address = spec.net.peer_address;
    ec.proxy_port = spec.net.proxy_port;
    ec.policy.dns_suffixes = m.allowed_dns_suffixes;
    ec.policy.hosts = m.allowed_hosts;
    ec.policy.cidrs = m.allowed_cidrs;
    ec.policy.allow_private_ranges = m.allow_private_ranges;
    ec.policy.https_only = m.https_only;
    ec.upstream_dns = config_.upstream_dns;
    ec.upstream_proxy = config_.upstream_proxy;
    ec.ca_bundle = config_.extra_ca_bundle;
    ec.ledger_path = ledger_path(s.id);
    ec.price_table = config_.price_table;
    // Agent telemetry, written by the enforcer (as its own uid) beside the ledger.
    std::string tdir = sandbox::sandbox_dir(layout_, s.id) + "/telemetry";
    if (::mkdir(tdir.c_str(), 0700) != 0 && errno != EEXIST) return fail(Error::from_errno("mkdir " + tdir));
    if (::lchown(tdir.c_str(), enforcer_uid(s.slot), enforcer_uid(s.slot)) != 0) return fail(Error::from_errno("chown " + tdir));
    ec.telemetry_dir = tdir;
    ec.pid_file = launcher_->runtime_dir(s.id) + "/enforcer.pid";
    ec.audit_rate = config_.audit_rate_limit;
    ec.run_as_uid = enforcer_uid(s.slot);
    ec.run_as_gid = enforcer_uid(s.slot);
    ec.kernel = spec.net.enforcement != "proxy";
    // L7 inspection: the sandbox's own CA (made once, kept for the sandbox's life); the
    // sandbox trusts its certificate, only the enforcer reads its key.
    KM_ASSIGN_OR_RETURN(std::string ca_cert, ensure_inspection_ca(s.id));
    sandbox::trust_inspection_ca(spec, ca_cert);
    ec.mitm_ca_cert = inspection_ca_dir(s.id) + "/ca.pem";
    ec.mitm_ca_key = inspection_ca_dir(s.id) + "/ca.key";
    ec.github = m.github;
    ec.github_repos = m.github_repos;
    ec.github_refs_set = m.github_refs.has_value();
    if (m.github_refs) ec.github_refs = *m.github_refs;
    enforcer_config = enforcer::to_json(ec);
  }
  KM_TRY(prepare_tls(s, m, spec));
  auto started = launcher_->start(spec, lim, a.uid_base, m.image, enforcer_config);
  if (!started) {
    tls_->unwatch(s.id);
    return fail(std::move(started).error());
  }
  sandbox::Started st = *started;
  KM_TRY(store_->set_process(s.id, st.pid, static_cast<int64_t>(st.start_time)));
  KM_ASSIGN_OR_RETURN(bool moved, store_->transition(s.id, {State::kStarting, State::kStopped}, State::kRunning));
  if (!moved) return fail(ErrorCode::kFailedPrecondition, "sandbox changed state while starting");
  (void)store_->touch(s.id, clock_->now());
  event(s.id, "started", {{"pid", st.pid}});
  KM_ASSIGN_OR_RETURN(auto fresh, store_->get(s.id));
  return *fresh;
}

Status Service::prepare_tls(const store::Sandbox& s, const profile::Model& m, sandbox::Spec& spec, std::optional<pid_t> running_init) {
  if (!m.tls_capture.enabled) return ok();
  auto why = [](Error e) {
    return fail(std::move(e).wrap("TLS observation (spec.observability.tlsCapture), which the profile asks for")
                    .with_hint("fix the cause, or set spec.observability.tlsCapture.enabled: false"));
  };
  // The copies are bound over the host's libraries: a sandbox of another image has its own.
  if (!m.image.empty() && m.image != "host") {
    return why(Error(ErrorCode::kFailedPrecondition, "it observes the host's libraries, and this sandbox runs image " + m.image));
  }
  auto binds = tls_->prepare(s.id, m.tls_capture, running_init);
  if (!binds) return why(std::move(binds).error());
  spec.file_binds = std::move(*binds);
  return ok();
}

Json Service::op_list(const Json& req) {
  auto all = store_->list(req.value("all", false));
  if (!all) return error_reply(all.error());
  if (req.value("compact", false)) {
    // One line per sandbox, fields separated by tabs in the order of "fields" (with \\, \t and
    // \n escaped): a listing of 10,000 sandboxes is one string, not 140,000 JSON values to
    // build, encode and decode.
    std::string rows;
    rows.reserve(all->size() * 128);
    auto text = [&rows](std::string_view v) {
      for (char c : v) {
        if (c == '\\') rows += "\\\\";
        else if (c == '\t') rows += "\\t";
        else if (c == '\n') rows += "\\n";
        else rows += c;
      }
    };
    for (const auto& s : *all) {
      text(s.id), rows += '\t', text(s.alias), rows += '\t', rows += std::to_string(s.number), rows += '\t';
      text(s.profile_name), rows += '\t', rows += store::state_name(s.state), rows += '\t', text(s.reason), rows += '\t';
      rows += std::to_string(s.created_at), rows += '\t', rows += std::to_string(s.expires_at), rows += '\t';
      rows += std::to_string(s.idle_timeout), rows += '\t', rows += std::to_string(s.max_lifetime), rows += '\t';
      text(s.teardown_policy), rows += '\t', rows += s.locked ? "true" : "false", rows += '\t';
      rows += std::to_string(s.last_activity), rows += '\t', text(s.cloned_from), rows += '\n';
    }
    return Json{{"ok", true}, {"fields", kListFields}, {"types", kListTypes}, {"rows", std::move(rows)}, {"now", clock_->now()}};
  }
  Json out = Json::array();
  for (const auto& s : *all) out.push_back(describe(s));
  return Json{{"ok", true}, {"sandboxes", out}, {"now", clock_->now()}};
}

Json Service::op_status(const Json& req) {
  auto s = find(req);
  if (!s) return error_reply(s.error());
  Json d = describe(*s);
  sys::SandboxCgroup cg = sys::SandboxCgroup::of(launcher_->cgroups(), s->id);
  if (auto mem = cg.memory_current()) d["memory_bytes"] = *mem;
  if (auto p = cg.pids()) d["processes"] = p->size();
  {
    std::lock_guard<std::mutex> g(sessions_mu_);
    d["sessions"] = sessions_[s->id];
  }
  Json evs = Json::array();
  if (auto e = store_->events(s->id)) {
    for (const auto& ev : *e) evs.push_back(Json{{"ts", ev.ts}, {"type", ev.type}, {"detail", Json::parse(ev.detail, nullptr, false)}});
  }
  d["events"] = evs;
  d["audit"] = trails_->counters(s->id).to_json();
  d["audit"]["head"] = trails_->head(s->id);
  if (Json t = tls_->status(s->id); !t.is_null()) d["tls"] = std::move(t);
  if (auto ledger = ledger_for(s->id)) {
    if (auto b = budget_of(*ledger, *s)) d["budget"] = std::move(*b);
  }
  return Json{{"ok", true}, {"sandbox", d}, {"now", clock_->now()}};
}

Service::SessionGuard::SessionGuard(Service& svc, std::string id) : svc_(svc), id_(std::move(id)) {
  std::lock_guard<std::mutex> g(svc_.sessions_mu_);
  ++svc_.sessions_[id_];
}

Service::SessionGuard::~SessionGuard() {
  std::lock_guard<std::mutex> g(svc_.sessions_mu_);
  --svc_.sessions_[id_];
}

Json Service::op_exec(const Json& req, std::vector<UniqueFd>& fds, int conn) {
  auto s = find(req);
  if (!s) return error_reply(s.error());
  if (s->state != State::kRunning) {
    return error_reply(Error(ErrorCode::kFailedPrecondition, "sandbox " + s->id + " is " + std::string(store::state_name(s->state)))
                           .with_hint(s->state == State::kPaused || s->state == State::kStopped ? "km resume " + s->id : ""));
  }
  if (fds.size() != 3) return error_reply(Error(ErrorCode::kInvalidArgument, "exec needs stdin, stdout and stderr"));
  auto ctl = launcher_->connect(s->id);
  if (!ctl) return error_reply(ctl.error().wrap("reaching sandbox " + s->id));
  sandbox::ExecRequest er;
  for (const auto& a : req.at("argv")) er.argv.push_back(a.get<std::string>());
  er.env = req.value("env", Json::object());
  er.cwd = req.value("cwd", std::string());
  er.root = req.value("root", false);
  auto pid = sandbox::start_exec(ctl->get(), er, fds[0].get(), fds[1].get(), fds[2].get());
  fds.clear();  // the sandbox holds them now
  if (!pid) return error_reply(pid.error());
  SessionGuard session(*this, s->id);  // a sandbox with an open session is never idle
  (void)store_->touch(s->id, clock_->now());
  (void)sys::send_message(conn, Json{{"started", *pid}}.dump());
  // Wait for the end, or for the client to go away (then the process is killed).
  Json result;
  for (;;) {
    pollfd p[2] = {{ctl->get(), POLLIN, 0}, {conn, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      result = error_reply(Error::from_errno("poll"));
      break;
    }
    if (p[0].revents) {
      auto st = sandbox::wait_exit(ctl->get());
      result = st ? Json{{"ok", true}, {"exit", st->code}, {"signal", st->signal}} : error_reply(st.error());
      break;
    }
    if (p[1].revents) {
      auto m = sys::recv_message(conn);
      if (!m) {
        (void)sys::send_message(ctl->get(), Json{{"op", "signal"}, {"sig", SIGKILL}}.dump());
        result = Json{{"ok", false}};
        break;
      }
      Json sig = Json::parse(m->data, nullptr, false);
      if (sig.is_object() && sig.value("op", std::string()) == "signal") {
        (void)sys::send_message(ctl->get(), Json{{"op", "signal"}, {"sig", sig.value("sig", SIGTERM)}}.dump());
      }
    }
  }
  (void)store_->touch(s->id, clock_->now());
  return result;
}

// An interactive shell: the sandbox's init gives kmd the pty master; kmd relays between it
// and the client's terminal (stdin, stdout). With "record" (the default) what is typed and what
// is shown go into the sandbox's audit trail as session events, chunked by line and redacted
// there like every event; without it only the session's start and end are recorded. The
// client's terminal never enters the sandbox.
Json Service::op_shell(const Json& req, std::vector<UniqueFd>& fds, int conn) {
  auto s = find(req);
  if (!s) return error_reply(s.error());
  if (s->state != State::kRunning) {
    return error_reply(Error(ErrorCode::kFailedPrecondition, "sandbox " + s->id + " is " + std::string(store::state_name(s->state))));
  }
  if (fds.size() != 2) return error_reply(Error(ErrorCode::kInvalidArgument, "shell needs the terminal's input and output"));
  auto ctl = launcher_->connect(s->id);
  if (!ctl) return error_reply(ctl.error().wrap("reaching sandbox " + s->id));
  bool root = req.value("root", false), recorded = req.value("record", true);
  Json sreq{{"op", "shell"}, {"cols", req.value("cols", 80)}, {"rows", req.value("rows", 24)}, {"root", root},
            {"term", req.value("term", std::string("xterm-256color"))}};
  if (auto st = sys::send_message(ctl->get(), sreq.dump()); !st) return error_reply(st.error());
  auto started = sys::recv_message(ctl->get());
  if (!started) return error_reply(started.error());
  Json sj = Json::parse(started->data, nullptr, false);
  if (!sj.is_object() || sj.contains("error") || started->fds.size() != 1) {
    return error_reply(Error(ErrorCode::kFailedPrecondition, sj.is_object() && sj.contains("error") ? sj["error"].get<std::string>() : "no terminal from the sandbox"));
  }
  UniqueFd master = std::move(started->fds[0]);
  int64_t t0 = clock_->now();
  std::string session = std::to_string(t0) + "-" + std::to_string(sj.value("pid", 0));
  // The transcript: typed input and shown output, each cut into chunks at line ends.
  audit::TranscriptChunker typed, shown;
  std::vector<audit::TranscriptChunker::Chunk> chunks;
  auto record = [&](const char* kind, Json detail, int64_t ts = 0) {
    detail["kind"] = kind;
    detail["session"] = session;
    trails_->record(s->id, audit::Event{ts ? ts : audit::now_ms(), "shell", "session", std::move(detail)});
  };
  auto flush = [&](const char* kind) {
    for (auto& c : chunks) record(kind, Json{{"data", std::move(c.data)}}, c.ts_ms);
    chunks.clear();
  };
  record("start", Json{{"pid", sj.value("pid", 0)}, {"root", root}, {"recorded", recorded}});
  event(s->id, "shell-started", {{"session", session}, {"recorded", recorded}});
  SessionGuard guard(*this, s->id);  // a sandbox with an open session is never idle
  (void)sys::send_message(conn, Json{{"started", sj.value("pid", 0)}}.dump());
  int in = fds[0].get(), out = fds[1].get();
  char buf[16384];
  Json result;
  int64_t input_bytes = 0, output_bytes = 0;
  bool input_open = true;
  auto shown_bytes = [&](const char* data, size_t n) {
    output_bytes += static_cast<int64_t>(n);
    if (!recorded) return;
    shown.feed(std::string_view(data, n), audit::now_ms(), chunks);
    flush("output");
  };
  for (;;) {
    pollfd p[4] = {{ctl->get(), POLLIN, 0}, {conn, POLLIN, 0}, {master.get(), POLLIN, 0}, {input_open ? in : -1, POLLIN, 0}};
    // Chunks waiting for their line end are written within their delay even when all is quiet.
    if (::poll(p, 4, recorded ? 200 : -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (recorded) {
      int64_t now = audit::now_ms();
      typed.tick(now, chunks);
      flush("input");
      shown.tick(now, chunks);
      flush("output");
    }
    if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::read(master.get(), buf, sizeof buf);
      if (n > 0) {
        if (::write(out, buf, static_cast<size_t>(n)) < 0) {
        }
        shown_bytes(buf, static_cast<size_t>(n));
      }
    }
    if (p[3].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::read(in, buf, sizeof buf);
      if (n <= 0) {
        input_open = false;
      } else {
        input_bytes += n;
        if (recorded) {
          typed.feed(std::string_view(buf, static_cast<size_t>(n)), audit::now_ms(), chunks);
          flush("input");
        }
        if (::write(master.get(), buf, static_cast<size_t>(n)) < 0) input_open = false;
        (void)store_->touch(s->id, clock_->now());  // shell input is activity
      }
    }
    if (p[1].revents) {
      auto m = sys::recv_message(conn);
      if (!m) {
        (void)sys::send_message(ctl->get(), Json{{"op", "signal"}, {"sig", SIGHUP}}.dump());
        result = Json{{"ok", false}};
        break;
      }
      Json c = Json::parse(m->data, nullptr, false);
      if (c.is_object() && c.value("op", std::string()) == "resize") {
        winsize ws{};
        ws.ws_col = static_cast<unsigned short>(c.value("cols", 80));
        ws.ws_row = static_cast<unsigned short>(c.value("rows", 24));
        ::ioctl(master.get(), TIOCSWINSZ, &ws);
      }
    }
    if (p[0].revents) {
      auto st = sandbox::wait_exit(ctl->get());
      // Drain what the shell printed last.
      ::fcntl(master.get(), F_SETFL, O_NONBLOCK);
      ssize_t n;
      while ((n = ::read(master.get(), buf, sizeof buf)) > 0) {
        if (::write(out, buf, static_cast<size_t>(n)) < 0) break;
        shown_bytes(buf, static_cast<size_t>(n));
      }
      result = st ? Json{{"ok", true}, {"exit", st->code}, {"signal", st->signal}} : error_reply(st.error());
      break;
    }
  }
  if (recorded) {
    int64_t now = audit::now_ms();
    typed.finish(now, chunks);
    flush("input");
    shown.finish(now, chunks);
    flush("output");
  }
  record("end", Json{{"input_bytes", input_bytes}, {"output_bytes", output_bytes}, {"exit", result.value("exit", -1)}});
  event(s->id, "shell-ended", {{"session", session}, {"input_bytes", input_bytes}, {"output_bytes", output_bytes},
                               {"exit", result.value("exit", -1)}});
  (void)store_->touch(s->id, clock_->now());
  return result;
}

Status Service::do_stop(const store::Sandbox& s, const std::string& reason) {
  KM_TRY(launcher_->stop(s.id));
  tls_->unwatch(s.id);  // its processes are gone: what they did is summarised
  trails_->detach_enforcer(s.id);
  unwatch_commands(s.id);
  KM_ASSIGN_OR_RETURN(bool moved, store_->transition(s.id, {State::kRunning, State::kPaused}, State::kStopped, reason));
  if (moved) event(s.id, "stopped", {{"reason", reason}});
  return ok();
}

void Service::collect_artifacts(const store::Sandbox& s) {
  auto m = stored_model(s);
  if (!m || m->artifact_paths.empty()) return;
  // Artifacts are read from the sandbox's persistent directories (workspace and home).
  std::string sdir = sandbox::sandbox_dir(layout_, s.id);
  std::string dest = config_.state_dir + "/artifacts/" + s.id;
  ::mkdir((config_.state_dir + "/artifacts").c_str(), 0700);
  ::mkdir(dest.c_str(), 0700);
  int64_t copied = 0, skipped = 0;
  for (const std::string& p : m->artifact_paths) {
    std::string host;
    if (p.rfind("/workspace/", 0) == 0 || p == "/workspace") host = sdir + "/workspace" + p.substr(10);
    else if (p.rfind("~/", 0) == 0) host = sdir + "/home" + p.substr(1);
    else continue;
    std::string target = dest + p;
    std::string cmd = "mkdir -p \"$(dirname '" + target + "')\" && cp -a --no-dereference '" + host + "' '" + target + "' 2>/dev/null";
    if (p.find('\'') != std::string::npos) continue;
    struct stat st {};
    if (::lstat(host.c_str(), &st) != 0) continue;
    if (m->artifact_max_mb > 0 && S_ISREG(st.st_mode) && st.st_size > m->artifact_max_mb * 1024 * 1024) {
      ++skipped;
      continue;
    }
    if (std::system(cmd.c_str()) == 0) ++copied;
  }
  event(s.id, "artifacts", {{"collected", copied}, {"skipped_over_limit", skipped}, {"path", dest}});
}

Status Service::do_destroy(const store::Sandbox& s, const std::string& reason) {
  KM_ASSIGN_OR_RETURN(bool moved, store_->transition(s.id, {State::kStarting, State::kRunning, State::kPaused, State::kStopped,
                                                            State::kFailed, State::kDestroying},
                                                     State::kDestroying, reason));
  if (!moved) return ok();
  collect_artifacts(s);
  archive_ledger(s.id);
  KM_TRY(launcher_->stop(s.id));
  tls_->unwatch(s.id);  // before the trail is archived
  tls_->collect_copies();
  export_trail(s.id);
  KM_TRY(launcher_->destroy(s.id));
  unwatch_commands(s.id);
  (void)store_->transition(s.id, {State::kDestroying}, State::kDestroyed, reason);
  event(s.id, "destroyed", {{"reason", reason}});
  trails_->close(s.id);
  return ok();
}

Json Service::op_simple(const std::string& op, const Json& req) {
  auto found = find(req);
  if (!found) return error_reply(found.error());
  std::lock_guard<std::mutex> g(lock_for(found->id));
  auto s = store_->get(found->id);
  if (!s || !*s) return error_reply(Error(ErrorCode::kNotFound, "sandbox vanished"));
  store::Sandbox sb = **s;
  auto locked_refusal = [&]() {
    return error_reply(Error(ErrorCode::kFailedPrecondition, "sandbox " + sb.id + " is locked and refuses " + op)
                           .with_hint("km unlock " + sb.id));
  };
  auto state_refusal = [&]() {
    return error_reply(Error(ErrorCode::kFailedPrecondition, "sandbox " + sb.id + " is " + std::string(store::state_name(sb.state)) + "; cannot " + op));
  };
  Status st = ok();
  if (op == "lock" || op == "unlock") {
    st = store_->set_locked(sb.id, op == "lock");
    if (st) event(sb.id, op == "lock" ? "locked" : "unlocked");
  } else if (op == "stop") {
    if (sb.locked) return locked_refusal();
    if (sb.state != State::kRunning && sb.state != State::kPaused) return state_refusal();
    st = do_stop(sb, "km stop");
  } else if (op == "pause") {
    if (sb.locked) return locked_refusal();
    if (sb.state != State::kRunning) return state_refusal();
    st = launcher_->freeze(sb.id, true);
    if (st && *store_->transition(sb.id, {State::kRunning}, State::kPaused)) event(sb.id, "paused");
  } else if (op == "resume") {
    if (auto refusal = compute_ceiling_refusal(sb)) return error_reply(*refusal);
    if (sb.state == State::kPaused) {
      st = launcher_->freeze(sb.id, false);
      if (st && *store_->transition(sb.id, {State::kPaused}, State::kRunning)) event(sb.id, "resumed");
      (void)store_->touch(sb.id, clock_->now());
    } else if (sb.state == State::kStopped) {
      auto r = do_start(sb);
      if (!r) {
        (void)launcher_->stop(sb.id);
        tls_->unwatch(sb.id);
        trails_->detach_enforcer(sb.id);
        return error_reply(r.error().wrap("resuming " + sb.id));
      }
    } else {
      return state_refusal();
    }
  } else if (op == "extend") {
    auto ext = extend(sb, clock_->now(), req.at("seconds").get<int64_t>());
    if (!ext) return error_reply(ext.error());
    st = store_->set_expiry(sb.id, ext->expires_at);
    if (st) event(sb.id, "extended", {{"expires_at", ext->expires_at}, {"capped", ext->capped}});
    if (st) {
      auto fresh = store_->get(sb.id);
      return Json{{"ok", true}, {"sandbox", describe(**fresh)}, {"capped", ext->capped}};
    }
  } else if (op == "destroy") {
    if (sb.locked) return locked_refusal();
    if (sb.state == State::kDestroyed) return state_refusal();
    st = do_destroy(sb, "km destroy");
  }
  if (!st) return error_reply(st.error());
  auto fresh = store_->get(sb.id);
  return Json{{"ok", true}, {"sandbox", fresh && *fresh ? describe(**fresh) : Json()}};
}

void Service::supervise_enforcer(const std::string& id) {
  auto restarted = launcher_->ensure_enforcer(id);
  if (!restarted) {
    log_.log(log::Level::kError, "cannot restart the enforcer; the sandbox has no egress", {{"error", restarted.error().to_string()}}, id);
    event(id, "enforcer-down", {{"reason", restarted.error().to_string()}});
  } else if (*restarted) {
    log_.log(log::Level::kWarn, "enforcer was gone; restarted", {}, id);
    event(id, "enforcer-restarted", Json::object());
  }
}

void Service::tick() {
  auto all = store_->list();
  if (!all) return;
  int64_t now = clock_->now();
  for (const auto& s : *all) {
    if (s.state == State::kRunning || s.state == State::kPaused) {
      std::lock_guard<std::mutex> g(lock_for(s.id));
      auto fresh = store_->get(s.id);
      if (fresh && *fresh && ((*fresh)->state == State::kRunning || (*fresh)->state == State::kPaused)) supervise_enforcer(s.id);
    }
  }
  check_budgets(*all, now);
  for (const auto& s : *all) {
    int sessions;
    {
      std::lock_guard<std::mutex> g(sessions_mu_);
      sessions = sessions_[s.id];
    }
    for (Due d : due(s, now, sessions)) {
      std::lock_guard<std::mutex> g(lock_for(s.id));
      switch (d) {
        case Due::kTtlWarning:
          event(s.id, "ttl-warning", {{"expires_at", s.expires_at}});
          (void)store_->set_warned(s.id, true, s.idle_warned);
          break;
        case Due::kIdleWarning:
          event(s.id, "idle-warning", {{"idle_since", s.last_activity}});
          (void)store_->set_warned(s.id, s.ttl_warned, true);
          break;
        case Due::kTtlExpired:
        case Due::kIdleExpired: {
          bool ttl = d == Due::kTtlExpired;
          std::string why = ttl ? "ttl expired" : "idle for " + format_duration({s.idle_timeout});
          if (s.locked) {
            // Locked: the expiry is skipped and recorded; TTL is cleared, idle re-armed.
            event(s.id, "expiry-skipped", {{"reason", why + "; sandbox is locked"}});
            if (ttl) {
              (void)store_->set_expiry(s.id, 0);
            } else {
              (void)store_->touch(s.id, now);
            }
            break;
          }
          Status st = ok();
          if (s.teardown_policy == "destroy") {
            st = do_destroy(s, why);
          } else if (s.teardown_policy == "stop") {
            if (s.state != State::kStopped) st = do_stop(s, why);
            if (ttl) (void)store_->set_expiry(s.id, 0);
          } else {  // retain: record it and re-arm
            event(s.id, "expired-retained", {{"reason", why}});
            if (ttl) (void)store_->set_expiry(s.id, 0);
            else (void)store_->touch(s.id, now);
          }
          if (!st) log_.error("teardown failed", {{"error", st.error().to_string()}});
          break;
        }
      }
    }
  }
}

Status Service::reconcile() {
  auto all = store_->list(/*include_destroyed=*/true);
  if (!all) return fail(all.error());
  std::set<std::string> live;
  for (const auto& s : *all) {
    switch (s.state) {
      case State::kStarting:
        // kmd died while creating it: undo (keeping its trail).
        (void)launcher_->stop(s.id);
        export_trail(s.id);
        (void)launcher_->destroy(s.id);
        (void)store_->transition(s.id, {State::kStarting}, State::kFailed, "kmd stopped while the sandbox was being created");
        event(s.id, "failed", {{"reason", "interrupted creation undone at kmd start"}});
        live.insert(s.id);
        break;
      case State::kDestroying:
        (void)launcher_->stop(s.id);
        export_trail(s.id);
        (void)launcher_->destroy(s.id);
        (void)store_->transition(s.id, {State::kDestroying}, State::kDestroyed, s.reason);
        event(s.id, "destroyed", {{"reason", "interrupted destroy finished at kmd start"}});
        trails_->close(s.id);
        break;
      case State::kRunning:
      case State::kPaused: {
        sandbox::Started st{static_cast<pid_t>(s.pid), static_cast<uint64_t>(s.pid_start)};
        if (!launcher_->alive(st)) {
          (void)launcher_->stop(s.id);
          (void)store_->transition(s.id, {State::kRunning, State::kPaused}, State::kFailed, "the sandbox's init exited while kmd was down");
          event(s.id, "failed", {{"reason", "init gone at kmd start"}});
        } else {
          // Its enforcer's audit lines waited in the pipe while kmd was down.
          if (::access(launcher_->enforcer_audit_fifo(s.id).c_str(), F_OK) == 0) {
            if (Status read = trails_->read_enforcer(s.id, launcher_->enforcer_audit_fifo(s.id)); !read) {
              log_.log(log::Level::kError, "cannot read the enforcer's audit pipe", {{"error", read.error().to_string()}}, s.id);
            }
          }
          supervise_enforcer(s.id);
          // Its commands keep being recorded (the pinned program never stopped; this kmd
          // needs to know whose they are).
          auto v2 = sys::SandboxCgroup::of(launcher_->cgroups(), s.id).v2_path();
          if (auto cgid = bpf::cgroup_id(v2); cgid && exec_audit_) (void)watch_commands(s.id, *cgid, uid_base_of(s.slot));
          // TLS observation was not pinned: it starts again (the sandbox maps the same copies
          // unless the host's library changed while kmd was down).
          // (The listing has no profile text: the full row has.)
          auto full = store_->get(s.id);
          auto m = full && *full ? stored_model(**full) : Result<profile::Model>(fail(ErrorCode::kNotFound, "sandbox vanished"));
          if (m && m->tls_capture.enabled) {
            sandbox::Spec ignored;
            auto cgid = bpf::cgroup_id(v2);
            Status again = cgid ? prepare_tls(s, *m, ignored, static_cast<pid_t>(s.pid)) : Status(fail(cgid.error()));
            if (again) again = tls_->watch(s.id, *cgid);
            if (!again) {
              log_.log(log::Level::kError, "cannot observe TLS again after the restart", {{"error", again.error().to_string()}}, s.id);
              event(s.id, "tls-unavailable", {{"reason", again.error().to_string()}});
            }
          }
        }
        live.insert(s.id);
        break;
      }
      case State::kStopped:
      case State::kFailed:
        (void)launcher_->stop(s.id);  // no runtime state may outlive the process
        live.insert(s.id);
        break;
      case State::kDestroyed:
        break;
    }
  }
  // Resources of sandboxes the store does not know (or knows as destroyed): remove.
  std::set<std::string> seen;
  for (const auto& id : sys::list_sandbox_cgroups(launcher_->cgroups())) seen.insert(id);
  for (const auto& id : list_dir(config_.runtime_dir + "/sandboxes")) seen.insert(id);
  for (const auto& id : list_dir(config_.state_dir + "/sandboxes")) seen.insert(id);
  // Per-sandbox pins of kernel enforcement (the exec audit's pins are files named exec_*).
  // (The kernel's own maps.debug and progs.debug are not sandboxes: IDs have no dots.)
  for (const auto& id : list_dir(config_.runtime_dir + "/bpf")) {
    if (id.rfind("exec_", 0) != 0 && id.find('.') == std::string::npos) seen.insert(id);
  }
  for (const auto& id : seen) {
    if (live.count(id)) continue;
    log_.warn("removing an orphaned sandbox", {{"id", id}});
    (void)launcher_->destroy(id);
    if (auto known = store_->get(id); known && !*known) (void)trails_->forget(id);
  }
  // Private library copies of TLS observation that no running sandbox maps any more.
  tls_->collect_copies();
  return ok();
}

// --- Budgets: the spend ledger, compute spend, warnings and ceilings (see budget.h).

namespace {
constexpr const char* kComputeExhausted = "compute budget exhausted";
constexpr const char* kLedgerFile = "spend.db";
}  // namespace

std::string Service::ledger_dir(const std::string& id) const { return sandbox::sandbox_dir(layout_, id) + "/ledger"; }
std::string Service::ledger_path(const std::string& id) const { return ledger_dir(id) + "/" + kLedgerFile; }

int64_t Service::compute_rate(const profile::Model& m) const {
  if (m.compute_rate_micros_per_hour) return *m.compute_rate_micros_per_hour;
  return prices_.compute_rate_micros_per_hour(m.substrate, m.cpus);
}

Status Service::prepare_ledger(const store::Sandbox& s, const profile::Model& m, std::optional<int64_t> ai,
                               std::optional<int64_t> compute) {
  std::string sdir = sandbox::sandbox_dir(layout_, s.id), dir = ledger_dir(s.id);
  auto made = [&]() -> Status {
    if (::mkdir(sdir.c_str(), 0711) != 0 && errno != EEXIST) return fail(Error::from_errno("mkdir " + sdir));
    // The enforcer (unprivileged) writes the ledger, and SQLite's -wal and -shm beside it.
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return fail(Error::from_errno("mkdir " + dir));
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return fail(ErrorCode::kFailedPrecondition, dir + " is not a directory");
    uint32_t uid = enforcer_uid(s.slot);
    if (::chown(dir.c_str(), uid, uid) != 0) return fail(Error::from_errno("chown " + dir));
    // A ledger made before enforcers had uids of their own changes hands with its directory.
    for (const char* f : {"", "-wal", "-shm"}) (void)::lchown((ledger_path(s.id) + f).c_str(), uid, uid);
    KM_ASSIGN_OR_RETURN(auto ledger, store::SpendLedger::open_as(ledger_path(s.id), uid, uid));
    return ledger->init_limits(initial_limits(m, ai, compute, compute_rate(m)));
  };
  if (Status st = made(); !st) return fail(std::move(st).error().wrap("preparing the spend ledger"));
  return ok();
}

std::shared_ptr<store::SpendLedger> Service::ledger_for(const std::string& id) {
  std::lock_guard<std::mutex> g(ledgers_mu_);
  if (auto it = ledgers_.find(id); it != ledgers_.end()) return it->second;
  std::string live = ledger_path(id);
  std::string kept = config_.state_dir + "/ledgers/" + id + "/" + kLedgerFile;
  bool is_live = ::access(live.c_str(), F_OK) == 0;
  if (!is_live && ::access(kept.c_str(), F_OK) != 0) return nullptr;
  // Opened as the ledger's owner (its sandbox's enforcer uid), whatever kmd's own uid.
  std::string path = is_live ? live : kept;
  struct stat dst {};
  std::string dir = path.substr(0, path.rfind('/'));
  if (::lstat(dir.c_str(), &dst) != 0 || !S_ISDIR(dst.st_mode)) return nullptr;
  auto l = store::SpendLedger::open_as(path, dst.st_uid, dst.st_gid);
  if (!l) {
    if (ledger_errors_.insert(id).second) {
      log_.log(log::Level::kError, "cannot open the spend ledger; budgets are not enforced", {{"error", l.error().to_string()}}, id);
    }
    return nullptr;
  }
  std::shared_ptr<store::SpendLedger> shared(std::move(*l));
  if (is_live) ledgers_[id] = shared;  // a kept ledger is read now and then; not cached
  return shared;
}

void Service::archive_ledger(const std::string& id) {
  {
    std::lock_guard<std::mutex> g(ledgers_mu_);
    ledgers_.erase(id);
  }
  // The sandbox's directory goes with it; its ledger is kept, for `km budget show` afterwards.
  std::string from = ledger_dir(id), kept = config_.state_dir + "/ledgers";
  if (::access(from.c_str(), F_OK) != 0) return;
  ::mkdir(kept.c_str(), 0711);
  if (::rename(from.c_str(), (kept + "/" + id).c_str()) != 0) {
    log_.log(log::Level::kWarn, "cannot keep the spend ledger", {{"error", Error::from_errno("rename " + from).to_string()}}, id);
  }
}

Result<Json> Service::budget_of(store::SpendLedger& ledger, const store::Sandbox& s) {
  BudgetView v;
  KM_ASSIGN_OR_RETURN(v.limits, ledger.limits());
  KM_ASSIGN_OR_RETURN(v.ai_spent, ledger.ai_spent());
  KM_ASSIGN_OR_RETURN(v.models, ledger.models());
  v.running_seconds = running_seconds(s, clock_->now());
  return budget_json(v);
}

void Service::check_budgets(const std::vector<store::Sandbox>& all, int64_t now) {
  std::set<std::string> live;
  for (const auto& listed : all) {
    if (listed.state != State::kRunning && listed.state != State::kPaused) continue;
    live.insert(listed.id);
    auto ledger = ledger_for(listed.id);
    if (!ledger) continue;
    std::lock_guard<std::mutex> g(lock_for(listed.id));
    auto fresh = store_->get(listed.id);
    if (!fresh || !*fresh) continue;
    const store::Sandbox& s = **fresh;
    if (s.state != State::kRunning && s.state != State::kPaused) continue;
    auto limits = ledger->limits();
    auto ai = limits ? ledger->ai_spent() : Result<int64_t>(fail(limits.error()));
    if (!ai) {
      log_.log(log::Level::kError, "cannot read the spend ledger", {{"error", ai.error().to_string()}}, s.id);
      continue;
    }
    // The spend now, not as it was at the last look: a ceiling is caught within one tick.
    int64_t compute = compute_spent_micros(limits->compute_rate_micros_per_hour, running_seconds(s, now));
    for (const BudgetNotice& n : budget_reached(*limits, *ai, compute)) {
      bool exhausted = n.kind == Notice::kExhausted;
      bool freeze = exhausted && n.pool == "compute" && s.state == State::kRunning && !s.locked;
      auto claimed = exhausted ? ledger->claim_exhausted(n.pool) : ledger->claim_warning(n.pool);
      if (claimed && *claimed) {
        Json d{{"pool", n.pool}, {"spent", n.spent}, {"limit", n.limit}, {"spent_usd", usd_decimal(n.spent)},
               {"limit_usd", usd_decimal(n.limit)}};
        if (!exhausted) d["threshold"] = limits->warning_threshold;
        if (exhausted && n.pool == "compute") d["action"] = s.locked ? "none (the sandbox is locked)" : "frozen";
        if (exhausted && n.pool == "ai") d["action"] = "AI requests refused";
        event(s.id, exhausted ? "budget-exhausted" : "budget-warning", d);
      }
      // Not gated by the claim: a freeze that failed is tried again at the next tick.
      if (freeze) {
        Status st = launcher_->freeze(s.id, true);
        auto moved = st ? store_->transition(s.id, {State::kRunning}, State::kPaused, kComputeExhausted) : Result<bool>(false);
        if (!st) log_.log(log::Level::kError, "cannot freeze at the compute ceiling", {{"error", st.error().to_string()}}, s.id);
        else if (moved && *moved) event(s.id, "paused", {{"reason", kComputeExhausted}});
      }
    }
  }
  std::lock_guard<std::mutex> g(ledgers_mu_);
  for (auto it = ledgers_.begin(); it != ledgers_.end();) it = live.count(it->first) ? std::next(it) : ledgers_.erase(it);
}

std::optional<Error> Service::compute_ceiling_refusal(const store::Sandbox& s) {
  if (s.locked || (s.state != State::kPaused && s.state != State::kStopped)) return std::nullopt;
  auto ledger = ledger_for(s.id);
  if (!ledger) return std::nullopt;
  auto l = ledger->limits();
  if (!l || !l->compute_micros) return std::nullopt;
  int64_t spent = compute_spent_micros(l->compute_rate_micros_per_hour, running_seconds(s, clock_->now()));
  if (spent < *l->compute_micros) return std::nullopt;
  return Error(ErrorCode::kFailedPrecondition, "sandbox " + s.id + " has spent its compute budget (" + format_usd(spent) + " of " +
                                                   format_usd(*l->compute_micros) + ")")
      .with_hint("km budget add " + s.id + " --compute USD");
}

Json Service::op_budget(const Json& req) {
  auto found = find(req);
  if (!found) return error_reply(found.error());
  std::string action = req.value("action", std::string("show"));
  if (action == "show") {
    auto ledger = ledger_for(found->id);
    if (!ledger) {
      return error_reply(Error(ErrorCode::kNotFound, "sandbox " + found->id + " has no spend ledger")
                             .with_hint(found->state == State::kDestroyed ? "it was destroyed and its ledger was not kept" : ""));
    }
    auto b = budget_of(*ledger, *found);
    size_t limit = static_cast<size_t>(std::clamp<int64_t>(req.value("limit", int64_t{20}), 0, 100000));
    auto calls = ledger->calls(limit);
    if (!b || !calls) return error_reply(!b ? b.error() : calls.error());
    (*b)["id"] = found->id;
    (*b)["calls"] = calls_json(*calls);
    return Json{{"ok", true}, {"budget", std::move(*b)}, {"sandbox", describe(*found)}};
  }
  if (action != "add") return error_reply(Error(ErrorCode::kInvalidArgument, "unknown budget action " + km::quoted(action)));
  int64_t ai = req.value("ai_micros", int64_t{0}), compute = req.value("compute_micros", int64_t{0});
  std::lock_guard<std::mutex> g(lock_for(found->id));
  auto got = store_->get(found->id);
  if (!got || !*got) return error_reply(Error(ErrorCode::kNotFound, "sandbox vanished"));
  store::Sandbox sb = **got;
  if (sb.state == State::kDestroyed || sb.state == State::kDestroying) {
    return error_reply(Error(ErrorCode::kFailedPrecondition, "sandbox " + sb.id + " is " + std::string(store::state_name(sb.state))));
  }
  auto ledger = ledger_for(sb.id);
  if (!ledger) {
    // A sandbox from before budgets: its ledger starts with its profile's limits.
    auto m = stored_model(sb);
    Status st = m ? prepare_ledger(sb, *m, std::nullopt, std::nullopt) : Status(fail(m.error()));
    if (!st) return error_reply(st.error());
    ledger = ledger_for(sb.id);
    if (!ledger) return error_reply(Error(ErrorCode::kInternal, "sandbox " + sb.id + " has no spend ledger"));
  }
  auto raised = ledger->raise_limits(ai, compute);
  if (!raised) return error_reply(raised.error());
  Json detail{{"epoch", raised->epoch}};
  if (ai > 0) detail["ai_added"] = ai, detail["ai_limit"] = *raised->ai_micros;
  if (compute > 0) detail["compute_added"] = compute, detail["compute_limit"] = *raised->compute_micros;
  event(sb.id, "budget-raised", detail);
  // Frozen at the compute ceiling and now under it: thawed, and running again in the record.
  bool resumed = false;
  int64_t now = clock_->now();
  if (sb.state == State::kPaused && sb.reason == kComputeExhausted &&
      (!raised->compute_micros ||
       compute_spent_micros(raised->compute_rate_micros_per_hour, running_seconds(sb, now)) < *raised->compute_micros)) {
    if (Status st = launcher_->freeze(sb.id, false); !st) return error_reply(std::move(st).error().wrap("thawing " + sb.id));
    auto moved = store_->transition(sb.id, {State::kPaused}, State::kRunning);
    if (moved && *moved) {
      event(sb.id, "resumed", {{"reason", "compute budget raised"}});
      resumed = true;
    }
    (void)store_->touch(sb.id, now);
  }
  auto fresh = store_->get(sb.id);
  if (!fresh || !*fresh) return error_reply(Error(ErrorCode::kNotFound, "sandbox vanished"));
  auto b = budget_of(*ledger, **fresh);
  if (!b) return error_reply(b.error());
  (*b)["id"] = sb.id;
  (*b)["resumed"] = resumed;
  return Json{{"ok", true}, {"budget", std::move(*b)}, {"sandbox", describe(**fresh)}};
}

}  // namespace km::daemon
