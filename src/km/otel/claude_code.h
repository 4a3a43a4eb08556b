// Claude Code's OpenTelemetry export, interpreted: what `km otel` shows for a sandbox, computed
// from the log records and metric points km stored for it (km::otel::decode_logs / decode_metrics).
//
// Claude Code (https://code.claude.com/docs/en/monitoring-usage) sends events as log records
// (body "claude_code.<name>", attribute event.name "<name>", scope com.anthropic.claude_code.events)
// and metrics as delta sums (com.anthropic.claude_code). Events carry session.id, prompt.id
// (2.x), event.sequence (a per-session counter) and event.timestamp; numbers mostly arrive as
// strings ("1200", "0.004907999999999999"). What is read:
//   user_prompt    prompt_length; prompt (text only with OTEL_LOG_USER_PROMPTS=1, else
//                  "<REDACTED>" or absent); opens a turn
//   api_request    model, cost_usd (or cost_usd_micros), duration_ms, input_tokens,
//                  output_tokens, cache_read_tokens, cache_creation_tokens, request_id
//   api_error      model, error, status_code, attempt, duration_ms
//   tool_result    tool_name (name in early versions), success, duration_ms, error / error_type,
//                  decision_type|decision, decision_source|source, tool_use_id, tool_parameters
//                  and tool_input (JSON strings, with OTEL_LOG_TOOL_DETAILS=1),
//                  tool_result_size_bytes
//   tool_decision  decision ("reject" counts a rejected call; rejected calls have no result)
// Other Claude Code events are counted by name. Records from other programs (no claude_code
// event name) are counted and otherwise ignored. Metrics: claude_code.cost.usage and
// token.usage by model and type, session.count, lines_of_code.count (added/removed),
// commit.count, pull_request.count, active_time.total (user/cli), code_edit_tool.decision,
// and every series aggregated (delta points summed; cumulative points: the latest per start).
//
// Events repeated by an exporter retry (same session.id, event.sequence, name and time) count
// once; so do identical metric points. Events are ordered by time, then event.sequence. Turns: with
// prompt.id, the events of one prompt; without, the events of a session from one user prompt to
// the next. Events before a session's first prompt form a turn of their own, and prompts Claude
// Code makes itself (text starting <task-notification>, <system-reminder>, <local-command-; only
// visible when prompts are logged) stay in the turn they happen in.
//
// Money is integer micro-dollars (cost_usd is rounded to the micro-dollar once, per event).
// Every figure saturates instead of overflowing; negative or unreadable figures count as 0.
// Thread-safety: pure functions; no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/otel/otlp.h"

namespace km::otel {

struct ModelUsage {
  int64_t requests = 0;  // api_request events (0 for usage from metrics)
  int64_t errors = 0;    // api_error events
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  int64_t cache_read_tokens = 0;
  int64_t cache_creation_tokens = 0;
  int64_t cost_micros = 0;
  int64_t duration_ms = 0;  // summed over requests
  bool operator==(const ModelUsage&) const = default;
};

// One api_request or api_error event.
struct ApiCall {
  int64_t time_unix_nano = 0;
  std::string session_id, prompt_id, model, request_id;
  bool error = false;         // an api_error
  std::string error_message;  // api_error's error
  int64_t status_code = 0;    // api_error; 0 when absent
  int64_t attempt = 0;
  ModelUsage usage;           // requests/errors is 1/0 or 0/1
  size_t turn = 0;            // index into TelemetrySummary::timeline
};

// One tool_result event: a tool call that ran.
struct ToolCall {
  int64_t time_unix_nano = 0;
  std::string session_id, prompt_id, name, tool_use_id;
  bool success = true;
  int64_t duration_ms = 0;
  int64_t result_size_bytes = 0;
  std::string error;               // the error message, or its type when only that is logged
  std::string decision, decision_source;
  nlohmann::json parameters;       // tool_parameters, parsed if it is JSON; null when absent
  nlohmann::json input;            // tool_input, likewise
  std::string summary;             // what it acted on (a path, command, pattern, ...); "" unknown
  size_t turn = 0;
};

struct Prompt {
  int64_t time_unix_nano = 0;
  std::string session_id, prompt_id;
  int64_t length = 0;               // prompt_length
  std::optional<std::string> text;  // only when Claude Code logged it (OTEL_LOG_USER_PROMPTS=1)
  bool synthetic = false;           // written by Claude Code, not the user
  size_t turn = 0;
};

// The work one user prompt caused.
struct Turn {
  int64_t start_unix_nano = 0, end_unix_nano = 0;
  std::string session_id, prompt_id;
  std::optional<size_t> prompt;  // index into prompts; nullopt for a session-start turn
  ModelUsage usage;              // of its API calls
  int64_t tool_calls = 0, tool_failures = 0, tool_rejections = 0;
};

// A metric series after aggregation, with the attributes that identify a user or session left
// out (so one line per model, type, ... remains).
struct MetricSeries {
  std::string name, unit;
  MetricKind kind = MetricKind::kSum;
  std::map<std::string, std::string> labels;  // attribute values as text
  double value = 0;                           // sums: the total; gauges: the latest
  int64_t points = 0;
  int64_t last_unix_nano = 0;
};

struct MetricTotals {
  std::map<std::string, ModelUsage> by_model;  // cost.usage and token.usage
  double sessions = 0, lines_added = 0, lines_removed = 0, commits = 0, pull_requests = 0;
  double active_time_user_s = 0, active_time_cli_s = 0;
  std::map<std::string, double> code_edit_decisions;  // "<tool_name> <decision>", e.g. "Edit accept"
  std::vector<MetricSeries> series;                   // sorted by name, then labels
};

struct TelemetrySummary {
  std::map<std::string, ModelUsage> by_model;  // from api_request / api_error events
  ModelUsage total;                            // the sum of by_model
  int64_t api_requests = 0, api_errors = 0;
  int64_t tool_calls = 0, tool_failures = 0, tool_rejections = 0;
  int64_t user_prompts = 0;                     // prompts not written by Claude Code
  int64_t first_unix_nano = 0, last_unix_nano = 0;  // of the events; 0 when none
  std::vector<std::string> sessions;            // session.id values, in order of appearance
  std::map<std::string, int64_t> event_counts;  // every Claude Code event, by short name
  int64_t other_records = 0;                    // log records that are not Claude Code events
  int64_t duplicates = 0;                       // events dropped as exporter repeats

  std::vector<ApiCall> api_calls;
  std::vector<ToolCall> tools;
  std::vector<Prompt> prompts;
  std::vector<Turn> timeline;                   // ordered by start
  MetricTotals metrics;
};

TelemetrySummary summarise(const std::vector<LogRecord>& logs, const std::vector<MetricPoint>& metrics);

// The summary for `km otel -o json`: money as cost_micros and cost_usd (exact decimal text),
// times as unix nanoseconds.
nlohmann::json to_json(const TelemetrySummary& summary);

// The Claude Code event a record carries, without the "claude_code." prefix ("api_request"),
// or "" if it is not one.
std::string claude_code_event(const LogRecord& rec);
// When an event happened: its timestamp, else event.timestamp, else when it was observed.
int64_t event_time(const LogRecord& rec);

}  // namespace km::otel
