// LineSplitter: newline-delimited records from a byte stream (a pipe an untrusted-enough writer
// fills), with a bound on what one line may hold. A line longer than the bound is delivered cut
// to the bound, with the number of bytes cut, once its end arrives; the reader never stops and
// never holds more than the bound. (The original's audit reader stopped for good at its first
// line over 64 KiB.)
//
// Pure code. Thread-safety: a value; one thread at a time.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace km::audit {

class LineSplitter {
 public:
  // `line` gets each line without its newline, and how many bytes of it were cut (0: whole).
  using Sink = std::function<void(std::string_view line, size_t cut)>;

  explicit LineSplitter(size_t max_line) : max_(max_line) {}

  void feed(std::string_view data, const Sink& line);
  // The end of the stream: a last line without a newline is delivered.
  void finish(const Sink& line);

  size_t buffered() const { return buf_.size(); }
  size_t max_line() const { return max_; }

 private:
  size_t max_;
  std::string buf_;
  size_t cut_ = 0;  // bytes dropped from the line being read
};

}  // namespace km::audit
