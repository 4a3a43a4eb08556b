// Per-sandbox cgroups on pure cgroup v2 and hybrid hosts.
//
// km creates its cgroups beneath the cgroups kmd itself runs in, in every hierarchy it uses:
// on v2 `<kmd's v2 cgroup>/km/<id>` (BPF attach, freeze, kill, and the controllers v2 has), and
// on hybrid hosts additionally `<kmd's v1 cgroup>/km/<id>` in the v1 memory, pids and cpu
// hierarchies. A limit that no hierarchy can enforce is an error, never silently skipped.
// Thread-safety: SandboxCgroup is a value; operations on one sandbox must not race.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "km/base/result.h"
#include "km/base/unique_fd.h"

namespace km::sys {

struct CgroupLimits {
  double cpus = 0;        // 0: no limit
  uint64_t memory = 0;    // bytes; 0: no limit
  uint64_t pids = 0;      // 0: no limit
};

struct CgroupLayout {
  std::string v2_mount;                         // e.g. /sys/fs/cgroup/unified
  std::string v2_self;                          // kmd's v2 cgroup, e.g. "/" or "/system.slice/kmd.service"
  std::vector<std::string> v2_controllers;      // available to km's subtree
  std::map<std::string, std::string> v1_mount;  // controller -> mount point
  std::map<std::string, std::string> v1_self;   // controller -> kmd's cgroup in it
  std::string name = "km";                      // km's directory beneath kmd's cgroups

  // Reads /proc/self/cgroup and /proc/self/mountinfo.
  static Result<CgroupLayout> discover();
  std::string v2_base() const;  // <v2_mount><v2_self>/<name>
  bool v2_has(const std::string& controller) const;
};

class SandboxCgroup {
 public:
  // The paths of sandbox `id` (nothing is created).
  static SandboxCgroup of(const CgroupLayout& layout, const std::string& id);

  // Creates the cgroups and applies `limits`. Idempotent.
  Status create(const CgroupLimits& limits);
  // An O_DIRECTORY fd of the v2 cgroup (for CLONE_INTO_CGROUP and BPF attach).
  Result<UniqueFd> open_v2() const;
  // Moves `pid` into the v1 hierarchies (v2 placement is done by CLONE_INTO_CGROUP).
  Status add_v1(pid_t pid) const;
  Status freeze(bool frozen) const;
  Result<bool> frozen() const;
  // Kills every process and waits (bounded) until the cgroups are empty.
  Status kill_all() const;
  // Kills, then removes every cgroup directory. Idempotent.
  Status destroy() const;
  bool exists() const;
  Result<std::vector<pid_t>> pids() const;
  // How many forks the pids limit refused (pids.events "max").
  Result<uint64_t> pids_limit_hits() const;
  // Memory in use (bytes), from v2 memory.current or v1 memory.usage_in_bytes.
  Result<uint64_t> memory_current() const;

  const std::string& v2_path() const { return v2_; }

 private:
  std::string v2_;
  std::map<std::string, std::string> v1_;  // controller -> path
  std::vector<std::string> v2_controllers_;
};

// Lists sandbox IDs that have a cgroup under km's base (to find orphans).
std::vector<std::string> list_sandbox_cgroups(const CgroupLayout& layout);

}  // namespace km::sys
