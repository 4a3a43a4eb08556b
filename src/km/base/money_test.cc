#include "km/base/money.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace km {
namespace {

TEST(Money, ParsesDecimalUsdExactly) {
  EXPECT_EQ(*parse_usd_micros("5"), 5'000'000);
  EXPECT_EQ(*parse_usd_micros("0.1"), 100'000);  // 0.1 has no exact binary form; no drift here
  EXPECT_EQ(*parse_usd_micros("$12.345678"), 12'345'678);
  EXPECT_EQ(*parse_usd_micros(".5"), 500'000);
  EXPECT_EQ(*parse_usd_micros("3."), 3'000'000);
  EXPECT_EQ(*parse_usd_micros("0"), 0);
  EXPECT_EQ(*parse_usd_micros("000000000002.5"), 2'500'000);
  EXPECT_EQ(*parse_usd_micros("1000000000"), kMaxUsdMicros);
  for (const char* bad : {"", ".", "$", "-1", "1e3", "1.2345678", "1,000", "0x10", " 1", "1000000000.000001", "99999999999"}) {
    auto r = parse_usd_micros(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_FALSE(r.error().hint().empty());
    }
  }
}

TEST(Money, FormatsMicrosAsUsd) {
  EXPECT_EQ(usd_decimal(1'234'567), "1.234567");
  EXPECT_EQ(usd_decimal(5), "0.000005");
  EXPECT_EQ(usd_decimal(-1), "-0.000001");
  EXPECT_EQ(usd_decimal(INT64_MIN), "-9223372036854.775808");
  EXPECT_EQ(format_usd(10'000'000), "$10.000000");
  EXPECT_EQ(format_usd(-2'500'000), "-$2.500000");
  EXPECT_EQ(format_usd_rounded(1'234'567, 2), "$1.23");
  EXPECT_EQ(format_usd_rounded(1'235'000, 2), "$1.24");  // half away from zero
  EXPECT_EQ(format_usd_rounded(999, 4), "$0.0010");
  EXPECT_EQ(format_usd_rounded(400, 2), "$0.00");
  EXPECT_EQ(format_usd_rounded(-400, 2), "$0.00");
  EXPECT_EQ(format_usd_rounded(-1'500'000, 0), "-$2");
  EXPECT_EQ(format_usd_rounded(7, 6), "$0.000007");
}

}  // namespace
}  // namespace km
