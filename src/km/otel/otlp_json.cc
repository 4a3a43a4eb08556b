// OTLP/JSON (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding): the proto3 JSON
// mapping of the same messages with lowerCamelCase keys, where 64-bit integers may be strings
// or numbers, doubles may also be "NaN", "Infinity" or "-Infinity", enums are integers, trace
// and span ids are hex (case-insensitive) and other bytes base64. Unknown keys are ignored and
// null means absent, as the mapping says.
//
// The document is parsed by nlohmann::json with its nesting checked first and every value
// charged to the decode budget as it is built, then walked.
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/meter/base64.h"
#include "km/meter/json_depth.h"
#include "km/otel/otlp_internal.h"

namespace km::otel::detail {

namespace {

using Json = nlohmann::json;

// The member `key` of an object; nullptr when absent or null.
const Json* member(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

Unexpected<Error> wrong_type(std::string_view key, std::string_view want) {
  return fail(Error(ErrorCode::kInvalidArgument, "expected " + std::string(want)).wrap(key));
}

Result<const Json*> object_member(const Json& obj, const char* key) {
  const Json* v = member(obj, key);
  if (v && !v->is_object()) return wrong_type(key, "an object");
  return v;
}

// An array member; an empty array when absent.
Result<const Json*> array_member(const Json& obj, const char* key) {
  static const Json kEmpty = Json::array();
  const Json* v = member(obj, key);
  if (!v) return &kEmpty;
  if (!v->is_array()) return wrong_type(key, "an array");
  return v;
}

Result<std::string_view> string_member(const Json& obj, const char* key) {
  const Json* v = member(obj, key);
  if (!v) return std::string_view();
  if (!v->is_string()) return wrong_type(key, "a string");
  return std::string_view(v->get_ref<const std::string&>());
}

template <typename T>
std::optional<T> parse_integer(std::string_view s) {
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// An integer field of any width: a JSON integer, a float with an integral value, or a decimal
// string, within T's range.
template <typename T>
Result<T> integer_value(const Json& v, std::string_view key) {
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    if (std::in_range<T>(u)) return static_cast<T>(u);
  } else if (v.is_number_integer()) {
    auto i = v.get<int64_t>();
    if (std::in_range<T>(i)) return static_cast<T>(i);
  } else if (v.is_number_float()) {
    double d = v.get<double>();
    // Powers of two are exact doubles, so these bounds keep the conversion defined.
    double top = std::ldexp(1.0, std::numeric_limits<T>::digits);
    double bottom = std::numeric_limits<T>::is_signed ? -top : 0.0;
    if (std::isfinite(d) && d == std::floor(d) && d >= bottom && d < top) return static_cast<T>(d);
  } else if (v.is_string()) {
    if (auto p = parse_integer<T>(v.get_ref<const std::string&>())) return *p;
  }
  return wrong_type(key, "an integer");
}

template <typename T>
Result<T> integer_member(const Json& obj, const char* key) {
  const Json* v = member(obj, key);
  if (!v) return T{0};
  return integer_value<T>(*v, key);
}

Result<int64_t> nanos_member(const Json& obj, const char* key) {
  KM_ASSIGN_OR_RETURN(uint64_t n, integer_member<uint64_t>(obj, key));
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  return static_cast<int64_t>(n > kMax ? kMax : n);
}

Result<double> double_value(const Json& v, std::string_view key) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
    if (s == "Infinity") return std::numeric_limits<double>::infinity();
    if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
    double d = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) return d;
  }
  return wrong_type(key, "a number");
}

Result<double> double_member(const Json& obj, const char* key) {
  const Json* v = member(obj, key);
  if (!v) return 0.0;
  return double_value(*v, key);
}

Result<bool> bool_member(const Json& obj, const char* key) {
  const Json* v = member(obj, key);
  if (!v) return false;
  if (!v->is_boolean()) return wrong_type(key, "true or false");
  return v->get<bool>();
}

Result<std::string> name_member(const Json& obj, const char* key, DecodeState& st) {
  KM_ASSIGN_OR_RETURN(std::string_view s, string_member(obj, key));
  Status ok_name = st.check_name(s);
  if (!ok_name) return wrapped(std::move(ok_name).error(), key);
  KM_TRY(st.charge(s.size()));
  return std::string(s);
}

// A trace or span id: hex of `bytes` bytes, any case; "" when absent.
Result<std::string> id_member(const Json& obj, const char* key, size_t bytes) {
  KM_ASSIGN_OR_RETURN(std::string_view s, string_member(obj, key));
  if (s.empty()) return std::string();
  if (s.size() != 2 * bytes) {
    return wrapped(Error(ErrorCode::kInvalidArgument, "an id of " + std::to_string(s.size()) +
                                                          " hex digits, expected " + std::to_string(2 * bytes)),
                   key);
  }
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return wrong_type(key, "a hex id");
  }
  return out;
}

Result<Json> any_value(const Json& v, DecodeState& st, size_t depth);

// {"key": "...", "value": AnyValue}
Result<Attribute> key_value(const Json& v, DecodeState& st, size_t depth) {
  if (!v.is_object()) return invalid("expected a key-value object");
  KM_TRY(st.charge(kAttributeCost));
  Attribute a;
  KM_ASSIGN_OR_RETURN(a.key, name_member(v, "key", st));
  if (const Json* value = member(v, "value")) {
    auto val = any_value(*value, st, depth);
    if (!val) return wrapped(std::move(val).error(), "value");
    a.value = std::move(*val);
  }
  return a;
}

Result<Json> any_value(const Json& v, DecodeState& st, size_t depth) {
  if (depth > st.limits().max_depth) {
    return invalid("values nested deeper than " + std::to_string(st.limits().max_depth));
  }
  if (!v.is_object()) return invalid("expected an AnyValue object");
  KM_TRY(st.charge(kValueCost));
  if (const Json* s = member(v, "stringValue")) {
    if (!s->is_string()) return wrong_type("stringValue", "a string");
    KM_ASSIGN_OR_RETURN(std::string str, st.value_string(s->get_ref<const std::string&>()));
    return Json(std::move(str));
  }
  if (member(v, "boolValue")) {
    KM_ASSIGN_OR_RETURN(bool b, bool_member(v, "boolValue"));
    return Json(b);
  }
  if (member(v, "intValue")) {
    KM_ASSIGN_OR_RETURN(int64_t i, integer_member<int64_t>(v, "intValue"));
    return Json(i);
  }
  if (member(v, "doubleValue")) {
    KM_ASSIGN_OR_RETURN(double d, double_member(v, "doubleValue"));
    return Json(d);
  }
  if (const Json* arr = member(v, "arrayValue")) {
    if (!arr->is_object()) return wrong_type("arrayValue", "an object");
    KM_ASSIGN_OR_RETURN(const Json* values, array_member(*arr, "values"));
    Json out = Json::array();
    for (size_t i = 0; i < values->size(); ++i) {
      auto child = any_value((*values)[i], st, depth + 1);
      if (!child) return wrapped(std::move(child).error(), at("array", i));
      out.push_back(std::move(*child));
    }
    return out;
  }
  if (const Json* list = member(v, "kvlistValue")) {
    if (!list->is_object()) return wrong_type("kvlistValue", "an object");
    KM_ASSIGN_OR_RETURN(const Json* values, array_member(*list, "values"));
    Json out = Json::object();
    for (size_t i = 0; i < values->size(); ++i) {
      auto kv = key_value((*values)[i], st, depth + 1);
      if (!kv) return wrapped(std::move(kv).error(), at("kvlist", i));
      out[kv->key] = std::move(kv->value);
    }
    return out;
  }
  if (member(v, "bytesValue")) {
    KM_ASSIGN_OR_RETURN(std::string_view b64, string_member(v, "bytesValue"));
    std::string raw;
    if (!meter::base64_decode(b64, raw)) return wrong_type("bytesValue", "base64");
    KM_ASSIGN_OR_RETURN(std::string canonical, st.value_bytes(raw));
    return Json(std::move(canonical));
  }
  return Json();  // an empty AnyValue
}

Status attributes_member(const Json& obj, const char* key, DecodeState& st, Attributes& out) {
  KM_ASSIGN_OR_RETURN(const Json* arr, array_member(obj, key));
  for (size_t i = 0; i < arr->size(); ++i) {
    auto kv = key_value((*arr)[i], st, 0);
    if (!kv) return wrapped(std::move(kv).error(), at(key, i));
    out.push_back(std::move(*kv));
  }
  return ok();
}

struct Envelope {
  Attributes resource;
  std::string scope_name, scope_version;
  Attributes scope_attributes;
  size_t copy_cost = 0;
};

struct Names {
  const char* resource_x;
  const char* scope_x;
  const char* items;
};

// {"<resource_x>": [{"resource": {"attributes": [...]}, "<scope_x>": [{"scope": {"name",
// "version", "attributes"}, "<items>": [...]}]}]}; item(json, envelope) decodes one item.
template <typename Item>
Status envelopes(const Json& doc, DecodeState& st, const Names& names, Item&& item) {
  if (!doc.is_object()) return invalid("expected a JSON object");
  KM_ASSIGN_OR_RETURN(const Json* resources, array_member(doc, names.resource_x));
  for (size_t ri = 0; ri < resources->size(); ++ri) {
    const Json& rx = (*resources)[ri];
    std::string context = at(names.resource_x, ri);
    if (!rx.is_object()) return wrapped(Error(ErrorCode::kInvalidArgument, "expected an object"), context);
    Envelope env;
    auto res = object_member(rx, "resource");
    if (!res) return wrapped(std::move(res).error(), context);
    if (*res) {
      Status s = attributes_member(**res, "attributes", st, env.resource);
      if (!s) return wrapped(std::move(std::move(s).error().wrap("resource")), context);
    }
    size_t resource_cost = attributes_cost(env.resource);
    auto scopes = array_member(rx, names.scope_x);
    if (!scopes) return wrapped(std::move(scopes).error(), context);
    for (size_t si = 0; si < (*scopes)->size(); ++si) {
      const Json& sx = (**scopes)[si];
      Status s = [&]() -> Status {
        if (!sx.is_object()) return invalid("expected an object");
        Envelope scoped;
        scoped.resource = env.resource;
        KM_ASSIGN_OR_RETURN(const Json* sc, object_member(sx, "scope"));
        if (sc) {
          KM_ASSIGN_OR_RETURN(scoped.scope_name, name_member(*sc, "name", st));
          KM_ASSIGN_OR_RETURN(scoped.scope_version, name_member(*sc, "version", st));
          Status a = attributes_member(*sc, "attributes", st, scoped.scope_attributes);
          if (!a) return wrapped(std::move(a).error(), "scope");
        }
        scoped.copy_cost = kRecordCost + resource_cost + attributes_cost(scoped.scope_attributes) +
                           scoped.scope_name.size() + scoped.scope_version.size();
        KM_ASSIGN_OR_RETURN(const Json* items, array_member(sx, names.items));
        for (size_t ii = 0; ii < items->size(); ++ii) {
          const Json& it = (*items)[ii];
          Status r = it.is_object() ? item(it, scoped) : Status(invalid("expected an object"));
          if (!r) return wrapped(std::move(r).error(), at(names.items, ii));
        }
        return ok();
      }();
      if (!s) {
        Error err = std::move(s).error();
        err.wrap(at(names.scope_x, si));
        return wrapped(std::move(err), context);
      }
    }
  }
  return ok();
}

Status log_record(const Json& v, const Envelope& env, DecodeState& st, std::vector<LogRecord>& out) {
  KM_TRY(st.add_record());
  KM_TRY(st.charge(env.copy_cost));
  st.truncated = false;
  LogRecord rec;
  KM_ASSIGN_OR_RETURN(rec.time_unix_nano, nanos_member(v, "timeUnixNano"));
  KM_ASSIGN_OR_RETURN(rec.observed_unix_nano, nanos_member(v, "observedTimeUnixNano"));
  KM_ASSIGN_OR_RETURN(rec.severity, integer_member<int32_t>(v, "severityNumber"));
  KM_ASSIGN_OR_RETURN(rec.severity_text, name_member(v, "severityText", st));
  KM_ASSIGN_OR_RETURN(rec.event_name, name_member(v, "eventName", st));
  KM_ASSIGN_OR_RETURN(rec.trace_id, id_member(v, "traceId", 16));
  KM_ASSIGN_OR_RETURN(rec.span_id, id_member(v, "spanId", 8));
  if (const Json* body = member(v, "body")) {
    auto b = any_value(*body, st, 0);
    if (!b) return wrapped(std::move(b).error(), "body");
    rec.body = std::move(*b);
  }
  KM_TRY(attributes_member(v, "attributes", st, rec.attributes));
  rec.resource = env.resource;
  rec.scope_name = env.scope_name;
  rec.scope_version = env.scope_version;
  rec.scope_attributes = env.scope_attributes;
  rec.truncated = st.truncated;
  out.push_back(std::move(rec));
  return ok();
}

Status data_point(const Json& v, MetricPoint point, const Envelope& env, DecodeState& st,
                  std::vector<MetricPoint>& out) {
  if (!v.is_object()) return invalid("expected an object");
  KM_TRY(st.add_record());
  KM_TRY(st.charge(env.copy_cost + point.name.size() + point.description.size() + point.unit.size()));
  st.truncated = false;
  KM_TRY(attributes_member(v, "attributes", st, point.attributes));
  KM_ASSIGN_OR_RETURN(point.start_unix_nano, nanos_member(v, "startTimeUnixNano"));
  KM_ASSIGN_OR_RETURN(point.time_unix_nano, nanos_member(v, "timeUnixNano"));
  if (point.kind == MetricKind::kGauge || point.kind == MetricKind::kSum) {
    if (member(v, "asInt")) {
      point.is_int = true;
      KM_ASSIGN_OR_RETURN(point.as_int, integer_member<int64_t>(v, "asInt"));
    } else {
      KM_ASSIGN_OR_RETURN(point.as_double, double_member(v, "asDouble"));
    }
  } else {
    KM_ASSIGN_OR_RETURN(point.count, integer_member<uint64_t>(v, "count"));
    KM_ASSIGN_OR_RETURN(point.as_double, double_member(v, "sum"));
  }
  point.resource = env.resource;
  point.scope_name = env.scope_name;
  point.scope_version = env.scope_version;
  point.truncated = point.truncated || st.truncated;
  out.push_back(std::move(point));
  return ok();
}

Status metric(const Json& v, const Envelope& env, DecodeState& st, std::vector<MetricPoint>& out) {
  MetricPoint proto;
  st.truncated = false;
  KM_ASSIGN_OR_RETURN(proto.name, name_member(v, "name", st));
  KM_ASSIGN_OR_RETURN(proto.unit, name_member(v, "unit", st));
  KM_ASSIGN_OR_RETURN(std::string_view description, string_member(v, "description"));
  KM_ASSIGN_OR_RETURN(proto.description, st.value_string(description));
  proto.truncated = st.truncated;
  static constexpr std::pair<const char*, MetricKind> kKinds[] = {
      {"gauge", MetricKind::kGauge},
      {"sum", MetricKind::kSum},
      {"histogram", MetricKind::kHistogram},
      {"exponentialHistogram", MetricKind::kExponentialHistogram},
      {"summary", MetricKind::kSummary},
  };
  for (const auto& [key, kind] : kKinds) {
    KM_ASSIGN_OR_RETURN(const Json* data, object_member(v, key));
    if (!data) continue;
    proto.kind = kind;
    if (kind != MetricKind::kGauge && kind != MetricKind::kSummary) {
      auto t = integer_member<int32_t>(*data, "aggregationTemporality");
      if (!t) return wrapped(std::move(t).error(), key);
      proto.temporality = *t;
    }
    if (kind == MetricKind::kSum) {
      auto m = bool_member(*data, "isMonotonic");
      if (!m) return wrapped(std::move(m).error(), key);
      proto.monotonic = *m;
    }
    auto points = array_member(*data, "dataPoints");
    if (!points) return wrapped(std::move(points).error(), key);
    for (size_t i = 0; i < (*points)->size(); ++i) {
      Status s = data_point((**points)[i], proto, env, st, out);
      if (!s) return wrapped(std::move(std::move(s).error().wrap(at("dataPoints", i))), key);
    }
    return ok();  // one of the data fields; a metric with none carries no points
  }
  return ok();
}

Status span(const Json& v, const Envelope& env, DecodeState& st, std::vector<Span>& out) {
  KM_TRY(st.add_record());
  KM_TRY(st.charge(env.copy_cost));
  st.truncated = false;
  Span sp;
  KM_ASSIGN_OR_RETURN(sp.trace_id, id_member(v, "traceId", 16));
  KM_ASSIGN_OR_RETURN(sp.span_id, id_member(v, "spanId", 8));
  KM_ASSIGN_OR_RETURN(sp.parent_span_id, id_member(v, "parentSpanId", 8));
  KM_ASSIGN_OR_RETURN(sp.name, name_member(v, "name", st));
  KM_ASSIGN_OR_RETURN(sp.kind, integer_member<int32_t>(v, "kind"));
  KM_ASSIGN_OR_RETURN(sp.start_unix_nano, nanos_member(v, "startTimeUnixNano"));
  KM_ASSIGN_OR_RETURN(sp.end_unix_nano, nanos_member(v, "endTimeUnixNano"));
  KM_TRY(attributes_member(v, "attributes", st, sp.attributes));
  KM_ASSIGN_OR_RETURN(const Json* status, object_member(v, "status"));
  if (status) {
    auto code = integer_member<int32_t>(*status, "code");
    if (!code) return wrapped(std::move(code).error(), "status");
    sp.status_code = *code;
    auto message = string_member(*status, "message");
    if (!message) return wrapped(std::move(message).error(), "status");
    KM_ASSIGN_OR_RETURN(sp.status_message, st.value_string(*message));
  }
  sp.resource = env.resource;
  sp.scope_name = env.scope_name;
  sp.scope_version = env.scope_version;
  sp.truncated = st.truncated;
  out.push_back(std::move(sp));
  return ok();
}

// Aborts parsing from inside nlohmann's callback when the budget runs out.
struct OverBudget {
  Error error;
};

Result<Json> parse(std::string_view body, DecodeState& st) {
  size_t first = body.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return Json::object();  // an empty request
  // Each AnyValue level costs up to four JSON levels ({"kvlistValue":{"values":[{...}]}}), and
  // the envelopes around a record about ten.
  if (!meter::json_depth_within(body, 4 * st.limits().max_depth + 16)) {
    return invalid("JSON nested deeper than " + std::to_string(4 * st.limits().max_depth + 16) + " levels");
  }
  try {
    return Json::parse(body.begin(), body.end(), [&](int, Json::parse_event_t event, Json& parsed) {
      size_t cost = kValueCost;
      if (event == Json::parse_event_t::object_end || event == Json::parse_event_t::array_end) cost = 0;
      if ((event == Json::parse_event_t::key || event == Json::parse_event_t::value) && parsed.is_string()) {
        cost += parsed.get_ref<const std::string&>().size();
      }
      if (Status s = st.charge(cost); !s) throw OverBudget{std::move(s).error()};
      return true;
    });
  } catch (const OverBudget& e) {
    return fail(e.error);
  } catch (const Json::parse_error& e) {
    // The position only: nlohmann's own message quotes the input.
    return invalid("malformed JSON at byte " + std::to_string(e.byte));
  } catch (const Json::exception&) {
    return invalid("malformed JSON");
  }
}

template <typename Item>
Status decode(std::string_view body, DecodeState& st, const Names& names, Item&& item) {
  KM_ASSIGN_OR_RETURN(Json doc, parse(body, st));
  return envelopes(doc, st, names, item);
}

}  // namespace

Status decode_logs_json(std::string_view body, DecodeState& st, std::vector<LogRecord>& out) {
  return decode(body, st, {"resourceLogs", "scopeLogs", "logRecords"},
                [&](const Json& item, const Envelope& env) { return log_record(item, env, st, out); });
}

Status decode_metrics_json(std::string_view body, DecodeState& st, std::vector<MetricPoint>& out) {
  return decode(body, st, {"resourceMetrics", "scopeMetrics", "metrics"},
                [&](const Json& item, const Envelope& env) { return metric(item, env, st, out); });
}

Status decode_traces_json(std::string_view body, DecodeState& st, std::vector<Span>& out) {
  return decode(body, st, {"resourceSpans", "scopeSpans", "spans"},
                [&](const Json& item, const Envelope& env) { return span(item, env, st, out); });
}

}  // namespace km::otel::detail
