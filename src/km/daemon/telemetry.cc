// km otel: a sandbox's agent telemetry (what its enforcer's OTLP receiver kept) summarised, with
// the spend the enforcer metered next to what the agent reported.
#include <algorithm>

#include "km/daemon/service.h"
#include "km/enforcer/telemetry.h"
#include "km/otel/claude_code.h"
#include "km/sandbox/launcher.h"

namespace km::daemon {

using Json = nlohmann::json;

namespace {
constexpr uint64_t kMaxRead = 512ull << 20;  // decompressed, per signal
}  // namespace

Json Service::op_otel(const Json& req) {
  auto found = find(req);
  if (!found) return error_reply(found.error());
  std::string dir = sandbox::sandbox_dir(layout_, found->id) + "/telemetry";
  size_t bad_logs = 0, bad_metrics = 0;
  auto logs_json = enforcer::read_telemetry(dir + "/" + std::string(enforcer::signal_file(otel::Signal::kLogs)), kMaxRead, &bad_logs);
  auto metrics_json =
      enforcer::read_telemetry(dir + "/" + std::string(enforcer::signal_file(otel::Signal::kMetrics)), kMaxRead, &bad_metrics);
  if (!logs_json) return error_reply(logs_json.error());
  if (!metrics_json) return error_reply(metrics_json.error());
  std::vector<otel::LogRecord> logs;
  std::vector<otel::MetricPoint> metrics;
  logs.reserve(logs_json->size());
  for (const auto& j : *logs_json) logs.push_back(enforcer::log_from_json(j));
  for (const auto& j : *metrics_json) metrics.push_back(enforcer::metric_from_json(j));
  otel::TelemetrySummary summary = otel::summarise(logs, metrics);
  Json out{{"id", found->id},
           {"telemetry", otel::to_json(summary)},
           {"records", {{"logs", logs.size()}, {"metrics", metrics.size()}, {"unreadable", bad_logs + bad_metrics}}}};
  // What km metered, per model, from the spend ledger (the figure budgets are enforced on).
  Json metered = Json::array();
  if (auto ledger = ledger_for(found->id)) {
    if (auto models = ledger->models()) {
      for (const auto& m : *models) {
        metered.push_back(Json{{"model", m.model}, {"requests", m.requests}, {"input_tokens", m.input},
                               {"output_tokens", m.output}, {"cache_read_tokens", m.cache_read},
                               {"cache_write_tokens", m.cache_write}, {"cost_micros", m.cost_micros}});
      }
    }
  }
  out["metered"] = std::move(metered);
  return Json{{"ok", true}, {"otel", std::move(out)}};
}

}  // namespace km::daemon
