#include "km/meter/response_meter.h"

#include <gtest/gtest.h>

#include "km/base/strings.h"
#include "km/meter/test_payloads.h"

namespace km::meter {
namespace {

using testing::bedrock_chunk;
using testing::bedrock_event;
using testing::sse;

// --- realistic payloads, in the shapes the providers document ---

const char* kAnthropicEvents[][2] = {
    {"message_start",
     R"({"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant",)"
     R"("content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{)"
     R"("input_tokens":472,"cache_creation_input_tokens":1024,"cache_read_input_tokens":20480,"cache_creation":{)"
     R"("ephemeral_5m_input_tokens":1024,"ephemeral_1h_input_tokens":0},"output_tokens":2,"service_tier":"standard"}}})"},
    {"content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
    {"ping", R"({"type": "ping"})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"! How can I help you today?"}})"},
    {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
    {"content_block_start",
     R"({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6",)"
     R"("name":"get_weather","input":{}}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco, CA\"}"}})"},
    {"content_block_stop", R"({"type":"content_block_stop","index":1})"},
    {"message_delta",
     R"({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}})"},
    {"message_stop", R"({"type":"message_stop"})"},
};
// Text delivered: "Hello" + "! How can I help you today?" + the tool input JSON = 65 bytes.
constexpr int64_t kAnthropicEstimate = 17;

std::string anthropic_stream(size_t events = std::size(kAnthropicEvents)) {
  std::string out;
  for (size_t i = 0; i < events; ++i) out += sse(kAnthropicEvents[i][0], kAnthropicEvents[i][1]);
  return out;
}

const Usage kAnthropicUsage{472, 89, 20480, 1024, 0};

AiRequest request(Provider p, std::string_view target, std::string_view body) {
  return classify(p, "POST", target, body);
}

AiRequest anthropic_stream_request() {
  return request(Provider::kAnthropic, "/v1/messages?beta=true",
                 R"({"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[]})");
}

HeaderList headers(std::string_view content_type, std::string_view encoding = "") {
  HeaderList h{{"Content-Type", std::string(content_type)}};
  if (!encoding.empty()) h.emplace_back("Content-Encoding", std::string(encoding));
  return h;
}

// Feeds `body` in pieces whose sizes cycle through `steps` (0: all at once).
void feed(ResponseMeter& m, std::string_view body, std::initializer_list<size_t> steps = {0}) {
  std::vector<size_t> s(steps);
  size_t i = 0, k = 0;
  while (i < body.size()) {
    size_t n = s[k++ % s.size()];
    if (n == 0) n = body.size();
    n = std::min(n, body.size() - i);
    m.feed(body.substr(i, n));
    i += n;
  }
}

struct Outcome {
  Usage usage;
  bool final_usage = false;
  int64_t estimate = 0;
  std::string model;
  std::vector<std::string> warnings;
};

Outcome meter(const AiRequest& req, int status, const HeaderList& h, std::string_view body,
              std::initializer_list<size_t> steps = {0}, bool complete = true) {
  ResponseMeter m(req, status, h);
  feed(m, body, steps);
  m.finish(complete);
  return {m.usage(), m.final_usage(), m.output_estimate(), m.model(), m.warnings()};
}

bool has_warning(const Outcome& o, std::string_view needle) {
  for (const auto& w : o.warnings) {
    if (w.find(needle) != std::string::npos) return true;
  }
  return false;
}

// --- Anthropic ---

TEST(ResponseMeterAnthropic, Stream) {
  auto o = meter(anthropic_stream_request(), 200, headers("text/event-stream; charset=utf-8"), anthropic_stream());
  EXPECT_EQ(o.usage, kAnthropicUsage);
  EXPECT_TRUE(o.final_usage);
  EXPECT_EQ(o.estimate, kAnthropicEstimate);
  EXPECT_EQ(o.model, "claude-sonnet-4-5-20250929");
  EXPECT_TRUE(o.warnings.empty()) << o.warnings[0];
}

TEST(ResponseMeterAnthropic, UsageGrowsAsTheStreamArrives) {
  ResponseMeter m(anthropic_stream_request(), 200, headers("text/event-stream"));
  EXPECT_EQ(m.model(), "claude-sonnet-4-5");  // the request's, until the response names one
  m.feed(sse(kAnthropicEvents[0][0], kAnthropicEvents[0][1]));
  EXPECT_EQ(m.usage(), (Usage{472, 2, 20480, 1024, 0}));
  EXPECT_FALSE(m.final_usage());
  EXPECT_EQ(m.model(), "claude-sonnet-4-5-20250929");
  m.feed(anthropic_stream().substr(sse(kAnthropicEvents[0][0], kAnthropicEvents[0][1]).size()));
  EXPECT_EQ(m.usage(), kAnthropicUsage);
  EXPECT_TRUE(m.final_usage());
}

TEST(ResponseMeterAnthropic, OneByteAtATimeMatchesWhole) {
  auto whole = meter(anthropic_stream_request(), 200, headers("text/event-stream"), anthropic_stream());
  auto bytewise = meter(anthropic_stream_request(), 200, headers("text/event-stream"), anthropic_stream(), {1});
  EXPECT_EQ(bytewise.usage, whole.usage);
  EXPECT_EQ(bytewise.estimate, whole.estimate);
  EXPECT_EQ(bytewise.model, whole.model);
  EXPECT_TRUE(bytewise.final_usage);
}

TEST(ResponseMeterAnthropic, EveryFieldIsMonotone) {
  std::string body = anthropic_stream();
  ResponseMeter m(anthropic_stream_request(), 200, headers("text/event-stream"));
  Usage prev;
  int64_t prev_est = 0;
  for (char c : body) {
    m.feed(std::string_view(&c, 1));
    Usage u = m.usage();
    EXPECT_GE(u.input, prev.input);
    EXPECT_GE(u.output, prev.output);
    EXPECT_GE(u.cache_read, prev.cache_read);
    EXPECT_GE(u.cache_write, prev.cache_write);
    EXPECT_GE(m.output_estimate(), prev_est);
    prev = u;
    prev_est = m.output_estimate();
  }
}

TEST(ResponseMeterAnthropic, MessageDeltaRepeatingInputTakesTheMaxPerField) {
  std::string body =
      sse("message_start",
          R"({"type":"message_start","message":{"model":"claude-opus-4-7","id":"msg_01","type":"message","role":"assistant",)"
          R"("content":[],"stop_reason":null,"usage":{"input_tokens":5,"cache_creation_input_tokens":42203,)"
          R"("cache_read_input_tokens":0,"output_tokens":1}}})") +
      sse("content_block_delta",
          R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I see"}})") +
      sse("message_delta",
          R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":6,)"
          R"("cache_read_input_tokens":41203,"cache_creation_input_tokens":0,"output_tokens":21}})") +
      sse("message_stop", R"({"type":"message_stop"})");
  auto o = meter(request(Provider::kAnthropic, "/v1/messages", R"({"model":"claude-opus-4-7","stream":true})"), 200,
                 headers("text/event-stream"), body);
  EXPECT_EQ(o.usage, (Usage{6, 21, 41203, 42203, 0}));
  EXPECT_TRUE(o.final_usage);
  EXPECT_EQ(o.estimate, 2);
}

TEST(ResponseMeterAnthropic, ThinkingDeltasCountTowardsTheEstimate) {
  std::string body =
      sse("content_block_start",
          R"({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}})") +
      sse("content_block_delta",
          R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think."}})") +
      sse("content_block_delta",
          R"({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}})");
  auto o = meter(anthropic_stream_request(), 200, headers("text/event-stream"), body, {0}, false);
  EXPECT_EQ(o.estimate, 4);  // 13 bytes of thinking; signatures are not output text
}

TEST(ResponseMeterAnthropic, CutOffStreamKeepsWhatWasSeen) {
  // Cut inside the sixth event: message_start and both text deltas arrived.
  std::string full = anthropic_stream();
  std::string cut = anthropic_stream(5) + "event: content_block_stop\ndata: {\"type\":\"con";
  for (std::initializer_list<size_t> steps : {std::initializer_list<size_t>{0}, {1}, {5, 17}}) {
    auto o = meter(anthropic_stream_request(), 200, headers("text/event-stream"), cut, steps, false);
    EXPECT_EQ(o.usage, (Usage{472, 2, 20480, 1024, 0}));
    EXPECT_FALSE(o.final_usage);
    EXPECT_EQ(o.estimate, 8);  // 32 bytes of text
    EXPECT_TRUE(has_warning(o, "cut off"));
    EXPECT_TRUE(has_warning(o, "body ended inside a server-sent event"));
  }
}

TEST(ResponseMeterAnthropic, ErrorEventIsAWarning) {
  std::string body = sse(kAnthropicEvents[0][0], kAnthropicEvents[0][1]) +
                     sse("error", R"({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})");
  auto o = meter(anthropic_stream_request(), 200, headers("text/event-stream"), body);
  EXPECT_EQ(o.usage, (Usage{472, 2, 20480, 1024, 0}));
  EXPECT_FALSE(o.final_usage);
  EXPECT_TRUE(has_warning(o, "provider error event: overloaded_error"));
  EXPECT_TRUE(has_warning(o, "no final usage figure"));
}

TEST(ResponseMeterAnthropic, UnparseableEventIsAWarningAndTheRestIsRead) {
  std::string body = sse("message_start", "{not json") + anthropic_stream();
  auto o = meter(anthropic_stream_request(), 200, headers("text/event-stream"), body);
  EXPECT_EQ(o.usage, kAnthropicUsage);
  ASSERT_EQ(o.warnings.size(), 1u);
  EXPECT_EQ(o.warnings[0], "unparseable server-sent event data (9 bytes)");
}

TEST(ResponseMeterAnthropic, Json) {
  std::string body =
      R"({"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-opus-4-1-20250805",)"
      R"("content":[{"type":"text","text":"Hi! My name is Claude."}],"stop_reason":"end_turn","stop_sequence":null,)"
      R"("usage":{"input_tokens":2095,"cache_creation_input_tokens":null,"cache_read_input_tokens":300,"output_tokens":503}})";
  auto req = request(Provider::kAnthropic, "/v1/messages", R"({"model":"claude-opus-4-1","max_tokens":1024})");
  ResponseMeter m(req, 200, headers("application/json"));
  feed(m, body, {3});
  EXPECT_EQ(m.usage(), Usage{});  // a JSON body is read when it ends
  m.finish(true);
  EXPECT_EQ(m.usage(), (Usage{2095, 503, 300, 0, 0}));
  EXPECT_TRUE(m.final_usage());
  EXPECT_EQ(m.output_estimate(), 6);
  EXPECT_EQ(m.model(), "claude-opus-4-1-20250805");
  EXPECT_TRUE(m.warnings().empty());
}

TEST(ResponseMeterAnthropic, CutOffJsonIsEstimatedFromItsBytes) {
  std::string body = R"({"id":"msg_01","type":"message","content":[{"type":"text","text":"Hello wor)";
  auto o = meter(request(Provider::kAnthropic, "/v1/messages", "{}"), 200, headers("application/json"), body, {0},
                 false);
  EXPECT_EQ(o.usage, Usage{});
  EXPECT_FALSE(o.final_usage);
  EXPECT_EQ(o.estimate, static_cast<int64_t>((body.size() + 3) / 4));
  EXPECT_TRUE(has_warning(o, "cut off"));
}

TEST(ResponseMeterAnthropic, CountTokensIsNotMetered) {
  auto req = request(Provider::kAnthropic, "/v1/messages/count_tokens", R"({"model":"claude-sonnet-4-5"})");
  ResponseMeter m(req, 200, headers("application/json"));
  m.feed(R"({"input_tokens":2095})");
  m.finish(true);
  EXPECT_FALSE(m.metered());
  EXPECT_EQ(m.usage(), Usage{});
  EXPECT_TRUE(m.warnings().empty());
}

TEST(ResponseMeterAnthropic, ContentTypeMissingFallsBackToTheRequest) {
  auto o = meter(anthropic_stream_request(), 200, {}, anthropic_stream());
  EXPECT_EQ(o.usage, kAnthropicUsage);
}

// --- encodings ---

class ResponseMeterEncoding : public ::testing::TestWithParam<const char*> {};

std::string encode_stack(std::string_view codings, std::string_view body) {
  std::string out(body);
  for (const std::string& c : split(codings, ',')) {
    std::string_view name = c;
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    out = testing::encode_as(name, out);
  }
  return out;
}

TEST_P(ResponseMeterEncoding, AnthropicStreamInAnyFragmentation) {
  std::string body = encode_stack(GetParam(), anthropic_stream());
  for (std::initializer_list<size_t> steps :
       {std::initializer_list<size_t>{0}, {1}, {2, 3, 5, 7, 11, 13}, {4096}, {100, 1, 0}}) {
    auto o = meter(anthropic_stream_request(), 200, headers("text/event-stream", GetParam()), body, steps);
    EXPECT_EQ(o.usage, kAnthropicUsage) << GetParam();
    EXPECT_TRUE(o.final_usage);
    EXPECT_EQ(o.estimate, kAnthropicEstimate);
    EXPECT_TRUE(o.warnings.empty()) << GetParam() << ": " << o.warnings[0];
  }
}

TEST_P(ResponseMeterEncoding, CutOffCompressedStream) {
  std::string body = encode_stack(GetParam(), anthropic_stream());
  ResponseMeter m(anthropic_stream_request(), 200, headers("text/event-stream", GetParam()));
  m.feed(std::string_view(body).substr(0, body.size() * 2 / 3));
  m.finish(false);
  // Whatever prefix decoded is metered, and never more than the whole stream reports.
  EXPECT_LE(m.usage().output, kAnthropicUsage.output);
  EXPECT_LE(m.output_estimate(), kAnthropicEstimate);
  EXPECT_FALSE(m.final_usage());
  bool cut_warned = false, truncated_warned = false;
  for (const auto& w : m.warnings()) {
    cut_warned = cut_warned || w.find("cut off") != std::string::npos;
    truncated_warned = truncated_warned || w.find("body truncated") != std::string::npos;
  }
  EXPECT_TRUE(cut_warned);
  EXPECT_EQ(truncated_warned, std::string_view(GetParam()) != "identity");
}

INSTANTIATE_TEST_SUITE_P(Codings, ResponseMeterEncoding,
                         ::testing::Values("identity", "gzip", "x-gzip", "deflate", "br", "zstd", "gzip, br",
                                           "zstd, gzip"));

TEST(ResponseMeterEncoding, CorruptGzipKeepsWhatWasDecoded) {
  std::string plain = anthropic_stream();
  std::string body = testing::deflate_compress(plain, testing::Wrap::kGzip, 0);  // stored blocks
  body[body.size() - 40] ^= 0x55;  // inside the last event's bytes; the CRC check fails at the end
  auto o = meter(anthropic_stream_request(), 200, headers("text/event-stream", "gzip"), body, {64});
  EXPECT_EQ(o.usage.input, 472);
  EXPECT_TRUE(has_warning(o, "corrupt gzip body"));
}

TEST(ResponseMeterEncoding, UnknownCodingIsAWarning) {
  auto o = meter(anthropic_stream_request(), 200, headers("text/event-stream", "compress"), "xyz");
  EXPECT_EQ(o.usage, Usage{});
  EXPECT_TRUE(has_warning(o, "unsupported content coding \"compress\"; body not read"));
}

TEST(ResponseMeterEncoding, RawDeflate) {
  std::string body = testing::deflate_compress(anthropic_stream(), testing::Wrap::kRawDeflate);
  auto o = meter(anthropic_stream_request(), 200, headers("text/event-stream", "deflate"), body, {1});
  EXPECT_EQ(o.usage, kAnthropicUsage);
}

// --- OpenAI ---

std::string chat_chunk(std::string_view choices, std::string_view usage = "null") {
  return "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,"
         "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\","
         "\"choices\":" +
         std::string(choices) + ",\"usage\":" + std::string(usage) + "}\n\n";
}

std::string chat_stream(bool with_usage) {
  std::string s =
      chat_chunk(R"([{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}])") +
      chat_chunk(R"([{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}])") +
      chat_chunk(R"([{"index":0,"delta":{"content":" world, again"},"logprobs":null,"finish_reason":null}])") +
      chat_chunk(R"([{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":null}])") +
      chat_chunk(R"([{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}])");
  if (with_usage) {
    s += chat_chunk("[]",
                    R"({"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,"prompt_tokens_details":{)"
                    R"("cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":128,)"
                    R"("audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}})");
  }
  return s + "data: [DONE]\n\n";
}

TEST(ResponseMeterOpenAI, ChatStreamWithUsage) {
  auto req = request(Provider::kOpenAI, "/v1/chat/completions",
                     R"({"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]})");
  for (std::initializer_list<size_t> steps : {std::initializer_list<size_t>{0}, {1}, {9}}) {
    auto o = meter(req, 200, headers("text/event-stream; charset=utf-8"), chat_stream(true), steps);
    EXPECT_EQ(o.usage, (Usage{176, 300, 1024, 0, 128}));
    EXPECT_TRUE(o.final_usage);
    EXPECT_EQ(o.estimate, 7);  // "Hello world, again" + {"a":1}: 25 bytes
    EXPECT_EQ(o.model, "gpt-4o-mini-2024-07-18");
    EXPECT_TRUE(o.warnings.empty()) << o.warnings[0];
  }
}

TEST(ResponseMeterOpenAI, ChatStreamWithoutIncludeUsage) {
  auto req = request(Provider::kOpenAI, "/v1/chat/completions", R"({"model":"gpt-4o-mini","stream":true})");
  auto o = meter(req, 200, headers("text/event-stream"), chat_stream(false));
  EXPECT_EQ(o.usage, Usage{});
  EXPECT_FALSE(o.final_usage);
  EXPECT_EQ(o.estimate, 7);
  ASSERT_EQ(o.warnings.size(), 1u);
  EXPECT_EQ(o.warnings[0], "no usage in the stream: the request did not set stream_options.include_usage");
}

TEST(ResponseMeterOpenAI, ChatStreamError) {
  auto req = request(Provider::kOpenAI, "/v1/chat/completions", R"({"model":"gpt-4o","stream":true})");
  auto o = meter(req, 200, headers("text/event-stream"),
                 "data: {\"error\":{\"message\":\"The server had an error while processing your request. secret\","
                 "\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n");
  EXPECT_TRUE(has_warning(o, "provider error event: server_error"));
  for (const auto& w : o.warnings) EXPECT_EQ(w.find("secret"), std::string::npos);
}

TEST(ResponseMeterOpenAI, ChatJson) {
  std::string body =
      R"({"id":"chatcmpl-123","object":"chat.completion","created":1677652288,"model":"gpt-4.1-2025-04-14",)"
      R"("system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how may I assist you today?",)"
      R"("refusal":null},"logprobs":null,"finish_reason":"stop"}],"service_tier":"default","usage":{"prompt_tokens":19,)"
      R"("completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},)"
      R"("completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,)"
      R"("rejected_prediction_tokens":0}}})";
  auto req = request(Provider::kOpenAI, "/v1/chat/completions", R"({"model":"gpt-4.1","messages":[]})");
  auto o = meter(req, 200, headers("application/json"), body, {1});
  EXPECT_EQ(o.usage, (Usage{19, 10, 0, 0, 0}));
  EXPECT_TRUE(o.final_usage);
  EXPECT_EQ(o.model, "gpt-4.1-2025-04-14");
  EXPECT_EQ(o.estimate, 10);  // 40 bytes of content
}

std::string responses_stream() {
  const char* events[][2] = {
      {"response.created",
       R"({"type":"response.created","sequence_number":0,"response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654",)"
       R"("object":"response","created_at":1741290958,"status":"in_progress","error":null,"model":"gpt-5-2025-08-07",)"
       R"("output":[],"usage":null}})"},
      {"response.in_progress",
       R"({"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","object":"response","status":"in_progress",)"
       R"("model":"gpt-5-2025-08-07","output":[],"usage":null}})"},
      {"response.output_item.added",
       R"({"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_1","type":"message",)"
       R"("status":"in_progress","content":[],"role":"assistant"}})"},
      {"response.reasoning_summary_text.delta",
       R"({"type":"response.reasoning_summary_text.delta","sequence_number":3,"item_id":"rs_1","output_index":0,)"
       R"("summary_index":0,"delta":"Thinking"})"},
      {"response.output_text.delta",
       R"({"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,)"
       R"("delta":"Hi","logprobs":[]})"},
      {"response.output_text.delta",
       R"({"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,)"
       R"("delta":" there!","logprobs":[]})"},
      {"response.output_text.done",
       R"({"type":"response.output_text.done","sequence_number":6,"item_id":"msg_1","output_index":0,"content_index":0,)"
       R"("text":"Hi there!","logprobs":[]})"},
      {"response.completed",
       R"({"type":"response.completed","sequence_number":7,"response":{"id":"resp_1","object":"response","status":"completed",)"
       R"("model":"gpt-5-2025-08-07","output":[{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text",)"
       R"("text":"Hi there!","annotations":[]}],"role":"assistant"}],"usage":{"input_tokens":5000,"input_tokens_details":{)"
       R"("cached_tokens":4096},"output_tokens":900,"output_tokens_details":{"reasoning_tokens":640},"total_tokens":5900}}})"},
  };
  std::string out;
  for (const auto& e : events) out += sse(e[0], e[1]);
  return out;
}

TEST(ResponseMeterOpenAI, ResponsesStream) {
  auto req = request(Provider::kOpenAI, "/v1/responses", R"({"model":"gpt-5","input":"hi","stream":true})");
  for (std::initializer_list<size_t> steps : {std::initializer_list<size_t>{0}, {1}}) {
    auto o = meter(req, 200, headers("text/event-stream"), responses_stream(), steps);
    EXPECT_EQ(o.usage, (Usage{904, 900, 4096, 0, 640}));
    EXPECT_TRUE(o.final_usage);
    EXPECT_EQ(o.model, "gpt-5-2025-08-07");
    EXPECT_EQ(o.estimate, 5);  // "Thinking" + "Hi" + " there!": 17 bytes
    EXPECT_TRUE(o.warnings.empty()) << o.warnings[0];
  }
}

TEST(ResponseMeterOpenAI, ResponsesStreamCutOff) {
  std::string s = responses_stream();
  auto req = request(Provider::kOpenAI, "/v1/responses", R"({"model":"gpt-5","stream":true})");
  auto o = meter(req, 200, headers("text/event-stream"), s.substr(0, s.find("event: response.output_text.done")), {0},
                 false);
  EXPECT_EQ(o.usage, Usage{});
  EXPECT_FALSE(o.final_usage);
  EXPECT_EQ(o.estimate, 5);
  EXPECT_EQ(o.model, "gpt-5-2025-08-07");
  EXPECT_TRUE(has_warning(o, "cut off before the final usage figure"));
}

TEST(ResponseMeterOpenAI, ResponsesIncompleteCarriesUsage) {
  std::string body = sse("response.incomplete",
                         R"({"type":"response.incomplete","sequence_number":9,"response":{"id":"resp_1","status":"incomplete",)"
                         R"("incomplete_details":{"reason":"max_output_tokens"},"model":"o3-2025-04-16","usage":{"input_tokens":10,)"
                         R"("input_tokens_details":{"cached_tokens":0},"output_tokens":16,"output_tokens_details":{"reasoning_tokens":16},)"
                         R"("total_tokens":26}}})");
  auto o = meter(request(Provider::kOpenAI, "/v1/responses", R"({"model":"o3","stream":true})"), 200,
                 headers("text/event-stream"), body);
  EXPECT_EQ(o.usage, (Usage{10, 16, 0, 0, 16}));
  EXPECT_TRUE(o.final_usage);
}

TEST(ResponseMeterOpenAI, ResponsesJson) {
  std::string body =
      R"({"id":"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b","object":"response","created_at":1741476542,)"
      R"("status":"completed","model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_1","status":"completed",)"
      R"("role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove beneath a silver moon.","annotations":[]}]}],)"
      R"("usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":12},"output_tokens":87,)"
      R"("output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}})";
  auto o = meter(request(Provider::kOpenAI, "/v1/responses", R"({"model":"gpt-4.1"})"), 200,
                 headers("application/json"), body);
  EXPECT_EQ(o.usage, (Usage{24, 87, 12, 0, 0}));
  EXPECT_TRUE(o.final_usage);
  EXPECT_EQ(o.model, "gpt-4.1-2025-04-14");
  EXPECT_EQ(o.estimate, 11);  // 42 bytes
}

TEST(ResponseMeterOpenAI, ResponsesErrorEvent) {
  std::string body = sse("error", R"({"type":"error","code":"ERR_SOMETHING","message":"Something happened","param":null,)"
                                  R"("sequence_number":1})");
  auto o = meter(request(Provider::kOpenAI, "/v1/responses", R"({"stream":true})"), 200, headers("text/event-stream"),
                 body);
  EXPECT_TRUE(has_warning(o, "provider error event: ERR_SOMETHING"));
}

// --- Bedrock ---

AiRequest bedrock(std::string_view action) {
  return request(Provider::kBedrock, "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/" + std::string(action),
                 R"({"anthropic_version":"bedrock-2023-05-31","max_tokens":1024,"messages":[]})");
}

TEST(ResponseMeterBedrock, InvokeJsonAndHeaders) {
  HeaderList h = {{"Content-Type", "application/json"},
                  {"X-Amzn-Bedrock-Input-Token-Count", "25"},
                  {"X-Amzn-Bedrock-Output-Token-Count", "11"},
                  {"X-Amzn-Bedrock-Invocation-Latency", "1500"}};
  ResponseMeter m(bedrock("invoke"), 200, h);
  EXPECT_EQ(m.usage(), (Usage{25, 11, 0, 0, 0}));  // known from the head alone
  EXPECT_TRUE(m.final_usage());
  m.feed(R"({"id":"msg_bdrk_01HwgLLJ6zkfC5RPRE6nWHJb","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",)"
         R"("content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","stop_sequence":null,)"
         R"("usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":11}})");
  m.finish(true);
  EXPECT_EQ(m.usage(), (Usage{25, 11, 0, 0, 0}));
  EXPECT_EQ(m.model(), "claude-sonnet-4-5-20250929");
  EXPECT_EQ(m.output_estimate(), 2);
  EXPECT_TRUE(m.warnings().empty());
}

TEST(ResponseMeterBedrock, InvokeHeadersForAnyModel) {
  auto req = request(Provider::kBedrock, "/model/meta.llama3-70b-instruct-v1:0/invoke", R"({"prompt":"hi"})");
  HeaderList h = {{"content-type", "application/json"},
                  {"x-amzn-bedrock-input-token-count", "12"},
                  {"x-amzn-bedrock-output-token-count", "34"},
                  {"x-amzn-bedrock-cache-read-input-token-count", "5"},
                  {"x-amzn-bedrock-cache-write-input-token-count", "6"}};
  auto o = meter(req, 200, h, R"({"generation":"Hello","prompt_token_count":12,"generation_token_count":34,"stop_reason":"stop"})");
  EXPECT_EQ(o.usage, (Usage{12, 34, 5, 6, 0}));
  EXPECT_TRUE(o.final_usage);
  EXPECT_EQ(o.model, "meta.llama3-70b-instruct");
}

TEST(ResponseMeterBedrock, BadCountHeaderIsAWarning) {
  HeaderList h = {{"content-type", "application/json"}, {"x-amzn-bedrock-input-token-count", "12abc"}};
  auto o = meter(bedrock("invoke"), 200, h, R"({"usage":{"input_tokens":12,"output_tokens":3}})");
  EXPECT_EQ(o.usage, (Usage{12, 3, 0, 0, 0}));
  EXPECT_TRUE(has_warning(o, "response header x-amzn-bedrock-input-token-count is not a token count"));
}

std::string bedrock_invoke_stream(bool with_metrics = true) {
  std::string out;
  for (size_t i = 0; i + 1 < std::size(kAnthropicEvents); ++i) {
    if (std::string_view(kAnthropicEvents[i][0]) == "ping") continue;  // Bedrock does not relay pings
    out += bedrock_chunk(kAnthropicEvents[i][1]);
  }
  out += bedrock_chunk(with_metrics ? R"({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":472,)"
                                      R"("outputTokenCount":89,"invocationLatency":2466,"firstByteLatency":612,)"
                                      R"("cacheReadInputTokenCount":20480,"cacheWriteInputTokenCount":1024}})"
                                    : R"({"type":"message_stop"})");
  return out;
}

TEST(ResponseMeterBedrock, InvokeWithResponseStream) {
  for (std::initializer_list<size_t> steps : {std::initializer_list<size_t>{0}, {1}, {7, 300}}) {
    auto o = meter(bedrock("invoke-with-response-stream"), 200, headers("application/vnd.amazon.eventstream"),
                   bedrock_invoke_stream(), steps);
    EXPECT_EQ(o.usage, kAnthropicUsage);
    EXPECT_TRUE(o.final_usage);
    EXPECT_EQ(o.estimate, kAnthropicEstimate);
    EXPECT_EQ(o.model, "claude-sonnet-4-5-20250929");
    EXPECT_TRUE(o.warnings.empty()) << o.warnings[0];
  }
}

TEST(ResponseMeterBedrock, MetricsAloneAreFinal) {
  auto req = request(Provider::kBedrock, "/model/meta.llama3-8b-instruct-v1:0/invoke-with-response-stream", "{}");
  std::string body =
      bedrock_chunk(R"({"generation":"Hi","prompt_token_count":null,"generation_token_count":1,"stop_reason":null})") +
      bedrock_chunk(R"({"generation":"","prompt_token_count":null,"generation_token_count":2,"stop_reason":"stop",)"
                    R"("amazon-bedrock-invocationMetrics":{"inputTokenCount":17,"outputTokenCount":2,"invocationLatency":300,)"
                    R"("firstByteLatency":200}})");
  auto o = meter(req, 200, headers("application/vnd.amazon.eventstream"), body);
  EXPECT_EQ(o.usage, (Usage{17, 2, 0, 0, 0}));
  EXPECT_TRUE(o.final_usage);
}

TEST(ResponseMeterBedrock, InvokeStreamCutOffMidMessage) {
  std::string full = bedrock_invoke_stream();
  std::string first_two = bedrock_chunk(kAnthropicEvents[0][1]) + bedrock_chunk(kAnthropicEvents[1][1]);
  std::string delta = bedrock_chunk(kAnthropicEvents[3][1]);
  std::string body = first_two + delta + delta.substr(0, delta.size() / 2);
  auto o = meter(bedrock("invoke-with-response-stream"), 200, headers("application/vnd.amazon.eventstream"), body, {0},
                 false);
  EXPECT_EQ(o.usage, (Usage{472, 2, 20480, 1024, 0}));
  EXPECT_FALSE(o.final_usage);
  EXPECT_EQ(o.estimate, 2);  // "Hello"
  EXPECT_TRUE(has_warning(o, "body ended inside an event-stream message"));
  EXPECT_TRUE(has_warning(o, "cut off"));
}

TEST(ResponseMeterBedrock, ExceptionEventIsAWarning) {
  std::string body = bedrock_chunk(kAnthropicEvents[0][1]) +
                     testing::bedrock_exception("throttlingException", "Too many requests, please wait");
  auto o = meter(bedrock("invoke-with-response-stream"), 200, headers("application/vnd.amazon.eventstream"), body);
  EXPECT_EQ(o.usage.input, 472);
  EXPECT_TRUE(has_warning(o, "provider stream exception: throttlingException"));
}

TEST(ResponseMeterBedrock, CorruptCrcStopsParsingButKeepsUsage) {
  std::string body = bedrock_chunk(kAnthropicEvents[0][1]);
  std::string bad = bedrock_chunk(kAnthropicEvents[10][1]);
  bad[bad.size() - 1] ^= 1;
  auto o = meter(bedrock("invoke-with-response-stream"), 200, headers("application/vnd.amazon.eventstream"), body + bad);
  EXPECT_EQ(o.usage, (Usage{472, 2, 20480, 1024, 0}));
  EXPECT_TRUE(has_warning(o, "event-stream message CRC mismatch"));
}

TEST(ResponseMeterBedrock, BadBase64ChunkIsAWarning) {
  std::string body = bedrock_event("chunk", R"({"bytes":"not base64!","p":"abc"})");
  auto o = meter(bedrock("invoke-with-response-stream"), 200, headers("application/vnd.amazon.eventstream"), body);
  EXPECT_TRUE(has_warning(o, "event-stream chunk without valid base64 bytes"));
}

TEST(ResponseMeterBedrock, ConverseJson) {
  std::string body =
      R"({"output":{"message":{"role":"assistant","content":[{"text":"Hello there"}]}},"stopReason":"end_turn",)"
      R"("usage":{"inputTokens":30,"outputTokens":12,"totalTokens":192,"cacheReadInputTokens":100,"cacheWriteInputTokens":50},)"
      R"("metrics":{"latencyMs":321}})";
  auto o = meter(bedrock("converse"), 200, headers("application/json"), body);
  EXPECT_EQ(o.usage, (Usage{30, 12, 100, 50, 0}));
  EXPECT_TRUE(o.final_usage);
  EXPECT_EQ(o.estimate, 3);
  EXPECT_EQ(o.model, "claude-sonnet-4-5-20250929");
}

std::string converse_stream() {
  return bedrock_event("messageStart", R"({"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS","role":"assistant"})") +
         bedrock_event("contentBlockDelta", R"({"contentBlockIndex":0,"delta":{"text":"Hello"},"p":"abcdefghijk"})") +
         bedrock_event("contentBlockDelta", R"({"contentBlockIndex":0,"delta":{"text":", world"},"p":"abcdefghijklmnop"})") +
         bedrock_event("contentBlockStop", R"({"contentBlockIndex":0,"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"})") +
         bedrock_event("contentBlockDelta",
                       R"({"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":\"Paris\"}"}},"p":"abc"})") +
         bedrock_event("messageStop", R"({"p":"abcdefghijklmnopqrstuvwxyzABCDEFGH","stopReason":"end_turn"})") +
         bedrock_event("metadata",
                       R"({"metrics":{"latencyMs":791},"p":"abcdefghijklmnopqrstuvwxyzABCDEF",)"
                       R"("usage":{"cacheReadInputTokens":2048,"cacheWriteInputTokens":0,"inputTokens":15,"outputTokens":26,"totalTokens":2089}})");
}

TEST(ResponseMeterBedrock, ConverseStream) {
  for (std::initializer_list<size_t> steps : {std::initializer_list<size_t>{0}, {1}, {33}}) {
    auto o = meter(bedrock("converse-stream"), 200, headers("application/vnd.amazon.eventstream"), converse_stream(),
                   steps);
    EXPECT_EQ(o.usage, (Usage{15, 26, 2048, 0, 0}));
    EXPECT_TRUE(o.final_usage);
    EXPECT_EQ(o.estimate, 7);  // "Hello, world" + {"city":"Paris"}: 28 bytes
    EXPECT_TRUE(o.warnings.empty()) << o.warnings[0];
  }
}

TEST(ResponseMeterBedrock, ConverseStreamCutOffBeforeMetadata) {
  std::string s = converse_stream();
  std::string body = s.substr(0, s.size() - 20);
  for (const char* coding : {"identity", "gzip"}) {
    auto o = meter(bedrock("converse-stream"), 200, headers("application/vnd.amazon.eventstream", coding),
                   testing::encode_as(coding, body), {1}, false);
    EXPECT_EQ(o.usage, Usage{});
    EXPECT_FALSE(o.final_usage);
    EXPECT_EQ(o.estimate, 7);
    EXPECT_TRUE(has_warning(o, "cut off before the final usage figure"));
  }
}

// --- statuses, content types, misuse ---

TEST(ResponseMeterStatus, ErrorResponsesAreNotMetered) {
  auto o = meter(anthropic_stream_request(), 429, headers("application/json"),
                 R"({"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}})");
  EXPECT_EQ(o.usage, Usage{});
  EXPECT_FALSE(o.final_usage);
  EXPECT_TRUE(o.warnings.empty());
  o = meter(request(Provider::kOpenAI, "/v1/chat/completions", "{}"), 502, headers("text/html"),
            "<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>");
  EXPECT_EQ(o.usage, Usage{});
  EXPECT_TRUE(o.warnings.empty());
  o = meter(bedrock("invoke"), 400, headers("application/json"), "<html>not json</html>");
  EXPECT_EQ(o.usage, Usage{});
  EXPECT_TRUE(o.warnings.empty());
}

TEST(ResponseMeterStatus, AnErrorBodyThatReportsUsageIsCounted) {
  auto o = meter(request(Provider::kAnthropic, "/v1/messages", "{}"), 500, headers("application/json"),
                 R"({"type":"error","usage":{"input_tokens":10,"output_tokens":0}})");
  EXPECT_EQ(o.usage, (Usage{10, 0, 0, 0, 0}));
}

TEST(ResponseMeterStatus, HtmlOn200IsAWarning) {
  auto o = meter(anthropic_stream_request(), 200, headers("text/html; charset=utf-8"), "<html>maintenance</html>");
  EXPECT_EQ(o.usage, Usage{});
  EXPECT_TRUE(has_warning(o, "unexpected content type \"text/html\"; body not read"));
}

TEST(ResponseMeterStatus, NonJsonBodyOn200IsAWarning) {
  auto o = meter(request(Provider::kAnthropic, "/v1/messages", "{}"), 200, headers("application/json"),
                 "<html>oops</html>");
  EXPECT_TRUE(has_warning(o, "response body is not a JSON object"));
  EXPECT_TRUE(has_warning(o, "no final usage figure"));
}

TEST(ResponseMeterStatus, FeedAfterFinishIsIgnored) {
  ResponseMeter m(anthropic_stream_request(), 200, headers("text/event-stream"));
  m.finish(true);
  m.feed(anthropic_stream());
  m.finish(true);
  EXPECT_EQ(m.usage(), Usage{});
}

TEST(ResponseMeterStatus, WarningsAreBounded) {
  std::string body;
  for (int i = 0; i < 100; ++i) body += sse("x", "{bad" + std::to_string(i));
  auto o = meter(anthropic_stream_request(), 200, headers("text/event-stream"), body);
  EXPECT_LE(o.warnings.size(), kMaxWarnings);
}

TEST(ResponseMeterStatus, OversizedEventStopsParsing) {
  std::string body = sse(kAnthropicEvents[0][0], kAnthropicEvents[0][1]) + "data: " + std::string(17u << 20, 'a');
  auto o = meter(anthropic_stream_request(), 200, headers("text/event-stream"), body, {1 << 20});
  EXPECT_EQ(o.usage.input, 472);
  EXPECT_TRUE(has_warning(o, "server-sent event larger than 16777216 bytes"));
}

TEST(ResponseMeterStatus, MovedMeterKeepsState) {
  ResponseMeter m(anthropic_stream_request(), 200, headers("text/event-stream"));
  m.feed(anthropic_stream());
  ResponseMeter moved = std::move(m);
  moved.finish(true);
  EXPECT_EQ(moved.usage(), kAnthropicUsage);
}

}  // namespace
}  // namespace km::meter
