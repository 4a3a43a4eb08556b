#include "km/enforcer/enforcer.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>

#include "km/enforcer/asio.h"

#include "km/base/file.h"
#include "km/base/log.h"
#include "km/sys/process.h"
#include "km/enforcer/audit.h"
#include "km/enforcer/dns_service.h"
#include "km/enforcer/egress_proxy.h"
#include "km/enforcer/inspector.h"
#include "km/enforcer/kernel_gate.h"
#include "km/enforcer/packet_log.h"
#include "km/enforcer/telemetry.h"
#include "km/proxy/http_head.h"

namespace km::enforcer {

Result<std::pair<std::string, uint16_t>> parse_server(const std::string& text) {
  auto a = proxy::http::parse_authority(text, 53);
  if (!a || !a->ip_literal) return fail(ErrorCode::kInvalidArgument, "upstream DNS server must be an IP address[:port], not " + text);
  return std::make_pair(a->host, a->port);
}

Status run(const Config& config) {
  log::Logger log("km-enforcer");
  KM_ASSIGN_OR_RETURN(auto policy, proxy::EgressPolicy::compile(config.policy));
  proxy::AddressBook book(std::chrono::seconds(config.dns_ttl_floor), config.max_bindings);
  AuditLog audit(config.sandbox, kAuditFd);

  std::vector<std::string> servers = config.upstream_dns;
  if (servers.empty()) servers = nameservers_from_resolv_conf(read_file("/etc/resolv.conf", 1 << 16).value_or(""));
  std::vector<asio::ip::udp::endpoint> upstreams;
  for (const auto& s : servers) {
    KM_ASSIGN_OR_RETURN(auto hp, parse_server(s));
    upstreams.emplace_back(asio::ip::make_address(hp.first), hp.second);
  }

  // As many descriptors as the hard limit allows: each proxied connection holds two.
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  asio::io_context io(1);
  audit.set_deferred([&io](std::function<void()> f) { asio::post(io, std::move(f)); });
  // A full pipe (kmd behind, or restarting) is tried again shortly; the event loop never waits.
  asio::steady_timer audit_retry(io);
  audit.set_retry([&audit_retry](std::function<void()> f) {
    audit_retry.expires_after(std::chrono::milliseconds(20));
    audit_retry.async_wait([f = std::move(f)](std::error_code ec) {
      if (!ec) f();
    });
  });
  audit.set_rate_limit(config.audit_rate);
  DnsService dns(io, policy, book, audit, upstreams, log);
  EgressProxy proxy(io, config, policy, book, dns, audit, log);
  std::unique_ptr<Inspector> inspector;
  if (!config.mitm_ca_cert.empty()) {
    // Read while still root: the CA key is not readable by the uid the enforcer drops to.
    KM_ASSIGN_OR_RETURN(inspector, Inspector::create(io, config, audit, log));
    proxy.set_inspector(inspector.get());
  }
  audit::Redactor redactor;
  std::unique_ptr<TelemetrySink> telemetry;
  if (!config.telemetry_dir.empty()) {
    telemetry = std::make_unique<TelemetrySink>(config.telemetry_dir, redactor);
    proxy.set_telemetry(telemetry.get());
  }
  KM_TRY(dns.serve(kDnsUdpFd, kDnsTcpFd));
  KM_TRY(proxy.serve(kProxyFd));
  std::unique_ptr<KernelGate> kernel;
  if (config.kernel) {
    // The programs gate the sandbox in the kernel; this process feeds them.
    KM_ASSIGN_OR_RETURN(kernel, KernelGate::adopt(io, audit, kKernelMapsFd));
    KM_TRY(kernel->allow_cidrs(config.policy.cidrs));
    uint32_t floor = config.dns_ttl_floor;
    dns.set_on_bind([&kernel, floor](const proxy::IpAddress& a, uint32_t ttl) { kernel->bind(a, std::max(ttl, floor) + 5); });
    proxy.set_kernel(kernel.get());
  }
  PacketLog packets(io, audit);
  if (::fcntl(kPacketLogFd, F_GETFD) >= 0) packets.serve(kPacketLogFd);

  if (!config.pid_file.empty()) {
    // Recorded before kmd is told it is ready: a kmd that dies before then takes this process
    // with it (parent-death signal), and one that dies after finds it by this record.
    KM_TRY(sys::write_process_record(config.pid_file, {::getpid(), sys::process_start_time(::getpid())}));
  }
  ::prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
  if (config.run_as_uid != 0) {
    // Everything the enforcer needs from root is done: its sockets are open and it dials out
    // as any user may. With kernel enforcement it keeps CAP_BPF alone, to use the maps it was
    // given (hosts that disable unprivileged bpf(2) refuse even map updates without it).
    gid_t gid = config.run_as_gid;
    if (config.kernel) ::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0);
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 ||
        ::setresuid(config.run_as_uid, config.run_as_uid, config.run_as_uid) != 0) {
      return fail(Error::from_errno("dropping privileges"));
    }
    if (config.kernel) {
      __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
      __user_cap_data_struct data[2] = {};
      data[CAP_TO_INDEX(CAP_BPF)].effective = data[CAP_TO_INDEX(CAP_BPF)].permitted = CAP_TO_MASK(CAP_BPF);
      if (::syscall(SYS_capset, &hdr, data) != 0) return fail(Error::from_errno("keeping CAP_BPF"));
    }
  }
  ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  if (::fcntl(kReadyFd, F_GETFD) >= 0) {
    (void)!::write(kReadyFd, "1", 1);
    ::close(kReadyFd);
  }

  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](std::error_code, int) { io.stop(); });
  std::signal(SIGPIPE, SIG_IGN);

  // The host's own addresses (it dials from the host's namespace) are refreshed with the
  // address book's eviction, every few seconds.
  auto refresh_host = [&policy] {
    std::vector<proxy::IpAddress> mine;
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) == 0) {
      for (ifaddrs* i = list; i; i = i->ifa_next) {
        if (!i->ifa_addr) continue;
        if (i->ifa_addr->sa_family == AF_INET) {
          auto* in = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
          mine.push_back(proxy::IpAddress::from_bytes(reinterpret_cast<const uint8_t*>(&in->sin_addr), 4));
        } else if (i->ifa_addr->sa_family == AF_INET6) {
          auto* in6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
          mine.push_back(proxy::IpAddress::from_bytes(in6->sin6_addr.s6_addr, 16));
        }
      }
      ::freeifaddrs(list);
    }
    policy.set_host_addresses(std::move(mine));
  };
  refresh_host();
  asio::steady_timer evict(io);
  std::function<void()> arm = [&] {
    evict.expires_after(std::chrono::seconds(5));
    evict.async_wait([&](std::error_code ec) {
      if (ec) return;
      std::vector<proxy::IpAddress> gone;
      book.evict_expired(proxy::AddressBook::Clock::now(), &gone);
      if (kernel) {
        for (const auto& a : gone) kernel->unbind(a);
      }
      refresh_host();
      arm();
    });
  };
  arm();

  log.log(log::Level::kInfo, "enforcer started",
          {{"link", config.link_address}, {"upstreams", servers}, {"suffixes", config.policy.dns_suffixes},
           {"hosts", config.policy.hosts}, {"cidrs", config.policy.cidrs}},
          config.sandbox);
  io.run();
  audit.flush();
  log.log(log::Level::kInfo, "enforcer stopping", {{"queries", dns.queries()}}, config.sandbox);
  return {};
}

}  // namespace km::enforcer
