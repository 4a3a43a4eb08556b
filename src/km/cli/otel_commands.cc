#include "km/cli/otel_commands.h"

#include <cstdio>
#include <algorithm>
#include <ctime>
#include <map>
#include <memory>

#include "km/base/money.h"
#include "km/cli/kmd_client.h"
#include "km/cli/output.h"

namespace km::cli {

namespace {

using Json = nlohmann::json;

int64_t integer(const Json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
}
std::string text(const Json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

std::string when(int64_t unix_nano) {
  if (unix_nano <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(unix_nano / 1000000000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// One line of a table cell: control characters shown, long text cut.
std::string cell(std::string s, size_t max = 80) {
  std::string out;
  for (char c : s) out += c == '\n' ? ' ' : (static_cast<unsigned char>(c) < 0x20 ? '?' : c);
  if (out.size() > max) out = out.substr(0, max - 3) + "...";
  return out;
}

void summary(const Json& o) {
  const Json& t = o["telemetry"];
  std::printf("km otel — %s\n\n", text(o, "id").c_str());
  std::printf("Spend by model: metered by km (the figure budgets use) | reported by the agent\n");
  std::vector<std::vector<std::string>> rows;
  std::map<std::string, std::pair<const Json*, const Json*>> models;
  for (const auto& m : o["metered"]) models[text(m, "model")].first = &m;
  if (t.contains("by_model") && t["by_model"].is_object()) {
    for (auto it = t["by_model"].begin(); it != t["by_model"].end(); ++it) models[it.key()].second = &it.value();
  }
  for (const auto& [name, pair] : models) {
    const Json* km = pair.first;
    const Json* agent = pair.second;
    rows.push_back({name, km ? std::to_string(integer(*km, "requests")) : "-",
                    km ? std::to_string(integer(*km, "input_tokens")) + "/" + std::to_string(integer(*km, "output_tokens")) : "-",
                    km ? format_usd(integer(*km, "cost_micros")) : "-",
                    agent ? std::to_string(integer(*agent, "requests")) : "-",
                    agent ? std::to_string(integer(*agent, "input_tokens")) + "/" + std::to_string(integer(*agent, "output_tokens")) : "-",
                    agent ? format_usd(integer(*agent, "cost_micros")) : "-"});
  }
  std::fputs(render_table({"MODEL", "KM CALLS", "KM IN/OUT", "KM COST", "AGENT CALLS", "AGENT IN/OUT", "AGENT COST"}, rows).c_str(), stdout);
  std::printf("\nsessions %zu, prompts %lld, API requests %lld (%lld errors), tool calls %lld (%lld failed, %lld rejected)\n",
              t.value("sessions", Json::array()).size(), static_cast<long long>(integer(t, "user_prompts")),
              static_cast<long long>(integer(t, "api_requests")), static_cast<long long>(integer(t, "api_errors")),
              static_cast<long long>(integer(t, "tool_calls")), static_cast<long long>(integer(t, "tool_failures")),
              static_cast<long long>(integer(t, "tool_rejections")));
  std::printf("records: %lld logs, %lld metrics; first %s, last %s\n", static_cast<long long>(integer(o["records"], "logs")),
              static_cast<long long>(integer(o["records"], "metrics")), when(integer(t, "first_unix_nano")).c_str(),
              when(integer(t, "last_unix_nano")).c_str());
}

void prompts(const Json& t) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : t.value("prompts", Json::array())) {
    std::string shown = p.contains("text") && p["text"].is_string() ? cell(p["text"].get<std::string>())
                                                                    : "(not logged; " + std::to_string(integer(p, "length")) + " chars)";
    rows.push_back({when(integer(p, "time_unix_nano")), text(p, "prompt_id"), shown});
  }
  std::fputs(render_table({"TIME", "PROMPT", "TEXT"}, rows).c_str(), stdout);
}

void events(const Json& t) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : t.value("api_calls", Json::array())) {
    std::string what = text(c, "model") + " " + std::to_string(integer(c, "input_tokens")) + " in, " +
                       std::to_string(integer(c, "output_tokens")) + " out, " + format_usd(integer(c, "cost_micros"));
    if (c.value("error", false)) what = text(c, "model") + " error " + std::to_string(integer(c, "status_code")) + ": " + text(c, "error_message");
    rows.push_back({when(integer(c, "time_unix_nano")), c.value("error", false) ? "api_error" : "api_request", cell(what)});
  }
  for (const auto& c : t.value("tools", Json::array())) {
    rows.push_back({when(integer(c, "time_unix_nano")), "tool_result", cell(text(c, "name") + " " + text(c, "summary"))});
  }
  for (const auto& p : t.value("prompts", Json::array())) {
    rows.push_back({when(integer(p, "time_unix_nano")), "user_prompt", std::to_string(integer(p, "length")) + " chars"});
  }
  std::sort(rows.begin(), rows.end());
  std::fputs(render_table({"TIME", "EVENT", "DETAIL"}, rows).c_str(), stdout);
}

void tools(const Json& t) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : t.value("tools", Json::array())) {
    std::string params = c.contains("parameters") && !c["parameters"].is_null() ? c["parameters"].dump() : text(c, "summary");
    rows.push_back({when(integer(c, "time_unix_nano")), text(c, "name"), c.value("success", true) ? "ok" : "failed",
                    std::to_string(integer(c, "duration_ms")) + " ms", cell(params)});
  }
  std::fputs(render_table({"TIME", "TOOL", "RESULT", "DURATION", "PARAMETERS"}, rows).c_str(), stdout);
}

void timeline(const Json& t) {
  std::vector<std::vector<std::string>> rows;
  size_t i = 0;
  for (const auto& turn : t.value("timeline", Json::array())) {
    const Json& u = turn["usage"];
    rows.push_back({std::to_string(++i), when(integer(turn, "start_unix_nano")), std::to_string(integer(u, "requests")),
                    std::to_string(integer(u, "input_tokens")) + "/" + std::to_string(integer(u, "output_tokens")),
                    format_usd(integer(u, "cost_micros")), std::to_string(integer(turn, "tool_calls"))});
  }
  std::fputs(render_table({"TURN", "START", "API CALLS", "IN/OUT", "COST", "TOOLS"}, rows).c_str(), stdout);
}

}  // namespace

void add_otel_commands(CLI::App& app, GlobalOptions& global, int* exit_code) {
  struct Opts {
    std::string ref;
    bool prompts = false, events = false, tools = false, timeline = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("otel", "A sandbox's agent telemetry: spend by model (metered and reported), prompts, events, tools, timeline");
  cmd->add_option("REF", o->ref, "Sandbox alias, ID or number")->required();
  auto* g = cmd->add_option_group("view");
  g->add_flag("--prompts", o->prompts, "The user prompts (their text only if the profile sets logPrompts)");
  g->add_flag("--events", o->events, "API requests and errors, tool results and prompts, in time order");
  g->add_flag("--tools", o->tools, "Tool calls with their parameters and duration");
  g->add_flag("--timeline", o->timeline, "Turns: one per prompt, with its API calls, tokens, cost and tool calls");
  g->require_option(0, 1);
  cmd->callback([&global, o, exit_code] {
    auto c = KmdClient::connect(global.socket.empty() ? default_socket() : global.socket);
    Result<Json> r = c ? c->call(Json{{"op", "otel"}, {"ref", o->ref}}) : Result<Json>(fail(c.error()));
    if (!r) {
      print_error(r.error());
      *exit_code = kExitFailure;
      return;
    }
    const Json& out = (*r)["otel"];
    if (global.output == "json") {
      std::printf("%s\n", out.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
    } else if (o->prompts) {
      prompts(out["telemetry"]);
    } else if (o->events) {
      events(out["telemetry"]);
    } else if (o->tools) {
      tools(out["telemetry"]);
    } else if (o->timeline) {
      timeline(out["telemetry"]);
    } else {
      summary(out);
    }
    *exit_code = kExitOk;
  });
}

}  // namespace km::cli
