// Confinement applied to every process that runs inside a sandbox (and to its init once the
// sandbox is built): no new privileges, a seccomp filter, a Landlock write policy and the
// capability set. Called in a forked child before exec; async-signal-safe use is not
// required because the sandbox init is single-threaded.
#pragma once

#include <string>
#include <vector>

#include "km/base/result.h"

namespace km::sandbox {

// The seccomp policy (default allow; these fail with EPERM, or ENOSYS for clone3):
//   kernel modules, kexec, bpf, perf_event_open, mount and the new mount API, pivot_root,
//   swap, reboot, clock setting, keyctl/add_key/request_key, io_uring, userfaultfd,
//   open_by_handle_at, ptrace of anything (see below), unshare/clone/setns of new namespaces,
//   ioctl TIOCSTI/TIOCLINUX; non-native ABIs (i386, x32) are killed.
// `allow_ptrace` keeps ptrace (within the pid namespace) for debuggers when privileged.
Status apply_seccomp(bool allow_ptrace);

// Landlock: writes (create, remove, write, truncate, link, make-*) are allowed only beneath
// `writable` (absolute paths inside the sandbox; missing ones are skipped); reads are not
// restricted here (denyRead is enforced with mounts). Fails if Landlock is unavailable.
Status apply_landlock(const std::vector<std::string>& writable);
int landlock_abi();

// Capabilities: none for an unprivileged user; for privileged root inside the user namespace,
// Docker's default set without NET_RAW (no NET_ADMIN, SYS_ADMIN, SYS_PTRACE, SYS_MODULE, ...),
// so root inside cannot change routes, netfilter, mounts or the enforcer.
// Call while still root inside: it drops the bounding and ambient sets; for privileged root it
// also sets the permitted and effective sets, otherwise the caller's change to the sandbox
// user clears them.
Status drop_capabilities(bool privileged_root);

}  // namespace km::sandbox
