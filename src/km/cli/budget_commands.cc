#include "km/cli/budget_commands.h"

#include <cstdio>
#include <ctime>
#include <functional>
#include <memory>

#include "km/base/duration.h"
#include "km/base/money.h"
#include "km/cli/kmd_client.h"
#include "km/cli/output.h"

namespace km::cli {

namespace {

using Json = nlohmann::json;

int64_t integer(const Json& j, const char* key) { return j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0; }

// "$0.512345 of $1.000000 (51.2%)", "... exhausted", or "$0.512345 (no limit)".
std::string pool_line(const Json& pool) {
  std::string out = format_usd(integer(pool, "spent_micros"));
  if (!pool.contains("limit_micros") || pool["limit_micros"].is_null()) return out + " (no limit)";
  char pct[32];
  std::snprintf(pct, sizeof pct, "%.1f%%", pool.value("percent", 0.0));
  out += " of " + format_usd(integer(pool, "limit_micros")) + " (" + pct + ")";
  if (pool.value("exhausted", false)) out += ", exhausted";
  return out;
}

std::string tokens(int64_t n) {
  char buf[32];
  if (n >= 10'000'000) std::snprintf(buf, sizeof buf, "%.1fM", static_cast<double>(n) / 1e6);
  else if (n >= 10'000) std::snprintf(buf, sizeof buf, "%.1fk", static_cast<double>(n) / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  return buf;
}

std::string utc_time(int64_t t) {
  std::time_t tt = t;
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Result<Json> call(const GlobalOptions& g, const Json& req) {
  KM_ASSIGN_OR_RETURN(KmdClient c, KmdClient::connect(g.socket.empty() ? default_socket() : g.socket));
  return c.call(req);
}

void print_limits(const Json& b) {
  std::printf("%-12s %s\n", "compute", pool_line(b["compute"]).c_str());
  std::printf("%-12s %s\n", "ai", pool_line(b["ai"]).c_str());
}

int finish(const Result<Json>& r, const GlobalOptions& g, const std::function<void(const Json&)>& text) {
  if (!r) {
    print_error(r.error());
    return kExitFailure;
  }
  if (g.output == "json") {
    std::printf("%s\n", (*r)["budget"].dump(2, ' ', false, Json::error_handler_t::replace).c_str());
  } else {
    text(*r);
  }
  return kExitOk;
}

int cmd_add(const GlobalOptions& g, const std::string& ref, const std::string& ai, const std::string& compute) {
  if (ai.empty() && compute.empty()) {
    print_error("nothing to add", "give --ai USD, --compute USD or both");
    return kExitUsage;
  }
  Json req{{"op", "budget"}, {"action", "add"}, {"ref", ref}};
  for (auto [flag, text] : {std::pair<const char*, const std::string*>{"ai", &ai}, {"compute", &compute}}) {
    if (text->empty()) continue;
    auto micros = parse_usd_micros(*text);
    if (!micros) {
      print_error(Error(micros.error()).wrap(std::string("--") + flag));
      return kExitUsage;
    }
    if (*micros == 0) {
      print_error(std::string("--") + flag + " must be more than $0");
      return kExitUsage;
    }
    req[std::string(flag) + "_micros"] = *micros;
  }
  return finish(call(g, req), g, [](const Json& r) {
    const Json& b = r["budget"];
    std::printf("%s: budget raised\n", b.value("id", std::string()).c_str());
    print_limits(b);
    if (b.value("resumed", false)) std::printf("resumed: it was frozen at its compute ceiling and is running again\n");
  });
}

int cmd_show(const GlobalOptions& g, const std::string& ref, int64_t limit) {
  return finish(call(g, Json{{"op", "budget"}, {"action", "show"}, {"ref", ref}, {"limit", limit}}), g, [](const Json& r) {
    const Json& b = r["budget"];
    const Json& s = r["sandbox"];
    std::printf("%-12s %s (%s)\n", "sandbox", b.value("id", std::string()).c_str(), s.value("state", std::string()).c_str());
    print_limits(b);
    const Json& c = b["compute"];
    std::printf("%-12s %s/h, running %s\n", "rate", format_usd(integer(c, "rate_micros_per_hour")).c_str(),
                format_duration({integer(c, "running_seconds")}).c_str());
    char pct[32];
    std::snprintf(pct, sizeof pct, "%g%%", b.value("warning_threshold", 0.8) * 100);
    std::printf("%-12s %s of a limit (once per pool; again after km budget add)\n", "warning at", pct);
    std::vector<std::vector<std::string>> rows;
    for (const auto& m : b["models"]) {
      rows.push_back({m.value("model", std::string()).empty() ? "(unknown)" : m.value("model", std::string()),
                      std::to_string(integer(m, "requests")), tokens(integer(m, "input_tokens")), tokens(integer(m, "output_tokens")),
                      tokens(integer(m, "cache_read_tokens")), tokens(integer(m, "cache_write_tokens")),
                      format_usd_rounded(integer(m, "cost_micros"), 4)});
    }
    if (!rows.empty()) {
      std::printf("\n%s", render_table({"MODEL", "REQUESTS", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "COST"}, rows).c_str());
    }
    rows.clear();
    for (const auto& call : b["calls"]) {
      std::string basis = call.value("price_basis", std::string());
      if (call.value("estimated", false)) basis += basis.empty() ? "estimated" : ", estimated";
      rows.push_back({utc_time(integer(call, "ts")), call.value("provider", std::string()), call.value("model", std::string()),
                      std::to_string(call.value("status", 0)), tokens(integer(call, "input_tokens")),
                      tokens(integer(call, "output_tokens")), format_usd_rounded(integer(call, "cost_micros"), 4), basis});
    }
    if (!rows.empty()) {
      std::printf("\nrecent AI calls, newest first:\n%s",
                  render_table({"TIME", "PROVIDER", "MODEL", "STATUS", "INPUT", "OUTPUT", "COST", "PRICE"}, rows).c_str());
    }
  });
}

}  // namespace

void print_spend(const Json& b, int w) {
  std::printf("%-*s %s\n", w, "compute spend", pool_line(b["compute"]).c_str());
  std::printf("%-*s %s\n", w, "ai spend", pool_line(b["ai"]).c_str());
  for (const auto& m : b["models"]) {
    std::string name = m.value("model", std::string());
    std::printf("%-*s %s: %lld requests, %s in, %s out, %s\n", w, "", name.empty() ? "(unknown)" : name.c_str(),
                static_cast<long long>(integer(m, "requests")), tokens(integer(m, "input_tokens")).c_str(),
                tokens(integer(m, "output_tokens")).c_str(), format_usd(integer(m, "cost_micros")).c_str());
  }
}

void add_budget_commands(CLI::App& app, GlobalOptions& global, int* exit_code) {
  CLI::App* budget = app.add_subcommand("budget", "Show or raise a sandbox's spending limits (km budget show|add REF)");
  budget->require_subcommand(1);
  budget->footer(
      "Two pools, each with an optional limit in USD (the profile's spec.budget, or km create --compute/--ai):\n"
      "  compute  the rate times running time (paused and stopped time is free)\n"
      "  ai       what the sandbox's AI calls cost, metered by its enforcer\n"
      "At warningThreshold of a limit one budget-warning event is recorded per pool. At the AI limit AI\n"
      "requests are refused; at the compute limit the sandbox is frozen (unless locked). Both record a\n"
      "budget-exhausted event. km budget add raises the limits and re-arms the events.");

  struct AddOpts {
    std::string ref, ai, compute;
  };
  auto ao = std::make_shared<AddOpts>();
  CLI::App* add = budget->add_subcommand("add", "Raise a sandbox's limits and print the new limits and spend");
  add->footer(
      "The amounts are added to the limits at once (a pool without a limit gets one); that pool's warning\n"
      "and exhausted events are re-armed. A sandbox frozen at its compute limit that is now under it is\n"
      "thawed and runs again.\n"
      "Example: km budget add demo --compute 2 --ai 0.50");
  add->add_option("ref", ao->ref, "ID, alias or number")->required();
  add->add_option("--ai", ao->ai, "USD to add to the AI limit, e.g. 5 or 0.50")->type_name("USD");
  add->add_option("--compute", ao->compute, "USD to add to the compute limit")->type_name("USD");
  add->callback([&global, ao, exit_code] { *exit_code = cmd_add(global, ao->ref, ao->ai, ao->compute); });

  struct ShowOpts {
    std::string ref;
    int64_t limit = 20;
  };
  auto so = std::make_shared<ShowOpts>();
  CLI::App* show = budget->add_subcommand("show", "Show a sandbox's limits, spend per pool and per model, and its newest AI calls");
  show->footer(
      "A destroyed sandbox's spend is shown too (by its ID). With -o json, amounts are integer\n"
      "micro-dollars (*_micros) and exact USD strings (*_usd).");
  show->add_option("ref", so->ref, "ID, alias or number")->required();
  show->add_option("-n,--limit", so->limit, "How many of the newest AI calls (default 20)")->check(CLI::Range(0, 100000));
  show->callback([&global, so, exit_code] { *exit_code = cmd_show(global, so->ref, so->limit); });
}

}  // namespace km::cli
