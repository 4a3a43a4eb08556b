#include "km/meter/sse.h"

namespace km::meter {

namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";

Unexpected<Error> too_large(size_t limit) {
  return fail(ErrorCode::kResourceExhausted,
              "server-sent event larger than " + std::to_string(limit) + " bytes");
}

}  // namespace

Status SseParser::feed(std::string_view bytes, std::vector<SseEvent>& out) {
  if (failed_) return too_large(max_event_size_);
  if (!bom_done_) {
    while (!bytes.empty() && bom_matched_ < kBom.size() && bytes[0] == kBom[bom_matched_]) {
      ++bom_matched_;
      bytes.remove_prefix(1);
    }
    if (bom_matched_ == kBom.size()) {
      bom_done_ = true;
    } else if (bytes.empty()) {
      return ok();  // maybe the rest of a BOM comes next
    } else {
      // Not a BOM after all: the bytes matched so far are content.
      bom_done_ = true;
      std::string_view partial = kBom.substr(0, bom_matched_);
      bom_matched_ = 0;
      std::string joined(partial);
      joined.append(bytes);
      return feed(joined, out);
    }
  }

  size_t i = 0;
  const size_t n = bytes.size();
  if (after_cr_ && n > 0) {
    after_cr_ = false;
    if (bytes[0] == '\n') i = 1;
  }
  while (i < n) {
    size_t end = bytes.find_first_of("\r\n", i);
    if (end == std::string_view::npos) {
      if (over_limit(n - i)) {
        failed_ = true;
        return too_large(max_event_size_);
      }
      line_.append(bytes.substr(i));
      break;
    }
    std::string_view line = bytes.substr(i, end - i);
    if (over_limit(line.size())) {
      failed_ = true;
      return too_large(max_event_size_);
    }
    if (!line_.empty()) {
      line_.append(line);
      std::string whole = std::move(line_);
      line_.clear();
      process_line(whole, out);
    } else {
      process_line(line, out);
    }
    if (bytes[end] == '\r') {
      if (end + 1 < n) {
        if (bytes[end + 1] == '\n') ++end;
      } else {
        after_cr_ = true;
      }
    }
    i = end + 1;
  }
  return ok();
}

void SseParser::process_line(std::string_view line, std::vector<SseEvent>& out) {
  if (line.empty()) {
    if (have_data_) {
      SseEvent ev;
      ev.event = event_.empty() ? std::string("message") : std::move(event_);
      data_.pop_back();  // the '\n' after the last data line
      ev.data = std::move(data_);
      ev.id = last_id_;
      out.push_back(std::move(ev));
    }
    data_.clear();
    event_.clear();
    have_data_ = false;
    open_ = false;
    return;
  }
  open_ = true;
  if (line[0] == ':') return;  // comment
  size_t colon = line.find(':');
  std::string_view name = line.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (name == "event") {
    event_.assign(value);
  } else if (name == "data") {
    data_.append(value);
    data_ += '\n';
    have_data_ = true;
  } else if (name == "id") {
    if (value.find('\0') == std::string_view::npos) last_id_.assign(value);
  }
  // "retry" and unknown fields: ignored, as the specification says.
}

bool SseParser::finish() {
  bool open = open_ || !line_.empty() || (!bom_done_ && bom_matched_ > 0 && bom_matched_ < kBom.size());
  line_.clear();
  data_.clear();
  event_.clear();
  have_data_ = false;
  open_ = false;
  return open;
}

}  // namespace km::meter
