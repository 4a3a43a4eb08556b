#include "km/enforcer/audit.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "km/base/log.h"

namespace km::enforcer {

namespace {
constexpr size_t kEagerFlushBytes = 64 * 1024;
}  // namespace

AuditLog::AuditLog(std::string sandbox, int fd) : sandbox_(std::move(sandbox)), fd_(fd) {
  if (fd_ >= 0) {
    int fl = ::fcntl(fd_, F_GETFL);
    if (fl >= 0) ::fcntl(fd_, F_SETFL, fl | O_NONBLOCK);
  }
}

void AuditLog::emit(std::string_view kind, nlohmann::json fields) {
  if (rate_ > 0) {
    auto now = std::chrono::steady_clock::now();
    auto it = buckets_.find(kind);
    if (it == buckets_.end()) it = buckets_.emplace(std::string(kind), Bucket{rate_ * 10, now, 0}).first;
    Bucket& b = it->second;
    b.tokens = std::min(rate_ * 10, b.tokens + rate_ * std::chrono::duration<double>(now - b.last).count());
    b.last = now;
    if (b.tokens < 1) {
      ++b.suppressed;
      ++suppressed_total_;
      return;
    }
    b.tokens -= 1;
    if (b.suppressed > 0) {
      uint64_t n = b.suppressed;
      b.suppressed = 0;
      append("suppressed", {{"of", std::string(kind)}, {"count", n}, {"reason", "more events of this kind than the audit takes per second"}});
    }
  }
  append(kind, std::move(fields));
}

std::string AuditLog::line(std::string_view kind, const nlohmann::json& fields) const {
  // ts, sandbox and kind first, then the fields: one line.
  std::string text;
  text.reserve(256);
  text += "{\"ts\":\"" + log::utc_timestamp_now() + "\",\"sandbox\":";
  text += nlohmann::json(sandbox_).dump();
  text += ",\"kind\":";
  text += nlohmann::json(std::string(kind)).dump();
  for (auto& [k, v] : fields.items()) {
    if (k == "ts" || k == "sandbox" || k == "kind") continue;
    text += ",";
    text += nlohmann::json(k).dump();
    text += ":";
    text += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  text += "}\n";
  return text;
}

void AuditLog::report_drops() {
  if (dropped_unreported_ == 0) return;
  std::string text = line("audit", {{"dropped", dropped_unreported_},
                                    {"dropped_total", dropped_},
                                    {"reason", "the audit pipe to kmd was full; events were dropped, not recorded"}});
  if (pending_.size() + text.size() > max_pending_) return;  // still no room: reported later
  pending_ += text;
  dropped_unreported_ = 0;
}

void AuditLog::append(std::string_view kind, nlohmann::json fields) {
  std::string text = line(kind, fields);
  report_drops();
  if (pending_.size() + text.size() > max_pending_ || dropped_unreported_ > 0) {
    // The pipe is full and what waits has reached its bound: this event is lost, and counted.
    ++dropped_;
    ++dropped_unreported_;
    return;
  }
  ++events_;
  pending_ += text;
  // A large batch (a burst of kernel events in one callback) goes to the pipe as it grows,
  // so the pipe as well as the buffer takes the burst.
  if (!post_ || pending_.size() >= kEagerFlushBytes) return flush();
  if (!flush_scheduled_) {
    flush_scheduled_ = true;
    post_([this] {
      flush_scheduled_ = false;
      flush();
    });
  }
}

void AuditLog::flush() {
  if (fd_ < 0) {
    pending_.clear();
    return;
  }
  for (int round = 0; round < 2; ++round) {
    size_t off = 0;
    while (off < pending_.size()) {
      ssize_t n = ::write(fd_, pending_.data() + off, pending_.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;  // the pipe is full: the rest waits
      if (n <= 0) {
        // Not a pipe that is merely full: what waited is lost, line by line.
        ++write_errors_;
        uint64_t lost = static_cast<uint64_t>(std::count(pending_.begin() + static_cast<long>(off), pending_.end(), '\n'));
        dropped_ += lost;
        dropped_unreported_ += lost;
        off = pending_.size();
        break;
      }
      off += static_cast<size_t>(n);
    }
    pending_.erase(0, off);
    // Room again: say what was lost (written in the second round).
    if (round == 0 && dropped_unreported_ > 0 && pending_.empty() && write_errors_ == 0) {
      report_drops();
      continue;
    }
    break;
  }
  if (!pending_.empty() && later_ && !retry_scheduled_) {
    retry_scheduled_ = true;
    later_([this] {
      retry_scheduled_ = false;
      flush();
    });
  }
}

}  // namespace km::enforcer
