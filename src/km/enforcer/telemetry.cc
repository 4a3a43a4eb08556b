#include "km/enforcer/telemetry.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>

#include "km/base/unique_fd.h"

namespace km::enforcer {

using Json = nlohmann::json;

namespace {

Json attrs_json(const otel::Attributes& a) {
  Json out = Json::object();
  for (const auto& at : a) out[at.key] = at.value;
  return out;
}

otel::Attributes attrs_from(const Json& j) {
  otel::Attributes out;
  if (!j.is_object()) return out;
  for (auto it = j.begin(); it != j.end(); ++it) out.push_back({it.key(), it.value()});
  return out;
}

int64_t int_of(const Json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

std::string str_of(const Json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// One gzip member holding `text`.
Result<std::string> gzip_member(const std::string& text) {
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return fail(ErrorCode::kInternal, "deflateInit2 failed");
  }
  std::string out(deflateBound(&z, static_cast<uLong>(text.size())) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&z, Z_FINISH);
  size_t n = out.size() - z.avail_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return fail(ErrorCode::kInternal, "gzip failed");
  out.resize(n);
  return out;
}

}  // namespace

std::optional<otel::Signal> otlp_signal_for_path(std::string_view path) {
  path = path.substr(0, path.find('?'));
  if (path == "/v1/logs") return otel::Signal::kLogs;
  if (path == "/v1/metrics") return otel::Signal::kMetrics;
  if (path == "/v1/traces") return otel::Signal::kTraces;
  return std::nullopt;
}

std::string_view signal_file(otel::Signal s) {
  switch (s) {
    case otel::Signal::kLogs:
      return "logs.jsonl.gz";
    case otel::Signal::kMetrics:
      return "metrics.jsonl.gz";
    case otel::Signal::kTraces:
      return "traces.jsonl.gz";
  }
  return "logs.jsonl.gz";
}

Json record_json(const otel::LogRecord& r) {
  Json j{{"time", r.time_unix_nano}, {"observed", r.observed_unix_nano}, {"severity", r.severity},
         {"body", r.body}, {"attributes", attrs_json(r.attributes)}, {"resource", attrs_json(r.resource)},
         {"scope", r.scope_name}};
  if (!r.severity_text.empty()) j["severity_text"] = r.severity_text;
  if (!r.event_name.empty()) j["event_name"] = r.event_name;
  if (!r.trace_id.empty()) j["trace_id"] = r.trace_id;
  if (!r.span_id.empty()) j["span_id"] = r.span_id;
  if (r.truncated) j["truncated"] = true;
  return j;
}

Json record_json(const otel::MetricPoint& m) {
  Json j{{"name", m.name}, {"kind", otel::metric_kind_name(m.kind)}, {"time", m.time_unix_nano},
         {"start", m.start_unix_nano}, {"attributes", attrs_json(m.attributes)}, {"resource", attrs_json(m.resource)},
         {"scope", m.scope_name}};
  if (!m.unit.empty()) j["unit"] = m.unit;
  if (m.monotonic) j["monotonic"] = true;
  if (m.temporality) j["temporality"] = m.temporality;
  if (m.is_int) j["int"] = m.as_int;
  else j["double"] = m.as_double;
  if (m.count) j["count"] = m.count;
  return j;
}

Json record_json(const otel::Span& s) {
  return Json{{"name", s.name}, {"trace_id", s.trace_id}, {"span_id", s.span_id}, {"parent", s.parent_span_id},
              {"start", s.start_unix_nano}, {"end", s.end_unix_nano}, {"status", s.status_code},
              {"attributes", attrs_json(s.attributes)}, {"resource", attrs_json(s.resource)}, {"scope", s.scope_name}};
}

otel::LogRecord log_from_json(const Json& j) {
  otel::LogRecord r;
  r.time_unix_nano = int_of(j, "time");
  r.observed_unix_nano = int_of(j, "observed");
  r.severity = static_cast<int>(int_of(j, "severity"));
  r.severity_text = str_of(j, "severity_text");
  r.body = j.contains("body") ? j["body"] : Json();
  r.event_name = str_of(j, "event_name");
  r.trace_id = str_of(j, "trace_id");
  r.span_id = str_of(j, "span_id");
  r.attributes = attrs_from(j.value("attributes", Json::object()));
  r.resource = attrs_from(j.value("resource", Json::object()));
  r.scope_name = str_of(j, "scope");
  r.truncated = j.value("truncated", false);
  return r;
}

otel::MetricPoint metric_from_json(const Json& j) {
  otel::MetricPoint m;
  m.name = str_of(j, "name");
  std::string kind = str_of(j, "kind");
  for (auto k : {otel::MetricKind::kGauge, otel::MetricKind::kSum, otel::MetricKind::kHistogram,
                 otel::MetricKind::kExponentialHistogram, otel::MetricKind::kSummary}) {
    if (otel::metric_kind_name(k) == kind) m.kind = k;
  }
  m.unit = str_of(j, "unit");
  m.monotonic = j.value("monotonic", false);
  m.temporality = static_cast<int>(int_of(j, "temporality"));
  m.time_unix_nano = int_of(j, "time");
  m.start_unix_nano = int_of(j, "start");
  if (j.contains("int") && j["int"].is_number_integer()) {
    m.is_int = true;
    m.as_int = j["int"].get<int64_t>();
  } else if (j.contains("double") && j["double"].is_number()) {
    m.as_double = j["double"].get<double>();
  }
  if (j.contains("count") && j["count"].is_number_unsigned()) m.count = j["count"].get<uint64_t>();
  m.attributes = attrs_from(j.value("attributes", Json::object()));
  m.resource = attrs_from(j.value("resource", Json::object()));
  m.scope_name = str_of(j, "scope");
  return m;
}

Status TelemetrySink::append(otel::Signal signal, const std::string& ndjson) {
  std::string path = dir_ + "/" + std::string(signal_file(signal));
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return fail(Error::from_errno("opening " + path));
  struct stat st {};
  if (::fstat(fd.get(), &st) == 0 && static_cast<uint64_t>(st.st_size) >= kMaxTelemetryFileBytes) {
    return fail(ErrorCode::kResourceExhausted, "the sandbox's " + std::string(signal_file(signal)) + " is full");
  }
  KM_ASSIGN_OR_RETURN(std::string member, gzip_member(ndjson));
  ssize_t n = ::write(fd.get(), member.data(), member.size());
  if (n != static_cast<ssize_t>(member.size())) return fail(Error::from_errno("writing " + path));
  return ok();
}

otel::ExportResponse TelemetrySink::accept(otel::Signal signal, std::string_view body, std::string_view content_type,
                                           std::string_view content_encoding) {
  otel::Encoding reply = otel::response_encoding(content_type);
  std::string ndjson;
  size_t n = 0;
  auto add = [&](const Json& record) {
    ndjson += redactor_.redact_json(record).dump(-1, ' ', false, Json::error_handler_t::replace);
    ndjson += '\n';
    ++n;
  };
  switch (signal) {
    case otel::Signal::kLogs: {
      auto logs = otel::decode_logs(body, content_type, content_encoding);
      if (!logs) return otel::error_response(reply, logs.error());
      for (const auto& r : *logs) add(record_json(r));
      break;
    }
    case otel::Signal::kMetrics: {
      auto metrics = otel::decode_metrics(body, content_type, content_encoding);
      if (!metrics) return otel::error_response(reply, metrics.error());
      for (const auto& m : *metrics) add(record_json(m));
      break;
    }
    case otel::Signal::kTraces: {
      auto spans = otel::decode_traces(body, content_type, content_encoding);
      if (!spans) return otel::error_response(reply, spans.error());
      for (const auto& s : *spans) add(record_json(s));
      break;
    }
  }
  if (n > 0) {
    if (Status st = append(signal, ndjson); !st) {
      refused_ += n;
      otel::ExportResponse r = otel::error_response(reply, st.error());
      if (st.error().code() == ErrorCode::kResourceExhausted) r.status = 507;
      return r;
    }
  }
  records_ += n;
  return otel::success_response(reply);
}

Result<std::vector<Json>> read_telemetry(const std::string& path, uint64_t max_bytes, size_t* bad) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  std::vector<Json> out;
  if (!fd) {
    if (errno == ENOENT) return out;
    return fail(Error::from_errno("opening " + path));
  }
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK) return fail(ErrorCode::kInternal, "inflateInit2 failed");
  std::string text, in(1 << 16, '\0'), buf(1 << 16, '\0');
  uint64_t total = 0;
  bool ok_stream = true;
  for (;;) {
    ssize_t r = ::read(fd.get(), in.data(), in.size());
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    z.next_in = reinterpret_cast<Bytef*>(in.data());
    z.avail_in = static_cast<uInt>(r);
    while (z.avail_in > 0 && ok_stream) {
      z.next_out = reinterpret_cast<Bytef*>(buf.data());
      z.avail_out = static_cast<uInt>(buf.size());
      int rc = inflate(&z, Z_NO_FLUSH);
      size_t got = buf.size() - z.avail_out;
      total += got;
      if (total > max_bytes) {
        ok_stream = false;
        break;
      }
      text.append(buf.data(), got);
      if (rc == Z_STREAM_END) {
        inflateReset(&z);  // the next gzip member
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        ok_stream = false;  // a torn last member (a crash mid-write): keep what came before
      }
    }
    if (!ok_stream) break;
  }
  inflateEnd(&z);
  size_t start = 0, skipped = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) break;  // a partial last line
    auto j = Json::parse(std::string_view(text).substr(start, nl - start), nullptr, false);
    if (j.is_discarded()) ++skipped;
    else out.push_back(std::move(j));
    start = nl + 1;
  }
  if (bad) *bad = skipped;
  return out;
}

}  // namespace km::enforcer
