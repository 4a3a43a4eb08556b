#include "km/sandbox/init.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/base/file.h"
#include "km/base/strings.h"
#include "km/base/unique_fd.h"
#include "km/sandbox/confine.h"
#include "km/sandbox/protocol.h"
#include "km/sandbox/spec.h"
#include "km/sys/netlink.h"
#include "km/sys/unix_socket.h"

namespace km::sandbox {

namespace {

using Json = nlohmann::json;

void log_line(const std::string& s) {
  std::string line = s + "\n";
  ssize_t n = ::write(kInitLogFd, line.data(), line.size());
  (void)n;
}

Status mnt(const std::string& src, const std::string& target, const char* type, unsigned long flags,
           const std::string& data = "") {
  if (::mount(src.empty() ? nullptr : src.c_str(), target.c_str(), type, flags,
              data.empty() ? nullptr : data.c_str()) != 0) {
    return fail(Error::from_errno("mount " + (src.empty() ? std::string(type ? type : "") : src) + " on " + target));
  }
  return ok();
}

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_symlink(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

Status mkdir_p(const std::string& path, mode_t mode, uid_t uid = 0, gid_t gid = 0) {
  std::string cur;
  for (const std::string& part : split(path, '/')) {
    if (part.empty()) continue;
    cur += "/" + part;
    if (::mkdir(cur.c_str(), mode) == 0) {
      if (::lchown(cur.c_str(), uid, gid) != 0) return fail(Error::from_errno("chown " + cur));
    } else if (errno != EEXIST) {
      return fail(Error::from_errno("mkdir " + cur));
    }
  }
  return ok();
}

Status write_file(const std::string& path, const std::string& content, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode));
  if (!fd) return fail(Error::from_errno("open " + path));
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + off, content.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Error::from_errno("write " + path));
    }
    off += static_cast<size_t>(n);
  }
  return ok();
}

// Re-mounts a bind mount read-only, keeping the flags a user namespace may not drop.
Status make_readonly(const std::string& path) {
  struct statvfs sv {};
  unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY;
  if (::statvfs(path.c_str(), &sv) == 0) {
    if (sv.f_flag & ST_NOSUID) flags |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME) flags |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME) flags |= MS_RELATIME;
  }
  return mnt("", path, nullptr, flags);
}

Status bind_readonly(const std::string& path) {
  KM_TRY(mnt(path, path, nullptr, MS_BIND | MS_REC));
  return make_readonly(path);
}

// Expands a path pattern (`*`, `?`, `[...]` per component, `**` for any depth) under `root`.
void expand_glob(const std::string& root, const std::vector<std::string>& parts, size_t i,
                 const std::string& rel, std::vector<std::string>& out, size_t& budget) {
  if (budget == 0) return;
  if (i == parts.size()) {
    if (exists(root + rel)) out.push_back(rel.empty() ? "/" : rel);
    return;
  }
  const std::string& p = parts[i];
  if (p.empty()) return expand_glob(root, parts, i + 1, rel, out, budget);
  bool glob = p.find_first_of("*?[") != std::string::npos;
  if (!glob) return expand_glob(root, parts, i + 1, rel + "/" + p, out, budget);
  if (p == "**") expand_glob(root, parts, i + 1, rel, out, budget);  // zero directories
  DIR* d = ::opendir((root + (rel.empty() ? "/" : rel)).c_str());
  if (!d) return;
  std::vector<std::pair<std::string, bool>> entries;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (--budget == 0) break;
    entries.emplace_back(name, e->d_type == DT_DIR);
  }
  ::closedir(d);
  for (const auto& [name, dir] : entries) {
    std::string next = rel + "/" + name;
    if (p == "**") {
      if (dir && !is_symlink(root + next)) expand_glob(root, parts, i, next, out, budget);
    } else if (::fnmatch(p.c_str(), name.c_str(), FNM_PERIOD) == 0) {
      expand_glob(root, parts, i + 1, next, out, budget);
    }
  }
}

class Init {
 public:
  explicit Init(Spec spec) : s_(std::move(spec)) {}

  std::string in_root(const std::string& inside) const { return s_.root_dir + inside; }

  std::string expand_home(const std::string& p) const {
    if (p == "~") return s_.home;
    if (p.rfind("~/", 0) == 0) return s_.home + p.substr(1);
    return p;
  }

  // `binds`: one mount per spec.file_binds entry, in order (kmd's detached, read-only clones).
  Status setup(UniqueFd lower, std::vector<UniqueFd> binds = {}) {
    KM_TRY(mnt("", "/", nullptr, MS_REC | MS_PRIVATE));
    if (::sethostname(s_.hostname.c_str(), s_.hostname.size()) != 0) return fail(Error::from_errno("sethostname"));
    KM_TRY(network());
    // The lower layer: kmd's idmapped clone of the host root (or image), attached here.
    if (::syscall(SYS_move_mount, lower.get(), "", AT_FDCWD, s_.lower_dir.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
      return fail(Error::from_errno("attaching the lower layer at " + s_.lower_dir));
    }
    KM_TRY(mnt("overlay", s_.root_dir, "overlay", MS_NOSUID,
               "lowerdir=" + s_.lower_dir + ",upperdir=" + s_.upper_dir + ",workdir=" + s_.work_dir + ",userxattr"));
    KM_TRY(filesystems());
    KM_TRY(users());
    KM_TRY(workspace_and_home());
    KM_TRY(config_files());
    KM_TRY(file_binds(std::move(binds)));
    KM_TRY(pivot());
    return ok();
  }

  // kmd's files over the sandbox's own (private copies of TLS libraries). The target is
  // resolved inside the new root (its symlinks cannot lead out of it) and must be a file.
  Status file_binds(std::vector<UniqueFd> binds) {
    if (binds.size() != s_.file_binds.size()) return fail(ErrorCode::kInvalidArgument, "file binds without their mounts");
    if (binds.empty()) return ok();
    UniqueFd root(::open(s_.root_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) return fail(Error::from_errno("open " + s_.root_dir));
    for (size_t i = 0; i < binds.size(); ++i) {
      const FileBind& b = s_.file_binds[i];
      open_how how{};
      how.flags = O_PATH | O_CLOEXEC;
      how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
      UniqueFd target(static_cast<int>(::syscall(SYS_openat2, root.get(), b.target.c_str(), &how, sizeof how)));
      if (!target) return fail(Error::from_errno("binding " + b.source + " over " + b.target + " in the sandbox"));
      struct stat st {};
      if (::fstat(target.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
        return fail(ErrorCode::kFailedPrecondition, b.target + " in the sandbox is not a regular file");
      }
      if (::syscall(SYS_move_mount, binds[i].get(), "", target.get(), "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) {
        return fail(Error::from_errno("binding " + b.source + " over " + b.target + " in the sandbox"));
      }
    }
    return ok();
  }

  // After initCommands: they may create what the policy protects or hides.
  Status finish() { return policy_mounts(); }

  Status network() {
    auto nl = sys::Netlink::open();
    if (!nl) return fail(std::move(nl).error().wrap("configuring the sandbox link"));
    KM_ASSIGN_OR_RETURN(int lo, nl->link_index("lo"));
    KM_TRY(nl->set_up(lo));
    // IPv6 is not routable from a sandbox: the enforcer filters IPv4 only.
    (void)write_file("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1", 0644);
    (void)write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1", 0644);
    KM_ASSIGN_OR_RETURN(int eth, nl->link_index(s_.net.ifname));
    in_addr a{};
    if (inet_pton(AF_INET, s_.net.address.c_str(), &a) != 1) return fail(ErrorCode::kInvalidArgument, "bad link address");
    KM_TRY(nl->add_ipv4(eth, a.s_addr, s_.net.prefix_len));
    KM_TRY(nl->set_up(eth));
    if (s_.net.egress) {
      // Everything leaves by the link; the enforcer on the other side decides what goes on.
      in_addr gw{};
      if (inet_pton(AF_INET, s_.net.peer_address.c_str(), &gw) != 1) return fail(ErrorCode::kInvalidArgument, "bad peer address");
      KM_TRY(nl->add_default_route_v4(eth, gw.s_addr));
    }
    return ok();
  }

  Status filesystems() {
    const std::string R = s_.root_dir;
    KM_TRY(mkdir_p(R + "/proc", 0555));
    KM_TRY(mnt("proc", R + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC));
    KM_TRY(mkdir_p(R + "/sys", 0555));
    if (!mnt("sysfs", R + "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)) {
      KM_TRY(mnt("tmpfs", R + "/sys", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=555"));
    }
    // A minimal /dev: the usual character devices bound from the host, private pts and shm.
    KM_TRY(mkdir_p(R + "/dev", 0755));
    KM_TRY(mnt("tmpfs", R + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755"));
    for (const char* d : {"null", "zero", "full", "random", "urandom", "tty"}) {
      std::string target = R + "/dev/" + d;
      KM_TRY(write_file(target, "", 0666));
      KM_TRY(mnt(std::string("/dev/") + d, target, nullptr, MS_BIND));
    }
    KM_TRY(mkdir_p(R + "/dev/pts", 0755));
    KM_TRY(mnt("devpts", R + "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"));
    if (::symlink("pts/ptmx", (R + "/dev/ptmx").c_str()) != 0) return fail(Error::from_errno("symlink /dev/ptmx"));
    KM_TRY(mkdir_p(R + "/dev/shm", 01777));
    KM_TRY(mnt("tmpfs", R + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=256m"));
    ::chmod((R + "/dev/shm").c_str(), 01777);
    for (auto [link, target] : std::vector<std::pair<const char*, const char*>>{
             {"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
             {"stderr", "/proc/self/fd/2"}}) {
      if (::symlink(target, (R + "/dev/" + link).c_str()) != 0) return fail(Error::from_errno("symlink /dev/" + std::string(link)));
    }
    for (const char* t : {"/tmp", "/var/tmp"}) {
      KM_TRY(mkdir_p(R + t, 01777));
      KM_TRY(mnt("tmpfs", R + t, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"));
    }
    // Sensitive host paths: hidden behind empty tmpfs (root-owned inside the sandbox).
    for (const std::string& m : s_.masks) {
      std::string target = R + m;
      if (!is_dir(target)) continue;  // absent, or a symlink (e.g. /var/run -> /run)
      KM_TRY(mnt("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=16m"));
    }
    return ok();
  }

  Status users() {
    const std::string R = s_.root_dir;
    auto rewrite = [&](const std::string& file, const std::string& entry, const std::string& name, const std::string& id) -> Status {
      auto text = read_file(R + file, 4u << 20);
      std::string out;
      if (text) {
        std::istringstream in(*text);
        std::string line;
        while (std::getline(in, line)) {
          auto f = split(line, ':');
          if (f.size() >= 3 && (f[0] == name || f[2] == id)) continue;  // ours replaces any clash
          out += line + "\n";
        }
      }
      out += entry + "\n";
      return write_file(R + file, out, 0644);
    };
    std::string uid = std::to_string(s_.uid), gid = std::to_string(s_.gid);
    if (s_.user != "root") {
      KM_TRY(rewrite("/etc/passwd", s_.user + ":x:" + uid + ":" + gid + ":km sandbox user:" + s_.home + ":" + s_.shell, s_.user, uid));
      KM_TRY(rewrite("/etc/group", s_.user + ":x:" + gid + ":", s_.user, gid));
    }
    KM_TRY(write_file(R + "/etc/hostname", s_.hostname + "\n", 0644));
    std::string hosts = "127.0.0.1 localhost\n127.0.1.1 " + s_.hostname + "\n";
    KM_TRY(write_file(R + "/etc/hosts", hosts, 0644));
    // The sandbox's only resolver is its enforcer's DNS filter (or none). The host's file may
    // be a symlink into /run: replace it, never write through it.
    ::unlink((R + "/etc/resolv.conf").c_str());
    std::string resolv = s_.net.egress ? "nameserver " + s_.net.peer_address + "\noptions edns0 trust-ad\n" : "# no network\n";
    KM_TRY(write_file(R + "/etc/resolv.conf", resolv, 0644));
    if (!s_.trusted_ca.empty()) {
      // The system bundle plus the sandbox's inspection CA, in the sandbox's own /etc.
      KM_TRY(mkdir_p(R + "/etc/ssl/certs", 0755));
      std::string bundle = read_file(R + kTrustBundle, 16u << 20).value_or("");
      if (!bundle.empty() && bundle.back() != '\n') bundle += "\n";
      ::unlink((R + kTrustBundle).c_str());  // may be a symlink into the host's tree
      KM_TRY(write_file(R + kTrustBundle, bundle + s_.trusted_ca, 0644));
      ::unlink((R + kInspectionCaFile).c_str());
      KM_TRY(write_file(R + kInspectionCaFile, s_.trusted_ca, 0644));
    }
    return ok();
  }

  Status workspace_and_home() {
    const std::string R = s_.root_dir;
    KM_TRY(mkdir_p(R + "/workspace", 0755));
    KM_TRY(mnt(s_.workspace_dir, R + "/workspace", nullptr, MS_BIND | MS_NOSUID | MS_NODEV));
    KM_TRY(mkdir_p(R + s_.home, 0755));  // under the /home mask
    KM_TRY(mnt(s_.home_dir, R + s_.home, nullptr, MS_BIND | MS_NOSUID | MS_NODEV));
    ::chown((R + s_.home).c_str(), s_.uid, s_.gid);
    ::chown((R + "/workspace").c_str(), s_.uid, s_.gid);
    // The protected shell files exist (empty if need be) so that they can be made read-only.
    for (const std::string& p : s_.protected_paths) {
      if (p.rfind("~/", 0) != 0) continue;
      std::string f = R + expand_home(p);
      if (!exists(f)) {
        KM_TRY(mkdir_p(f.substr(0, f.rfind('/')), 0755, s_.uid, s_.gid));
        KM_TRY(write_file(f, "", 0644));
        ::lchown(f.c_str(), s_.uid, s_.gid);
      }
    }
    for (const std::string& w : s_.writable) {
      std::string path = expand_home(w);
      if (!exists(R + path)) KM_TRY(mkdir_p(R + path, 0755, s_.uid, s_.gid));
    }
    return ok();
  }

  Status config_files() {
    const std::string R = s_.root_dir;
    for (const auto& [path, content] : s_.config_files) {
      std::string inside = expand_home(path);
      std::string dir = inside.substr(0, inside.rfind('/'));
      bool in_home = inside.rfind(s_.home + "/", 0) == 0 || inside.rfind("/workspace/", 0) == 0;
      KM_TRY(mkdir_p(R + dir, 0755, in_home ? s_.uid : 0, in_home ? s_.gid : 0));
      KM_TRY(write_file(R + inside, content, 0644));
      if (in_home) ::lchown((R + inside).c_str(), s_.uid, s_.gid);
    }
    return ok();
  }

  bool unprotected(const std::string& inside) const {
    for (const std::string& u : s_.unprotect) {
      if (expand_home(u) == inside) return true;
    }
    return false;
  }

  Status policy_mounts() {
    const std::string R = "";  // runs after pivot_root
    // Protected set: shell start-up files, and .git/hooks and .git/config of every repository
    // found in the workspace and home.
    for (const std::string& p : s_.protected_paths) {
      std::vector<std::string> targets;
      if (p.rfind("~/", 0) == 0) {
        targets.push_back(expand_home(p));
      } else if (p.rfind("**/", 0) == 0) {
        size_t budget = 20000;
        for (const std::string& base : {std::string("/workspace"), s_.home}) {
          expand_glob(R, split(base + "/" + p, '/'), 0, "", targets, budget);
        }
      }
      for (const std::string& t : targets) {
        if (unprotected(t) || !exists(R + t) || is_symlink(R + t)) continue;
        KM_TRY(bind_readonly(R + t));
      }
    }
    for (const std::string& p : s_.read_only) {
      std::string t = R + expand_home(p);
      if (exists(t) && !is_symlink(t)) KM_TRY(bind_readonly(t));
    }
    // denyRead: every match is replaced by an empty, unreadable file or directory.
    std::string empty_file = "/dev/.km-denied";
    KM_TRY(write_file(empty_file, "", 0));
    for (const std::string& p : s_.deny_read) {
      std::vector<std::string> matches;
      size_t budget = 50000;
      expand_glob(R, split(expand_home(p), '/'), 0, "", matches, budget);
      for (const std::string& m : matches) {
        std::string t = R + m;
        if (is_symlink(t)) continue;
        if (is_dir(t)) {
          KM_TRY(mnt("tmpfs", t, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "mode=000,size=4k"));
        } else {
          KM_TRY(mnt(empty_file, t, nullptr, MS_BIND));
          KM_TRY(make_readonly(t));
        }
      }
    }
    return ok();
  }

  Status pivot() {
    if (::chdir(s_.root_dir.c_str()) != 0) return fail(Error::from_errno("chdir new root"));
    if (::syscall(SYS_pivot_root, ".", ".") != 0) return fail(Error::from_errno("pivot_root"));
    if (::umount2(".", MNT_DETACH) != 0) return fail(Error::from_errno("detaching the old root"));
    if (::chdir("/") != 0) return fail(Error::from_errno("chdir /"));
    return ok();
  }

  std::vector<std::string> writable_paths(bool root) const {
    std::vector<std::string> w = {"/workspace", s_.home, "/tmp", "/var/tmp", "/dev/shm", "/dev/null",
                                  "/dev/zero", "/dev/full", "/dev/tty", "/dev/pts"};
    if (root) w.push_back("/root");
    for (const std::string& p : s_.writable) w.push_back(expand_home(p));
    return w;
  }

  std::vector<std::string> environment(const Json& extra, bool root) const {
    std::map<std::string, std::string> env = {
        {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        {"HOME", root ? "/root" : s_.home}, {"USER", root ? "root" : s_.user},
        {"LOGNAME", root ? "root" : s_.user}, {"SHELL", s_.shell}, {"LANG", "C.UTF-8"},
        {"KM_SANDBOX_ID", s_.id}};
    for (const auto& [k, v] : s_.env) env[k] = v;
    if (extra.is_object()) {
      for (auto it = extra.begin(); it != extra.end(); ++it) {
        if (it.value().is_string()) env[it.key()] = it.value().get<std::string>();
      }
    }
    env["KM_SANDBOX_ID"] = s_.id;
    std::vector<std::string> out;
    for (const auto& [k, v] : env) out.push_back(k + "=" + v);
    return out;
  }

  // In a forked child: become the sandbox user (or privileged root), confine, exec.
  [[noreturn]] void become_and_exec(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                    const std::string& cwd, bool root, bool landlock) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) signal(sig, SIG_DFL);
    auto die = [](const std::string& what) {
      std::string m = "km: " + what + "\n";
      ssize_t n = ::write(2, m.data(), m.size());
      (void)n;
      _exit(126);
    };
    bool as_root = root && s_.privileged;
    if (landlock) {
      auto l = apply_landlock(writable_paths(as_root));
      if (!l) die("cannot apply the filesystem policy: " + l.error().to_string());
    }
    // The bounding set is dropped while root (it needs CAP_SETPCAP); changing to the sandbox
    // user then clears every remaining capability.
    auto c = drop_capabilities(as_root);
    if (!c) die("cannot drop capabilities: " + c.error().to_string());
    if (!as_root) {
      gid_t g = s_.gid;
      if (::setgroups(1, &g) != 0 || ::setresgid(s_.gid, s_.gid, s_.gid) != 0 ||
          ::setresuid(s_.uid, s_.uid, s_.uid) != 0) {
        die(std::string("cannot become the sandbox user: ") + std::strerror(errno));
      }
    }
    auto sc = apply_seccomp(/*allow_ptrace=*/true);
    if (!sc) die("cannot apply the syscall filter: " + sc.error().to_string());
    if (::chdir(cwd.c_str()) != 0 && ::chdir("/") != 0) die("cannot chdir");
    std::vector<char*> a, e;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    for (const auto& s : env) e.push_back(const_cast<char*>(s.c_str()));
    e.push_back(nullptr);
    ::execvpe(a[0], a.data(), e.data());
    int err = errno;
    std::string m = "km: cannot run " + argv[0] + ": " + std::strerror(err) + "\n";
    ssize_t n = ::write(2, m.data(), m.size());
    (void)n;
    _exit(err == ENOENT ? 127 : 126);
  }

  Status run_init_commands() {
    for (size_t i = 0; i < s_.init_commands.size(); ++i) {
      const std::string& cmd = s_.init_commands[i];
      log_line("+ " + cmd);
      pid_t pid = ::fork();
      if (pid < 0) return fail(Error::from_errno("fork"));
      if (pid == 0) {
        ::dup2(kInitLogFd, 1);
        ::dup2(kInitLogFd, 2);
        int devnull = ::open("/dev/null", O_RDONLY);
        ::dup2(devnull, 0);
        // initCommands run as root of the sandbox: they may install software into the
        // copy-on-write root, but get the same syscall filter as everything else.
        bool saved = s_.privileged;
        s_.privileged = true;
        become_and_exec({"/bin/sh", "-c", cmd}, environment(Json(), true), "/workspace", true, false);
        s_.privileged = saved;
      }
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::string why = WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                            : "was killed by signal " + std::to_string(WTERMSIG(status));
        return fail(ErrorCode::kFailedPrecondition,
                    "spec.execution.initCommands[" + std::to_string(i) + "] (" + cmd + ") " + why);
      }
    }
    return ok();
  }

  // --- serving -----------------------------------------------------------------------------

  struct Job {
    int conn = -1;
    pid_t pid = 0;
  };

  int serve() {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    UniqueFd sfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    std::map<int, UniqueFd> conns;       // fd -> connection
    std::map<pid_t, int> job_conn;       // pid -> connection fd
    std::map<int, pid_t> conn_job;       // connection fd -> pid
    for (;;) {
      std::vector<pollfd> pfds = {{kInitListenFd, POLLIN, 0}, {sfd.get(), POLLIN, 0}};
      for (const auto& [fd, c] : conns) pfds.push_back({fd, POLLIN, 0});
      if (::poll(pfds.data(), pfds.size(), -1) < 0) {
        if (errno == EINTR) continue;
        return 1;
      }
      if (pfds[1].revents & POLLIN) {
        signalfd_siginfo si{};
        while (::read(sfd.get(), &si, sizeof si) == sizeof si) {
          if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) return 0;
          if (si.ssi_signo != SIGCHLD) continue;
          int status;
          pid_t p;
          while ((p = ::waitpid(-1, &status, WNOHANG)) > 0) {
            auto it = job_conn.find(p);
            if (it == job_conn.end()) continue;  // an orphan reaped by PID 1
            Json r = WIFEXITED(status) ? Json{{"exit", WEXITSTATUS(status)}} : Json{{"signal", WTERMSIG(status)}};
            (void)sys::send_message(it->second, r.dump());
            conn_job.erase(it->second);
            job_conn.erase(it);
          }
          if (p < 0 && errno != ECHILD) break;
        }
      }
      if (pfds[0].revents & POLLIN) {
        auto c = sys::accept_unix(kInitListenFd);
        if (c) {
          int fd = c->get();
          conns.emplace(fd, std::move(*c));
        }
      }
      for (size_t i = 2; i < pfds.size(); ++i) {
        if (!pfds[i].revents) continue;
        int fd = pfds[i].fd;
        auto msg = sys::recv_message(fd);
        if (!msg) {
          // kmd went away: a running job keeps running (its exit is reaped later).
          auto j = conn_job.find(fd);
          if (j != conn_job.end()) {
            job_conn.erase(j->second);
            conn_job.erase(j);
          }
          conns.erase(fd);
          continue;
        }
        Json req = Json::parse(msg->data, nullptr, false);
        std::string op = req.is_object() && req.contains("op") && req["op"].is_string() ? req["op"].get<std::string>() : "";
        if (op == "ping") {
          (void)sys::send_message(fd, Json{{"pong", true}, {"jobs", job_conn.size()}}.dump());
        } else if (op == "exec" || op == "shell") {
          if (conn_job.count(fd)) {
            (void)sys::send_message(fd, Json{{"error", "this connection already runs a process"}}.dump());
            continue;
          }
          auto pid = op == "exec" ? start_exec(req, msg->fds) : start_shell(req, fd);
          if (!pid) {
            (void)sys::send_message(fd, Json{{"error", pid.error().to_string()}}.dump());
            continue;
          }
          job_conn[*pid] = fd;
          conn_job[fd] = *pid;
          if (op == "exec") (void)sys::send_message(fd, Json{{"pid", *pid}}.dump());
        } else if (op == "signal") {
          auto j = conn_job.find(fd);
          int sig = req.value("sig", 0);
          if (j != conn_job.end() && sig > 0 && sig < NSIG) ::kill(-j->second, sig);
        } else {
          (void)sys::send_message(fd, Json{{"error", "unknown op"}}.dump());
        }
      }
    }
  }

  bool wants_root(const Json& req) const { return req.value("root", false); }

  Result<pid_t> start_exec(const Json& req, std::vector<UniqueFd>& fds) {
    if (!req.contains("argv") || !req["argv"].is_array() || req["argv"].empty()) {
      return fail(ErrorCode::kInvalidArgument, "exec needs argv");
    }
    std::vector<std::string> argv;
    for (const auto& a : req["argv"]) {
      if (!a.is_string()) return fail(ErrorCode::kInvalidArgument, "argv must be strings");
      argv.push_back(a.get<std::string>());
    }
    if (fds.size() != 3) return fail(ErrorCode::kInvalidArgument, "exec needs stdin, stdout and stderr");
    bool root = wants_root(req);
    std::string cwd = req.value("cwd", s_.working_dir);
    auto env = environment(req.value("env", Json::object()), root && s_.privileged);
    pid_t pid = ::fork();
    if (pid < 0) return fail(Error::from_errno("fork"));
    if (pid == 0) {
      ::setpgid(0, 0);
      for (int i = 0; i < 3; ++i) ::dup2(fds[static_cast<size_t>(i)].get(), i);
      become_and_exec(argv, env, cwd, root, true);
    }
    ::setpgid(pid, pid);
    return pid;
  }

  Result<pid_t> start_shell(const Json& req, int conn) {
    UniqueFd master(::open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master) return fail(Error::from_errno("open /dev/pts/ptmx"));
    int unlock = 0;
    if (::ioctl(master.get(), TIOCSPTLCK, &unlock) != 0) return fail(Error::from_errno("unlockpt"));
    int n = 0;
    if (::ioctl(master.get(), TIOCGPTN, &n) != 0) return fail(Error::from_errno("ptsname"));
    winsize ws{};
    ws.ws_col = static_cast<unsigned short>(req.value("cols", 80));
    ws.ws_row = static_cast<unsigned short>(req.value("rows", 24));
    ::ioctl(master.get(), TIOCSWINSZ, &ws);
    std::string slave = "/dev/pts/" + std::to_string(n);
    bool root = wants_root(req);
    Json env_extra = req.value("env", Json::object());
    if (!env_extra.contains("TERM")) env_extra["TERM"] = req.value("term", std::string("xterm-256color"));
    auto env = environment(env_extra, root && s_.privileged);
    pid_t pid = ::fork();
    if (pid < 0) return fail(Error::from_errno("fork"));
    if (pid == 0) {
      ::setsid();
      int sfd = ::open(slave.c_str(), O_RDWR);
      if (sfd < 0) _exit(126);
      ::ioctl(sfd, TIOCSCTTY, 0);
      for (int i = 0; i < 3; ++i) ::dup2(sfd, i);
      if (!root || !s_.privileged) ::fchown(sfd, s_.uid, s_.gid);
      become_and_exec({s_.shell, "-l"}, env, s_.working_dir, root, true);
    }
    if (!sys::send_message(conn, Json{{"pid", pid}}.dump(), {master.get()})) {
      ::kill(pid, SIGKILL);
      return fail(ErrorCode::kUnavailable, "could not hand the terminal to kmd");
    }
    return pid;
  }

  Spec s_;
};

}  // namespace

int init_main() {
  // kmd set PDEATHSIG: if kmd dies while this sandbox is being built, the half-built sandbox
  // goes with it (kmd's restart cleans up by name). Cleared below, once the sandbox is ready.
  auto msg = sys::recv_message(kInitSetupFd);
  if (!msg) return 1;
  auto reply = [](const Json& j) { (void)sys::send_message(kInitSetupFd, j.dump()); };
  Json j = Json::parse(msg->data, nullptr, false);
  if (!j.is_object() || !j.contains("spec") || msg->fds.empty()) {
    reply(Json{{"error", "malformed setup message"}});
    return 1;
  }
  auto spec = spec_from_json(j["spec"].dump());
  if (!spec) {
    reply(Json{{"error", spec.error().to_string()}});
    return 1;
  }
  if (msg->fds.size() != 1 + spec->file_binds.size()) {
    reply(Json{{"error", "malformed setup message (descriptors)"}});
    return 1;
  }
  std::vector<UniqueFd> binds;
  for (size_t i = 1; i < msg->fds.size(); ++i) binds.push_back(std::move(msg->fds[i]));
  Init init(std::move(*spec));
  auto s = init.setup(std::move(msg->fds[0]), std::move(binds));
  if (s) s = init.run_init_commands();
  if (s) s = init.finish();
  if (!s) {
    log_line("km: " + s.error().to_string());
    reply(Json{{"error", s.error().to_string()}});
    return 1;
  }
  // PID 1 itself: not dumpable (no ptrace by root inside), and filtered like everything else.
  ::prctl(PR_SET_DUMPABLE, 0);
  auto c = apply_seccomp(/*allow_ptrace=*/false);
  if (!c) {
    reply(Json{{"error", c.error().to_string()}});
    return 1;
  }
  // From here on the sandbox outlives kmd: it keeps running (and enforced) while kmd is down.
  ::prctl(PR_SET_PDEATHSIG, 0);
  reply(Json{{"ready", true}});
  ::close(kInitSetupFd);
  return init.serve();
}

}  // namespace km::sandbox
