/* The egress programs' maps and events, shared by bpf/progs/egress.bpf.c and
 * src/km/bpf/egress_programs.cc. Explicit, fixed-size fields; addresses and ports in network
 * byte order where the kernel keeps them so (noted per field), everything else host order. */
#ifndef KM_BPF_ABI_EGRESS_H
#define KM_BPF_ABI_EGRESS_H

#define KM_PORT_RANGES 8

/* LPM trie keys: prefix length in bits, then the address (network byte order). */
struct km_lpm4 {
  __u32 prefixlen;
  __u8 addr[4];
};
struct km_lpm6 {
  __u32 prefixlen;
  __u8 addr[16];
};

struct km_port_range {
  __u16 lo; /* host order, inclusive */
  __u16 hi;
};

#define KM_ALLOW_REDIRECT 1u /* send to the enforcer's transparent proxy (L7 inspection) */

struct km_allow {
  __u64 expires_ns;  /* bpf_ktime_get_boot_ns() after which the entry no longer allows; 0: never */
  __u32 flags;       /* KM_ALLOW_* */
  __u32 nranges;     /* 0: every port */
  struct km_port_range ranges[KM_PORT_RANGES];
};

/* What the transparent proxy needs for a redirected connection: the original destination. */
struct km_orig_dst {
  __u8 addr[16];   /* IPv4 in the first 4 bytes, network byte order */
  __u16 port;      /* host order */
  __u16 family;    /* AF_INET or AF_INET6 */
  __u32 pad;
};

#define KM_EV_DENY_CONNECT 1
#define KM_EV_DENY_SENDMSG 2
#define KM_EV_DENY_SOCKET 3
#define KM_EV_DENY_PACKET 4
#define KM_EV_REDIRECT 5

struct km_egress_event {
  __u64 cgroup_id;
  __u32 type;      /* KM_EV_* */
  __u32 pid;       /* 0 where unknown (packets) */
  __u8 addr[16];   /* destination, IPv4 in the first 4 bytes, network byte order */
  __u16 port;      /* host order */
  __u16 family;    /* AF_INET, AF_INET6 */
  __u32 protocol;  /* IPPROTO_* or, for sockets, the socket type */
  char comm[16];
};

#define KM_EGRESS_EVENT_SIZE (8 + 4 + 4 + 16 + 2 + 2 + 4 + 16)
#define KM_ALLOW_SIZE (8 + 4 + 4 + 4 * KM_PORT_RANGES)

#endif
