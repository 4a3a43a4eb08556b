#include "km/base/log.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace km::log {

std::string_view level_name(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "info";
}

bool parse_level(std::string_view text, Level* out) {
  for (Level l : {Level::kDebug, Level::kInfo, Level::kWarn, Level::kError}) {
    if (text == level_name(l)) {
      *out = l;
      return true;
    }
  }
  return false;
}

std::string utc_timestamp_now() {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto secs = time_point_cast<seconds>(now);
  auto ms = duration_cast<milliseconds>(now - secs).count();
  std::time_t t = system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms));
  return buf;
}

std::string Logger::format(Level level, std::string_view msg, const Fields& fields,
                           std::string_view sandbox) const {
  nlohmann::ordered_json line;
  line["ts"] = utc_timestamp_now();
  line["level"] = level_name(level);
  line["component"] = component_;
  if (!sandbox.empty()) line["sandbox"] = sandbox;
  line["msg"] = msg;
  for (const auto& [k, v] : fields) {
    if (k == "ts" || k == "level" || k == "component" || k == "sandbox" || k == "msg") {
      line["field." + k] = v;  // never let a field overwrite the envelope
    } else {
      line[k] = v;
    }
  }
  // Invalid UTF-8 in a message (e.g. a hostile name) is replaced, never thrown on.
  return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void Logger::log(Level level, std::string_view msg, const Fields& fields,
                 std::string_view sandbox) {
  if (level < min_level_) return;
  std::string text = format(level, msg, fields, sandbox);
  std::lock_guard<std::mutex> lock(mu_);
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report a logging failure
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace km::log
