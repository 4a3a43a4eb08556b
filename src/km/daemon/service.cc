#include "km/daemon/service.h"

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
#include "km/base/strings.h"
#include "km/enforcer/config.h"
#include "km/profile/inherit.h"
#include "km/profile/model.h"
#include "km/sandbox/client.h"
#include "km/sandbox/plan.h"
#include "km/sandbox/protocol.h"
#include "km/sys/unix_socket.h"

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
// Enforcers run as nobody: they need no privilege once kmd has opened their sockets.
constexpr uint32_t kEnforcerUid = 65534;
}  // namespace

Result<std::unique_ptr<Service>> Service::create(const Config& config, std::shared_ptr<Clock> clock, log::Logger& log) {
  std::unique_ptr<Service> s(new Service(config, std::move(clock), log));
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
      s->exec_audit_ = std::move(*audit);
      s->exec_reader_ = std::thread([svc = s.get()] { svc->record_commands(); });
    } else {
      s->exec_audit_error_ = audit.error();
      log.log(log::Level::kError, "the exec audit is not available; sandboxes will be refused", {{"error", audit.error().to_string()}});
    }
    lc.on_cgroup = [svc = s.get()](const std::string& id, uint64_t cgroup_id, uint32_t uid_base) {
      return svc->watch_commands(id, cgroup_id, uid_base);
    };
  }
  lc.cgroup_name = config.cgroup_name;
  KM_ASSIGN_OR_RETURN(sandbox::Launcher l, sandbox::Launcher::create(lc));
  s->launcher_.emplace(std::move(l));
  KM_ASSIGN_OR_RETURN(s->store_, store::Store::open(config.state_dir + "/km.db"));
  return s;
}

Service::~Service() {
  stopping_ = true;
  if (exec_reader_.joinable()) exec_reader_.join();
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
    Json line{{"ts", log::utc_timestamp_now()}, {"sandbox", who.id}, {"kind", "exec"}, {"pid", e.pid}, {"ppid", e.ppid},
              {"uid", inside(e.uid)}, {"gid", inside(e.gid)}, {"filename", e.filename}, {"argv", e.argv}, {"comm", e.comm}, {"cwd", e.cwd}};
    if (e.truncated) line["truncated"] = true;
    std::string text = line.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
    std::string dir = sandbox::sandbox_dir(layout_, who.id) + "/audit";
    ::mkdir(dir.c_str(), 0700);
    UniqueFd fd(::open((dir + "/exec.jsonl").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd) (void)!::write(fd.get(), text.data(), text.size());
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
    if (op == "exec") return op_exec(req, fds, conn);
    if (op == "shell") return op_shell(req, fds, conn);
    if (op == "clone") return op_clone(req);
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
  return create_and_start(s, nullptr);
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

Result<store::Sandbox> Service::do_start(store::Sandbox s) {
  KM_ASSIGN_OR_RETURN(profile::Model m, stored_model(s));
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
    ec.pid_file = launcher_->runtime_dir(s.id) + "/enforcer.pid";
    ec.run_as_uid = kEnforcerUid;
    ec.run_as_gid = kEnforcerUid;
    ec.kernel = spec.net.enforcement != "proxy";
    enforcer_config = enforcer::to_json(ec);
  }
  KM_ASSIGN_OR_RETURN(sandbox::Started st, launcher_->start(spec, lim, a.uid_base, m.image, enforcer_config));
  KM_TRY(store_->set_process(s.id, st.pid, static_cast<int64_t>(st.start_time)));
  KM_ASSIGN_OR_RETURN(bool moved, store_->transition(s.id, {State::kStarting, State::kStopped}, State::kRunning));
  if (!moved) return fail(ErrorCode::kFailedPrecondition, "sandbox changed state while starting");
  (void)store_->touch(s.id, clock_->now());
  event(s.id, "started", {{"pid", st.pid}});
  KM_ASSIGN_OR_RETURN(auto fresh, store_->get(s.id));
  return *fresh;
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
  return Json{{"ok", true}, {"sandbox", d}, {"now", clock_->now()}};
}

namespace {

// The newest `limit` events of `kind` (all kinds if empty) in a JSON-lines file, oldest first.
// Reads at most the last 16 MiB.
std::vector<Json> tail_events(const std::string& path, const std::string& kind, size_t limit) {
  std::vector<Json> picked;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return picked;
  struct stat st {};
  ::fstat(fd.get(), &st);
  off_t size = st.st_size, from = std::max<off_t>(0, size - (off_t{16} << 20));
  std::string text(static_cast<size_t>(size - from), '\0');
  ssize_t n = ::pread(fd.get(), text.data(), text.size(), from);
  text.resize(n > 0 ? static_cast<size_t>(n) : 0);
  if (from > 0) text.erase(0, text.find('\n') + 1);  // a partial first line
  size_t end = text.size();
  while (end > 0 && picked.size() < limit) {
    size_t start = text.rfind('\n', end - 1);
    start = start == std::string::npos ? 0 : start + 1;
    Json e = Json::parse(text.substr(start, end - start), nullptr, false);
    if (e.is_object() && (kind.empty() || e.value("kind", std::string()) == kind)) picked.push_back(std::move(e));
    end = start > 0 ? start - 1 : 0;
  }
  std::reverse(picked.begin(), picked.end());
  return picked;
}

}  // namespace

Json Service::op_audit(const Json& req) {
  auto s = find(req);
  if (!s) return error_reply(s.error());
  size_t limit = static_cast<size_t>(std::clamp<int64_t>(req.value("limit", int64_t{100}), 1, 100000));
  std::string kind = req.value("kind", std::string());
  std::string dir = sandbox::sandbox_dir(layout_, s->id) + "/audit";
  // Egress verdicts (the enforcer) and commands (the exec audit), merged by time.
  std::vector<Json> all;
  if (kind != "exec") {
    auto e = tail_events(dir + "/egress.jsonl", kind, limit);
    all.insert(all.end(), std::make_move_iterator(e.begin()), std::make_move_iterator(e.end()));
  }
  if (kind.empty() || kind == "exec") {
    auto e = tail_events(dir + "/exec.jsonl", kind, limit);
    all.insert(all.end(), std::make_move_iterator(e.begin()), std::make_move_iterator(e.end()));
  }
  std::stable_sort(all.begin(), all.end(), [](const Json& a, const Json& b) {
    return a.value("ts", std::string()) < b.value("ts", std::string());
  });
  if (all.size() > limit) all.erase(all.begin(), all.end() - static_cast<long>(limit));
  return Json{{"ok", true}, {"events", all}};
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
// and the client's terminal (stdin, stdout) and records everything to a transcript in the
// sandbox's state directory. The client's terminal never enters the sandbox.
Json Service::op_shell(const Json& req, std::vector<UniqueFd>& fds, int conn) {
  auto s = find(req);
  if (!s) return error_reply(s.error());
  if (s->state != State::kRunning) {
    return error_reply(Error(ErrorCode::kFailedPrecondition, "sandbox " + s->id + " is " + std::string(store::state_name(s->state))));
  }
  if (fds.size() != 2) return error_reply(Error(ErrorCode::kInvalidArgument, "shell needs the terminal's input and output"));
  auto ctl = launcher_->connect(s->id);
  if (!ctl) return error_reply(ctl.error().wrap("reaching sandbox " + s->id));
  Json sreq{{"op", "shell"}, {"cols", req.value("cols", 80)}, {"rows", req.value("rows", 24)}, {"root", req.value("root", false)},
            {"term", req.value("term", std::string("xterm-256color"))}};
  if (auto st = sys::send_message(ctl->get(), sreq.dump()); !st) return error_reply(st.error());
  auto started = sys::recv_message(ctl->get());
  if (!started) return error_reply(started.error());
  Json sj = Json::parse(started->data, nullptr, false);
  if (!sj.is_object() || sj.contains("error") || started->fds.size() != 1) {
    return error_reply(Error(ErrorCode::kFailedPrecondition, sj.is_object() && sj.contains("error") ? sj["error"].get<std::string>() : "no terminal from the sandbox"));
  }
  UniqueFd master = std::move(started->fds[0]);
  std::string dir = sandbox::sandbox_dir(layout_, s->id) + "/sessions";
  ::mkdir(dir.c_str(), 0700);
  int64_t t0 = clock_->now();
  std::string transcript = dir + "/" + std::to_string(t0) + "-" + std::to_string(sj.value("pid", 0)) + ".log";
  UniqueFd rec(::open(transcript.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  event(s->id, "shell-started", {{"transcript", transcript}});
  SessionGuard session(*this, s->id);  // a sandbox with an open session is never idle
  (void)sys::send_message(conn, Json{{"started", sj.value("pid", 0)}}.dump());
  int in = fds[0].get(), out = fds[1].get();
  char buf[16384];
  Json result;
  int64_t input_bytes = 0, output_bytes = 0;
  bool input_open = true;
  for (;;) {
    pollfd p[4] = {{ctl->get(), POLLIN, 0}, {conn, POLLIN, 0}, {master.get(), POLLIN, 0}, {input_open ? in : -1, POLLIN, 0}};
    if (::poll(p, 4, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::read(master.get(), buf, sizeof buf);
      if (n > 0) {
        output_bytes += n;
        if (::write(out, buf, static_cast<size_t>(n)) < 0) {
        }
        if (rec && ::write(rec.get(), buf, static_cast<size_t>(n)) < 0) {
        }
      }
    }
    if (p[3].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::read(in, buf, sizeof buf);
      if (n <= 0) {
        input_open = false;
      } else {
        input_bytes += n;
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
        if (rec && ::write(rec.get(), buf, static_cast<size_t>(n)) < 0) break;
      }
      result = st ? Json{{"ok", true}, {"exit", st->code}, {"signal", st->signal}} : error_reply(st.error());
      break;
    }
  }
  event(s->id, "shell-ended", {{"transcript", transcript}, {"input_bytes", input_bytes}, {"output_bytes", output_bytes},
                               {"exit", result.value("exit", -1)}});
  (void)store_->touch(s->id, clock_->now());
  return result;
}

Status Service::do_stop(const store::Sandbox& s, const std::string& reason) {
  KM_TRY(launcher_->stop(s.id));
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
  KM_TRY(launcher_->destroy(s.id));
  unwatch_commands(s.id);
  (void)store_->transition(s.id, {State::kDestroying}, State::kDestroyed, reason);
  event(s.id, "destroyed", {{"reason", reason}});
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
    if (sb.state == State::kPaused) {
      st = launcher_->freeze(sb.id, false);
      if (st && *store_->transition(sb.id, {State::kPaused}, State::kRunning)) event(sb.id, "resumed");
      (void)store_->touch(sb.id, clock_->now());
    } else if (sb.state == State::kStopped) {
      auto r = do_start(sb);
      if (!r) {
        (void)launcher_->stop(sb.id);
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
        // kmd died while creating it: undo.
        (void)launcher_->destroy(s.id);
        (void)store_->transition(s.id, {State::kStarting}, State::kFailed, "kmd stopped while the sandbox was being created");
        event(s.id, "failed", {{"reason", "interrupted creation undone at kmd start"}});
        live.insert(s.id);
        break;
      case State::kDestroying:
        (void)launcher_->destroy(s.id);
        (void)store_->transition(s.id, {State::kDestroying}, State::kDestroyed, s.reason);
        event(s.id, "destroyed", {{"reason", "interrupted destroy finished at kmd start"}});
        break;
      case State::kRunning:
      case State::kPaused: {
        sandbox::Started st{static_cast<pid_t>(s.pid), static_cast<uint64_t>(s.pid_start)};
        if (!launcher_->alive(st)) {
          (void)launcher_->stop(s.id);
          (void)store_->transition(s.id, {State::kRunning, State::kPaused}, State::kFailed, "the sandbox's init exited while kmd was down");
          event(s.id, "failed", {{"reason", "init gone at kmd start"}});
        } else {
          supervise_enforcer(s.id);
          // Its commands keep being recorded (the pinned program never stopped; this kmd
          // needs to know whose they are).
          auto v2 = sys::SandboxCgroup::of(launcher_->cgroups(), s.id).v2_path();
          if (auto cgid = bpf::cgroup_id(v2); cgid && exec_audit_) (void)watch_commands(s.id, *cgid, uid_base_of(s.slot));
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
  for (const auto& id : list_dir(config_.runtime_dir + "/bpf")) {
    if (id.rfind("exec_", 0) != 0) seen.insert(id);
  }
  for (const auto& id : seen) {
    if (live.count(id)) continue;
    log_.warn("removing an orphaned sandbox", {{"id", id}});
    (void)launcher_->destroy(id);
  }
  return ok();
}

}  // namespace km::daemon
