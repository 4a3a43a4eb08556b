// TranscriptChunker: one direction of a terminal session (what was typed, or what was shown)
// cut into chunks for session events. A chunk ends at a line end where it can, so that a
// secret on one line reaches the redactor whole: a chunk is emitted when a line is complete and
// the oldest byte waiting is `delay_ms` old, or when `max_chunk` bytes wait (cut at the last
// newline in them, else at a UTF-8 character boundary); a partial line (a prompt, keystrokes
// not yet ended by Enter) waits up to four times `delay_ms`. finish() emits the rest.
//
// Pure code (the caller supplies the time). Thread-safety: a value; one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace km::audit {

class TranscriptChunker {
 public:
  struct Chunk {
    int64_t ts_ms = 0;  // when its first byte arrived
    std::string data;
  };

  explicit TranscriptChunker(size_t max_chunk = 4096, int64_t delay_ms = 500) : max_(max_chunk), delay_(delay_ms) {}

  void feed(std::string_view bytes, int64_t now_ms, std::vector<Chunk>& out);
  // Emits what is due at `now_ms`.
  void tick(int64_t now_ms, std::vector<Chunk>& out);
  void finish(int64_t now_ms, std::vector<Chunk>& out);

  // When the next tick could emit something (0: nothing waits).
  int64_t next_due() const { return buf_.empty() ? 0 : since_ + delay_; }
  uint64_t bytes() const { return bytes_; }

 private:
  void emit(size_t n, int64_t now_ms, std::vector<Chunk>& out);
  size_t max_;
  int64_t delay_;
  std::string buf_;
  int64_t since_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace km::audit
