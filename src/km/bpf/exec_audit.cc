#include "km/bpf/exec_audit.h"

#include <bpf/bpf.h>
#include <malloc.h>
#include <bpf/libbpf.h>
#include <linux/types.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <algorithm>
#include <cstring>
#include <mutex>

#include "exec_audit.skel.h"
#include "km/bpf_abi/exec_event.h"

namespace km::bpf {

static_assert(sizeof(km_exec_event) == KM_EXEC_EVENT_SIZE, "km_exec_event layout");

namespace {

constexpr long kBpfFsMagic = 0xcafe4a11;

// libbpf's diagnostics (the verifier log among them), kept so that a failed load can say why.
std::mutex log_mu;
std::string log_tail;

int capture(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  int n = std::vsnprintf(buf, sizeof buf, fmt, args);
  std::lock_guard<std::mutex> g(log_mu);
  log_tail += std::string(buf, static_cast<size_t>(std::max(0, std::min(n, static_cast<int>(sizeof buf) - 1))));
  if (log_tail.size() > 4096) log_tail.erase(0, log_tail.size() - 4096);
  return 0;
}

}  // namespace

void capture_libbpf_log() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(capture); });
}

std::string take_libbpf_log() {
  std::string tail;
  std::lock_guard<std::mutex> g(log_mu);
  tail.swap(log_tail);
  return tail;
}

namespace {

Error bpf_error(const std::string& what, int err) {
  std::string tail = take_libbpf_log();
  Error e = Error::from_errno(what, err < 0 ? -err : err);
  if (!tail.empty()) e = Error(ErrorCode::kUnavailable, e.to_string() + "\n" + tail);
  return std::move(e).with_hint("the exec audit needs BPF ring buffers and raw tracepoints (Linux 5.8+) and root");
}

}  // namespace

Result<ExecEvent> decode_exec_event(const void* data, size_t size) {
  if (size != sizeof(km_exec_event)) return fail(ErrorCode::kInvalidArgument, "exec event of " + std::to_string(size) + " bytes");
  km_exec_event raw;
  std::memcpy(&raw, data, sizeof raw);
  ExecEvent e;
  e.cgroup_id = raw.cgroup_id;
  e.boot_ns = raw.boot_ns;
  e.pid = raw.pid;
  e.ppid = raw.ppid;
  e.uid = raw.uid;
  e.gid = raw.gid;
  e.comm.assign(raw.comm, strnlen(raw.comm, sizeof raw.comm));
  e.filename.assign(raw.filename, strnlen(raw.filename, sizeof raw.filename));
  size_t len = std::min<size_t>(raw.args_len, sizeof raw.args);
  size_t start = 0;
  for (size_t i = 0; i < len; ++i) {
    if (raw.args[i] == '\0') {
      e.argv.emplace_back(raw.args + start, i - start);
      start = i + 1;
    }
  }
  if (start < len) e.argv.emplace_back(raw.args + start, len - start);  // cut mid-argument
  e.truncated = raw.args_truncated != 0 || start < len;
  uint32_t parts = std::min<uint32_t>(raw.cwd_parts, KM_EXEC_CWD_PARTS);
  for (uint32_t i = parts; i-- > 0;) {
    e.cwd += "/";
    e.cwd.append(raw.cwd[i], strnlen(raw.cwd[i], KM_EXEC_CWD_PART_MAX));
  }
  if (e.cwd.empty()) e.cwd = "/";
  if (raw.cwd_truncated) e.cwd = "..." + e.cwd;
  return e;
}

Result<std::unique_ptr<ExecAudit>> ExecAudit::open(const std::string& pin_dir) {
  capture_libbpf_log();
  std::unique_ptr<ExecAudit> a(new ExecAudit());
  std::string link = pin_dir + "/exec_link", watched = pin_dir + "/exec_watched", events = pin_dir + "/exec_events",
              lost = pin_dir + "/exec_lost";
  if (::access(link.c_str(), F_OK) == 0) {
    // An earlier kmd's program: still attached; take over its maps (the ring buffer keeps what
    // was queued meanwhile).
    a->link_ = UniqueFd(bpf_obj_get(link.c_str()));
    a->watched_ = UniqueFd(bpf_obj_get(watched.c_str()));
    a->events_ = UniqueFd(bpf_obj_get(events.c_str()));
    a->lost_ = UniqueFd(bpf_obj_get(lost.c_str()));
    if (!a->link_ || !a->watched_ || !a->events_ || !a->lost_) {
      return fail(Error::from_errno("opening the pinned exec audit in " + pin_dir)
                      .with_hint("remove " + pin_dir + "/exec_* and restart kmd"));
    }
  } else {
    a->skel_ = exec_audit__open_and_load();
    if (!a->skel_) return fail(bpf_error("loading the exec audit program", errno));
    if (int err = exec_audit__attach(a->skel_); err != 0) return fail(bpf_error("attaching the exec audit program", err));
    if (int err = bpf_link__pin(a->skel_->links.km_exec, link.c_str()); err != 0) return fail(bpf_error("pinning " + link, err));
    if (int err = bpf_map__pin(a->skel_->maps.watched, watched.c_str()); err != 0) return fail(bpf_error("pinning " + watched, err));
    if (int err = bpf_map__pin(a->skel_->maps.events, events.c_str()); err != 0) return fail(bpf_error("pinning " + events, err));
    if (int err = bpf_map__pin(a->skel_->maps.lost, lost.c_str()); err != 0) return fail(bpf_error("pinning " + lost, err));
    a->watched_ = UniqueFd(::fcntl(bpf_map__fd(a->skel_->maps.watched), F_DUPFD_CLOEXEC, 3));
    a->events_ = UniqueFd(::fcntl(bpf_map__fd(a->skel_->maps.events), F_DUPFD_CLOEXEC, 3));
    a->lost_ = UniqueFd(::fcntl(bpf_map__fd(a->skel_->maps.lost), F_DUPFD_CLOEXEC, 3));
    // The pins hold the program and its maps now; letting the loader go frees the kernel BTF
    // libbpf parsed for the load (megabytes of kmd's memory).
    exec_audit__destroy(a->skel_);
    a->skel_ = nullptr;
    ::malloc_trim(0);  // and give those pages back to the system
  }
  a->rb_ = ring_buffer__new(a->events_.get(), &ExecAudit::on_record, a.get(), nullptr);
  if (!a->rb_) return fail(bpf_error("opening the exec audit ring buffer", errno));
  return a;
}

ExecAudit::~ExecAudit() {
  if (rb_) ring_buffer__free(rb_);
  // The pinned link keeps the program attached after the skeleton goes.
  if (skel_) exec_audit__destroy(skel_);
}

Status ExecAudit::watch(uint64_t cgroup_id) {
  __u32 one = 1;
  if (bpf_map_update_elem(watched_.get(), &cgroup_id, &one, BPF_ANY) != 0) {
    return fail(Error::from_errno("adding cgroup " + std::to_string(cgroup_id) + " to the exec audit"));
  }
  return ok();
}

Status ExecAudit::unwatch(uint64_t cgroup_id) {
  if (bpf_map_delete_elem(watched_.get(), &cgroup_id) != 0 && errno != ENOENT) {
    return fail(Error::from_errno("removing cgroup " + std::to_string(cgroup_id) + " from the exec audit"));
  }
  return ok();
}

int ExecAudit::on_record(void* self, void* data, size_t size) {
  auto* a = static_cast<ExecAudit*>(self);
  auto e = decode_exec_event(data, size);
  if (e && a->deliver_) {
    (*a->deliver_)(*e);
    ++a->delivered_;
  }
  return 0;
}

Result<int> ExecAudit::poll(int timeout_ms, const std::function<void(const ExecEvent&)>& deliver) {
  deliver_ = &deliver;
  delivered_ = 0;
  int n = ring_buffer__poll(rb_, timeout_ms);
  deliver_ = nullptr;
  if (n < 0 && n != -EINTR) return fail(Error::from_errno("polling the exec audit", -n));
  return delivered_;
}

uint64_t sum_percpu_counter(int map_fd) {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return 0;
  std::vector<__u64> per_cpu(static_cast<size_t>(cpus));
  __u32 zero = 0;
  if (bpf_map_lookup_elem(map_fd, &zero, per_cpu.data()) != 0) return 0;
  uint64_t sum = 0;
  for (auto v : per_cpu) sum += v;
  return sum;
}

uint64_t ExecAudit::lost() const { return sum_percpu_counter(lost_.get()); }

Status ExecAudit::unpin(const std::string& pin_dir) {
  for (const char* n : {"/exec_link", "/exec_watched", "/exec_events", "/exec_lost"}) {
    if (::unlink((pin_dir + n).c_str()) != 0 && errno != ENOENT) return fail(Error::from_errno("unlink " + pin_dir + n));
  }
  return ok();
}

Result<uint64_t> cgroup_id(const std::string& v2_dir) {
  struct stat st {};
  if (::stat(v2_dir.c_str(), &st) != 0) return fail(Error::from_errno("stat " + v2_dir));
  return static_cast<uint64_t>(st.st_ino);
}

Status ensure_bpffs(const std::string& dir) {
  ::mkdir(dir.c_str(), 0700);
  struct statfs fs {};
  if (::statfs(dir.c_str(), &fs) == 0 && static_cast<long>(fs.f_type) == kBpfFsMagic) return ok();
  if (::mount("bpf", dir.c_str(), "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") != 0) {
    return fail(Error::from_errno("mounting bpffs on " + dir).with_hint("kmd needs CONFIG_BPF_SYSCALL and root"));
  }
  return ok();
}

}  // namespace km::bpf
