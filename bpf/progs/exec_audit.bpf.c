// Exec audit: every program started in a watched cgroup (a sandbox's), however it was started
// (shells, bash -c, an agent's tool calls, daemons), as one ring-buffer event. Nothing inside a
// sandbox can turn it off: sandboxes cannot use bpf(2) and the program is not attached to them
// but to the sched_process_exec tracepoint of the whole host, filtered by cgroup.
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "km/bpf_abi/exec_event.h"

char LICENSE[] SEC("license") = "GPL";

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((void *)(ptr) - __builtin_offsetof(type, member)))
#endif

_Static_assert(sizeof(struct km_exec_event) == KM_EXEC_EVENT_SIZE, "km_exec_event layout");

// cgroup id -> 1, for the sandboxes being audited (kmd fills it).
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, __u64);
  __type(value, __u32);
} watched SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 4 << 20);
} events SEC(".maps");

// Events that did not fit in the ring buffer (the reader was behind).
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} lost SEC(".maps");

SEC("raw_tracepoint/sched_process_exec")
int km_exec(struct bpf_raw_tracepoint_args *ctx) {
  __u64 cgroup = bpf_get_current_cgroup_id();
  if (!bpf_map_lookup_elem(&watched, &cgroup)) return 0;
  struct km_exec_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) {
    __u32 zero = 0;
    __u64 *n = bpf_map_lookup_elem(&lost, &zero);
    if (n) *n += 1;
    return 0;
  }
  struct task_struct *task = (struct task_struct *)ctx->args[0];
  struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
  e->cgroup_id = cgroup;
  e->boot_ns = bpf_ktime_get_boot_ns();
  e->pid = BPF_CORE_READ(task, tgid);
  e->ppid = BPF_CORE_READ(task, real_parent, tgid);
  __u64 ids = bpf_get_current_uid_gid();
  e->uid = (__u32)ids;
  e->gid = (__u32)(ids >> 32);
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  const char *filename = BPF_CORE_READ(bprm, filename);
  if (bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename) < 0) e->filename[0] = 0;
  unsigned long start = BPF_CORE_READ(task, mm, arg_start);
  unsigned long end = BPF_CORE_READ(task, mm, arg_end);
  unsigned long len = end > start ? end - start : 0;
  e->args_truncated = len > KM_EXEC_ARGS_MAX;
  __u32 n = len > KM_EXEC_ARGS_MAX ? KM_EXEC_ARGS_MAX : (__u32)len;
  e->args_len = 0;
  if (n > 0 && n <= KM_EXEC_ARGS_MAX && bpf_probe_read_user(e->args, n, (const void *)start) == 0) e->args_len = n;
  // The working directory as the process sees it: walk dentries up to each mount's root and
  // then across to the mount point, until the root of the process's mount namespace (for a
  // sandbox, its own root). Components go innermost first; userspace joins them.
  struct path pwd = BPF_CORE_READ(task, fs, pwd);
  struct dentry *d = pwd.dentry;
  struct mount *mnt = container_of(pwd.mnt, struct mount, mnt);
  e->cwd_parts = 0;
  e->cwd_truncated = 1;
  int parts = 0;
#pragma unroll
  for (int i = 0; i < 2 * KM_EXEC_CWD_PARTS; i++) {
    struct dentry *root = BPF_CORE_READ(mnt, mnt.mnt_root);
    struct dentry *parent = BPF_CORE_READ(d, d_parent);
    if (d == root || d == parent) {
      struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
      if (up == mnt || !up) {
        e->cwd_truncated = 0;
        break;
      }
      d = BPF_CORE_READ(mnt, mnt_mountpoint);
      mnt = up;
      continue;
    }
    if (parts >= KM_EXEC_CWD_PARTS) break;
    const unsigned char *name = BPF_CORE_READ(d, d_name.name);
    bpf_probe_read_kernel_str(e->cwd[parts & (KM_EXEC_CWD_PARTS - 1)], KM_EXEC_CWD_PART_MAX, name);
    parts++;
    d = parent;
  }
  e->cwd_parts = parts;
  bpf_ringbuf_submit(e, 0);
  return 0;
}
