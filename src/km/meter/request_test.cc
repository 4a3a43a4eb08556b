#include "km/meter/request.h"

#include <gtest/gtest.h>

#include "km/meter/usage.h"

namespace km::meter {
namespace {

TEST(AiProviderForHost, KnownHosts) {
  EXPECT_EQ(ai_provider_for_host("api.anthropic.com"), Provider::kAnthropic);
  EXPECT_EQ(ai_provider_for_host("api.openai.com"), Provider::kOpenAI);
  EXPECT_EQ(ai_provider_for_host("bedrock-runtime.us-east-1.amazonaws.com"), Provider::kBedrock);
  EXPECT_EQ(ai_provider_for_host("bedrock-runtime.eu-central-2.amazonaws.com"), Provider::kBedrock);
  EXPECT_EQ(ai_provider_for_host("bedrock-runtime-fips.us-gov-west-1.amazonaws.com"), Provider::kBedrock);
}

TEST(AiProviderForHost, OtherHostsAreNotMetered) {
  for (const char* host : {"anthropic.com", "xapi.anthropic.com", "api.anthropic.com.evil.net", "openai.com",
                           "chat.openai.com", "bedrock.us-east-1.amazonaws.com",
                           "bedrock-runtime.amazonaws.com", "bedrock-runtime..amazonaws.com",
                           "bedrock-runtime.us-east-1.evil.amazonaws.com", "bedrock-runtime.US-EAST-1.amazonaws.com",
                           "bedrock-runtime.us-east-1.amazonaws.com.cn", "s3.us-east-1.amazonaws.com", ""}) {
    EXPECT_EQ(ai_provider_for_host(host), std::nullopt) << host;
  }
}

TEST(ProviderName, RoundTrips) {
  for (Provider p : {Provider::kAnthropic, Provider::kOpenAI, Provider::kBedrock}) {
    EXPECT_EQ(provider_from_name(provider_name(p)), p);
  }
  EXPECT_EQ(provider_name(Provider::kBedrock), "bedrock");
  EXPECT_EQ(provider_from_name("azure"), std::nullopt);
}

TEST(Classify, AnthropicMessages) {
  auto r = classify(Provider::kAnthropic, "POST", "/v1/messages?beta=true",
                    R"({"model":"claude-sonnet-4-5-20250929","max_tokens":32000,"stream":true,)"
                    R"("messages":[{"role":"user","content":"hi"}]})");
  EXPECT_EQ(r.api, "messages");
  EXPECT_TRUE(r.billable);
  EXPECT_EQ(r.model, "claude-sonnet-4-5-20250929");
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(r.max_output_tokens, 32000);
}

TEST(Classify, AnthropicCountTokensIsNotBillable) {
  auto r = classify(Provider::kAnthropic, "POST", "/v1/messages/count_tokens",
                    R"({"model":"claude-opus-4-1","messages":[]})");
  EXPECT_EQ(r.api, "count_tokens");
  EXPECT_FALSE(r.billable);
  EXPECT_EQ(r.model, "claude-opus-4-1");
}

TEST(Classify, GetsAndUnknownEndpointsAreNotBillable) {
  EXPECT_FALSE(classify(Provider::kAnthropic, "GET", "/v1/models", "").billable);
  EXPECT_FALSE(classify(Provider::kAnthropic, "GET", "/v1/messages", "").billable);
  EXPECT_EQ(classify(Provider::kAnthropic, "POST", "/v1/messages/batches", "{}").api, "other");
  EXPECT_FALSE(classify(Provider::kAnthropic, "POST", "/v1/messages/batches", "{}").billable);
  EXPECT_FALSE(classify(Provider::kOpenAI, "POST", "/v1/embeddings", "{}").billable);
  EXPECT_FALSE(classify(Provider::kOpenAI, "GET", "/v1/responses/resp_123", "").billable);
  EXPECT_FALSE(classify(Provider::kBedrock, "POST", "/guardrail/abc/version/1/apply", "{}").billable);
  EXPECT_FALSE(classify(Provider::kAnthropic, "post", "/v1/messages", "{}").billable);
}

TEST(Classify, PathVariantsThatRouteTheSameAreTheSame) {
  for (const char* target : {"/v1/messages", "/v1//messages", "/v1/messages/", "/v1/./messages",
                             "/v1/x/../messages", "/v1/%6Dessages", "/v1/messages#frag",
                             "https://api.anthropic.com/v1/messages?x=1"}) {
    auto r = classify(Provider::kAnthropic, "POST", target, "{}");
    EXPECT_EQ(r.api, "messages") << target;
    EXPECT_TRUE(r.billable) << target;
  }
  EXPECT_FALSE(classify(Provider::kAnthropic, "POST", "/v1/messages%zz", "{}").billable);
}

TEST(Classify, MalformedBodiesStillClassify) {
  for (const char* body : {"", "{", "not json", "[1,2]", R"({"model":42,"stream":"yes","max_tokens":-5})"}) {
    auto r = classify(Provider::kAnthropic, "POST", "/v1/messages", body);
    EXPECT_EQ(r.api, "messages") << body;
    EXPECT_TRUE(r.billable) << body;
    EXPECT_EQ(r.model, "") << body;
    EXPECT_FALSE(r.stream) << body;
    EXPECT_EQ(r.max_output_tokens, 0) << body;
  }
}

TEST(Classify, HugeNumbersAreClamped) {
  auto r = classify(Provider::kAnthropic, "POST", "/v1/messages",
                    R"({"model":"m","max_tokens":99999999999999999999})");
  EXPECT_EQ(r.max_output_tokens, 0);  // a float in JSON terms: not a count
  r = classify(Provider::kAnthropic, "POST", "/v1/messages", R"({"max_tokens":18446744073709551615})");
  EXPECT_EQ(r.max_output_tokens, kMaxTokens);
}

TEST(Classify, LongModelNamesAreCut) {
  std::string body = R"({"model":")" + std::string(1000, 'a') + R"("})";
  EXPECT_EQ(classify(Provider::kOpenAI, "POST", "/v1/responses", body).model.size(), kMaxModelName);
}

TEST(Classify, OpenAIChatCompletions) {
  auto r = classify(Provider::kOpenAI, "POST", "/v1/chat/completions",
                    R"({"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},)"
                    R"("max_completion_tokens":512,"max_tokens":100,"messages":[]})");
  EXPECT_EQ(r.api, "chat.completions");
  EXPECT_TRUE(r.billable);
  EXPECT_EQ(r.model, "gpt-4o-mini");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.stream_include_usage);
  EXPECT_EQ(r.max_output_tokens, 512);

  r = classify(Provider::kOpenAI, "POST", "/v1/chat/completions", R"({"model":"gpt-4o","max_tokens":100})");
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.stream_include_usage);
  EXPECT_EQ(r.max_output_tokens, 100);
}

TEST(Classify, OpenAIResponses) {
  auto r = classify(Provider::kOpenAI, "POST", "/v1/responses",
                    R"({"model":"gpt-5","input":"hi","stream":true,"max_output_tokens":2048})");
  EXPECT_EQ(r.api, "responses");
  EXPECT_TRUE(r.billable);
  EXPECT_EQ(r.model, "gpt-5");
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(r.max_output_tokens, 2048);
  r = classify(Provider::kOpenAI, "POST", "/v1/responses/input_tokens", R"({"model":"gpt-5"})");
  EXPECT_EQ(r.api, "count_tokens");
  EXPECT_FALSE(r.billable);
  EXPECT_FALSE(classify(Provider::kOpenAI, "POST", "/v1/responses/resp_1/cancel", "").billable);
}

TEST(Classify, BedrockActions) {
  struct Case {
    const char* action;
    const char* api;
    bool stream;
    bool billable;
  };
  for (const Case& c : {Case{"invoke", "invoke", false, true},
                        Case{"invoke-with-response-stream", "invoke-stream", true, true},
                        Case{"converse", "converse", false, true},
                        Case{"converse-stream", "converse-stream", true, true},
                        Case{"count-tokens", "count_tokens", false, false},
                        Case{"async-invoke", "other", false, false}}) {
    std::string target = std::string("/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/") + c.action;
    auto r = classify(Provider::kBedrock, "POST", target, R"({"anthropic_version":"bedrock-2023-05-31","max_tokens":4096})");
    EXPECT_EQ(r.api, c.api) << c.action;
    EXPECT_EQ(r.stream, c.stream) << c.action;
    EXPECT_EQ(r.billable, c.billable) << c.action;
    if (c.billable) {
      EXPECT_EQ(r.model, "claude-sonnet-4-5-20250929") << c.action;
    }
  }
}

TEST(Classify, BedrockMaxTokens) {
  EXPECT_EQ(classify(Provider::kBedrock, "POST", "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
                     R"({"max_tokens":300,"messages":[]})")
                .max_output_tokens,
            300);
  EXPECT_EQ(classify(Provider::kBedrock, "POST", "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
                     R"({"messages":[],"inferenceConfig":{"maxTokens":700,"temperature":0.5}})")
                .max_output_tokens,
            700);
}

TEST(Classify, BedrockModelFromPercentEncodedArn) {
  auto r = classify(Provider::kBedrock, "POST",
                    "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
                    "us.anthropic.claude-opus-4-1-20250805-v1%3A0/converse-stream",
                    "{}");
  EXPECT_EQ(r.api, "converse-stream");
  EXPECT_EQ(r.model, "claude-opus-4-1-20250805");
}

TEST(NormaliseBedrockModel, Forms) {
  EXPECT_EQ(normalise_bedrock_model("us.anthropic.claude-sonnet-4-5-20250929-v1:0"), "claude-sonnet-4-5-20250929");
  EXPECT_EQ(normalise_bedrock_model("anthropic.claude-3-5-sonnet-20240620-v1:0"), "claude-3-5-sonnet-20240620");
  EXPECT_EQ(normalise_bedrock_model("eu.anthropic.claude-3-7-sonnet-20250219-v1:0"), "claude-3-7-sonnet-20250219");
  EXPECT_EQ(normalise_bedrock_model("apac.anthropic.claude-sonnet-4-20250514-v1:0"), "claude-sonnet-4-20250514");
  EXPECT_EQ(normalise_bedrock_model("global.anthropic.claude-haiku-4-5-20251001-v1:0"), "claude-haiku-4-5-20251001");
  EXPECT_EQ(normalise_bedrock_model("us-gov.anthropic.claude-3-haiku-20240307-v1:0"), "claude-3-haiku-20240307");
  EXPECT_EQ(normalise_bedrock_model("jp.anthropic.claude-sonnet-4-5-20250929-v1:0"), "claude-sonnet-4-5-20250929");
  EXPECT_EQ(normalise_bedrock_model("au.anthropic.claude-sonnet-4-5-20250929-v1:0"), "claude-sonnet-4-5-20250929");
  EXPECT_EQ(normalise_bedrock_model("ca.anthropic.claude-sonnet-4-5-20250929-v1:0"), "claude-sonnet-4-5-20250929");
  EXPECT_EQ(normalise_bedrock_model("anthropic.claude-opus-4-1-20250805-v2:0"), "claude-opus-4-1-20250805");
  EXPECT_EQ(normalise_bedrock_model("anthropic.claude-3-sonnet-20240229-v1:0:28k"), "claude-3-sonnet-20240229");
  EXPECT_EQ(normalise_bedrock_model("Anthropic.Claude-3-Haiku-20240307-V1:0"), "claude-3-haiku-20240307");
  EXPECT_EQ(normalise_bedrock_model("anthropic.claude-v2:1"), "claude-v2:1");
  EXPECT_EQ(normalise_bedrock_model("amazon.nova-pro-v1:0"), "amazon.nova-pro");
  EXPECT_EQ(normalise_bedrock_model("us.amazon.nova-pro-v1:0"), "amazon.nova-pro");
  EXPECT_EQ(normalise_bedrock_model("meta.llama3-70b-instruct-v1:0"), "meta.llama3-70b-instruct");
}

TEST(NormaliseBedrockModel, Arns) {
  EXPECT_EQ(normalise_bedrock_model(
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            "claude-sonnet-4-5-20250929");
  EXPECT_EQ(normalise_bedrock_model("arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"),
            "claude-3-haiku-20240307");
  EXPECT_EQ(normalise_bedrock_model("arn:aws-us-gov:bedrock:us-gov-west-1:123456789012:inference-profile/"
                                    "us-gov.anthropic.claude-3-5-sonnet-20240620-v1:0"),
            "claude-3-5-sonnet-20240620");
  EXPECT_EQ(normalise_bedrock_model("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"),
            "application-inference-profile/a1b2c3d4e5f6");
  EXPECT_EQ(normalise_bedrock_model("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc"),
            "provisioned-model/abc");
}

TEST(PercentDecode, EscapesAndErrors) {
  std::string out;
  EXPECT_TRUE(percent_decode("a%3Ab%2fc+d", out));
  EXPECT_EQ(out, "a:b/c+d");
  EXPECT_FALSE(percent_decode("%", out));
  EXPECT_FALSE(percent_decode("%4", out));
  EXPECT_FALSE(percent_decode("%g0", out));
  EXPECT_TRUE(percent_decode("", out));
  EXPECT_EQ(out, "");
}

}  // namespace
}  // namespace km::meter
