#include "km/enforcer/dns_service.h"

#include <sys/random.h>

#include <chrono>

namespace km::enforcer {

using asio::ip::tcp;
using asio::ip::udp;
using namespace std::chrono_literals;

namespace {

constexpr auto kUdpTimeout = 1500ms;
constexpr auto kTcpTimeout = 3000ms;
constexpr auto kClientTcpIdle = 10s;

std::string rcode_name(dns::Rcode r) {
  switch (r) {
    case dns::Rcode::kNoError: return "NOERROR";
    case dns::Rcode::kFormErr: return "FORMERR";
    case dns::Rcode::kServFail: return "SERVFAIL";
    case dns::Rcode::kNxDomain: return "NXDOMAIN";
    case dns::Rcode::kNotImp: return "NOTIMP";
    case dns::Rcode::kRefused: return "REFUSED";
  }
  return std::to_string(static_cast<int>(r));
}

// A client's DNS-over-TCP connection: length-prefixed queries answered in order.
class TcpClient : public std::enable_shared_from_this<TcpClient> {
 public:
  using Handler = std::function<void(std::span<const uint8_t>, std::function<void(std::vector<uint8_t>)>)>;
  TcpClient(tcp::socket s, Handler h, std::function<void()> on_end)
      : sock_(std::move(s)), timer_(sock_.get_executor()), handler_(std::move(h)), on_end_(std::move(on_end)) {}
  ~TcpClient() { on_end_(); }
  void start() { read_length(); }

 private:
  void arm() {
    timer_.expires_after(kClientTcpIdle);
    timer_.async_wait([self = shared_from_this()](std::error_code ec) {
      if (!ec) self->sock_.close();
    });
  }
  void read_length() {
    arm();
    asio::async_read(sock_, asio::buffer(len_), [self = shared_from_this()](std::error_code ec, size_t) {
      if (ec) return self->close();
      size_t n = (size_t{self->len_[0]} << 8) | self->len_[1];
      if (n < 12) return self->close();
      self->msg_.resize(n);
      asio::async_read(self->sock_, asio::buffer(self->msg_), [self](std::error_code ec2, size_t) {
        if (ec2) return self->close();
        self->handler_(self->msg_, [self](std::vector<uint8_t> reply) { self->write(std::move(reply)); });
      });
    });
  }
  void write(std::vector<uint8_t> reply) {
    out_.assign(reply.size() + 2, 0);
    out_[0] = static_cast<uint8_t>(reply.size() >> 8);
    out_[1] = static_cast<uint8_t>(reply.size());
    std::copy(reply.begin(), reply.end(), out_.begin() + 2);
    asio::async_write(sock_, asio::buffer(out_), [self = shared_from_this()](std::error_code ec, size_t) {
      if (ec) return self->close();
      self->read_length();
    });
  }
  void close() {
    std::error_code ignored;
    timer_.cancel();
    sock_.close(ignored);
  }

  tcp::socket sock_;
  asio::steady_timer timer_;
  Handler handler_;
  std::function<void()> on_end_;
  std::array<uint8_t, 2> len_{};
  std::vector<uint8_t> msg_, out_;
};

}  // namespace

struct DnsService::Exchange {
  proxy::DnsQueryPlan plan;
  ExchangeCallback cb;
  size_t server = 0;
  bool use_tcp = false;
  uint16_t id = 0;
  std::vector<uint8_t> query;
  std::unique_ptr<udp::socket> usock;
  std::unique_ptr<tcp::socket> tsock;
  std::unique_ptr<asio::steady_timer> timer;
  std::array<uint8_t, 4096> buf{};
  std::array<uint8_t, 2> len{};
  std::array<uint8_t, 2> out_len{};
  std::vector<uint8_t> answer;
  bool done = false;
  uint32_t uses = 0;  // queries its UDP socket has carried
  unsigned gen = 0;  // bumped per attempt: handlers of an abandoned attempt see a stale value
  std::string last_error;
};

DnsService::DnsService(asio::io_context& io, const proxy::EgressPolicy& policy, proxy::AddressBook& book,
                       AuditLog& audit, std::vector<udp::endpoint> upstreams, log::Logger& log)
    : io_(io), policy_(policy), filter_(policy), book_(book), audit_(audit), upstreams_(std::move(upstreams)), log_(log),
      backoff_(io), udp_pool_(upstreams_.size()) {}

Status DnsService::serve(int udp_fd, int tcp_fd) {
  try {
    udp_ = std::make_unique<udp::socket>(io_, udp::v4(), udp_fd);
    tcp_ = std::make_unique<tcp::acceptor>(io_, tcp::v4(), tcp_fd);
  } catch (const std::system_error& e) {
    return fail(Error(ErrorCode::kSystem, std::string("adopting the DNS sockets: ") + e.what()));
  }
  receive_udp();
  accept_tcp();
  return {};
}

uint16_t DnsService::random_id() {
  // Kernel randomness, fetched 256 IDs at a time.
  if (random_pos_ + 2 > random_.size()) {
    if (::getrandom(random_.data(), random_.size(), 0) != static_cast<ssize_t>(random_.size())) {
      for (auto& b : random_) b = static_cast<uint8_t>(queries_ * 131u + (&b - random_.data()));
    }
    random_pos_ = 0;
  }
  uint16_t id = static_cast<uint16_t>((random_[random_pos_] << 8) | random_[random_pos_ + 1]);
  random_pos_ += 2;
  return id;
}

void DnsService::receive_udp() {
  udp_->async_receive_from(asio::buffer(udp_buf_), from_, [this](std::error_code ec, size_t n) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      auto to = from_;
      handle_query(std::span<const uint8_t>(udp_buf_.data(), n),
                   [this, to](std::vector<uint8_t> reply) {
                     auto data = std::make_shared<std::vector<uint8_t>>(std::move(reply));
                     udp_->async_send_to(asio::buffer(*data), to, [data](std::error_code, size_t) {});
                   },
                   false);
    }
    receive_udp();
  });
}

void DnsService::accept_tcp() {
  tcp_->async_accept([this](std::error_code ec, tcp::socket s) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      backoff_.expires_after(std::chrono::milliseconds(100));
      backoff_.async_wait([this](std::error_code tec) {
        if (!tec) accept_tcp();
      });
      return;
    }
    if (*tcp_clients_ < kMaxTcpClients) {
      ++*tcp_clients_;
      std::make_shared<TcpClient>(std::move(s), [this](std::span<const uint8_t> q, std::function<void(std::vector<uint8_t>)> reply) {
        handle_query(q, std::move(reply), true);
      }, [count = tcp_clients_] { --*count; })->start();
    }
    accept_tcp();
  });
}

void DnsService::audit_query(const proxy::DnsQueryPlan& plan, dns::Rcode rcode, const proxy::DnsAnswer* answer,
                             std::string_view error) {
  nlohmann::json f{{"name", plan.name}, {"qtype", plan.qtype}, {"verdict", plan.decision.allowed ? "allow" : "deny"},
                   {"rule", plan.decision.rule}, {"rcode", rcode_name(rcode)}};
  if (!plan.decision.allowed) {
    f["reason"] = plan.decision.reason;
    if (!plan.decision.hint.empty()) f["hint"] = plan.decision.hint;
  }
  if (answer) {
    f["addresses"] = answer->addresses;
    if (!answer->cut_at.empty()) f["cut"] = answer->cut_at;
  }
  if (!error.empty()) f["error"] = error;
  audit_.emit("dns", std::move(f));
}

void DnsService::handle_query(std::span<const uint8_t> wire, std::function<void(std::vector<uint8_t>)> reply, bool tcp_client) {
  ++queries_;
  auto plan = filter_.on_query(wire);
  if (plan.action == proxy::DnsQueryPlan::Action::kReply) {
    audit_query(plan, plan.rcode, nullptr, "");
    reply(std::move(plan.reply));
    return;
  }
  if (in_flight_ >= kMaxInFlight) {
    audit_query(plan, dns::Rcode::kServFail, nullptr, "too many queries in flight");
    reply(proxy::DnsFilter::servfail(plan));
    return;
  }
  size_t limit = tcp_client ? 65535 : proxy::DnsFilter::udp_limit(plan);
  auto shared_plan = std::make_shared<proxy::DnsQueryPlan>(std::move(plan));
  exchange(*shared_plan, [this, shared_plan, limit, reply = std::move(reply)](Result<std::vector<uint8_t>> up) {
    if (!up) {
      audit_query(*shared_plan, dns::Rcode::kServFail, nullptr, up.error().to_string());
      return reply(proxy::DnsFilter::servfail(*shared_plan));
    }
    auto ans = filter_.on_answer(*shared_plan, *up, limit);
    if (!ans) {
      audit_query(*shared_plan, dns::Rcode::kServFail, nullptr, ans.error().to_string());
      return reply(proxy::DnsFilter::servfail(*shared_plan));
    }
    auto now = proxy::AddressBook::Clock::now();
    for (const auto& b : ans->bindings) {
      book_.bind(b.name, b.addr, b.ttl, now);
      if (on_bind_) on_bind_(b.addr, b.ttl);
    }
    audit_query(*shared_plan, ans->rcode, &*ans, "");
    reply(std::move(ans->reply));
  });
}

void DnsService::resolve(const std::string& name, ResolveCallback cb) {
  dns::Message q;
  q.rd = true;
  q.questions.push_back({name, dns::type::kA, dns::kClassIN});
  auto wire = dns::serialize(q);
  auto plan = std::make_shared<proxy::DnsQueryPlan>(filter_.on_query(wire));
  if (plan->action != proxy::DnsQueryPlan::Action::kForward) {
    audit_query(*plan, plan->rcode, nullptr, "");
    return cb(fail(ErrorCode::kPermissionDenied, name + ": " + (plan->decision.allowed ? "not resolvable" : plan->decision.reason)));
  }
  exchange(*plan, [this, plan, name, cb = std::move(cb)](Result<std::vector<uint8_t>> up) {
    if (!up) {
      audit_query(*plan, dns::Rcode::kServFail, nullptr, up.error().to_string());
      return cb(fail(std::move(up).error().wrap("resolving " + name)));
    }
    auto ans = filter_.on_answer(*plan, *up, 65535);
    if (!ans) {
      audit_query(*plan, dns::Rcode::kServFail, nullptr, ans.error().to_string());
      return cb(fail(std::move(ans).error().wrap("resolving " + name)));
    }
    auto now = proxy::AddressBook::Clock::now();
    std::vector<proxy::IpAddress> out;
    for (const auto& b : ans->bindings) {
      book_.bind(b.name, b.addr, b.ttl, now);
      if (on_bind_) on_bind_(b.addr, b.ttl);
      if (b.name == plan->name && std::find(out.begin(), out.end(), b.addr) == out.end()) out.push_back(b.addr);
    }
    audit_query(*plan, ans->rcode, &*ans, "");
    if (out.empty()) {
      return cb(fail(ErrorCode::kNotFound, name + ": no address" + (ans->rcode == dns::Rcode::kNxDomain ? " (NXDOMAIN)" : "")));
    }
    cb(std::move(out));
  });
}

void DnsService::exchange(const proxy::DnsQueryPlan& plan, ExchangeCallback cb) {
  auto ex = std::make_shared<Exchange>();
  ex->plan = plan;
  ex->cb = std::move(cb);
  ++in_flight_;
  try_server(ex);
}

void DnsService::try_server(std::shared_ptr<Exchange> ex) {
  if (ex->server >= upstreams_.size()) {
    return finish(ex, fail(ErrorCode::kUnavailable,
                           upstreams_.empty() ? "no upstream DNS server configured"
                                              : "no upstream DNS server answered (" + ex->last_error + ")"));
  }
  dns::Message q = ex->plan.upstream;
  ex->id = random_id();
  q.id = ex->id;
  ex->query = dns::serialize(q);
  ex->timer = std::make_unique<asio::steady_timer>(io_);
  ++ex->gen;
  if (ex->use_tcp) {
    try_tcp(ex);
  } else {
    try_udp(ex);
  }
}

void DnsService::next_server(std::shared_ptr<Exchange> ex, const Error& why) {
  if (ex->done) return;
  ex->last_error = why.to_string();
  std::error_code ignored;
  if (ex->usock) ex->usock->close(ignored);
  if (ex->tsock) ex->tsock->close(ignored);
  ex->usock.reset();
  ex->tsock.reset();
  ex->timer->cancel();
  ++ex->gen;
  ++ex->server;
  ex->use_tcp = false;
  try_server(ex);
}

void DnsService::try_udp(std::shared_ptr<Exchange> ex) {
  const auto& server = upstreams_[ex->server];
  std::error_code ec;
  auto& pool = udp_pool_[ex->server];
  if (!pool.empty()) {
    // A socket connected to this server by an earlier query: its answers were all consumed, and
    // anything late carries another ID and is ignored.
    ex->usock = std::move(pool.back().sock);
    ex->uses = pool.back().uses;
    pool.pop_back();
  } else {
    ex->usock = std::make_unique<udp::socket>(io_);
    ex->uses = 0;
    ex->usock->open(server.protocol(), ec);
    if (!ec) ex->usock->connect(server, ec);  // a connected socket only hears from `server`
  }
  if (ec) return next_server(ex, Error(ErrorCode::kUnavailable, "udp " + server.address().to_string() + ": " + ec.message()));
  ex->timer->expires_after(kUdpTimeout);
  ex->timer->async_wait([this, ex](std::error_code tec) {
    if (!tec) next_server(ex, Error(ErrorCode::kUnavailable, "timed out"));
  });
  auto* sock = ex->usock.get();
  sock->async_send(asio::buffer(ex->query), [](std::error_code, size_t) {});
  udp_receive(ex, sock);
}

void DnsService::udp_receive(std::shared_ptr<Exchange> ex, udp::socket* sock) {
  unsigned gen = ex->gen;
  sock->async_receive(asio::buffer(ex->buf), [this, ex, sock, gen](std::error_code rec, size_t n) {
    if (ex->done || ex->gen != gen) return;
    if (rec) return next_server(ex, Error(ErrorCode::kUnavailable, "udp: " + rec.message()));
    // Answers with another ID are spoofed or stale: ignore them and keep listening.
    if (n < 12 || ((size_t{ex->buf[0]} << 8) | ex->buf[1]) != ex->id) return udp_receive(ex, sock);
    if ((ex->buf[2] & 0x02) != 0) {  // truncated: ask the same server over TCP
      ex->usock.reset();
      ex->timer->cancel();
      ex->use_tcp = true;
      ex->timer = std::make_unique<asio::steady_timer>(io_);
      ++ex->gen;
      return try_tcp(ex);
    }
    finish(ex, std::vector<uint8_t>(ex->buf.begin(), ex->buf.begin() + static_cast<long>(n)));
  });
}

void DnsService::try_tcp(std::shared_ptr<Exchange> ex) {
  const auto& server = upstreams_[ex->server];
  tcp::endpoint ep(server.address(), server.port());
  ex->tsock = std::make_unique<tcp::socket>(io_);
  auto* sock = ex->tsock.get();
  unsigned gen = ex->gen;
  ex->timer->expires_after(kTcpTimeout);
  ex->timer->async_wait([this, ex](std::error_code tec) {
    if (!tec) next_server(ex, Error(ErrorCode::kUnavailable, "tcp timed out"));
  });
  sock->async_connect(ep, [this, ex, sock, gen](std::error_code ec) {
    if (ex->done || ex->gen != gen) return;
    if (ec) return next_server(ex, Error(ErrorCode::kUnavailable, "tcp connect: " + ec.message()));
    ex->out_len = {static_cast<uint8_t>(ex->query.size() >> 8), static_cast<uint8_t>(ex->query.size())};
    std::array<asio::const_buffer, 2> framed{asio::buffer(ex->out_len), asio::buffer(ex->query)};
    asio::async_write(*sock, framed, [this, ex, sock, gen](std::error_code wec, size_t) {
      if (ex->done || ex->gen != gen) return;
      if (wec) return next_server(ex, Error(ErrorCode::kUnavailable, "tcp write: " + wec.message()));
      asio::async_read(*sock, asio::buffer(ex->len), [this, ex, sock, gen](std::error_code lec, size_t) {
        if (ex->done || ex->gen != gen) return;
        if (lec) return next_server(ex, Error(ErrorCode::kUnavailable, "tcp read: " + lec.message()));
        ex->answer.resize((size_t{ex->len[0]} << 8) | ex->len[1]);
        asio::async_read(*sock, asio::buffer(ex->answer), [this, ex, sock, gen](std::error_code dec, size_t) {
          if (ex->done || ex->gen != gen) return;
          if (dec) return next_server(ex, Error(ErrorCode::kUnavailable, "tcp read: " + dec.message()));
          if (ex->answer.size() < 12 || ((size_t{ex->answer[0]} << 8) | ex->answer[1]) != ex->id) {
            return next_server(ex, Error(ErrorCode::kUnavailable, "tcp answer with a wrong ID"));
          }
          finish(ex, std::move(ex->answer));
        });
      });
    });
  });
}

void DnsService::finish(std::shared_ptr<Exchange> ex, Result<std::vector<uint8_t>> r) {
  if (ex->done) return;
  ex->done = true;
  --in_flight_;
  std::error_code ignored;
  if (ex->timer) ex->timer->cancel();
  if (ex->usock && r && ex->uses + 1 < kUdpSocketUses && udp_pool_[ex->server].size() < kUdpPoolPerServer) {
    udp_pool_[ex->server].push_back(Pooled{std::move(ex->usock), ex->uses + 1});
  } else if (ex->usock) {
    ex->usock->close(ignored);
  }
  if (ex->tsock) ex->tsock->close(ignored);
  auto cb = std::move(ex->cb);
  cb(std::move(r));
}

}  // namespace km::enforcer
