// Minimal rtnetlink client for sandbox links: veth pairs across network namespaces, IPv4
// addresses and link state. Each Netlink talks to the namespace its socket was opened in.
// Thread-safety: one Netlink per thread.
#pragma once

#include <cstdint>
#include <string>

#include "km/base/result.h"
#include "km/base/unique_fd.h"

namespace km::sys {

class Netlink {
 public:
  // A netlink socket in the calling thread's current network namespace.
  static Result<Netlink> open();
  // A netlink socket in the namespace `netns_fd` (the calling thread returns to its own).
  static Result<Netlink> open_in(int netns_fd);

  // Creates veth `name` here and its peer `peer_name` directly in `peer_netns_fd`.
  Status create_veth(const std::string& name, const std::string& peer_name, int peer_netns_fd);
  Result<int> link_index(const std::string& name);
  Status set_up(int ifindex);
  // Adds `addr`/`prefix_len` (network byte order address).
  Status add_ipv4(int ifindex, uint32_t addr_be, int prefix_len);
  // Adds the IPv4 default route via `gateway_be` (network byte order) on `ifindex`.
  Status add_default_route_v4(int ifindex, uint32_t gateway_be);

 private:
  explicit Netlink(UniqueFd fd) : fd_(std::move(fd)) {}
  Status request(void* msg, size_t len);
  UniqueFd fd_;
  uint32_t seq_ = 1;
};

// Creates a new network namespace (with lo up) pinned by a bind mount at `pin_path`, and
// returns an fd to it. Runs in a short-lived thread so the caller's namespace never changes.
Result<UniqueFd> create_pinned_netns(const std::string& pin_path);
// Removes the pin (the namespace goes away when nothing else holds it). Idempotent.
Status remove_pinned_netns(const std::string& pin_path);

// Switches the calling thread into `netns_fd` for the life of the guard.
class NetnsGuard {
 public:
  static Result<NetnsGuard> enter(int netns_fd);
  NetnsGuard(NetnsGuard&&) = default;
  ~NetnsGuard();

 private:
  explicit NetnsGuard(UniqueFd home) : home_(std::move(home)) {}
  UniqueFd home_;
};

}  // namespace km::sys
