#include "km/daemon/budget.h"

#include <algorithm>
#include <cmath>

#include "km/base/money.h"

namespace km::daemon {

namespace {

using Json = nlohmann::json;
__extension__ typedef __int128 Wide;  // products of two int64 amounts

int64_t clamp_to_int64(Wide v) {
  if (v > INT64_MAX) return INT64_MAX;
  if (v < INT64_MIN) return INT64_MIN;
  return static_cast<int64_t>(v);
}

// Percent of the ceiling, one decimal; a ceiling of 0 is full from the start.
double percent(int64_t spent, int64_t limit) {
  if (limit <= 0) return spent >= limit ? 100.0 : 0.0;
  return std::round(static_cast<double>(spent) * 1000.0 / static_cast<double>(limit)) / 10.0;
}

Json pool_json(int64_t spent, const std::optional<int64_t>& limit) {
  Json j{{"spent_micros", spent}, {"spent_usd", usd_decimal(spent)}};
  if (limit) {
    j["limit_micros"] = *limit;
    j["limit_usd"] = usd_decimal(*limit);
    j["percent"] = percent(spent, *limit);
    j["exhausted"] = spent >= *limit;
  } else {
    j["limit_micros"] = nullptr;
    j["limit_usd"] = nullptr;
    j["percent"] = nullptr;
    j["exhausted"] = false;
  }
  return j;
}

}  // namespace

int64_t running_seconds(const store::Sandbox& s, int64_t now) {
  int64_t open = s.running_since > 0 ? std::max<int64_t>(0, now - s.running_since) : 0;
  return s.running_seconds + open;
}

int64_t compute_spent_micros(int64_t rate, int64_t seconds) {
  if (rate <= 0 || seconds <= 0) return 0;
  return clamp_to_int64(Wide{rate} * seconds / 3600);
}

bool past_warning(int64_t spent, int64_t limit, double threshold) {
  // The threshold as parts per million (0.8 is exactly 800000), compared in integers.
  Wide ppm = static_cast<Wide>(std::llround(threshold * 1e6));
  return Wide{spent} * 1'000'000 >= ppm * limit;
}

std::vector<BudgetNotice> budget_reached(const store::Limits& l, int64_t ai_spent, int64_t compute_spent) {
  std::vector<BudgetNotice> out;
  auto pool = [&](const char* name, const std::optional<int64_t>& limit, int64_t spent) {
    if (!limit) return;
    if (past_warning(spent, *limit, l.warning_threshold)) out.push_back({name, Notice::kWarning, spent, *limit});
    if (spent >= *limit) out.push_back({name, Notice::kExhausted, spent, *limit});
  };
  pool("compute", l.compute_micros, compute_spent);
  pool("ai", l.ai_micros, ai_spent);
  return out;
}

store::Limits initial_limits(const profile::Model& m, std::optional<int64_t> ai_micros, std::optional<int64_t> compute_micros,
                             int64_t rate) {
  store::Limits l;
  l.ai_micros = ai_micros ? ai_micros : m.ai_budget_micros;
  l.compute_micros = compute_micros ? compute_micros : m.compute_budget_micros;
  l.warning_threshold = m.warning_threshold > 0 && m.warning_threshold <= 1 ? m.warning_threshold : 0.8;
  l.compute_rate_micros_per_hour = rate;
  return l;
}

int64_t compute_spent(const BudgetView& v) {
  return compute_spent_micros(v.limits.compute_rate_micros_per_hour, v.running_seconds);
}

Json budget_json(const BudgetView& v) {
  Json compute = pool_json(compute_spent(v), v.limits.compute_micros);
  compute["rate_micros_per_hour"] = v.limits.compute_rate_micros_per_hour;
  compute["rate_usd_per_hour"] = usd_decimal(v.limits.compute_rate_micros_per_hour);
  compute["running_seconds"] = v.running_seconds;
  Json models = Json::array();
  for (const auto& m : v.models) {
    models.push_back(Json{{"model", m.model}, {"input_tokens", m.input}, {"output_tokens", m.output},
                          {"cache_read_tokens", m.cache_read}, {"cache_write_tokens", m.cache_write},
                          {"requests", m.requests}, {"cost_micros", m.cost_micros}, {"cost_usd", usd_decimal(m.cost_micros)}});
  }
  return Json{{"warning_threshold", v.limits.warning_threshold}, {"epoch", v.limits.epoch},
              {"ai", pool_json(v.ai_spent, v.limits.ai_micros)}, {"compute", compute}, {"models", models}};
}

Json calls_json(const std::vector<store::CallSpend>& calls) {
  Json out = Json::array();
  for (const auto& c : calls) {
    out.push_back(Json{{"id", c.call.id}, {"ts", c.call.ts}, {"provider", c.call.provider}, {"api", c.call.api},
                       {"model", c.call.model}, {"price_basis", c.call.price_basis}, {"status", c.call.status},
                       {"estimated", c.call.estimated}, {"input_tokens", c.tokens.input}, {"output_tokens", c.tokens.output},
                       {"cache_read_tokens", c.tokens.cache_read}, {"cache_write_tokens", c.tokens.cache_write},
                       {"cost_micros", c.cost_micros}, {"cost_usd", usd_decimal(c.cost_micros)}});
  }
  return out;
}

}  // namespace km::daemon
