// kmd's side of a sandbox's life: builds host state, starts km-sandbox-init in new namespaces
// inside the sandbox's cgroups, and tears everything down by name (so a teardown after a
// crash needs nothing but the ID).
//
// Host state of sandbox <id> (everything derives from the ID):
//   <state>/sandboxes/<id>/{upper,work,workspace,home,init.log}   persistent
//   <runtime>/sandboxes/<id>/{root,lower,ctl.sock,netns}          while it runs
//   cgroups <kmd's cgroup>/km/<id> (v2, and v1 memory/pids/cpu on hybrid hosts)
// Thread-safety: methods on different sandboxes may run concurrently.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>

#include "km/base/result.h"
#include "km/base/unique_fd.h"
#include "km/sandbox/plan.h"
#include "km/sandbox/spec.h"
#include "km/sys/cgroup.h"

namespace km::sandbox {

struct LauncherConfig {
  HostLayout layout;
  std::string init_path;  // km-sandbox-init
  std::string enforcer_path;  // km-enforcer
  std::string bpf_dir;        // a bpffs directory for per-sandbox pins (kernel enforcement)
  int setup_timeout_ms = 600000;  // includes initCommands
  std::string cgroup_name = "km";  // tests use their own, so they never touch a real kmd's
  // Called with a sandbox's new (v2) cgroup id and uid base, before anything runs in it; an
  // error fails the creation (kmd attaches the exec audit here).
  std::function<Status(const std::string& id, uint64_t cgroup_id, uint32_t uid_base)> on_cgroup;
  // The descriptor a sandbox's enforcer writes its audit lines to (kmd: the write end of the
  // pipe it reads into the sandbox's audit trail), asked for at each enforcer start. Unset: the
  // enforcer appends to egress_audit_path().
  std::function<Result<UniqueFd>(const std::string& id)> enforcer_audit;
};

struct Started {
  pid_t pid = 0;
  uint64_t start_time = 0;  // /proc/<pid>/stat starttime, to tell a reused PID apart
};

class Launcher {
 public:
  // Checks kernel features and prepares the state and runtime directories.
  static Result<Launcher> create(LauncherConfig config);

  // Creates (fresh) or restarts (after stop) the sandbox and waits until it is ready.
  // A sandbox with spec.net.egress gets its link rules and an enforcer (started with
  // `enforcer_config`, JSON) before its init runs anything.
  Result<Started> start(const Spec& spec, const sys::CgroupLimits& limits, uint32_t uid_base, const std::string& image,
                        const std::string& enforcer_config = "");
  // Restarts the sandbox's enforcer if it has one and it is gone. True when it was restarted.
  Result<bool> ensure_enforcer(const std::string& id);
  // Where the enforcer appends the sandbox's egress audit events (JSON lines) when no
  // enforcer_audit is configured.
  std::string egress_audit_path(const std::string& id) const;
  // Where the sandbox's kernel enforcement is pinned ("" without a bpffs directory).
  std::string bpf_pins(const std::string& id) const;
  // Kills every process and releases runtime state; keeps the disk. Idempotent.
  Status stop(const std::string& id);
  // stop() plus the persistent directories. Idempotent.
  Status destroy(const std::string& id);
  Status freeze(const std::string& id, bool frozen);

  // True when the init of `started` is still that process and alive.
  bool alive(const Started& started) const;
  Result<UniqueFd> connect(const std::string& id) const;
  // Where kmd makes the pipe of the sandbox's enforcer audit (in its runtime directory).
  std::string enforcer_audit_fifo(const std::string& id) const { return runtime_dir(id) + "/audit.fifo"; }

  std::string ctl_path(const std::string& id) const;
  std::string runtime_dir(const std::string& id) const;
  const sys::CgroupLayout& cgroups() const { return cgroups_; }
  const LauncherConfig& config() const { return config_; }

 private:
  Launcher(LauncherConfig c, sys::CgroupLayout l) : config_(std::move(c)), cgroups_(std::move(l)) {}
  std::function<Result<UniqueFd>()> enforcer_audit_for(const std::string& id) const;
  LauncherConfig config_;
  sys::CgroupLayout cgroups_;
};

// Copies a sandbox directory tree (regular files, directories, symlinks), shifting owners
// from one sandbox's id range to another's so the copy belongs to the new sandbox. Does not
// follow symlinks; skips devices, sockets and FIFOs.
Status copy_tree_shifted(const std::string& from, const std::string& to, uint32_t from_base, uint32_t to_base);
// Removes a directory tree without following symlinks. Idempotent.
Status remove_tree(const std::string& path);

}  // namespace km::sandbox
