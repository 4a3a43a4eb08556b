// TLS plaintext capture: OpenSSL's SSL_write, SSL_read, SSL_write_ex and SSL_read_ex, and
// GnuTLS's gnutls_record_send(2) and gnutls_record_recv, in the processes of watched cgroups
// (sandboxes'), one ring-buffer event per call that moved bytes.
//
// A uprobe at entry keeps the call's arguments; the uretprobe emits the event with
// the byte count the call actually transferred (the return value, or the *written/*readbytes
// out-parameter of the _ex variants, read at return) and a bounded prefix of the plaintext
// (the buffer is filled by then for reads and still the caller's for writes).
//
// The socket is learnt from the call itself, and only in watched processes: on a connection's
// first calls, the entry probe notes the send (write_seq) or receive (copied_seq) position of
// each TCP socket in the process's file table, and the return probe looks for the one socket
// that moved during the call. Its fd and the kernel's view of both ends are then kept for the
// connection (keyed by process and SSL*), so later calls, and calls served from OpenSSL's
// buffers, carry them too. No system call hook: processes outside sandboxes pay nothing for
// this. Clients with memory BIOs (node) move no socket inside SSL_*: after a few tries their
// connections stay without a socket. If two sockets of a process move during one call (another
// thread's), the call does not decide, and a later one does.
//
// The probes are on the library's inode, so every process on the host that maps it traps; all
// but watched cgroups return after one hash lookup (see docs/tls-capture.md for a private copy
// of the library per sandbox, which avoids even that).
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "km/bpf_abi/tls_capture.h"

char LICENSE[] SEC("license") = "GPL";

_Static_assert(sizeof(struct km_tls_event) == KM_TLS_EVENT_SIZE, "km_tls_event layout");
_Static_assert(sizeof(struct km_tls_event_data) == KM_TLS_EVENT_DATA_SIZE, "km_tls_event_data layout");

#define SCAN_FDS 256    // file table slots looked at for a connection's socket
#define SNAP_MAX 8      // TCP sockets noted per call; more and the call does not decide
#define SCAN_TRIES 8    // calls per connection that may scan before it is left without a socket
#define KM_IPPROTO_TCP 6
#define KM_S_IFMT 0170000
#define KM_S_IFSOCK 0140000
#define KM_AF_INET 2
#define KM_AF_INET6 10

// Whether to learn connections' sockets (fixed at load).
const volatile bool resolve_sockets = true;

// cgroup id -> sandbox (kmd fills it).
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64);
  __type(value, struct km_tls_sandbox);
} sandboxes SEC(".maps");

// The socket a call used, as the kernel saw it.
struct peer {
  __s32 fd;
  __u16 family;
  __u16 remote_port;
  __u16 local_port;
  __u16 pad;
  __u8 remote_addr[16];
};

// A probed call in progress, keyed by thread and the stack pointer at entry (the return
// address's slot): the return probe finds its own call exactly, nested calls (TLS inside TLS:
// an HTTPS proxy's tunnel) are separate calls, and a call whose return was never seen (the
// thread died inside it) only ages out of the LRU map without disturbing later ones.
struct call_key {
  __u64 pid_tgid;
  __u64 sp;
};

// A TCP socket's position when the call started.
struct snap {
  __u64 sk;
  __s32 fd;
  __u32 seq;  // write_seq for sends, copied_seq for receives
};

struct call {
  __u64 ssl;
  __u64 buf;
  __u64 out;  // size_t *written / *readbytes of the _ex variants
  __u32 sandbox;
  __u32 sandbox_flags;
  __u8 fn;
  __u8 scanned;  // the entry probe looked for the connection's socket
  __u8 nsnap;    // entries of snap[] in use; SNAP_MAX + 1: too many sockets to tell
  __u8 pad[5];
  struct snap snap[SNAP_MAX];
};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, struct call_key);
  __type(value, struct call);
} calls SEC(".maps");

struct conn_key {
  __u64 ssl;
  __u32 tgid;
  __u32 pad;
};

#define DIR_NONE 0
#define DIR_WRITE 1
#define DIR_READ 2

struct conn {
  struct peer peer;  // fd -1 until learnt
  __u8 last_dir;     // DIR_*: a call in the other direction starts a new message
  __u8 tries;        // calls that scanned for the socket
  __u8 pad[6];
};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct conn_key);
  __type(value, struct conn);
} conns SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 8 << 20);
} events SEC(".maps");

// Events that did not fit in the ring buffer (the reader was behind).
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} lost SEC(".maps");

static __always_inline struct sock *tcp_sock_of(struct file **fds, __u32 fd) {
  struct file *f = NULL;
  if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) != 0 || !f) return NULL;
  umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
  if ((mode & KM_S_IFMT) != KM_S_IFSOCK) return NULL;
  struct socket *sock = BPF_CORE_READ(f, private_data);
  struct sock *sk = BPF_CORE_READ(sock, sk);
  if (!sk || BPF_CORE_READ(sk, sk_protocol) != KM_IPPROTO_TCP) return NULL;
  __u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
  if (family != KM_AF_INET && family != KM_AF_INET6) return NULL;
  return sk;
}

static __always_inline __u32 position(struct sock *sk, __u8 fn) {
  struct tcp_sock *tp = (struct tcp_sock *)sk;
  return (fn & 1) ? BPF_CORE_READ(tp, copied_seq) : BPF_CORE_READ(tp, write_seq);
}

struct scan {
  struct file **fds;
  __u32 max_fds;
  __u8 fn;
  struct call *call;
};

static long scan_one(__u32 i, void *ctx) {
  struct scan *s = ctx;
  if (i >= s->max_fds) return 1;
  struct sock *sk = tcp_sock_of(s->fds, (__u32)i);
  if (!sk) return 0;
  __u8 n = s->call->nsnap;
  if (n >= SNAP_MAX) {
    s->call->nsnap = SNAP_MAX + 1;  // too many to tell: this call does not decide
    return 1;
  }
  s->call->snap[n].sk = (__u64)sk;
  s->call->snap[n].fd = (__s32)i;
  s->call->snap[n].seq = position(sk, s->fn);
  s->call->nsnap = n + 1;
  return 0;
}

static __always_inline int on_entry(struct pt_regs *ctx, __u8 fn) {
  __u64 cgroup = bpf_get_current_cgroup_id();
  struct km_tls_sandbox *sb = bpf_map_lookup_elem(&sandboxes, &cgroup);
  if (!sb) return 0;
  struct call_key k = {.pid_tgid = bpf_get_current_pid_tgid(), .sp = PT_REGS_SP(ctx)};
  struct call fresh = {};
  if (bpf_map_update_elem(&calls, &k, &fresh, BPF_ANY) != 0) return 0;
  struct call *c = bpf_map_lookup_elem(&calls, &k);
  if (!c) return 0;
  c->ssl = PT_REGS_PARM1(ctx);
  c->buf = PT_REGS_PARM2(ctx);
  c->out = (fn == KM_TLS_FN_SSL_WRITE_EX || fn == KM_TLS_FN_SSL_READ_EX) ? PT_REGS_PARM4(ctx) : 0;
  c->sandbox = sb->index;
  c->sandbox_flags = sb->flags;
  c->fn = fn;
  if (!resolve_sockets) return 0;
  struct conn_key ck = {.ssl = c->ssl, .tgid = k.pid_tgid >> 32};
  struct conn *cs = bpf_map_lookup_elem(&conns, &ck);
  if (cs && (cs->peer.fd >= 0 || cs->tries >= SCAN_TRIES)) return 0;
  struct task_struct *task = (struct task_struct *)bpf_get_current_task();
  struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
  if (!fdt) return 0;
  struct scan s = {.fds = BPF_CORE_READ(fdt, fd), .max_fds = BPF_CORE_READ(fdt, max_fds), .fn = fn, .call = c};
  bpf_loop(SCAN_FDS, scan_one, &s, 0);
  c->scanned = 1;
  return 0;
}

// The socket that moved during the call, if exactly one did.
static __always_inline void learn_peer(const struct call *c, struct conn *cs) {
  int found = -1;
  for (int i = 0; i < SNAP_MAX; i++) {
    if (i >= c->nsnap) break;
    struct sock *sk = (struct sock *)c->snap[i].sk;
    if (position(sk, c->fn) == c->snap[i].seq) continue;
    if (found >= 0) return;  // two moved: another thread's traffic; let a later call decide
    found = i;
  }
  if (found < 0 || found >= SNAP_MAX) return;
  struct sock *sk = (struct sock *)c->snap[found].sk;
  struct peer p = {};
  p.fd = c->snap[found].fd;
  p.family = BPF_CORE_READ(sk, __sk_common.skc_family);
  p.local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
  p.remote_port = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
  if (p.family == KM_AF_INET) {
    __u32 daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
    __builtin_memcpy(p.remote_addr, &daddr, 4);
  } else {
    BPF_CORE_READ_INTO(&p.remote_addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
  }
  cs->peer = p;
}

static __always_inline void count_lost(void) {
  __u32 zero = 0;
  __u64 *n = bpf_map_lookup_elem(&lost, &zero);
  if (n) *n += 1;
}

static __always_inline void fill(struct km_tls_event *e, const struct call *c, const struct conn *cs, __u64 id,
                                 __u64 bytes, __u8 flags) {
  e->boot_ns = bpf_ktime_get_boot_ns();
  e->cgroup_id = bpf_get_current_cgroup_id();
  e->ssl = c->ssl;
  e->bytes = bytes;
  e->sandbox = c->sandbox;
  e->pid = id >> 32;
  e->tid = (__u32)id;
  e->fd = cs->peer.fd;
  e->family = cs->peer.family;
  e->remote_port = cs->peer.remote_port;
  e->local_port = cs->peer.local_port;
  __builtin_memcpy(e->remote_addr, cs->peer.remote_addr, sizeof(e->remote_addr));
  e->fn = c->fn;
  e->flags = flags;
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  e->data_len = 0;
  e->reserved = 0;
}

static __always_inline int on_return(struct pt_regs *ctx) {
  // `ret` has popped the return address: the stack pointer is 8 above the entry's.
  struct call_key ck = {.pid_tgid = bpf_get_current_pid_tgid(), .sp = PT_REGS_SP(ctx) - 8};
  struct call *cp = bpf_map_lookup_elem(&calls, &ck);
  if (!cp) return 0;
  __u64 id = ck.pid_tgid;

  // What the call transferred. SSL_read/SSL_write return it (<= 0: nothing, e.g. WANT_READ on
  // a non-blocking socket, to be retried); the _ex variants return 1 and store it.
  __u64 bytes = 0;
  if (cp->fn == KM_TLS_FN_SSL_WRITE_EX || cp->fn == KM_TLS_FN_SSL_READ_EX) {
    if ((int)PT_REGS_RC(ctx) == 1 && cp->out) {
      __u64 n = 0;  // size_t on x86-64
      if (bpf_probe_read_user(&n, sizeof(n), (const void *)cp->out) == 0) bytes = n;
    }
  } else if (cp->fn == KM_TLS_FN_GNUTLS_SEND || cp->fn == KM_TLS_FN_GNUTLS_RECV) {
    long ret = (long)PT_REGS_RC(ctx);  // ssize_t; < 0: GNUTLS_E_AGAIN and other errors
    if (ret > 0) bytes = (__u64)ret;
  } else {
    int ret = (int)PT_REGS_RC(ctx);
    if (ret > 0) bytes = (__u64)ret;
  }

  // The connection: its socket, once learnt, and the direction of its last call.
  struct conn_key k = {.ssl = cp->ssl, .tgid = id >> 32};
  struct conn *cs = bpf_map_lookup_elem(&conns, &k);
  if (!cs) {
    struct conn fresh = {};
    fresh.peer.fd = -1;
    bpf_map_update_elem(&conns, &k, &fresh, BPF_NOEXIST);
    cs = bpf_map_lookup_elem(&conns, &k);
    if (!cs) {
      bpf_map_delete_elem(&calls, &ck);
      return 0;
    }
  }
  if (cs->peer.fd < 0 && cp->scanned) {
    if (cp->nsnap <= SNAP_MAX) learn_peer(cp, cs);  // also from calls that moved nothing
    if (cs->tries < 255) cs->tries++;
  }
  struct call c = *cp;
  bpf_map_delete_elem(&calls, &ck);
  if (bytes == 0) return 0;

  __u8 dir = (c.fn & 1) ? DIR_READ : DIR_WRITE;
  __u8 flags = 0;
  if (cs->last_dir != dir) flags |= KM_TLS_F_HEAD;
  cs->last_dir = dir;
  if (c.sandbox_flags & KM_TLS_SANDBOX_PAYLOADS) flags |= KM_TLS_F_PAYLOADS;

  if (!(flags & (KM_TLS_F_HEAD | KM_TLS_F_PAYLOADS))) {
    // The middle of a message, and no payloads wanted: the count is enough.
    struct km_tls_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) {
      count_lost();
      return 0;
    }
    fill(e, &c, cs, id, bytes, flags);
    bpf_ringbuf_submit(e, 0);
    return 0;
  }
  struct km_tls_event_data *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) {
    count_lost();
    return 0;
  }
  flags |= KM_TLS_F_DATA;
  fill(&e->head, &c, cs, id, bytes, flags);
  __u32 len = bytes < KM_TLS_DATA_MAX ? (__u32)bytes : KM_TLS_DATA_MAX;
  if (len > 0 && len <= KM_TLS_DATA_MAX && bpf_probe_read_user(e->data, len, (const void *)c.buf) == 0) {
    e->head.data_len = len;
  } else {
    e->head.flags |= KM_TLS_F_FAULT;
  }
  bpf_ringbuf_submit(e, 0);
  return 0;
}

SEC("uprobe")
int BPF_KPROBE(km_ssl_write) { return on_entry(ctx, KM_TLS_FN_SSL_WRITE); }
SEC("uprobe")
int BPF_KPROBE(km_ssl_read) { return on_entry(ctx, KM_TLS_FN_SSL_READ); }
SEC("uprobe")
int BPF_KPROBE(km_ssl_write_ex) { return on_entry(ctx, KM_TLS_FN_SSL_WRITE_EX); }
SEC("uprobe")
int BPF_KPROBE(km_ssl_read_ex) { return on_entry(ctx, KM_TLS_FN_SSL_READ_EX); }
// gnutls_record_send is a tail call into gnutls_record_send2 in GnuTLS >= 3.6.3: both entries
// have the same stack pointer, so they are one call (the second entry replaces the first, and
// only the first return to run finds it).
SEC("uprobe")
int BPF_KPROBE(km_gnutls_send) { return on_entry(ctx, KM_TLS_FN_GNUTLS_SEND); }
SEC("uprobe")
int BPF_KPROBE(km_gnutls_recv) { return on_entry(ctx, KM_TLS_FN_GNUTLS_RECV); }
// One return program serves them all: the call's kind was kept at entry.
SEC("uretprobe")
int BPF_KRETPROBE(km_tls_return) { return on_return(ctx); }

// SSL_free, gnutls_deinit: the connection is gone (its handle may be reused by the next one).
// A connection that had calls in a watched process ends with a close record, so that the
// reader can summarise it (bytes each way) when it ends rather than guess from silence.
SEC("uprobe")
int BPF_KPROBE(km_tls_free, void *ssl) {
  __u64 cgroup = bpf_get_current_cgroup_id();
  struct km_tls_sandbox *sb = bpf_map_lookup_elem(&sandboxes, &cgroup);
  if (!sb) return 0;
  __u64 id = bpf_get_current_pid_tgid();
  struct conn_key k = {.ssl = (__u64)ssl, .tgid = id >> 32};
  struct conn *cs = bpf_map_lookup_elem(&conns, &k);
  if (!cs) return 0;
  struct km_tls_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (e) {
    struct call c = {};
    c.ssl = (__u64)ssl;
    c.sandbox = sb->index;
    c.fn = KM_TLS_FN_FREE;
    fill(e, &c, cs, id, 0, KM_TLS_F_CLOSE);
    bpf_ringbuf_submit(e, 0);
  } else {
    count_lost();
  }
  bpf_map_delete_elem(&conns, &k);
  return 0;
}
