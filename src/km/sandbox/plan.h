// Pure planning: profile + allocation -> Spec. No I/O, testable without root.
#pragma once

#include <cstdint>
#include <string>

#include "km/profile/model.h"
#include "km/sandbox/spec.h"

namespace km::sandbox {

struct Allocation {
  std::string id;
  uint32_t uid_base = 0;   // host uid/gid that inside 0 maps to; 65536 ids
  uint32_t link_slot = 0;  // index of the /30 in the address pool
};

struct HostLayout {
  std::string state_dir = "/var/lib/km";
  std::string runtime_dir = "/run/km";
  std::string pool_base = "10.88.0.0";  // IPv4 network of the link address pool
  int pool_prefix = 16;
};

// Per-sandbox host directories.
std::string sandbox_dir(const HostLayout& h, const std::string& id);

// Host paths that every sandbox hides (the state dir, other homes, host sockets, ...).
std::vector<std::string> default_masks(const HostLayout& h);

// Link addresses of `slot`: {sandbox end, peer end}. Fails when the pool is exhausted.
Result<std::pair<std::string, std::string>> link_addresses(const HostLayout& h, uint32_t slot);
uint32_t pool_capacity(const HostLayout& h);

Result<Spec> plan(const profile::Model& m, const Allocation& a, const HostLayout& h);

// The sandbox trusts `ca_pem` (its inspection CA) besides the system's CAs: in its system
// bundle (written by the sandbox's init) and through the variables clients that carry their own
// trust stores read (OpenSSL, curl, Python requests, Node, the AWS SDKs, git).
void trust_inspection_ca(Spec& spec, const std::string& ca_pem);

}  // namespace km::sandbox
