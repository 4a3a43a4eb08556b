// L7 inspection: the enforcer terminates TLS for the few hosts whose requests it must read, and
// relays HTTP/1.1 between the sandbox and the real server request by request:
//
//   AI providers   (api.anthropic.com, api.openai.com, bedrock-runtime.*.amazonaws.com), always:
//                  every billable call passes the AI budget gate before anything is forwarded,
//                  and its response is metered to the token as it streams (AiAccounting);
//   GitHub hosts   when the profile sets sourceAccess.github: every request must name an
//                  allowed repository, and pushes may only update allowed refs
//                  (proxy::github). Denials are 403 JSON.
//
// Everything else stays a blind tunnel in EgressProxy. The sandbox sees a leaf certificate for
// the host it asked for, minted with the sandbox's own CA (tls::LeafMinter; ALPN http/1.1). The
// upstream is verified against the system's trust store plus kmd's extra CA bundle, for the same
// name; one that fails verification gets the client a 502 and is never talked to in clear.
// Responses are relayed as they arrive: each read from the server is written to the client
// before the next read, so the first byte of a stream is forwarded at once.
//
// Refused on inspected hosts, because they would escape inspection: protocol upgrades
// (WebSocket), CONNECT inside the tunnel, a Host other than the one the tunnel was opened for,
// request bodies over 32 MiB on AI hosts (buffered to classify them), compressed push bodies.
// Thread-safety: the enforcer's event loop only.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "km/enforcer/asio.h"

#include "km/base/log.h"
#include "km/base/result.h"
#include "km/enforcer/ai_accounting.h"
#include "km/enforcer/audit.h"
#include "km/enforcer/config.h"
#include "km/proxy/github_policy.h"
#include "km/tls/ca.h"

namespace asio::ssl {
class context;
}

namespace km::enforcer {

// Whether `host` (lowercase, no trailing dot) is one the enforcer inspects, given whether the
// profile has GitHub rules. Such hosts are reachable only through inspection (over TLS with
// their name in SNI); with no CA to inspect them they are not reachable at all.
bool inspected_host(std::string_view host, bool github);

class Inspector {
 public:
  // Loads the CA and the price table, opens the ledger (as config.run_as_uid, so the enforcer
  // can still write it after dropping privileges), and builds the TLS contexts.
  static Result<std::unique_ptr<Inspector>> create(asio::io_context& io, const Config& config, AuditLog& audit,
                                                   log::Logger& log);
  ~Inspector();

  bool inspects(std::string_view host) const { return inspected_host(host, github_.has_value()); }

  // Takes over an allowed connection whose client sent a TLS ClientHello naming `host`:
  // `client_bytes` were already read from the client, `upstream` is connected to the address the
  // policy checked. `live` counts open sessions (the proxy's limit).
  void start(asio::ip::tcp::socket client, asio::ip::tcp::socket upstream, std::string client_bytes, std::string host,
             uint16_t port, std::string addr, std::string mode, std::shared_ptr<size_t> live);

  AiAccounting& accounting() { return *accounting_; }

 private:
  class Session;
  friend class Session;
  Inspector(asio::io_context& io, const Config& config, AuditLog& audit, log::Logger& log);
  Result<asio::ssl::context*> server_context(const std::string& host);

  asio::io_context& io_;
  const Config& config_;
  AuditLog& audit_;
  log::Logger& log_;
  std::unique_ptr<tls::LeafMinter> minter_;
  std::map<std::string, std::unique_ptr<asio::ssl::context>> server_contexts_;
  std::unique_ptr<asio::ssl::context> upstream_context_;
  std::unique_ptr<AiAccounting> accounting_;
  std::optional<proxy::github::Policy> github_;
  size_t buffered_ = 0;  // request-body bytes all sessions hold
};

}  // namespace km::enforcer
