// kmd's service: every operation on sandboxes, the lifecycle timer, and reconciliation of
// the store with what exists on the host after a restart.
//
// Crash safety: a sandbox's row is written (state starting) before any of its resources
// exist, and every resource is named by the sandbox's ID, so after `kill -9` at any point a
// restart can finish or undo what was under way: rows left in starting or destroying are
// torn down by name, running rows whose init died are marked failed, and resources with no
// row (cgroups, runtime and state directories) are removed.
// Thread-safety: handle() may be called from many connection threads; operations on one
// sandbox are serialised by a per-sandbox lock.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/base/log.h"
#include "km/base/unique_fd.h"
#include "km/audit/event.h"
#include "km/bpf/exec_audit.h"
#include "km/daemon/audit_trails.h"
#include "km/daemon/config.h"
#include "km/daemon/lifecycle.h"
#include "km/daemon/tls_observer.h"
#include "km/meter/price.h"
#include "km/profile/model.h"
#include "km/sandbox/launcher.h"
#include "km/store/ledger.h"
#include "km/store/store.h"

namespace km::daemon {

class Service {
 public:
  static Result<std::unique_ptr<Service>> create(const Config& config, std::shared_ptr<Clock> clock, log::Logger& log);

  // Handles one request from a client connection; may use the connection for streaming
  // (exec waits for the process). `fds` are descriptors attached to the request.
  nlohmann::json handle(const nlohmann::json& req, std::vector<UniqueFd>& fds, int conn);

  // Brings the store and the host into agreement (run at start-up).
  Status reconcile();
  // Applies what is due (TTL and idle warnings and expiries). Called every second by kmd.
  void tick();
  // Restarts the sandbox's enforcer if it died (the sandbox has no egress meanwhile).
  void supervise_enforcer(const std::string& id);

  store::Store& store() { return *store_; }
  ~Service();

 private:
  Service(Config c, std::shared_ptr<Clock> clock, log::Logger& log) : config_(std::move(c)), clock_(std::move(clock)), log_(log) {}

  nlohmann::json op_create(const nlohmann::json& req);
  nlohmann::json op_list(const nlohmann::json& req);
  nlohmann::json op_status(const nlohmann::json& req);
  // The sandbox's commands and egress verdicts from its audit trail, newest last, in the flat
  // form km audit has always printed: {"kind": exec|dns|connect|packet|http|ai, "limit": N}.
  nlohmann::json op_audit(const nlohmann::json& req);
  // km logs: the sandbox's audit trail (service_audit.cc). {"types": [...], "since_ms", "limit"}
  // for the newest events; {"after_seq", "wait_ms"} to follow; {"verify": true} to check the chain.
  nlohmann::json op_logs(const nlohmann::json& req);
  nlohmann::json op_exec(const nlohmann::json& req, std::vector<UniqueFd>& fds, int conn);
  nlohmann::json op_clone(const nlohmann::json& req);
  nlohmann::json op_shell(const nlohmann::json& req, std::vector<UniqueFd>& fds, int conn);
  nlohmann::json op_simple(const std::string& op, const nlohmann::json& req);
  // km budget: {"action": "show", "limit": N} or {"action": "add", "ai_micros", "compute_micros"}.
  nlohmann::json op_budget(const nlohmann::json& req);
  // km otel: the sandbox's agent telemetry summarised (telemetry.cc), next to metered spend.
  nlohmann::json op_otel(const nlohmann::json& req);

  Result<store::Sandbox> find(const nlohmann::json& req);
  Status do_stop(const store::Sandbox& s, const std::string& reason);
  Status do_destroy(const store::Sandbox& s, const std::string& reason);
  Result<store::Sandbox> do_start(store::Sandbox s);
  // The sandbox's inspection CA (made on first start): its certificate, PEM.
  Result<std::string> ensure_inspection_ca(const std::string& id);
  std::string inspection_ca_dir(const std::string& id) const;
  // Inserts and starts a sandbox; `prepare` runs after the row exists and before the start.
  nlohmann::json create_and_start(store::Sandbox s, const std::function<Status(const store::Sandbox&)>& prepare);
  void event(const std::string& id, const std::string& type, nlohmann::json detail = nlohmann::json::object());
  void collect_artifacts(const store::Sandbox& s);
  std::mutex& lock_for(const std::string& id);
  nlohmann::json describe(const store::Sandbox& s);

  Config config_;
  std::shared_ptr<Clock> clock_;
  log::Logger& log_;
  std::unique_ptr<store::Store> store_;
  std::optional<sandbox::Launcher> launcher_;
  sandbox::HostLayout layout_;
  std::mutex locks_mu_;
  std::map<std::string, std::unique_ptr<std::mutex>> locks_;
  // Counts an open exec or shell session for the idle timer while it lives.
  class SessionGuard {
   public:
    SessionGuard(Service& svc, std::string id);
    ~SessionGuard();
    SessionGuard(const SessionGuard&) = delete;
    SessionGuard& operator=(const SessionGuard&) = delete;

   private:
    Service& svc_;
    std::string id_;
  };

  std::mutex sessions_mu_;
  std::map<std::string, int> sessions_;  // open exec/shell sessions per sandbox

  // The audit trails (audit_trails.h): every source of every sandbox, redacted, chained, indexed.
  // The sandbox's literal secrets for its redactor: values of its environment whose names say
  // they are secrets.
  std::vector<std::string> sandbox_secrets(const std::string& id);
  // At destroy: the enforcer's pipe is drained and the trail moves to the artifacts.
  void export_trail(const std::string& id);
  std::string trail_archive_dir(const std::string& id) const;

  // The exec audit: every command in every sandbox, from BPF, into the sandbox's audit trail.
  struct Audited {
    std::string id;
    uint32_t uid_base = 0;
  };
  Status watch_commands(const std::string& id, uint64_t cgroup_id, uint32_t uid_base);
  void unwatch_commands(const std::string& id);
  void record_commands();
  std::unique_ptr<bpf::ExecAudit> exec_audit_;
  std::optional<Error> exec_audit_error_;
  std::mutex exec_mu_;
  std::map<uint64_t, Audited> audited_;  // cgroup id -> sandbox
  std::atomic<bool> stopping_{false};
  std::thread exec_reader_;

  // Budgets (budget.h): each sandbox's spend ledger, in <sandbox>/ledger/ (owned by the
  // enforcer, which records AI spend in it), kept in <stateDir>/ledgers/<id>/ after destroy.
  std::string ledger_dir(const std::string& id) const;
  std::string ledger_path(const std::string& id) const;  // <ledger_dir>/spend.db
  // Makes the ledger if there is none and sets its limits if unset (`ai`/`compute` replace the
  // profile's ceilings: km create's --ai/--compute).
  Status prepare_ledger(const store::Sandbox& s, const profile::Model& m, std::optional<int64_t> ai,
                        std::optional<int64_t> compute);
  // The sandbox's ledger (the live one, cached; else the one kept after destroy); null if none.
  std::shared_ptr<store::SpendLedger> ledger_for(const std::string& id);
  void archive_ledger(const std::string& id);
  int64_t compute_rate(const profile::Model& m) const;
  Result<nlohmann::json> budget_of(store::SpendLedger& ledger, const store::Sandbox& s);
  // Warnings and ceilings of running and paused sandboxes (from tick()).
  void check_budgets(const std::vector<store::Sandbox>& all, int64_t now);
  // Why `s` may not be resumed: its compute budget is spent (locked sandboxes are exempt).
  std::optional<Error> compute_ceiling_refusal(const store::Sandbox& s);
  meter::PriceTable prices_;  // built-in, with kmd's priceTable laid over it
  std::mutex ledgers_mu_;
  std::map<std::string, std::shared_ptr<store::SpendLedger>> ledgers_;
  std::set<std::string> ledger_errors_;  // logged once

  // TLS observation (tls_observer.h): sandboxes whose profile has observability.tlsCapture.
  // Set up for the sandbox's spec before it starts (the binds of the private library copies);
  // destroyed before the trails it records into.
  // running_init: the sandbox runs already (kmd restarted): observe the copies it maps.
  Status prepare_tls(const store::Sandbox& s, const profile::Model& m, sandbox::Spec& spec,
                     std::optional<pid_t> running_init = std::nullopt);
  std::unique_ptr<TlsObserver> tls_;

  // Last: it goes first, while the store it asks for secrets is still there.
  std::unique_ptr<AuditTrails> trails_;
};

nlohmann::json error_reply(const Error& e);

}  // namespace km::daemon
