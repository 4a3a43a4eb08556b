#include "km/meter/event_stream.h"

#include <zlib.h>

#include <algorithm>

namespace km::meter {

namespace {

constexpr size_t kPrelude = 12;   // total length, headers length, prelude CRC
constexpr size_t kOverhead = 16;  // prelude and message CRC

uint32_t read_u32(std::string_view s, size_t at) {
  return (uint32_t{static_cast<unsigned char>(s[at])} << 24) |
         (uint32_t{static_cast<unsigned char>(s[at + 1])} << 16) |
         (uint32_t{static_cast<unsigned char>(s[at + 2])} << 8) |
         uint32_t{static_cast<unsigned char>(s[at + 3])};
}

uint64_t read_be(std::string_view s, size_t at, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

void write_be(std::string& out, uint64_t v, size_t n) {
  for (size_t i = n; i-- > 0;) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

// Width of a fixed-size header value; 0 for the length-prefixed ones, SIZE_MAX if unknown.
size_t fixed_width(uint8_t type) {
  switch (static_cast<HeaderType>(type)) {
    case HeaderType::kBoolTrue:
    case HeaderType::kBoolFalse: return 0;
    case HeaderType::kByte: return 1;
    case HeaderType::kShort: return 2;
    case HeaderType::kInt: return 4;
    case HeaderType::kLong:
    case HeaderType::kTimestamp: return 8;
    case HeaderType::kUuid: return 16;
    case HeaderType::kBytes:
    case HeaderType::kString: return 0;
  }
  return SIZE_MAX;
}

// Sign-extends an n-byte big-endian two's complement value.
int64_t sign_extend(uint64_t v, size_t n) {
  if (n == 8) return static_cast<int64_t>(v);
  uint64_t sign = uint64_t{1} << (8 * n - 1);
  return static_cast<int64_t>((v ^ sign) - sign);
}

Result<std::vector<EventStreamHeader>> parse_headers(std::string_view h) {
  std::vector<EventStreamHeader> out;
  size_t i = 0;
  auto truncated = [] { return fail(ErrorCode::kInvalidArgument, "event-stream header runs past the header section"); };
  while (i < h.size()) {
    size_t name_len = static_cast<unsigned char>(h[i++]);
    if (name_len == 0) return fail(ErrorCode::kInvalidArgument, "event-stream header with an empty name");
    if (h.size() - i < name_len + 1) return truncated();
    EventStreamHeader hd;
    hd.name.assign(h.substr(i, name_len));
    i += name_len;
    uint8_t type = static_cast<uint8_t>(h[i++]);
    if (type > static_cast<uint8_t>(HeaderType::kUuid)) {
      return fail(ErrorCode::kInvalidArgument,
                  "event-stream header of unknown value type " + std::to_string(type));
    }
    hd.type = static_cast<HeaderType>(type);
    switch (hd.type) {
      case HeaderType::kBoolTrue: hd.integer = 1; break;
      case HeaderType::kBoolFalse: hd.integer = 0; break;
      case HeaderType::kBytes:
      case HeaderType::kString: {
        if (h.size() - i < 2) return truncated();
        size_t len = read_be(h, i, 2);
        i += 2;
        if (h.size() - i < len) return truncated();
        hd.bytes.assign(h.substr(i, len));
        i += len;
        break;
      }
      case HeaderType::kUuid:
        if (h.size() - i < 16) return truncated();
        hd.bytes.assign(h.substr(i, 16));
        i += 16;
        break;
      default: {
        size_t w = fixed_width(type);
        if (h.size() - i < w) return truncated();
        hd.integer = sign_extend(read_be(h, i, w), w);
        i += w;
      }
    }
    out.push_back(std::move(hd));
  }
  return out;
}

}  // namespace

uint32_t crc32_ieee(std::string_view bytes, uint32_t crc) {
  uLong c = crc;
  while (!bytes.empty()) {
    uInt n = static_cast<uInt>(std::min<size_t>(bytes.size(), 1u << 30));
    c = ::crc32(c, reinterpret_cast<const Bytef*>(bytes.data()), n);
    bytes.remove_prefix(n);
  }
  return static_cast<uint32_t>(c);
}

const EventStreamHeader* EventStreamMessage::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (h.name == name) return &h;
  }
  return nullptr;
}

std::optional<std::string_view> EventStreamMessage::string_header(std::string_view name) const {
  const EventStreamHeader* h = header(name);
  if (!h || h->type != HeaderType::kString) return std::nullopt;
  return std::string_view(h->bytes);
}

Result<size_t> EventStreamDecoder::message_length(std::string_view prelude) {
  uint32_t total = read_u32(prelude, 0);
  uint32_t headers = read_u32(prelude, 4);
  if (crc32_ieee(prelude.substr(0, 8)) != read_u32(prelude, 8)) {
    return fail(ErrorCode::kInvalidArgument, "event-stream prelude CRC mismatch");
  }
  if (total < kOverhead) {
    return fail(ErrorCode::kInvalidArgument,
                "event-stream message length " + std::to_string(total) + " is under 16");
  }
  if (total > max_message_size_) {
    return fail(ErrorCode::kResourceExhausted, "event-stream message of " + std::to_string(total) +
                                                   " bytes exceeds " + std::to_string(max_message_size_));
  }
  if (headers > kMaxHeadersSize || headers > total - kOverhead) {
    return fail(ErrorCode::kInvalidArgument, "event-stream headers length " + std::to_string(headers) +
                                                 " does not fit the message");
  }
  return size_t{total};
}

Status EventStreamDecoder::decode(std::string_view msg, std::vector<EventStreamMessage>& out) {
  size_t total = msg.size();
  if (crc32_ieee(msg.substr(0, total - 4)) != read_u32(msg, total - 4)) {
    return fail(ErrorCode::kInvalidArgument, "event-stream message CRC mismatch");
  }
  size_t headers_len = read_u32(msg, 4);
  EventStreamMessage m;
  KM_ASSIGN_OR_RETURN(m.headers, parse_headers(msg.substr(kPrelude, headers_len)));
  m.payload.assign(msg.substr(kPrelude + headers_len, total - kOverhead - headers_len));
  out.push_back(std::move(m));
  return ok();
}

Status EventStreamDecoder::feed(std::string_view bytes, std::vector<EventStreamMessage>& out) {
  if (error_) return fail(*error_);
  auto failed_with = [&](Error e) {
    error_ = e;
    pending_.clear();
    return fail(std::move(e));
  };
  while (!bytes.empty()) {
    if (pending_.empty()) {
      // Whole messages are decoded straight from the caller's bytes.
      if (bytes.size() < kPrelude) {
        pending_.assign(bytes);
        return ok();
      }
      auto total = message_length(bytes.substr(0, kPrelude));
      if (!total) return failed_with(std::move(total).error());
      if (bytes.size() < *total) {
        pending_.assign(bytes);
        return ok();
      }
      Status s = decode(bytes.substr(0, *total), out);
      if (!s) return failed_with(std::move(s).error());
      bytes.remove_prefix(*total);
      continue;
    }
    if (pending_.size() < kPrelude) {
      size_t take = std::min(kPrelude - pending_.size(), bytes.size());
      pending_.append(bytes.substr(0, take));
      bytes.remove_prefix(take);
      if (pending_.size() < kPrelude) return ok();
    }
    auto total = message_length(std::string_view(pending_).substr(0, kPrelude));
    if (!total) return failed_with(std::move(total).error());
    size_t take = std::min(*total - pending_.size(), bytes.size());
    pending_.append(bytes.substr(0, take));
    bytes.remove_prefix(take);
    if (pending_.size() < *total) return ok();
    Status s = decode(pending_, out);
    pending_.clear();
    if (!s) return failed_with(std::move(s).error());
  }
  return ok();
}

std::string encode_event_stream_message(const EventStreamMessage& msg) {
  std::string headers;
  for (const auto& h : msg.headers) {
    headers += static_cast<char>(h.name.size() & 0xff);
    headers += h.name.substr(0, 255);
    headers += static_cast<char>(h.type);
    switch (h.type) {
      case HeaderType::kBoolTrue:
      case HeaderType::kBoolFalse: break;
      case HeaderType::kBytes:
      case HeaderType::kString:
        write_be(headers, h.bytes.size(), 2);
        headers += h.bytes;
        break;
      case HeaderType::kUuid: {
        std::string uuid = h.bytes.substr(0, 16);
        uuid.resize(16, '\0');
        headers += uuid;
        break;
      }
      default: write_be(headers, static_cast<uint64_t>(h.integer), fixed_width(static_cast<uint8_t>(h.type)));
    }
  }
  size_t total = kOverhead + headers.size() + msg.payload.size();
  std::string out;
  out.reserve(total);
  write_be(out, total, 4);
  write_be(out, headers.size(), 4);
  write_be(out, crc32_ieee(out), 4);
  out += headers;
  out += msg.payload;
  write_be(out, crc32_ieee(out), 4);
  return out;
}

}  // namespace km::meter
