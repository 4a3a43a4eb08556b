// For bench/relay.cc only (not loaded by km): the kernel relaying a TCP stream with no user
// space in the data path. Sockets are in `socks` by their cookie; `peer` maps a socket's cookie
// to the cookie of the socket its bytes go out on. The verdict program runs on every chunk a
// socket in `socks` receives and redirects it to the send side of the peer (sk_skb redirect to
// egress), which the kernel then sends from a work queue.
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, 64);
  __type(key, __u64);
  __type(value, __u32);
} socks SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 64);
  __type(key, __u64);
  __type(value, __u64);
} peer SEC(".maps");

SEC("sk_skb")
int relay_verdict(struct __sk_buff* skb) {
  __u64 cookie = bpf_get_socket_cookie(skb);
  __u64* to = bpf_map_lookup_elem(&peer, &cookie);
  if (!to) return SK_PASS;
  __u64 key = *to;
  return bpf_sk_redirect_hash(skb, &socks, &key, 0);
}
