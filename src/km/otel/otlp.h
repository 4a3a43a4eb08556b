// OTLP/HTTP export requests (https://opentelemetry.io/docs/specs/otlp/#otlphttp) decoded into
// flat, typed records for km to store and summarise: the body of a POST to /v1/logs,
// /v1/metrics or /v1/traces, in either encoding
//   application/x-protobuf   the binary protobuf encoding of Export{Logs,Metrics,Trace}ServiceRequest
//                            (opentelemetry-proto collector/*/v1), read by a hand-written decoder
//   application/json         OTLP/JSON: proto3 JSON with lowerCamelCase keys, 64-bit integers as
//                            strings or numbers, enums as integers, trace and span ids as hex
// and optionally compressed (Content-Encoding: gzip, or deflate, br, zstd).
//
// Each record is self-contained: it carries copies of its resource's attributes and its
// instrumentation scope, so storage can keep records one per line. Attribute values
// (AnyValue) become JSON: string, bool, integer, double, array (ArrayValue), object
// (KeyValueList; a repeated key keeps its last value), bytes as a base64 string, and null for
// an empty AnyValue.
//
// The body comes from inside a sandbox and is hostile until decoded. DecodeLimits bound it:
// the body's size after decompression, the number of records, the nesting of AnyValue arrays
// and lists, the length of names (errors) and of string values (cut, and the record marked),
// and the memory the decoded result may take, counting the resource copies, and for JSON the
// parsed document. Exceeding a limit is an error, never an abort or an unbounded allocation.
// Errors: kResourceExhausted when the body is larger than max_body_bytes (HTTP 413);
// kFailedPrecondition for a Content-Type or Content-Encoding km does not decode (HTTP 415);
// kInvalidArgument for everything else wrong with the request (HTTP 400), with the path to the
// offending field ("resource_logs[0]: scope_logs[2]: log_records[7]: attributes[1]: ..."),
// never its content.
// Thread-safety: pure functions; no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/base/result.h"

namespace km::otel {

struct Attribute {
  std::string key;
  nlohmann::json value;
  bool operator==(const Attribute&) const = default;
};
using Attributes = std::vector<Attribute>;

// The value of the first attribute named `key`, or nullptr.
const nlohmann::json* find_attribute(const Attributes& attrs, std::string_view key);
// The attribute's value if it is a string, else "".
std::string string_attribute(const Attributes& attrs, std::string_view key);

struct LogRecord {
  int64_t time_unix_nano = 0;      // 0: unknown
  int64_t observed_unix_nano = 0;  // when the SDK saw it
  int severity = 0;                // SeverityNumber, 0 unspecified .. 24 FATAL4
  std::string severity_text;
  nlohmann::json body;             // AnyValue; null when absent
  std::string event_name;          // LogRecord.event_name (OTLP 1.5); "" when absent
  std::string trace_id, span_id;   // lowercase hex; "" when absent
  Attributes attributes;
  Attributes resource;             // the resource's attributes, copied into each record
  std::string scope_name, scope_version;
  Attributes scope_attributes;
  bool truncated = false;          // a string value was cut at DecodeLimits::max_string_bytes
  bool operator==(const LogRecord&) const = default;
};

enum class MetricKind { kGauge, kSum, kHistogram, kExponentialHistogram, kSummary };
std::string_view metric_kind_name(MetricKind kind);  // "gauge", "sum", "histogram", ...

// AggregationTemporality.
inline constexpr int kTemporalityUnspecified = 0;
inline constexpr int kTemporalityDelta = 1;
inline constexpr int kTemporalityCumulative = 2;

// One data point of one metric. Gauges and sums carry their value (as_int when the point was
// an integer, else as_double); histograms and summaries their count and sum (in as_double).
struct MetricPoint {
  std::string name, description, unit;
  MetricKind kind = MetricKind::kGauge;
  bool monotonic = false;        // sums only
  int temporality = kTemporalityUnspecified;  // sums and histograms
  int64_t start_unix_nano = 0, time_unix_nano = 0;
  bool is_int = false;
  int64_t as_int = 0;
  double as_double = 0;
  uint64_t count = 0;            // histograms and summaries
  Attributes attributes;
  Attributes resource;
  std::string scope_name, scope_version;
  bool truncated = false;

  double value() const { return is_int ? static_cast<double>(as_int) : as_double; }
  bool operator==(const MetricPoint&) const = default;
};

// A span, decoded minimally (links, events and trace state are skipped).
struct Span {
  std::string name;
  std::string trace_id, span_id, parent_span_id;  // lowercase hex
  int kind = 0;                                   // SpanKind
  int64_t start_unix_nano = 0, end_unix_nano = 0;
  int status_code = 0;                            // 0 unset, 1 ok, 2 error
  std::string status_message;
  Attributes attributes;
  Attributes resource;
  std::string scope_name, scope_version;
  bool truncated = false;
  bool operator==(const Span&) const = default;
};

struct DecodeLimits {
  // The request body, before and after decompression. The OTLP specification recommends
  // 20 MiB for servers, and clients limit themselves to the same by default.
  size_t max_body_bytes = 20u << 20;
  // Log records, data points or spans in one request (an SDK batches 512 by default).
  size_t max_records = 65536;
  // Nesting of AnyValue arrays and key-value lists inside one value.
  size_t max_depth = 32;
  // Keys, metric names and units, scope names, event names, span names, severity text.
  size_t max_name_bytes = 4096;
  // A string or bytes value longer than this is cut (on a UTF-8 boundary) and its record
  // marked truncated: one huge prompt should not cost the batch it came in.
  size_t max_string_bytes = 1u << 20;
  // Estimated memory for the decoded records (each copy of a resource counted) plus, for JSON,
  // the parsed document.
  size_t max_decoded_bytes = 64u << 20;
};

enum class Encoding { kProtobuf, kJson };
enum class Signal { kLogs, kMetrics, kTraces };

// The encoding a Content-Type names: application/x-protobuf (or application/protobuf) and
// application/json, case-insensitive, parameters ignored. Anything else is an error (HTTP 415).
Result<Encoding> encoding_for(std::string_view content_type);

// Decoders for the three export requests. `content_encoding` is the Content-Encoding header
// ("" for none). An empty request (no records) decodes to an empty vector.
Result<std::vector<LogRecord>> decode_logs(std::string_view body, std::string_view content_type,
                                           std::string_view content_encoding, const DecodeLimits& limits = {});
Result<std::vector<MetricPoint>> decode_metrics(std::string_view body, std::string_view content_type,
                                                std::string_view content_encoding,
                                                const DecodeLimits& limits = {});
Result<std::vector<Span>> decode_traces(std::string_view body, std::string_view content_type,
                                        std::string_view content_encoding, const DecodeLimits& limits = {});

// An HTTP response for the receiver to send.
struct ExportResponse {
  int status = 200;
  std::string content_type;
  std::string body;
};

// The response to an accepted request: HTTP 200 with an empty Export{Logs,Metrics,Trace}-
// ServiceResponse (partial_success unset) in the request's encoding.
ExportResponse success_response(Encoding encoding);
// The response to a rejected request: a google.rpc.Status (code, message) in the request's
// encoding (protobuf when the Content-Type was not understood, as `response_encoding` says).
// HTTP 413 for kResourceExhausted (the body is too large), 415 for an unsupported Content-Type
// or Content-Encoding (kFailedPrecondition from the decoders), 503 for kUnavailable (the
// client retries), else 400 (the client drops the data).
ExportResponse error_response(Encoding encoding, const Error& error);
// JSON if `content_type` names JSON, else protobuf.
Encoding response_encoding(std::string_view content_type);

}  // namespace km::otel
