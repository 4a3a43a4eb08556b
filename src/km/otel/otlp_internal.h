// Shared by the protobuf and JSON halves of the OTLP decoder (otlp_protobuf.cc, otlp_json.cc);
// not part of km_otel's interface.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"
#include "km/otel/otlp.h"

namespace km::otel::detail {

// Estimated memory of decoded values, charged as they are built so that a hostile request
// cannot make the decoder allocate before the limit is checked. Figures are rough but on the
// high side of what libstdc++ and nlohmann::json allocate.
inline constexpr size_t kValueCost = 48;      // one JSON node
inline constexpr size_t kAttributeCost = 64;  // one Attribute besides its key and value
inline constexpr size_t kRecordCost = 512;    // one LogRecord / MetricPoint / Span, empty

// The limits, what has been spent against them, and whether the record being decoded had a
// value cut. One per request.
class DecodeState {
 public:
  explicit DecodeState(const DecodeLimits& limits) : limits_(limits) {}

  const DecodeLimits& limits() const { return limits_; }

  // One more record; an error past max_records.
  Status add_record();
  // `bytes` more of decoded memory; an error past max_decoded_bytes.
  Status charge(size_t bytes);
  size_t spent() const { return spent_; }

  // A name (attribute key, metric name, ...): an error over max_name_bytes.
  Status check_name(std::string_view s) const;
  // A string value, cut to max_string_bytes on a UTF-8 boundary (setting truncated) and
  // charged for. `s` must be valid UTF-8.
  Result<std::string> value_string(std::string_view s);
  // A bytes value as base64, its raw bytes cut to max_string_bytes.
  Result<std::string> value_bytes(std::string_view raw);

  bool truncated = false;  // set by value_string / value_bytes; the caller resets per record

 private:
  const DecodeLimits& limits_;
  size_t records_ = 0;
  size_t spent_ = 0;
};

// Context for an error: "what[index]".
std::string at(std::string_view what, size_t index);
inline Unexpected<Error> wrapped(Error e, std::string_view context) { return fail(std::move(e.wrap(context))); }
Unexpected<Error> invalid(std::string message);

bool valid_utf8(std::string_view s);
std::string lower_hex(std::string_view bytes);
std::string base64_encode(std::string_view bytes);
// `s` cut to at most `max` bytes without splitting a UTF-8 sequence.
std::string_view utf8_prefix(std::string_view s, size_t max);

// Trace ids are 16 bytes and span ids 8 (or absent): the raw bytes as lowercase hex.
Result<std::string> id_hex(std::string_view raw, size_t want_bytes);

// The estimated memory of a resource's or scope's attributes, charged again for every record
// that carries a copy.
size_t attributes_cost(const Attributes& attrs);

// Protobuf and JSON decoders. The body has been decompressed and is within max_body_bytes.
Status decode_logs_protobuf(std::string_view body, DecodeState& st, std::vector<LogRecord>& out);
Status decode_metrics_protobuf(std::string_view body, DecodeState& st, std::vector<MetricPoint>& out);
Status decode_traces_protobuf(std::string_view body, DecodeState& st, std::vector<Span>& out);
Status decode_logs_json(std::string_view body, DecodeState& st, std::vector<LogRecord>& out);
Status decode_metrics_json(std::string_view body, DecodeState& st, std::vector<MetricPoint>& out);
Status decode_traces_json(std::string_view body, DecodeState& st, std::vector<Span>& out);

}  // namespace km::otel::detail
