// Test and fuzz-seed support for km::otel (not linked into km's binaries): a protocol buffers
// wire encoder, and OTLP export requests described as plain data and encoded as protobuf or
// OTLP/JSON, the two encodings km decodes. Thread-safety: values; no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/otel/otlp.h"

namespace km::otel::testing {

class ProtoWriter {
 public:
  ProtoWriter& varint(uint32_t field, uint64_t v);
  ProtoWriter& fixed64(uint32_t field, uint64_t v);
  ProtoWriter& fixed32(uint32_t field, uint32_t v);
  ProtoWriter& dbl(uint32_t field, double v);
  ProtoWriter& bytes(uint32_t field, std::string_view v);  // strings, bytes and messages
  ProtoWriter& message(uint32_t field, const ProtoWriter& m) { return bytes(field, m.str()); }
  ProtoWriter& raw(std::string_view v);  // anything, unframed
  const std::string& str() const { return out_; }

  static std::string varint_bytes(uint64_t v);

 private:
  std::string out_;
};

// Attribute values as JSON: a string is a stringValue, true/false boolValue, an integer
// intValue, a float doubleValue, an array arrayValue, an object kvlistValue, except that
// {"$bytes": "<raw>"} is a bytesValue and null an empty AnyValue.
using TestAttributes = std::vector<std::pair<std::string, nlohmann::json>>;

struct TestLogRecord {
  uint64_t time = 0, observed = 0;
  int severity = 0;
  std::string severity_text;
  nlohmann::json body;  // null: absent
  std::string event_name;
  std::string trace_id, span_id;  // hex
  TestAttributes attributes;
};

struct TestPoint {
  uint64_t start = 0, time = 0;
  bool is_int = false;
  int64_t as_int = 0;
  double as_double = 0;  // gauges and sums; histograms and summaries: the sum
  uint64_t count = 0;
  TestAttributes attributes;
};

struct TestMetric {
  std::string name, description, unit;
  MetricKind kind = MetricKind::kSum;
  int temporality = kTemporalityDelta;
  bool monotonic = true;
  std::vector<TestPoint> points;
};

struct TestSpan {
  std::string name, trace_id, span_id, parent_span_id;  // hex ids
  int kind = 0;
  uint64_t start = 0, end = 0;
  TestAttributes attributes;
  int status_code = 0;
  std::string status_message;
};

struct TestScope {
  std::string name, version;
  TestAttributes attributes;
  std::vector<TestLogRecord> logs;
  std::vector<TestMetric> metrics;
  std::vector<TestSpan> spans;
};

struct TestResource {
  TestAttributes attributes;
  std::vector<TestScope> scopes;
};

struct TestRequest {
  std::vector<TestResource> resources;
};

// The request of one signal (the scopes' logs, metrics or spans) in one encoding. JSON follows
// the OTLP/JSON rules: 64-bit integers as strings, enums as integers, ids as hex.
std::string encode(const TestRequest& request, Signal signal, Encoding encoding);

// Claude Code 2.1's shapes, as captured from its exporter: a resource (service.name claude-code,
// service.version, os and host attributes, and `extra`), and an event: a log record of scope
// com.anthropic.claude_code.events with body "claude_code.<name>" and the attributes user.id,
// session.id, terminal.type, event.name, event.timestamp, event.sequence, prompt.id (if not
// empty), then `attrs`.
TestResource claude_code_resource(TestAttributes extra = {});
TestLogRecord claude_code_event(std::string_view name, uint64_t time_ns, std::string_view session, int64_t sequence,
                                std::string_view prompt_id, TestAttributes attrs);
// RFC 3339 UTC with milliseconds, as Claude Code writes event.timestamp.
std::string iso_timestamp(uint64_t time_ns);

// Protobuf encodings of the common messages, for tests that build requests by hand.
ProtoWriter any_value(const nlohmann::json& v);
ProtoWriter key_value(std::string_view key, const nlohmann::json& v);
nlohmann::json any_value_json(const nlohmann::json& v);

}  // namespace km::otel::testing
