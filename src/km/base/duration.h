// Durations as written in profiles and on the command line: "30s", "45m", "8h", "2d",
// "4h30m", "1d12h", and "0" (which callers may read as "never").
//
// Grammar: "0" | (<digits><unit>)+ with units d, h, m, s, each at most once and in that order.
// Values are whole seconds; anything above kMaxDurationSeconds (100 years) is rejected so
// that arithmetic on expiry times cannot overflow.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "km/base/result.h"

namespace km {

inline constexpr int64_t kMaxDurationSeconds = int64_t{100} * 365 * 24 * 3600;

struct Duration {
  int64_t seconds = 0;
  bool is_zero() const { return seconds == 0; }
  friend auto operator<=>(const Duration&, const Duration&) = default;
};

// Errors carry a message suitable after "<path>: ", e.g. `missing unit in "90"; write 90s or 90m`.
Result<Duration> parse_duration(std::string_view text);

// Shortest canonical text: 16200 -> "4h30m", 0 -> "0", 172800 -> "2d".
std::string format_duration(Duration d);

}  // namespace km
