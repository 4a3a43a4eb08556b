#include "km/daemon/tls_observer.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>

#include "km/base/unique_fd.h"

namespace km::daemon {

using Json = nlohmann::json;

namespace {

// Executables remembered as classified, per sandbox (a build loop makes new ones without end).
constexpr size_t kCheckedPerSandbox = 16384;

// Wall-clock milliseconds of a CLOCK_BOOTTIME timestamp (the kernel's records carry those).
int64_t wall_ms_of_boot_ns(uint64_t boot_ns) {
  timespec real{}, boot{};
  ::clock_gettime(CLOCK_REALTIME, &real);
  ::clock_gettime(CLOCK_BOOTTIME, &boot);
  int64_t now_boot_ns = int64_t{boot.tv_sec} * 1000000000 + boot.tv_nsec;
  int64_t now_real_ms = int64_t{real.tv_sec} * 1000 + real.tv_nsec / 1000000;
  if (boot_ns == 0 || static_cast<int64_t>(boot_ns) > now_boot_ns) return now_real_ms;
  return now_real_ms - (now_boot_ns - static_cast<int64_t>(boot_ns)) / 1000000;
}

std::string real_path(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? std::string(buf) : p;
}

bool contains(const std::vector<bpf::FileId>& ids, const bpf::FileId& id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// `path` as the processes of the sandbox whose init is `init` see it: resolved inside their
// root (symlinks in the sandbox's tree cannot lead out of it).
Result<bpf::FileId> file_id_in_root(pid_t init, const std::string& path) {
  UniqueFd root(::open(("/proc/" + std::to_string(init) + "/root").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return fail(Error::from_errno("opening the sandbox's root"));
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  UniqueFd f(static_cast<int>(::syscall(SYS_openat2, root.get(), path.c_str(), &how, sizeof how)));
  if (!f) return fail(Error::from_errno("opening " + path + " in the sandbox"));
  struct stat st {};
  if (::fstat(f.get(), &st) != 0) return fail(Error::from_errno("stat " + path + " in the sandbox"));
  return bpf::FileId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

// The file in `dir` with identity `id` (a copy kmd made earlier), if it is still there.
std::optional<std::string> copy_with_id(const std::string& dir, const bpf::FileId& id) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    auto f = bpf::file_id(entry.path().string());
    if (f && *f == id) return entry.path().string();
  }
  return std::nullopt;
}

}  // namespace

TlsObserver::TlsObserver(TlsObserverOptions o, log::Logger& log) : o_(std::move(o)), log_(log) {}

TlsObserver::~TlsObserver() {
  std::lock_guard<std::mutex> g(life_mu_);
  stop_threads();
  capture_.reset();
}

bool TlsObserver::loaded() {
  std::lock_guard<std::mutex> g(life_mu_);
  return capture_ != nullptr;
}

bool TlsObserver::observed(const std::string& id) {
  std::lock_guard<std::mutex> g(mu_);
  return sandboxes_.count(id) != 0;
}

Result<std::vector<sandbox::FileBind>> TlsObserver::prepare(const std::string& id, const profile::Model::TlsCapture& settings,
                                                            std::optional<pid_t> running_init) {
  std::lock_guard<std::mutex> life(life_mu_);
  KM_ASSIGN_OR_RETURN(bpf::TlsTargets targets, bpf::tls_targets_for_profile(settings.libraries));
  std::vector<sandbox::FileBind> binds;
  std::vector<std::string> copies, libraries;
  std::vector<bpf::FileId> ids;
  for (const std::string& object : targets.objects) {
    std::string original = real_path(object);
    KM_ASSIGN_OR_RETURN(bpf::FileId original_id, bpf::file_id(original));
    auto copy = bpf::private_library_copy(original, o_.copies_dir);
    if (!copy) return fail(std::move(copy).error().wrap("making the sandbox's private copy of " + original));
    KM_ASSIGN_OR_RETURN(bpf::FileId copy_id, bpf::file_id(*copy));
    if (running_init) {
      // The sandbox maps the copy it was started with, which is this one unless the host's
      // library changed while kmd was down.
      auto mapped = file_id_in_root(*running_init, object);
      if (!mapped) return fail(std::move(mapped).error().wrap("finding the copy of " + original + " the sandbox maps"));
      if (!(*mapped == copy_id)) {
        auto earlier = copy_with_id(o_.copies_dir, *mapped);
        if (!earlier) {
          return fail(ErrorCode::kFailedPrecondition,
                      "the sandbox maps a copy of " + original + " that is no longer in " + o_.copies_dir);
        }
        copy = std::move(*earlier);
        copy_id = *mapped;
      }
    }
    binds.push_back(sandbox::FileBind{*copy, original});
    copies.push_back(*copy);
    libraries.push_back(original);
    ids.push_back(original_id);
    ids.push_back(copy_id);
  }
  if (!copies.empty()) {
    if (!capture_) {
      bpf::TlsCapture::Options co;
      co.libraries = copies;
      auto opened = bpf::TlsCapture::open(co);
      if (!opened) return fail(std::move(opened).error().wrap("loading the TLS capture"));
      capture_ = std::move(*opened);
      {
        std::lock_guard<std::mutex> g(mu_);
        reported_lost_ = 0;  // a new capture counts its losses from zero
      }
      log_.log(log::Level::kInfo, "TLS capture loaded", {{"libraries", copies}});
    } else {
      for (const std::string& c : copies) KM_TRY(capture_->attach(c));  // a no-op when attached
    }
  }
  if (!poller_.joinable() && !classifier_.joinable()) stopping_ = false;
  if (capture_ && !poller_.joinable()) poller_ = std::thread([this] { poll_loop(); });
  if (!classifier_.joinable()) classifier_ = std::thread([this] { classify_loop(); });
  std::lock_guard<std::mutex> g(mu_);
  auto [it, fresh] = sandboxes_.try_emplace(id);
  Sandbox& s = it->second;
  if (fresh) {
    s.id = id;
    s.index = next_index_++;
    by_index_[s.index] = id;
    s.conns = TlsConnections(o_.events);
  }
  s.payloads = settings.capture_payloads;
  s.libraries = libraries;
  s.observed_ids = ids;
  s.copy_ids.clear();
  for (const std::string& c : copies) {
    if (auto cid = bpf::file_id(c)) s.copy_ids.push_back(*cid);
  }
  s.unsupported = targets.unsupported;
  return binds;
}

void TlsObserver::collect_copies() {
  std::vector<bpf::FileId> used;
  {
    std::lock_guard<std::mutex> g(mu_);
    for (const auto& [id, s] : sandboxes_) used.insert(used.end(), s.copy_ids.begin(), s.copy_ids.end());
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(o_.copies_dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    auto f = bpf::file_id(entry.path().string());
    if (!f || contains(used, *f)) continue;
    // Unused now; a copy made for a sandbox being created meanwhile is made again by its
    // prepare() (private_library_copy makes what is missing), under life_mu_ like this.
    std::lock_guard<std::mutex> life(life_mu_);
    {
      std::lock_guard<std::mutex> g(mu_);
      bool now_used = false;
      for (const auto& [id, s] : sandboxes_) now_used = now_used || contains(s.copy_ids, *f);
      if (now_used) continue;
    }
    if (::unlink(entry.path().c_str()) == 0) {
      log_.log(log::Level::kInfo, "removed a private library copy no sandbox maps", {{"path", entry.path().string()}});
    }
  }
}

Status TlsObserver::watch(const std::string& id, uint64_t cgroup_id) {
  std::lock_guard<std::mutex> life(life_mu_);
  uint32_t index = 0;
  bool payloads = false;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = sandboxes_.find(id);
    if (it == sandboxes_.end()) return ok();
    index = it->second.index;
    payloads = it->second.payloads;
    it->second.cgroup = cgroup_id;
  }
  if (capture_) {
    if (Status st = capture_->watch(cgroup_id, index, payloads); !st) {
      return fail(std::move(st).error().wrap("TLS observation of the sandbox's cgroup"));
    }
  }
  return ok();
}

void TlsObserver::unwatch(const std::string& id) {
  std::lock_guard<std::mutex> life(life_mu_);
  std::optional<uint64_t> cgroup;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = sandboxes_.find(id);
    if (it == sandboxes_.end()) return;
    cgroup = it->second.cgroup;
  }
  std::vector<std::pair<std::string, audit::Event>> out;
  if (capture_) {
    // What the sandbox's processes did before they were stopped is in the ring buffer: read
    // it before the sandbox's connections are summarised.
    std::lock_guard<std::mutex> p(poll_mu_);
    auto n = capture_->poll(0, [&](const bpf::TlsRecord& r) { deliver(r, out); });
    if (!n) log_.log(log::Level::kWarn, "reading the TLS capture failed", {{"error", n.error().to_string()}}, id);
    if (cgroup) (void)capture_->unwatch(*cgroup);
  }
  bool last = false;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = sandboxes_.find(id);
    std::vector<audit::Event> summaries;
    it->second.conns.finish(audit::now_ms(), "stopped", summaries);
    for (auto& e : summaries) out.emplace_back(id, std::move(e));
    by_index_.erase(it->second.index);
    sandboxes_.erase(it);
    std::erase_if(queue_, [&id](const Exec& e) { return e.id == id; });
    last = sandboxes_.empty();
  }
  for (auto& [who, e] : out) o_.record(who, std::move(e));
  if (last) {
    // No sandbox is observed: nothing stays loaded.
    stop_threads();
    capture_.reset();
    log_.log(log::Level::kInfo, "TLS capture unloaded (no sandbox observes TLS)", {});
  }
}

void TlsObserver::stop_threads() {
  stopping_ = true;
  queue_cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  if (classifier_.joinable()) classifier_.join();
  std::lock_guard<std::mutex> g(mu_);
  queue_.clear();
}

void TlsObserver::deliver(const bpf::TlsRecord& r, std::vector<std::pair<std::string, audit::Event>>& out) {
  std::lock_guard<std::mutex> g(mu_);
  auto idx = by_index_.find(r.sandbox);
  if (idx == by_index_.end()) return;
  auto it = sandboxes_.find(idx->second);
  if (it == sandboxes_.end()) return;
  std::vector<audit::Event> events;
  it->second.conns.feed(r, wall_ms_of_boot_ns(r.boot_ns), events);
  for (auto& e : events) {
    if (audit::kind_of(e.type, e.detail) == "tls") ++it->second.heads;
    out.emplace_back(it->first, std::move(e));
  }
}

void TlsObserver::poll_loop() {
  auto last_expiry = std::chrono::steady_clock::now();
  while (!stopping_) {
    std::vector<std::pair<std::string, audit::Event>> out;
    uint64_t lost = 0;
    {
      std::lock_guard<std::mutex> p(poll_mu_);
      auto n = capture_->poll(200, [&](const bpf::TlsRecord& r) { deliver(r, out); });
      if (!n) log_.log(log::Level::kError, "reading the TLS capture failed", {{"error", n.error().to_string()}});
      lost = capture_->lost();
    }
    auto now = std::chrono::steady_clock::now();
    bool expire = now - last_expiry >= std::chrono::seconds(1);
    {
      std::lock_guard<std::mutex> g(mu_);
      if (expire) {
        last_expiry = now;
        int64_t wall = audit::now_ms();
        for (auto& [id, s] : sandboxes_) {
          std::vector<audit::Event> events;
          s.conns.expire(wall, events);
          for (auto& e : events) out.emplace_back(id, std::move(e));
        }
      }
      if (lost > reported_lost_) {
        // The kernel's count is host-wide: every sandbox observed now may miss records.
        for (const auto& [id, s] : sandboxes_) {
          out.emplace_back(id, audit::Event{audit::now_ms(), "kmd", "audit",
                                            Json{{"kind", "tls-lost"}, {"count", lost - reported_lost_}, {"scope", "host"},
                                                 {"reason", "the kernel could not queue TLS records for kmd (host-wide count)"}}});
        }
        log_.log(log::Level::kWarn, "TLS records were lost (the reader fell behind)", {{"lost", lost - reported_lost_}});
        reported_lost_ = lost;
      }
    }
    for (auto& [id, e] : out) o_.record(id, std::move(e));
  }
}

void TlsObserver::exec_seen(const std::string& id, uint32_t pid, const std::string& filename, const std::string& cwd) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!sandboxes_.count(id)) return;
    if (queue_.size() >= o_.classify_queue) {
      ++unclassified_;
      return;
    }
    queue_.push_back(Exec{id, pid, filename, cwd});
  }
  queue_cv_.notify_one();
}

void TlsObserver::classify_loop() {
  for (;;) {
    Exec e;
    {
      std::unique_lock<std::mutex> g(mu_);
      queue_cv_.wait(g, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      e = std::move(queue_.front());
      queue_.pop_front();
    }
    classify(e);
  }
}

void TlsObserver::classify(const Exec& e) {
  // The executable as the sandbox sees it: resolved in its root (symlinks cannot lead out).
  // Through its init, or (while the sandbox is being set up, before kmd knows the init) the
  // process that ran it: both have the sandbox's root.
  auto init = o_.sandbox_init ? o_.sandbox_init(e.id) : std::nullopt;
  if (!init) init = static_cast<pid_t>(e.pid);
  if (e.filename.empty()) return;
  std::string path = e.filename;
  if (path[0] != '/') path = (e.cwd.empty() ? std::string("/") : e.cwd) + "/" + path;
  UniqueFd root(::open(("/proc/" + std::to_string(*init) + "/root").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return;
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  UniqueFd exe(static_cast<int>(::syscall(SYS_openat2, root.get(), path.c_str(), &how, sizeof how)));
  if (!exe) return;  // gone already: nothing to say about it
  struct stat st {};
  if (::fstat(exe.get(), &st) != 0 || !S_ISREG(st.st_mode)) return;
  ExeIdentity ident{st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec};
  std::optional<bpf::TlsStackReport> report;
  std::vector<bpf::FileId> observed_ids;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = sandboxes_.find(e.id);
    if (it == sandboxes_.end()) return;
    auto& checked = it->second.checked;
    if (checked.size() >= kCheckedPerSandbox) checked.clear();  // bounded: at worst, a report again
    if (!checked.insert(ident).second) return;
    observed_ids = it->second.observed_ids;
    if (auto c = cache_.find(ident); c != cache_.end()) report = c->second;
  }
  if (!report) {
    // Its libraries as the sandbox's loader finds them: in the sandbox's root, never kmd's.
    auto r = bpf::inspect_executable_tls("/proc/self/fd/" + std::to_string(exe.get()), root.get(), path);
    if (!r) return;  // not an ELF program (a script's interpreter is exec'd too, and classified)
    report = std::move(*r);
    std::lock_guard<std::mutex> g(mu_);
    if (cache_.size() >= 4096) cache_.clear();
    cache_[ident] = *report;
  }
  Json unobserved = Json::array();
  std::set<std::string> seen_ok;
  for (const bpf::TlsStackFinding& f : report->findings) {
    bool in_exe = f.object.rfind("/proc/self/fd/", 0) == 0;
    std::string object = in_exe ? e.filename : f.object;
    if (f.supported && contains(observed_ids, f.id)) {
      seen_ok.insert(std::string(bpf::tls_stack_name(f.stack)));
      continue;
    }
    std::string reason = f.reason;
    if (f.supported) reason = object + " is not one of the libraries this sandbox's profile observes (tlsCapture.libraries)";
    unobserved.push_back(Json{{"stack", std::string(bpf::tls_stack_name(f.stack))}, {"object", object}, {"reason", reason}});
  }
  if (unobserved.empty()) return;
  Json d{{"kind", "tls-unobserved"}, {"executable", e.filename}, {"pid", e.pid}, {"stacks", std::move(unobserved)},
         {"observed", Json(std::vector<std::string>(seen_ok.begin(), seen_ok.end()))}};
  o_.record(e.id, audit::Event{audit::now_ms(), "kmd", "audit", std::move(d)});
}

Json TlsObserver::status(const std::string& id) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = sandboxes_.find(id);
  if (it == sandboxes_.end()) return nullptr;
  const Sandbox& s = it->second;
  Json unsupported = Json::array();
  for (const auto& [stack, reason] : s.unsupported) unsupported.push_back(stack);
  return Json{{"enabled", true},         {"payloads", s.payloads},         {"libraries", s.libraries},
              {"unsupported", unsupported}, {"connections", s.conns.open()}, {"heads", s.heads},
              {"watching", s.cgroup.has_value()}, {"unclassified", unclassified_}};
}

}  // namespace km::daemon
