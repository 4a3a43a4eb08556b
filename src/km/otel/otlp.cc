#include "km/otel/otlp.h"

#include <optional>
#include <string>

#include "km/base/strings.h"
#include "km/meter/content_decoding.h"
#include "km/otel/otlp_internal.h"

namespace km::otel {

namespace detail {

Status DecodeState::add_record() {
  if (++records_ > limits_.max_records) {
    return fail(ErrorCode::kInvalidArgument,
                "more than " + std::to_string(limits_.max_records) + " records in one request");
  }
  return ok();
}

Status DecodeState::charge(size_t bytes) {
  spent_ += bytes;
  if (spent_ > limits_.max_decoded_bytes) {
    return fail(ErrorCode::kInvalidArgument, "the decoded request would take more than " +
                                                 std::to_string(limits_.max_decoded_bytes) + " bytes");
  }
  return ok();
}

Status DecodeState::check_name(std::string_view s) const {
  if (s.size() > limits_.max_name_bytes) {
    return fail(ErrorCode::kInvalidArgument,
                "a name of " + std::to_string(s.size()) + " bytes (the limit is " +
                    std::to_string(limits_.max_name_bytes) + ")");
  }
  return ok();
}

Result<std::string> DecodeState::value_string(std::string_view s) {
  if (s.size() > limits_.max_string_bytes) {
    s = utf8_prefix(s, limits_.max_string_bytes);
    truncated = true;
  }
  KM_TRY(charge(s.size()));
  return std::string(s);
}

Result<std::string> DecodeState::value_bytes(std::string_view raw) {
  if (raw.size() > limits_.max_string_bytes) {
    raw = raw.substr(0, limits_.max_string_bytes);
    truncated = true;
  }
  KM_TRY(charge(raw.size() / 3 * 4 + 4));
  return base64_encode(raw);
}

std::string at(std::string_view what, size_t index) {
  return std::string(what) + "[" + std::to_string(index) + "]";
}

Unexpected<Error> invalid(std::string message) { return fail(ErrorCode::kInvalidArgument, std::move(message)); }

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      n = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i < n) return false;
    for (size_t k = 1; k < n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n;
  }
  return true;
}

std::string_view utf8_prefix(std::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = max;
  // Back up over continuation bytes to the start of the sequence the cut would split.
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xc0) == 0x80) --end;
  return s.substr(0, end);
}

std::string lower_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char ch : bytes) {
    auto c = static_cast<unsigned char>(ch);
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                 static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                 static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

Result<std::string> id_hex(std::string_view raw, size_t want_bytes) {
  if (raw.empty()) return std::string();
  if (raw.size() != want_bytes) {
    return invalid("an id of " + std::to_string(raw.size()) + " bytes, expected " + std::to_string(want_bytes));
  }
  return lower_hex(raw);
}

size_t attributes_cost(const Attributes& attrs) {
  size_t cost = 0;
  for (const Attribute& a : attrs) {
    cost += kAttributeCost + a.key.size();
    // The value's nodes and strings, walked without recursion (the value may nest).
    std::vector<const nlohmann::json*> todo{&a.value};
    while (!todo.empty()) {
      const nlohmann::json* v = todo.back();
      todo.pop_back();
      cost += kValueCost;
      if (v->is_string()) cost += v->get_ref<const std::string&>().size();
      if (v->is_object()) {
        for (const auto& [k, child] : v->items()) {
          cost += k.size();
          todo.push_back(&child);
        }
      } else if (v->is_array()) {
        for (const auto& child : *v) todo.push_back(&child);
      }
    }
  }
  return cost;
}

}  // namespace detail

using detail::DecodeState;

const nlohmann::json* find_attribute(const Attributes& attrs, std::string_view key) {
  for (const Attribute& a : attrs) {
    if (a.key == key) return &a.value;
  }
  return nullptr;
}

std::string string_attribute(const Attributes& attrs, std::string_view key) {
  const nlohmann::json* v = find_attribute(attrs, key);
  return v && v->is_string() ? v->get<std::string>() : std::string();
}

std::string_view metric_kind_name(MetricKind kind) {
  switch (kind) {
    case MetricKind::kGauge: return "gauge";
    case MetricKind::kSum: return "sum";
    case MetricKind::kHistogram: return "histogram";
    case MetricKind::kExponentialHistogram: return "exponential_histogram";
    case MetricKind::kSummary: return "summary";
  }
  return "unknown";
}

Result<Encoding> encoding_for(std::string_view content_type) {
  std::string_view media = content_type.substr(0, content_type.find(';'));
  while (!media.empty() && (media.back() == ' ' || media.back() == '\t')) media.remove_suffix(1);
  while (!media.empty() && (media.front() == ' ' || media.front() == '\t')) media.remove_prefix(1);
  if (equals_ignore_case(media, "application/x-protobuf") || equals_ignore_case(media, "application/protobuf")) {
    return Encoding::kProtobuf;
  }
  if (equals_ignore_case(media, "application/json")) return Encoding::kJson;
  return fail(ErrorCode::kFailedPrecondition,
              "unsupported Content-Type " + quoted(content_type) +
                  ": OTLP/HTTP is application/x-protobuf or application/json");
}

Encoding response_encoding(std::string_view content_type) {
  auto e = encoding_for(content_type);
  return e && *e == Encoding::kJson ? Encoding::kJson : Encoding::kProtobuf;
}

namespace {

// The body with its content codings removed (nullopt when it has none), within
// max_body_bytes before and after.
Result<std::optional<std::string>> decompress(std::string_view body, std::string_view content_encoding,
                                              const DecodeLimits& limits) {
  if (body.size() > limits.max_body_bytes) {
    return fail(ErrorCode::kResourceExhausted, "the request body is " + std::to_string(body.size()) +
                                                   " bytes, over the limit of " +
                                                   std::to_string(limits.max_body_bytes));
  }
  auto dec = meter::ContentDecoder::create(content_encoding, limits.max_body_bytes);
  if (!dec) {
    return fail(ErrorCode::kFailedPrecondition,
                "unsupported Content-Encoding " + quoted(content_encoding) + ": " + dec.error().message());
  }
  if (dec->identity()) return std::optional<std::string>();
  std::string decoded;
  KM_TRY(dec->feed(body, [&](std::string_view b) { decoded.append(b); }));
  KM_TRY(dec->finish());
  return std::optional<std::string>(std::move(decoded));
}

template <typename Record>
using Decoder = Status (*)(std::string_view, DecodeState&, std::vector<Record>&);

template <typename Record>
Result<std::vector<Record>> decode(std::string_view body, std::string_view content_type,
                                   std::string_view content_encoding, const DecodeLimits& limits,
                                   Decoder<Record> protobuf, Decoder<Record> json, std::string_view message) {
  KM_ASSIGN_OR_RETURN(Encoding encoding, encoding_for(content_type));
  KM_ASSIGN_OR_RETURN(std::optional<std::string> decoded, decompress(body, content_encoding, limits));
  std::string_view data = decoded ? std::string_view(*decoded) : body;
  DecodeState st(limits);
  std::vector<Record> out;
  Status s = encoding == Encoding::kProtobuf ? protobuf(data, st, out) : json(data, st, out);
  if (!s) return fail(std::move(s).error().wrap("decoding " + std::string(message)));
  return out;
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

}  // namespace

Result<std::vector<LogRecord>> decode_logs(std::string_view body, std::string_view content_type,
                                           std::string_view content_encoding, const DecodeLimits& limits) {
  return decode<LogRecord>(body, content_type, content_encoding, limits, detail::decode_logs_protobuf,
                           detail::decode_logs_json, "ExportLogsServiceRequest");
}

Result<std::vector<MetricPoint>> decode_metrics(std::string_view body, std::string_view content_type,
                                                std::string_view content_encoding, const DecodeLimits& limits) {
  return decode<MetricPoint>(body, content_type, content_encoding, limits, detail::decode_metrics_protobuf,
                             detail::decode_metrics_json, "ExportMetricsServiceRequest");
}

Result<std::vector<Span>> decode_traces(std::string_view body, std::string_view content_type,
                                        std::string_view content_encoding, const DecodeLimits& limits) {
  return decode<Span>(body, content_type, content_encoding, limits, detail::decode_traces_protobuf,
                      detail::decode_traces_json, "ExportTraceServiceRequest");
}

ExportResponse success_response(Encoding encoding) {
  if (encoding == Encoding::kJson) return {200, "application/json", "{}"};
  return {200, "application/x-protobuf", ""};
}

ExportResponse error_response(Encoding encoding, const Error& error) {
  int status = 400;
  int rpc_code = 3;  // google.rpc.Code INVALID_ARGUMENT
  switch (error.code()) {
    case ErrorCode::kResourceExhausted:
      status = 413;
      rpc_code = 8;  // RESOURCE_EXHAUSTED
      break;
    case ErrorCode::kFailedPrecondition:
      status = 415;
      rpc_code = 9;  // FAILED_PRECONDITION
      break;
    case ErrorCode::kUnavailable:
      status = 503;
      rpc_code = 14;  // UNAVAILABLE
      break;
    default: break;
  }
  std::string message = error.to_string();
  ExportResponse r;
  r.status = status;
  if (encoding == Encoding::kJson) {
    r.content_type = "application/json";
    nlohmann::json j{{"code", rpc_code}, {"message", message}};
    r.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    // google.rpc.Status: int32 code = 1; string message = 2.
    r.content_type = "application/x-protobuf";
    r.body += static_cast<char>(1 << 3 | 0);
    put_varint(r.body, static_cast<uint64_t>(rpc_code));
    r.body += static_cast<char>(2 << 3 | 2);
    put_varint(r.body, message.size());
    r.body += message;
  }
  return r;
}

}  // namespace km::otel
