#include "km/sandbox/launcher.h"

#include <fcntl.h>
#include <ftw.h>
#include <linux/mount.h>
#include <linux/sched.h>
#include <sys/prctl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include <nlohmann/json.hpp>

#include "km/base/file.h"
#include "km/base/strings.h"
#include "km/sandbox/confine.h"
#include "km/bpf/egress_programs.h"
#include "km/sandbox/egress.h"
#include "km/sandbox/protocol.h"
#include "km/sys/netlink.h"
#include "km/sys/unix_socket.h"

namespace km::sandbox {

namespace {

using Json = nlohmann::json;

Status mkdir_owned(const std::string& path, mode_t mode, uid_t uid, gid_t gid) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return fail(Error::from_errno("mkdir " + path));
  if (::chown(path.c_str(), uid, gid) != 0) return fail(Error::from_errno("chown " + path));
  if (::chmod(path.c_str(), mode) != 0) return fail(Error::from_errno("chmod " + path));
  return ok();
}

Status write_proc(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return fail(Error::from_errno("open " + path));
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    return fail(Error::from_errno("write " + path));
  }
  return ok();
}


int nftw_remove(const char* path, const struct stat*, int, struct FTW*) {
  return ::remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

}  // namespace


namespace {

struct CopyCtx {
  std::string from, to;
  uint32_t from_base, to_base;
  std::string error;
};
thread_local CopyCtx* g_copy = nullptr;

uid_t shifted(uint32_t id, const CopyCtx& c) {
  if (id >= c.from_base && id < c.from_base + kIdRange) return id - c.from_base + c.to_base;
  return 65534;  // outside the source's range: nobody
}

int copy_entry(const char* path, const struct stat* st, int type, struct FTW*) {
  CopyCtx& c = *g_copy;
  std::string rel = std::string(path).substr(c.from.size());
  std::string dst = c.to + rel;
  if (type == FTW_D) {
    if (::mkdir(dst.c_str(), st->st_mode & 07777) != 0 && errno != EEXIST) {
      c.error = "mkdir " + dst + ": " + std::strerror(errno);
      return -1;
    }
  } else if (type == FTW_SL) {
    char target[4096];
    ssize_t n = ::readlink(path, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = 0;
    if (::symlink(target, dst.c_str()) != 0 && errno != EEXIST) return 0;
  } else if (type == FTW_F && S_ISREG(st->st_mode)) {
    UniqueFd in(::open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, st->st_mode & 07777));
    if (!in || !out) {
      c.error = "copying " + rel + ": " + std::strerror(errno);
      return -1;
    }
    char buf[65536];
    ssize_t n;
    while ((n = ::read(in.get(), buf, sizeof buf)) > 0) {
      if (::write(out.get(), buf, static_cast<size_t>(n)) != n) {
        c.error = "writing " + dst + ": " + std::strerror(errno);
        return -1;
      }
    }
  } else {
    return 0;  // devices, sockets, FIFOs: not copied
  }
  if (::lchown(dst.c_str(), shifted(st->st_uid, c), shifted(st->st_gid, c)) != 0) {
    c.error = "chown " + dst + ": " + std::strerror(errno);
    return -1;
  }
  if (type == FTW_D || type == FTW_F) ::chmod(dst.c_str(), st->st_mode & 07777);  // chown clears setuid bits
  return 0;
}

}  // namespace

Status copy_tree_shifted(const std::string& from, const std::string& to, uint32_t from_base, uint32_t to_base) {
  CopyCtx c{from, to, from_base, to_base, ""};
  g_copy = &c;
  int rc = ::nftw(from.c_str(), copy_entry, 64, FTW_PHYS | FTW_MOUNT);
  g_copy = nullptr;
  if (rc != 0) return fail(ErrorCode::kInternal, c.error.empty() ? "copying " + from : c.error);
  return ok();
}

Status remove_tree(const std::string& path) {
  if (::nftw(path.c_str(), nftw_remove, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 && errno != ENOENT) {
    return fail(Error::from_errno("removing " + path));
  }
  return ok();
}

Result<Launcher> Launcher::create(LauncherConfig config) {
  // Fail closed on a kernel that cannot enforce what km promises.
  if (landlock_abi() < 1) {
    return fail(Error(ErrorCode::kUnavailable, "Landlock is not available")
                    .with_hint("km enforces filesystem policy with Landlock; boot a kernel with it enabled"));
  }
  if (::access(config.init_path.c_str(), X_OK) != 0) {
    return fail(Error::from_errno("km-sandbox-init at " + config.init_path).with_hint("reinstall km"));
  }
  KM_ASSIGN_OR_RETURN(sys::CgroupLayout cg, sys::CgroupLayout::discover());
  cg.name = config.cgroup_name;
  const HostLayout& h = config.layout;
  for (const std::string& d : {h.state_dir, h.state_dir + "/sandboxes", h.runtime_dir, h.runtime_dir + "/sandboxes"}) {
    KM_TRY(mkdir_owned(d, 0711, 0, 0));
  }
  return Launcher(std::move(config), std::move(cg));
}

std::string Launcher::runtime_dir(const std::string& id) const { return config_.layout.runtime_dir + "/sandboxes/" + id; }
std::string Launcher::ctl_path(const std::string& id) const { return runtime_dir(id) + "/ctl.sock"; }

Result<UniqueFd> Launcher::connect(const std::string& id) const { return sys::connect_unix(ctl_path(id)); }

bool Launcher::alive(const Started& s) const {
  if (s.pid <= 0) return false;
  if (::kill(s.pid, 0) != 0 && errno == ESRCH) return false;
  return sys::process_start_time(s.pid) == s.start_time;
}

std::string Launcher::bpf_pins(const std::string& id) const {
  return config_.bpf_dir.empty() ? "" : config_.bpf_dir + "/" + id;
}

std::string Launcher::egress_audit_path(const std::string& id) const {
  return sandbox_dir(config_.layout, id) + "/audit/egress.jsonl";
}

namespace {

// Opens the link rules' sockets in `netns_fd` and starts the enforcer described by
// rdir/enforcer.json, recording it in rdir/enforcer.pid.
Status launch_enforcer(const std::string& exe, const std::string& rdir, const std::string& sdir, int netns_fd,
                       const NetSpec& net, const std::string& audit_path, const std::string& bpf_pins,
                       const std::function<Result<UniqueFd>()>& audit_fd) {
  if (exe.empty()) return fail(ErrorCode::kFailedPrecondition, "no enforcer binary configured (km-enforcer)");
  KM_ASSIGN_OR_RETURN(EnforcerSockets socks, open_enforcer_sockets(netns_fd, net));
  // With kernel enforcement, the enforcer also gets the programs' maps (by descriptor).
  std::vector<UniqueFd> maps;
  if (!bpf_pins.empty() && ::access(bpf_pins.c_str(), F_OK) == 0) {
    KM_ASSIGN_OR_RETURN(bpf::EgressMaps m, bpf::open_pinned_egress_maps(bpf_pins));
    maps.push_back(std::move(m.allow4));
    maps.push_back(std::move(m.allow6));
    maps.push_back(std::move(m.orig_dst));
    maps.push_back(std::move(m.port_cookie));
    maps.push_back(std::move(m.events));
  }
  UniqueFd audit;
  if (audit_fd) {
    KM_ASSIGN_OR_RETURN(audit, audit_fd());
  } else {
    ::mkdir((sdir + "/audit").c_str(), 0700);
    audit.reset(::open(audit_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!audit) return fail(Error::from_errno("open " + audit_path));
  }
  std::string log_path = sdir + "/enforcer.log";
  UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!log) return fail(Error::from_errno("open " + log_path));
  std::vector<int> extra;
  for (const auto& m : maps) extra.push_back(m.get());
  auto p = spawn_enforcer(exe, rdir + "/enforcer.json", socks, audit.get(), log.get(), extra);
  if (!p) {
    std::string tail = read_file(log_path, 1 << 20).value_or("");
    if (tail.size() > 400) tail = tail.substr(tail.size() - 400);
    return fail(std::move(p).error().wrap(tail.empty() ? "enforcer" : "enforcer (" + tail + ")"));
  }
  return ok();
}

}  // namespace

std::function<Result<UniqueFd>()> Launcher::enforcer_audit_for(const std::string& id) const {
  if (!config_.enforcer_audit) return nullptr;
  return [this, id] { return config_.enforcer_audit(id); };
}

Result<bool> Launcher::ensure_enforcer(const std::string& id) {
  std::string rdir = runtime_dir(id);
  if (::access((rdir + "/enforcer.json").c_str(), F_OK) != 0) return false;
  auto rec = sys::read_process_record(rdir + "/enforcer.pid");
  if (rec && sys::process_alive(*rec)) return false;
  KM_ASSIGN_OR_RETURN(std::string spec_text, read_file(rdir + "/link.json", 1 << 16));
  auto j = nlohmann::json::parse(spec_text, nullptr, false);
  if (!j.is_object()) return fail(ErrorCode::kInvalidArgument, rdir + "/link.json is not JSON");
  NetSpec net;
  net.peer_address = j.value("peer_address", std::string());
  net.proxy_port = j.value("proxy_port", uint16_t{3128});
  UniqueFd netns(::open((rdir + "/netns").c_str(), O_RDONLY | O_CLOEXEC));
  if (!netns) return fail(Error::from_errno("open " + rdir + "/netns"));
  KM_TRY(launch_enforcer(config_.enforcer_path, rdir, sandbox_dir(config_.layout, id), netns.get(), net, egress_audit_path(id),
                         bpf_pins(id), enforcer_audit_for(id)));
  return true;
}

Result<Started> Launcher::start(const Spec& spec, const sys::CgroupLimits& limits, uint32_t base, const std::string& image,
                                const std::string& enforcer_config) {
  const std::string& id = spec.id;
  std::string sdir = sandbox_dir(config_.layout, id);
  std::string rdir = runtime_dir(id);
  uid_t user_uid = base + kSandboxUid;
  KM_TRY(mkdir_owned(sdir, 0711, 0, 0));
  KM_TRY(mkdir_owned(spec.upper_dir, 0755, base, base));
  KM_TRY(mkdir_owned(spec.work_dir, 0700, base, base));
  KM_TRY(mkdir_owned(spec.workspace_dir, 0755, user_uid, user_uid));
  KM_TRY(mkdir_owned(spec.home_dir, 0750, user_uid, user_uid));
  KM_TRY(mkdir_owned(rdir, 0711, 0, 0));
  KM_TRY(mkdir_owned(spec.root_dir, 0755, base, base));
  KM_TRY(mkdir_owned(spec.lower_dir, 0755, base, base));

  sys::SandboxCgroup cg = sys::SandboxCgroup::of(cgroups_, id);
  KM_TRY(cg.create(limits));
  KM_ASSIGN_OR_RETURN(UniqueFd cgfd, cg.open_v2());
  if (config_.on_cgroup) {
    struct stat cst {};
    if (::fstat(cgfd.get(), &cst) != 0) return fail(Error::from_errno("stat the sandbox's cgroup"));
    KM_TRY(config_.on_cgroup(id, static_cast<uint64_t>(cst.st_ino), base));
  }
  if (spec.net.egress && spec.net.enforcement != "proxy") {
    // Kernel enforcement: the programs are on the cgroup before anything runs in it, and pinned
    // so that they outlive this kmd and the enforcer (with an empty or stale allowlist they deny).
    std::string pins = bpf_pins(id);
    if (pins.empty()) return fail(ErrorCode::kFailedPrecondition, "no bpffs directory for kernel enforcement");
    (void)bpf::unpin_egress(pins);
    bpf::EgressSettings es;
    in_addr peer{};
    if (inet_pton(AF_INET, spec.net.peer_address.c_str(), &peer) != 1) return fail(ErrorCode::kInvalidArgument, "bad link address");
    std::memcpy(es.dns_addr.data(), &peer, 4);
    es.proxy_addr = es.dns_addr;
    es.dns_port = kEnforcerDnsPort;
    es.proxy_port = spec.net.proxy_port;
    es.redirect_misses = spec.net.enforcement == "both";
    KM_ASSIGN_OR_RETURN(auto progs, bpf::EgressPrograms::load(es));
    KM_TRY(progs->attach(cgfd.get()));
    KM_TRY(progs->pin(pins));
  }
  KM_ASSIGN_OR_RETURN(UniqueFd listen, sys::listen_unix(ctl_path(id), 0600));
  KM_ASSIGN_OR_RETURN(auto pair, sys::seqpacket_pair());
  UniqueFd log(::open((sdir + "/init.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log) return fail(Error::from_errno("open init.log"));
  UniqueFd exe(::open(config_.init_path.c_str(), O_PATH | O_CLOEXEC));
  if (!exe) return fail(Error::from_errno("open " + config_.init_path));

  int pidfd = -1;
  clone_args args{};
  args.flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC |
               CLONE_NEWCGROUP | CLONE_INTO_CGROUP | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.cgroup = static_cast<uint64_t>(cgfd.get());
  int child_sync = pair.second.get();
  int parent_sync = pair.first.get();
  int fds[3] = {child_sync, listen.get(), log.get()};
  int exe_fd = exe.get();
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0) return fail(Error::from_errno("clone3 (new namespaces into the sandbox cgroup)"));
  if (pid == 0) {
    // Child, from a multithreaded parent: async-signal-safe system calls only until exec.
    // Until the sandbox is set up, it dies with kmd (it holds copies of kmd's descriptors,
    // client connections among them); the init clears this once it is ready.
    ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    ::syscall(SYS_close, parent_sync);  // so that kmd's death reads as end-of-file below
    int high[3];
    for (int i = 0; i < 3; ++i) high[i] = static_cast<int>(::syscall(SYS_fcntl, fds[i], F_DUPFD_CLOEXEC, 100));
    for (int i = 0; i < 3; ++i) ::syscall(SYS_dup3, high[i], 3 + i, 0);
    char go = 0;
    if (::syscall(SYS_read, 3, &go, 1) != 1) ::syscall(SYS_exit_group, 120);
    // Become root of the new user namespace so that exec keeps its capabilities there.
    if (::syscall(SYS_setresgid, 0, 0, 0) != 0 || ::syscall(SYS_setresuid, 0, 0, 0) != 0) ::syscall(SYS_exit_group, 121);
    static char arg0[] = "km-sandbox-init";
    char* argv[] = {arg0, nullptr};
    char* envp[] = {nullptr};
    // kmd's working directory is no business of the sandbox's (nor of its exec audit).
    static char root[] = "/";
    (void)::syscall(SYS_chdir, root);
    ::syscall(SYS_execveat, exe_fd, "", argv, envp, AT_EMPTY_PATH);
    ::syscall(SYS_exit_group, 122);
  }
  UniqueFd child(pidfd);
  pair.second.reset();
  auto abort_child = [&](Error e) -> Unexpected<Error> {
    ::syscall(SYS_pidfd_send_signal, child.get(), SIGKILL, nullptr, 0);
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
    return fail(std::move(e));
  };
  std::string proc = "/proc/" + std::to_string(pid);
  std::string map = "0 " + std::to_string(base) + " " + std::to_string(kIdRange) + "\n";
  if (auto s = write_proc(proc + "/uid_map", map); !s) return abort_child(std::move(s).error());
  if (auto s = write_proc(proc + "/gid_map", map); !s) return abort_child(std::move(s).error());
  if (auto s = cg.add_v1(static_cast<pid_t>(pid)); !s) return abort_child(std::move(s).error());

  // The link: a veth whose other end lives in a private namespace of its own, where nothing
  // is routed anywhere (the enforcer will listen there).
  UniqueFd sandbox_net(::open((proc + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd sandbox_user(::open((proc + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
  if (!sandbox_net || !sandbox_user) return abort_child(Error::from_errno("open namespaces of the sandbox"));
  std::string pin = rdir + "/netns";
  (void)sys::remove_pinned_netns(pin);
  auto outer = sys::create_pinned_netns(pin);
  if (!outer) return abort_child(std::move(outer).error());
  {
    auto nl = sys::Netlink::open_in(outer->get());
    if (!nl) return abort_child(std::move(nl).error());
    if (auto s = nl->create_veth("km0", spec.net.ifname, sandbox_net.get()); !s) return abort_child(std::move(s).error());
    auto idx = nl->link_index("km0");
    if (!idx) return abort_child(std::move(idx).error());
    in_addr a{};
    inet_pton(AF_INET, spec.net.peer_address.c_str(), &a);
    if (auto s = nl->add_ipv4(*idx, a.s_addr, spec.net.prefix_len); !s) return abort_child(std::move(s).error());
    if (auto s = nl->set_up(*idx); !s) return abort_child(std::move(s).error());
  }
  if (spec.net.egress) {
    // The enforcer is up before the init runs anything (initCommands may need the network).
    if (enforcer_config.empty()) return abort_child(Error(ErrorCode::kInternal, "a sandbox with egress needs an enforcer config"));
    if (auto s = apply_ruleset(outer->get(), link_ruleset(spec.net)); !s) return abort_child(std::move(s).error());
    nlohmann::json link{{"peer_address", spec.net.peer_address}, {"proxy_port", spec.net.proxy_port}};
    if (auto s = write_file_atomic(rdir + "/link.json", link.dump(), 0600); !s) return abort_child(std::move(s).error());
    if (auto s = write_file_atomic(rdir + "/enforcer.json", enforcer_config, 0600); !s) return abort_child(std::move(s).error());
    if (auto s = launch_enforcer(config_.enforcer_path, rdir, sdir, outer->get(), spec.net, egress_audit_path(id),
                                 bpf_pins(id), enforcer_audit_for(id));
        !s) {
      return abort_child(std::move(s).error().wrap("starting the enforcer"));
    }
  }

  // The lower layer, idmapped into the sandbox's user namespace: host root's files appear as
  // the sandbox root's, so copy-up works, while the host's files stay read-only underneath.
  // A detached, non-recursive clone of the host root (or the image): it never appears in the
  // host's mount table, and carries none of the host's submounts (/proc, /run, ...).
  std::string lower_src = image == "host" || image.empty() ? "/" : image;
  UniqueFd tree(static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, lower_src.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)));
  if (!tree) return abort_child(Error::from_errno("open_tree " + lower_src));
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  attr.userns_fd = static_cast<uint64_t>(sandbox_user.get());
  if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
    return abort_child(Error::from_errno("idmapping the lower layer").with_hint("km needs idmapped mounts (Linux 5.12+, ext4/xfs/btrfs)"));
  }

  // Files bound over the sandbox's own (private copies of TLS libraries): detached clones,
  // read-only, which the sandbox can neither write nor make writable (the flags are locked
  // once they cross into its user namespace). Executable even when the copy's filesystem is not.
  std::vector<UniqueFd> binds;
  std::vector<int> setup_fds = {tree.get()};
  for (const FileBind& b : spec.file_binds) {
    UniqueFd f(static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, b.source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)));
    if (!f) return abort_child(Error::from_errno("open_tree " + b.source));
    mount_attr fa{};
    fa.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    fa.attr_clr = MOUNT_ATTR_NOEXEC;
    if (::syscall(SYS_mount_setattr, f.get(), "", AT_EMPTY_PATH, &fa, sizeof fa) != 0) {
      return abort_child(Error::from_errno("making the bind of " + b.source + " read-only"));
    }
    setup_fds.push_back(f.get());
    binds.push_back(std::move(f));
  }

  char go = 1;
  if (::write(pair.first.get(), &go, 1) != 1) return abort_child(Error::from_errno("starting the sandbox init"));
  Json setup{{"spec", Json::parse(to_json(spec))}};
  if (auto s = sys::send_message(pair.first.get(), setup.dump(), setup_fds); !s) {
    return abort_child(std::move(s).error().wrap("sending the sandbox spec"));
  }
  auto reply = sys::recv_message_timeout(pair.first.get(), config_.setup_timeout_ms);
  if (!reply) {
    // The init died before answering: its exit status says why.
    return abort_child(std::move(reply).error().wrap("waiting for the sandbox to start (see " + sdir + "/init.log)"));
  }
  Json r = Json::parse(reply->data, nullptr, false);
  if (!r.is_object() || !r.value("ready", false)) {
    std::string why = r.is_object() && r.contains("error") ? r["error"].get<std::string>() : "unknown failure";
    return abort_child(Error(ErrorCode::kFailedPrecondition, why));
  }
  Started st{static_cast<pid_t>(pid), sys::process_start_time(static_cast<pid_t>(pid))};
  // kmd is the init's parent until kmd restarts: reap it when it ends, so no zombie stays.
  std::thread([p = static_cast<pid_t>(pid)] { ::waitpid(p, nullptr, 0); }).detach();
  return st;
}

Status Launcher::stop(const std::string& id) {
  // Every step runs even if an earlier one failed (a retry finishes the rest); the first
  // error is reported.
  std::string rdir = runtime_dir(id);
  if (auto rec = sys::read_process_record(rdir + "/enforcer.pid")) sys::kill_process(*rec);
  Status steps[] = {sys::SandboxCgroup::of(cgroups_, id).destroy(), sys::remove_pinned_netns(rdir + "/netns"),
                    remove_tree(rdir), bpf_pins(id).empty() ? ok() : bpf::unpin_egress(bpf_pins(id))};
  for (Status& s : steps) {
    if (!s) return s;
  }
  return ok();
}

Status Launcher::destroy(const std::string& id) {
  KM_TRY(stop(id));
  return remove_tree(sandbox_dir(config_.layout, id));
}

Status Launcher::freeze(const std::string& id, bool frozen) {
  return sys::SandboxCgroup::of(cgroups_, id).freeze(frozen);
}

}  // namespace km::sandbox
