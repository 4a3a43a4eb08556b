#include "km/enforcer/inspector.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <asio/ssl.hpp>
#pragma GCC diagnostic pop

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <array>
#include <chrono>

#include "km/base/file.h"
#include "km/base/strings.h"
#include "km/meter/response_meter.h"
#include "km/proxy/github_policy.h"
#include "km/proxy/http_head.h"

namespace km::enforcer {

using asio::ip::tcp;
using namespace std::chrono_literals;
namespace http = proxy::http;
namespace github = proxy::github;

namespace {

constexpr auto kHandshakeTimeout = 30s;
// A connection with no traffic either way for this long is closed (streams send pings far
// more often).
constexpr auto kIdleTimeout = 10min;
constexpr size_t kMaxAiBody = 32u << 20;
// AI request bodies all sessions may hold at once; beyond it new ones get a 503.
constexpr size_t kMaxBufferedTotal = 256u << 20;
// A request body being collected must arrive within this, however it trickles.
constexpr auto kBodyDeadline = 5min;
constexpr size_t kReadSize = 16 * 1024;

// A socket whose first reads return bytes the proxy already took from it (the ClientHello it
// sniffed), for asio::ssl::stream to read the handshake from the start.
class PrefixedSocket {
 public:
  using executor_type = tcp::socket::executor_type;
  using lowest_layer_type = tcp::socket::lowest_layer_type;

  PrefixedSocket(tcp::socket s, std::string prefix) : socket_(std::move(s)), prefix_(std::move(prefix)) {}
  executor_type get_executor() noexcept { return socket_.get_executor(); }
  lowest_layer_type& lowest_layer() { return socket_.lowest_layer(); }
  const lowest_layer_type& lowest_layer() const { return socket_.lowest_layer(); }

  template <typename MutableBuffers, typename Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, std::size_t)>(
        [this](auto handler, const MutableBuffers& b) {
          if (prefix_.empty()) return socket_.async_read_some(b, std::move(handler));
          std::size_t n = asio::buffer_copy(b, asio::buffer(prefix_));
          prefix_.erase(0, n);
          auto ex = asio::get_associated_executor(handler, socket_.get_executor());
          asio::post(ex, [h = std::move(handler), n]() mutable { std::move(h)(std::error_code{}, n); });
        },
        token, buffers);
  }
  template <typename ConstBuffers, typename Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return socket_.async_write_some(buffers, std::forward<Token>(token));
  }

 private:
  tcp::socket socket_;
  std::string prefix_;
};

std::string path_of(std::string_view target) {
  // Queries may carry credentials (tokens in URLs): audit records keep the path only.
  return std::string(target.substr(0, target.find('?')));
}

int select_http11(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen, void*) {
  static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof kHttp11, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  // A client offering only h2: no ALPN, so it falls back to HTTP/1.1 or fails, never speaks h2.
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

std::string json_error(int code, std::string_view reason, const nlohmann::json& body, bool close) {
  std::string text = body.dump() + "\n";
  return "HTTP/1.1 " + std::to_string(code) + " " + std::string(reason) +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(text.size()) +
         (close ? "\r\nConnection: close" : "") + "\r\n\r\n" + text;
}

std::string refusal_response(const meter::Refusal& r, bool close) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + (r.status == 403 ? " Forbidden" : " Service Unavailable") +
                    "\r\nContent-Type: " + r.content_type + "\r\nContent-Length: " + std::to_string(r.body.size());
  for (const auto& [k, v] : r.headers) out += "\r\n" + k + ": " + v;
  if (close) out += "\r\nConnection: close";
  return out + "\r\n\r\n" + r.body;
}

// Whether a comma-separated header value lists `token` (case-insensitive).
bool has_token(std::string_view list, std::string_view token) {
  for (const std::string& part : split(list, ',')) {
    std::string_view p = part;
    while (!p.empty() && (p.front() == ' ' || p.front() == '\t')) p.remove_prefix(1);
    while (!p.empty() && (p.back() == ' ' || p.back() == '\t')) p.remove_suffix(1);
    if (equals_ignore_case(p, token)) return true;
  }
  return false;
}

}  // namespace

bool inspected_host(std::string_view host, bool github_rules) {
  if (meter::ai_provider_for_host(host)) return true;
  return github_rules && github::is_github_host(host);
}

class Inspector::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Inspector& in, asio::ssl::context& server_ctx, tcp::socket client, tcp::socket upstream, std::string prefix,
          std::string host, uint16_t port, std::string addr, std::string mode, std::shared_ptr<size_t> live)
      : in_(in),
        sport_(source_port(client)),
        client_(PrefixedSocket(std::move(client), std::move(prefix)), server_ctx),
        upstream_(std::move(upstream), *in.upstream_context_),
        timer_(in.io_),
        host_(std::move(host)),
        port_(port),
        addr_(std::move(addr)),
        mode_(std::move(mode)),
        live_(std::move(live)) {
    ++*live_;
    provider_ = meter::ai_provider_for_host(host_);
  }
  ~Session() {
    release_buffer();
    --*live_;
  }

  void start() {
    SSL* up = upstream_.native_handle();
    SSL_set_tlsext_host_name(up, host_.c_str());
    SSL_set1_host(up, host_.c_str());
    static const unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_set_alpn_protos(up, kAlpn, sizeof kAlpn);
    arm(kHandshakeTimeout);
    auto self = shared_from_this();
    client_.async_handshake(asio::ssl::stream_base::server, [self](std::error_code ec) {
      self->client_ec_ = ec;
      self->handshaken();
    });
    upstream_.async_handshake(asio::ssl::stream_base::client, [self](std::error_code ec) {
      self->upstream_ec_ = ec;
      if (ec) {
        long v = SSL_get_verify_result(self->upstream_.native_handle());
        self->upstream_error_ = v != X509_V_OK ? std::string("certificate verification failed: ") + X509_verify_cert_error_string(v)
                                               : "TLS handshake failed: " + ec.message();
      }
      self->handshaken();
    });
  }

 private:
  // ---- lifetime ------------------------------------------------------------------------------

  void arm(std::chrono::steady_clock::duration d) {
    timer_.expires_after(d);
    unsigned gen = ++timer_gen_;
    timer_.async_wait([self = shared_from_this(), gen](std::error_code ec) {
      if (!ec && gen == self->timer_gen_) self->abort("timed out");
    });
  }

  void abort(const std::string& why) {
    if (closed_) return;
    if (call_) {
      // Metered for what arrived (a JSON body is read only here; a stream's estimate stands).
      if (meter_) meter_->finish(false);
      in_.accounting_->settle(call_, meter_.get(), status_, false);
      call_.reset();
    }
    release_buffer();
    (void)why;
    closed_ = true;
    ++timer_gen_;
    timer_.cancel();
    std::error_code ignored;
    client_.lowest_layer().close(ignored);
    upstream_.lowest_layer().close(ignored);
  }

  // Ends the connection after a response that the client reads until close: a TLS close_notify
  // first (clients treat a bare TCP close as truncation), bounded in time.
  void finish() {
    if (closed_) return;
    arm(2s);
    client_.async_shutdown([self = shared_from_this()](std::error_code) { self->abort("done"); });
  }

  // ---- handshakes ----------------------------------------------------------------------------

  void handshaken() {
    if (++handshakes_ < 2 || closed_) return;
    if (client_ec_) {
      // Usually a client that does not trust the sandbox's CA (its own trust store was replaced).
      audit_http("", "", 0, false, "tls", "client TLS handshake failed: " + client_ec_.message());
      return abort("client handshake");
    }
    if (upstream_ec_) {
      audit_http("", "", 502, false, "upstream-tls", upstream_error_);
      nlohmann::json body{{"error", "upstream_tls_failed"}, {"host", host_}, {"reason", upstream_error_}};
      return send_client(json_error(502, "Bad Gateway", body, true), [self = shared_from_this()] { self->finish(); });
    }
    arm(kIdleTimeout);
    read_request();
  }

  // ---- requests ------------------------------------------------------------------------------

  template <typename Stream>
  void read_some(Stream& s, std::string& into, std::function<void(bool)> then) {
    s.async_read_some(asio::buffer(rd_), [self = shared_from_this(), &into, then = std::move(then)](std::error_code ec, size_t n) {
      if (self->closed_) return;
      self->arm(kIdleTimeout);
      into.append(self->rd_.data(), n);
      then(!ec);
    });
  }

  void read_request() {
    auto head = http::parse_request_head(cbuf_);
    if (!head) {
      audit_http("", "", 400, false, "malformed", head.error().message());
      nlohmann::json body{{"error", "bad_request"}, {"reason", head.error().message()}};
      return send_client(json_error(400, "Bad Request", body, true), [self = shared_from_this()] { self->finish(); });
    }
    if (!*head) {
      return read_some(client_, cbuf_, [self = shared_from_this()](bool ok) {
        if (!ok) return self->abort("client closed");
        self->read_request();
      });
    }
    req_ = std::move(**head);
    cbuf_.erase(0, req_.size);
    on_request();
  }

  // Refuses the current request with `response`; the connection goes on only if the request's
  // body was fully read (or it had none).
  void refuse(std::string response, bool keep) {
    send_client(std::move(response), [self = shared_from_this(), keep] {
      if (keep) return self->read_request();
      self->finish();
    });
  }

  void on_request() {
    target_ = req_.target;
    auto deny = [&](int code, std::string_view reason, const std::string& rule, const std::string& why) {
      audit_http(req_.method, path_of(target_), code, false, rule, why);
      nlohmann::json body{{"error", "egress_denied"}, {"host", host_}, {"rule", rule}, {"reason", why}};
      refuse(json_error(code, reason, body, true), false);
    };
    if (req_.method == "CONNECT") return deny(405, "Method Not Allowed", "inspection", "CONNECT inside an inspected connection");
    // The request must be for the host the tunnel was opened (and the certificate minted) for.
    if (req_.count("host") != 1) return deny(400, "Bad Request", "inspection", "a request needs exactly one Host header");
    auto a = http::parse_authority(*req_.header("host"), port_);
    if (!a || a->host != host_ || a->port != port_) {
      return deny(403, "Forbidden", "inspection", "Host does not name " + host_ + ", the host this connection is for");
    }
    if (!target_.empty() && target_[0] != '/') {
      auto uri = http::parse_absolute_uri(target_);
      if (!uri || uri->authority.host != host_ || uri->scheme != "https") {
        return deny(403, "Forbidden", "inspection", "request target does not name " + host_);
      }
      target_ = uri->path;
    }
    if (req_.header("upgrade") || (req_.header("connection") && has_token(*req_.header("connection"), "upgrade"))) {
      return deny(403, "Forbidden", "inspection", "protocol upgrades (WebSocket) cannot be inspected");
    }
    auto framing = http::request_body_framing(req_);
    if (!framing) return deny(400, "Bad Request", "malformed", framing.error().message());
    framing_ = *framing;
    // Framing a server might read differently from km (as the egress proxy refuses it too):
    // codings besides exactly "chunked", bodies where none belong.
    if (auto te = req_.header("transfer-encoding"); te && !equals_ignore_case(*te, "chunked")) {
      return deny(400, "Bad Request", "malformed", "Transfer-Encoding other than chunked");
    }
    if ((req_.method == "GET" || req_.method == "HEAD" || req_.method == "OPTIONS" || req_.method == "TRACE") &&
        (framing_.kind == http::BodyFraming::kChunked || (framing_.kind == http::BodyFraming::kLength && framing_.length > 0))) {
      return deny(400, "Bad Request", "malformed", req_.method + " request with a body");
    }
    close_after_ = req_.minor_version == 0 || (req_.header("connection") && has_token(*req_.header("connection"), "close"));
    expect_continue_ = req_.header("expect") && equals_ignore_case(*req_.header("expect"), "100-continue");
    body_.clear();
    release_buffer();
    chunks_ = http::ChunkedScanner{};
    remaining_ = framing_.kind == http::BodyFraming::kLength ? framing_.length : 0;
    ai_req_.reset();
    call_.reset();
    meter_.reset();
    github_verdict_.reset();
    push_.reset();
    push_fed_ = 0;
    held_.clear();
    status_ = 0;
    if (provider_) {
      if (req_.header("content-encoding") && framing_.kind != http::BodyFraming::kNone) {
        // km must read the body it meters: the model, stream flag and max_tokens are in it.
        return deny(415, "Unsupported Media Type", "inspection", "compressed request bodies cannot be inspected");
      }
      body_deadline_ = std::chrono::steady_clock::now() + kBodyDeadline;
      // Buffered whole: the model, the stream flag and max_tokens are in the body.
      return continue_then([self = shared_from_this()] { self->collect_body([self] { self->on_ai_request(); }); });
    }
    if (in_.github_) {
      for (const auto& h : req_.headers) {
        if (github::is_method_override_header(h.name)) {
          return deny(403, "Forbidden", "method-override", "a method-override header would let the server serve another method than the one checked");
        }
      }
      github::Verdict v = github::check_request(*in_.github_, host_, req_.method, target_);
      if (!v.allowed) return deny_github(v);
      github_verdict_ = v;
      if (v.push && req_.header("content-encoding")) {
        v.allowed = false;
        v.rule = "push-encoded";
        v.reason = "a compressed push body cannot be inspected";
        return deny_github(v);
      }
      if (v.push_body == github::PushBody::kCreateRef) {
        return continue_then([self = shared_from_this()] { self->collect_body([self] { self->on_create_ref(); }); });
      }
      if (v.push_body == github::PushBody::kReceivePack) push_ = std::make_unique<github::ReceivePackScanner>();
    }
    continue_then([self = shared_from_this()] { self->forward_head_then_body(); });
  }

  void deny_github(const github::Verdict& v) {
    audit_http(req_.method, path_of(target_), 403, false, v.rule, v.reason, v.repo);
    refuse(json_error(403, "Forbidden", nlohmann::json::parse(github::denial_json(v)), true), false);
  }

  // POST /repos/{o}/{r}/git/refs: the ref it creates is in its JSON body.
  void on_create_ref() {
    github::Verdict v = *github_verdict_;
    auto update = body_.size() <= github::kMaxCommandListBytes ? github::parse_create_ref_body(body_)
                                                               : Result<github::RefUpdate>(fail(ErrorCode::kResourceExhausted, "body too large"));
    if (!update) {
      v.allowed = false;
      v.rule = "malformed-push";
      v.reason = "the ref to create cannot be read: " + update.error().message();
      return deny_github(v);
    }
    v = github::check_push(*in_.github_, v.repo, std::vector<github::RefUpdate>{*update});
    if (!v.allowed) return deny_github(v);
    std::string out = head_text(body_.size());
    out += body_;
    body_.clear();
    release_buffer();
    write_upstream(std::move(out), [self = shared_from_this()] { self->read_response(); });
  }

  // A client that sent `Expect: 100-continue` waits for it before its body. km answers it
  // itself (and does not forward the expectation), so the body can be inspected first.
  void continue_then(std::function<void()> next) {
    if (!expect_continue_) return next();
    send_client("HTTP/1.1 100 Continue\r\n\r\n", std::move(next));
  }

  std::string head_text(std::optional<uint64_t> content_length) const {
    std::string out = req_.method + " " + target_ + " HTTP/1." + std::to_string(req_.minor_version) + "\r\n";
    for (const auto& h : req_.headers) {
      if (equals_ignore_case(h.name, "expect") || equals_ignore_case(h.name, "proxy-connection") ||
          equals_ignore_case(h.name, "proxy-authorization")) {
        continue;
      }
      if (content_length && (equals_ignore_case(h.name, "content-length") || equals_ignore_case(h.name, "transfer-encoding"))) {
        continue;
      }
      out += h.name + ": " + h.value + "\r\n";
    }
    if (content_length && (*content_length > 0 || req_.method == "POST" || req_.method == "PUT" || req_.method == "PATCH")) {
      out += "Content-Length: " + std::to_string(*content_length) + "\r\n";
    }
    return out + "\r\n";
  }

  // Moves request-body bytes from cbuf_ into `raw` (framed as sent) and, de-chunked, into
  // `payload`. True when the body is complete.
  Result<bool> take_body(std::string* raw, std::string* payload) {
    switch (framing_.kind) {
      case http::BodyFraming::kNone:
        return true;
      case http::BodyFraming::kLength: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, cbuf_.size()));
        if (raw) raw->append(cbuf_, 0, n);
        if (payload) payload->append(cbuf_, 0, n);
        cbuf_.erase(0, n);
        remaining_ -= n;
        return remaining_ == 0;
      }
      case http::BodyFraming::kChunked: {
        KM_ASSIGN_OR_RETURN(size_t n, chunks_.feed(cbuf_, payload));
        if (raw) raw->append(cbuf_, 0, n);
        cbuf_.erase(0, n);
        return chunks_.done();
      }
    }
    return true;
  }

  void collect_body(std::function<void()> then) {
    size_t before = body_.size();
    auto done = take_body(nullptr, &body_);
    hold_buffer(body_.size() - std::min(before, body_.size()));
    if (!done) {
      audit_http(req_.method, path_of(target_), 400, false, "malformed", done.error().message());
      return refuse(json_error(400, "Bad Request", {{"error", "bad_request"}, {"reason", done.error().message()}}, true), false);
    }
    if (body_.size() > kMaxAiBody) {
      audit_http(req_.method, path_of(target_), 413, false, "inspection", "request body over 32 MiB");
      return refuse(json_error(413, "Payload Too Large", {{"error", "request_too_large"}, {"limit_bytes", kMaxAiBody}}, true), false);
    }
    if (in_.buffered_ > kMaxBufferedTotal) {
      audit_http(req_.method, path_of(target_), 503, false, "inspection", "too many request bodies held at once");
      return refuse(json_error(503, "Service Unavailable", {{"error", "busy"}, {"reason", "the enforcer holds too many request bodies; retry"}}, true), false);
    }
    if (std::chrono::steady_clock::now() > body_deadline_) {
      audit_http(req_.method, path_of(target_), 408, false, "inspection", "request body not received in time");
      return refuse(json_error(408, "Request Timeout", {{"error", "request_timeout"}}, true), false);
    }
    if (*done) return then();
    read_some(client_, cbuf_, [self = shared_from_this(), then = std::move(then)](bool ok) {
      if (!ok) return self->abort("client closed mid-request");
      self->collect_body(then);
    });
  }

  // Request bytes this session buffers count against the enforcer-wide bound.
  void hold_buffer(size_t n) {
    held_bytes_ += n;
    in_.buffered_ += n;
  }
  void release_buffer() {
    in_.buffered_ -= held_bytes_;
    held_bytes_ = 0;
  }

  void on_ai_request() {
    ai_req_ = meter::classify(*provider_, req_.method, target_, body_);
    if (ai_req_->api == "chat.completions" && ai_req_->stream && !ai_req_->stream_include_usage) {
      // Without stream_options.include_usage an OpenAI stream carries no usage at all: km asks
      // for it (the client sees one more chunk, with empty choices, as the API documents).
      auto j = nlohmann::json::parse(body_, nullptr, false);
      if (j.is_object() && (!j.contains("stream_options") || j["stream_options"].is_object() || j["stream_options"].is_null())) {
        if (!j["stream_options"].is_object()) j["stream_options"] = nlohmann::json::object();
        j["stream_options"]["include_usage"] = true;
        body_ = j.dump();
        ai_req_ = meter::classify(*provider_, req_.method, target_, body_);
      }
    }
    meter::AiRequest gate = *ai_req_;
    if (gate.api == "responses") {
      // A background response is fetched later by GET, which km does not meter: it is an
      // unmetered write (refused under an AI ceiling).
      auto j = nlohmann::json::parse(body_, nullptr, false);
      if (j.is_object() && j.contains("background") && j["background"].is_boolean() && j["background"].get<bool>()) {
        gate.api = "other";
        gate.billable = false;
      }
    }
    auto admission = in_.accounting_->admit(gate, req_.method, body_.size());
    if (admission.refusal) {
      audit_http(req_.method, path_of(target_), admission.refusal->status, false, "budget", admission.reason);
      return refuse(refusal_response(*admission.refusal, close_after_), !close_after_);
    }
    call_ = std::move(admission.call);
    std::string out = head_text(body_.size());
    out += body_;
    body_.clear();
    body_.shrink_to_fit();
    release_buffer();
    write_upstream(std::move(out), [self = shared_from_this()] { self->read_response(); });
  }

  void forward_head_then_body() {
    std::string head = head_text(std::nullopt);
    write_upstream(std::move(head), [self = shared_from_this()] { self->pump_body(); });
  }

  // Streams a request body that needs no buffering (GitHub requests); a push's command list is
  // held back until every ref it updates is checked.
  void pump_body() {
    std::string raw;
    std::string payload;
    auto done = take_body(&raw, push_ ? &payload : nullptr);
    if (!done) return abort("malformed request body: " + done.error().message());
    if (push_) {
      held_ += raw;
      raw.clear();
      push_fed_ += payload.size();
      auto state = push_->state() == github::ReceivePackScanner::State::kNeedMore && !payload.empty() ? push_->feed(payload)
                                                                                                      : push_->state();
      if (state == github::ReceivePackScanner::State::kNeedMore && *done) state = github::ReceivePackScanner::State::kError;
      if (state != github::ReceivePackScanner::State::kNeedMore) {
        github::Verdict v = github::check_push(*in_.github_, github_verdict_->repo, *push_);
        // git's authentication probe is a lone flush: the body must end there.
        if (v.allowed && push_->probe() && (!*done || push_fed_ != push_->consumed())) {
          v.allowed = false;
          v.rule = "malformed-push";
          v.reason = "bytes after a push probe";
        }
        if (!v.allowed) {
          // The request head went upstream already: that connection is dropped, unanswered.
          std::error_code ignored;
          upstream_.lowest_layer().close(ignored);
          return deny_github(v);
        }
        push_.reset();  // the rest (push options, the pack) streams through
        raw = std::move(held_);
        held_.clear();
      } else if (held_.size() > github::kMaxCommandListBytes + 64 * 1024) {
        audit_http(req_.method, path_of(target_), 400, false, "malformed-push", "command list too long", github_verdict_->repo);
        return abort("push command list too long");
      }
    }
    bool complete = *done;
    auto next = [self = shared_from_this(), complete] {
      if (complete) return self->read_response();
      self->read_some(self->client_, self->cbuf_, [self](bool ok) {
        if (!ok) return self->abort("client closed mid-request");
        self->pump_body();
      });
    };
    if (raw.empty()) return next();
    write_upstream(std::move(raw), std::move(next));
  }

  // ---- responses -----------------------------------------------------------------------------

  void read_response() {
    auto head = http::parse_response_head(ubuf_);
    if (!head) {
      audit_http(req_.method, path_of(target_), 502, false, "upstream", "malformed response: " + head.error().message());
      return abort("malformed response");
    }
    if (!*head) {
      return read_some(upstream_, ubuf_, [self = shared_from_this()](bool ok) {
        if (!ok) {
          self->audit_http(self->req_.method, path_of(self->target_), 502, false, "upstream", "upstream closed before responding");
          return self->abort("upstream closed");
        }
        self->read_response();
      });
    }
    http::ResponseHead resp = std::move(**head);
    std::string head_bytes = ubuf_.substr(0, resp.size);
    ubuf_.erase(0, resp.size);
    if (resp.status == 101) return abort("upstream switched protocols");
    if (resp.status < 200) {
      // Interim responses (103 Early Hints) pass through; the final one follows.
      return send_client(std::move(head_bytes), [self = shared_from_this()] { self->read_response(); });
    }
    status_ = resp.status;
    auto framing = http::response_body_framing(resp, req_.method);
    if (!framing) {
      audit_http(req_.method, path_of(target_), 502, false, "upstream", "response framing: " + framing.error().message());
      return abort("bad response framing");
    }
    rframing_ = *framing;
    rremaining_ = rframing_.kind == http::ResponseFraming::kLength ? rframing_.length : 0;
    rchunks_ = http::ChunkedScanner{};
    if (resp.header("connection") && has_token(*resp.header("connection"), "close")) close_after_ = true;
    if (rframing_.kind == http::ResponseFraming::kUntilClose) close_after_ = true;
    if (call_) {
      std::vector<std::pair<std::string, std::string>> headers;
      for (const auto& h : resp.headers) headers.emplace_back(h.name, h.value);
      meter_ = std::make_unique<meter::ResponseMeter>(*ai_req_, resp.status, headers);
    }
    audit_http(req_.method, path_of(target_), status_, true,
               provider_ ? "ai:" + std::string(meter::provider_name(*provider_))
                         : (github_verdict_ ? github_verdict_->rule : "inspection"),
               "", github_verdict_ ? github_verdict_->repo : "");
    send_client(std::move(head_bytes), [self = shared_from_this()] { self->relay_body(); });
  }

  // Forwards what the current response body has in ubuf_, then reads more, until it ends.
  void relay_body() {
    std::string raw;
    std::string payload;
    bool complete = false;
    switch (rframing_.kind) {
      case http::ResponseFraming::kNone:
        complete = true;
        break;
      case http::ResponseFraming::kLength: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(rremaining_, ubuf_.size()));
        raw = ubuf_.substr(0, n);
        ubuf_.erase(0, n);
        rremaining_ -= n;
        complete = rremaining_ == 0;
        if (meter_) payload = raw;
        break;
      }
      case http::ResponseFraming::kChunked: {
        auto n = rchunks_.feed(ubuf_, meter_ ? &payload : nullptr);
        if (!n) {
          audit_http(req_.method, path_of(target_), 502, false, "upstream", "response chunking: " + n.error().message());
          return abort("bad chunking");
        }
        raw = ubuf_.substr(0, *n);
        ubuf_.erase(0, *n);
        complete = rchunks_.done();
        break;
      }
      case http::ResponseFraming::kUntilClose:
        raw.swap(ubuf_);
        if (meter_) payload = raw;
        break;
    }
    if (meter_ && !payload.empty()) {
      meter_->feed(payload);
      in_.accounting_->progress(*call_, *meter_, status_);
    }
    if (complete) settle_call();  // in the ledger before the client sees the response end
    auto next = [self = shared_from_this(), complete] {
      if (complete) return self->response_done();
      self->read_some(self->upstream_, self->ubuf_, [self](bool ok) {
        if (!ok) {
          if (self->rframing_.kind == http::ResponseFraming::kUntilClose) return self->response_done();
          // Cut off mid-body: metered for what was delivered; the client sees the cut too.
          return self->abort("upstream closed mid-response");
        }
        self->relay_body();
      });
    };
    if (raw.empty()) return next();
    send_client(std::move(raw), std::move(next));
  }

  void settle_call() {
    if (!call_) return;
    meter_->finish(true);
    in_.accounting_->settle(call_, meter_.get(), status_, true);
    call_.reset();
  }

  void response_done() {
    settle_call();
    meter_.reset();
    if (close_after_) return finish();
    read_request();
  }

  // ---- I/O helpers ---------------------------------------------------------------------------

  void send_client(std::string data, std::function<void()> then) {
    cout_ = std::move(data);
    asio::async_write(client_, asio::buffer(cout_), [self = shared_from_this(), then = std::move(then)](std::error_code ec, size_t) {
      if (self->closed_) return;
      if (ec) return self->abort("client write failed");
      then();
    });
  }

  void write_upstream(std::string data, std::function<void()> then) {
    uout_ = std::move(data);
    asio::async_write(upstream_, asio::buffer(uout_), [self = shared_from_this(), then = std::move(then)](std::error_code ec, size_t) {
      if (self->closed_) return;
      if (ec) {
        self->audit_http(self->req_.method, path_of(self->target_), 502, false, "upstream", "upstream write failed: " + ec.message());
        return self->abort("upstream write failed");
      }
      then();
    });
  }

  void audit_http(const std::string& method, const std::string& path, int status, bool allowed, const std::string& rule,
                  const std::string& reason, const std::string& repo = "") {
    nlohmann::json f{{"mode", mode_}, {"host", host_}, {"port", port_}, {"addr", addr_}, {"verdict", allowed ? "allow" : "deny"},
                     {"rule", rule}, {"inspected", true}};
    if (!method.empty()) f["method"] = method;
    if (!path.empty()) f["path"] = path;
    if (status) f["status"] = status;
    if (!reason.empty()) f["reason"] = reason;
    if (!repo.empty()) f["repo"] = repo;
    if (sport_ != 0) f["sport"] = sport_;
    in_.audit_.emit("http", std::move(f));
  }

  static uint16_t source_port(const tcp::socket& s) {
    std::error_code ec;
    auto peer = s.remote_endpoint(ec);
    return ec ? 0 : peer.port();
  }

  Inspector& in_;
  uint16_t sport_;  // the client's source port (joins TLS observation's records)
  asio::ssl::stream<PrefixedSocket> client_;
  asio::ssl::stream<tcp::socket> upstream_;
  asio::steady_timer timer_;
  unsigned timer_gen_ = 0;
  std::string host_;
  uint16_t port_;
  std::string addr_, mode_;
  std::shared_ptr<size_t> live_;
  std::optional<meter::Provider> provider_;
  int handshakes_ = 0;
  std::error_code client_ec_, upstream_ec_;
  std::string upstream_error_;
  bool closed_ = false;

  std::array<char, kReadSize> rd_{};
  std::string cbuf_, ubuf_;   // plaintext read and not yet handled, from the client / upstream
  std::string cout_, uout_;   // plaintext being written to the client / upstream

  // The request in flight.
  http::RequestHead req_;
  std::string target_;  // origin-form
  http::BodyFraming framing_;
  http::ChunkedScanner chunks_;
  uint64_t remaining_ = 0;
  bool close_after_ = false;
  bool expect_continue_ = false;
  std::string body_, held_;
  size_t held_bytes_ = 0;  // of body_, counted in Inspector::buffered_
  std::chrono::steady_clock::time_point body_deadline_{};
  size_t push_fed_ = 0;
  std::optional<meter::AiRequest> ai_req_;
  std::shared_ptr<AiAccounting::Call> call_;
  std::unique_ptr<meter::ResponseMeter> meter_;
  std::optional<github::Verdict> github_verdict_;
  std::unique_ptr<github::ReceivePackScanner> push_;
  int status_ = 0;
  // Its response.
  http::ResponseFraming rframing_;
  http::ChunkedScanner rchunks_;
  uint64_t rremaining_ = 0;
};

Inspector::Inspector(asio::io_context& io, const Config& config, AuditLog& audit, log::Logger& log)
    : io_(io), config_(config), audit_(audit), log_(log) {}

Inspector::~Inspector() = default;

Result<std::unique_ptr<Inspector>> Inspector::create(asio::io_context& io, const Config& config, AuditLog& audit,
                                                     log::Logger& log) {
  std::unique_ptr<Inspector> in(new Inspector(io, config, audit, log));
  KM_ASSIGN_OR_RETURN(std::string cert, read_file(config.mitm_ca_cert, 1u << 20));
  KM_ASSIGN_OR_RETURN(std::string key, read_file(config.mitm_ca_key, 1u << 20));
  auto minter = tls::LeafMinter::load(cert, key);
  if (!minter) return fail(Error(minter.error()).wrap("the sandbox's inspection CA"));
  in->minter_ = std::move(*minter);

  meter::PriceTable prices = meter::PriceTable::builtin();
  if (!config.price_table.empty()) {
    KM_ASSIGN_OR_RETURN(std::string text, read_file(config.price_table, 16u << 20));
    auto table = meter::PriceTable::from_json(text);
    if (!table) return fail(Error(table.error()).wrap("price table " + config.price_table));
    prices = prices.merged(*table);
  }
  std::string ledger_path = config.ledger_path.empty() ? ":memory:" : config.ledger_path;
  auto ledger = config.run_as_uid != 0 && ledger_path != ":memory:"
                    ? store::SpendLedger::open_as(ledger_path, config.run_as_uid, config.run_as_gid)
                    : store::SpendLedger::open(ledger_path);
  if (!ledger) return fail(Error(ledger.error()).wrap("the sandbox's spend ledger"));
  in->accounting_ = std::make_unique<AiAccounting>(config.sandbox, std::move(*ledger), std::move(prices), audit, log);

  if (config.github) {
    std::optional<std::vector<std::string>> refs;
    if (config.github_refs_set) refs = config.github_refs;
    auto policy = github::Policy::compile(config.github_repos, refs);
    if (!policy) return fail(Error(policy.error()).wrap("sourceAccess.github"));
    in->github_ = std::move(*policy);
  }

  try {
    in->upstream_context_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    SSL_CTX* ctx = in->upstream_context_->native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) return fail(ErrorCode::kInternal, "loading the system trust store: " + tls::openssl_errors());
    if (!config.ca_bundle.empty() && SSL_CTX_load_verify_locations(ctx, config.ca_bundle.c_str(), nullptr) != 1) {
      return fail(ErrorCode::kInvalidArgument, "loading the extra CA bundle " + config.ca_bundle + ": " + tls::openssl_errors());
    }
  } catch (const std::system_error& e) {
    return fail(ErrorCode::kInternal, std::string("TLS client context: ") + e.what());
  }
  return in;
}

Result<asio::ssl::context*> Inspector::server_context(const std::string& host) {
  auto leaf = minter_->mint(host);
  if (!leaf) return fail(leaf.error());
  auto it = server_contexts_.find(host);
  // A renewed leaf is a new certificate: a new context carries it.
  if (it != server_contexts_.end() && SSL_CTX_get0_certificate(it->second->native_handle()) == leaf->cert) {
    return it->second.get();
  }
  try {
    auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    SSL_CTX* c = ctx->native_handle();
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate(c, leaf->cert) != 1 || SSL_CTX_use_PrivateKey(c, leaf->key) != 1) {
      return fail(ErrorCode::kInternal, "leaf certificate for " + host + ": " + tls::openssl_errors());
    }
    SSL_CTX_set_alpn_select_cb(c, select_http11, nullptr);
    // No session tickets: every handshake is a fresh one with a current leaf.
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    asio::ssl::context* raw = ctx.get();
    server_contexts_[host] = std::move(ctx);
    return raw;
  } catch (const std::system_error& e) {
    return fail(ErrorCode::kInternal, std::string("TLS server context: ") + e.what());
  }
}

void Inspector::start(tcp::socket client, tcp::socket upstream, std::string client_bytes, std::string host, uint16_t port,
                      std::string addr, std::string mode, std::shared_ptr<size_t> live) {
  auto ctx = server_context(host);
  if (!ctx) {
    log_.log(log::Level::kError, "cannot inspect; connection closed", {{"host", host}, {"error", ctx.error().to_string()}},
             config_.sandbox);
    audit_.emit("http", {{"host", host}, {"verdict", "deny"}, {"rule", "inspection"}, {"reason", ctx.error().message()}});
    return;  // the sockets close as they go out of scope
  }
  std::make_shared<Session>(*this, **ctx, std::move(client), std::move(upstream), std::move(client_bytes), std::move(host),
                            port, std::move(addr), std::move(mode), std::move(live))
      ->start();
}

}  // namespace km::enforcer
