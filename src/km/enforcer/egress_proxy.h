// The egress proxy: one listener in the sandbox's link namespace that serves both
//   explicit proxying   clients that honour HTTP(S)_PROXY send CONNECT host:port or
//                       absolute-URI requests to link_address:proxy_port; and
//   transparent mode    every other TCP connection the sandbox makes is redirected here by the
//                       link namespace's nftables rules; SO_ORIGINAL_DST gives the address it
//                       was meant for, and the first bytes name the destination (TLS SNI or the
//                       HTTP Host); server-speaks-first protocols carry no name and are judged
//                       by the address alone.
//
// A connection is allowed when the name is allowed (EgressPolicy::check_host) and the address
// dialled is one the name resolved to through the DNS filter, or when an allowedCIDRs rule
// covers the address and port; special ranges need more (EgressPolicy::check_dial). CONNECT
// authority, SNI and Host must name the same host. Plain HTTP is parsed request by request and
// every request on a connection must name the host the connection was allowed for.
// Explicit denials get a 403 with a JSON body; transparent ones a reset. Every verdict is an
// audit event.
// Thread-safety: runs on one io_context thread.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "km/enforcer/asio.h"

#include "km/base/log.h"
#include "km/base/result.h"
#include "km/enforcer/audit.h"
#include "km/enforcer/config.h"
#include "km/enforcer/dns_service.h"
#include "km/proxy/egress_policy.h"

namespace km::enforcer {

class EgressProxy {
 public:
  EgressProxy(asio::io_context& io, const Config& config, const proxy::EgressPolicy& policy, proxy::AddressBook& book,
              DnsService& dns, AuditLog& audit, log::Logger& log);
  EgressProxy(const EgressProxy&) = delete;
  EgressProxy& operator=(const EgressProxy&) = delete;

  // Starts accepting on an inherited listening socket.
  Status serve(int listen_fd);

  size_t sessions() const { return *live_; }
  // With kernel enforcement, redirected connections' original destinations come from the
  // programs' maps (there is no NAT to ask).
  void set_kernel(class KernelGate* k) { kernel_ = k; }
  // Hosts that need L7 inspection (AI providers, GitHub with rules) are handed to it over TLS;
  // without one they are denied.
  void set_inspector(class Inspector* i) { inspector_ = i; }
  // OTLP exports addressed to the proxy itself (POST /v1/logs, /v1/metrics, /v1/traces) go to
  // it; without one they get a 404.
  void set_telemetry(class TelemetrySink* t) { telemetry_ = t; }
  static constexpr size_t kMaxSessions = 1024;

 private:
  class Session;
  friend class Session;
  void accept();

  asio::io_context& io_;
  const Config& config_;
  const proxy::EgressPolicy& policy_;
  proxy::AddressBook& book_;
  DnsService& dns_;
  AuditLog& audit_;
  log::Logger& log_;
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor_;
  std::optional<asio::ip::tcp::endpoint> upstream_proxy_;
  std::optional<asio::ip::address> link_address_;
  class KernelGate* kernel_ = nullptr;
  class Inspector* inspector_ = nullptr;
  class TelemetrySink* telemetry_ = nullptr;
  asio::steady_timer backoff_;
  std::shared_ptr<size_t> live_ = std::make_shared<size_t>(0);  // open sessions
};

}  // namespace km::enforcer
