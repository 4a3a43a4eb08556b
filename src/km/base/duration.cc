#include "km/base/duration.h"

#include <cctype>

#include "km/base/strings.h"

namespace km {

namespace {

int unit_rank(char u) {
  switch (u) {
    case 'd': return 0;
    case 'h': return 1;
    case 'm': return 2;
    case 's': return 3;
    default: return -1;
  }
}

int64_t unit_seconds(char u) {
  switch (u) {
    case 'd': return 86400;
    case 'h': return 3600;
    case 'm': return 60;
    default: return 1;
  }
}

std::string quote(std::string_view s) { return quoted(s, 40); }

}  // namespace

Result<Duration> parse_duration(std::string_view text) {
  if (text.empty()) return fail(ErrorCode::kInvalidArgument, "empty duration");
  if (text == "0") return Duration{0};
  int64_t total = 0;
  int last_rank = -1;
  size_t i = 0;
  bool any = false;
  while (i < text.size()) {
    size_t start = i;
    int64_t n = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      n = n * 10 + (text[i] - '0');
      if (n > kMaxDurationSeconds) {
        return fail(ErrorCode::kInvalidArgument,
                    "duration " + quote(text) + " is too long (at most 100 years)");
      }
      ++i;
    }
    if (i == start) {
      return fail(ErrorCode::kInvalidArgument,
                  "invalid duration " + quote(text) +
                      "; use a number and a unit (s, m, h, d), e.g. 30s, 45m, 8h, 2d, 4h30m");
    }
    if (i == text.size()) {
      if (!any) {
        std::string num(text.substr(start));
        return fail(ErrorCode::kInvalidArgument, "missing unit in " + quote(text) + "; write " +
                                                     num + "s, " + num + "m or " + num + "h");
      }
      return fail(ErrorCode::kInvalidArgument, "missing unit after the last number in " +
                                                   quote(text));
    }
    char u = text[i];
    int rank = unit_rank(u);
    if (rank < 0) {
      return fail(ErrorCode::kInvalidArgument,
                  "unknown unit '" + std::string(1, u) + "' in " + quote(text) +
                      "; units are s, m, h and d");
    }
    if (rank <= last_rank) {
      return fail(ErrorCode::kInvalidArgument,
                  "units in " + quote(text) +
                      " must each appear once, largest first (d, h, m, s), e.g. 1d12h or 4h30m");
    }
    last_rank = rank;
    total += n * unit_seconds(u);
    if (total > kMaxDurationSeconds) {
      return fail(ErrorCode::kInvalidArgument,
                  "duration " + quote(text) + " is too long (at most 100 years)");
    }
    any = true;
    ++i;
  }
  return Duration{total};
}

std::string format_duration(Duration d) {
  if (d.seconds <= 0) return "0";
  std::string out;
  int64_t s = d.seconds;
  for (char u : {'d', 'h', 'm', 's'}) {
    int64_t per = unit_seconds(u);
    if (s >= per) {
      out += std::to_string(s / per);
      out += u;
      s %= per;
    }
  }
  return out;
}

}  // namespace km
