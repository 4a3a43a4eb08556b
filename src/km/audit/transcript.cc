#include "km/audit/transcript.h"

namespace km::audit {

namespace {

// The largest n' <= n that does not split a UTF-8 sequence of `s` (bytes that are not valid
// UTF-8 are cut anywhere: they are replaced when stored anyway).
size_t utf8_boundary(std::string_view s, size_t n) {
  if (n > s.size()) n = s.size();
  // The sequence holding byte n-1: cut after it if it is complete, else before it.
  size_t at = n;
  for (int i = 0; i < 4 && at > 0; ++i, --at) {
    unsigned char c = static_cast<unsigned char>(s[at - 1]);
    if ((c & 0xC0) == 0x80) continue;
    size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return n - (at - 1) >= len ? n : at - 1;
  }
  return n;  // not UTF-8: cut anywhere
}

}  // namespace

void TranscriptChunker::emit(size_t n, int64_t now_ms, std::vector<Chunk>& out) {
  if (n == 0) return;
  out.push_back(Chunk{since_, buf_.substr(0, n)});
  buf_.erase(0, n);
  since_ = buf_.empty() ? 0 : now_ms;
}

void TranscriptChunker::feed(std::string_view bytes, int64_t now_ms, std::vector<Chunk>& out) {
  if (bytes.empty()) return;
  if (buf_.empty()) since_ = now_ms;
  buf_.append(bytes);
  bytes_ += bytes.size();
  while (buf_.size() >= max_) {
    std::string_view head(buf_.data(), max_);
    size_t nl = head.find_last_of("\n\r");
    size_t n = nl != std::string_view::npos ? nl + 1 : utf8_boundary(buf_, max_);
    if (n == 0) n = max_;
    emit(n, now_ms, out);
  }
  tick(now_ms, out);
}

void TranscriptChunker::tick(int64_t now_ms, std::vector<Chunk>& out) {
  if (buf_.empty() || now_ms - since_ < delay_) return;
  size_t nl = buf_.find_last_of("\n\r");
  if (nl != std::string::npos) {
    emit(nl + 1, now_ms, out);
    if (buf_.empty() || now_ms - since_ < delay_ * 4) return;
  }
  if (now_ms - since_ >= delay_ * 4) emit(utf8_boundary(buf_, buf_.size()), now_ms, out);
}

void TranscriptChunker::finish(int64_t now_ms, std::vector<Chunk>& out) {
  (void)now_ms;
  if (buf_.empty()) return;
  out.push_back(Chunk{since_, std::move(buf_)});
  buf_.clear();
  since_ = 0;
}

}  // namespace km::audit
