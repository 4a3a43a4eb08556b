#include "km/otel/claude_code.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "km/base/file.h"
#include "km/otel/test_requests.h"

namespace km::otel {
namespace {

using nlohmann::json;
using testing::TestAttributes;
using testing::TestLogRecord;
using testing::TestMetric;
using testing::TestPoint;
using testing::TestRequest;
using testing::TestResource;
using testing::TestScope;

constexpr uint64_t kT0 = 1795509468000000000;  // 2026-11-24T08:37:48Z
constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSec = 1'000'000'000;

// Records as km stores them: decoded from what the exporter sent, so the test goes through the
// same representation as production (protobuf here; the decoder tests cover JSON agreeing).
std::vector<LogRecord> decode(const std::vector<TestLogRecord>& events, TestAttributes extra_resource = {}) {
  TestResource r = testing::claude_code_resource(std::move(extra_resource));
  TestScope s;
  s.name = "com.anthropic.claude_code.events";
  s.version = "2.1.112";
  s.logs = events;
  r.scopes.push_back(s);
  auto logs = decode_logs(testing::encode(TestRequest{{r}}, Signal::kLogs, Encoding::kProtobuf),
                          "application/x-protobuf", "");
  EXPECT_TRUE(logs) << logs.error().to_string();
  return logs ? *logs : std::vector<LogRecord>{};
}

std::vector<MetricPoint> decode(const std::vector<TestMetric>& metrics, TestAttributes resource = {}) {
  TestResource r = testing::claude_code_resource(std::move(resource));
  TestScope s;
  s.name = "com.anthropic.claude_code";
  s.metrics = metrics;
  r.scopes.push_back(s);
  auto points = decode_metrics(testing::encode(TestRequest{{r}}, Signal::kMetrics, Encoding::kProtobuf),
                               "application/x-protobuf", "");
  EXPECT_TRUE(points) << points.error().to_string();
  return points ? *points : std::vector<MetricPoint>{};
}

TestLogRecord event(std::string_view name, uint64_t t, std::string_view session, int64_t seq, std::string_view prompt,
                    TestAttributes attrs) {
  return testing::claude_code_event(name, t, session, seq, prompt, std::move(attrs));
}

TestAttributes api(std::string model, std::string cost, std::string in, std::string out, std::string cache_read,
                   std::string cache_write, std::string ms) {
  return {{"model", model}, {"cost_usd", cost}, {"input_tokens", in}, {"output_tokens", out},
          {"cache_read_tokens", cache_read}, {"cache_creation_tokens", cache_write}, {"duration_ms", ms},
          {"speed", "normal"}};
}

const char* kSonnet = "claude-sonnet-4-6";
const char* kHaiku = "claude-haiku-4-5";

// Two sessions in one sandbox. Session A (Claude Code 2.x, prompt.id and logged prompts and
// tool details): a fix with reads, a failing test run, a rejected write, an overloaded retry and
// a background title request; Claude Code's own reminder prompt; then a commit. Session B (an
// older version: no prompt.id, prompts redacted, `name` on tool results): one call before the
// first prompt, then a prompt with one call and one tool.
std::vector<TestLogRecord> session_events() {
  const char* a = "7f3a1c2e-0b1d-4c4e-9f00-aaaaaaaaaaaa";
  const char* b = "1b2c3d4e-5f60-4a7b-8c9d-bbbbbbbbbbbb";
  const char* p1 = "11111111-1111-4111-8111-111111111111";
  const char* p2 = "22222222-2222-4222-8222-222222222222";
  const char* p3 = "33333333-3333-4333-8333-333333333333";
  std::vector<TestLogRecord> e;
  uint64_t t = kT0;
  e.push_back(event("user_prompt", t, a, 0, p1, {{"prompt_length", "33"}, {"prompt", "fix the failing test in parser.cc"}}));
  e.push_back(event("api_request", t + 2 * kSec, a, 1, p1, api(kSonnet, "0.012345", "2100", "310", "15000", "1200", "1850")));
  e.push_back(event("tool_decision", t + 2100 * kMs, a, 2, p1, {{"tool_name", "Read"}, {"decision", "accept"}, {"source", "config"}}));
  e.push_back(event("tool_result", t + 2150 * kMs, a, 3, p1,
                    {{"tool_name", "Read"}, {"tool_use_id", "toolu_01"}, {"success", "true"}, {"duration_ms", "12"},
                     {"tool_input", R"({"file_path":"/src/parser.cc"})"}, {"tool_result_size_bytes", "8123"}}));
  e.push_back(event("tool_decision", t + 3 * kSec, a, 4, p1, {{"tool_name", "Bash"}, {"decision", "accept"}, {"source", "user_temporary"}}));
  e.push_back(event("tool_result", t + 9 * kSec, a, 5, p1,
                    {{"tool_name", "Bash"}, {"success", "false"}, {"duration_ms", "6012"}, {"error", "Exit code 2"},
                     {"decision_type", "accept"}, {"decision_source", "user_temporary"},
                     {"tool_parameters", R"({"bash_command":"make","full_command":"make test\nmake lint","timeout":120000})"}}));
  e.push_back(event("api_request", t + 12 * kSec, a, 6, p1, api(kSonnet, "0.008", "900", "450", "17100", "0", "2900")));
  e.push_back(event("tool_decision", t + 12500 * kMs, a, 7, p1, {{"tool_name", "Write"}, {"decision", "reject"}, {"source", "user_reject"}}));
  e.push_back(event("api_error", t + 14 * kSec, a, 8, p1,
                    {{"model", kSonnet}, {"error", "Overloaded"}, {"status_code", 529}, {"duration_ms", "1200"}, {"attempt", "3"}}));
  e.push_back(event("api_request", t + 20 * kSec, a, 9, p1, api(kSonnet, "0.004907999999999999", "1001", "12", "2000", "300", "25")));
  e.push_back(event("api_request", t + 20500 * kMs, a, 10, p1, api(kHaiku, "0.000412", "380", "22", "0", "0", "410")));
  // Claude Code's own prompt, with a prompt.id of its own: stays in the turn in progress.
  e.push_back(event("user_prompt", t + 25 * kSec, a, 11, p2,
                    {{"prompt_length", "60"}, {"prompt", "<system-reminder>The user opened parser.cc</system-reminder>"}}));
  e.push_back(event("api_request", t + 26 * kSec, a, 12, p2, api(kSonnet, "0.001", "10", "5", "0", "0", "100")));
  e.push_back(event("user_prompt", t + 60 * kSec, a, 13, p3, {{"prompt_length", "13"}, {"prompt", "now commit it"}}));
  e.push_back(event("api_request", t + 62 * kSec, a, 14, p3, api(kSonnet, "0.0031", "400", "80", "18000", "0", "1500")));
  e.push_back(event("tool_result", t + 64 * kSec, a, 15, p3,
                    {{"tool_name", "Bash"}, {"success", "true"}, {"duration_ms", "340"},
                     {"tool_input", R"({"command":"git commit -am 'Fix parser'","description":"Commit the fix"})"},
                     {"tool_parameters", R"({"bash_command":"git","full_command":"git commit -am 'Fix parser'","git_commit_id":"4f2a9c1"})"}}));
  e.push_back(event("assistant_response", t + 65 * kSec, a, 16, p3, {{"response_length", "12"}}));

  uint64_t tb = kT0 + 30 * kSec;
  e.push_back(event("api_request", tb, b, 0, "", api(kHaiku, "0.0002", "100", "10", "0", "0", "300")));
  e.push_back(event("user_prompt", tb + kSec, b, 1, "", {{"prompt_length", "41"}, {"prompt", "<REDACTED>"}}));
  e.push_back(event("api_request", tb + 3 * kSec, b, 2, "", api(kSonnet, "0.02", "5000", "700", "0", "4000", "4100")));
  e.push_back(event("tool_result", tb + 4 * kSec, b, 3, "", {{"name", "Grep"}, {"success", "true"}, {"duration_ms", "88"}}));
  return e;
}

TelemetrySummary session_summary(std::vector<TestLogRecord> events = session_events()) {
  auto logs = decode(events, {{"sandbox_id", "sb-1a2b3c4d"}});
  // Storage order is arrival order, not event order: the summary must not depend on it.
  std::mt19937 rng(7);
  std::shuffle(logs.begin(), logs.end(), rng);
  return summarise(logs, {});
}

TEST(ClaudeCodeSummary, TotalsByModel) {
  TelemetrySummary s = session_summary();
  EXPECT_EQ(s.api_requests, 8);
  EXPECT_EQ(s.api_errors, 1);
  ASSERT_EQ(s.by_model.size(), 2u);
  const ModelUsage& sonnet = s.by_model.at(kSonnet);
  EXPECT_EQ(sonnet.requests, 6);
  EXPECT_EQ(sonnet.errors, 1);
  EXPECT_EQ(sonnet.input_tokens, 2100 + 900 + 1001 + 10 + 400 + 5000);
  EXPECT_EQ(sonnet.output_tokens, 310 + 450 + 12 + 5 + 80 + 700);
  EXPECT_EQ(sonnet.cache_read_tokens, 15000 + 17100 + 2000 + 18000);
  EXPECT_EQ(sonnet.cache_creation_tokens, 1200 + 300 + 4000);
  // 0.004907999999999999 (a float printed by JavaScript) rounds to 4908 micro-dollars.
  EXPECT_EQ(sonnet.cost_micros, 12345 + 8000 + 4908 + 1000 + 3100 + 20000);
  EXPECT_EQ(sonnet.duration_ms, 1850 + 2900 + 1200 + 25 + 100 + 1500 + 4100);
  const ModelUsage& haiku = s.by_model.at(kHaiku);
  EXPECT_EQ(haiku.requests, 2);
  EXPECT_EQ(haiku.cost_micros, 412 + 200);
  EXPECT_EQ(s.total.cost_micros, sonnet.cost_micros + haiku.cost_micros);
  EXPECT_EQ(s.total.requests, 8);  // api_request events; the error is counted apart
  EXPECT_EQ(s.total.errors, 1);
}

TEST(ClaudeCodeSummary, ToolsPromptsAndSessions) {
  TelemetrySummary s = session_summary();
  EXPECT_EQ(s.sessions, (std::vector<std::string>{"7f3a1c2e-0b1d-4c4e-9f00-aaaaaaaaaaaa",
                                                  "1b2c3d4e-5f60-4a7b-8c9d-bbbbbbbbbbbb"}));
  EXPECT_EQ(s.first_unix_nano, static_cast<int64_t>(kT0));
  EXPECT_EQ(s.last_unix_nano, static_cast<int64_t>(kT0 + 65 * kSec));
  EXPECT_EQ(s.event_counts.at("tool_decision"), 3);
  EXPECT_EQ(s.event_counts.at("assistant_response"), 1);
  EXPECT_EQ(s.other_records, 0);

  EXPECT_EQ(s.tool_calls, 4);
  EXPECT_EQ(s.tool_failures, 1);
  EXPECT_EQ(s.tool_rejections, 1);
  ASSERT_EQ(s.tools.size(), 4u);
  const ToolCall& read = s.tools[0];
  EXPECT_EQ(read.name, "Read");
  EXPECT_EQ(read.tool_use_id, "toolu_01");
  EXPECT_TRUE(read.success);
  EXPECT_EQ(read.duration_ms, 12);
  EXPECT_EQ(read.result_size_bytes, 8123);
  EXPECT_EQ(read.summary, "/src/parser.cc");
  EXPECT_EQ(read.input, json::parse(R"({"file_path":"/src/parser.cc"})"));
  EXPECT_TRUE(read.parameters.is_null());
  const ToolCall& make = s.tools[1];
  EXPECT_FALSE(make.success);
  EXPECT_EQ(make.error, "Exit code 2");
  EXPECT_EQ(make.decision, "accept");
  EXPECT_EQ(make.decision_source, "user_temporary");
  EXPECT_EQ(make.summary, "make test...");  // the first line of the command
  EXPECT_EQ(make.parameters["timeout"], 120000);
  EXPECT_EQ(s.tools[2].name, "Grep");  // the older `name` attribute
  EXPECT_EQ(s.tools[2].summary, "");   // nothing logged to say what it searched
  EXPECT_EQ(s.tools[3].summary, "git commit -am 'Fix parser'");

  ASSERT_EQ(s.prompts.size(), 4u);
  EXPECT_EQ(s.user_prompts, 3);
  EXPECT_EQ(s.prompts[0].text, "fix the failing test in parser.cc");
  EXPECT_EQ(s.prompts[0].length, 33);
  EXPECT_TRUE(s.prompts[1].synthetic);
  EXPECT_EQ(s.prompts[2].session_id, "1b2c3d4e-5f60-4a7b-8c9d-bbbbbbbbbbbb");
  EXPECT_EQ(s.prompts[2].text, std::nullopt);  // redacted: only its length is known
  EXPECT_EQ(s.prompts[2].length, 41);
  EXPECT_EQ(s.prompts[3].text, "now commit it");
}

TEST(ClaudeCodeSummary, Timeline) {
  TelemetrySummary s = session_summary();
  // A's first prompt (with the reminder folded in), B's session start, B's prompt, A's commit.
  ASSERT_EQ(s.timeline.size(), 4u);
  const Turn& fix = s.timeline[0];
  EXPECT_EQ(fix.prompt_id, "11111111-1111-4111-8111-111111111111");
  ASSERT_TRUE(fix.prompt.has_value());
  EXPECT_EQ(s.prompts[*fix.prompt].text, "fix the failing test in parser.cc");
  EXPECT_EQ(fix.start_unix_nano, static_cast<int64_t>(kT0));
  EXPECT_EQ(fix.end_unix_nano, static_cast<int64_t>(kT0 + 26 * kSec));
  EXPECT_EQ(fix.usage.requests, 5);
  EXPECT_EQ(fix.usage.errors, 1);
  EXPECT_EQ(fix.usage.cost_micros, 12345 + 8000 + 4908 + 412 + 1000);
  EXPECT_EQ(fix.tool_calls, 2);
  EXPECT_EQ(fix.tool_failures, 1);
  EXPECT_EQ(fix.tool_rejections, 1);
  EXPECT_EQ(s.prompts[1].turn, 0u);

  const Turn& b_start = s.timeline[1];
  EXPECT_FALSE(b_start.prompt.has_value());
  EXPECT_EQ(b_start.session_id, "1b2c3d4e-5f60-4a7b-8c9d-bbbbbbbbbbbb");
  EXPECT_EQ(b_start.usage.requests, 1);
  EXPECT_EQ(b_start.usage.cost_micros, 200);

  const Turn& b_prompt = s.timeline[2];
  EXPECT_EQ(b_prompt.prompt, 2u);
  EXPECT_EQ(b_prompt.usage.cost_micros, 20000);
  EXPECT_EQ(b_prompt.tool_calls, 1);

  const Turn& commit = s.timeline[3];
  EXPECT_EQ(commit.prompt, 3u);
  EXPECT_EQ(commit.usage.requests, 1);
  EXPECT_EQ(commit.tool_calls, 1);
  EXPECT_EQ(commit.end_unix_nano, static_cast<int64_t>(kT0 + 65 * kSec));

  int64_t turn_cost = 0;
  for (const Turn& t : s.timeline) turn_cost += t.usage.cost_micros;
  EXPECT_EQ(turn_cost, s.total.cost_micros);
  for (size_t i = 1; i < s.timeline.size(); ++i) {
    EXPECT_LE(s.timeline[i - 1].start_unix_nano, s.timeline[i].start_unix_nano);
  }
  for (const ApiCall& c : s.api_calls) EXPECT_EQ(s.timeline[c.turn].session_id, c.session_id);
  ASSERT_EQ(s.api_calls.size(), 9u);
  EXPECT_TRUE(s.api_calls[2].error);
  EXPECT_EQ(s.api_calls[2].status_code, 529);
  EXPECT_EQ(s.api_calls[2].attempt, 3);
  EXPECT_EQ(s.api_calls[2].error_message, "Overloaded");
  EXPECT_EQ(s.api_calls[2].usage.errors, 1);
  EXPECT_EQ(s.api_calls[2].usage.requests, 0);
}

TEST(ClaudeCodeSummary, ExporterRetriesCountOnce) {
  std::vector<TestLogRecord> events = session_events();
  events.push_back(events[1]);  // the same api_request again (same session and event.sequence)
  events.push_back(events[5]);
  TelemetrySummary s = session_summary(events);
  EXPECT_EQ(s.duplicates, 2);
  EXPECT_EQ(s.api_requests, 8);
  EXPECT_EQ(s.tool_calls, 4);
  EXPECT_EQ(s.by_model.at(kSonnet).cost_micros, session_summary().by_model.at(kSonnet).cost_micros);
}

TEST(ClaudeCodeSummary, AResumedSessionRestartingItsSequenceIsNotARetry) {
  const char* a = "sess";
  std::vector<TestLogRecord> e = {
      event("api_request", kT0, a, 0, "p1", api(kSonnet, "0.01", "1", "1", "0", "0", "1")),
      event("api_request", kT0 + 600 * kSec, a, 0, "p2", api(kSonnet, "0.01", "1", "1", "0", "0", "1")),
  };
  TelemetrySummary s = summarise(decode(e), {});
  EXPECT_EQ(s.duplicates, 0);
  EXPECT_EQ(s.api_requests, 2);
  EXPECT_EQ(s.total.cost_micros, 20000);
}

TEST(ClaudeCodeSummary, PromptIdAloneMakesATurnWhenItsPromptEventIsMissing) {
  const char* a = "sess";
  std::vector<TestLogRecord> e = {
      event("api_request", kT0 + 2 * kSec, a, 5, "p-lost", api(kSonnet, "0.01", "1", "1", "0", "0", "1")),
      event("user_prompt", kT0 + 10 * kSec, a, 7, "p-next", {{"prompt_length", "4"}}),
      event("api_request", kT0 + 11 * kSec, a, 8, "p-next", api(kSonnet, "0.02", "1", "1", "0", "0", "1")),
  };
  TelemetrySummary s = summarise(decode(e), {});
  ASSERT_EQ(s.timeline.size(), 2u);
  EXPECT_EQ(s.timeline[0].prompt_id, "p-lost");
  EXPECT_FALSE(s.timeline[0].prompt.has_value());
  EXPECT_EQ(s.timeline[0].usage.cost_micros, 10000);
  EXPECT_EQ(s.timeline[1].prompt, 0u);
  EXPECT_EQ(s.timeline[1].usage.cost_micros, 20000);
}

TEST(ClaudeCodeSummary, RecordsFromOtherProgramsAreCountedNotRead) {
  TestLogRecord other;
  other.time = kT0;
  other.body = "GET /health 200";
  other.attributes = {{"event.name", "api_request"}, {"cost_usd", "100"}};  // not Claude Code's scope
  TestLogRecord codex;
  codex.time = kT0;
  codex.event_name = "codex.api_request";
  TestResource r;
  TestScope s;
  s.name = "some.other.logger";
  s.logs = {other, codex};
  r.scopes.push_back(s);
  auto logs = decode_logs(testing::encode(TestRequest{{r}}, Signal::kLogs, Encoding::kJson), "application/json", "");
  ASSERT_TRUE(logs);
  TelemetrySummary sum = summarise(*logs, {});
  EXPECT_EQ(sum.other_records, 2);
  EXPECT_EQ(sum.api_requests, 0);
  EXPECT_TRUE(sum.event_counts.empty());
}

TEST(ClaudeCodeEvents, NameAndTime) {
  LogRecord r;
  EXPECT_EQ(claude_code_event(r), "");
  r.body = "claude_code.tool_result";
  EXPECT_EQ(claude_code_event(r), "tool_result");
  r.body = nullptr;
  r.event_name = "claude_code.api_error";  // LogRecord.event_name (OTLP 1.5)
  EXPECT_EQ(claude_code_event(r), "api_error");
  r.event_name = "";
  r.attributes = {{"event.name", "claude_code.user_prompt"}};
  EXPECT_EQ(claude_code_event(r), "user_prompt");
  r.attributes = {{"event.name", "user_prompt"}};
  EXPECT_EQ(claude_code_event(r), "");  // a short name from an unknown logger
  r.scope_name = "com.anthropic.claude_code.events";
  EXPECT_EQ(claude_code_event(r), "user_prompt");
  r.body = "claude_code.";
  EXPECT_EQ(claude_code_event(r), "user_prompt");

  LogRecord t;
  t.observed_unix_nano = 5;
  EXPECT_EQ(event_time(t), 5);
  t.attributes = {{"event.timestamp", "2026-11-24T08:37:48.437Z"}};
  EXPECT_EQ(event_time(t), 1795509468437000000);
  t.attributes = {{"event.timestamp", "2026-11-24T10:37:48.437123456+02:00"}};
  EXPECT_EQ(event_time(t), 1795509468437123456);
  for (const char* bad : {"2026-11-24", "2026-13-24T08:37:48Z", "2026-11-24T08:37:48", "yesterday",
                          "2026-11-24T08:37:48.Z", "1969-12-31T23:59:59Z", "99999-11-24T08:37:48Z"}) {
    t.attributes = {{"event.timestamp", bad}};
    EXPECT_EQ(event_time(t), 5) << bad;
  }
  t.time_unix_nano = 9;
  EXPECT_EQ(event_time(t), 9);
}

TEST(ClaudeCodeSummary, FiguresInAnyTypeAndHostileOnes) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const char* a = "sess";
  std::vector<TestLogRecord> e = {
      // Numbers as JSON numbers rather than strings, and cost in micro-dollars (newer versions).
      event("api_request", kT0, a, 0, "p",
            {{"model", kSonnet}, {"input_tokens", 1200}, {"output_tokens", 57.0}, {"cost_usd", 99.0},
             {"cost_usd_micros", 6855}, {"cache_read_tokens", "3e3"}}),
      // Garbage and negative figures count as zero.
      event("api_request", kT0 + 1, a, 1, "p",
            {{"model", kSonnet}, {"input_tokens", "-5"}, {"output_tokens", "lots"}, {"cost_usd", "-1"},
             {"duration_ms", json::array({1})}}),
      // Huge figures saturate instead of overflowing.
      event("api_request", kT0 + 2, a, 2, "p", {{"model", kHaiku}, {"input_tokens", "9223372036854775807"}, {"cost_usd", "1e300"}}),
      event("api_request", kT0 + 3, a, 3, "p", {{"model", kHaiku}, {"input_tokens", kMax}, {"cost_usd", "NaN"}}),
      event("api_request", kT0 + 4, a, 4, "p", {}),  // no model
      event("tool_result", kT0 + 5, a, 5, "p",
            {{"tool_name", "Bash"}, {"success", false}, {"tool_input", "{not json"}, {"tool_parameters", json{{"a", 1}}}}),
      event("tool_result", kT0 + 6, a, 6, "p",
            {{"tool_name", "Edit"}, {"tool_input", std::string(100000, '[') + std::string(100000, ']')}}),
  };
  TelemetrySummary s = summarise(decode(e), {});
  const ModelUsage& sonnet = s.by_model.at(kSonnet);
  EXPECT_EQ(sonnet.input_tokens, 1200);
  EXPECT_EQ(sonnet.output_tokens, 57);
  EXPECT_EQ(sonnet.cache_read_tokens, 3000);
  EXPECT_EQ(sonnet.cost_micros, 6855);
  EXPECT_EQ(sonnet.duration_ms, 0);
  const ModelUsage& haiku = s.by_model.at(kHaiku);
  EXPECT_EQ(haiku.input_tokens, kMax);
  EXPECT_EQ(haiku.cost_micros, 1'000'000'000'000'000'000);  // capped at 10^12 USD
  EXPECT_EQ(s.total.input_tokens, kMax);
  EXPECT_EQ(s.by_model.at("unknown").requests, 1);
  ASSERT_EQ(s.tools.size(), 2u);
  EXPECT_FALSE(s.tools[0].success);
  EXPECT_EQ(s.tools[0].input, "{not json");  // kept as the string it was
  EXPECT_EQ(s.tools[0].parameters, json::parse(R"({"a":1})"));
  EXPECT_TRUE(s.tools[1].input.is_string());  // too deep to parse: kept as text
  EXPECT_TRUE(s.tools[1].success);            // absent: a result event means it ran
  json j = to_json(s);                        // and it all serialises
  EXPECT_EQ(j["by_model"][kHaiku]["cost_usd"], "1000000000000.000000");
}

TEST(ClaudeCodeSummary, ToolSummaries) {
  struct Case {
    std::string tool;
    json input, params;
    std::string want;
  };
  std::vector<Case> cases = {
      {"Write", {{"file_path", "/a/b.txt"}, {"content", "x"}}, nullptr, "/a/b.txt"},
      {"NotebookEdit", {{"notebook_path", "/n.ipynb"}}, nullptr, "/n.ipynb"},
      {"Bash", nullptr, {{"full_command", "ls -la"}, {"bash_command", "ls"}}, "ls -la"},
      {"Grep", {{"pattern", "TODO"}, {"path", "src"}}, nullptr, "TODO in src"},
      {"Glob", {{"pattern", "**/*.cc"}}, nullptr, "**/*.cc"},
      {"Task", {{"description", "Find callers"}, {"prompt", "..."}}, nullptr, "Find callers"},
      {"Agent", nullptr, {{"subagent_type", "Explore"}}, "Explore"},
      {"WebFetch", {{"url", "https://example.com"}}, nullptr, "https://example.com"},
      {"WebSearch", {{"query", "otlp json"}}, nullptr, "otlp json"},
      {"Skill", nullptr, {{"skill_name", "pdf"}}, "pdf"},
      {"mcp_tool", nullptr, {{"mcp_server_name", "github"}, {"mcp_tool_name", "create_issue"}}, "github/create_issue"},
      {"TodoWrite", {{"todos", json::array()}, {"note", "first string"}}, nullptr, "first string"},
      {"Bash", {{"command", std::string(300, 'x')}}, nullptr, std::string(200, 'x') + "..."},
      {"Read", nullptr, nullptr, ""},
  };
  for (const Case& c : cases) {
    TestAttributes attrs = {{"tool_name", c.tool}, {"success", "true"}};
    if (!c.input.is_null()) attrs.push_back({"tool_input", c.input.dump()});
    if (!c.params.is_null()) attrs.push_back({"tool_parameters", c.params.dump()});
    TelemetrySummary s = summarise(decode({event("tool_result", kT0, "s", 0, "p", attrs)}), {});
    ASSERT_EQ(s.tools.size(), 1u);
    EXPECT_EQ(s.tools[0].summary, c.want) << c.tool;
  }
}

// ---- metrics ----

TestPoint point(uint64_t start, uint64_t time, double v, TestAttributes attrs) {
  TestPoint p;
  p.start = start;
  p.time = time;
  p.as_double = v;
  p.attributes = std::move(attrs);
  return p;
}

TestAttributes who(std::string session, TestAttributes more = {}) {
  TestAttributes a = {{"user.id", "u1"}, {"session.id", session}, {"terminal.type", "xterm"}};
  for (auto& m : more) a.push_back(std::move(m));
  return a;
}

TEST(ClaudeCodeMetrics, DeltaSumsAddUpAndRetriesDoNot) {
  TestMetric cost{"claude_code.cost.usage", "", "USD", MetricKind::kSum, kTemporalityDelta, true, {}};
  cost.points = {point(kT0, kT0 + 60 * kSec, 0.012345, who("a", {{"model", kSonnet}})),
                 point(kT0 + 60 * kSec, kT0 + 120 * kSec, 0.008, who("a", {{"model", kSonnet}})),
                 point(kT0 + 60 * kSec, kT0 + 120 * kSec, 0.008, who("a", {{"model", kSonnet}})),  // a retry
                 point(kT0, kT0 + 60 * kSec, 0.02, who("b", {{"model", kSonnet}})),
                 point(kT0, kT0 + 60 * kSec, 0.000412, who("a", {{"model", kHaiku}}))};
  TestMetric tokens{"claude_code.token.usage", "", "tokens", MetricKind::kSum, kTemporalityDelta, true, {}};
  for (auto [type, n] : std::vector<std::pair<const char*, double>>{
           {"input", 2100}, {"output", 310}, {"cacheRead", 15000}, {"cacheCreation", 1200}}) {
    tokens.points.push_back(point(kT0, kT0 + 60 * kSec, n, who("a", {{"model", kSonnet}, {"type", type}})));
    tokens.points.push_back(point(kT0 + 60 * kSec, kT0 + 120 * kSec, n, who("a", {{"model", kSonnet}, {"type", type}})));
  }
  TestMetric sessions{"claude_code.session.count", "", "", MetricKind::kSum, kTemporalityDelta, true,
                      {point(kT0, kT0 + kSec, 1, who("a")), point(kT0, kT0 + kSec, 1, who("b"))}};
  TelemetrySummary s = summarise({}, decode({cost, tokens, sessions}));
  const MetricTotals& m = s.metrics;
  EXPECT_EQ(m.by_model.at(kSonnet).cost_micros, 12345 + 8000 + 20000);
  EXPECT_EQ(m.by_model.at(kHaiku).cost_micros, 412);
  EXPECT_EQ(m.by_model.at(kSonnet).input_tokens, 4200);
  EXPECT_EQ(m.by_model.at(kSonnet).output_tokens, 620);
  EXPECT_EQ(m.by_model.at(kSonnet).cache_read_tokens, 30000);
  EXPECT_EQ(m.by_model.at(kSonnet).cache_creation_tokens, 2400);
  EXPECT_EQ(m.by_model.at(kSonnet).requests, 0);  // metrics do not count requests
  EXPECT_EQ(m.sessions, 2);
  // One line per metric and model/type: the user and session attributes are merged away.
  auto cost_lines = std::count_if(m.series.begin(), m.series.end(),
                                  [](const MetricSeries& x) { return x.name == "claude_code.cost.usage"; });
  EXPECT_EQ(cost_lines, 2);
  for (const MetricSeries& x : m.series) {
    EXPECT_EQ(x.labels.count("session.id"), 0u);
    EXPECT_EQ(x.labels.count("user.id"), 0u);
  }
}

TEST(ClaudeCodeMetrics, CumulativeSumsTakeTheLatestPerStart) {
  // lines_of_code as a cumulative counter: 10, then 25 since the same start; then the process
  // restarts (a new start time) and counts 4. Total added: 25 + 4.
  TestMetric lines{"claude_code.lines_of_code.count", "", "", MetricKind::kSum, kTemporalityCumulative, true, {}};
  lines.points = {point(kT0, kT0 + 120 * kSec, 25, who("a", {{"type", "added"}})),
                  point(kT0, kT0 + 60 * kSec, 10, who("a", {{"type", "added"}})),
                  point(kT0 + 500 * kSec, kT0 + 560 * kSec, 4, who("a", {{"type", "added"}})),
                  point(kT0, kT0 + 60 * kSec, 7, who("a", {{"type", "removed"}}))};
  TestMetric commits{"claude_code.commit.count", "", "", MetricKind::kSum, kTemporalityCumulative, true,
                     {point(kT0, kT0 + 60 * kSec, 1, who("a")), point(kT0, kT0 + 120 * kSec, 2, who("a"))}};
  TestMetric prs{"claude_code.pull_request.count", "", "", MetricKind::kSum, kTemporalityDelta, true,
                 {point(kT0, kT0 + 60 * kSec, 1, who("a"))}};
  TestMetric active{"claude_code.active_time.total", "", "s", MetricKind::kSum, kTemporalityDelta, true,
                    {point(kT0, kT0 + 60 * kSec, 12.5, who("a", {{"type", "user"}})),
                     point(kT0, kT0 + 60 * kSec, 40.25, who("a", {{"type", "cli"}}))}};
  TestMetric edits{"claude_code.code_edit_tool.decision", "", "", MetricKind::kSum, kTemporalityDelta, true,
                   {point(kT0, kT0 + 60 * kSec, 3, who("a", {{"tool_name", "Edit"}, {"decision", "accept"}, {"language", "C++"}})),
                    point(kT0, kT0 + 60 * kSec, 1, who("a", {{"tool_name", "Edit"}, {"decision", "accept"}, {"language", "Python"}})),
                    point(kT0, kT0 + 60 * kSec, 1, who("a", {{"tool_name", "Write"}, {"decision", "reject"}}))}};
  TestMetric gauge{"process.heap", "", "By", MetricKind::kGauge, 0, false,
                   {point(0, kT0 + 60 * kSec, 900, {}), point(0, kT0 + 120 * kSec, 700, {}), point(0, kT0 + 90 * kSec, 800, {})}};
  TelemetrySummary s = summarise({}, decode({lines, commits, prs, active, edits, gauge}));
  const MetricTotals& m = s.metrics;
  EXPECT_EQ(m.lines_added, 29);
  EXPECT_EQ(m.lines_removed, 7);
  EXPECT_EQ(m.commits, 2);
  EXPECT_EQ(m.pull_requests, 1);
  EXPECT_EQ(m.active_time_user_s, 12.5);
  EXPECT_EQ(m.active_time_cli_s, 40.25);
  EXPECT_EQ(m.code_edit_decisions.at("Edit accept"), 4);
  EXPECT_EQ(m.code_edit_decisions.at("Write reject"), 1);
  auto heap = std::find_if(m.series.begin(), m.series.end(), [](const MetricSeries& x) { return x.name == "process.heap"; });
  ASSERT_NE(heap, m.series.end());
  EXPECT_EQ(heap->value, 700);  // the latest, not the last to arrive
  EXPECT_EQ(heap->kind, MetricKind::kGauge);
  EXPECT_EQ(heap->points, 3);
  EXPECT_EQ(heap->last_unix_nano, static_cast<int64_t>(kT0 + 120 * kSec));
}

TEST(ClaudeCodeSummary, JsonShape) {
  TelemetrySummary s = session_summary();
  json j = to_json(s);
  EXPECT_EQ(j["api_requests"], 8);
  EXPECT_EQ(j["total"]["cost_micros"], s.total.cost_micros);
  EXPECT_EQ(j["total"]["cost_usd"], "0.049965");
  EXPECT_EQ(j["by_model"][kSonnet]["requests"], 6);
  EXPECT_EQ(j["timeline"].size(), 4u);
  EXPECT_EQ(j["timeline"][1]["prompt"], nullptr);
  EXPECT_EQ(j["timeline"][0]["usage"]["cost_usd"], "0.026665");
  EXPECT_EQ(j["prompts"][2]["text"], nullptr);
  EXPECT_EQ(j["prompts"][0]["text"], "fix the failing test in parser.cc");
  EXPECT_EQ(j["tools"][1]["parameters"]["full_command"], "make test\nmake lint");
  EXPECT_EQ(j["api_calls"][2]["error"], true);
  EXPECT_EQ(j["api_calls"][2]["status_code"], 529);
  EXPECT_TRUE(j["metrics"]["series"].is_array());
  EXPECT_NO_THROW(j.dump());
}

// What Claude Code 2.1.112 sent for `claude -p "run echo hi and read the file"` against a fake
// provider that answered with two tool calls (fuzz/corpus/otlp; docs/otel.md says how they were
// captured): the summary of its events agrees with its own metrics and the provider's figures.
TEST(ClaudeCodeCaptures, SummaryOfARealSession) {
  auto load = [](const char* file) {
    auto data = read_file(std::string(KM_SOURCE_DIR) + "/fuzz/corpus/otlp/" + file, 1 << 20);
    EXPECT_TRUE(data) << file;
    return data ? data->substr(1) : std::string();
  };
  auto logs = decode_logs(load("claude_code_2.1.112_logs_protobuf"), "application/x-protobuf", "");
  auto metrics = decode_metrics(load("claude_code_2.1.112_metrics_json_gzip"), "application/json", "gzip");
  ASSERT_TRUE(logs);
  ASSERT_TRUE(metrics);
  TelemetrySummary s = summarise(*logs, *metrics);
  EXPECT_EQ(s.user_prompts, 1);
  EXPECT_EQ(s.prompts[0].text, "run echo hi and read the file");
  EXPECT_EQ(s.api_requests, 2);
  const ModelUsage& u = s.by_model.at("claude-sonnet-4-6");
  EXPECT_EQ(u.input_tokens, 2001);
  EXPECT_EQ(u.output_tokens, 52);
  EXPECT_EQ(u.cache_read_tokens, 2000);
  EXPECT_EQ(u.cache_creation_tokens, 600);
  EXPECT_EQ(u.cost_micros, 9633);
  // The metrics (another run of the same prompt) carry the same figures.
  EXPECT_EQ(s.metrics.by_model.at("claude-sonnet-4-6").cost_micros, 9633);
  EXPECT_EQ(s.metrics.by_model.at("claude-sonnet-4-6").input_tokens, 2001);
  EXPECT_EQ(s.metrics.sessions, 1);
  ASSERT_EQ(s.tools.size(), 2u);
  EXPECT_EQ(s.tools[0].name, "Read");
  EXPECT_FALSE(s.tools[0].success);
  EXPECT_EQ(s.tools[0].tool_use_id, "toolu_01B");  // 2.1.112 calls it use_id
  EXPECT_EQ(s.tools[0].summary, "/nonexistent/file.txt");
  EXPECT_EQ(s.tools[1].name, "Bash");
  EXPECT_EQ(s.tools[1].summary, "echo hi");
  EXPECT_EQ(s.tools[1].result_size_bytes, 2);
  ASSERT_EQ(s.timeline.size(), 1u);
  EXPECT_EQ(s.timeline[0].usage.cost_micros, 9633);
  EXPECT_EQ(s.timeline[0].tool_calls, 2);
  EXPECT_EQ(s.event_counts.at("tool_decision"), 2);
}

}  // namespace
}  // namespace km::otel
