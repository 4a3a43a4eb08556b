#include "km/otel/otlp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "km/base/file.h"
#include "km/base/strings.h"
#include "km/meter/test_payloads.h"
#include "km/otel/protobuf_reader.h"
#include "km/otel/test_requests.h"

namespace km::otel {
namespace {

using nlohmann::json;
using testing::ProtoWriter;
using testing::TestLogRecord;
using testing::TestMetric;
using testing::TestPoint;
using testing::TestRequest;
using testing::TestResource;
using testing::TestScope;
using testing::TestSpan;

constexpr const char* kProtobuf = "application/x-protobuf";
constexpr const char* kJson = "application/json";
constexpr uint64_t kT0 = 1795509468437000000;  // 2026-11-24T08:37:48.437Z

const char* content_type(Encoding e) { return e == Encoding::kProtobuf ? kProtobuf : kJson; }
const char* name(Encoding e) { return e == Encoding::kProtobuf ? "protobuf" : "json"; }
constexpr Encoding kBoth[] = {Encoding::kProtobuf, Encoding::kJson};

// A Claude Code logs request: one prompt, one API call, one tool call.
TestRequest claude_code_logs() {
  TestResource r = testing::claude_code_resource({{"sandbox_id", "sb-1a2b3c4d"}});
  TestScope s;
  s.name = "com.anthropic.claude_code.events";
  s.version = "2.1.112";
  const char* session = "de383637-78bb-4339-9a7b-1d4a7053c968";
  const char* prompt = "ed960915-0cb0-41ae-9245-3955fc9dc64f";
  s.logs.push_back(testing::claude_code_event("user_prompt", kT0, session, 0, prompt,
                                              {{"prompt_length", "29"}, {"prompt", "run echo hi and read the file"}}));
  s.logs.push_back(testing::claude_code_event(
      "api_request", kT0 + 135'000'000, session, 1, prompt,
      {{"model", "claude-sonnet-4-6"}, {"input_tokens", "1000"}, {"output_tokens", "40"}, {"cache_read_tokens", "0"},
       {"cache_creation_tokens", "300"}, {"cost_usd", "0.004725"}, {"duration_ms", "50"},
       {"request_id", "req_011CV"}}));
  s.logs.push_back(testing::claude_code_event(
      "tool_result", kT0 + 306'000'000, session, 2, prompt,
      {{"tool_name", "Bash"}, {"success", "true"}, {"duration_ms", "131"},
       {"tool_parameters", R"({"bash_command":"echo","full_command":"echo hi","description":"Print hi"})"},
       {"tool_input", R"({"command":"echo hi","description":"Print hi"})"}, {"tool_result_size_bytes", "2"}}));
  s.logs.back().trace_id = "5b8efff798038103d269b633813fc60c";
  s.logs.back().span_id = "eee19b7ec3c1b174";
  r.scopes.push_back(std::move(s));
  return TestRequest{{std::move(r)}};
}

std::vector<LogRecord> must_decode_logs(std::string_view body, const char* ct, std::string_view ce = "",
                                        const DecodeLimits& limits = {}) {
  auto r = decode_logs(body, ct, ce, limits);
  EXPECT_TRUE(r) << (r ? "" : r.error().to_string());
  return r ? *r : std::vector<LogRecord>{};
}

std::string error_of(const Result<std::vector<LogRecord>>& r) { return r ? "(decoded)" : r.error().to_string(); }

TEST(OtlpLogs, DecodesAClaudeCodeRequestInBothEncodings) {
  TestRequest req = claude_code_logs();
  for (Encoding e : kBoth) {
    SCOPED_TRACE(name(e));
    auto logs = must_decode_logs(testing::encode(req, Signal::kLogs, e), content_type(e));
    ASSERT_EQ(logs.size(), 3u);
    const LogRecord& p = logs[0];
    EXPECT_EQ(p.time_unix_nano, static_cast<int64_t>(kT0));
    EXPECT_EQ(p.observed_unix_nano, static_cast<int64_t>(kT0));
    EXPECT_EQ(p.body, "claude_code.user_prompt");
    EXPECT_EQ(p.scope_name, "com.anthropic.claude_code.events");
    EXPECT_EQ(p.scope_version, "2.1.112");
    EXPECT_EQ(string_attribute(p.attributes, "prompt"), "run echo hi and read the file");
    EXPECT_EQ(string_attribute(p.attributes, "event.timestamp"), "2026-11-24T08:37:48.437Z");
    ASSERT_NE(find_attribute(p.attributes, "event.sequence"), nullptr);
    EXPECT_EQ(*find_attribute(p.attributes, "event.sequence"), 0);
    EXPECT_EQ(string_attribute(p.resource, "service.name"), "claude-code");
    EXPECT_EQ(string_attribute(p.resource, "sandbox_id"), "sb-1a2b3c4d");
    // Every record carries the resource; attribute order is kept.
    EXPECT_EQ(logs[2].resource, p.resource);
    EXPECT_EQ(p.attributes[0].key, "user.id");
    EXPECT_EQ(logs[1].attributes.back().key, "request_id");
    EXPECT_EQ(logs[2].trace_id, "5b8efff798038103d269b633813fc60c");
    EXPECT_EQ(logs[2].span_id, "eee19b7ec3c1b174");
    EXPECT_FALSE(p.truncated);
  }
  // The two encodings of one request decode to the same records.
  EXPECT_EQ(must_decode_logs(testing::encode(req, Signal::kLogs, Encoding::kProtobuf), kProtobuf),
            must_decode_logs(testing::encode(req, Signal::kLogs, Encoding::kJson), kJson));
}

TEST(OtlpLogs, AnyValueBecomesJson) {
  json values = {{"s", "héllo"},
                 {"t", true},
                 {"f", false},
                 {"i", -42},
                 {"big", int64_t{9007199254740993}},
                 {"d", 2.5},
                 {"arr", json::array({1, "two", json::array({3.5})})},
                 {"kv", {{"a", 1}, {"nested", {{"b", json::array({true})}}}}},
                 {"bytes", {{"$bytes", std::string("\x00\xff\x10", 3)}}},
                 {"empty", nullptr}};
  TestRequest req{{TestResource{{}, {TestScope{}}}}};
  TestLogRecord rec;
  rec.body = {{"message", "structured"}, {"n", 3}};
  for (const auto& [k, v] : values.items()) rec.attributes.push_back({k, v});
  req.resources[0].scopes[0].logs.push_back(rec);
  for (Encoding e : kBoth) {
    SCOPED_TRACE(name(e));
    auto logs = must_decode_logs(testing::encode(req, Signal::kLogs, e), content_type(e));
    ASSERT_EQ(logs.size(), 1u);
    const Attributes& a = logs[0].attributes;
    EXPECT_EQ(*find_attribute(a, "s"), "héllo");
    EXPECT_EQ(*find_attribute(a, "t"), true);
    EXPECT_EQ(*find_attribute(a, "f"), false);
    EXPECT_EQ(*find_attribute(a, "i"), -42);
    EXPECT_EQ(find_attribute(a, "big")->get<int64_t>(), int64_t{9007199254740993});  // not via double
    EXPECT_EQ(*find_attribute(a, "d"), 2.5);
    EXPECT_EQ(*find_attribute(a, "arr"), json::parse(R"([1,"two",[3.5]])"));
    EXPECT_EQ(*find_attribute(a, "kv"), json::parse(R"({"a":1,"nested":{"b":[true]}})"));
    EXPECT_EQ(*find_attribute(a, "bytes"), "AP8Q");  // base64 of 00 ff 10
    EXPECT_TRUE(find_attribute(a, "empty")->is_null());
    EXPECT_EQ(logs[0].body, json::parse(R"({"message":"structured","n":3})"));
  }
}

TEST(OtlpLogs, ResourcesAndScopesAreCopiedToTheirOwnRecords) {
  TestRequest req;
  for (int r = 0; r < 2; ++r) {
    TestResource res;
    res.attributes = {{"service.name", "svc" + std::to_string(r)}};
    for (int s = 0; s < 2; ++s) {
      TestScope scope;
      scope.name = "scope" + std::to_string(r) + std::to_string(s);
      scope.attributes = {{"scope.attr", s}};
      for (int i = 0; i < 3; ++i) {
        TestLogRecord l;
        l.body = "r" + std::to_string(r) + "s" + std::to_string(s) + "i" + std::to_string(i);
        scope.logs.push_back(l);
      }
      res.scopes.push_back(scope);
    }
    req.resources.push_back(res);
  }
  for (Encoding e : kBoth) {
    auto logs = must_decode_logs(testing::encode(req, Signal::kLogs, e), content_type(e));
    ASSERT_EQ(logs.size(), 12u);
    for (const LogRecord& l : logs) {
      std::string body = l.body.get<std::string>();
      EXPECT_EQ(string_attribute(l.resource, "service.name"), "svc" + body.substr(1, 1));
      EXPECT_EQ(l.scope_name, "scope" + body.substr(1, 1) + body.substr(3, 1));
      EXPECT_EQ(*find_attribute(l.scope_attributes, "scope.attr"), std::stoi(body.substr(3, 1)));
    }
  }
}

TEST(OtlpLogs, ProtobufFieldsInAnyOrderAndSplitMessagesMerge) {
  // ResourceLogs with its scope_logs before its resource, and the resource in two pieces
  // (protobuf merges repeated occurrences of a message field); LogRecord fields reversed.
  ProtoWriter rec;
  rec.bytes(12, "my.event").message(6, testing::key_value("k", "v")).varint(2, 9).fixed64(1, 42);
  ProtoWriter scope_logs;
  scope_logs.message(2, rec).message(1, ProtoWriter().bytes(1, "late-scope"));
  ProtoWriter rl;
  rl.message(2, scope_logs)
      .message(1, ProtoWriter().message(1, testing::key_value("a", 1)))
      .message(1, ProtoWriter().message(1, testing::key_value("b", 2)));
  ProtoWriter req;
  req.message(1, rl);
  auto logs = must_decode_logs(req.str(), kProtobuf);
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_EQ(logs[0].time_unix_nano, 42);
  EXPECT_EQ(logs[0].severity, 9);
  EXPECT_EQ(logs[0].event_name, "my.event");
  EXPECT_EQ(logs[0].scope_name, "late-scope");
  ASSERT_EQ(logs[0].resource.size(), 2u);
  EXPECT_EQ(logs[0].resource[1].key, "b");
}

TEST(OtlpLogs, UnknownFieldsAreSkipped) {
  ProtoWriter unknown;
  unknown.varint(99, 1).fixed64(98, 2).fixed32(97, 3).bytes(96, "whatever").message(95, ProtoWriter().varint(1, 1));
  ProtoWriter rec;
  rec.raw(unknown.str()).fixed64(1, 7).bytes(3, "INFO").raw(unknown.str());
  ProtoWriter any;
  any.raw(unknown.str()).bytes(1, "x");
  rec.message(6, ProtoWriter().bytes(1, "k").raw(unknown.str()).message(2, any));
  ProtoWriter req;
  req.raw(unknown.str())
      .message(1, ProtoWriter()
                      .raw(unknown.str())
                      .message(1, ProtoWriter().raw(unknown.str()))
                      .message(2, ProtoWriter().raw(unknown.str()).message(2, rec).bytes(3, "https://schema")));
  auto logs = must_decode_logs(req.str(), kProtobuf);
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_EQ(logs[0].time_unix_nano, 7);
  EXPECT_EQ(logs[0].severity_text, "INFO");
  EXPECT_EQ(*find_attribute(logs[0].attributes, "k"), "x");

  std::string with_unknown_keys = R"({"resourceLogs":[{"futureField":{"a":[1,2]},"resource":{"attributes":[],
    "entityRefs":[{"type":"x"}]},"scopeLogs":[{"scope":{"name":"s","unknown":1},"schemaUrl":"u","logRecords":[
    {"timeUnixNano":"7","flags":1,"droppedAttributesCount":3,"newThing":"y","attributes":[
    {"key":"k","value":{"stringValue":"x","unknownValue":2}}]}]}]}]})";
  logs = must_decode_logs(with_unknown_keys, kJson);
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_EQ(logs[0].time_unix_nano, 7);
  EXPECT_EQ(*find_attribute(logs[0].attributes, "k"), "x");
}

TEST(OtlpLogs, JsonAcceptsWhatExportersSend) {
  // The JavaScript exporter writes intValue as a number; 64-bit integers may be numbers or
  // strings; ids are hex in any case; null means absent; NaN and infinities are strings.
  std::string body = R"({"resourceLogs":[{"resource":null,"scopeLogs":[{"logRecords":[
    {"timeUnixNano":1795509468437000000,"observedTimeUnixNano":"1795509468437000001","severityNumber":17,
     "severityText":"ERROR","eventName":"claude_code.api_error","traceId":"5B8EFFF798038103D269B633813FC60C",
     "spanId":"","body":null,"attributes":[
       {"key":"n","value":{"intValue":12}},{"key":"s","value":{"intValue":"-12"}},
       {"key":"nan","value":{"doubleValue":"NaN"}},{"key":"inf","value":{"doubleValue":"-Infinity"}},
       {"key":"dstr","value":{"doubleValue":"1.5"}},{"key":"dint","value":{"doubleValue":3}},
       {"key":"none","value":null},{"key":"emptyArray","value":{"arrayValue":{}}},
       {"key":"bytes","value":{"bytesValue":"aGk="}}]}]}]}]})";
  auto logs = must_decode_logs(body, "Application/JSON; charset=utf-8");
  ASSERT_EQ(logs.size(), 1u);
  const LogRecord& l = logs[0];
  EXPECT_EQ(l.time_unix_nano, 1795509468437000000);
  EXPECT_EQ(l.observed_unix_nano, 1795509468437000001);
  EXPECT_EQ(l.severity, 17);
  EXPECT_EQ(l.severity_text, "ERROR");
  EXPECT_EQ(l.event_name, "claude_code.api_error");
  EXPECT_EQ(l.trace_id, "5b8efff798038103d269b633813fc60c");
  EXPECT_EQ(l.span_id, "");
  EXPECT_TRUE(l.body.is_null());
  EXPECT_EQ(*find_attribute(l.attributes, "n"), 12);
  EXPECT_EQ(*find_attribute(l.attributes, "s"), -12);
  EXPECT_TRUE(std::isnan(find_attribute(l.attributes, "nan")->get<double>()));
  EXPECT_EQ(find_attribute(l.attributes, "inf")->get<double>(), -INFINITY);
  EXPECT_EQ(*find_attribute(l.attributes, "dstr"), 1.5);
  EXPECT_EQ(*find_attribute(l.attributes, "dint"), 3.0);
  EXPECT_TRUE(find_attribute(l.attributes, "none")->is_null());
  EXPECT_EQ(*find_attribute(l.attributes, "emptyArray"), json::array());
  EXPECT_EQ(*find_attribute(l.attributes, "bytes"), "aGk=");
}

TEST(OtlpLogs, EmptyRequestsDecodeToNothing) {
  for (const char* body : {"", "{}", " \n", R"({"resourceLogs":[]})", R"({"resourceLogs":[{"scopeLogs":[{}]}]})"}) {
    EXPECT_TRUE(must_decode_logs(body, kJson).empty()) << body;
  }
  EXPECT_TRUE(must_decode_logs("", kProtobuf).empty());
  ProtoWriter empty_envelopes;
  empty_envelopes.message(1, ProtoWriter().message(2, ProtoWriter()));
  EXPECT_TRUE(must_decode_logs(empty_envelopes.str(), kProtobuf).empty());
}

TEST(OtlpLogs, CompressedBodies) {
  TestRequest req = claude_code_logs();
  for (Encoding e : kBoth) {
    std::string plain = testing::encode(req, Signal::kLogs, e);
    auto want = must_decode_logs(plain, content_type(e));
    for (const char* coding : {"gzip", "GZIP", "x-gzip", "deflate", "identity", ""}) {
      SCOPED_TRACE(std::string(name(e)) + " " + coding);
      std::string body = meter::testing::encode_as(to_lower(coding), plain);
      EXPECT_EQ(must_decode_logs(body, content_type(e), coding), want);
    }
  }
}

TEST(OtlpLogs, CorruptOrUnknownCompressionIsAnError) {
  std::string plain = testing::encode(claude_code_logs(), Signal::kLogs, Encoding::kProtobuf);
  std::string gz = meter::testing::encode_as("gzip", plain);
  auto cut = decode_logs(gz.substr(0, gz.size() - 6), kProtobuf, "gzip");
  ASSERT_FALSE(cut);
  EXPECT_EQ(cut.error().code(), ErrorCode::kInvalidArgument) << cut.error().to_string();
  EXPECT_EQ(error_response(Encoding::kProtobuf, cut.error()).status, 400);

  auto not_gzip = decode_logs(plain, kProtobuf, "gzip");
  ASSERT_FALSE(not_gzip);
  EXPECT_NE(error_of(not_gzip).find("gzip"), std::string::npos) << error_of(not_gzip);

  auto unknown = decode_logs(plain, kProtobuf, "snappy");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(error_of(unknown).find("unsupported Content-Encoding"), std::string::npos) << error_of(unknown);
  EXPECT_EQ(error_response(Encoding::kProtobuf, unknown.error()).status, 415);
}

TEST(OtlpLogs, ContentTypes) {
  EXPECT_EQ(*encoding_for("application/x-protobuf"), Encoding::kProtobuf);
  EXPECT_EQ(*encoding_for("application/protobuf"), Encoding::kProtobuf);
  EXPECT_EQ(*encoding_for(" Application/X-Protobuf ; foo=bar"), Encoding::kProtobuf);
  EXPECT_EQ(*encoding_for("application/json"), Encoding::kJson);
  EXPECT_EQ(*encoding_for("application/json;charset=UTF-8"), Encoding::kJson);
  for (const char* bad : {"", "text/plain", "application/grpc", "application/jsonx", "application/x-ndjson"}) {
    auto e = encoding_for(bad);
    ASSERT_FALSE(e) << bad;
    EXPECT_EQ(e.error().code(), ErrorCode::kFailedPrecondition);
  }
  EXPECT_EQ(response_encoding("application/json"), Encoding::kJson);
  EXPECT_EQ(response_encoding("text/html"), Encoding::kProtobuf);
  auto r = decode_logs("{}", "text/plain", "");
  ASSERT_FALSE(r);
  EXPECT_EQ(error_response(Encoding::kProtobuf, r.error()).status, 415);
}

// ---- limits ----

TEST(OtlpLimits, BodySizeBeforeAndAfterDecompression) {
  DecodeLimits limits;
  limits.max_body_bytes = 2048;
  std::string plain = testing::encode(claude_code_logs(), Signal::kLogs, Encoding::kJson);
  ASSERT_GT(plain.size(), 2048u);
  auto big = decode_logs(plain, kJson, "", limits);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(error_of(big).find("over the limit of 2048"), std::string::npos) << error_of(big);
  EXPECT_EQ(error_response(Encoding::kJson, big.error()).status, 413);

  // A small gzip body that inflates past the limit (a decompression bomb) stops at the limit.
  std::string bomb = meter::testing::encode_as("gzip", std::string(1 << 20, ' '));
  ASSERT_LT(bomb.size(), 2048u);
  auto inflated = decode_logs(bomb, kJson, "gzip", limits);
  ASSERT_FALSE(inflated);
  EXPECT_EQ(inflated.error().code(), ErrorCode::kResourceExhausted) << error_of(inflated);

  limits.max_body_bytes = plain.size();
  EXPECT_EQ(must_decode_logs(plain, kJson, "", limits).size(), 3u);
}

TEST(OtlpLimits, RecordCount) {
  TestRequest req{{TestResource{{}, {TestScope{}}}}};
  for (int i = 0; i < 10; ++i) req.resources[0].scopes[0].logs.push_back(TestLogRecord{});
  DecodeLimits limits;
  limits.max_records = 10;
  for (Encoding e : kBoth) {
    SCOPED_TRACE(name(e));
    std::string body = testing::encode(req, Signal::kLogs, e);
    EXPECT_EQ(must_decode_logs(body, content_type(e), "", limits).size(), 10u);
    limits.max_records = 9;
    auto r = decode_logs(body, content_type(e), "", limits);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(error_of(r).find("more than 9 records"), std::string::npos) << error_of(r);
    limits.max_records = 10;
  }
}

json nested_array(size_t depth) {
  json v = "leaf";
  for (size_t i = 0; i < depth; ++i) v = json::array({v});
  return v;
}

json nested_kvlist(size_t depth) {
  json v = 1;
  for (size_t i = 0; i < depth; ++i) v = json{{"k", v}};
  return v;
}

TEST(OtlpLimits, NestingDepth) {
  DecodeLimits limits;
  limits.max_depth = 8;
  for (Encoding e : kBoth) {
    for (bool kvlist : {false, true}) {
      SCOPED_TRACE(std::string(name(e)) + (kvlist ? " kvlist" : " array"));
      auto request = [&](size_t depth) {
        TestRequest req{{TestResource{{}, {TestScope{}}}}};
        TestLogRecord l;
        l.attributes.push_back({"deep", kvlist ? nested_kvlist(depth) : nested_array(depth)});
        req.resources[0].scopes[0].logs.push_back(l);
        return testing::encode(req, Signal::kLogs, e);
      };
      auto logs = must_decode_logs(request(8), content_type(e), "", limits);
      ASSERT_EQ(logs.size(), 1u);
      EXPECT_EQ(logs[0].attributes[0].value, kvlist ? nested_kvlist(8) : nested_array(8));
      auto r = decode_logs(request(9), content_type(e), "", limits);
      ASSERT_FALSE(r);
      EXPECT_NE(error_of(r).find("nested deeper than 8"), std::string::npos) << error_of(r);
    }
  }
}

TEST(OtlpLimits, DeepProtobufNestingDoesNotRecurseWithoutBound) {
  // 100 000 nested ArrayValues in under 1 MB: rejected at the default depth, long before the
  // stack could run out. Built inside out, each level's two headers collected and reversed.
  std::string inner = testing::any_value("x").str();
  size_t size = inner.size();
  std::vector<std::string> headers;
  for (int i = 0; i < 100000; ++i) {
    std::string array_header = "\x0a" + ProtoWriter::varint_bytes(size);  // ArrayValue.values = 1
    size += array_header.size();
    std::string any_header = "\x2a" + ProtoWriter::varint_bytes(size);  // AnyValue.array_value = 5
    size += any_header.size();
    headers.push_back(any_header + array_header);
  }
  std::string v;
  for (auto it = headers.rbegin(); it != headers.rend(); ++it) v += *it;
  v += inner;
  ASSERT_EQ(v.size(), size);
  ProtoWriter rec;
  rec.bytes(5, v);
  ProtoWriter req;
  req.message(1, ProtoWriter().message(2, ProtoWriter().message(2, rec)));
  auto r = decode_logs(req.str(), kProtobuf, "");
  ASSERT_FALSE(r);
  EXPECT_NE(error_of(r).find("nested deeper than 32"), std::string::npos) << error_of(r);
}

TEST(OtlpLimits, DeepJsonIsRejectedBeforeParsing) {
  std::string body = R"({"resourceLogs":)" + std::string(200000, '[') + std::string(200000, ']') + "}";
  auto r = decode_logs(body, kJson, "");
  ASSERT_FALSE(r);
  EXPECT_NE(error_of(r).find("JSON nested deeper than"), std::string::npos) << error_of(r);
}

TEST(OtlpLimits, NamesOverTheLimitAreErrors) {
  DecodeLimits limits;
  limits.max_name_bytes = 16;
  std::string long_name(17, 'k');
  for (Encoding e : kBoth) {
    SCOPED_TRACE(name(e));
    auto with = [&](auto mutate) {
      TestRequest req{{TestResource{{}, {TestScope{}}}}};
      TestLogRecord l;
      mutate(req.resources[0].scopes[0], l);
      req.resources[0].scopes[0].logs.push_back(l);
      return decode_logs(testing::encode(req, Signal::kLogs, e), content_type(e), "", limits);
    };
    auto key = with([&](TestScope&, TestLogRecord& l) { l.attributes.push_back({long_name, 1}); });
    ASSERT_FALSE(key);
    EXPECT_NE(error_of(key).find("a name of 17 bytes (the limit is 16)"), std::string::npos) << error_of(key);
    auto scope = with([&](TestScope& s, TestLogRecord&) { s.name = long_name; });
    EXPECT_FALSE(scope);
    auto event = with([&](TestScope&, TestLogRecord& l) { l.event_name = long_name; });
    EXPECT_FALSE(event);
    auto severity = with([&](TestScope&, TestLogRecord& l) { l.severity_text = long_name; });
    EXPECT_FALSE(severity);
    auto ok_at_limit = with([&](TestScope&, TestLogRecord& l) { l.attributes.push_back({long_name.substr(1), 1}); });
    EXPECT_TRUE(ok_at_limit) << error_of(ok_at_limit);
  }
}

TEST(OtlpLimits, LongValuesAreCutOnACharacterBoundaryAndMarked) {
  DecodeLimits limits;
  limits.max_string_bytes = 10;
  // "aaaaaaaaaé": é is two bytes at offsets 9-10, so a cut at 10 backs up to 9.
  std::string text = std::string(9, 'a') + "é" + "tail";
  TestRequest req{{TestResource{{}, {TestScope{}}}}};
  TestLogRecord cut;
  cut.attributes = {{"prompt", text}, {"raw", {{"$bytes", std::string(12, 'x')}}}};
  TestLogRecord whole;
  whole.attributes = {{"prompt", std::string(10, 'b')}};
  req.resources[0].scopes[0].logs = {cut, whole};
  for (Encoding e : kBoth) {
    SCOPED_TRACE(name(e));
    auto logs = must_decode_logs(testing::encode(req, Signal::kLogs, e), content_type(e), "", limits);
    ASSERT_EQ(logs.size(), 2u);
    EXPECT_EQ(string_attribute(logs[0].attributes, "prompt"), std::string(9, 'a'));
    EXPECT_EQ(string_attribute(logs[0].attributes, "raw"), "eHh4eHh4eHh4eA==");  // 10 x's
    EXPECT_TRUE(logs[0].truncated);
    EXPECT_EQ(string_attribute(logs[1].attributes, "prompt"), std::string(10, 'b'));
    EXPECT_FALSE(logs[1].truncated);
  }
}

TEST(OtlpLimits, DecodedMemoryCountsEveryResourceCopy) {
  // 100 KB of resource attributes shared by 100 empty records: 10 MB once copied.
  TestRequest req{{TestResource{}}};
  for (int i = 0; i < 100; ++i) req.resources[0].attributes.push_back({"attr" + std::to_string(i), std::string(1000, 'r')});
  req.resources[0].scopes.push_back(TestScope{});
  for (int i = 0; i < 100; ++i) req.resources[0].scopes[0].logs.push_back(TestLogRecord{});
  DecodeLimits limits;
  limits.max_decoded_bytes = 8u << 20;
  for (Encoding e : kBoth) {
    SCOPED_TRACE(name(e));
    std::string body = testing::encode(req, Signal::kLogs, e);
    ASSERT_LT(body.size(), 200000u);
    auto r = decode_logs(body, content_type(e), "", limits);
    ASSERT_FALSE(r);
    EXPECT_NE(error_of(r).find("would take more than 8388608 bytes"), std::string::npos) << error_of(r);
    DecodeLimits roomy;
    roomy.max_decoded_bytes = 16u << 20;
    EXPECT_EQ(must_decode_logs(body, content_type(e), "", roomy).size(), 100u);
  }
}

TEST(OtlpLimits, JsonDocumentIsCharged) {
  // 1 MB of tiny JSON values parses into far more memory than its size.
  std::string body = R"({"resourceLogs":[{"x":[)";
  for (int i = 0; i < 250000; ++i) body += "[],";
  body += "0]}]}";
  DecodeLimits limits;
  limits.max_decoded_bytes = 4u << 20;
  auto r = decode_logs(body, kJson, "", limits);
  ASSERT_FALSE(r);
  EXPECT_NE(error_of(r).find("would take more than"), std::string::npos) << error_of(r);
}

// ---- malformed input ----

TEST(OtlpMalformed, ProtobufErrorsNameTheField) {
  auto request = [](const ProtoWriter& rec) {
    ProtoWriter req;
    req.message(1, ProtoWriter().message(2, ProtoWriter().message(2, ProtoWriter().fixed64(1, 1)).message(2, rec)));
    return req.str();
  };
  struct Case {
    std::string name;
    ProtoWriter rec;
    std::string error;
  };
  std::vector<Case> cases;
  cases.push_back({"time as a varint", ProtoWriter().varint(1, 5), "log_records[1]: field 1 is varint, expected fixed64"});
  cases.push_back({"invalid UTF-8 key", ProtoWriter().message(6, ProtoWriter().bytes(1, "\xff\xfe")),
                   "log_records[1]: attributes[0]: field 1 is not valid UTF-8"});
  cases.push_back({"overlong UTF-8 value",
                   ProtoWriter().message(6, ProtoWriter().bytes(1, "k").message(2, ProtoWriter().bytes(1, "\xc0\xaf"))),
                   "attributes[0]: value: field 1 is not valid UTF-8"});
  cases.push_back({"surrogate in body", ProtoWriter().message(5, ProtoWriter().bytes(1, "\xed\xa0\x80")), "body: field 1 is not valid UTF-8"});
  cases.push_back({"short trace id", ProtoWriter().bytes(9, "abc"), "trace_id: an id of 3 bytes, expected 16"});
  cases.push_back({"long span id", ProtoWriter().bytes(10, std::string(9, 'x')), "span_id: an id of 9 bytes, expected 8"});
  cases.push_back({"truncated attribute", ProtoWriter().raw(std::string("\x32\x05\x0a\x01", 4)),
                   "log_records[1]: malformed protobuf at byte 0: length-delimited field runs past the end"});
  cases.push_back({"group in AnyValue", ProtoWriter().message(5, ProtoWriter().raw("\x0b")), "body: malformed protobuf"});
  for (const Case& c : cases) {
    auto r = decode_logs(request(c.rec), kProtobuf, "");
    ASSERT_FALSE(r) << c.name;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << c.name;
    std::string msg = r.error().to_string();
    EXPECT_EQ(msg.rfind("decoding ExportLogsServiceRequest: resource_logs[0]: scope_logs[0]: ", 0), 0u) << c.name << ": " << msg;
    EXPECT_NE(msg.find(c.error), std::string::npos) << c.name << ": " << msg;
  }
}

TEST(OtlpMalformed, TruncatedProtobufAtEveryLength) {
  std::string body = testing::encode(claude_code_logs(), Signal::kLogs, Encoding::kProtobuf);
  int errors = 0;
  for (size_t n = 1; n < body.size(); ++n) {
    auto r = decode_logs(body.substr(0, n), kProtobuf, "");
    if (!r) ++errors;
  }
  // Almost every prefix cuts a length-delimited field; none crashes.
  EXPECT_GT(errors, static_cast<int>(body.size()) - 10);
}

TEST(OtlpMalformed, JsonErrors) {
  struct Case {
    std::string body, error;
  };
  std::vector<Case> cases = {
      {R"({"resourceLogs":[)", "malformed JSON at byte"},
      {R"({"resourceLogs":[{"secret-looking-key": tru}]})", "malformed JSON at byte"},
      {"[1,2]", "expected a JSON object"},
      {R"({"resourceLogs":5})", "resourceLogs: expected an array"},
      {R"({"resourceLogs":[7]})", "resourceLogs[0]: expected an object"},
      {R"({"resourceLogs":[{"resource":[]}]})", "resourceLogs[0]: resource: expected an object"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"soon"}]}]}]})",
       "scopeLogs[0]: logRecords[0]: timeUnixNano: expected an integer"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":-1}]}]}]})", "timeUnixNano: expected an integer"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"INFO"}]}]}]})", "severityNumber: expected an integer"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":1e30}]}]}]})", "severityNumber: expected an integer"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"attributes":[{"key":"k","value":{"intValue":"12x"}}]}]}]}]})",
       "attributes[0]: value: intValue: expected an integer"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"attributes":[{"key":"k","value":{"intValue":"99999999999999999999"}}]}]}]}]})",
       "intValue: expected an integer"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"attributes":[{"key":"k","value":{"bytesValue":"!!"}}]}]}]}]})",
       "bytesValue: expected base64"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"attributes":[{"key":5}]}]}]}]})", "key: expected a string"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"attributes":["k"]}]}]}]})", "expected a key-value object"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":"text"}]}]}]})", "body: expected an AnyValue object"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"5b8efff798038103d269b633813fc60"}]}]}]})",
       "traceId: an id of 31 hex digits, expected 32"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"spanId":"eee19b7ec3c1b17g"}]}]}]})", "spanId: expected a hex id"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"attributes":[{"key":"k","value":{"boolValue":"true"}}]}]}]}]})",
       "boolValue: expected true or false"},
      {R"({"resourceLogs":[{"scopeLogs":[{"logRecords":[{"attributes":[{"key":"k","value":{"arrayValue":[1]}}]}]}]}]})",
       "arrayValue: expected an object"},
  };
  for (const Case& c : cases) {
    auto r = decode_logs(c.body, kJson, "");
    ASSERT_FALSE(r) << c.body;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << c.body;
    std::string msg = r.error().to_string();
    EXPECT_NE(msg.find(c.error), std::string::npos) << c.body << "\n  " << msg;
    // Errors point at the data, never quote it.
    EXPECT_EQ(msg.find("secret-looking-key"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("tru}"), std::string::npos) << msg;
  }
}

TEST(OtlpMalformed, JsonStringsMustBeUtf8) {
  std::string body = "{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"severityText\":\"\xff\"}]}]}]}";
  auto r = decode_logs(body, kJson, "");
  ASSERT_FALSE(r);
  EXPECT_NE(error_of(r).find("malformed JSON at byte"), std::string::npos) << error_of(r);
}

// ---- metrics ----

TestRequest metrics_request() {
  TestResource r = testing::claude_code_resource();
  TestScope s;
  s.name = "com.anthropic.claude_code";
  TestMetric cost{"claude_code.cost.usage", "Cost of the Claude Code session", "USD", MetricKind::kSum,
                  kTemporalityDelta, true, {}};
  TestPoint p;
  p.start = kT0;
  p.time = kT0 + 1000;
  p.as_double = 0.009633;
  p.attributes = {{"session.id", "s1"}, {"model", "claude-sonnet-4-6"}};
  cost.points.push_back(p);
  s.metrics.push_back(cost);
  TestMetric lines{"claude_code.lines_of_code.count", "", "", MetricKind::kSum, kTemporalityCumulative, true, {}};
  TestPoint q;
  q.start = kT0;
  q.time = kT0 + 5;
  q.is_int = true;
  q.as_int = -3;
  q.attributes = {{"type", "removed"}};
  lines.points.push_back(q);
  s.metrics.push_back(lines);
  TestMetric gauge{"process.memory", "", "By", MetricKind::kGauge, 0, false, {}};
  TestPoint g;
  g.time = kT0 + 7;
  g.is_int = true;
  g.as_int = 123456789012;
  gauge.points.push_back(g);
  s.metrics.push_back(gauge);
  for (MetricKind k : {MetricKind::kHistogram, MetricKind::kExponentialHistogram, MetricKind::kSummary}) {
    TestMetric h{"latency." + std::string(metric_kind_name(k)), "", "ms", k, kTemporalityCumulative, false, {}};
    TestPoint hp;
    hp.start = kT0;
    hp.time = kT0 + 9;
    hp.count = 12;
    hp.as_double = 345.5;
    hp.attributes = {{"route", "/v1/messages"}};
    h.points.push_back(hp);
    s.metrics.push_back(h);
  }
  r.scopes.push_back(s);
  return TestRequest{{r}};
}

TEST(OtlpMetrics, DecodesEveryKindInBothEncodings) {
  TestRequest req = metrics_request();
  std::vector<MetricPoint> first;
  for (Encoding e : kBoth) {
    SCOPED_TRACE(name(e));
    auto r = decode_metrics(testing::encode(req, Signal::kMetrics, e), content_type(e), "");
    ASSERT_TRUE(r) << r.error().to_string();
    const auto& pts = *r;
    ASSERT_EQ(pts.size(), 6u);
    EXPECT_EQ(pts[0].name, "claude_code.cost.usage");
    EXPECT_EQ(pts[0].description, "Cost of the Claude Code session");
    EXPECT_EQ(pts[0].unit, "USD");
    EXPECT_EQ(pts[0].kind, MetricKind::kSum);
    EXPECT_TRUE(pts[0].monotonic);
    EXPECT_EQ(pts[0].temporality, kTemporalityDelta);
    EXPECT_EQ(pts[0].start_unix_nano, static_cast<int64_t>(kT0));
    EXPECT_EQ(pts[0].time_unix_nano, static_cast<int64_t>(kT0 + 1000));
    EXPECT_FALSE(pts[0].is_int);
    EXPECT_EQ(pts[0].value(), 0.009633);
    EXPECT_EQ(string_attribute(pts[0].attributes, "model"), "claude-sonnet-4-6");
    EXPECT_EQ(string_attribute(pts[0].resource, "service.name"), "claude-code");
    EXPECT_EQ(pts[0].scope_name, "com.anthropic.claude_code");
    EXPECT_EQ(pts[1].temporality, kTemporalityCumulative);
    EXPECT_TRUE(pts[1].is_int);
    EXPECT_EQ(pts[1].as_int, -3);
    EXPECT_EQ(pts[2].kind, MetricKind::kGauge);
    EXPECT_EQ(pts[2].as_int, 123456789012);
    EXPECT_EQ(pts[2].temporality, kTemporalityUnspecified);
    for (size_t i = 3; i < 6; ++i) {
      EXPECT_EQ(pts[i].count, 12u);
      EXPECT_EQ(pts[i].as_double, 345.5);
      EXPECT_EQ(string_attribute(pts[i].attributes, "route"), "/v1/messages");
    }
    EXPECT_EQ(pts[3].kind, MetricKind::kHistogram);
    EXPECT_EQ(pts[4].kind, MetricKind::kExponentialHistogram);
    EXPECT_EQ(pts[5].kind, MetricKind::kSummary);
    if (first.empty()) {
      first = pts;
    } else {
      EXPECT_EQ(pts, first);
    }
  }
}

TEST(OtlpMetrics, PointsCountAgainstTheRecordLimit) {
  TestRequest req = metrics_request();
  DecodeLimits limits;
  limits.max_records = 5;
  for (Encoding e : kBoth) {
    auto r = decode_metrics(testing::encode(req, Signal::kMetrics, e), content_type(e), "", limits);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().to_string().find("more than 5 records"), std::string::npos) << r.error().to_string();
  }
}

TEST(OtlpMetrics, ProtobufDataBeforeTheNameAndTemporalityAfterThePoints) {
  ProtoWriter point;
  point.dbl(4, 1.5).fixed64(3, 10);
  ProtoWriter sum;
  sum.message(1, point).varint(3, 1).varint(2, 2);
  ProtoWriter metric;
  metric.message(7, sum).bytes(3, "s").bytes(1, "late.name");
  ProtoWriter req;
  req.message(1, ProtoWriter().message(2, ProtoWriter().message(2, metric)));
  auto r = decode_metrics(req.str(), kProtobuf, "");
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].name, "late.name");
  EXPECT_EQ((*r)[0].unit, "s");
  EXPECT_EQ((*r)[0].temporality, kTemporalityCumulative);
  EXPECT_TRUE((*r)[0].monotonic);
  EXPECT_EQ((*r)[0].value(), 1.5);
}

TEST(OtlpMetrics, JsonErrorsNameTheMetricField) {
  std::string body = R"({"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","sum":{"dataPoints":[
    {"asInt":"1"},{"asInt":"x"}]}}]}]}]})";
  auto r = decode_metrics(body, kJson, "");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().to_string().find("metrics[0]: sum: dataPoints[1]: asInt: expected an integer"), std::string::npos)
      << r.error().to_string();
}

// ---- traces ----

TEST(OtlpTraces, DecodesSpansMinimally) {
  TestRequest req{{testing::claude_code_resource()}};
  TestScope s;
  s.name = "com.anthropic.claude_code.tracing";
  TestSpan sp;
  sp.name = "claude_code.llm_request";
  sp.trace_id = "5b8efff798038103d269b633813fc60c";
  sp.span_id = "eee19b7ec3c1b174";
  sp.parent_span_id = "eee19b7ec3c1b173";
  sp.kind = 3;
  sp.start = kT0;
  sp.end = kT0 + 50'000'000;
  sp.attributes = {{"model", "claude-sonnet-4-6"}, {"input_tokens", 1000}};
  sp.status_code = 2;
  sp.status_message = "overloaded";
  s.spans.push_back(sp);
  req.resources[0].scopes.push_back(s);
  for (Encoding e : kBoth) {
    SCOPED_TRACE(name(e));
    auto r = decode_traces(testing::encode(req, Signal::kTraces, e), content_type(e), "");
    ASSERT_TRUE(r) << r.error().to_string();
    ASSERT_EQ(r->size(), 1u);
    const Span& got = (*r)[0];
    EXPECT_EQ(got.name, "claude_code.llm_request");
    EXPECT_EQ(got.trace_id, sp.trace_id);
    EXPECT_EQ(got.span_id, sp.span_id);
    EXPECT_EQ(got.parent_span_id, sp.parent_span_id);
    EXPECT_EQ(got.kind, 3);
    EXPECT_EQ(got.start_unix_nano, static_cast<int64_t>(kT0));
    EXPECT_EQ(got.end_unix_nano, static_cast<int64_t>(kT0 + 50'000'000));
    EXPECT_EQ(*find_attribute(got.attributes, "input_tokens"), 1000);
    EXPECT_EQ(got.status_code, 2);
    EXPECT_EQ(got.status_message, "overloaded");
    EXPECT_EQ(got.scope_name, "com.anthropic.claude_code.tracing");
    EXPECT_EQ(string_attribute(got.resource, "service.name"), "claude-code");
  }
}

// ---- responses ----

TEST(OtlpResponses, SuccessIsAnEmptyResponseInTheRequestsEncoding) {
  auto pb = success_response(Encoding::kProtobuf);
  EXPECT_EQ(pb.status, 200);
  EXPECT_EQ(pb.content_type, "application/x-protobuf");
  EXPECT_EQ(pb.body, "");
  auto js = success_response(Encoding::kJson);
  EXPECT_EQ(js.status, 200);
  EXPECT_EQ(js.content_type, "application/json");
  EXPECT_EQ(json::parse(js.body), json::object());
}

TEST(OtlpResponses, ErrorsAreGoogleRpcStatus) {
  Error e(ErrorCode::kInvalidArgument, "expected an integer");
  e.wrap("decoding ExportLogsServiceRequest");
  auto js = error_response(Encoding::kJson, e);
  EXPECT_EQ(js.status, 400);
  EXPECT_EQ(js.content_type, "application/json");
  EXPECT_EQ(json::parse(js.body),
            json::parse(R"({"code":3,"message":"decoding ExportLogsServiceRequest: expected an integer"})"));

  auto pb = error_response(Encoding::kProtobuf, e);
  EXPECT_EQ(pb.content_type, "application/x-protobuf");
  ProtoReader reader(pb.body);
  ProtoField f;
  ASSERT_TRUE(*reader.next(f));
  EXPECT_EQ(f.number, 1u);
  EXPECT_EQ(f.scalar, 3u);
  ASSERT_TRUE(*reader.next(f));
  EXPECT_EQ(f.number, 2u);
  EXPECT_EQ(f.bytes, "decoding ExportLogsServiceRequest: expected an integer");
  EXPECT_FALSE(*reader.next(f));

  EXPECT_EQ(error_response(Encoding::kJson, Error(ErrorCode::kResourceExhausted, "big")).status, 413);
  EXPECT_EQ(error_response(Encoding::kJson, Error(ErrorCode::kUnavailable, "busy")).status, 503);
  EXPECT_EQ(json::parse(error_response(Encoding::kJson, Error(ErrorCode::kUnavailable, "busy")).body)["code"], 14);
}

// ---- what Claude Code 2.1.112 actually sent (fuzz/corpus/otlp, captured on loopback) ----

struct Capture {
  std::string body;
  const char* content_type;
  const char* content_encoding;
};

Capture capture(const std::string& file) {
  auto data = read_file(std::string(KM_SOURCE_DIR) + "/fuzz/corpus/otlp/" + file, 1 << 20);
  EXPECT_TRUE(data) << file;
  if (!data || data->empty()) return {};
  auto selector = static_cast<unsigned char>((*data)[0]);
  return {data->substr(1), (selector & 4) ? kJson : kProtobuf, (selector & 8) ? "gzip" : ""};
}

TEST(OtlpCaptures, ClaudeCodeLogsDecodeTheSameInEveryEncoding) {
  std::vector<std::vector<LogRecord>> all;
  for (const char* f : {"claude_code_2.1.112_logs_protobuf", "claude_code_2.1.112_logs_protobuf_gzip",
                        "claude_code_2.1.112_logs_json", "claude_code_2.1.112_logs_json_gzip"}) {
    SCOPED_TRACE(f);
    Capture c = capture(f);
    auto logs = must_decode_logs(c.body, c.content_type, c.content_encoding);
    ASSERT_EQ(logs.size(), 7u);
    std::vector<std::string> bodies;
    for (const auto& l : logs) bodies.push_back(l.body.get<std::string>());
    EXPECT_EQ(bodies, (std::vector<std::string>{"claude_code.user_prompt", "claude_code.api_request",
                                                "claude_code.tool_decision", "claude_code.tool_decision",
                                                "claude_code.tool_result", "claude_code.tool_result",
                                                "claude_code.api_request"}));
    EXPECT_EQ(logs[0].scope_name, "com.anthropic.claude_code.events");
    EXPECT_EQ(string_attribute(logs[1].attributes, "cost_usd"), "0.004725");
    EXPECT_EQ(*find_attribute(logs[6].attributes, "event.sequence"), 6);
    EXPECT_EQ(string_attribute(logs[5].attributes, "tool_input"), R"({"command":"echo hi","description":"Print hi"})");
    EXPECT_EQ(string_attribute(logs[0].resource, "sandbox_id"), "sb-test1234");
  }
}

TEST(OtlpCaptures, ClaudeCodeMetricsAreDeltaSums) {
  for (const char* f : {"claude_code_2.1.112_metrics_protobuf", "claude_code_2.1.112_metrics_protobuf_gzip",
                        "claude_code_2.1.112_metrics_json", "claude_code_2.1.112_metrics_json_gzip"}) {
    SCOPED_TRACE(f);
    Capture c = capture(f);
    auto r = decode_metrics(c.body, c.content_type, c.content_encoding);
    ASSERT_TRUE(r) << r.error().to_string();
    ASSERT_EQ(r->size(), 6u);  // session.count, cost.usage, token.usage x4
    for (const MetricPoint& p : *r) {
      EXPECT_EQ(p.kind, MetricKind::kSum);
      EXPECT_EQ(p.temporality, kTemporalityDelta);
      EXPECT_TRUE(p.monotonic);
    }
    EXPECT_EQ((*r)[1].name, "claude_code.cost.usage");
    EXPECT_EQ((*r)[1].value(), 0.009633);
  }
}

}  // namespace
}  // namespace km::otel
