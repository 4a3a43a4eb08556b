#include "km/enforcer/egress_proxy.h"

#include <fcntl.h>
#include <linux/netfilter_ipv4.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>

#include "km/base/strings.h"
#include "km/enforcer/inspector.h"
#include "km/enforcer/kernel_gate.h"
#include "km/enforcer/telemetry.h"
#include "km/proxy/http_head.h"
#include "km/proxy/tls_hello.h"

namespace km::enforcer {

using asio::ip::tcp;
using proxy::Decision;
using proxy::IpAddress;
using namespace std::chrono_literals;
namespace http = proxy::http;
namespace tls = proxy::tls;

namespace {

constexpr auto kHeadTimeout = 30s;
// How long a transparent connection (or a fresh CONNECT tunnel) may stay silent before it is
// judged as a server-speaks-first protocol, by address alone.
constexpr auto kSniffTimeout = 300ms;
constexpr auto kConnectTimeout = 10s;
constexpr size_t kRelayBuffer = 64 * 1024;
// Bytes a connection may send before its destination is known (a ClientHello, a request head).
constexpr size_t kMaxPeek = 32 * 1024;
// An OTLP export request's body (the receiver's decoder has its own, equal limit).
constexpr size_t kMaxOtlpBody = 20u << 20;

std::optional<std::pair<IpAddress, uint16_t>> original_destination(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (::getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sa, &len) != 0 || sa.sin_family != AF_INET) return std::nullopt;
  return std::make_pair(IpAddress::v4(ntohl(sa.sin_addr.s_addr)), ntohs(sa.sin_port));
}

tcp::endpoint endpoint_of(const IpAddress& a, uint16_t port) {
  if (a.family == AF_INET) {
    asio::ip::address_v4::bytes_type b{};
    std::copy_n(a.bytes.begin(), 4, b.begin());
    return {asio::ip::address_v4(b), port};
  }
  asio::ip::address_v6::bytes_type b{};
  std::copy_n(a.bytes.begin(), 16, b.begin());
  return {asio::ip::address_v6(b), port};
}


std::string json_403(const std::string& host, uint16_t port, const Decision& d) {
  nlohmann::json body{{"error", "egress_denied"},
                      {"host", host},
                      {"port", port},
                      {"rule", d.rule},
                      {"reason", d.reason}};
  if (!d.hint.empty()) body["hint"] = d.hint;
  std::string text = body.dump() + "\n";
  return "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(text.size()) +
         "\r\nConnection: close\r\nX-Km-Denied: " + d.rule + "\r\n\r\n" + text;
}

std::string simple_response(int code, std::string_view reason, std::string_view message) {
  nlohmann::json body{{"error", std::string(reason)}, {"message", std::string(message)}};
  std::string text = body.dump() + "\n";
  return "HTTP/1.1 " + std::to_string(code) + " " + std::string(reason) +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(text.size()) +
         "\r\nConnection: close\r\n\r\n" + text;
}

// Checks, and for absolute-form rewrites, the plain-HTTP requests a client sends on one
// connection after the first: each must name the host the connection was allowed for.
class RequestStream {
 public:
  RequestStream(std::string host, bool absolute_form, bool https_only)
      : host_(std::move(host)), absolute_(absolute_form), https_only_(https_only) {}

  // Starts with the body of a request whose head was already handled.
  Status begin_body(const http::RequestHead& head) {
    KM_ASSIGN_OR_RETURN(auto framing, http::request_body_framing(head));
    framing_ = framing;
    chunked_ = http::ChunkedScanner{};
    remaining_ = framing.kind == http::BodyFraming::kLength ? framing.length : 0;
    in_body_ = framing.kind != http::BodyFraming::kNone;
    return {};
  }

  // Moves what may be forwarded from `pending` to `out`; a partial head stays in `pending`.
  Status process(std::string& pending, std::string& out) {
    while (!pending.empty()) {
      if (in_body_) {
        if (framing_.kind == http::BodyFraming::kLength) {
          size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, pending.size()));
          out.append(pending, 0, n);
          pending.erase(0, n);
          remaining_ -= n;
          if (remaining_ == 0) in_body_ = false;
        } else {
          KM_ASSIGN_OR_RETURN(size_t n, chunked_.feed(pending));
          out.append(pending, 0, n);
          pending.erase(0, n);
          if (chunked_.done()) in_body_ = false;
        }
        continue;
      }
      KM_ASSIGN_OR_RETURN(auto head, http::parse_request_head(pending));
      if (!head) return {};  // wait for the rest of the head
      KM_TRY(check(*head));
      if (absolute_) {
        KM_ASSIGN_OR_RETURN(auto uri, http::parse_absolute_uri(head->target));
        out += rewrite(*head, uri.path);
      } else {
        out.append(pending, 0, head->size);
      }
      pending.erase(0, head->size);
      KM_TRY(begin_body(*head));
    }
    return {};
  }

  Status check(const http::RequestHead& head) const {
    if (head.method == "CONNECT") return fail(ErrorCode::kPermissionDenied, "CONNECT inside a connection");
    std::string host;
    if (absolute_) {
      KM_ASSIGN_OR_RETURN(auto uri, http::parse_absolute_uri(head.target));
      if (uri.scheme != "http" && uri.scheme != "ws") return fail(ErrorCode::kPermissionDenied, "scheme " + uri.scheme);
      host = uri.authority.host;
    } else if (head.target != "*" && (head.target.empty() || head.target[0] != '/')) {
      // A server routes by an absolute target's authority, whatever Host says (RFC 9112 3.2.2).
      auto uri = http::parse_absolute_uri(head.target);
      if (!uri) return fail(ErrorCode::kPermissionDenied, "request target is neither a path nor an absolute URI");
      host = uri->authority.host;
    }
    // Framing a server might read differently: bodies where none belong, codings besides
    // exactly "chunked".
    if (auto te = head.header("transfer-encoding"); te && !equals_ignore_case(*te, "chunked")) {
      return fail(ErrorCode::kPermissionDenied, "Transfer-Encoding other than chunked");
    }
    if ((head.method == "GET" || head.method == "HEAD" || head.method == "OPTIONS" || head.method == "TRACE") &&
        (head.count("content-length") > 0 || head.count("transfer-encoding") > 0)) {
      auto cl = head.header("content-length");
      if (!cl || *cl != "0" || head.count("transfer-encoding") > 0) {
        return fail(ErrorCode::kPermissionDenied, head.method + " request with a body");
      }
    }
    if (head.count("host") > 1) return fail(ErrorCode::kPermissionDenied, "several Host headers");
    if (auto h = head.header("host")) {
      KM_ASSIGN_OR_RETURN(auto a, http::parse_authority(*h, 80));
      if (!host.empty() && a.host != host) return fail(ErrorCode::kPermissionDenied, "Host does not match the request target");
      host = a.host;
    }
    if (host != host_) {
      return fail(ErrorCode::kPermissionDenied, "request for " + (host.empty() ? std::string("no host") : host) +
                                                    " on a connection allowed for " + host_);
    }
    (void)https_only_;
    return {};
  }

  // The head in origin-form, without the proxy's own headers.
  static std::string rewrite(const http::RequestHead& head, const std::string& path) {
    std::string out = head.method + " " + path + " HTTP/1." + std::to_string(head.minor_version) + "\r\n";
    for (const auto& h : head.headers) {
      if (equals_ignore_case(h.name, "proxy-connection") || equals_ignore_case(h.name, "proxy-authorization")) continue;
      out += h.name + ": " + h.value + "\r\n";
    }
    return out + "\r\n";
  }

 private:
  std::string host_;
  bool absolute_;
  bool https_only_;
  bool in_body_ = false;
  http::BodyFraming framing_;
  http::ChunkedScanner chunked_;
  uint64_t remaining_ = 0;
};

}  // namespace

class EgressProxy::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(EgressProxy& p, tcp::socket s) : p_(p), live_(p.live_), client_(std::move(s)), upstream_(p.io_), timer_(p.io_) {}

  void start() {
    ++*live_;
    std::error_code ec;
    // The client's source port: with the sandbox, it names the connection, and TLS observation
    // (kmd) records the same port, so a reader can join the two (docs/tls-capture.md).
    if (auto peer = client_.remote_endpoint(ec); !ec) sport_ = peer.port();
    if (p_.kernel_) {
      auto peer = client_.remote_endpoint(ec);
      if (!ec) {
        if (auto o = p_.kernel_->original_destination(peer.port())) {
          mode_ = "transparent";
          addr_ = o->first;
          port_ = o->second;
          read_more(sniff_timeout(), [self = shared_from_this()] { self->transparent_sniff(); });
          return;
        }
      }
    }
    auto local = client_.local_endpoint(ec);
    auto orig = original_destination(client_.native_handle());
    bool explicit_mode = !orig || (p_.link_address_ && orig->first.to_string() == p_.link_address_->to_string() &&
                                   orig->second == p_.config_.proxy_port);
    if (!orig && !ec) orig = std::make_pair(*IpAddress::parse(local.address().to_string()), local.port());
    if (explicit_mode) {
      mode_ = "explicit";
      read_more(kHeadTimeout, [self = shared_from_this()] { self->explicit_head(); });
    } else {
      mode_ = "transparent";
      addr_ = orig->first;
      port_ = orig->second;
      read_more(sniff_timeout(), [self = shared_from_this()] { self->transparent_sniff(); });
    }
  }

  // The counter outlives the proxy: sessions still queued in the event loop at shutdown are
  // destroyed after it.
  ~Session() { --*live_; }

 private:
  // Reads what the client sends next into in_ (or notes the timeout), then calls `then`.
  void read_more(std::chrono::milliseconds timeout, std::function<void()> then) {
    if (in_.size() >= kMaxPeek) {
      timed_out_ = false;
      eof_ = true;
      return then();
    }
    // One deadline for everything before the destination is known, however the client trickles.
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
    if (left.count() <= 0) {
      timed_out_ = true;
      return then();
    }
    timed_out_ = false;
    timer_.expires_after(std::min(timeout, left));
    unsigned gen = ++timer_gen_;
    timer_.async_wait([self = shared_from_this(), gen](std::error_code ec) {
      if (!ec && gen == self->timer_gen_) {
        self->timed_out_ = true;
        std::error_code ignored;
        self->client_.cancel(ignored);
      }
    });
    client_.async_read_some(asio::buffer(peek_), [self = shared_from_this(), then = std::move(then)](std::error_code ec, size_t n) {
      self->cancel_timer();
      if (ec && !self->timed_out_) self->eof_ = true;
      self->in_.append(self->peek_.data(), n);
      then();
    });
  }

  // ---- inspected hosts ----------------------------------------------------------------------

  bool inspected(const std::string& name) const { return !name.empty() && inspected_host(name, p_.config_.github); }

  // A client whose destination may be an inspected host gets the full head deadline to send
  // its ClientHello: judging it by address alone after the short sniff would let it past
  // inspection.
  std::chrono::milliseconds sniff_timeout() const {
    if (!name_.empty()) return inspected(name_) ? std::chrono::milliseconds(kHeadTimeout) : kSniffTimeout;
    for (const auto& n : p_.book_.names_for(addr_, now())) {
      if (inspected(n)) return kHeadTimeout;
    }
    return kSniffTimeout;
  }

  // An allowed TLS connection to an inspected host continues in the Inspector.
  void hand_off() {
    if (!p_.inspector_) {
      Decision d{false, "inspection", name_ + " needs L7 inspection and this enforcer has no inspection CA", ""};
      audit(name_, d);
      return reset();
    }
    Decision d = decision_;
    d.rule += " (inspected)";
    audit(name_, d);
    closed_ = true;  // the sockets move on; this session ends here
    cancel_timer();
    p_.inspector_->start(std::move(client_), std::move(upstream_), std::move(in_), name_, port_, addr_.to_string(), mode_,
                         live_);
  }

  // ---- explicit proxying -------------------------------------------------------------------

  void explicit_head() {
    auto head = http::parse_request_head(in_);
    if (!head) return reply_and_close(simple_response(400, "Bad Request", head.error().to_string()));
    if (!*head) {
      if (eof_ || timed_out_) return close();
      return read_more(kHeadTimeout, [self = shared_from_this()] { self->explicit_head(); });
    }
    http::RequestHead h = std::move(**head);
    in_.erase(0, h.size);
    if (h.method == "CONNECT") {
      auto a = http::parse_authority(h.target, 0);
      if (!a || !a->explicit_port) {
        return reply_and_close(simple_response(400, "Bad Request", "CONNECT needs host:port"));
      }
      proto_ = "tcp";
      connect_tunnel_ = true;
      return explicit_decide(*a);
    }
    // Agent telemetry: OTLP/HTTP sent to the proxy's own address, origin-form or absolute.
    std::string own_path;
    if (!h.target.empty() && h.target[0] == '/') {
      own_path = h.target;
    } else if (auto u = http::parse_absolute_uri(h.target);
               u && u->scheme == "http" && p_.link_address_ && u->authority.host == p_.link_address_->to_string() &&
               u->authority.port == p_.config_.proxy_port) {
      own_path = u->path;
    }
    if (!own_path.empty()) {
      auto signal = otlp_signal_for_path(own_path);
      if (!signal || h.method != "POST" || !p_.telemetry_) {
        return reply_and_close(simple_response(signal ? 405 : 400, signal ? "Method Not Allowed" : "Bad Request",
                                               signal ? "OTLP exports are POST requests"
                                                      : "not a proxy request (use an absolute URI or CONNECT)"));
      }
      auto framing = http::request_body_framing(h);
      if (!framing) return reply_and_close(simple_response(400, "Bad Request", framing.error().message()));
      otlp_ = std::make_unique<OtlpRequest>();
      otlp_->signal = *signal;
      otlp_->framing = *framing;
      otlp_->remaining = framing->kind == http::BodyFraming::kLength ? framing->length : 0;
      otlp_->content_type = std::string(h.header("content-type").value_or(""));
      otlp_->content_encoding = std::string(h.header("content-encoding").value_or(""));
      if (framing->kind == http::BodyFraming::kLength && framing->length > kMaxOtlpBody) {
        return reply_and_close(simple_response(413, "Payload Too Large", "OTLP request body too large"));
      }
      if (h.header("expect")) {
        return send_client("HTTP/1.1 100 Continue\r\n\r\n", [self = shared_from_this()] { self->otlp_body(); });
      }
      return otlp_body();
    }
    auto uri = http::parse_absolute_uri(h.target);
    if (!uri) return reply_and_close(simple_response(400, "Bad Request", uri.error().to_string()));
    if (uri->scheme != "http" && uri->scheme != "ws") {
      return reply_and_close(simple_response(400, "Bad Request", "https:// URLs go through CONNECT"));
    }
    proto_ = "http";
    if (inspected(uri->authority.host)) {
      Decision d{false, "inspection", uri->authority.host + " is inspected and reachable over HTTPS only", "use https://"};
      audit(uri->authority.host, d, uri->authority.port);
      return reply_and_close(json_403(uri->authority.host, uri->authority.port, d));
    }
    stream_ = std::make_unique<RequestStream>(uri->authority.host, true, p_.policy_.https_only());
    if (auto s = stream_->check(h); !s) {
      Decision d{false, "default deny", s.error().message(), ""};
      audit(uri->authority.host, d);
      return reply_and_close(json_403(uri->authority.host, uri->authority.port, d));
    }
    if (p_.policy_.https_only()) {
      Decision d{false, "httpsOnly", "plain HTTP is not allowed by the sandbox's policy", "use https://"};
      audit(uri->authority.host, d, uri->authority.port);
      return reply_and_close(json_403(uri->authority.host, uri->authority.port, d));
    }
    if (auto s = stream_->begin_body(h); !s) return reply_and_close(simple_response(400, "Bad Request", s.error().message()));
    first_out_ = RequestStream::rewrite(h, uri->path);
    explicit_decide(uri->authority);
  }

  // Collects an OTLP request's body (bounded in size and by the head deadline), then hands it
  // to the telemetry sink and answers.
  void otlp_body() {
    OtlpRequest& o = *otlp_;
    if (o.framing.kind == http::BodyFraming::kLength) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(o.remaining, in_.size()));
      o.body.append(in_, 0, n);
      in_.erase(0, n);
      o.remaining -= n;
      o.done = o.remaining == 0;
    } else if (o.framing.kind == http::BodyFraming::kChunked) {
      auto n = o.chunks.feed(in_, &o.body);
      if (!n) return reply_and_close(simple_response(400, "Bad Request", n.error().message()));
      in_.erase(0, *n);
      o.done = o.chunks.done();
    } else {
      o.done = true;
    }
    if (o.body.size() > kMaxOtlpBody) return reply_and_close(simple_response(413, "Payload Too Large", "OTLP request body too large"));
    if (!o.done) {
      if (eof_ || Clock::now() >= deadline_) return close();
      in_.clear();
      return read_body_more([self = shared_from_this()] { self->otlp_body(); });
    }
    otel::ExportResponse r = p_.telemetry_->accept(o.signal, o.body, o.content_type, o.content_encoding);
    otlp_.reset();
    reply_and_close("HTTP/1.1 " + std::to_string(r.status) + (r.status == 200 ? " OK" : " Error") +
                    "\r\nContent-Type: " + r.content_type + "\r\nContent-Length: " + std::to_string(r.body.size()) +
                    "\r\nConnection: close\r\n\r\n" + r.body);
  }

  // Reads more of a request body into in_ (not bounded by kMaxPeek, which is for heads).
  void read_body_more(std::function<void()> then) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
    timer_.expires_after(left);
    unsigned gen = ++timer_gen_;
    timer_.async_wait([self = shared_from_this(), gen](std::error_code ec) {
      if (!ec && gen == self->timer_gen_) {
        std::error_code ignored;
        self->client_.cancel(ignored);
      }
    });
    client_.async_read_some(asio::buffer(peek_), [self = shared_from_this(), then = std::move(then)](std::error_code ec, size_t n) {
      self->cancel_timer();
      if (ec) self->eof_ = true;
      self->in_.append(self->peek_.data(), n);
      then();
    });
  }

  void explicit_decide(const http::Authority& a) {
    port_ = a.port;
    if (a.ip_literal) {
      addr_ = *IpAddress::parse(a.host);
      for (const auto& n : p_.book_.names_for(addr_, now())) {
        if (inspected(n)) {
          Decision d{false, "inspection", a.host + " is an address of " + n + ", which is inspected: connect by name", ""};
          audit(n, d);
          return reply_and_close(json_403(a.host, a.port, d));
        }
      }
      Decision d = p_.policy_.check_cidr(addr_, port_);
      if (d.allowed) d = merge(d, p_.policy_.check_dial(addr_, port_));
      audit("", d);
      if (!d.allowed) return reply_and_close(json_403(a.host, a.port, d));
      return dial_explicit({addr_});
    }
    name_ = a.host;
    Decision d = p_.policy_.check_host(name_, port_);
    if (!d.allowed) {
      audit(name_, d);
      return reply_and_close(json_403(a.host, a.port, d));
    }
    decision_ = d;
    // A name the filter resolved recently (the sandbox's own lookup, usually) needs no new query.
    if (auto known = p_.book_.addresses_of(name_, now()); !known.empty()) return dial_explicit(std::move(known));
    p_.dns_.resolve(name_, [self = shared_from_this()](Result<std::vector<IpAddress>> addrs) {
      if (!addrs) {
        Decision nd{false, self->decision_.rule, "could not resolve: " + addrs.error().to_string(), ""};
        self->audit(self->name_, nd);
        return self->reply_and_close(simple_response(502, "Bad Gateway", nd.reason));
      }
      self->dial_explicit(std::move(*addrs));
    });
  }

  void dial_explicit(std::vector<IpAddress> addrs) {
    // The first address the policy lets the proxy dial.
    Decision last{false, "default deny", "no address", ""};
    for (const auto& a : addrs) {
      Decision d = p_.policy_.check_dial(a, port_);
      if (d.allowed) {
        addr_ = a;
        if (name_.empty()) decision_ = merge(p_.policy_.check_cidr(a, port_), d);
        else decision_ = merge(decision_, d);
        return dial([self = shared_from_this()](std::error_code ec) {
          if (ec) {
            Decision bad{false, self->decision_.rule, "upstream connect failed: " + ec.message(), ""};
            self->audit(self->name_, bad);
            return self->reply_and_close(simple_response(502, "Bad Gateway", bad.reason));
          }
          if (self->connect_tunnel_) {
            self->send_client("HTTP/1.1 200 Connection Established\r\n\r\n", [self] {
              if (!self->in_.empty()) return self->tunnel_inspect();
              self->read_more(self->sniff_timeout(), [self] { self->tunnel_inspect(); });
            });
            return;
          }
          self->audit(self->name_, self->decision_);
          self->start_relay();
        });
      }
      last = d;
    }
    audit(name_, last);
    reply_and_close(json_403(name_.empty() ? addr_.to_string() : name_, port_, last));
  }

  // What the client's first bytes are. Anything a lenient server would read as HTTP must parse
  // strictly, or it is refused (never relayed as opaque bytes); ECH is refused because the
  // outer SNI would not be the destination.
  enum class Kind { kMore, kBad, kTls, kHttp, kOther };
  struct Sniffed {
    Kind kind = Kind::kOther;
    std::string reason;        // kBad
    std::string sni;           // kTls
    http::RequestHead head;    // kHttp
  };
  Sniffed sniff(bool can_read_more) const {
    Sniffed out;
    bool more = can_read_more && in_.size() < kMaxPeek;
    auto first = static_cast<uint8_t>(in_[0]);
    if (tls::looks_like_tls(first)) {
      auto hello = tls::parse_client_hello(std::span(reinterpret_cast<const uint8_t*>(in_.data()), in_.size()));
      if (hello && !*hello) {
        out.kind = more ? Kind::kMore : Kind::kBad;
        out.reason = "incomplete TLS ClientHello";
      } else if (!hello) {
        out.kind = Kind::kBad;
        out.reason = "malformed TLS ClientHello";
      } else if ((*hello)->has_ech) {
        out.kind = Kind::kBad;
        out.reason = "encrypted ClientHello (ECH) hides the destination from the policy";
      } else {
        out.kind = Kind::kTls;
        out.sni = (*hello)->sni;
      }
      return out;
    }
    switch (http::sniff_http(in_)) {
      case http::HttpSniff::kNotHttp:
        out.kind = Kind::kOther;
        return out;
      case http::HttpSniff::kNeedMore:
        out.kind = more ? Kind::kMore : Kind::kBad;
        out.reason = "incomplete request line";
        return out;
      case http::HttpSniff::kHttp:
        break;
    }
    auto head = http::parse_request_head(in_, kMaxPeek);
    if (!head) {
      out.kind = Kind::kBad;
      out.reason = "an HTTP request km cannot parse strictly: " + head.error().message();
    } else if (!*head) {
      out.kind = more ? Kind::kMore : Kind::kBad;
      out.reason = "incomplete HTTP request head";
    } else {
      out.kind = Kind::kHttp;
      out.head = std::move(**head);
    }
    return out;
  }

  // The Host of a request that must carry exactly one.
  Result<http::Authority> host_of(const http::RequestHead& h) const {
    auto host = h.header("host");
    if (h.count("host") != 1 || !host) return fail(ErrorCode::kPermissionDenied, "HTTP request without exactly one Host header");
    auto a = http::parse_authority(*host, port_);
    if (!a) return fail(ErrorCode::kPermissionDenied, "bad Host header: " + a.error().message());
    return *a;
  }

  bool can_read_more() const { return !eof_ && Clock::now() < deadline_; }

  // Inside an allowed CONNECT: SNI or Host must name the CONNECT host.
  void tunnel_inspect() {
    if (in_.empty()) {
      if (eof_) return close();
      if (inspected(name_)) return deny_tunnel(name_ + " is inspected: the client must start TLS", "inspection");
      audit(name_, decision_);  // nothing sent yet: a server-speaks-first protocol
      late_check_ = true;        // but if the client speaks later, its SNI/Host still must match
      return start_relay();
    }
    std::string expected = name_.empty() ? addr_.to_string() : name_;
    Sniffed sn = sniff(can_read_more());
    switch (sn.kind) {
      case Kind::kMore:
        return read_more(kHeadTimeout, [self = shared_from_this()] { self->tunnel_inspect(); });
      case Kind::kBad:
        return deny_tunnel(sn.reason);
      case Kind::kTls:
        proto_ = "tls";
        if (!sn.sni.empty() && sn.sni != expected) {
          if (!name_.empty() || !p_.policy_.check_host(sn.sni, port_).allowed || !p_.book_.resolved_to(sn.sni, addr_, now())) {
            return deny_tunnel("TLS SNI " + sn.sni + " does not match the CONNECT host");
          }
        }
        if (inspected(name_)) return hand_off();
        if (inspected(sn.sni)) return deny_tunnel(sn.sni + " is inspected and must be reached by name", "inspection");
        break;
      case Kind::kHttp: {
        proto_ = "http";
        if (inspected(name_)) return deny_tunnel(name_ + " is inspected and reachable over HTTPS only", "inspection");
        if (p_.policy_.https_only()) return deny_tunnel("plain HTTP is not allowed by the sandbox's policy", "httpsOnly");
        auto a = host_of(sn.head);
        if (!a) return deny_tunnel(a.error().message());
        stream_ = std::make_unique<RequestStream>(expected, false, false);
        if (auto st = stream_->process(in_, first_out_); !st) return deny_tunnel(st.error().message());
        break;
      }
      case Kind::kOther:
        proto_ = "tcp";
        if (inspected(name_)) return deny_tunnel(name_ + " is inspected and reachable over HTTPS only", "inspection");
        break;
    }
    audit(name_, decision_);
    start_relay();
  }

  void deny_tunnel(std::string reason, std::string rule = "default deny") {
    Decision d{false, std::move(rule), std::move(reason), ""};
    audit(name_, d);
    reset();
  }

  // ---- transparent mode ---------------------------------------------------------------------

  void transparent_sniff() {
    if (in_.empty()) {
      if (eof_ && !timed_out_) return close();
      proto_ = "tcp";
      late_check_ = true;  // judged by address now; a late ClientHello or request is checked too
      return transparent_decide();
    }
    Sniffed sn = sniff(can_read_more());
    switch (sn.kind) {
      case Kind::kMore:
        return read_more(kHeadTimeout, [self = shared_from_this()] { self->transparent_sniff(); });
      case Kind::kBad:
        proto_ = tls::looks_like_tls(static_cast<uint8_t>(in_[0])) ? "tls" : "http";
        audit("", Decision{false, "default deny", sn.reason, ""});
        return reset();
      case Kind::kTls:
        proto_ = "tls";
        name_ = sn.sni;
        return transparent_decide();
      case Kind::kHttp: {
        proto_ = "http";
        auto a = host_of(sn.head);
        if (!a) {
          audit("", Decision{false, "default deny", a.error().message(), ""});
          return reset();
        }
        if (!a->ip_literal) name_ = a->host;
        if (p_.policy_.https_only()) {
          audit(name_, Decision{false, "httpsOnly", "plain HTTP is not allowed by the sandbox's policy", "use https://"});
          return reset();
        }
        stream_ = std::make_unique<RequestStream>(a->host, false, false);
        if (auto st = stream_->process(in_, first_out_); !st) {
          audit(name_, Decision{false, "default deny", st.error().message(), ""});
          return reset();
        }
        return transparent_decide();
      }
      case Kind::kOther:
        break;
    }
    proto_ = "tcp";
    transparent_decide();
  }

  void transparent_decide() {
    Decision d;
    if (inspected(name_) && proto_ != "tls") {
      audit(name_, Decision{false, "inspection", name_ + " is inspected and reachable over HTTPS only", "use https://"});
      return reset();
    }
    if (!name_.empty()) {
      d = p_.policy_.check_host(name_, port_);
      if (d.allowed && !p_.book_.resolved_to(name_, addr_, now())) {
        Decision c = p_.policy_.check_cidr(addr_, port_);
        d = c.allowed ? c
                      : Decision{false, "default deny",
                                 addr_.to_string() + " is not an address " + name_ + " resolved to through the DNS filter",
                                 "resolve the name inside the sandbox before connecting"};
      }
    } else {
      // Without a name on the wire the connection could not be inspected: an address an
      // inspected host resolved to is refused whatever rule would allow the address.
      for (const auto& n : p_.book_.names_for(addr_, now())) {
        if (inspected(n)) {
          audit(n, Decision{false, "inspection", addr_.to_string() + " is an address of " + n +
                                                     ", which is inspected: connect by name over TLS (with SNI)",
                            ""});
          return reset();
        }
      }
      d = p_.policy_.check_cidr(addr_, port_);
      if (!d.allowed) {
        // No name on the wire: an address an allowed name resolved to, for a port that name
        // may use.
        for (const auto& n : p_.book_.names_for(addr_, now())) {
          Decision byname = p_.policy_.check_host(n, port_);
          if (byname.allowed) {
            d = byname;
            d.rule += " (address of " + n + ")";
            break;
          }
        }
      }
    }
    if (d.allowed) d = merge(d, p_.policy_.check_dial(addr_, port_));
    decision_ = d;
    if (!d.allowed) {
      audit(name_, d);
      return reset();
    }
    dial([self = shared_from_this()](std::error_code ec) {
      if (ec) {
        self->audit(self->name_, Decision{false, self->decision_.rule, "upstream connect failed: " + ec.message(), ""});
        return self->reset();
      }
      if (self->proto_ == "tls" && self->inspected(self->name_)) return self->hand_off();
      self->audit(self->name_, self->decision_);
      self->start_relay();
    });
  }

  // ---- upstream ----------------------------------------------------------------------------

  void dial(std::function<void(std::error_code)> done) {
    timer_.expires_after(kConnectTimeout);
    unsigned gen = ++timer_gen_;
    timer_.async_wait([self = shared_from_this(), gen](std::error_code ec) {
      if (!ec && gen == self->timer_gen_) {
        std::error_code ignored;
        self->upstream_.close(ignored);
      }
    });
    if (p_.upstream_proxy_) {
      upstream_.async_connect(*p_.upstream_proxy_, [self = shared_from_this(), done = std::move(done)](std::error_code ec) {
        if (ec) {
          self->cancel_timer();
          return done(ec);
        }
        // The address the policy checked, never the name: the corporate proxy would resolve the
        // name again, and might get an address km never allowed.
        std::string target = endpoint_of(self->addr_, self->port_).address().to_string();
        if (self->addr_.family == AF_INET6) target = "[" + target + "]";
        target += ":" + std::to_string(self->port_);
        self->scratch_ = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n";
        asio::async_write(self->upstream_, asio::buffer(self->scratch_), [self, done](std::error_code wec, size_t) {
          if (wec) {
            self->cancel_timer();
            return done(wec);
          }
          self->scratch_.clear();
          self->read_proxy_reply(done);
        });
      });
      return;
    }
    upstream_.async_connect(endpoint_of(addr_, port_), [self = shared_from_this(), done = std::move(done)](std::error_code ec) {
      self->cancel_timer();
      if (!ec) {
        std::error_code ignored;
        self->upstream_.set_option(tcp::no_delay(true), ignored);
        self->client_.set_option(tcp::no_delay(true), ignored);
      }
      done(ec);
    });
  }

  void read_proxy_reply(std::function<void(std::error_code)> done) {
    upstream_.async_read_some(asio::buffer(peek_), [self = shared_from_this(), done = std::move(done)](std::error_code ec, size_t n) {
      if (ec) {
        self->cancel_timer();
        return done(ec);
      }
      self->scratch_.append(self->peek_.data(), n);
      auto end = self->scratch_.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (self->scratch_.size() > 16384) {
          self->cancel_timer();
          return done(asio::error::make_error_code(asio::error::invalid_argument));
        }
        return self->read_proxy_reply(done);
      }
      self->cancel_timer();
      bool ok = self->scratch_.compare(0, 9, "HTTP/1.1 ") == 0 || self->scratch_.compare(0, 9, "HTTP/1.0 ") == 0;
      ok = ok && self->scratch_.compare(9, 3, "200") == 0;
      // Bytes after the reply belong to the tunnel (a server that spoke first).
      self->server_first_ = self->scratch_.substr(end + 4);
      self->scratch_.clear();
      done(ok ? std::error_code{} : asio::error::make_error_code(asio::error::connection_refused));
    });
  }

  // ---- relay -------------------------------------------------------------------------------

  void start_relay() {
    std::string first = std::move(first_out_);
    if (stream_) {
      if (auto s = stream_->process(in_, first); !s) {
        audit(name_, Decision{false, "default deny", s.error().message(), ""});
        return close();
      }
    } else {
      first += in_;
      in_.clear();
    }
    auto self = shared_from_this();
    auto after = [self] {
      self->pump_client_to_upstream();
      if (!self->server_first_.empty()) {
        self->send_client(std::move(self->server_first_), [self] { self->pump_upstream_to_client(); });
      } else {
        self->pump_upstream_to_client();
      }
    };
    if (first.empty()) return after();
    out_ = std::move(first);
    asio::async_write(upstream_, asio::buffer(out_), [self, after](std::error_code ec, size_t) {
      if (ec) return self->close();
      after();
    });
  }

  // A byte stream that needs no more inspection moves between the sockets through a pipe
  // (splice): the bytes never enter the enforcer's memory, which saves two copies per byte.
  struct Pipe {
    int r = -1, w = -1;
    size_t buffered = 0;
    ~Pipe() {
      if (r >= 0) ::close(r);
      if (w >= 0) ::close(w);
    }
    bool open() {
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return false;
      r = fds[0];
      w = fds[1];
      (void)::fcntl(w, F_SETPIPE_SZ, 256 << 10);
      return true;
    }
  };

  bool splice_ready(std::unique_ptr<Pipe>& p) {
    if (splice_failed_) return false;
    if (!p) {
      p = std::make_unique<Pipe>();
      std::error_code e1, e2;
      client_.non_blocking(true, e1);
      upstream_.non_blocking(true, e2);
      if (!p->open() || e1 || e2) {
        p.reset();
        splice_failed_ = true;
        return false;
      }
    }
    return true;
  }

  void splice_pump(bool upward) {
    tcp::socket& from = upward ? client_ : upstream_;
    from.async_wait(tcp::socket::wait_read, [self = shared_from_this(), upward](std::error_code ec) {
      if (ec) return self->close();
      tcp::socket& src = upward ? self->client_ : self->upstream_;
      tcp::socket& dst = upward ? self->upstream_ : self->client_;
      Pipe& p = *(upward ? self->up_pipe_ : self->down_pipe_);
      ssize_t n = ::splice(src.native_handle(), nullptr, p.w, nullptr, 1 << 20, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n == 0) {
        std::error_code ignored;
        dst.shutdown(tcp::socket::shutdown_send, ignored);
        return self->half_closed(upward);
      }
      if (n < 0) {
        if (errno == EINTR) return self->splice_pump(upward);
        if (errno == EAGAIN) {
          // Readable, yet nothing to splice: urgent (out-of-band) data stops splice at its mark
          // for good. The copying relay reads past it; spinning here would burn a core.
          self->splice_failed_ = true;
          return upward ? self->pump_client_to_upstream() : self->pump_upstream_to_client();
        }
        return self->close();
      }
      p.buffered += static_cast<size_t>(n);
      (upward ? self->bytes_up_ : self->bytes_down_) += static_cast<uint64_t>(n);
      self->splice_flush(upward);
    });
  }

  void splice_flush(bool upward) {
    tcp::socket& dst = upward ? upstream_ : client_;
    Pipe& p = *(upward ? up_pipe_ : down_pipe_);
    while (p.buffered > 0) {
      ssize_t m = ::splice(p.r, nullptr, dst.native_handle(), nullptr, p.buffered, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (m > 0) {
        p.buffered -= static_cast<size_t>(m);
        continue;
      }
      if (m < 0 && (errno == EAGAIN || errno == EINTR)) {
        dst.async_wait(tcp::socket::wait_write, [self = shared_from_this(), upward](std::error_code ec) {
          if (ec) return self->close();
          self->splice_flush(upward);
        });
        return;
      }
      return close();
    }
    splice_pump(upward);
  }

  void pump_client_to_upstream() {
    if (!stream_ && !late_check_ && splice_ready(up_pipe_)) return splice_pump(true);
    if (c2u_.empty()) c2u_.resize(kRelayBuffer);
    client_.async_read_some(asio::buffer(c2u_), [self = shared_from_this()](std::error_code ec, size_t n) {
      if (ec) {
        std::error_code ignored;
        self->upstream_.shutdown(tcp::socket::shutdown_send, ignored);
        self->half_closed(true);
        return;
      }
      self->bytes_up_ += n;
      if (self->late_check_) {
        self->in_.append(self->c2u_.data(), n);
        switch (self->late_inspect()) {
          case Late::kMore:
            return self->pump_client_to_upstream();
          case Late::kDeny:
            return self->reset();
          case Late::kOk:
            break;
        }
        self->late_check_ = false;
        self->out_.clear();
        if (self->stream_) {
          if (auto s = self->stream_->process(self->in_, self->out_); !s) {
            self->audit(self->name_, Decision{false, "default deny", s.error().message(), ""});
            return self->close();
          }
        } else {
          self->out_.swap(self->in_);
          self->in_.clear();
        }
        asio::async_write(self->upstream_, asio::buffer(self->out_), [self](std::error_code wec, size_t) {
          if (wec) return self->close();
          self->pump_client_to_upstream();
        });
        return;
      }
      if (self->stream_) {
        self->in_.append(self->c2u_.data(), n);
        self->out_.clear();
        if (auto s = self->stream_->process(self->in_, self->out_); !s) {
          self->audit(self->name_, Decision{false, "default deny", s.error().message(), ""});
          return self->close();
        }
        if (self->out_.empty()) return self->pump_client_to_upstream();
        asio::async_write(self->upstream_, asio::buffer(self->out_), [self](std::error_code wec, size_t) {
          if (wec) return self->close();
          self->pump_client_to_upstream();
        });
        return;
      }
      asio::async_write(self->upstream_, asio::buffer(self->c2u_.data(), n), [self](std::error_code wec, size_t) {
        if (wec) return self->close();
        self->pump_client_to_upstream();
      });
    });
  }

  void pump_upstream_to_client() {
    if (splice_ready(down_pipe_)) return splice_pump(false);
    if (u2c_.empty()) u2c_.resize(kRelayBuffer);
    upstream_.async_read_some(asio::buffer(u2c_), [self = shared_from_this()](std::error_code ec, size_t n) {
      if (ec) {
        std::error_code ignored;
        self->client_.shutdown(tcp::socket::shutdown_send, ignored);
        self->half_closed(false);
        return;
      }
      self->bytes_down_ += n;
      asio::async_write(self->client_, asio::buffer(self->u2c_.data(), n), [self](std::error_code wec, size_t) {
        if (wec) return self->close();
        self->pump_upstream_to_client();
      });
    });
  }

  enum class Late { kMore, kOk, kDeny };

  // The first bytes of a client that spoke only after the connection was allowed without a
  // name (server-speaks-first, or a silent CONNECT tunnel): a TLS SNI or an HTTP Host it sends
  // now must name what the connection was allowed for, or the connection is cut.
  Late late_inspect() {
    Sniffed sn = sniff(true);
    std::string claimed;
    switch (sn.kind) {
      case Kind::kMore:
        return Late::kMore;
      case Kind::kBad:
        audit(name_, Decision{false, "default deny", sn.reason, ""});
        return Late::kDeny;
      case Kind::kTls:
        proto_ = "tls";
        claimed = sn.sni;
        break;
      case Kind::kHttp: {
        proto_ = "http";
        if (p_.policy_.https_only()) {
          audit(name_, Decision{false, "httpsOnly", "plain HTTP is not allowed by the sandbox's policy", "use https://"});
          return Late::kDeny;
        }
        auto a = host_of(sn.head);
        if (!a) {
          audit(name_, Decision{false, "default deny", a.error().message(), ""});
          return Late::kDeny;
        }
        claimed = a->host;
        // Every request on the connection is checked from here on.
        stream_ = std::make_unique<RequestStream>(name_.empty() ? claimed : name_, false, false);
        break;
      }
      case Kind::kOther:
        return Late::kOk;
    }
    if (claimed.empty()) return Late::kOk;
    if (inspected(claimed) || inspected(name_)) {
      audit(claimed, Decision{false, "inspection", claimed + " is inspected: its connections must start with TLS at once", ""});
      return Late::kDeny;
    }
    bool ok = name_.empty() ? (p_.policy_.check_host(claimed, port_).allowed && p_.book_.resolved_to(claimed, addr_, now())) ||
                                  p_.policy_.check_cidr(addr_, port_).allowed
                            : claimed == name_;
    if (!ok) {
      audit(claimed, Decision{false, "default deny",
                              claimed + " is not what this connection was allowed for (" +
                                  (name_.empty() ? addr_.to_string() : name_) + ")",
                              ""});
      return Late::kDeny;
    }
    return Late::kOk;
  }

  void half_closed(bool client_side) {
    (client_side ? c2u_done_ : u2c_done_) = true;
    if (c2u_done_ && u2c_done_) close();
  }

  // ---- helpers -----------------------------------------------------------------------------

  void send_client(std::string data, std::function<void()> then) {
    reply_ = std::move(data);
    asio::async_write(client_, asio::buffer(reply_), [self = shared_from_this(), then = std::move(then)](std::error_code ec, size_t) {
      if (ec) return self->close();
      then();
    });
  }

  void reply_and_close(std::string response) {
    send_client(std::move(response), [self = shared_from_this()] {
      std::error_code ignored;
      self->client_.shutdown(tcp::socket::shutdown_send, ignored);
      self->close();
    });
  }

  // A denied transparent connection is reset, so the client sees ECONNRESET at once.
  void reset() {
    std::error_code ignored;
    client_.set_option(asio::socket_base::linger(true, 0), ignored);
    close();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    std::error_code ignored;
    cancel_timer();
    client_.close(ignored);
    upstream_.close(ignored);
  }

  // Cancels the session timer; a completion already queued is ignored by its generation.
  void cancel_timer() {
    ++timer_gen_;
    timer_.cancel();
  }

  static Decision merge(Decision base, const Decision& dial) {
    if (!dial.allowed) return dial;
    if (!dial.rule.empty() && dial.rule != base.rule) base.rule += " + " + dial.rule;
    return base;
  }

  static proxy::AddressBook::Clock::time_point now() { return proxy::AddressBook::Clock::now(); }

  void audit(const std::string& name, const Decision& d, std::optional<uint16_t> port = std::nullopt) {
    nlohmann::json f{{"mode", mode_}, {"proto", proto_}, {"verdict", d.allowed ? "allow" : "deny"}, {"rule", d.rule},
                     {"port", port.value_or(port_)}};
    if (!name.empty()) f["name"] = name;
    if (addr_.family != 0) f["addr"] = addr_.to_string();
    if (sport_ != 0) f["sport"] = sport_;
    if (!d.allowed) {
      f["reason"] = d.reason;
      if (!d.hint.empty()) f["hint"] = d.hint;
    }
    p_.audit_.emit("connect", std::move(f));
  }

  EgressProxy& p_;
  std::shared_ptr<size_t> live_;
  tcp::socket client_;
  tcp::socket upstream_;
  asio::steady_timer timer_;
  std::string mode_;
  std::string proto_ = "tcp";
  IpAddress addr_;
  uint16_t port_ = 0;
  uint16_t sport_ = 0;  // the client's source port
  std::string name_;
  Decision decision_;
  bool connect_tunnel_ = false;
  bool late_check_ = false;
  using Clock = std::chrono::steady_clock;
  Clock::time_point deadline_ = Clock::now() + kHeadTimeout;
  unsigned timer_gen_ = 0;  // a timer completion already queued when re-armed is ignored
  bool timed_out_ = false;
  bool eof_ = false;
  bool closed_ = false;
  bool c2u_done_ = false, u2c_done_ = false;
  std::string in_;          // client bytes not yet forwarded
  std::string first_out_;   // what goes upstream first (a rewritten head)
  std::string out_, reply_, scratch_, server_first_;
  std::unique_ptr<RequestStream> stream_;
  struct OtlpRequest {
    otel::Signal signal = otel::Signal::kLogs;
    http::BodyFraming framing;
    http::ChunkedScanner chunks;
    uint64_t remaining = 0;
    bool done = false;
    std::string body, content_type, content_encoding;
  };
  std::unique_ptr<OtlpRequest> otlp_;
  std::array<char, 16384> peek_{};
  std::vector<char> c2u_, u2c_;  // allocated only when the relay does not splice
  std::unique_ptr<Pipe> up_pipe_, down_pipe_;
  bool splice_failed_ = false;
  uint64_t bytes_up_ = 0, bytes_down_ = 0;
};

EgressProxy::EgressProxy(asio::io_context& io, const Config& config, const proxy::EgressPolicy& policy,
                         proxy::AddressBook& book, DnsService& dns, AuditLog& audit, log::Logger& log)
    : io_(io), config_(config), policy_(policy), book_(book), dns_(dns), audit_(audit), log_(log), backoff_(io) {}

Status EgressProxy::serve(int listen_fd) {
  std::error_code ec;
  auto link = asio::ip::make_address(config_.link_address, ec);
  if (!ec) link_address_ = link;
  if (!config_.upstream_proxy.empty()) {
    std::string u = config_.upstream_proxy;
    if (u.rfind("http://", 0) == 0) u = u.substr(7);
    while (!u.empty() && u.back() == '/') u.pop_back();
    auto a = http::parse_authority(u, 3128);
    if (!a || !a->ip_literal) {
      return fail(ErrorCode::kInvalidArgument, "upstreamProxy must be http://IP:PORT, not " + config_.upstream_proxy);
    }
    upstream_proxy_ = tcp::endpoint(asio::ip::make_address(a->host), a->port);
  }
  try {
    acceptor_ = std::make_unique<tcp::acceptor>(io_, tcp::v4(), listen_fd);
  } catch (const std::system_error& e) {
    return fail(Error(ErrorCode::kSystem, std::string("adopting the proxy socket: ") + e.what()));
  }
  accept();
  return {};
}

void EgressProxy::accept() {
  acceptor_->async_accept([this](std::error_code ec, tcp::socket s) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors or memory: back off instead of spinning; connections wait in the
      // listen backlog meanwhile.
      log_.log(log::Level::kWarn, "accept failed; retrying in 100 ms", {{"error", ec.message()}}, config_.sandbox);
      backoff_.expires_after(std::chrono::milliseconds(100));
      backoff_.async_wait([this](std::error_code tec) {
        if (!tec) accept();
      });
      return;
    }
    if (*live_ >= kMaxSessions) {
      audit_.emit("connect", {{"verdict", "deny"}, {"rule", "limit"}, {"reason", "too many open connections (" + std::to_string(kMaxSessions) + ")"}});
      std::error_code ignored;
      s.set_option(asio::socket_base::linger(true, 0), ignored);
      s.close(ignored);
    } else {
      std::make_shared<Session>(*this, std::move(s))->start();
    }
    accept();
  });
}

}  // namespace km::enforcer
