// OTLP's binary protobuf encoding, decoded field by field. Field numbers are those of
// opentelemetry-proto v1 (common/v1/common.proto, resource/v1/resource.proto, logs/v1/logs.proto,
// metrics/v1/metrics.proto, trace/v1/trace.proto, collector/*/v1/*_service.proto).
//
// Fields may come in any order and a singular message field may be split over several
// occurrences (protobuf merges them), so envelopes are read in two passes: first the resource
// or scope, then the records that need a copy of it.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "km/otel/otlp_internal.h"
#include "km/otel/protobuf_reader.h"

namespace km::otel::detail {

namespace {

// Calls f(field) for each field of the message, in order.
template <typename F>
Status for_each_field(std::string_view message, F&& f) {
  ProtoReader r(message);
  ProtoField field;
  for (;;) {
    auto more = r.next(field);
    if (!more) return fail(std::move(more).error());
    if (!*more) return ok();
    KM_TRY(f(field));
  }
}

int64_t nanos(const ProtoField& f) {
  // fixed64 nanoseconds since the epoch; past 2262 they no longer fit in int64.
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  return static_cast<int64_t>(f.scalar > kMax ? kMax : f.scalar);
}

Result<std::string_view> utf8_field(const ProtoField& f) {
  KM_TRY(expect_wire_type(f, WireType::kLen));
  if (!valid_utf8(f.bytes)) return invalid("field " + std::to_string(f.number) + " is not valid UTF-8");
  return f.bytes;
}

// A name: a string within max_name_bytes.
Result<std::string> name_field(const ProtoField& f, DecodeState& st) {
  KM_ASSIGN_OR_RETURN(std::string_view s, utf8_field(f));
  KM_TRY(st.check_name(s));
  KM_TRY(st.charge(s.size()));
  return std::string(s);
}

Result<std::string> value_field(const ProtoField& f, DecodeState& st) {
  KM_ASSIGN_OR_RETURN(std::string_view s, utf8_field(f));
  return st.value_string(s);
}

Result<nlohmann::json> any_value(std::string_view message, DecodeState& st, size_t depth);

// KeyValue { string key = 1; AnyValue value = 2; }
Result<Attribute> key_value(std::string_view message, DecodeState& st, size_t depth) {
  Attribute a;
  KM_TRY(st.charge(kAttributeCost));
  Status s = for_each_field(message, [&](const ProtoField& f) -> Status {
    if (f.number == 1) {
      KM_ASSIGN_OR_RETURN(a.key, name_field(f, st));
    } else if (f.number == 2) {
      KM_TRY(expect_wire_type(f, WireType::kLen));
      auto v = any_value(f.bytes, st, depth);
      if (!v) return wrapped(std::move(v).error(), "value");
      a.value = std::move(*v);
    }
    return ok();
  });
  if (!s) return fail(std::move(s).error());
  return a;
}

// AnyValue { oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3;
//   double double_value = 4; ArrayValue array_value = 5; KeyValueList kvlist_value = 6;
//   bytes bytes_value = 7; } }, ArrayValue { repeated AnyValue values = 1; },
// KeyValueList { repeated KeyValue values = 1; }
Result<nlohmann::json> any_value(std::string_view message, DecodeState& st, size_t depth) {
  if (depth > st.limits().max_depth) {
    return invalid("values nested deeper than " + std::to_string(st.limits().max_depth));
  }
  KM_TRY(st.charge(kValueCost));
  nlohmann::json v;  // null: an empty AnyValue
  Status s = for_each_field(message, [&](const ProtoField& f) -> Status {
    switch (f.number) {
      case 1: {
        KM_ASSIGN_OR_RETURN(std::string str, value_field(f, st));
        v = std::move(str);
        return ok();
      }
      case 2:
        KM_TRY(expect_wire_type(f, WireType::kVarint));
        v = f.scalar != 0;
        return ok();
      case 3:
        KM_TRY(expect_wire_type(f, WireType::kVarint));
        v = as_int64(f);
        return ok();
      case 4:
        KM_TRY(expect_wire_type(f, WireType::kFixed64));
        v = as_double(f);
        return ok();
      case 5: {
        KM_TRY(expect_wire_type(f, WireType::kLen));
        nlohmann::json arr = nlohmann::json::array();
        size_t i = 0;
        Status e = for_each_field(f.bytes, [&](const ProtoField& item) -> Status {
          if (item.number != 1) return ok();
          KM_TRY(expect_wire_type(item, WireType::kLen));
          auto child = any_value(item.bytes, st, depth + 1);
          if (!child) return wrapped(std::move(child).error(), at("array", i));
          ++i;
          arr.push_back(std::move(*child));
          return ok();
        });
        if (!e) return e;
        v = std::move(arr);
        return ok();
      }
      case 6: {
        KM_TRY(expect_wire_type(f, WireType::kLen));
        nlohmann::json obj = nlohmann::json::object();
        size_t i = 0;
        Status e = for_each_field(f.bytes, [&](const ProtoField& item) -> Status {
          if (item.number != 1) return ok();
          KM_TRY(expect_wire_type(item, WireType::kLen));
          auto kv = key_value(item.bytes, st, depth + 1);
          if (!kv) return wrapped(std::move(kv).error(), at("kvlist", i));
          ++i;
          obj[kv->key] = std::move(kv->value);
          return ok();
        });
        if (!e) return e;
        v = std::move(obj);
        return ok();
      }
      case 7: {
        KM_TRY(expect_wire_type(f, WireType::kLen));
        KM_ASSIGN_OR_RETURN(std::string b64, st.value_bytes(f.bytes));
        v = std::move(b64);
        return ok();
      }
      default: return ok();
    }
  });
  if (!s) return fail(std::move(s).error());
  return v;
}

Status append_attribute(const ProtoField& f, DecodeState& st, Attributes& out, std::string_view what) {
  KM_TRY(expect_wire_type(f, WireType::kLen));
  auto kv = key_value(f.bytes, st, 0);
  if (!kv) return wrapped(std::move(kv).error(), at(what, out.size()));
  out.push_back(std::move(*kv));
  return ok();
}

// What every record of one scope shares.
struct Envelope {
  Attributes resource;
  std::string scope_name, scope_version;
  Attributes scope_attributes;
  size_t copy_cost = 0;  // charged for every record that copies the above
};

// The message names of one signal, for error context.
struct Names {
  std::string_view resource_x, scope_x, items;
};

// Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }
Status resource(std::string_view message, DecodeState& st, Attributes& out) {
  return for_each_field(message, [&](const ProtoField& f) -> Status {
    if (f.number == 1) return append_attribute(f, st, out, "attributes");
    return ok();
  });
}

// InstrumentationScope { string name = 1; string version = 2; repeated KeyValue attributes = 3;
//   uint32 dropped_attributes_count = 4; }
Status scope(std::string_view message, DecodeState& st, Envelope& env) {
  return for_each_field(message, [&](const ProtoField& f) -> Status {
    switch (f.number) {
      case 1: {
        auto n = name_field(f, st);
        if (!n) return wrapped(std::move(n).error(), "name");
        env.scope_name = std::move(*n);
        return ok();
      }
      case 2: {
        auto n = name_field(f, st);
        if (!n) return wrapped(std::move(n).error(), "version");
        env.scope_version = std::move(*n);
        return ok();
      }
      case 3: return append_attribute(f, st, env.scope_attributes, "attributes");
      default: return ok();
    }
  });
}

// The envelopes every export request shares:
//   Export*ServiceRequest { repeated Resource* resource_* = 1; }
//   Resource* { Resource resource = 1; repeated Scope* scope_* = 2; string schema_url = 3; }
//   Scope* { InstrumentationScope scope = 1; repeated <item> items = 2; string schema_url = 3; }
// `item(bytes, envelope)` decodes one item.
template <typename Item>
Status envelopes(std::string_view request, DecodeState& st, const Names& names, Item&& item) {
  size_t ri = 0;
  return for_each_field(request, [&](const ProtoField& rf) -> Status {
    if (rf.number != 1) return ok();
    std::string context = at(names.resource_x, ri++);
    KM_TRY(expect_wire_type(rf, WireType::kLen));
    Envelope env;
    std::vector<std::string_view> scopes;
    Status s = for_each_field(rf.bytes, [&](const ProtoField& f) -> Status {
      if (f.number == 1) {
        KM_TRY(expect_wire_type(f, WireType::kLen));
        Status r = resource(f.bytes, st, env.resource);
        if (!r) return wrapped(std::move(r).error(), "resource");
      } else if (f.number == 2) {
        KM_TRY(expect_wire_type(f, WireType::kLen));
        scopes.push_back(f.bytes);
      }
      return ok();
    });
    if (!s) return wrapped(std::move(s).error(), context);
    size_t resource_cost = attributes_cost(env.resource);
    for (size_t si = 0; si < scopes.size(); ++si) {
      Envelope scoped;
      scoped.resource = env.resource;
      std::vector<std::string_view> items;
      Status e = for_each_field(scopes[si], [&](const ProtoField& f) -> Status {
        if (f.number == 1) {
          KM_TRY(expect_wire_type(f, WireType::kLen));
          Status r = scope(f.bytes, st, scoped);
          if (!r) return wrapped(std::move(r).error(), "scope");
        } else if (f.number == 2) {
          KM_TRY(expect_wire_type(f, WireType::kLen));
          items.push_back(f.bytes);
        }
        return ok();
      });
      if (e) {
        scoped.copy_cost = kRecordCost + resource_cost + attributes_cost(scoped.scope_attributes) +
                           scoped.scope_name.size() + scoped.scope_version.size();
        for (size_t ii = 0; ii < items.size() && e; ++ii) {
          e = item(items[ii], scoped);
          if (!e) e = wrapped(std::move(e).error(), at(names.items, ii));
        }
      }
      if (!e) {
        Error err = std::move(e).error();
        err.wrap(at(names.scope_x, si));
        return wrapped(std::move(err), context);
      }
    }
    return ok();
  });
}

// LogRecord { fixed64 time_unix_nano = 1; SeverityNumber severity_number = 2;
//   string severity_text = 3; AnyValue body = 5; repeated KeyValue attributes = 6;
//   uint32 dropped_attributes_count = 7; fixed32 flags = 8; bytes trace_id = 9;
//   bytes span_id = 10; fixed64 observed_time_unix_nano = 11; string event_name = 12; }
Status log_record(std::string_view message, const Envelope& env, DecodeState& st, std::vector<LogRecord>& out) {
  KM_TRY(st.add_record());
  KM_TRY(st.charge(env.copy_cost));
  st.truncated = false;
  LogRecord rec;
  Status fields = for_each_field(message, [&](const ProtoField& f) -> Status {
    switch (f.number) {
      case 1:
        KM_TRY(expect_wire_type(f, WireType::kFixed64));
        rec.time_unix_nano = nanos(f);
        return ok();
      case 2:
        KM_TRY(expect_wire_type(f, WireType::kVarint));
        rec.severity = as_int32(f);
        return ok();
      case 3: {
        auto n = name_field(f, st);
        if (!n) return wrapped(std::move(n).error(), "severity_text");
        rec.severity_text = std::move(*n);
        return ok();
      }
      case 5: {
        KM_TRY(expect_wire_type(f, WireType::kLen));
        auto v = any_value(f.bytes, st, 0);
        if (!v) return wrapped(std::move(v).error(), "body");
        rec.body = std::move(*v);
        return ok();
      }
      case 6: return append_attribute(f, st, rec.attributes, "attributes");
      case 9:
      case 10: {
        KM_TRY(expect_wire_type(f, WireType::kLen));
        auto id = id_hex(f.bytes, f.number == 9 ? 16 : 8);
        if (!id) return wrapped(std::move(id).error(), f.number == 9 ? "trace_id" : "span_id");
        (f.number == 9 ? rec.trace_id : rec.span_id) = std::move(*id);
        return ok();
      }
      case 11:
        KM_TRY(expect_wire_type(f, WireType::kFixed64));
        rec.observed_unix_nano = nanos(f);
        return ok();
      case 12: {
        auto n = name_field(f, st);
        if (!n) return wrapped(std::move(n).error(), "event_name");
        rec.event_name = std::move(*n);
        return ok();
      }
      default: return ok();
    }
  });
  if (!fields) return fields;
  rec.resource = env.resource;
  rec.scope_name = env.scope_name;
  rec.scope_version = env.scope_version;
  rec.scope_attributes = env.scope_attributes;
  rec.truncated = st.truncated;
  out.push_back(std::move(rec));
  return ok();
}

// The data point messages of metrics.proto, by the fields km keeps:
//   NumberDataPoint { repeated KeyValue attributes = 7; fixed64 start_time_unix_nano = 2;
//     fixed64 time_unix_nano = 3; double as_double = 4; sfixed64 as_int = 6; ... }
//   HistogramDataPoint { attributes = 9; start = 2; time = 3; fixed64 count = 4; double sum = 5; }
//   ExponentialHistogramDataPoint { attributes = 1; start = 2; time = 3; count = 4; sum = 5; }
//   SummaryDataPoint { attributes = 7; start = 2; time = 3; count = 4; double sum = 5; }
Status data_point(std::string_view message, MetricPoint point, const Envelope& env, DecodeState& st,
                  std::vector<MetricPoint>& out) {
  KM_TRY(st.add_record());
  KM_TRY(st.charge(env.copy_cost + point.name.size() + point.description.size() + point.unit.size()));
  st.truncated = false;
  uint32_t attributes_field = 7;
  if (point.kind == MetricKind::kHistogram) attributes_field = 9;
  if (point.kind == MetricKind::kExponentialHistogram) attributes_field = 1;
  bool number = point.kind == MetricKind::kGauge || point.kind == MetricKind::kSum;
  Status fields = for_each_field(message, [&](const ProtoField& f) -> Status {
    if (f.number == attributes_field) return append_attribute(f, st, point.attributes, "attributes");
    switch (f.number) {
      case 2:
        KM_TRY(expect_wire_type(f, WireType::kFixed64));
        point.start_unix_nano = nanos(f);
        break;
      case 3:
        KM_TRY(expect_wire_type(f, WireType::kFixed64));
        point.time_unix_nano = nanos(f);
        break;
      case 4:
        KM_TRY(expect_wire_type(f, WireType::kFixed64));
        if (number) {
          point.is_int = false;
          point.as_double = as_double(f);
        } else {
          point.count = f.scalar;
        }
        break;
      case 5:
        if (!number) {
          KM_TRY(expect_wire_type(f, WireType::kFixed64));
          point.as_double = as_double(f);
        }
        break;
      case 6:
        if (number) {
          KM_TRY(expect_wire_type(f, WireType::kFixed64));
          point.is_int = true;
          point.as_int = as_int64(f);
        }
        break;
      default: break;
    }
    return ok();
  });
  if (!fields) return fields;
  point.resource = env.resource;
  point.scope_name = env.scope_name;
  point.scope_version = env.scope_version;
  point.truncated = point.truncated || st.truncated;
  out.push_back(std::move(point));
  return ok();
}

// Metric { string name = 1; string description = 2; string unit = 3; oneof data {
//   Gauge gauge = 5; Sum sum = 7; Histogram histogram = 9;
//   ExponentialHistogram exponential_histogram = 10; Summary summary = 11; } ... }
// Gauge { repeated NumberDataPoint data_points = 1; }
// Sum { data_points = 1; AggregationTemporality aggregation_temporality = 2; bool is_monotonic = 3; }
// Histogram, ExponentialHistogram { data_points = 1; aggregation_temporality = 2; }
// Summary { data_points = 1; }
Status metric(std::string_view message, const Envelope& env, DecodeState& st, std::vector<MetricPoint>& out) {
  MetricPoint proto;  // what every point of this metric shares
  std::string_view data;
  bool has_data = false;
  st.truncated = false;
  Status header = for_each_field(message, [&](const ProtoField& f) -> Status {
    switch (f.number) {
      case 1: {
        auto n = name_field(f, st);
        if (!n) return wrapped(std::move(n).error(), "name");
        proto.name = std::move(*n);
        return ok();
      }
      case 2: {
        auto d = value_field(f, st);
        if (!d) return wrapped(std::move(d).error(), "description");
        proto.description = std::move(*d);
        return ok();
      }
      case 3: {
        auto n = name_field(f, st);
        if (!n) return wrapped(std::move(n).error(), "unit");
        proto.unit = std::move(*n);
        return ok();
      }
      case 5:
      case 7:
      case 9:
      case 10:
      case 11:
        KM_TRY(expect_wire_type(f, WireType::kLen));
        proto.kind = f.number == 5    ? MetricKind::kGauge
                     : f.number == 7  ? MetricKind::kSum
                     : f.number == 9  ? MetricKind::kHistogram
                     : f.number == 10 ? MetricKind::kExponentialHistogram
                                      : MetricKind::kSummary;
        data = f.bytes;
        has_data = true;
        return ok();
      default: return ok();
    }
  });
  if (!header) return header;
  proto.truncated = st.truncated;
  if (!has_data) return ok();  // a metric with no data carries no points
  std::vector<std::string_view> points;
  Status fields = for_each_field(data, [&](const ProtoField& f) -> Status {
    if (f.number == 1) {
      KM_TRY(expect_wire_type(f, WireType::kLen));
      points.push_back(f.bytes);
    } else if (f.number == 2 && proto.kind != MetricKind::kGauge && proto.kind != MetricKind::kSummary) {
      KM_TRY(expect_wire_type(f, WireType::kVarint));
      proto.temporality = as_int32(f);
    } else if (f.number == 3 && proto.kind == MetricKind::kSum) {
      KM_TRY(expect_wire_type(f, WireType::kVarint));
      proto.monotonic = f.scalar != 0;
    }
    return ok();
  });
  if (!fields) return fields;
  for (size_t i = 0; i < points.size(); ++i) {
    Status s = data_point(points[i], proto, env, st, out);
    if (!s) return wrapped(std::move(s).error(), at("data_points", i));
  }
  return ok();
}

// Span { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;
//   string name = 5; SpanKind kind = 6; fixed64 start_time_unix_nano = 7;
//   fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9; ... Status status = 15; }
// Status { string message = 2; StatusCode code = 3; }
Status span(std::string_view message, const Envelope& env, DecodeState& st, std::vector<Span>& out) {
  KM_TRY(st.add_record());
  KM_TRY(st.charge(env.copy_cost));
  st.truncated = false;
  Span sp;
  Status fields = for_each_field(message, [&](const ProtoField& f) -> Status {
    switch (f.number) {
      case 1:
      case 2:
      case 4: {
        KM_TRY(expect_wire_type(f, WireType::kLen));
        std::string_view what = f.number == 1 ? "trace_id" : f.number == 2 ? "span_id" : "parent_span_id";
        auto id = id_hex(f.bytes, f.number == 1 ? 16 : 8);
        if (!id) return wrapped(std::move(id).error(), what);
        (f.number == 1 ? sp.trace_id : f.number == 2 ? sp.span_id : sp.parent_span_id) = std::move(*id);
        return ok();
      }
      case 5: {
        auto n = name_field(f, st);
        if (!n) return wrapped(std::move(n).error(), "name");
        sp.name = std::move(*n);
        return ok();
      }
      case 6:
        KM_TRY(expect_wire_type(f, WireType::kVarint));
        sp.kind = as_int32(f);
        return ok();
      case 7:
      case 8:
        KM_TRY(expect_wire_type(f, WireType::kFixed64));
        (f.number == 7 ? sp.start_unix_nano : sp.end_unix_nano) = nanos(f);
        return ok();
      case 9: return append_attribute(f, st, sp.attributes, "attributes");
      case 15: {
        KM_TRY(expect_wire_type(f, WireType::kLen));
        Status s = for_each_field(f.bytes, [&](const ProtoField& sf) -> Status {
          if (sf.number == 2) {
            KM_ASSIGN_OR_RETURN(sp.status_message, value_field(sf, st));
          } else if (sf.number == 3) {
            KM_TRY(expect_wire_type(sf, WireType::kVarint));
            sp.status_code = as_int32(sf);
          }
          return ok();
        });
        if (!s) return wrapped(std::move(s).error(), "status");
        return ok();
      }
      default: return ok();
    }
  });
  if (!fields) return fields;
  sp.resource = env.resource;
  sp.scope_name = env.scope_name;
  sp.scope_version = env.scope_version;
  sp.truncated = st.truncated;
  out.push_back(std::move(sp));
  return ok();
}

}  // namespace

Status decode_logs_protobuf(std::string_view body, DecodeState& st, std::vector<LogRecord>& out) {
  return envelopes(body, st, {"resource_logs", "scope_logs", "log_records"},
                   [&](std::string_view item, const Envelope& env) { return log_record(item, env, st, out); });
}

Status decode_metrics_protobuf(std::string_view body, DecodeState& st, std::vector<MetricPoint>& out) {
  return envelopes(body, st, {"resource_metrics", "scope_metrics", "metrics"},
                   [&](std::string_view item, const Envelope& env) { return metric(item, env, st, out); });
}

Status decode_traces_protobuf(std::string_view body, DecodeState& st, std::vector<Span>& out) {
  return envelopes(body, st, {"resource_spans", "scope_spans", "spans"},
                   [&](std::string_view item, const Envelope& env) { return span(item, env, st, out); });
}

}  // namespace km::otel::detail
