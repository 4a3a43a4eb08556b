/* The exec audit event, shared by bpf/progs/exec_audit.bpf.c and src/km/bpf/exec_audit.cc.
 * Explicit, fixed-size, host-order fields; both sides check the size. */
#ifndef KM_BPF_ABI_EXEC_EVENT_H
#define KM_BPF_ABI_EXEC_EVENT_H

#define KM_EXEC_ARGS_MAX 512
#define KM_EXEC_FILENAME_MAX 256
#define KM_EXEC_COMM_MAX 16
#define KM_EXEC_CWD_PARTS 16   /* path components of the working directory, innermost first */
#define KM_EXEC_CWD_PART_MAX 32

struct km_exec_event {
  __u64 cgroup_id;     /* the cgroup (v2) the process runs in */
  __u64 boot_ns;       /* bpf_ktime_get_boot_ns() at exec */
  __u32 pid;           /* thread group id */
  __u32 ppid;          /* parent's thread group id */
  __u32 uid;           /* host uid (kmd maps it into the sandbox's range) */
  __u32 gid;
  __u32 args_len;      /* bytes of args used: argv strings, each NUL-terminated */
  __u32 args_truncated;/* 1 when argv was longer than KM_EXEC_ARGS_MAX */
  char comm[KM_EXEC_COMM_MAX];
  char filename[KM_EXEC_FILENAME_MAX];
  char args[KM_EXEC_ARGS_MAX];
  __u32 cwd_parts;      /* components filled in cwd (innermost first) */
  __u32 cwd_truncated;  /* 1 when the directory is deeper than KM_EXEC_CWD_PARTS */
  char cwd[KM_EXEC_CWD_PARTS][KM_EXEC_CWD_PART_MAX];
};

#define KM_EXEC_EVENT_SIZE \
  (8 + 8 + 6 * 4 + KM_EXEC_COMM_MAX + KM_EXEC_FILENAME_MAX + KM_EXEC_ARGS_MAX + 8 + KM_EXEC_CWD_PARTS * KM_EXEC_CWD_PART_MAX)

#endif
