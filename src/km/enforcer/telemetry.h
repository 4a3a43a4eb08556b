// The sandbox's agent telemetry (OTLP/HTTP), received by its enforcer and kept per sandbox.
//
// The receiver is the egress proxy's own listener: a request addressed to the enforcer itself
// (origin-form, or absolute-form naming the link address and proxy port) for POST /v1/logs,
// /v1/metrics or /v1/traces is an OTLP export, in protobuf or JSON, optionally gzip-compressed
// (km::otel decodes it, with its limits). Only the sandbox reaches that address.
//
// Storage: every accepted request's records are redacted (audit::Redactor: keys and values,
// prompts included) and appended as one gzip member of NDJSON to `<dir>/<signal>.jsonl.gz`
// (a multi-member gzip file any gzip reader reads whole); a request is written with one
// write(2), so a crash loses at most the request being written. Files are bounded: past
// kMaxFileBytes a signal's further records are refused (HTTP 507 to the exporter) and counted.
//
// The JSON form of records (record_json / log_from_json / metric_from_json) is what kmd reads
// back for `km otel`.
// Thread-safety: single-threaded (the enforcer's event loop); the readers are for kmd.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/audit/redact.h"
#include "km/base/result.h"
#include "km/otel/otlp.h"

namespace km::enforcer {

inline constexpr uint64_t kMaxTelemetryFileBytes = 256ull << 20;

// "/v1/logs" → kLogs, ...; nullopt for other paths (query ignored).
std::optional<otel::Signal> otlp_signal_for_path(std::string_view path);

class TelemetrySink {
 public:
  // `dir` exists and is writable; `redactor` outlives the sink.
  TelemetrySink(std::string dir, const audit::Redactor& redactor) : dir_(std::move(dir)), redactor_(redactor) {}

  // Decodes, redacts and stores one export request; returns the response for the exporter.
  otel::ExportResponse accept(otel::Signal signal, std::string_view body, std::string_view content_type,
                              std::string_view content_encoding);

  uint64_t records() const { return records_; }
  uint64_t refused() const { return refused_; }

 private:
  Status append(otel::Signal signal, const std::string& ndjson);
  std::string dir_;
  const audit::Redactor& redactor_;
  uint64_t records_ = 0, refused_ = 0;
};

std::string_view signal_file(otel::Signal s);  // "logs.jsonl.gz", ...

nlohmann::json record_json(const otel::LogRecord& r);
nlohmann::json record_json(const otel::MetricPoint& m);
nlohmann::json record_json(const otel::Span& s);
otel::LogRecord log_from_json(const nlohmann::json& j);
otel::MetricPoint metric_from_json(const nlohmann::json& j);

// Reads a signal's file (all gzip members), at most `max_bytes` decompressed; lines that do not
// parse are skipped and counted in `bad`.
Result<std::vector<nlohmann::json>> read_telemetry(const std::string& path, uint64_t max_bytes, size_t* bad = nullptr);

}  // namespace km::enforcer
