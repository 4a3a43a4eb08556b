// The exec audit (bpf/progs/exec_audit.bpf.c) from userspace: load and attach it once per host
// (pinned under a bpffs directory, so it stays attached and keeps its ring buffer across kmd
// restarts), choose which cgroups it watches, and read its events.
// Thread-safety: watch/unwatch may be called from any thread; poll from one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "km/base/result.h"
#include "km/base/unique_fd.h"

struct ring_buffer;
struct exec_audit;

namespace km::bpf {

struct ExecEvent {
  uint64_t cgroup_id = 0;
  uint64_t boot_ns = 0;
  uint32_t pid = 0, ppid = 0, uid = 0, gid = 0;
  std::string comm, filename;
  std::vector<std::string> argv;
  bool truncated = false;
  std::string cwd;  // as the process sees it; "..." first when deeper than the bound
};

// Decodes one ring-buffer record; an error for a record of the wrong size.
Result<ExecEvent> decode_exec_event(const void* data, size_t size);

class ExecAudit {
 public:
  // Loads and attaches the program and pins it in `pin_dir` (a directory on a bpffs), or opens
  // what an earlier kmd pinned there. Errors carry the verifier log's tail.
  static Result<std::unique_ptr<ExecAudit>> open(const std::string& pin_dir);
  ~ExecAudit();
  ExecAudit(const ExecAudit&) = delete;
  ExecAudit& operator=(const ExecAudit&) = delete;

  Status watch(uint64_t cgroup_id);
  Status unwatch(uint64_t cgroup_id);
  // Delivers what is in the ring buffer, waiting up to `timeout_ms` for the first event.
  // Returns the number delivered.
  Result<int> poll(int timeout_ms, const std::function<void(const ExecEvent&)>& deliver);
  // Events the kernel could not queue because the reader was behind.
  uint64_t lost() const;

  // Removes the pins (the program detaches once nothing holds it). Idempotent.
  static Status unpin(const std::string& pin_dir);

 private:
  ExecAudit() = default;
  static int on_record(void* self, void* data, size_t size);

  exec_audit* skel_ = nullptr;
  UniqueFd link_, watched_, events_, lost_;
  ring_buffer* rb_ = nullptr;
  const std::function<void(const ExecEvent&)>* deliver_ = nullptr;
  int delivered_ = 0;
};

// The id BPF sees for a cgroup (v2): the inode number of its directory.
Result<uint64_t> cgroup_id(const std::string& v2_dir);

// Makes `dir` a bpffs mount (mounting one if it is not), for pins.
Status ensure_bpffs(const std::string& dir);

// libbpf's diagnostics (the verifier log among them) are kept from the first load on; this
// returns and clears what was kept, for error messages.
void capture_libbpf_log();
std::string take_libbpf_log();

// The sum over CPUs of a one-entry per-CPU array of counters (the programs' lost events).
uint64_t sum_percpu_counter(int map_fd);

}  // namespace km::bpf
