#include "km/meter/price.h"

#include <gtest/gtest.h>

#include <cmath>

#include "km/base/file.h"

namespace km::meter {
namespace {

constexpr int64_t kUsd = 1'000'000;

const PriceTable& table() { return PriceTable::builtin(); }

TEST(PriceTable, BuiltinParsesAndMatchesTheShippedFile) {
  auto text = read_file(std::string(KM_SOURCE_DIR) + "/src/km/meter/prices.json", 1 << 20);
  ASSERT_TRUE(text) << text.error().to_string();
  auto parsed = PriceTable::from_json(*text);
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  auto a = parsed->lookup(Provider::kOpenAI, "gpt-5.4-mini");
  auto b = table().lookup(Provider::kOpenAI, "gpt-5.4-mini");
  EXPECT_EQ(a.price, b.price);
}

TEST(PriceTable, AnthropicListPrices) {
  struct Case {
    const char* model;
    Price price;
  };
  for (const Case& c : {
           Case{"claude-opus-4-7", {5 * kUsd, 25 * kUsd, 500'000, 6'250'000}},
           Case{"claude-opus-4-6", {5 * kUsd, 25 * kUsd, 500'000, 6'250'000}},
           Case{"claude-opus-4-5-20251101", {5 * kUsd, 25 * kUsd, 500'000, 6'250'000}},
           Case{"claude-opus-4-1-20250805", {15 * kUsd, 75 * kUsd, 1'500'000, 18'750'000}},
           Case{"claude-opus-4-20250514", {15 * kUsd, 75 * kUsd, 1'500'000, 18'750'000}},
           Case{"claude-sonnet-4-5-20250929", {3 * kUsd, 15 * kUsd, 300'000, 3'750'000}},
           Case{"claude-sonnet-4-6", {3 * kUsd, 15 * kUsd, 300'000, 3'750'000}},
           Case{"claude-sonnet-4-20250514", {3 * kUsd, 15 * kUsd, 300'000, 3'750'000}},
           Case{"claude-3-7-sonnet-latest", {3 * kUsd, 15 * kUsd, 300'000, 3'750'000}},
           Case{"claude-haiku-4-5-20251001", {1 * kUsd, 5 * kUsd, 100'000, 1'250'000}},
           Case{"claude-3-5-haiku-20241022", {800'000, 4 * kUsd, 80'000, 1'000'000}},
           Case{"claude-3-haiku-20240307", {250'000, 1'250'000, 25'000, 312'500}},
       }) {
    auto l = table().lookup(Provider::kAnthropic, c.model);
    EXPECT_EQ(l.how, PriceTable::Lookup::kExact) << c.model;
    EXPECT_EQ(l.price, c.price) << c.model;
    // Bedrock's Anthropic models cost the same.
    auto b = table().lookup(Provider::kBedrock, c.model);
    EXPECT_EQ(b.price, c.price) << c.model;
    EXPECT_EQ(b.how, PriceTable::Lookup::kExact) << c.model;
  }
}

TEST(PriceTable, OpenAIListPrices) {
  struct Case {
    const char* model;
    int64_t input, output, cached;
  };
  for (const Case& c : {Case{"gpt-5.5", 5'000'000, 30'000'000, 500'000},
                        Case{"gpt-5.4", 2'500'000, 15'000'000, 250'000},
                        Case{"gpt-5.4-mini", 750'000, 4'500'000, 75'000},
                        Case{"gpt-5.4-nano", 200'000, 1'250'000, 20'000},
                        Case{"gpt-5-2025-08-07", 1'250'000, 10'000'000, 125'000},
                        Case{"gpt-5-mini", 250'000, 2'000'000, 25'000},
                        Case{"gpt-4.1-2025-04-14", 2'000'000, 8'000'000, 500'000},
                        Case{"gpt-4.1-mini", 400'000, 1'600'000, 100'000},
                        Case{"gpt-4o-2024-08-06", 2'500'000, 10'000'000, 1'250'000},
                        Case{"gpt-4o-mini-2024-07-18", 150'000, 600'000, 75'000},
                        Case{"o1", 15'000'000, 60'000'000, 7'500'000},
                        Case{"o3-2025-04-16", 2'000'000, 8'000'000, 500'000},
                        Case{"o3-mini", 1'100'000, 4'400'000, 275'000},
                        Case{"O4-MINI", 1'100'000, 4'400'000, 275'000}}) {
    auto l = table().lookup(Provider::kOpenAI, c.model);
    EXPECT_EQ(l.how, PriceTable::Lookup::kExact) << c.model;
    EXPECT_EQ(l.price.input, c.input) << c.model;
    EXPECT_EQ(l.price.output, c.output) << c.model;
    EXPECT_EQ(l.price.cache_read, c.cached) << c.model;
  }
}

TEST(PriceTable, FamiliesAndFallback) {
  auto l = table().lookup(Provider::kAnthropic, "claude-opus-5-20270101");
  EXPECT_EQ(l.how, PriceTable::Lookup::kFamily);
  EXPECT_EQ(l.matched, "claude-opus-4-1");
  l = table().lookup(Provider::kBedrock, "claude-sonnet-5");
  EXPECT_EQ(l.how, PriceTable::Lookup::kFamily);
  EXPECT_EQ(l.matched, "claude-sonnet-4-5");
  l = table().lookup(Provider::kAnthropic, "claude-haiku-9");
  EXPECT_EQ(l.matched, "claude-haiku-4-5");
  l = table().lookup(Provider::kOpenAI, "gpt-5.4-mini-2026-03-01");
  EXPECT_EQ(l.how, PriceTable::Lookup::kExact);
  l = table().lookup(Provider::kOpenAI, "gpt-5.4-nano-2026-01-01");
  EXPECT_EQ(l.how, PriceTable::Lookup::kExact);
  l = table().lookup(Provider::kOpenAI, "gpt-5.4-turbo");
  EXPECT_EQ(l.how, PriceTable::Lookup::kFamily);
  EXPECT_EQ(l.matched, "gpt-5.4");
  l = table().lookup(Provider::kOpenAI, "gpt-5-codex");
  EXPECT_EQ(l.matched, "gpt-5.5");  // the dearest of the family, never less
  l = table().lookup(Provider::kOpenAI, "gpt-4.1-nano");
  EXPECT_EQ(l.matched, "gpt-4.1");
  l = table().lookup(Provider::kOpenAI, "gpt-4o-mini-audio-preview");
  EXPECT_EQ(l.matched, "gpt-4o-mini");
  l = table().lookup(Provider::kOpenAI, "o4-something");
  EXPECT_EQ(l.matched, "o4-mini");

  l = table().lookup(Provider::kOpenAI, "davinci-002");
  EXPECT_EQ(l.how, PriceTable::Lookup::kFallback);
  EXPECT_EQ(l.matched, "o1");
  EXPECT_EQ(l.price.output, 60 * kUsd);
  l = table().lookup(Provider::kAnthropic, "");
  EXPECT_EQ(l.how, PriceTable::Lookup::kFallback);
  EXPECT_EQ(l.price.output, 75 * kUsd);
  l = table().lookup(Provider::kBedrock, "application-inference-profile/a1b2c3");
  EXPECT_EQ(l.how, PriceTable::Lookup::kFallback);
  EXPECT_EQ(l.price.output, 75 * kUsd);
  l = table().lookup(Provider::kBedrock, "amazon.nova-pro");
  EXPECT_EQ(l.how, PriceTable::Lookup::kFallback);
}

TEST(PriceTable, OverrideReplacesAndExtends) {
  auto o = PriceTable::from_json(R"({
    "version": 1,
    "providers": {
      "openai": {
        "models": {"gpt-5.5": {"input": 4, "output": 20}, "gpt-5-pro": {"input": 15, "output": 120, "cache_read": 15}},
        "families": [{"prefix": "gpt-5-pro", "price_of": "gpt-5-pro"}]
      },
      "bedrock": {
        "models": {"amazon.nova-pro": {"input": 0.8, "output": 3.2, "cache_read": 0.2}},
        "families": [{"prefix": "amazon.nova", "price_of": "amazon.nova-pro"}]
      }
    },
    "compute": {"local_vcpu_hour": 0.05, "instance_types": {"c7i.large": 0.08925}}
  })");
  ASSERT_TRUE(o) << o.error().to_string();
  PriceTable t = table().merged(*o);
  auto l = t.lookup(Provider::kOpenAI, "gpt-5.5");
  EXPECT_EQ(l.price, (Price{4 * kUsd, 20 * kUsd, 4 * kUsd, 5 * kUsd}));  // defaults: read = input, write = 1.25x
  l = t.lookup(Provider::kOpenAI, "gpt-5-pro-2026-01-01");
  EXPECT_EQ(l.how, PriceTable::Lookup::kExact);
  EXPECT_EQ(l.price.output, 120 * kUsd);
  l = t.lookup(Provider::kOpenAI, "gpt-5-pro-max");
  EXPECT_EQ(l.how, PriceTable::Lookup::kFamily);  // the override's family comes before "gpt-5"
  EXPECT_EQ(l.matched, "gpt-5-pro");
  EXPECT_EQ(t.lookup(Provider::kOpenAI, "gpt-4o").price.input, 2'500'000);  // untouched
  l = t.lookup(Provider::kBedrock, "amazon.nova-pro");
  EXPECT_EQ(l.how, PriceTable::Lookup::kExact);
  EXPECT_EQ(l.price.cache_read, 200'000);
  EXPECT_EQ(t.lookup(Provider::kBedrock, "amazon.nova-premier").matched, "amazon.nova-pro");
  EXPECT_EQ(t.lookup(Provider::kBedrock, "claude-sonnet-4-5").price.input, 3 * kUsd);  // still inherited
  EXPECT_EQ(t.compute_rate_micros_per_hour("local", 2), 100'000);
  EXPECT_EQ(t.compute_rate_micros_per_hour("c7i.large", 2), 89'250);
  EXPECT_EQ(t.compute_rate_micros_per_hour("t3.medium", 2), 41'600);
  // The builtin table itself is unchanged.
  EXPECT_EQ(table().lookup(Provider::kOpenAI, "gpt-5.5").price.input, 5 * kUsd);
}

TEST(PriceTable, ComputeRates) {
  EXPECT_EQ(table().compute_rate_micros_per_hour("local", 1), 20'800);
  EXPECT_EQ(table().compute_rate_micros_per_hour("local", 0.5), 20'800);
  EXPECT_EQ(table().compute_rate_micros_per_hour("local", 4), 83'200);
  EXPECT_EQ(table().compute_rate_micros_per_hour("local", 1.1), 22'880);
  EXPECT_EQ(table().compute_rate_micros_per_hour("local", 2.5), 52'000);
  EXPECT_EQ(table().compute_rate_micros_per_hour("LOCAL", std::nan("")), 20'800);
  EXPECT_EQ(table().compute_rate_micros_per_hour("t3.medium", 2), 41'600);
  EXPECT_EQ(table().compute_rate_micros_per_hour("t3.large", 2), 83'200);
  EXPECT_EQ(table().compute_rate_micros_per_hour("m5.large", 2), 96'000);
  EXPECT_EQ(table().compute_rate_micros_per_hour("x9.huge", 2), 96'000);  // unknown: the dearest listed
}

std::string error_of(std::string_view json) {
  auto t = PriceTable::from_json(json);
  return t ? "" : t.error().message();
}

TEST(PriceTable, ErrorsNameTheJsonPath) {
  EXPECT_EQ(error_of(R"({"version":1,"providers":{"openai":{"models":{"gpt-4.1":{"input":"2","output":8}}}}})"),
            "prices: providers.openai.models[\"gpt-4.1\"].input: expected a number of US dollars, got string");
  EXPECT_EQ(error_of(R"({"version":1,"providers":{"anthropic":{"models":{"x":{"input":1}}}}})"),
            "prices: providers.anthropic.models.x.output: missing");
  EXPECT_EQ(error_of(R"({"version":1,"providers":{"anthropic":{"models":{"x":{"input":-1,"output":1}}}}})"),
            "prices: providers.anthropic.models.x.input: must not be negative");
  EXPECT_EQ(error_of(R"({"version":1,"providers":{"anthropic":{"models":{"x":{"input":0.0000001,"output":1}}}}})"),
            "prices: providers.anthropic.models.x.input: more than 6 decimal places");
  EXPECT_EQ(error_of(R"({"version":1,"providers":{"anthropic":{"models":{"x":{"input":1,"output":1,"cached":1}}}}})"),
            "prices: providers.anthropic.models.x.cached: unknown key");
  EXPECT_EQ(error_of(R"({"version":1,"providers":{"azure":{}}})"),
            "prices: providers.azure: unknown provider (anthropic, openai or bedrock)");
  EXPECT_EQ(error_of(R"({"version":1,"providers":{"openai":{"families":[{"prefix":"gpt-9","price_of":"gpt-9"}]}}})"),
            "prices: providers.openai.families[0].price_of: names no model of openai");
  EXPECT_EQ(error_of(R"({"version":1,"providers":{"openai":{"families":[{"prefix":"a","contains":"b","price_of":"o1"}]}}})"),
            "prices: providers.openai.families[0]: needs exactly one of prefix and contains");
  EXPECT_EQ(error_of(R"({"version":1,"providers":{"anthropic":{"inherit":"bedrock"}}})"),
            "prices: providers.anthropic.inherit: inherits in a cycle");
  EXPECT_EQ(error_of(R"({"version":1,"providers":{"openai":{"inherit":"openai"}}})"),
            "prices: providers.openai.inherit: a provider cannot inherit from itself");
  EXPECT_EQ(error_of(R"({"version":2})"), "prices: version: unsupported; this km reads version 1");
  EXPECT_EQ(error_of(R"({"providers":{}})"), "prices: version: missing (must be 1)");
  EXPECT_EQ(error_of(R"({"version":1,"extra":true})"), "prices: extra: unknown key");
  EXPECT_EQ(error_of(R"({"version":1,"compute":{"local_vcpu_hour":"cheap"}})"),
            "prices: compute.local_vcpu_hour: expected a number of US dollars, got string");
  EXPECT_EQ(error_of("{\n  \"version\": 1,\n  \"providers\": {,}\n}"), "prices: JSON syntax error at line 3, column 17");
  EXPECT_EQ(error_of("[]"), "prices: (top level): expected an object, got array");
  EXPECT_EQ(error_of(""), "prices: JSON syntax error at line 1, column 1");
}

TEST(PriceTable, FamilyMayNameABuiltinModel) {
  auto o = PriceTable::from_json(R"({"version":1,"providers":{"openai":{"families":[{"contains":"codex","price_of":"gpt-5"}]}}})");
  ASSERT_TRUE(o) << o.error().to_string();
  auto l = table().merged(*o).lookup(Provider::kOpenAI, "gpt-5-codex");
  EXPECT_EQ(l.how, PriceTable::Lookup::kFamily);
  EXPECT_EQ(l.matched, "gpt-5");
}

TEST(PriceTable, EmptyTableNeverPricesAtZero) {
  auto t = PriceTable::from_json(R"({"version":1})");
  ASSERT_TRUE(t);
  auto l = t->lookup(Provider::kOpenAI, "gpt-4o");
  EXPECT_EQ(l.how, PriceTable::Lookup::kFallback);
  EXPECT_EQ(l.price, kLastResortPrice);
}

TEST(CostMicros, ExactAndRoundedUp) {
  Price sonnet{3 * kUsd, 15 * kUsd, 300'000, 3'750'000};
  // 472 x 3 + 89 x 15 + 20480 x 0.3 + 1024 x 3.75 = 1416 + 1335 + 6144 + 3840 = 12735 µ$
  EXPECT_EQ(cost_micros(Usage{472, 89, 20480, 1024, 0}, sonnet), 12'735);
  // 1 token at $0.25 per million is 0.25 µ$: rounded up to 1.
  EXPECT_EQ(cost_micros(Usage{1, 0, 0, 0, 0}, Price{250'000, 0, 0, 0}), 1);
  EXPECT_EQ(cost_micros(Usage{}, sonnet), 0);
  // Reasoning is inside output and not charged again.
  EXPECT_EQ(cost_micros(Usage{0, 1'000'000, 0, 0, 500'000}, sonnet), 15 * kUsd);
  // OpenAI gpt-4o-mini: 176 uncached + 1024 cached + 300 output.
  EXPECT_EQ(cost_micros(Usage{176, 300, 1024, 0, 128}, Price{150'000, 600'000, 75'000, 150'000}), 284);
  EXPECT_EQ(cost_micros(Usage{-5, -1, 0, 0, 0}, sonnet), 0);
  // Large figures stay exact: 10^12 tokens at $75 per million.
  EXPECT_EQ(cost_micros(Usage{0, kMaxTokens, 0, 0, 0}, Price{0, 75 * kUsd, 0, 0}), 75'000'000 * kUsd);
  // Absurd figures are clamped, never overflow.
  EXPECT_EQ(cost_micros(Usage{INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, 0},
                        Price{INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX}),
            INT64_MAX);
}

TEST(FormatUsd, SixDecimals) {
  EXPECT_EQ(format_usd(0), "$0.000000");
  EXPECT_EQ(format_usd(1'234'567), "$1.234567");
  EXPECT_EQ(format_usd(1'000'000), "$1.000000");
  EXPECT_EQ(format_usd(5), "$0.000005");
  EXPECT_EQ(format_usd(-1), "-$0.000001");
  EXPECT_EQ(format_usd(INT64_MIN), "-$9223372036854.775808");
  EXPECT_EQ(format_usd(INT64_MAX), "$9223372036854.775807");
}

}  // namespace
}  // namespace km::meter
