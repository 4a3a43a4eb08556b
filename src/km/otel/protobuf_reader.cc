#include "km/otel/protobuf_reader.h"

#include <cstring>
#include <string>

namespace km::otel {

namespace {

Unexpected<Error> malformed(size_t offset, std::string_view what) {
  return fail(ErrorCode::kInvalidArgument,
              "malformed protobuf at byte " + std::to_string(offset) + ": " + std::string(what));
}

uint64_t little_endian(std::string_view b) {
  uint64_t v = 0;
  for (size_t i = b.size(); i > 0; --i) v = (v << 8) | static_cast<unsigned char>(b[i - 1]);
  return v;
}

}  // namespace

std::string_view wire_type_name(WireType type) {
  switch (type) {
    case WireType::kVarint: return "varint";
    case WireType::kFixed64: return "fixed64";
    case WireType::kLen: return "length-delimited";
    case WireType::kFixed32: return "fixed32";
  }
  return "unknown";
}

std::optional<uint64_t> ProtoReader::varint() {
  uint64_t v = 0;
  for (int i = 0; i < 10; ++i) {
    if (pos_ >= buf_.size()) {
      why_ = "truncated varint";
      return std::nullopt;
    }
    auto byte = static_cast<unsigned char>(buf_[pos_++]);
    // The tenth byte holds bit 63 only; anything more does not fit in 64 bits.
    if (i == 9 && byte > 1) {
      why_ = "varint over 64 bits";
      return std::nullopt;
    }
    v |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) return v;
  }
  why_ = "varint over 10 bytes";
  return std::nullopt;
}

Result<bool> ProtoReader::next(ProtoField& field) {
  if (pos_ >= buf_.size()) return false;
  size_t start = pos_;
  auto error = [&](std::string_view what) {
    pos_ = start;
    return malformed(start, what);
  };
  auto tag = varint();
  if (!tag) return error(why_);
  uint64_t number = *tag >> 3;
  auto type = static_cast<unsigned>(*tag & 7);
  if (number == 0 || number > 0x1fffffff) return error("field number out of range");
  ProtoField f;
  f.number = static_cast<uint32_t>(number);
  switch (type) {
    case 0: {
      auto v = varint();
      if (!v) return error(why_);
      f.type = WireType::kVarint;
      f.scalar = *v;
      break;
    }
    case 1:
    case 5: {
      size_t n = type == 1 ? 8 : 4;
      if (buf_.size() - pos_ < n) return error("truncated fixed-width field");
      f.type = type == 1 ? WireType::kFixed64 : WireType::kFixed32;
      f.scalar = little_endian(buf_.substr(pos_, n));
      pos_ += n;
      break;
    }
    case 2: {
      auto len = varint();
      if (!len) return error(why_);
      if (*len > buf_.size() - pos_) return error("length-delimited field runs past the end of its message");
      f.type = WireType::kLen;
      f.bytes = buf_.substr(pos_, static_cast<size_t>(*len));
      pos_ += static_cast<size_t>(*len);
      break;
    }
    case 3:
    case 4: return error("group wire types are not used by OTLP");
    default: return error("invalid wire type " + std::to_string(type));
  }
  field = f;
  return true;
}

Status expect_wire_type(const ProtoField& f, WireType want) {
  if (f.type == want) return ok();
  return fail(ErrorCode::kInvalidArgument, "field " + std::to_string(f.number) + " is " +
                                               std::string(wire_type_name(f.type)) + ", expected " +
                                               std::string(wire_type_name(want)));
}

double as_double(const ProtoField& f) {
  double d;
  static_assert(sizeof d == sizeof f.scalar);
  std::memcpy(&d, &f.scalar, sizeof d);
  return d;
}

}  // namespace km::otel
