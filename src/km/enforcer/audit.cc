#include "km/enforcer/audit.h"

#include <unistd.h>

#include <cerrno>

#include "km/base/log.h"

namespace km::enforcer {

void AuditLog::emit(std::string_view kind, nlohmann::json fields) {
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
