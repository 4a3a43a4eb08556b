#include "km/sys/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <set>
#include <sstream>
#include <thread>

#include "km/base/file.h"
#include "km/base/strings.h"

namespace km::sys {

namespace {

const std::vector<std::string> kControllers = {"memory", "pids", "cpu"};

Status write_text(const std::string& path, const std::string& value) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return fail(Error::from_errno("open " + path));
  UniqueFd owner(fd);
  ssize_t n;
  do {
    n = ::write(fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return fail(Error::from_errno("write " + value + " to " + path));
  return ok();
}

Result<std::string> read_text(const std::string& path) { return read_file(path, 1u << 20); }

Status make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return fail(Error::from_errno("creating cgroup " + path));
  }
  return ok();
}

bool dir_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string join(const std::string& a, const std::string& b) {
  if (b.empty() || b == "/") return a;
  return a + (b.front() == '/' ? "" : "/") + b;
}

}  // namespace

Result<CgroupLayout> CgroupLayout::discover() {
  CgroupLayout l;
  KM_ASSIGN_OR_RETURN(std::string mountinfo, read_text("/proc/self/mountinfo"));
  std::istringstream mi(mountinfo);
  std::string line;
  while (std::getline(mi, line)) {
    // id parent major:minor root mountpoint opts ... - fstype source superopts
    auto fields = split(line, ' ');
    auto dash = std::find(fields.begin(), fields.end(), "-");
    if (fields.size() < 5 || dash == fields.end() || dash + 3 >= fields.end() + 1) continue;
    const std::string& mountpoint = fields[4];
    const std::string& fstype = *(dash + 1);
    const std::string& superopts = *(dash + 3);
    if (fstype == "cgroup2" && l.v2_mount.empty()) l.v2_mount = mountpoint;
    if (fstype == "cgroup") {
      for (const std::string& opt : split(superopts, ',')) {
        for (const std::string& c : kControllers) {
          if (opt == c && !l.v1_mount.count(c)) l.v1_mount[c] = mountpoint;
        }
      }
    }
  }
  if (l.v2_mount.empty()) {
    return fail(Error(ErrorCode::kUnavailable, "no cgroup2 hierarchy is mounted")
                    .with_hint("km needs cgroup v2 (alone or hybrid) for freezing, killing and BPF"));
  }
  KM_ASSIGN_OR_RETURN(std::string self, read_text("/proc/self/cgroup"));
  std::istringstream sc(self);
  while (std::getline(sc, line)) {
    size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string ctrls = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (ctrls.empty()) l.v2_self = path;
    for (const std::string& c : split(ctrls, ',')) {
      if (l.v1_mount.count(c)) l.v1_self[c] = path;
    }
  }
  // Controllers v2 can give km: those enabled (or enableable) in kmd's own cgroup.
  auto avail = read_text(join(l.v2_mount, l.v2_self) + "/cgroup.controllers");
  if (avail) {
    std::string text = *avail;
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    for (const std::string& c : split(text, ' ')) {
      if (std::find(kControllers.begin(), kControllers.end(), c) != kControllers.end()) {
        l.v2_controllers.push_back(c);
      }
    }
  }
  return l;
}

std::string CgroupLayout::v2_base() const { return join(v2_mount, v2_self) + "/" + name; }

bool CgroupLayout::v2_has(const std::string& c) const {
  return std::find(v2_controllers.begin(), v2_controllers.end(), c) != v2_controllers.end();
}

SandboxCgroup SandboxCgroup::of(const CgroupLayout& layout, const std::string& id) {
  SandboxCgroup g;
  g.v2_ = layout.v2_base() + "/" + id;
  g.v2_controllers_ = layout.v2_controllers;
  for (const std::string& c : kControllers) {
    if (layout.v2_has(c)) continue;  // v2 takes precedence
    auto m = layout.v1_mount.find(c);
    if (m == layout.v1_mount.end()) continue;
    auto s = layout.v1_self.find(c);
    g.v1_[c] = join(m->second, s == layout.v1_self.end() ? "/" : s->second) + "/" + layout.name + "/" + id;
  }
  return g;
}

Status SandboxCgroup::create(const CgroupLimits& limits) {
  std::string base = v2_.substr(0, v2_.rfind('/'));
  KM_TRY(make_dir(base));
  if (!v2_controllers_.empty()) {
    std::string enable;
    for (const auto& c : v2_controllers_) enable += "+" + c + " ";
    // Enabling can fail where kmd's own cgroup has processes (v2's no-internal-process
    // rule); the limits below then report which controller is missing.
    (void)write_text(base.substr(0, base.rfind('/')) + "/cgroup.subtree_control", enable);
    (void)write_text(base + "/cgroup.subtree_control", enable);
  }
  KM_TRY(make_dir(v2_));
  for (const auto& [c, path] : v1_) {
    KM_TRY(make_dir(path.substr(0, path.rfind('/'))));
    KM_TRY(make_dir(path));
  }
  auto v2_has = [&](const std::string& c) {
    return std::find(v2_controllers_.begin(), v2_controllers_.end(), c) != v2_controllers_.end();
  };
  auto missing = [&](const char* what, const char* c) {
    return fail(Error(ErrorCode::kUnavailable, std::string("cannot enforce the ") + what +
                                                   " limit: no cgroup " + c + " controller")
                    .with_hint(std::string("enable the ") + c +
                               " controller (cgroup v2 subtree_control or a v1 hierarchy)"));
  };
  if (limits.memory) {
    if (v2_has("memory")) {
      KM_TRY(write_text(v2_ + "/memory.max", std::to_string(limits.memory)));
      (void)write_text(v2_ + "/memory.swap.max", "0");
    } else if (v1_.count("memory")) {
      KM_TRY(write_text(v1_["memory"] + "/memory.limit_in_bytes", std::to_string(limits.memory)));
      (void)write_text(v1_["memory"] + "/memory.memsw.limit_in_bytes", std::to_string(limits.memory));
      (void)write_text(v1_["memory"] + "/memory.swappiness", "0");
    } else {
      return missing("memory", "memory");
    }
  }
  if (limits.pids) {
    if (v2_has("pids")) {
      KM_TRY(write_text(v2_ + "/pids.max", std::to_string(limits.pids)));
    } else if (v1_.count("pids")) {
      KM_TRY(write_text(v1_["pids"] + "/pids.max", std::to_string(limits.pids)));
    } else {
      return missing("pids", "pids");
    }
  }
  if (limits.cpus > 0) {
    const long period = 100000;
    long quota = std::max(1000L, static_cast<long>(std::llround(limits.cpus * period)));
    if (v2_has("cpu")) {
      KM_TRY(write_text(v2_ + "/cpu.max", std::to_string(quota) + " " + std::to_string(period)));
    } else if (v1_.count("cpu")) {
      KM_TRY(write_text(v1_["cpu"] + "/cpu.cfs_period_us", std::to_string(period)));
      KM_TRY(write_text(v1_["cpu"] + "/cpu.cfs_quota_us", std::to_string(quota)));
    } else {
      return missing("cpu", "cpu");
    }
  }
  return ok();
}

Result<UniqueFd> SandboxCgroup::open_v2() const {
  UniqueFd fd(::open(v2_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail(Error::from_errno("open " + v2_));
  return fd;
}

Status SandboxCgroup::add_v1(pid_t pid) const {
  for (const auto& [c, path] : v1_) KM_TRY(write_text(path + "/cgroup.procs", std::to_string(pid)));
  return ok();
}

Status SandboxCgroup::freeze(bool frozen) const {
  KM_TRY(write_text(v2_ + "/cgroup.freeze", frozen ? "1" : "0"));
  // Wait (bounded) until the kernel reports the new state.
  for (int i = 0; i < 500; ++i) {
    auto f = this->frozen();
    if (f && *f == frozen) return ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return fail(ErrorCode::kInternal, std::string("cgroup did not become ") + (frozen ? "frozen" : "thawed"));
}

Result<bool> SandboxCgroup::frozen() const {
  KM_ASSIGN_OR_RETURN(std::string ev, read_text(v2_ + "/cgroup.events"));
  return ev.find("frozen 1") != std::string::npos;
}

Result<std::vector<pid_t>> SandboxCgroup::pids() const {
  std::set<pid_t> out;
  std::vector<std::string> files = {v2_ + "/cgroup.procs"};
  for (const auto& [c, path] : v1_) files.push_back(path + "/cgroup.procs");
  for (const auto& f : files) {
    auto text = read_text(f);
    if (!text) continue;
    std::istringstream in(*text);
    pid_t p;
    while (in >> p) out.insert(p);
  }
  return std::vector<pid_t>(out.begin(), out.end());
}

Status SandboxCgroup::kill_all() const {
  if (dir_exists(v2_)) {
    // Thaw first: a frozen cgroup's processes cannot die until thawed.
    (void)write_text(v2_ + "/cgroup.freeze", "0");
    if (!write_text(v2_ + "/cgroup.kill", "1")) {
      // Kernels before 5.14: signal each process.
      auto ps = pids();
      if (ps) {
        for (pid_t p : *ps) ::kill(p, SIGKILL);
      }
    }
  }
  for (int i = 0; i < 2500; ++i) {
    auto ps = pids();
    if (!ps || ps->empty()) return ok();
    if (i % 50 == 49) {
      for (pid_t p : *ps) ::kill(p, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return fail(ErrorCode::kInternal, "processes of " + v2_ + " did not exit within 5s");
}

Status SandboxCgroup::destroy() const {
  KM_TRY(kill_all());
  auto rm = [](const std::string& p) -> Status {
    if (::rmdir(p.c_str()) != 0 && errno != ENOENT) return fail(Error::from_errno("rmdir " + p));
    return ok();
  };
  KM_TRY(rm(v2_));
  for (const auto& [c, path] : v1_) KM_TRY(rm(path));
  return ok();
}

bool SandboxCgroup::exists() const { return dir_exists(v2_); }

Result<uint64_t> SandboxCgroup::memory_current() const {
  auto t = read_text(v2_ + "/memory.current");
  if (!t && v1_.count("memory")) t = read_text(v1_.at("memory") + "/memory.usage_in_bytes");
  if (!t) return fail(ErrorCode::kUnavailable, "no memory accounting");
  return std::stoull(*t);
}

Result<uint64_t> SandboxCgroup::pids_limit_hits() const {
  std::string file = v1_.count("pids") ? v1_.at("pids") + "/pids.events" : v2_ + "/pids.events";
  KM_ASSIGN_OR_RETURN(std::string text, read_text(file));
  size_t pos = text.find("max ");
  if (pos == std::string::npos) return fail(ErrorCode::kInternal, "no max counter in " + file);
  return std::stoull(text.substr(pos + 4));
}

std::vector<std::string> list_sandbox_cgroups(const CgroupLayout& layout) {
  std::vector<std::string> out;
  DIR* d = ::opendir(layout.v2_base().c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_type == DT_DIR && e->d_name[0] != '.') out.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace km::sys
