#include "km/enforcer/audit.h"

#include <unistd.h>

#include <cerrno>

#include "km/base/log.h"

namespace km::enforcer {

void AuditLog::emit(std::string_view kind, nlohmann::json fields) {
  nlohmann::json line = nlohmann::json::object();
  line["ts"] = log::utc_timestamp_now();
  line["sandbox"] = sandbox_;
  line["kind"] = kind;
  for (auto& [k, v] : fields.items()) line[k] = std::move(v);
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  ++events_;
  if (fd_ < 0) return;
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd_, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ++write_errors_;
      return;
    }
    off += static_cast<size_t>(n);
  }
}

}  // namespace km::enforcer
