// The host side of a sandbox's egress: the rules of its link namespace and its enforcer
// process. plan (what) is pure; the rest applies it.
//
// The link namespace is private to one sandbox and owned by kmd's user namespace, so nothing in
// the sandbox, root included, can see or change it. Its nftables rules send every TCP
// connection and every DNS query (UDP or TCP, to any address) from the sandbox's veth to the
// enforcer's sockets, which kmd creates there and the enforcer inherits; nothing is forwarded,
// so with the enforcer gone the sandbox reaches nothing at all (fail closed).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "km/base/result.h"
#include "km/base/unique_fd.h"
#include "km/sandbox/spec.h"
#include "km/sys/process.h"

namespace km::sandbox {

inline constexpr uint16_t kEnforcerDnsPort = 53;
inline constexpr uint16_t kNflogGroup = 7;  // the link rules log dropped packets here
inline constexpr const char* kLinkIfname = "km0";  // the link's end in the link namespace

// The nftables ruleset of a sandbox's link namespace (nft syntax, one table "km").
std::string link_ruleset(const NetSpec& net);

// Replaces the ruleset of the namespace `netns_fd` (libnftables, in a short-lived thread).
Status apply_ruleset(int netns_fd, const std::string& ruleset);

struct EnforcerSockets {
  UniqueFd dns_udp, dns_tcp, proxy;
  UniqueFd nflog;  // NETLINK_NETFILTER, bound to kNflogGroup
};
// Binds the enforcer's sockets to the link address inside `netns_fd`.
Result<EnforcerSockets> open_enforcer_sockets(int netns_fd, const NetSpec& net);

using EnforcerProcess = sys::ProcessRecord;

// Starts `exe --config config_path` in its own session with the sockets on fds 3-5 and
// `audit_fd` on 6, a readiness pipe on 7, the packet log on 8, stdout/stderr to `log_fd`. It is not kmd's to keep alive: it survives kmd.
// `extra_fds` (kernel enforcement's maps) go on 9, 10, ...
Result<EnforcerProcess> spawn_enforcer(const std::string& exe, const std::string& config_path, const EnforcerSockets& s,
                                       int audit_fd, int log_fd, const std::vector<int>& extra_fds = {});


}  // namespace km::sandbox
