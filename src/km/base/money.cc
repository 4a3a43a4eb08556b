#include "km/base/money.h"

#include <cstdlib>

namespace km {

Result<int64_t> parse_usd_micros(std::string_view text) {
  std::string_view s = text;
  auto bad = [&](const std::string& why) {
    return fail(Error(ErrorCode::kInvalidArgument, "invalid amount " + std::string(text) + ": " + why)
                    .with_hint("give USD as a decimal number, e.g. 5 or 0.25"));
  };
  if (!s.empty() && s.front() == '$') s.remove_prefix(1);
  size_t dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
  if (whole.empty() && frac.empty()) return bad("no digits");
  for (std::string_view part : {whole, frac}) {
    if (part.find_first_not_of("0123456789") != std::string_view::npos) return bad("expected digits and at most one '.'");
  }
  if (frac.size() > 6) return bad("at most six decimal places (a micro-dollar)");
  while (whole.size() > 1 && whole.front() == '0') whole.remove_prefix(1);
  if (whole.size() > 10) return bad("at most $1,000,000,000");
  int64_t micros = 0;
  for (char c : whole) micros = micros * 10 + (c - '0');
  micros *= kMicrosPerUsd;
  int64_t scale = kMicrosPerUsd / 10;
  for (char c : frac) {
    micros += (c - '0') * scale;
    scale /= 10;
  }
  if (micros > kMaxUsdMicros) return bad("at most $1,000,000,000");
  return micros;
}

std::string usd_decimal(int64_t micros) {
  // Magnitude as unsigned, so INT64_MIN is printed too.
  uint64_t m = micros < 0 ? 0 - static_cast<uint64_t>(micros) : static_cast<uint64_t>(micros);
  std::string frac = std::to_string(m % kMicrosPerUsd);
  return std::string(micros < 0 ? "-" : "") + std::to_string(m / kMicrosPerUsd) + "." + std::string(6 - frac.size(), '0') + frac;
}

std::string format_usd(int64_t micros) {
  std::string d = usd_decimal(micros);
  return d.front() == '-' ? "-$" + d.substr(1) : "$" + d;
}

std::string format_usd_rounded(int64_t micros, int decimals) {
  if (decimals < 0) decimals = 0;
  if (decimals > 6) decimals = 6;
  uint64_t m = micros < 0 ? 0 - static_cast<uint64_t>(micros) : static_cast<uint64_t>(micros);
  uint64_t unit = 1;
  for (int i = decimals; i < 6; ++i) unit *= 10;
  uint64_t units = (m + unit / 2) / unit;  // in 10^-decimals USD
  uint64_t per_usd = static_cast<uint64_t>(kMicrosPerUsd) / unit;
  std::string out = std::string(micros < 0 && units ? "-$" : "$") + std::to_string(units / per_usd);
  if (decimals > 0) {
    std::string frac = std::to_string(units % per_usd);
    out += "." + std::string(static_cast<size_t>(decimals) - frac.size(), '0') + frac;
  }
  return out;
}

}  // namespace km
