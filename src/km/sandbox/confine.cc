#include "km/sandbox/confine.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/landlock.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <sys/stat.h>

#include <cstring>

#include "km/base/unique_fd.h"

// Debian 12's kernel headers predate Landlock ABI 3; the value is fixed by the kernel ABI.
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif

namespace km::sandbox {

namespace {

// Owns a libseccomp context.
class Filter {
 public:
  explicit Filter(uint32_t def) : ctx_(seccomp_init(def)) {}
  ~Filter() {
    if (ctx_) seccomp_release(ctx_);
  }
  Filter(const Filter&) = delete;
  Filter& operator=(const Filter&) = delete;
  scmp_filter_ctx get() const { return ctx_; }

 private:
  scmp_filter_ctx ctx_;
};

Status rule_errno(scmp_filter_ctx ctx, const char* name, int err) {
  int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return ok();  // not on this architecture
  int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(static_cast<uint32_t>(err)), nr, 0);
  if (rc < 0) return fail(ErrorCode::kInternal, std::string("seccomp rule for ") + name + ": " + std::strerror(-rc));
  return ok();
}

}  // namespace

Status apply_seccomp(bool allow_ptrace) {
  Filter f(SCMP_ACT_ALLOW);
  if (!f.get()) return fail(ErrorCode::kInternal, "seccomp_init failed");
  // Only the native ABI: x32 and i386 syscalls would bypass a filter written for x86_64.
  if (seccomp_attr_set(f.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) < 0) {
    return fail(ErrorCode::kInternal, "seccomp: cannot set the bad-architecture action");
  }
  static const char* const kDenied[] = {
      "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
      "perf_event_open", "mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree",
      "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "swapon", "swapoff",
      "reboot", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
      "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter",
      "io_uring_register", "userfaultfd", "open_by_handle_at", "name_to_handle_at", "acct",
      "quotactl", "quotactl_fd", "lookup_dcookie", "nfsservctl", "vhangup", "syslog",
      "iopl", "ioperm", "setns", "kcmp", "fanotify_init"};
  for (const char* name : kDenied) KM_TRY(rule_errno(f.get(), name, EPERM));
  if (!allow_ptrace) KM_TRY(rule_errno(f.get(), "ptrace", EPERM));
  // clone3 passes flags in memory that seccomp cannot inspect: ENOSYS makes libc fall back
  // to clone(2), whose flags are checked below.
  KM_TRY(rule_errno(f.get(), "clone3", ENOSYS));
  for (uint64_t flag : {static_cast<uint64_t>(CLONE_NEWNS), static_cast<uint64_t>(CLONE_NEWUSER),
                        static_cast<uint64_t>(CLONE_NEWNET), static_cast<uint64_t>(CLONE_NEWPID),
                        static_cast<uint64_t>(CLONE_NEWUTS), static_cast<uint64_t>(CLONE_NEWIPC),
                        static_cast<uint64_t>(CLONE_NEWCGROUP), static_cast<uint64_t>(CLONE_NEWTIME)}) {
    if (seccomp_rule_add(f.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                         SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)) < 0 ||
        seccomp_rule_add(f.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                         SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)) < 0) {
      return fail(ErrorCode::kInternal, "seccomp: cannot add namespace rules");
    }
  }
  for (unsigned long req : {static_cast<unsigned long>(TIOCSTI), static_cast<unsigned long>(TIOCLINUX)}) {
    if (seccomp_rule_add(f.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                         SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, req)) < 0) {
      return fail(ErrorCode::kInternal, "seccomp: cannot add ioctl rules");
    }
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail(Error::from_errno("prctl(NO_NEW_PRIVS)"));
  int rc = seccomp_load(f.get());
  if (rc < 0) return fail(ErrorCode::kInternal, std::string("seccomp_load: ") + std::strerror(-rc));
  return ok();
}

int landlock_abi() {
  long v = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return v < 0 ? 0 : static_cast<int>(v);
}

Status apply_landlock(const std::vector<std::string>& writable) {
  int abi = landlock_abi();
  if (abi < 1) {
    return fail(Error(ErrorCode::kUnavailable, "Landlock is not available in this kernel")
                    .with_hint("boot a kernel with CONFIG_SECURITY_LANDLOCK and lsm=landlock,..."));
  }
  uint64_t write_rights = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR |
                          LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
                          LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
                          LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |
                          LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM;
  if (abi >= 2) write_rights |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3) write_rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
  landlock_ruleset_attr attr{};
  attr.handled_access_fs = write_rights;
  UniqueFd ruleset(static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0)));
  if (!ruleset) return fail(Error::from_errno("landlock_create_ruleset"));
  for (const std::string& path : writable) {
    UniqueFd dir(::open(path.c_str(), O_PATH | O_CLOEXEC));
    if (!dir) continue;  // absent paths grant nothing
    landlock_path_beneath_attr pb{};
    pb.allowed_access = write_rights;
    pb.parent_fd = dir.get();
    struct stat st {};
    if (::fstat(dir.get(), &st) == 0 && !S_ISDIR(st.st_mode)) {
      // Files (e.g. /dev/null) take only file rights.
      pb.allowed_access = LANDLOCK_ACCESS_FS_WRITE_FILE | (abi >= 3 ? LANDLOCK_ACCESS_FS_TRUNCATE : 0);
    }
    if (::syscall(SYS_landlock_add_rule, ruleset.get(), LANDLOCK_RULE_PATH_BENEATH, &pb, 0) != 0) {
      return fail(Error::from_errno("landlock_add_rule " + path));
    }
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail(Error::from_errno("prctl(NO_NEW_PRIVS)"));
  if (::syscall(SYS_landlock_restrict_self, ruleset.get(), 0) != 0) {
    return fail(Error::from_errno("landlock_restrict_self"));
  }
  return ok();
}

Status drop_capabilities(bool privileged_root) {
  uint64_t keep = 0;
  if (privileged_root) {
    for (int c : {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID,
                  CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_MKNOD, CAP_AUDIT_WRITE, CAP_SETFCAP}) {
      keep |= uint64_t{1} << c;
    }
  }
  for (int c = 0; c <= CAP_LAST_CAP; ++c) {
    if (keep & (uint64_t{1} << c)) continue;
    if (::prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL) {
      return fail(Error::from_errno("prctl(CAPBSET_DROP)"));
    }
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    return fail(Error::from_errno("prctl(CAP_AMBIENT_CLEAR_ALL)"));
  }
  if (!privileged_root) return ok();  // the switch to the sandbox user clears the rest
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  data[0].effective = data[0].permitted = static_cast<uint32_t>(keep);
  data[1].effective = data[1].permitted = static_cast<uint32_t>(keep >> 32);
  data[0].inheritable = data[1].inheritable = 0;
  if (::syscall(SYS_capset, &hdr, data) != 0) return fail(Error::from_errno("capset"));
  return ok();
}

}  // namespace km::sandbox
