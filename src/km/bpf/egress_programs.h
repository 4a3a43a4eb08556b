// The egress programs (bpf/progs/egress.bpf.c) from userspace: load them with a sandbox's
// settings, attach them to its cgroup, fill and evict its allowlist, recover the original
// destination of redirected connections, and read deny events.
// Thread-safety: map operations may be called from any thread; poll_events from one.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "km/base/result.h"
#include "km/base/unique_fd.h"

struct egress;
struct ring_buffer;
struct bpf_link;

namespace km::bpf {

struct EgressSettings {
  std::array<uint8_t, 4> dns_addr{};    // the DNS filter (connect/sendmsg to port 53 go here)
  uint16_t dns_port = 53;
  std::array<uint8_t, 4> proxy_addr{};  // the transparent proxy (redirected connections)
  uint16_t proxy_port = 3128;
  bool allow_loopback = true;           // the sandbox's own loopback
  bool allow_raw = false;               // raw and packet sockets
  bool redirect_misses = false;         // `both`: TCP to unlisted destinations goes to the proxy
};

struct PortRange {
  uint16_t lo = 0, hi = 65535;
};

struct AllowEntry {
  int family = 0;                    // AF_INET or AF_INET6
  std::array<uint8_t, 16> addr{};    // IPv4 in the first 4 bytes
  int prefix_len = 32;
  std::vector<PortRange> ports;      // empty: every port; at most 8
  uint64_t expires_boot_ns = 0;      // CLOCK_BOOTTIME ns; 0: never
  bool redirect = false;             // through the transparent proxy
};

struct OriginalDestination {
  int family = 0;
  std::array<uint8_t, 16> addr{};
  uint16_t port = 0;
};

struct EgressEvent {
  enum Type { kDenyConnect = 1, kDenySendmsg = 2, kDenySocket = 3, kDenyPacket = 4, kRedirect = 5 } type = kDenyConnect;
  uint64_t cgroup_id = 0;
  uint32_t pid = 0;
  int family = 0;
  std::array<uint8_t, 16> addr{};
  uint16_t port = 0;
  uint32_t protocol = 0;
  std::string comm;
};

Result<EgressEvent> decode_egress_event(const void* data, size_t size);

class EgressPrograms {
 public:
  // Loads the programs with `settings`; errors carry the verifier log's tail.
  static Result<std::unique_ptr<EgressPrograms>> load(const EgressSettings& settings);
  ~EgressPrograms();
  EgressPrograms(const EgressPrograms&) = delete;
  EgressPrograms& operator=(const EgressPrograms&) = delete;

  // Attaches every program to the cgroup (v2 directory fd) with BPF links.
  // `only`: the programs to attach by name (km_connect4, km_sockops, km_skb_egress, ...), for
  // measuring each one's cost; empty: all of them (enforcement always attaches all).
  Status attach(int cgroup_fd, const std::vector<std::string>& only = {});
  // Pins the links and maps in `dir` (on a bpffs): the programs stay attached and the maps
  // open for the enforcer when this object and kmd are gone.
  Status pin(const std::string& dir);

  Status allow(const AllowEntry& e);
  Status remove(int family, const std::array<uint8_t, 16>& addr, int prefix_len);
  // The original destination of a connection the proxy accepted from `client_port`.
  std::optional<OriginalDestination> original_destination(uint16_t client_port) const;
  Result<int> poll_events(int timeout_ms, const std::function<void(const EgressEvent&)>& deliver);
  uint64_t lost() const;

 private:
  EgressPrograms() = default;
  static int on_record(void* self, void* data, size_t size);
  ::egress* skel_ = nullptr;
  std::vector<::bpf_link*> links_;
  ring_buffer* rb_ = nullptr;
  const std::function<void(const EgressEvent&)>* deliver_ = nullptr;
  int delivered_ = 0;
};

// CLOCK_BOOTTIME now, in ns (the clock the programs compare expiries with).
uint64_t boot_ns_now();

// The maps of a sandbox's programs by descriptor, for the enforcer (which gets them from kmd
// and needs no privilege to use them).
struct EgressMaps {
  UniqueFd allow4, allow6, orig_dst, port_cookie, events;
};
// Opens the maps pinned by EgressPrograms::pin in `dir`.
Result<EgressMaps> open_pinned_egress_maps(const std::string& dir);
Status allow_in(int allow4_fd, int allow6_fd, const AllowEntry& e);
Status remove_in(int allow4_fd, int allow6_fd, int family, const std::array<uint8_t, 16>& addr, int prefix_len);
std::optional<OriginalDestination> original_destination_in(int port_cookie_fd, int orig_dst_fd, uint16_t client_port);
// Removes what pin() made in `dir`, and the directory. Idempotent.
Status unpin_egress(const std::string& dir);

}  // namespace km::bpf
