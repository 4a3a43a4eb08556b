#include "km/otel/claude_code.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <set>
#include <tuple>
#include <utility>

#include "km/base/money.h"
#include "km/meter/json_depth.h"
#include "km/otel/otlp_internal.h"

namespace km::otel {

namespace {

using Json = nlohmann::json;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr std::string_view kPrefix = "claude_code.";
// JSON strings in attributes (tool_parameters, tool_input) are parsed only up to this size:
// Claude Code bounds tool_input to about 4 K characters, and a hostile sandbox should not make
// `km otel` build a large document per tool call.
constexpr size_t kMaxParsedAttribute = 64u << 10;
constexpr size_t kMaxSummary = 200;

void add(int64_t& to, int64_t v) {
  if (v <= 0) return;
  to = to > kMax - v ? kMax : to + v;
}

void add(ModelUsage& to, const ModelUsage& u) {
  add(to.requests, u.requests);
  add(to.errors, u.errors);
  add(to.input_tokens, u.input_tokens);
  add(to.output_tokens, u.output_tokens);
  add(to.cache_read_tokens, u.cache_read_tokens);
  add(to.cache_creation_tokens, u.cache_creation_tokens);
  add(to.cost_micros, u.cost_micros);
  add(to.duration_ms, u.duration_ms);
}

// A double rounded to int64, clamped to [0, kMax]; 0 for NaN.
int64_t clamp_round(double d) {
  if (!(d > 0)) return 0;
  if (d >= 9.2e18) return kMax;
  return std::llround(d);
}

std::optional<double> number_of(const Json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_boolean()) return v.get<bool>() ? 1.0 : 0.0;
  if (!v.is_string()) return std::nullopt;
  const auto& s = v.get_ref<const std::string&>();
  double d = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty() || !std::isfinite(d)) return std::nullopt;
  return d;
}

// An integer attribute (Claude Code sends most as decimal strings), clamped to [0, kMax].
int64_t count_attr(const Attributes& attrs, std::string_view key) {
  const Json* v = find_attribute(attrs, key);
  if (!v) return 0;
  if (v->is_number_unsigned()) {
    auto u = v->get<uint64_t>();
    return u > static_cast<uint64_t>(kMax) ? kMax : static_cast<int64_t>(u);
  }
  if (v->is_number_integer()) return std::max<int64_t>(0, v->get<int64_t>());
  if (v->is_string()) {
    const auto& s = v->get_ref<const std::string&>();
    int64_t i = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), i);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) return std::max<int64_t>(0, i);
  }
  auto d = number_of(*v);
  return d ? clamp_round(*d) : 0;
}

std::optional<int64_t> int_attr(const Attributes& attrs, std::string_view key) {
  const Json* v = find_attribute(attrs, key);
  if (!v) return std::nullopt;
  if (v->is_number_integer() && !v->is_number_unsigned()) return v->get<int64_t>();
  if (v->is_string()) {
    const auto& s = v->get_ref<const std::string&>();
    int64_t i = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), i);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) return i;
  }
  if (auto d = number_of(*v); d && std::fabs(*d) < 9.2e18) return std::llround(*d);
  return std::nullopt;
}

std::optional<bool> bool_attr(const Attributes& attrs, std::string_view key) {
  const Json* v = find_attribute(attrs, key);
  if (!v) return std::nullopt;
  if (v->is_boolean()) return v->get<bool>();
  if (v->is_string()) {
    const auto& s = v->get_ref<const std::string&>();
    if (s == "true") return true;
    if (s == "false") return false;
  }
  if (v->is_number()) return v->get<double>() != 0;
  return std::nullopt;
}

// Text of an attribute: strings as they are, other values as JSON.
std::string text_of(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string text_attr(const Attributes& attrs, std::string_view key) {
  const Json* v = find_attribute(attrs, key);
  return v && !v->is_null() ? text_of(*v) : std::string();
}

int64_t cost_micros(const Attributes& attrs) {
  if (find_attribute(attrs, "cost_usd_micros")) return count_attr(attrs, "cost_usd_micros");
  const Json* v = find_attribute(attrs, "cost_usd");
  if (!v) return 0;
  auto usd = number_of(*v);
  if (!usd || *usd <= 0) return 0;
  return clamp_round(std::min(*usd, 1e12) * 1e6);
}

// A JSON document in a string attribute, parsed; the string itself if it is not one (or too
// large or deep to parse); null when absent.
Json json_attr(const Attributes& attrs, std::string_view key) {
  const Json* v = find_attribute(attrs, key);
  if (!v || v->is_null()) return Json();
  if (!v->is_string()) return *v;
  const auto& s = v->get_ref<const std::string&>();
  if (s.size() <= kMaxParsedAttribute && meter::json_depth_within(s, 32)) {
    Json parsed = Json::parse(s, nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_discarded()) return parsed;
  }
  return *v;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  auto yoe = static_cast<unsigned>(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// RFC 3339 / ISO 8601 "2026-11-24T08:37:19.298Z" (or with a ±hh:mm offset) as unix nanoseconds.
std::optional<int64_t> parse_timestamp(std::string_view s) {
  auto digits = [&](size_t pos, size_t n) -> std::optional<int> {
    if (pos + n > s.size()) return std::nullopt;
    int v = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return std::nullopt;
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  auto year = digits(0, 4), month = digits(5, 2), day = digits(8, 2);
  auto hour = digits(11, 2), minute = digits(14, 2), second = digits(17, 2);
  if (!year || !month || !day || !hour || !minute || !second || s.size() < 20 || s[4] != '-' || s[7] != '-' ||
      (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' || s[16] != ':' || *month < 1 ||
      *month > 12 || *day < 1 || *day > 31 || *hour > 23 || *minute > 59 || *second > 60) {
    return std::nullopt;
  }
  size_t pos = 19;
  int64_t frac = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int64_t scale = 100'000'000;
    size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      frac += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == start) return std::nullopt;
  }
  int64_t offset_s = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    auto oh = digits(pos + 1, 2), om = digits(pos + 4, 2);
    if (!oh || !om || pos + 6 > s.size() || s[pos + 3] != ':') return std::nullopt;
    offset_s = (*oh * 3600 + *om * 60) * (s[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size() || *year < 1970) return std::nullopt;
  int64_t days = days_from_civil(*year, static_cast<unsigned>(*month), static_cast<unsigned>(*day));
  int64_t secs = days * 86400 + *hour * 3600 + *minute * 60 + *second - offset_s;
  if (secs < 0 || secs > kMax / 1'000'000'000 - 1) return std::nullopt;
  return secs * 1'000'000'000 + frac;
}

bool synthetic_prompt(std::string_view text) {
  for (std::string_view marker : {"<task-notification>", "<system-reminder>", "<local-command-"}) {
    if (text.substr(0, marker.size()) == marker) return true;
  }
  return false;
}

// The first line of `s`, cut to kMaxSummary bytes; "..." says something was left out.
std::string one_line(std::string_view s) {
  std::string_view cut = detail::utf8_prefix(s.substr(0, s.find('\n')), kMaxSummary);
  return std::string(cut) + (cut.size() < s.size() ? "..." : "");
}

std::string member_text(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

// What a tool call acted on, from its logged input or parameters.
std::string tool_summary(std::string_view name, const Json& input, const Json& params) {
  auto first = [&](std::initializer_list<std::string_view> keys) -> std::string {
    for (const Json* src : {&input, &params}) {
      for (std::string_view k : keys) {
        std::string v = member_text(*src, k);
        if (!v.empty()) return v;
      }
    }
    return "";
  };
  std::string s;
  if (name == "Read" || name == "Write" || name == "Edit" || name == "MultiEdit" || name == "NotebookEdit" ||
      name == "NotebookRead") {
    s = first({"file_path", "notebook_path", "path"});
  } else if (name == "Bash") {
    s = first({"command", "full_command", "bash_command"});
  } else if (name == "Glob" || name == "Grep") {
    s = first({"pattern"});
    std::string path = first({"path"});
    if (!s.empty() && !path.empty()) s += " in " + path;
  } else if (name == "Task" || name == "Agent") {
    s = first({"description", "subagent_type"});
  } else if (name == "WebFetch") {
    s = first({"url"});
  } else if (name == "WebSearch") {
    s = first({"query"});
  } else if (name == "Skill") {
    s = first({"skill_name", "skill", "command"});
  }
  if (s.empty()) {
    std::string server = first({"mcp_server_name"}), tool = first({"mcp_tool_name"});
    if (!server.empty()) s = server + (tool.empty() ? "" : "/" + tool);
  }
  if (s.empty() && input.is_object()) {
    for (const auto& [k, v] : input.items()) {
      if (v.is_string() && !v.get_ref<const std::string&>().empty()) {
        s = v.get<std::string>();
        break;
      }
    }
  }
  return s.empty() ? s : one_line(s);
}

struct Event {
  const LogRecord* rec = nullptr;
  std::string name;
  int64_t time = 0;
  std::string session, prompt_id;
  std::optional<int64_t> sequence;
  size_t index = 0;
};

// Attributes that identify who or which session: left out of metric labels.
bool identity_key(std::string_view key) {
  static const std::set<std::string_view> kKeys = {
      "session.id",      "user.id",        "user.account_uuid", "user.account_id", "user.email",
      "organization.id", "terminal.type",  "app.version",       "app.entrypoint",  "prompt.id",
      "user.groups",     "identity.source",
  };
  return kKeys.count(key) > 0;
}

std::string dump_attributes(const Attributes& attrs) {
  Json obj = Json::object();
  for (const Attribute& a : attrs) obj[a.key] = a.value;
  return obj.dump(-1, ' ', false, Json::error_handler_t::replace);
}

bool additive(MetricKind kind) {
  return kind == MetricKind::kSum || kind == MetricKind::kHistogram || kind == MetricKind::kExponentialHistogram;
}

MetricTotals aggregate(const std::vector<MetricPoint>& points) {
  // One exported series: the metric with all its attributes and its resource.
  struct Series {
    const MetricPoint* meta = nullptr;
    double delta = 0;
    std::map<int64_t, std::pair<int64_t, double>> cumulative;  // start -> (time, value) of the latest
    int64_t latest_time = std::numeric_limits<int64_t>::min();
    double latest = 0;
    int64_t points = 0;
    std::set<std::pair<int64_t, int64_t>> seen;  // (start, time)
  };
  std::map<std::string, Series> series;
  for (const MetricPoint& p : points) {
    std::string key = p.name + '\x1f' + std::string(metric_kind_name(p.kind)) + '\x1f' + dump_attributes(p.attributes) +
                      '\x1f' + dump_attributes(p.resource);
    Series& s = series[key];
    if (!s.meta) s.meta = &p;
    if (!s.seen.emplace(p.start_unix_nano, p.time_unix_nano).second) continue;  // an exporter retry
    ++s.points;
    double v = p.value();
    if (!std::isfinite(v)) continue;
    if (p.time_unix_nano >= s.latest_time) {
      s.latest_time = p.time_unix_nano;
      s.latest = v;
    }
    if (additive(p.kind)) {
      if (p.temporality == kTemporalityDelta) {
        s.delta += v;
      } else {
        auto [it, fresh] = s.cumulative.try_emplace(p.start_unix_nano, p.time_unix_nano, v);
        if (!fresh && p.time_unix_nano >= it->second.first) it->second = {p.time_unix_nano, v};
      }
    }
  }

  // Merged across sessions and users: one line per metric and remaining labels.
  std::map<std::tuple<std::string, MetricKind, std::map<std::string, std::string>>, MetricSeries> merged;
  for (auto& [key, s] : series) {
    const MetricPoint& p = *s.meta;
    std::map<std::string, std::string> labels;
    for (const Attribute& a : p.attributes) {
      if (!identity_key(a.key)) labels[a.key] = text_of(a.value);
    }
    MetricSeries& m = merged[{p.name, p.kind, labels}];
    if (m.points == 0) {
      m.name = p.name;
      m.unit = p.unit;
      m.kind = p.kind;
      m.labels = labels;
      m.last_unix_nano = std::numeric_limits<int64_t>::min();
    }
    m.points += s.points;
    if (additive(p.kind)) {
      double total = s.delta;
      for (const auto& [start, tv] : s.cumulative) total += tv.second;
      m.value += total;
    } else if (s.latest_time >= m.last_unix_nano) {
      m.value = s.latest;
    }
    m.last_unix_nano = std::max(m.last_unix_nano, s.latest_time);
  }

  MetricTotals t;
  for (auto& entry : merged) {
    MetricSeries& m = entry.second;  // not a structured binding: the lambda below captures it
    if (m.points == 0) continue;
    auto label = [&](const char* k) {
      auto it = m.labels.find(k);
      return it == m.labels.end() ? std::string() : it->second;
    };
    if (m.name == "claude_code.cost.usage") {
      add(t.by_model[label("model")].cost_micros, clamp_round(std::min(m.value, 1e12) * 1e6));
    } else if (m.name == "claude_code.token.usage") {
      ModelUsage& u = t.by_model[label("model")];
      std::string type = label("type");
      int64_t n = clamp_round(m.value);
      if (type == "input") add(u.input_tokens, n);
      if (type == "output") add(u.output_tokens, n);
      if (type == "cacheRead") add(u.cache_read_tokens, n);
      if (type == "cacheCreation") add(u.cache_creation_tokens, n);
    } else if (m.name == "claude_code.session.count") {
      t.sessions += m.value;
    } else if (m.name == "claude_code.lines_of_code.count") {
      (label("type") == "removed" ? t.lines_removed : t.lines_added) += m.value;
    } else if (m.name == "claude_code.commit.count") {
      t.commits += m.value;
    } else if (m.name == "claude_code.pull_request.count") {
      t.pull_requests += m.value;
    } else if (m.name == "claude_code.active_time.total") {
      (label("type") == "user" ? t.active_time_user_s : t.active_time_cli_s) += m.value;
    } else if (m.name == "claude_code.code_edit_tool.decision") {
      t.code_edit_decisions[label("tool_name") + " " + label("decision")] += m.value;
    }
    t.series.push_back(std::move(m));
  }
  return t;
}

}  // namespace

std::string claude_code_event(const LogRecord& rec) {
  auto prefixed = [](std::string_view s) -> std::string {
    if (s.size() > kPrefix.size() && s.substr(0, kPrefix.size()) == kPrefix) return std::string(s.substr(kPrefix.size()));
    return "";
  };
  if (std::string n = prefixed(rec.event_name); !n.empty()) return n;
  if (rec.body.is_string()) {
    if (std::string n = prefixed(rec.body.get_ref<const std::string&>()); !n.empty()) return n;
  }
  std::string attr = string_attribute(rec.attributes, "event.name");
  if (std::string n = prefixed(attr); !n.empty()) return n;
  // The short event.name alone counts only on a record from Claude Code's own logger.
  if (!attr.empty() && rec.scope_name.rfind("com.anthropic.claude_code", 0) == 0) return attr;
  return "";
}

int64_t event_time(const LogRecord& rec) {
  if (rec.time_unix_nano > 0) return rec.time_unix_nano;
  if (auto t = parse_timestamp(string_attribute(rec.attributes, "event.timestamp"))) return *t;
  return rec.observed_unix_nano;
}

TelemetrySummary summarise(const std::vector<LogRecord>& logs, const std::vector<MetricPoint>& metrics) {
  TelemetrySummary sum;

  std::vector<Event> events;
  // An exporter's retry resends identical records. The time is part of the key because a
  // resumed session can start its event.sequence again under the same session.id.
  std::set<std::tuple<std::string, int64_t, std::string, int64_t>> seen;
  for (size_t i = 0; i < logs.size(); ++i) {
    const LogRecord& rec = logs[i];
    Event ev;
    ev.name = claude_code_event(rec);
    if (ev.name.empty()) {
      ++sum.other_records;
      continue;
    }
    ev.rec = &rec;
    ev.index = i;
    ev.time = event_time(rec);
    ev.session = text_attr(rec.attributes, "session.id");
    ev.prompt_id = text_attr(rec.attributes, "prompt.id");
    ev.sequence = int_attr(rec.attributes, "event.sequence");
    if (!ev.session.empty() && ev.sequence && !seen.emplace(ev.session, *ev.sequence, ev.name, ev.time).second) {
      ++sum.duplicates;
      continue;
    }
    ++sum.event_counts[ev.name];
    events.push_back(std::move(ev));
  }
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    return std::tie(a.time, a.session, a.sequence, a.index) < std::tie(b.time, b.session, b.sequence, b.index);
  });

  std::map<std::string, size_t> current;                               // session -> turn
  std::map<std::pair<std::string, std::string>, size_t> prompt_turns;  // (session, prompt.id) -> turn
  std::set<std::string> sessions;
  auto new_turn = [&](const Event& ev) {
    Turn t;
    t.start_unix_nano = t.end_unix_nano = ev.time;
    t.session_id = ev.session;
    t.prompt_id = ev.prompt_id;
    sum.timeline.push_back(std::move(t));
    size_t index = sum.timeline.size() - 1;
    current[ev.session] = index;
    if (!ev.prompt_id.empty()) prompt_turns[{ev.session, ev.prompt_id}] = index;
    return index;
  };
  // The turn an event other than a user prompt belongs to.
  auto turn_of = [&](const Event& ev) -> size_t {
    if (!ev.prompt_id.empty()) {
      auto it = prompt_turns.find({ev.session, ev.prompt_id});
      if (it != prompt_turns.end()) return it->second;
      return new_turn(ev);  // its prompt's own event was lost or is elsewhere
    }
    auto it = current.find(ev.session);
    return it != current.end() ? it->second : new_turn(ev);
  };

  for (const Event& ev : events) {
    const Attributes& a = ev.rec->attributes;
    if (!ev.session.empty() && sessions.insert(ev.session).second) sum.sessions.push_back(ev.session);
    if (sum.first_unix_nano == 0 || ev.time < sum.first_unix_nano) sum.first_unix_nano = ev.time;
    sum.last_unix_nano = std::max(sum.last_unix_nano, ev.time);

    size_t turn;
    if (ev.name == "user_prompt") {
      Prompt p;
      p.time_unix_nano = ev.time;
      p.session_id = ev.session;
      p.prompt_id = ev.prompt_id;
      p.length = count_attr(a, "prompt_length");
      if (const Json* text = find_attribute(a, "prompt"); text && text->is_string() && *text != "<REDACTED>") {
        p.text = text->get<std::string>();
        p.synthetic = synthetic_prompt(*p.text);
      }
      if (p.synthetic) {
        // Claude Code's own prompt (a background task finishing, a reminder) continues the turn
        // in progress; its prompt.id, if it has one, joins that turn.
        auto it = ev.prompt_id.empty() ? prompt_turns.end() : prompt_turns.find({ev.session, ev.prompt_id});
        if (it != prompt_turns.end()) {
          turn = it->second;
        } else {
          auto cur = current.find(ev.session);
          turn = cur != current.end() ? cur->second : new_turn(ev);
        }
      } else {
        auto it = ev.prompt_id.empty() ? prompt_turns.end() : prompt_turns.find({ev.session, ev.prompt_id});
        turn = it != prompt_turns.end() ? it->second : new_turn(ev);
        current[ev.session] = turn;
        sum.timeline[turn].prompt = sum.prompts.size();
        ++sum.user_prompts;
      }
      if (!ev.prompt_id.empty()) prompt_turns.emplace(std::make_pair(ev.session, ev.prompt_id), turn);
      p.turn = turn;
      sum.prompts.push_back(std::move(p));
    } else {
      turn = turn_of(ev);
    }
    Turn& t = sum.timeline[turn];
    t.start_unix_nano = std::min(t.start_unix_nano, ev.time);
    t.end_unix_nano = std::max(t.end_unix_nano, ev.time);

    if (ev.name == "api_request" || ev.name == "api_error") {
      ApiCall c;
      c.time_unix_nano = ev.time;
      c.session_id = ev.session;
      c.prompt_id = ev.prompt_id;
      c.model = text_attr(a, "model");
      if (c.model.empty()) c.model = "unknown";
      c.request_id = text_attr(a, "request_id");
      c.usage.duration_ms = count_attr(a, "duration_ms");
      c.attempt = count_attr(a, "attempt");
      c.turn = turn;
      if (ev.name == "api_request") {
        c.usage.requests = 1;
        c.usage.input_tokens = count_attr(a, "input_tokens");
        c.usage.output_tokens = count_attr(a, "output_tokens");
        c.usage.cache_read_tokens = count_attr(a, "cache_read_tokens");
        c.usage.cache_creation_tokens = count_attr(a, "cache_creation_tokens");
        c.usage.cost_micros = cost_micros(a);
        add(sum.api_requests, 1);
      } else {
        c.error = true;
        c.usage.errors = 1;
        c.error_message = text_attr(a, "error");
        c.status_code = count_attr(a, "status_code");
        add(sum.api_errors, 1);
      }
      add(sum.by_model[c.model], c.usage);
      add(sum.total, c.usage);
      add(t.usage, c.usage);
      sum.api_calls.push_back(std::move(c));
    } else if (ev.name == "tool_result") {
      ToolCall c;
      c.time_unix_nano = ev.time;
      c.session_id = ev.session;
      c.prompt_id = ev.prompt_id;
      c.name = text_attr(a, "tool_name");
      if (c.name.empty()) c.name = text_attr(a, "name");
      c.tool_use_id = text_attr(a, "tool_use_id");
      if (c.tool_use_id.empty()) c.tool_use_id = text_attr(a, "use_id");
      c.success = bool_attr(a, "success").value_or(true);
      c.duration_ms = count_attr(a, "duration_ms");
      c.result_size_bytes = count_attr(a, "tool_result_size_bytes");
      c.error = text_attr(a, "error");
      if (c.error.empty()) c.error = text_attr(a, "error_type");
      c.decision = text_attr(a, "decision_type");
      if (c.decision.empty()) c.decision = text_attr(a, "decision");
      c.decision_source = text_attr(a, "decision_source");
      if (c.decision_source.empty()) c.decision_source = text_attr(a, "source");
      c.parameters = json_attr(a, "tool_parameters");
      c.input = json_attr(a, "tool_input");
      c.summary = tool_summary(c.name, c.input, c.parameters);
      c.turn = turn;
      add(sum.tool_calls, 1);
      add(t.tool_calls, 1);
      if (!c.success) {
        add(sum.tool_failures, 1);
        add(t.tool_failures, 1);
      }
      sum.tools.push_back(std::move(c));
    } else if (ev.name == "tool_decision") {
      if (text_attr(a, "decision") == "reject") {
        add(sum.tool_rejections, 1);
        add(t.tool_rejections, 1);
      }
    }
  }

  sum.metrics = aggregate(metrics);
  return sum;
}

namespace {

Json usage_json(const ModelUsage& u) {
  return Json{{"requests", u.requests},
              {"errors", u.errors},
              {"input_tokens", u.input_tokens},
              {"output_tokens", u.output_tokens},
              {"cache_read_tokens", u.cache_read_tokens},
              {"cache_creation_tokens", u.cache_creation_tokens},
              {"cost_micros", u.cost_micros},
              {"cost_usd", usd_decimal(u.cost_micros)},
              {"duration_ms", u.duration_ms}};
}

Json models_json(const std::map<std::string, ModelUsage>& by_model) {
  Json out = Json::object();
  for (const auto& [model, u] : by_model) out[model] = usage_json(u);
  return out;
}

}  // namespace

Json to_json(const TelemetrySummary& s) {
  Json j;
  j["first_unix_nano"] = s.first_unix_nano;
  j["last_unix_nano"] = s.last_unix_nano;
  j["sessions"] = s.sessions;
  j["total"] = usage_json(s.total);
  j["by_model"] = models_json(s.by_model);
  j["api_requests"] = s.api_requests;
  j["api_errors"] = s.api_errors;
  j["tool_calls"] = s.tool_calls;
  j["tool_failures"] = s.tool_failures;
  j["tool_rejections"] = s.tool_rejections;
  j["user_prompts"] = s.user_prompts;
  j["event_counts"] = s.event_counts;
  j["other_records"] = s.other_records;
  j["duplicates"] = s.duplicates;

  Json prompts = Json::array();
  for (const Prompt& p : s.prompts) {
    Json o{{"time_unix_nano", p.time_unix_nano}, {"session_id", p.session_id}, {"prompt_id", p.prompt_id},
           {"length", p.length}, {"synthetic", p.synthetic}, {"turn", p.turn}};
    o["text"] = p.text ? Json(*p.text) : Json();
    prompts.push_back(std::move(o));
  }
  j["prompts"] = std::move(prompts);

  Json calls = Json::array();
  for (const ApiCall& c : s.api_calls) {
    Json o = usage_json(c.usage);
    o["time_unix_nano"] = c.time_unix_nano;
    o["session_id"] = c.session_id;
    o["prompt_id"] = c.prompt_id;
    o["model"] = c.model;
    o["request_id"] = c.request_id;
    o["error"] = c.error;
    if (c.error) {
      o["error_message"] = c.error_message;
      o["status_code"] = c.status_code;
    }
    o["attempt"] = c.attempt;
    o["turn"] = c.turn;
    calls.push_back(std::move(o));
  }
  j["api_calls"] = std::move(calls);

  Json tools = Json::array();
  for (const ToolCall& c : s.tools) {
    tools.push_back(Json{{"time_unix_nano", c.time_unix_nano},
                         {"session_id", c.session_id},
                         {"prompt_id", c.prompt_id},
                         {"name", c.name},
                         {"tool_use_id", c.tool_use_id},
                         {"success", c.success},
                         {"duration_ms", c.duration_ms},
                         {"result_size_bytes", c.result_size_bytes},
                         {"error", c.error},
                         {"decision", c.decision},
                         {"decision_source", c.decision_source},
                         {"parameters", c.parameters},
                         {"input", c.input},
                         {"summary", c.summary},
                         {"turn", c.turn}});
  }
  j["tools"] = std::move(tools);

  Json timeline = Json::array();
  for (const Turn& t : s.timeline) {
    Json o{{"start_unix_nano", t.start_unix_nano},
           {"end_unix_nano", t.end_unix_nano},
           {"session_id", t.session_id},
           {"prompt_id", t.prompt_id},
           {"usage", usage_json(t.usage)},
           {"tool_calls", t.tool_calls},
           {"tool_failures", t.tool_failures},
           {"tool_rejections", t.tool_rejections}};
    o["prompt"] = t.prompt ? Json(*t.prompt) : Json();
    timeline.push_back(std::move(o));
  }
  j["timeline"] = std::move(timeline);

  const MetricTotals& m = s.metrics;
  Json series = Json::array();
  for (const MetricSeries& ms : m.series) {
    series.push_back(Json{{"name", ms.name},
                          {"unit", ms.unit},
                          {"kind", metric_kind_name(ms.kind)},
                          {"labels", ms.labels},
                          {"value", ms.value},
                          {"points", ms.points},
                          {"last_unix_nano", ms.last_unix_nano}});
  }
  j["metrics"] = Json{{"by_model", models_json(m.by_model)},
                      {"sessions", m.sessions},
                      {"lines_added", m.lines_added},
                      {"lines_removed", m.lines_removed},
                      {"commits", m.commits},
                      {"pull_requests", m.pull_requests},
                      {"active_time_user_s", m.active_time_user_s},
                      {"active_time_cli_s", m.active_time_cli_s},
                      {"code_edit_decisions", m.code_edit_decisions},
                      {"series", std::move(series)}};
  return j;
}

}  // namespace km::otel
