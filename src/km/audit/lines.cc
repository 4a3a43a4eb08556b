#include "km/audit/lines.h"

namespace km::audit {

void LineSplitter::feed(std::string_view data, const Sink& line) {
  while (!data.empty()) {
    size_t nl = data.find('\n');
    std::string_view part = nl == std::string_view::npos ? data : data.substr(0, nl);
    size_t room = max_ - std::min(max_, buf_.size());
    if (part.size() > room) {
      cut_ += part.size() - room;
      part = part.substr(0, room);
    }
    if (nl == std::string_view::npos) {
      buf_.append(part);
      return;
    }
    if (buf_.empty()) {
      line(part, cut_);  // the common case: a whole line in one read, no copy
    } else {
      buf_.append(part);
      line(buf_, cut_);
      buf_.clear();
    }
    cut_ = 0;
    data.remove_prefix(nl + 1);
  }
}

void LineSplitter::finish(const Sink& line) {
  if (!buf_.empty() || cut_ > 0) line(buf_, cut_);
  buf_.clear();
  cut_ = 0;
}

}  // namespace km::audit
