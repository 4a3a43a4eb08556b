// The DNS filter on the wire: serves the sandbox's queries over UDP and TCP on sockets kmd
// created in the sandbox's link namespace, asks the upstream servers (UDP with a fresh socket
// and random ID per query, TCP when an answer is truncated, the next server on timeout or
// failure), and feeds allowed answers into the address book. Also resolves names for the
// egress proxy through the same filter.
//
// Bad input never stops the service: malformed queries get FORMERR, upstream failures
// SERVFAIL, and every query is an audit event. At most kMaxInFlight upstream queries are
// outstanding; beyond that new ones get SERVFAIL at once.
// Thread-safety: runs on one io_context thread.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "km/enforcer/asio.h"

#include "km/base/log.h"
#include "km/base/result.h"
#include "km/enforcer/audit.h"
#include "km/proxy/dns_filter.h"

namespace km::enforcer {

namespace dns = proxy::dns;

class DnsService {
 public:
  static constexpr size_t kMaxInFlight = 2048;
  static constexpr size_t kMaxTcpClients = 256;
  // Idle upstream UDP sockets kept per server (each carries one query at a time, with a random
  // ID; reusing them saves a socket, connect and close per query). Each is retired after
  // kUdpSocketUses queries, so source ports keep changing (off-path spoofing must guess them).
  static constexpr size_t kUdpPoolPerServer = 64;
  static constexpr uint32_t kUdpSocketUses = 32;

  DnsService(asio::io_context& io, const proxy::EgressPolicy& policy, proxy::AddressBook& book, AuditLog& audit,
             std::vector<asio::ip::udp::endpoint> upstreams, log::Logger& log);
  DnsService(const DnsService&) = delete;
  DnsService& operator=(const DnsService&) = delete;

  // Starts serving on inherited, bound sockets (UDP and listening TCP).
  Status serve(int udp_fd, int tcp_fd);

  // Resolves `name` (A records) through the filter, binding what it returns. The callback
  // gets the allowed addresses, or an error (denied, NXDOMAIN, upstream down).
  using ResolveCallback = std::function<void(Result<std::vector<proxy::IpAddress>>)>;
  void resolve(const std::string& name, ResolveCallback cb);

  // Upstream exchange: sends `plan.upstream`, then calls back with the upstream's raw answer.
  using ExchangeCallback = std::function<void(Result<std::vector<uint8_t>>)>;
  void exchange(const proxy::DnsQueryPlan& plan, ExchangeCallback cb);

  uint64_t queries() const { return queries_; }
  // Called for every address an allowed answer binds, with its TTL (kernel enforcement).
  void set_on_bind(std::function<void(const proxy::IpAddress&, uint32_t ttl)> f) { on_bind_ = std::move(f); }
  size_t in_flight() const { return in_flight_; }

 private:
  struct Exchange;
  void receive_udp();
  void accept_tcp();
  void handle_query(std::span<const uint8_t> wire, std::function<void(std::vector<uint8_t>)> reply, bool tcp);
  void try_server(std::shared_ptr<Exchange> ex);
  void try_udp(std::shared_ptr<Exchange> ex);
  void try_tcp(std::shared_ptr<Exchange> ex);
  void udp_receive(std::shared_ptr<Exchange> ex, asio::ip::udp::socket* sock);
  void finish(std::shared_ptr<Exchange> ex, Result<std::vector<uint8_t>> r);
  void next_server(std::shared_ptr<Exchange> ex, const Error& why);
  void audit_query(const proxy::DnsQueryPlan& plan, dns::Rcode rcode, const proxy::DnsAnswer* answer,
                   std::string_view error);
  uint16_t random_id();

  asio::io_context& io_;
  const proxy::EgressPolicy& policy_;
  proxy::DnsFilter filter_;
  proxy::AddressBook& book_;
  AuditLog& audit_;
  std::vector<asio::ip::udp::endpoint> upstreams_;
  log::Logger& log_;
  std::unique_ptr<asio::ip::udp::socket> udp_;
  std::unique_ptr<asio::ip::tcp::acceptor> tcp_;
  asio::ip::udp::endpoint from_;
  std::array<uint8_t, 4096> udp_buf_{};
  std::function<void(const proxy::IpAddress&, uint32_t)> on_bind_;
  asio::steady_timer backoff_;
  // Outlives the service: clients still queued in the event loop at shutdown end after it.
  std::shared_ptr<size_t> tcp_clients_ = std::make_shared<size_t>(0);
  struct Pooled {
    std::unique_ptr<asio::ip::udp::socket> sock;
    uint32_t uses = 0;
  };
  std::vector<std::vector<Pooled>> udp_pool_;
  std::array<uint8_t, 512> random_{};
  size_t random_pos_ = 512;
  uint64_t queries_ = 0;
  size_t in_flight_ = 0;
};

}  // namespace km::enforcer
