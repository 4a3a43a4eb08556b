#include "km/enforcer/audit.h"

#include <unistd.h>

#include <cerrno>

#include "km/base/log.h"

namespace km::enforcer {

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

void AuditLog::append(std::string_view kind, nlohmann::json fields) {
  // ts, sandbox and kind first, then the fields: one line, one write.
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
  ++events_;
  pending_ += text;
  if (!post_) return flush();
  if (!flush_scheduled_) {
    flush_scheduled_ = true;
    post_([this] {
      flush_scheduled_ = false;
      flush();
    });
  }
}

void AuditLog::flush() {
  if (pending_.empty() || fd_ < 0) {
    pending_.clear();
    return;
  }
  size_t off = 0;
  while (off < pending_.size()) {
    ssize_t n = ::write(fd_, pending_.data() + off, pending_.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ++write_errors_;
      break;
    }
    off += static_cast<size_t>(n);
  }
  pending_.clear();
}

}  // namespace km::enforcer
