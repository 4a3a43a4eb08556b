#include "km/meter/json_depth.h"

#include <gtest/gtest.h>

#include "km/meter/request.h"
#include "km/meter/response_meter.h"

namespace km::meter {
namespace {

TEST(JsonDepth, CountsOnlyStructure) {
  EXPECT_TRUE(json_depth_within(R"({"a":[1,{"b":[]}]})", 4));
  EXPECT_FALSE(json_depth_within(R"({"a":[1,{"b":[]}]})", 3));
  EXPECT_FALSE(json_depth_within("[[[[", 3));
  EXPECT_TRUE(json_depth_within(R"(["[[[[[[", "\"[[[[", "]]]]"])", 1));
  EXPECT_TRUE(json_depth_within("]]]]][", 1));
  EXPECT_TRUE(json_depth_within("", 0));
}

TEST(JsonDepth, DeepRequestBodiesClassifyWithoutParsing) {
  std::string body = R"({"model":"claude-opus-4-1","x":)" + std::string(1 << 20, '[');
  auto r = classify(Provider::kAnthropic, "POST", "/v1/messages", body);
  EXPECT_TRUE(r.billable);
  EXPECT_EQ(r.model, "");
}

TEST(JsonDepth, DeepResponseEventsAreWarnedAbout) {
  AiRequest req = classify(Provider::kAnthropic, "POST", "/v1/messages", R"({"stream":true})");
  ResponseMeter m(req, 200, {{"content-type", "text/event-stream"}});
  m.feed("data: " + std::string(1 << 20, '{') + "\n\n");
  m.finish(true);
  ASSERT_FALSE(m.warnings().empty());
  EXPECT_EQ(m.warnings()[0], "unparseable server-sent event data (1048576 bytes)");
}

}  // namespace
}  // namespace km::meter
