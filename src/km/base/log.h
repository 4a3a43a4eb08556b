// JSON-lines logging for daemons (STYLE.md): one object per line with ts (UTC, RFC 3339 with
// milliseconds), level, component, sandbox (when known), msg, and any extra fields.
//
// Log lines are diagnostics, not audit events. Callers must not pass secrets.
// Thread-safety: Logger::log may be called from any thread; each line is written with one
// write(2) under a mutex, so lines never interleave.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace km::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

std::string_view level_name(Level level);
// Parses "debug", "info", "warn", "error".
bool parse_level(std::string_view text, Level* out);

using Fields = std::vector<std::pair<std::string, nlohmann::json>>;

class Logger {
 public:
  // Writes to `fd` (not owned; stderr by default).
  explicit Logger(std::string component, int fd = 2) : component_(std::move(component)), fd_(fd) {}

  void set_min_level(Level level) { min_level_ = level; }
  Level min_level() const { return min_level_; }

  void log(Level level, std::string_view msg, const Fields& fields = {},
           std::string_view sandbox = {});
  void debug(std::string_view msg, const Fields& f = {}) { log(Level::kDebug, msg, f); }
  void info(std::string_view msg, const Fields& f = {}) { log(Level::kInfo, msg, f); }
  void warn(std::string_view msg, const Fields& f = {}) { log(Level::kWarn, msg, f); }
  void error(std::string_view msg, const Fields& f = {}) { log(Level::kError, msg, f); }

  // Builds the line without writing it (tests, and callers that route lines elsewhere).
  std::string format(Level level, std::string_view msg, const Fields& fields,
                     std::string_view sandbox) const;

 private:
  std::string component_;
  int fd_;
  Level min_level_ = Level::kInfo;
  std::mutex mu_;
};

// Current time as "2026-11-24T01:02:03.456Z".
std::string utc_timestamp_now();

}  // namespace km::log
