// The enforcer's side of kernel enforcement (enforcement: ebpf and both): it feeds the cgroup
// programs' allowlist (the profile's CIDRs at start, then every address an allowed name
// resolves to, until the binding expires), tells the proxy where a redirected connection was
// going, and turns the programs' deny events into audit events. The maps come from kmd as
// descriptors; the programs stay attached whatever happens to this process.
// Thread-safety: one event loop.
#pragma once

#include <memory>
#include <optional>
#include <utility>

#include "km/base/result.h"
#include "km/bpf/egress_programs.h"
#include "km/enforcer/asio.h"
#include "km/enforcer/audit.h"
#include "km/proxy/egress_policy.h"

struct ring_buffer;

namespace km::enforcer {

class KernelGate {
 public:
  // Adopts the five map descriptors starting at `first_fd` and starts reading events.
  static Result<std::unique_ptr<KernelGate>> adopt(asio::io_context& io, AuditLog& audit, int first_fd);
  ~KernelGate();

  // The profile's allowedCIDRs, with their ports, for good.
  Status allow_cidrs(const std::vector<std::string>& cidrs);
  // An address a name allowed by the policy resolved to, for `seconds`.
  void bind(const proxy::IpAddress& addr, uint32_t seconds);
  void unbind(const proxy::IpAddress& addr);
  std::optional<std::pair<proxy::IpAddress, uint16_t>> original_destination(uint16_t client_port) const;

 private:
  KernelGate(asio::io_context& io, AuditLog& audit) : audit_(audit), events_(io) {}
  void wait_events();
  static int on_event(void* self, void* data, size_t size);

  AuditLog& audit_;
  bpf::EgressMaps maps_;
  ring_buffer* rb_ = nullptr;
  asio::posix::stream_descriptor events_;
};

}  // namespace km::enforcer
