#include "km/meter/refusal.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "km/meter/price.h"

namespace km::meter {
namespace {

const std::string kMessage = "km: AI budget exhausted for sandbox sb-1a2b3c4d: spent " + format_usd(1'234'567) +
                             " of " + format_usd(1'000'000) + "; raise it with `km budget add sb-1a2b3c4d --ai 5`";

TEST(BudgetRefusal, Anthropic) {
  Refusal r = budget_refusal(Provider::kAnthropic, kMessage);
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body,
            "{\"type\":\"error\",\"error\":{\"type\":\"permission_error\",\"message\":\"km: AI budget exhausted for "
            "sandbox sb-1a2b3c4d: spent $1.234567 of $1.000000; raise it with `km budget add sb-1a2b3c4d --ai 5`\"}}");
  EXPECT_TRUE(r.headers.empty());
}

TEST(BudgetRefusal, OpenAI) {
  Refusal r = budget_refusal(Provider::kOpenAI, "no budget");
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(r.headers.empty());
  EXPECT_EQ(r.body,
            R"({"error":{"message":"no budget","type":"insufficient_quota","param":null,"code":"budget_exhausted"}})");
}

TEST(BudgetRefusal, Bedrock) {
  Refusal r = budget_refusal(Provider::kBedrock, "no budget");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, R"({"message":"no budget"})");
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].first, "x-amzn-ErrorType");
  EXPECT_EQ(r.headers[0].second, "AccessDeniedException");
}

TEST(BudgetRefusal, MessagesAreEscaped) {
  for (Provider p : {Provider::kAnthropic, Provider::kOpenAI, Provider::kBedrock}) {
    Refusal r = budget_refusal(p, "quote \" backslash \\ newline \n bad utf8 \xff");
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r.body;
    std::string msg = p == Provider::kBedrock ? j["message"].get<std::string>() : j["error"]["message"].get<std::string>();
    EXPECT_EQ(msg.substr(0, 36), "quote \" backslash \\ newline \n bad ut");
  }
}

}  // namespace
}  // namespace km::meter
