#include "km/otel/test_requests.h"

#include <cstdio>
#include <cstring>

#include "km/base/check.h"

namespace km::otel::testing {

namespace {

using Json = nlohmann::json;

std::string from_hex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    KM_CHECK(false && "not hex");
    return 0;
  };
  KM_CHECK(hex.size() % 2 == 0);
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) out += static_cast<char>(nibble(hex[i]) << 4 | nibble(hex[i + 1]));
  return out;
}

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16 |
                 static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8 |
                 static_cast<unsigned char>(in[i + 2]);
    for (int k = 3; k >= 0; --k) out += kAlphabet[(v >> (6 * k)) & 63];
  }
  if (i < in.size()) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

bool is_bytes(const Json& v) { return v.is_object() && v.size() == 1 && v.contains("$bytes"); }

ProtoWriter attributes_pb(const TestAttributes& attrs, uint32_t field) {
  ProtoWriter w;
  for (const auto& [k, v] : attrs) w.message(field, key_value(k, v));
  return w;
}

Json attributes_json(const TestAttributes& attrs) {
  Json arr = Json::array();
  for (const auto& [k, v] : attrs) arr.push_back(Json{{"key", k}, {"value", any_value_json(v)}});
  return arr;
}

ProtoWriter log_pb(const TestLogRecord& r) {
  ProtoWriter w;
  if (r.time) w.fixed64(1, r.time);
  if (r.severity) w.varint(2, static_cast<uint64_t>(static_cast<int64_t>(r.severity)));
  if (!r.severity_text.empty()) w.bytes(3, r.severity_text);
  if (!r.body.is_null()) w.message(5, any_value(r.body));
  for (const auto& [k, v] : r.attributes) w.message(6, key_value(k, v));
  if (!r.trace_id.empty()) w.bytes(9, from_hex(r.trace_id));
  if (!r.span_id.empty()) w.bytes(10, from_hex(r.span_id));
  if (r.observed) w.fixed64(11, r.observed);
  if (!r.event_name.empty()) w.bytes(12, r.event_name);
  return w;
}

Json log_json(const TestLogRecord& r) {
  Json j = Json::object();
  if (r.time) j["timeUnixNano"] = std::to_string(r.time);
  if (r.observed) j["observedTimeUnixNano"] = std::to_string(r.observed);
  if (r.severity) j["severityNumber"] = r.severity;
  if (!r.severity_text.empty()) j["severityText"] = r.severity_text;
  if (!r.body.is_null()) j["body"] = any_value_json(r.body);
  if (!r.attributes.empty()) j["attributes"] = attributes_json(r.attributes);
  if (!r.trace_id.empty()) j["traceId"] = r.trace_id;
  if (!r.span_id.empty()) j["spanId"] = r.span_id;
  if (!r.event_name.empty()) j["eventName"] = r.event_name;
  return j;
}

bool number_kind(MetricKind k) { return k == MetricKind::kGauge || k == MetricKind::kSum; }

ProtoWriter point_pb(const TestPoint& p, MetricKind kind) {
  ProtoWriter w;
  uint32_t attributes_field = kind == MetricKind::kHistogram              ? 9
                              : kind == MetricKind::kExponentialHistogram ? 1
                                                                          : 7;
  for (const auto& [k, v] : p.attributes) w.message(attributes_field, key_value(k, v));
  if (p.start) w.fixed64(2, p.start);
  if (p.time) w.fixed64(3, p.time);
  if (number_kind(kind)) {
    if (p.is_int) {
      w.fixed64(6, static_cast<uint64_t>(p.as_int));
    } else {
      w.dbl(4, p.as_double);
    }
  } else {
    w.fixed64(4, p.count);
    w.dbl(5, p.as_double);
  }
  return w;
}

Json point_json(const TestPoint& p, MetricKind kind) {
  Json j = Json::object();
  if (!p.attributes.empty()) j["attributes"] = attributes_json(p.attributes);
  if (p.start) j["startTimeUnixNano"] = std::to_string(p.start);
  if (p.time) j["timeUnixNano"] = std::to_string(p.time);
  if (number_kind(kind)) {
    if (p.is_int) {
      j["asInt"] = std::to_string(p.as_int);
    } else {
      j["asDouble"] = p.as_double;
    }
  } else {
    j["count"] = std::to_string(p.count);
    j["sum"] = p.as_double;
  }
  return j;
}

uint32_t kind_field(MetricKind k) {
  switch (k) {
    case MetricKind::kGauge: return 5;
    case MetricKind::kSum: return 7;
    case MetricKind::kHistogram: return 9;
    case MetricKind::kExponentialHistogram: return 10;
    case MetricKind::kSummary: return 11;
  }
  return 5;
}

const char* kind_key(MetricKind k) {
  switch (k) {
    case MetricKind::kGauge: return "gauge";
    case MetricKind::kSum: return "sum";
    case MetricKind::kHistogram: return "histogram";
    case MetricKind::kExponentialHistogram: return "exponentialHistogram";
    case MetricKind::kSummary: return "summary";
  }
  return "gauge";
}

ProtoWriter metric_pb(const TestMetric& m) {
  ProtoWriter w;
  w.bytes(1, m.name);
  if (!m.description.empty()) w.bytes(2, m.description);
  if (!m.unit.empty()) w.bytes(3, m.unit);
  ProtoWriter data;
  for (const TestPoint& p : m.points) data.message(1, point_pb(p, m.kind));
  if (m.kind != MetricKind::kGauge && m.kind != MetricKind::kSummary) data.varint(2, static_cast<uint64_t>(m.temporality));
  if (m.kind == MetricKind::kSum) data.varint(3, m.monotonic ? 1 : 0);
  w.message(kind_field(m.kind), data);
  return w;
}

Json metric_json(const TestMetric& m) {
  Json j{{"name", m.name}, {"description", m.description}, {"unit", m.unit}};
  Json data{{"dataPoints", Json::array()}};
  for (const TestPoint& p : m.points) data["dataPoints"].push_back(point_json(p, m.kind));
  if (m.kind != MetricKind::kGauge && m.kind != MetricKind::kSummary) data["aggregationTemporality"] = m.temporality;
  if (m.kind == MetricKind::kSum) data["isMonotonic"] = m.monotonic;
  j[kind_key(m.kind)] = std::move(data);
  return j;
}

ProtoWriter span_pb(const TestSpan& s) {
  ProtoWriter w;
  if (!s.trace_id.empty()) w.bytes(1, from_hex(s.trace_id));
  if (!s.span_id.empty()) w.bytes(2, from_hex(s.span_id));
  if (!s.parent_span_id.empty()) w.bytes(4, from_hex(s.parent_span_id));
  w.bytes(5, s.name);
  if (s.kind) w.varint(6, static_cast<uint64_t>(s.kind));
  if (s.start) w.fixed64(7, s.start);
  if (s.end) w.fixed64(8, s.end);
  for (const auto& [k, v] : s.attributes) w.message(9, key_value(k, v));
  if (s.status_code || !s.status_message.empty()) {
    ProtoWriter st;
    if (!s.status_message.empty()) st.bytes(2, s.status_message);
    if (s.status_code) st.varint(3, static_cast<uint64_t>(s.status_code));
    w.message(15, st);
  }
  return w;
}

Json span_json(const TestSpan& s) {
  Json j{{"name", s.name}};
  if (!s.trace_id.empty()) j["traceId"] = s.trace_id;
  if (!s.span_id.empty()) j["spanId"] = s.span_id;
  if (!s.parent_span_id.empty()) j["parentSpanId"] = s.parent_span_id;
  if (s.kind) j["kind"] = s.kind;
  if (s.start) j["startTimeUnixNano"] = std::to_string(s.start);
  if (s.end) j["endTimeUnixNano"] = std::to_string(s.end);
  if (!s.attributes.empty()) j["attributes"] = attributes_json(s.attributes);
  if (s.status_code || !s.status_message.empty()) j["status"] = Json{{"code", s.status_code}, {"message", s.status_message}};
  return j;
}

}  // namespace

ProtoWriter& ProtoWriter::varint(uint32_t field, uint64_t v) {
  out_ += varint_bytes(uint64_t{field} << 3 | 0);
  out_ += varint_bytes(v);
  return *this;
}

ProtoWriter& ProtoWriter::fixed64(uint32_t field, uint64_t v) {
  out_ += varint_bytes(uint64_t{field} << 3 | 1);
  for (int i = 0; i < 8; ++i) out_ += static_cast<char>((v >> (8 * i)) & 0xff);
  return *this;
}

ProtoWriter& ProtoWriter::fixed32(uint32_t field, uint32_t v) {
  out_ += varint_bytes(uint64_t{field} << 3 | 5);
  for (int i = 0; i < 4; ++i) out_ += static_cast<char>((v >> (8 * i)) & 0xff);
  return *this;
}

ProtoWriter& ProtoWriter::dbl(uint32_t field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return fixed64(field, bits);
}

ProtoWriter& ProtoWriter::bytes(uint32_t field, std::string_view v) {
  out_ += varint_bytes(uint64_t{field} << 3 | 2);
  out_ += varint_bytes(v.size());
  out_ += v;
  return *this;
}

ProtoWriter& ProtoWriter::raw(std::string_view v) {
  out_ += v;
  return *this;
}

std::string ProtoWriter::varint_bytes(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
  return out;
}

ProtoWriter any_value(const Json& v) {
  ProtoWriter w;
  if (is_bytes(v)) {
    w.bytes(7, v["$bytes"].get<std::string>());
  } else if (v.is_string()) {
    w.bytes(1, v.get<std::string>());
  } else if (v.is_boolean()) {
    w.varint(2, v.get<bool>() ? 1 : 0);
  } else if (v.is_number_integer()) {
    w.varint(3, static_cast<uint64_t>(v.get<int64_t>()));
  } else if (v.is_number_float()) {
    w.dbl(4, v.get<double>());
  } else if (v.is_array()) {
    ProtoWriter arr;
    for (const Json& e : v) arr.message(1, any_value(e));
    w.message(5, arr);
  } else if (v.is_object()) {
    ProtoWriter list;
    for (const auto& [k, e] : v.items()) list.message(1, key_value(k, e));
    w.message(6, list);
  }
  return w;
}

ProtoWriter key_value(std::string_view key, const Json& v) {
  ProtoWriter w;
  w.bytes(1, key);
  w.message(2, any_value(v));
  return w;
}

Json any_value_json(const Json& v) {
  if (is_bytes(v)) return Json{{"bytesValue", base64(v["$bytes"].get<std::string>())}};
  if (v.is_string()) return Json{{"stringValue", v}};
  if (v.is_boolean()) return Json{{"boolValue", v}};
  if (v.is_number_integer()) return Json{{"intValue", std::to_string(v.get<int64_t>())}};
  if (v.is_number_float()) return Json{{"doubleValue", v}};
  if (v.is_array()) {
    Json values = Json::array();
    for (const Json& e : v) values.push_back(any_value_json(e));
    return Json{{"arrayValue", Json{{"values", values}}}};
  }
  if (v.is_object()) {
    Json values = Json::array();
    for (const auto& [k, e] : v.items()) values.push_back(Json{{"key", k}, {"value", any_value_json(e)}});
    return Json{{"kvlistValue", Json{{"values", values}}}};
  }
  return Json::object();
}

TestResource claude_code_resource(TestAttributes extra) {
  TestResource r;
  r.attributes = std::move(extra);
  r.attributes.push_back({"host.arch", "amd64"});
  r.attributes.push_back({"os.type", "linux"});
  r.attributes.push_back({"os.version", "6.1.0-28-amd64"});
  r.attributes.push_back({"service.name", "claude-code"});
  r.attributes.push_back({"service.version", "2.1.112"});
  return r;
}

TestLogRecord claude_code_event(std::string_view name, uint64_t time_ns, std::string_view session, int64_t sequence,
                                std::string_view prompt_id, TestAttributes attrs) {
  TestLogRecord r;
  r.time = r.observed = time_ns;
  r.body = "claude_code." + std::string(name);
  r.attributes = {
      {"user.id", "b3edeafc999de0e86d7cdebdcc5d0d23289a52d557a909772920015a06005895"},
      {"session.id", std::string(session)},
      {"terminal.type", "xterm"},
      {"event.name", std::string(name)},
      {"event.timestamp", iso_timestamp(time_ns)},
      {"event.sequence", sequence},
  };
  if (!prompt_id.empty()) r.attributes.push_back({"prompt.id", std::string(prompt_id)});
  for (auto& a : attrs) r.attributes.push_back(std::move(a));
  return r;
}

std::string iso_timestamp(uint64_t time_ns) {
  // H. Hinnant's civil_from_days.
  auto secs = static_cast<int64_t>(time_ns / 1'000'000'000);
  int64_t z = secs / 86400 + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  auto doe = static_cast<unsigned>(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = static_cast<int64_t>(yoe) + era * 400;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  unsigned d = doy - (153 * mp + 2) / 5 + 1;
  unsigned m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
  int64_t sod = secs % 86400;
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lluZ", static_cast<long long>(y), m, d,
                static_cast<long long>(sod / 3600), static_cast<long long>(sod / 60 % 60),
                static_cast<long long>(sod % 60), static_cast<unsigned long long>(time_ns / 1'000'000 % 1000));
  return buf;
}

std::string encode(const TestRequest& request, Signal signal, Encoding encoding) {
  const char* resource_key = signal == Signal::kLogs ? "resourceLogs" : signal == Signal::kMetrics ? "resourceMetrics" : "resourceSpans";
  const char* scope_key = signal == Signal::kLogs ? "scopeLogs" : signal == Signal::kMetrics ? "scopeMetrics" : "scopeSpans";
  const char* items_key = signal == Signal::kLogs ? "logRecords" : signal == Signal::kMetrics ? "metrics" : "spans";
  if (encoding == Encoding::kProtobuf) {
    ProtoWriter req;
    for (const TestResource& r : request.resources) {
      ProtoWriter rx;
      if (!r.attributes.empty()) rx.message(1, attributes_pb(r.attributes, 1));
      for (const TestScope& s : r.scopes) {
        ProtoWriter sx, scope;
        if (!s.name.empty()) scope.bytes(1, s.name);
        if (!s.version.empty()) scope.bytes(2, s.version);
        for (const auto& [k, v] : s.attributes) scope.message(3, key_value(k, v));
        sx.message(1, scope);
        if (signal == Signal::kLogs) {
          for (const auto& l : s.logs) sx.message(2, log_pb(l));
        } else if (signal == Signal::kMetrics) {
          for (const auto& m : s.metrics) sx.message(2, metric_pb(m));
        } else {
          for (const auto& sp : s.spans) sx.message(2, span_pb(sp));
        }
        rx.message(2, sx);
      }
      req.message(1, rx);
    }
    return req.str();
  }
  Json resources = Json::array();
  for (const TestResource& r : request.resources) {
    Json scopes = Json::array();
    for (const TestScope& s : r.scopes) {
      Json items = Json::array();
      if (signal == Signal::kLogs) {
        for (const auto& l : s.logs) items.push_back(log_json(l));
      } else if (signal == Signal::kMetrics) {
        for (const auto& m : s.metrics) items.push_back(metric_json(m));
      } else {
        for (const auto& sp : s.spans) items.push_back(span_json(sp));
      }
      Json scope = Json::object();
      if (!s.name.empty()) scope["name"] = s.name;
      if (!s.version.empty()) scope["version"] = s.version;
      if (!s.attributes.empty()) scope["attributes"] = attributes_json(s.attributes);
      scopes.push_back(Json{{"scope", scope}, {items_key, items}});
    }
    resources.push_back(Json{{"resource", Json{{"attributes", attributes_json(r.attributes)}}}, {scope_key, scopes}});
  }
  return Json{{resource_key, resources}}.dump();
}

}  // namespace km::otel::testing
