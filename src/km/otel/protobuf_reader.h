// A minimal reader for the protocol buffers wire format
// (https://protobuf.dev/programming-guides/encoding/), enough to decode the OTLP messages by
// hand: a message is a sequence of fields, each a tag varint (field number << 3 | wire type)
// followed by a varint, 8 bytes (fixed64, double), 4 bytes (fixed32, float) or a varint length
// and that many bytes (strings, bytes, nested messages, packed repeated scalars).
//
// The reader walks one message's bytes front to back and never allocates; nested messages are
// read with a new reader over the field's bytes, so recursion depth is the caller's to bound.
// It is strict about framing: a truncated field, a varint over 10 bytes, field number 0 and the
// deprecated group wire types (3, 4; proto3 never uses them) are errors. Unknown fields are the
// caller's to skip (next() already consumed them whole).
// Errors: kInvalidArgument naming the byte offset, never the bytes.
// Thread-safety: a value over borrowed bytes; no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "km/base/result.h"

namespace km::otel {

enum class WireType : uint8_t {
  kVarint = 0,
  kFixed64 = 1,
  kLen = 2,
  kFixed32 = 5,
};

std::string_view wire_type_name(WireType type);

struct ProtoField {
  uint32_t number = 0;
  WireType type = WireType::kVarint;
  uint64_t scalar = 0;    // kVarint, kFixed64, kFixed32 (zero-extended)
  std::string_view bytes; // kLen: the payload, pointing into the reader's buffer
};

class ProtoReader {
 public:
  explicit ProtoReader(std::string_view buf) : buf_(buf) {}

  // Reads the next field into `field`: true when one was read, false at the end of the
  // message. An error names the offset where the bad field starts and leaves the reader there.
  Result<bool> next(ProtoField& field);

  size_t offset() const { return pos_; }

 private:
  // A varint at pos_, advancing past it; nullopt (with why_ set) if malformed.
  std::optional<uint64_t> varint();

  const char* why_ = "";

  std::string_view buf_;
  size_t pos_ = 0;
};

// Field accessors that check the wire type the schema says the field has, and convert.
// A mismatch is an error: an OTLP sender that puts a string where a fixed64 belongs is broken.
Status expect_wire_type(const ProtoField& f, WireType want);
inline int64_t as_int64(const ProtoField& f) { return static_cast<int64_t>(f.scalar); }
inline int32_t as_int32(const ProtoField& f) { return static_cast<int32_t>(static_cast<uint32_t>(f.scalar)); }
double as_double(const ProtoField& f);

}  // namespace km::otel
