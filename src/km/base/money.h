// Money in km is integer micro-dollars (µ$, 10^-6 USD) everywhere it is stored or compared;
// these convert between that and the decimal text users type and read.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "km/base/result.h"

namespace km {

inline constexpr int64_t kMicrosPerUsd = 1'000'000;
// The largest amount parse_usd_micros() accepts: 10^9 USD.
inline constexpr int64_t kMaxUsdMicros = int64_t{1'000'000'000} * kMicrosPerUsd;

// Parses a non-negative decimal amount of USD ("5", "0.25", "$12.345678") into micro-dollars
// exactly (no floating point): at most six decimals, at most kMaxUsdMicros.
Result<int64_t> parse_usd_micros(std::string_view text);

// "1.234567" (six decimals, "-" for negative amounts): the exact value, for JSON.
std::string usd_decimal(int64_t micros);
// "$1.234567".
std::string format_usd(int64_t micros);
// "$1.23" with `decimals` (0-6) places, rounded half away from zero: for tables.
std::string format_usd_rounded(int64_t micros, int decimals);

}  // namespace km
