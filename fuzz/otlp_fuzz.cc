// Fuzz target: km::otel's OTLP/HTTP decoders (what a sandbox sends the enforcer's receiver) and
// the Claude Code summary built from what they return.
// Input: byte 0 selects
//   bits 0-1  the request: 0 logs, 1 metrics, 2 traces, 3 all three decoders on the same body
//   bit 2     the encoding: 0 application/x-protobuf, 1 application/json
//   bits 3-4  the content coding: 0 none; 1 gzip, the body as given; 2 gzip, compressed by the
//             harness (so the fuzzer explores the message inside valid compression); 3 deflate
//   bit 5     small limits (8 records, depth 4, 64-byte names and values, 256 KiB decoded), so
//             every limit is reachable from small inputs
// and the rest is the body. Properties checked, besides the absence of crashes and sanitizer
// reports:
//   - decoding is deterministic, and results stay within the limits (record count, names,
//     value lengths, nesting);
//   - a protobuf log request that decodes re-encodes (one record per request, from the decoded
//     values) to the same records;
//   - errors map to an HTTP status of 400, 413 or 415, and to a response body;
//   - the summary of decoded records keeps its invariants (calls and tools add up; turn costs add
//     up to the total unless it saturated) and serialises.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "km/meter/test_payloads.h"
#include "km/otel/claude_code.h"
#include "km/otel/otlp.h"
#include "km/otel/test_requests.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using km::fuzz::die;

using namespace km::otel;
using nlohmann::json;
using testing::ProtoWriter;

DecodeLimits small_limits() {
  DecodeLimits l;
  l.max_records = 8;
  l.max_depth = 4;
  l.max_name_bytes = 64;
  l.max_string_bytes = 64;
  l.max_decoded_bytes = 256u << 10;
  return l;
}

// Depth of containers in a decoded value, and whether every string fits `max` (a base64 string
// of a cut bytes value is up to 4/3 of it).
size_t check_value(const json& v, const DecodeLimits& l) {
  if (v.is_string() && v.get_ref<const std::string&>().size() > (l.max_string_bytes + 2) / 3 * 4) {
    die("a value longer than max_string_bytes");
  }
  size_t depth = 0;
  if (v.is_object()) {
    for (const auto& [k, child] : v.items()) {
      if (k.size() > l.max_name_bytes) die("a key longer than max_name_bytes");
      depth = std::max(depth, 1 + check_value(child, l));
    }
  } else if (v.is_array()) {
    for (const auto& child : v) depth = std::max(depth, 1 + check_value(child, l));
  }
  return depth;
}

void check_attributes(const Attributes& attrs, const DecodeLimits& l) {
  for (const Attribute& a : attrs) {
    if (a.key.size() > l.max_name_bytes) die("a key longer than max_name_bytes");
    if (check_value(a.value, l) > l.max_depth) die("values nested deeper than max_depth");
  }
}

void check_error(const km::Error& e) {
  int status = error_response(Encoding::kJson, e).status;
  if (status != 400 && status != 413 && status != 415) die("an error with an unexpected HTTP status");
  if (error_response(Encoding::kProtobuf, e).body.empty()) die("an empty error body");
}

// An AnyValue for a decoded value (bytes values come back as strings, which is what they decoded to).
ProtoWriter any_value(const json& v) {
  ProtoWriter w;
  if (v.is_string()) {
    w.bytes(1, v.get_ref<const std::string&>());
  } else if (v.is_boolean()) {
    w.varint(2, v.get<bool>() ? 1 : 0);
  } else if (v.is_number_integer()) {
    w.varint(3, static_cast<uint64_t>(v.get<int64_t>()));
  } else if (v.is_number_float()) {
    w.dbl(4, v.get<double>());
  } else if (v.is_array()) {
    ProtoWriter arr;
    for (const json& e : v) arr.message(1, any_value(e));
    w.message(5, arr);
  } else if (v.is_object()) {
    ProtoWriter list;
    for (const auto& [k, e] : v.items()) list.message(1, ProtoWriter().bytes(1, k).message(2, any_value(e)));
    w.message(6, list);
  }
  return w;
}

ProtoWriter attributes(const Attributes& attrs, uint32_t field, ProtoWriter w) {
  for (const Attribute& a : attrs) w.message(field, ProtoWriter().bytes(1, a.key).message(2, any_value(a.value)));
  return w;
}

std::string hex_bytes(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// One log record as an ExportLogsServiceRequest of its own.
std::string reencode(const LogRecord& r) {
  ProtoWriter rec;
  rec.fixed64(1, static_cast<uint64_t>(r.time_unix_nano));
  rec.varint(2, static_cast<uint64_t>(static_cast<int64_t>(r.severity)));
  rec.bytes(3, r.severity_text);
  if (!r.body.is_null()) rec.message(5, any_value(r.body));
  rec = attributes(r.attributes, 6, rec);
  if (!r.trace_id.empty()) rec.bytes(9, hex_bytes(r.trace_id));
  if (!r.span_id.empty()) rec.bytes(10, hex_bytes(r.span_id));
  rec.fixed64(11, static_cast<uint64_t>(r.observed_unix_nano));
  rec.bytes(12, r.event_name);
  ProtoWriter scope;
  scope.bytes(1, r.scope_name).bytes(2, r.scope_version);
  scope = attributes(r.scope_attributes, 3, scope);
  ProtoWriter scope_logs;
  scope_logs.message(1, scope).message(2, rec);
  ProtoWriter resource_logs;
  resource_logs.message(1, attributes(r.resource, 1, {})).message(2, scope_logs);
  return ProtoWriter().message(1, resource_logs).str();
}

// Records compared through JSON text, so that NaN equals NaN.
std::string text(const LogRecord& r) {
  json attrs = json::array();
  for (const Attribute& a : r.attributes) attrs.push_back({a.key, a.value});
  json res = json::array();
  for (const Attribute& a : r.resource) res.push_back({a.key, a.value});
  json scope = json::array();
  for (const Attribute& a : r.scope_attributes) scope.push_back({a.key, a.value});
  json j{r.time_unix_nano, r.observed_unix_nano, r.severity, r.severity_text, r.body,   r.event_name, r.trace_id,
         r.span_id,        attrs,                res,        r.scope_name,    r.scope_version, scope};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void check_summary(const TelemetrySummary& s) {
  if (static_cast<int64_t>(s.api_calls.size()) != s.api_requests + s.api_errors) die("api calls do not add up");
  if (static_cast<int64_t>(s.tools.size()) != s.tool_calls) die("tool calls do not add up");
  int64_t turns = 0;
  for (const Turn& t : s.timeline) turns += t.usage.cost_micros / 2;  // halves cannot overflow
  if (s.total.cost_micros < std::numeric_limits<int64_t>::max() / 2 && turns > s.total.cost_micros) {
    die("turn costs exceed the total");
  }
  for (const ApiCall& c : s.api_calls) {
    if (c.turn >= s.timeline.size()) die("an API call in no turn");
  }
  for (const ToolCall& c : s.tools) {
    if (c.turn >= s.timeline.size()) die("a tool call in no turn");
  }
  for (const Turn& t : s.timeline) {
    if (t.prompt && *t.prompt >= s.prompts.size()) die("a turn's prompt out of range");
  }
  (void)to_json(s).dump(-1, ' ', false, json::error_handler_t::strict);
}

void logs(std::string_view body, const char* ct, const char* ce, const DecodeLimits& l, bool protobuf) {
  auto r = decode_logs(body, ct, ce, l);
  auto again = decode_logs(body, ct, ce, l);
  if (r.has_value() != again.has_value() || (r && *r != *again)) die("logs decode differently twice");
  if (!r) return check_error(r.error());
  if (r->size() > l.max_records) die("more records than max_records");
  for (const LogRecord& rec : *r) {
    check_attributes(rec.attributes, l);
    check_attributes(rec.resource, l);
    check_attributes(rec.scope_attributes, l);
    if (check_value(rec.body, l) > l.max_depth) die("a body nested deeper than max_depth");
    if (protobuf) {
      auto back = decode_logs(reencode(rec), "application/x-protobuf", "", DecodeLimits{});
      if (!back || back->size() != 1) die("a decoded record does not re-encode");
      if (text((*back)[0]) != text(rec)) die("a decoded record re-encodes differently");
    }
  }
  check_summary(summarise(*r, {}));
}

void metrics(std::string_view body, const char* ct, const char* ce, const DecodeLimits& l) {
  auto r = decode_metrics(body, ct, ce, l);
  auto again = decode_metrics(body, ct, ce, l);
  if (r.has_value() != again.has_value()) die("metrics decode differently twice");
  if (!r) return check_error(r.error());
  if (r->size() > l.max_records) die("more points than max_records");
  for (const MetricPoint& p : *r) {
    check_attributes(p.attributes, l);
    if (p.name.size() > l.max_name_bytes || p.unit.size() > l.max_name_bytes) die("a metric name over the limit");
  }
  check_summary(summarise({}, *r));
}

void traces(std::string_view body, const char* ct, const char* ce, const DecodeLimits& l) {
  auto r = decode_traces(body, ct, ce, l);
  auto again = decode_traces(body, ct, ce, l);
  if (r.has_value() != again.has_value() || (r && *r != *again)) die("traces decode differently twice");
  if (!r) return check_error(r.error());
  if (r->size() > l.max_records) die("more spans than max_records");
  for (const Span& s : *r) {
    check_attributes(s.attributes, l);
    if (s.name.size() > l.max_name_bytes) die("a span name over the limit");
    if (s.trace_id.size() != 0 && s.trace_id.size() != 32) die("a trace id of the wrong size");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint8_t sel = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  bool json_body = (sel & 4) != 0;
  const char* ct = json_body ? "application/json" : "application/x-protobuf";
  std::string body(rest);
  const char* ce = "";
  switch ((sel >> 3) & 3) {
    case 1: ce = "gzip"; break;
    case 2:
      ce = "gzip";
      body = km::meter::testing::encode_as("gzip", rest);
      break;
    case 3: ce = "deflate"; break;
    default: break;
  }
  DecodeLimits limits = (sel & 0x20) ? small_limits() : DecodeLimits{};
  bool protobuf = !json_body && *ce == '\0';
  switch (sel & 3) {
    case 0: logs(body, ct, ce, limits, protobuf); break;
    case 1: metrics(body, ct, ce, limits); break;
    case 2: traces(body, ct, ce, limits); break;
    default:
      logs(body, ct, ce, limits, protobuf);
      metrics(body, ct, ce, limits);
      traces(body, ct, ce, limits);
      break;
  }
  return 0;
}
