// Server-sent events (the WHATWG HTML "event stream" format) from bytes that arrive in
// arbitrary fragments: AI providers stream their responses this way.
//
// Follows the specification's parsing rules: one leading UTF-8 BOM is skipped; lines end in
// CRLF, LF or CR (a CRLF split across two feeds is one line end); lines starting with ':' are
// comments; "field: value" loses one space after the colon, a line without a colon is a field
// with an empty value; "data" lines are joined with '\n'; an empty line dispatches the event
// unless no data line was seen; "id" sets the last event id (not when the value holds NUL),
// which persists into later events; "retry" and unknown fields are ignored. An event still
// open when the body ends is discarded (finish() says whether there was one).
//
// Bounded memory: the bytes held for the event being built (its data, name and the line being
// read) may not exceed max_event_size; past that the parser enters its error state, in which
// every later feed() fails without looking at its input. Bytes are not checked for UTF-8.
// Thread-safety: a single-owner state machine. No I/O, no exceptions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"

namespace km::meter {

inline constexpr size_t kMaxSseEventSize = 16u << 20;

struct SseEvent {
  std::string event;  // the "event" field; "message" when the event had none
  std::string data;   // data lines joined with '\n'
  std::string id;     // the last event id in force when the event was dispatched
};

class SseParser {
 public:
  explicit SseParser(size_t max_event_size = kMaxSseEventSize) : max_event_size_(max_event_size) {}

  // Parses `bytes` and appends each event they complete to `out` (which is not cleared).
  // Error (kResourceExhausted): an event grew past max_event_size, now or before.
  Status feed(std::string_view bytes, std::vector<SseEvent>& out);

  // The body ended. Returns true when an event (or a line of one) was open and is discarded.
  bool finish();

  bool failed() const { return failed_; }
  // Bytes held for the event being built; at most max_event_size.
  size_t buffered() const { return line_.size() + data_.size() + event_.size(); }

 private:
  void process_line(std::string_view line, std::vector<SseEvent>& out);
  bool over_limit(size_t extra) const { return buffered() + extra > max_event_size_; }

  size_t max_event_size_;
  std::string line_;        // a line that started in an earlier feed
  std::string data_;        // data lines so far, each followed by '\n'
  std::string event_;       // the event field so far
  std::string last_id_;
  bool have_data_ = false;  // a data line was seen (the data may still be empty)
  bool open_ = false;       // some field or comment line of an undispatched event was seen
  bool after_cr_ = false;   // the last byte was a CR: a following LF belongs to it
  size_t bom_matched_ = 0;  // bytes of a leading BOM seen so far
  bool bom_done_ = false;
  bool failed_ = false;
};

}  // namespace km::meter
