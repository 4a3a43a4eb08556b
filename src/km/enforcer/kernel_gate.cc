#include "km/enforcer/kernel_gate.h"

#include <bpf/libbpf.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "km/policy/egress_rules.h"

namespace km::enforcer {

Result<std::unique_ptr<KernelGate>> KernelGate::adopt(asio::io_context& io, AuditLog& audit, int first_fd) {
  std::unique_ptr<KernelGate> g(new KernelGate(io, audit));
  UniqueFd* slots[] = {&g->maps_.allow4, &g->maps_.allow6, &g->maps_.orig_dst, &g->maps_.port_cookie, &g->maps_.events};
  for (int i = 0; i < 5; ++i) {
    if (::fcntl(first_fd + i, F_GETFD) < 0) return fail(Error::from_errno("kernel enforcement map descriptor " + std::to_string(first_fd + i)));
    *slots[i] = UniqueFd(first_fd + i);
    ::fcntl(first_fd + i, F_SETFD, FD_CLOEXEC);
  }
  g->rb_ = ring_buffer__new(g->maps_.events.get(), &KernelGate::on_event, g.get(), nullptr);
  if (!g->rb_) return fail(Error::from_errno("opening the kernel enforcement events"));
  int efd = ::fcntl(ring_buffer__epoll_fd(g->rb_), F_DUPFD_CLOEXEC, 3);
  if (efd < 0) return fail(Error::from_errno("dup"));
  g->events_.assign(efd);
  g->wait_events();
  return g;
}

KernelGate::~KernelGate() {
  std::error_code ignored;
  events_.close(ignored);
  if (rb_) ring_buffer__free(rb_);
}

Status KernelGate::allow_cidrs(const std::vector<std::string>& cidrs) {
  for (const auto& text : cidrs) {
    KM_ASSIGN_OR_RETURN(policy::CidrRule r, policy::parse_cidr_rule(text));
    bpf::AllowEntry e;
    e.family = r.family;
    e.addr = r.addr;
    e.prefix_len = r.prefix_len;
    // Everything goes through the proxy: the sandbox has no route of its own.
    e.redirect = true;
    if (r.ports.size() > 8) return fail(ErrorCode::kInvalidArgument, text + ": at most 8 port ranges with kernel enforcement");
    for (const auto& p : r.ports) e.ports.push_back({p.lo, p.hi});
    KM_TRY(bpf::allow_in(maps_.allow4.get(), maps_.allow6.get(), e));
  }
  return ok();
}

void KernelGate::bind(const proxy::IpAddress& raw, uint32_t seconds) {
  proxy::IpAddress a = raw.unmapped();
  bpf::AllowEntry e;
  e.family = a.family;
  e.addr = a.bytes;
  e.prefix_len = a.family == AF_INET ? 32 : 128;
  e.expires_boot_ns = bpf::boot_ns_now() + uint64_t{seconds} * 1000000000ull;
  e.redirect = true;
  (void)bpf::allow_in(maps_.allow4.get(), maps_.allow6.get(), e);  // a full map denies: fail closed
}

void KernelGate::unbind(const proxy::IpAddress& raw) {
  proxy::IpAddress a = raw.unmapped();
  (void)bpf::remove_in(maps_.allow4.get(), maps_.allow6.get(), a.family, a.bytes, a.family == AF_INET ? 32 : 128);
}

std::optional<std::pair<proxy::IpAddress, uint16_t>> KernelGate::original_destination(uint16_t client_port) const {
  auto d = bpf::original_destination_in(maps_.port_cookie.get(), maps_.orig_dst.get(), client_port);
  if (!d) return std::nullopt;
  return std::make_pair(proxy::IpAddress::from_bytes(d->addr.data(), d->family == AF_INET ? 4 : 16), d->port);
}

void KernelGate::wait_events() {
  events_.async_wait(asio::posix::stream_descriptor::wait_read, [this](std::error_code ec) {
    if (ec) return;
    ring_buffer__consume(rb_);
    wait_events();
  });
}

int KernelGate::on_event(void* self, void* data, size_t size) {
  auto* g = static_cast<KernelGate*>(self);
  auto e = bpf::decode_egress_event(data, size);
  if (!e || e->type == bpf::EgressEvent::kRedirect) return 0;
  auto addr = proxy::IpAddress::from_bytes(e->addr.data(), e->family == AF_INET ? 4 : 16);
  nlohmann::json f{{"mode", "kernel"}, {"verdict", "deny"}, {"rule", "default deny"}};
  std::string kind = "connect";
  switch (e->type) {
    case bpf::EgressEvent::kDenyConnect:
      f["proto"] = e->protocol == IPPROTO_UDP ? "udp" : "tcp";
      f["reason"] = "the address is not in the sandbox's kernel allowlist";
      break;
    case bpf::EgressEvent::kDenySendmsg:
      kind = "packet";
      f["proto"] = "udp";
      f["reason"] = "UDP other than DNS is not forwarded";
      break;
    case bpf::EgressEvent::kDenySocket:
      kind = "socket";
      f["reason"] = "raw sockets are not allowed";
      break;
    default:
      kind = "packet";
      f["proto"] = std::to_string(e->protocol);
      f["reason"] = "a packet to an address outside the kernel allowlist";
      break;
  }
  if (e->type != bpf::EgressEvent::kDenySocket) {
    f["addr"] = addr.to_string();
    f["port"] = e->port;
  }
  if (e->pid) f["pid"] = e->pid;
  if (!e->comm.empty()) f["comm"] = e->comm;
  g->audit_.emit(kind, std::move(f));
  return 0;
}

}  // namespace km::enforcer
