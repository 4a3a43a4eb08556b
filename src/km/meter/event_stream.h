// AWS event-stream messages (application/vnd.amazon.eventstream), the binary framing of
// Bedrock's InvokeModelWithResponseStream and ConverseStream responses, decoded from bytes
// that arrive in arbitrary fragments.
//
// Wire format, all integers big-endian:
//   total length u32 | headers length u32 | prelude CRC32 u32 (of the 8 bytes before it)
//   | headers | payload | message CRC32 u32 (of every byte of the message before it)
// A header is: name length u8 (1..255) | name | value type u8 | value, where the value is
//   0 true, 1 false (no bytes), 2 byte (1), 3 short (2), 4 int (4), 5 long (8),
//   6 byte array (u16 length + bytes), 7 string (u16 length + bytes), 8 timestamp (8: ms since
//   the epoch), 9 UUID (16). CRC32 is the IEEE/zlib one.
//
// The decoder is strict: a bad prelude or message CRC, a total length under 16 or over
// max_message_size, a headers length over kMaxHeadersSize or past the end of the message, a
// header running past the header section, a zero-length name or an unknown value type puts it
// into its error state, in which every later feed() fails without looking at its input.
// Memory held: at most one message (max_message_size) plus the messages returned.
// Thread-safety: a single-owner state machine. No I/O, no exceptions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"

namespace km::meter {

inline constexpr size_t kMaxEventStreamMessage = 16u << 20;
// AWS's own limit on the header section of one message.
inline constexpr size_t kMaxHeadersSize = 128u << 10;

enum class HeaderType : uint8_t {
  kBoolTrue = 0,
  kBoolFalse = 1,
  kByte = 2,
  kShort = 3,
  kInt = 4,
  kLong = 5,
  kBytes = 6,
  kString = 7,
  kTimestamp = 8,
  kUuid = 9,
};

struct EventStreamHeader {
  std::string name;
  HeaderType type = HeaderType::kString;
  int64_t integer = 0;  // kBoolTrue/kBoolFalse (1/0), kByte, kShort, kInt, kLong, kTimestamp
  std::string bytes;    // kBytes, kString, kUuid (16 bytes)
};

struct EventStreamMessage {
  std::vector<EventStreamHeader> headers;
  std::string payload;

  // The first header of that name, or nullptr.
  const EventStreamHeader* header(std::string_view name) const;
  // The value of a string header, or nullopt when absent or of another type. Views *this.
  std::optional<std::string_view> string_header(std::string_view name) const;
};

class EventStreamDecoder {
 public:
  explicit EventStreamDecoder(size_t max_message_size = kMaxEventStreamMessage)
      : max_message_size_(max_message_size) {}

  // Decodes `bytes`, appending each message they complete to `out` (not cleared).
  // Error (kInvalidArgument, or kResourceExhausted for the size limit): malformed input, now
  // or before; the error names what was wrong, never the bytes.
  Status feed(std::string_view bytes, std::vector<EventStreamMessage>& out);

  bool failed() const { return error_.has_value(); }
  // Bytes of an unfinished message are held: a body that ends now was cut mid-message.
  bool mid_message() const { return !pending_.empty(); }

 private:
  // Decodes one whole message (`msg` is exactly total-length bytes, CRCs not yet checked).
  Status decode(std::string_view msg, std::vector<EventStreamMessage>& out);
  // Length of the message starting at `prelude` (12 bytes), checked; error as feed().
  Result<size_t> message_length(std::string_view prelude);

  size_t max_message_size_;
  std::string pending_;  // bytes of a message that started in an earlier feed
  std::optional<Error> error_;
};

// CRC-32 (IEEE 802.3, as zlib and gzip compute it), continuing from `crc`.
uint32_t crc32_ieee(std::string_view bytes, uint32_t crc = 0);

// Encodes one message (for tests, benchmarks, and synthesising events); headers are written in
// the order given, integers big-endian, with both CRCs.
std::string encode_event_stream_message(const EventStreamMessage& msg);

}  // namespace km::meter
