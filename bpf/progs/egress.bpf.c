// Kernel egress enforcement for one sandbox's cgroup (enforcement: ebpf and both):
//   connect4/6   only destinations in the allowlist (LPM tries fed by the DNS filter, plus the
//                profile's CIDRs) with an allowed port; DNS (port 53, TCP or connected UDP) goes
//                to the DNS filter; entries marked for L7 inspection (and, in `both`, every
//                miss) go to the transparent proxy, the original destination stashed by socket
//                cookie; the rest get EPERM.
//   sendmsg4/6   unconnected UDP: DNS to the filter, other datagrams only to allowed CIDR:ports.
//   sock_create  no raw inet sockets unless allowed (packet sockets never reach this hook; a
//                sandbox cannot make them without CAP_NET_RAW, which it never has).
//   sockops      maps a redirected connection's local port to its cookie, so the proxy can
//                recover the original destination from the peer port; removed on close.
//   cgroup_skb   a packet-level backstop on the same allowlist (raw sockets, anything else).
// IPv4-mapped IPv6 is handled as IPv4. Deny events go to a ring buffer; lost ones are counted.
// Settings fixed at load time are read-only globals; the allowlist is in maps.
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "km/bpf_abi/egress.h"

char LICENSE[] SEC("license") = "GPL";

_Static_assert(sizeof(struct km_egress_event) == KM_EGRESS_EVENT_SIZE, "km_egress_event layout");
_Static_assert(sizeof(struct km_allow) == KM_ALLOW_SIZE, "km_allow layout");

#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define SOCK_STREAM 1
#define SOCK_RAW 3
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

// Load-time settings (network byte order for addresses and ports).
const volatile __u32 dns_ip4 = 0;
const volatile __u32 dns_port = 0;
const volatile __u32 proxy_ip4 = 0;
const volatile __u32 proxy_port = 0;
const volatile __u8 allow_loopback = 1;
const volatile __u8 allow_raw = 0;
const volatile __u8 redirect_misses = 0;

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, 65536);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct km_lpm4);
  __type(value, struct km_allow);
} allow4 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, 16384);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct km_lpm6);
  __type(value, struct km_allow);
} allow6 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, __u64);  // socket cookie
  __type(value, struct km_orig_dst);
} orig_dst SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, __u32);  // the redirected socket's local port, host order
  __type(value, __u64);
} port_cookie SEC(".maps");

// Sockets whose destination connect() already allowed: the per-packet backstop lets their
// packets through without another allowlist lookup (and an established connection outlives
// the eviction of its address, as it should: connect() is the gate).
struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, __u32);
} vetted SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 4 << 20);  // about 50,000 events of backlog
} egress_events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} egress_lost SEC(".maps");

static __always_inline void emit(__u32 type, int family, const void *addr, __u16 port_host, __u32 protocol, int with_task) {
  struct km_egress_event *e = bpf_ringbuf_reserve(&egress_events, sizeof(*e), 0);
  if (!e) {
    __u32 zero = 0;
    __u64 *n = bpf_map_lookup_elem(&egress_lost, &zero);
    if (n) __sync_fetch_and_add(n, 1);
    return;
  }
  __builtin_memset(e, 0, sizeof(*e));
  e->cgroup_id = bpf_get_current_cgroup_id();
  e->type = type;
  e->family = (__u16)family;
  e->port = port_host;
  e->protocol = protocol;
  if (family == AF_INET) __builtin_memcpy(e->addr, addr, 4);
  else __builtin_memcpy(e->addr, addr, 16);
  if (with_task) {
    e->pid = (__u32)(bpf_get_current_pid_tgid() >> 32);
    bpf_get_current_comm(e->comm, sizeof(e->comm));
  }
  bpf_ringbuf_submit(e, 0);
}

static __always_inline int port_ok(const struct km_allow *a, __u16 port) {
  if (a->expires_ns && bpf_ktime_get_boot_ns() > a->expires_ns) return 0;
  if (a->nranges == 0) return 1;
#pragma unroll
  for (int i = 0; i < KM_PORT_RANGES; i++) {
    if (i < a->nranges && port >= a->ranges[i].lo && port <= a->ranges[i].hi) return 1;
  }
  return 0;
}

static __always_inline struct km_allow *lookup4(__u32 ip) {
  struct km_lpm4 key = {.prefixlen = 32};
  __builtin_memcpy(key.addr, &ip, 4);
  return bpf_map_lookup_elem(&allow4, &key);
}

static __always_inline struct km_allow *lookup6(const __u32 *ip6) {
  struct km_lpm6 key = {.prefixlen = 128};
  __builtin_memcpy(key.addr, ip6, 16);
  return bpf_map_lookup_elem(&allow6, &key);
}

static __always_inline int is_enforcer4(__u32 ip) { return ip == dns_ip4 || ip == proxy_ip4; }
static __always_inline int is_loopback4(__u32 ip) { return (bpf_ntohl(ip) >> 24) == 127; }

// Decides an IPv4 destination for connect(): 1 allow as is, 2 to the DNS filter, 3 to the
// proxy, 0 deny.
static __always_inline int decide4(__u32 ip, __u16 port, int stream) {
  if (is_enforcer4(ip)) return 1;
  if (allow_loopback && is_loopback4(ip)) return 1;
  if (port == 53 && dns_ip4) return 2;
  struct km_allow *a = lookup4(ip);
  if (a && port_ok(a, port)) return (a->flags & KM_ALLOW_REDIRECT) && stream && proxy_ip4 ? 3 : 1;
  if (redirect_misses && stream && proxy_ip4) return 3;
  return 0;
}

static __always_inline void stash(struct bpf_sock_addr *ctx, int family, const void *addr, __u16 port) {
  struct km_orig_dst o = {};
  __builtin_memcpy(o.addr, addr, family == AF_INET ? 4 : 16);
  o.port = port;
  o.family = (__u16)family;
  __u64 cookie = bpf_get_socket_cookie(ctx);
  bpf_map_update_elem(&orig_dst, &cookie, &o, BPF_ANY);
}

static __always_inline void mark_vetted(struct bpf_sock_addr *ctx) {
  struct bpf_sock *sk = ctx->sk;
  if (!sk) return;
  __u32 *v = bpf_sk_storage_get(&vetted, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (v) *v = 1;
}

SEC("cgroup/connect4")
int km_connect4(struct bpf_sock_addr *ctx) {
  __u32 ip = ctx->user_ip4;
  __u16 port = bpf_ntohs((__u16)ctx->user_port);
  int v = decide4(ip, port, ctx->type == SOCK_STREAM);
  if (v == 1) mark_vetted(ctx);
  if (v == 2) {
    ctx->user_ip4 = dns_ip4;
    ctx->user_port = dns_port;
  } else if (v == 3) {
    stash(ctx, AF_INET, &ip, port);
    ctx->user_ip4 = proxy_ip4;
    ctx->user_port = proxy_port;
    emit(KM_EV_REDIRECT, AF_INET, &ip, port, ctx->protocol, 1);
  } else if (v == 0) {
    emit(KM_EV_DENY_CONNECT, AF_INET, &ip, port, ctx->protocol, 1);
    return 0;
  }
  return 1;
}

static __always_inline int is_mapped(const __u32 *w) { return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff); }
static __always_inline int is_loopback6(const __u32 *w) { return w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(1); }

SEC("cgroup/connect6")
int km_connect6(struct bpf_sock_addr *ctx) {
  __u32 w[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
  __u16 port = bpf_ntohs((__u16)ctx->user_port);
  if (is_mapped(w)) {
    __u32 ip = w[3];
    int v = decide4(ip, port, ctx->type == SOCK_STREAM);
    if (v == 1) mark_vetted(ctx);
    if (v == 2) {
      ctx->user_ip6[3] = dns_ip4;
      ctx->user_port = dns_port;
    } else if (v == 3) {
      stash(ctx, AF_INET, &ip, port);
      ctx->user_ip6[3] = proxy_ip4;
      ctx->user_port = proxy_port;
      emit(KM_EV_REDIRECT, AF_INET, &ip, port, ctx->protocol, 1);
    } else if (v == 0) {
      emit(KM_EV_DENY_CONNECT, AF_INET, &ip, port, ctx->protocol, 1);
      return 0;
    }
    return 1;
  }
  if (allow_loopback && is_loopback6(w)) return 1;
  // The enforcer listens on IPv4 only: IPv6 DNS and inspected IPv6 are refused (clients fall
  // back to IPv4); other IPv6 needs an allowlist entry.
  struct km_allow *a = port == 53 ? 0 : lookup6(w);
  if (a && port_ok(a, port) && !(a->flags & KM_ALLOW_REDIRECT)) {
    mark_vetted(ctx);
    return 1;
  }
  emit(KM_EV_DENY_CONNECT, AF_INET6, w, port, ctx->protocol, 1);
  return 0;
}

SEC("cgroup/sendmsg4")
int km_sendmsg4(struct bpf_sock_addr *ctx) {
  __u32 ip = ctx->user_ip4;
  __u16 port = bpf_ntohs((__u16)ctx->user_port);
  if (is_enforcer4(ip) || (allow_loopback && is_loopback4(ip))) return 1;
  if (port == 53 && dns_ip4) {
    ctx->user_ip4 = dns_ip4;
    ctx->user_port = dns_port;
    return 1;
  }
  struct km_allow *a = lookup4(ip);
  if (a && port_ok(a, port) && !(a->flags & KM_ALLOW_REDIRECT)) return 1;
  emit(KM_EV_DENY_SENDMSG, AF_INET, &ip, port, 17, 1);
  return 0;
}

SEC("cgroup/sendmsg6")
int km_sendmsg6(struct bpf_sock_addr *ctx) {
  __u32 w[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
  __u16 port = bpf_ntohs((__u16)ctx->user_port);
  if (is_mapped(w)) {
    __u32 ip = w[3];
    if (is_enforcer4(ip) || (allow_loopback && is_loopback4(ip))) return 1;
    if (port == 53 && dns_ip4) {
      ctx->user_ip6[3] = dns_ip4;
      ctx->user_port = dns_port;
      return 1;
    }
    struct km_allow *a = lookup4(ip);
    if (a && port_ok(a, port) && !(a->flags & KM_ALLOW_REDIRECT)) return 1;
    emit(KM_EV_DENY_SENDMSG, AF_INET, &ip, port, 17, 1);
    return 0;
  }
  if (allow_loopback && is_loopback6(w)) return 1;
  struct km_allow *a = port == 53 ? 0 : lookup6(w);
  if (a && port_ok(a, port) && !(a->flags & KM_ALLOW_REDIRECT)) return 1;
  emit(KM_EV_DENY_SENDMSG, AF_INET6, w, port, 17, 1);
  return 0;
}

SEC("cgroup/sock_create")
int km_sock_create(struct bpf_sock *sk) {
  if (allow_raw) return 1;
  if (sk->type == SOCK_RAW || sk->family == AF_PACKET) {
    __u32 none = 0;
    emit(KM_EV_DENY_SOCKET, AF_INET, &none, 0, sk->type, 1);
    return 0;
  }
  return 1;
}

SEC("sockops")
int km_sockops(struct bpf_sock_ops *skops) {
  __u64 cookie;
  __u32 lport;
  switch (skops->op) {
    case BPF_SOCK_OPS_TCP_CONNECT_CB:
      cookie = bpf_get_socket_cookie(skops);
      if (bpf_map_lookup_elem(&orig_dst, &cookie)) bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
      break;
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
      cookie = bpf_get_socket_cookie(skops);
      if (bpf_map_lookup_elem(&orig_dst, &cookie)) {
        lport = skops->local_port;
        bpf_map_update_elem(&port_cookie, &lport, &cookie, BPF_ANY);
      }
      break;
    case BPF_SOCK_OPS_STATE_CB:
      if (skops->args[1] == BPF_TCP_CLOSE) {
        cookie = bpf_get_socket_cookie(skops);
        lport = skops->local_port;
        bpf_map_delete_elem(&orig_dst, &cookie);
        bpf_map_delete_elem(&port_cookie, &lport);
      }
      break;
  }
  return 1;
}

SEC("cgroup_skb/egress")
int km_skb_egress(struct __sk_buff *skb) {
  struct bpf_sock *sk = skb->sk;
  if (sk) {
    sk = bpf_sk_fullsock(sk);
    if (sk) {
      __u32 *v = bpf_sk_storage_get(&vetted, sk, 0, 0);
      if (v && *v == 1) return 1;
    }
  }
  if (skb->protocol == bpf_htons(ETH_P_IP)) {
    struct iphdr ip;
    if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0) return 0;
    __u32 dst = ip.daddr;
    if (is_enforcer4(dst) || (allow_loopback && is_loopback4(dst))) return 1;
    __u16 port = 0;
    if (ip.protocol == 6 || ip.protocol == 17) {
      __u16 ports[2];
      if (bpf_skb_load_bytes(skb, ip.ihl * 4, ports, sizeof(ports)) == 0) port = bpf_ntohs(ports[1]);
    }
    struct km_allow *a = lookup4(dst);
    if (a && (port == 0 || port_ok(a, port))) return 1;
    emit(KM_EV_DENY_PACKET, AF_INET, &dst, port, ip.protocol, 0);
    return 0;
  }
  if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr ip6;
    if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0) return 0;
    __u32 w[4];
    __builtin_memcpy(w, &ip6.daddr, 16);
    if (allow_loopback && is_loopback6(w)) return 1;
    struct km_allow *a = lookup6(w);
    if (a) return 1;
    emit(KM_EV_DENY_PACKET, AF_INET6, w, 0, ip6.nexthdr, 0);
    return 0;
  }
  return 1;
}
