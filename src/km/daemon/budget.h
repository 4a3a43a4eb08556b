// Pure budget decisions: compute spend from a sandbox's record, which notices its spend has
// reached, the limits a new sandbox starts with, and the JSON `km status` and `km budget` show.
// kmd's timer applies them (Service::check_budget); tests drive them with any clock.
//
// Two pools, each with an optional ceiling in micro-dollars:
//   compute  rate × running time. The rate (µ$ per hour) is fixed when the sandbox is created;
//            the running time comes from the store (paused, stopped and starting time
//            excluded), so the spend is recomputed from the record, never accumulated per tick:
//            it cannot drift and it survives kmd restarts.
//   ai       the sum over models in the sandbox's spend ledger (the enforcer records it).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/profile/model.h"
#include "km/store/ledger.h"
#include "km/store/store.h"

namespace km::daemon {

// Seconds `s` has been running by `now`.
int64_t running_seconds(const store::Sandbox& s, int64_t now);
// rate × seconds / 3600 in µ$, rounded down (exact integer arithmetic).
int64_t compute_spent_micros(int64_t rate_micros_per_hour, int64_t seconds);

// spent >= threshold × limit, exactly for thresholds of up to six decimals.
bool past_warning(int64_t spent, int64_t limit, double threshold);

enum class Notice { kWarning, kExhausted };
struct BudgetNotice {
  std::string pool;  // "ai" or "compute"
  Notice kind;
  int64_t spent = 0, limit = 0;
  friend bool operator==(const BudgetNotice&, const BudgetNotice&) = default;
};
// What the spend has reached, in the order to announce it: per pool with a ceiling, the warning
// at the threshold (also when the spend jumped past the ceiling at once, so it is never
// skipped), then exhaustion at the ceiling. Whether each was announced already is the ledger's
// claim to make.
std::vector<BudgetNotice> budget_reached(const store::Limits& l, int64_t ai_spent, int64_t compute_spent);

// The limits a new sandbox's ledger starts with: the profile's ceilings, replaced by km
// create's --ai/--compute where given, and the compute rate.
store::Limits initial_limits(const profile::Model& m, std::optional<int64_t> ai_micros, std::optional<int64_t> compute_micros,
                             int64_t compute_rate_micros_per_hour);

// A sandbox's spend as `km status` and `km budget` show it: per pool, spent and ceiling in
// integer micros and USD strings with the percentage; per model tokens, requests and cost.
struct BudgetView {
  store::Limits limits;
  int64_t ai_spent = 0;
  int64_t running_seconds = 0;
  std::vector<store::ModelSpend> models;
};
int64_t compute_spent(const BudgetView& v);
nlohmann::json budget_json(const BudgetView& v);
nlohmann::json calls_json(const std::vector<store::CallSpend>& calls);

}  // namespace km::daemon
