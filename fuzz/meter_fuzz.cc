// Fuzz target: km::meter::ResponseMeter on untrusted response bodies.
// Input: byte 0 selects the request shape (provider, API, streaming, Content-Type), byte 1
// the content coding and whether the harness compresses the rest itself (so the fuzzer
// explores the framing inside valid compression) or feeds it as the compressed stream;
// the rest is the body. Properties checked:
//   - every usage field and the output estimate are monotone across feeds;
//   - the readings (usage, final_usage, estimate, model) do not depend on how the body was
//     split, including one byte at a time;
//   - token figures stay in [0, kMaxTokens], warnings stay bounded, and responses that are not
//     metered never warn.
// Any crash, sanitizer report or abort is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "km/meter/response_meter.h"
#include "km/meter/test_payloads.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using km::fuzz::die;
using km::fuzz::Rng;

using namespace km::meter;

struct Shape {
  Provider provider;
  const char* target;
  const char* body;
  const char* content_type;
  int status;
};

const Shape kShapes[] = {
    {Provider::kAnthropic, "/v1/messages", R"({"model":"claude-sonnet-4-5","stream":true})", "text/event-stream", 200},
    {Provider::kAnthropic, "/v1/messages", R"({"model":"claude-opus-4-1"})", "application/json", 200},
    {Provider::kOpenAI, "/v1/chat/completions", R"({"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}})",
     "text/event-stream", 200},
    {Provider::kOpenAI, "/v1/chat/completions", R"({"model":"gpt-4o"})", "application/json", 200},
    {Provider::kOpenAI, "/v1/responses", R"({"model":"gpt-5","stream":true})", "text/event-stream", 200},
    {Provider::kOpenAI, "/v1/responses", R"({"model":"gpt-5"})", "application/json", 200},
    {Provider::kBedrock, "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke", "{}", "application/json", 200},
    {Provider::kBedrock, "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream", "{}",
     "application/vnd.amazon.eventstream", 200},
    {Provider::kBedrock, "/model/anthropic.claude-3-haiku-20240307-v1:0/converse", "{}", "application/json", 200},
    {Provider::kBedrock, "/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream", "{}",
     "application/vnd.amazon.eventstream", 200},
    {Provider::kAnthropic, "/v1/messages", R"({"stream":true})", "", 200},
    {Provider::kBedrock, "/model/x/converse-stream", "{}", "", 200},
    {Provider::kOpenAI, "/v1/chat/completions", "{}", "application/json", 500},
    {Provider::kAnthropic, "/v1/messages", "{}", "text/html", 200},
    {Provider::kAnthropic, "/v1/messages/count_tokens", "{}", "application/json", 200},
    {Provider::kOpenAI, "/v1/responses", R"({"stream":true})", "text/event-stream", 200},
};

const char* kCodings[] = {"identity", "gzip", "deflate", "br", "zstd", "gzip, br", "zstd, deflate", ""};

struct Reading {
  Usage usage;
  bool final_usage = false;
  int64_t estimate = 0;
  std::string model;
  // A corrupt compressed stream: how much decodes before the decoder notices depends on where
  // its input was split (brotli and zstd flush output at input boundaries), so readings of
  // such bodies may differ between splits; everything else must not.
  bool corrupt_coding = false;
  bool same(const Reading& o) const {
    return usage == o.usage && final_usage == o.final_usage && estimate == o.estimate && model == o.model;
  }
};

// mode 0: whole; 1: one byte at a time; 2: random splits.
Reading run(const AiRequest& req, const Shape& s, const HeaderList& h, std::string_view body, int mode, Rng& rng,
            bool complete) {
  ResponseMeter m(req, s.status, h);
  Usage prev;
  int64_t prev_est = 0;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t n = mode == 0 ? body.size() : mode == 1 ? 1 : std::min(body.size() - pos, 1 + rng.below(rng.below(2) ? 300 : 7));
    m.feed(body.substr(pos, n));
    pos += n;
    Usage u = m.usage();
    if (u.input < prev.input || u.output < prev.output || u.cache_read < prev.cache_read ||
        u.cache_write < prev.cache_write || u.reasoning < prev.reasoning || m.output_estimate() < prev_est) {
      die("a reading went down");
    }
    if (u.input < 0 || u.output < 0 || u.cache_read < 0 || u.cache_write < 0 || u.input > kMaxTokens ||
        u.output > kMaxTokens) {
      die("a token figure outside [0, kMaxTokens]");
    }
    prev = u;
    prev_est = m.output_estimate();
    if (m.warnings().size() > kMaxWarnings) die("too many warnings");
  }
  m.finish(complete);
  if (m.warnings().size() > kMaxWarnings) die("too many warnings");
  if (!m.metered() && !m.warnings().empty()) die("warnings for a response that is not metered");
  if (m.model().size() > 256) die("model name over the cap");
  bool corrupt = false;
  for (const auto& w : m.warnings()) corrupt = corrupt || w.rfind("corrupt ", 0) == 0;
  return {m.usage(), m.final_usage(), m.output_estimate(), m.model(), corrupt};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const Shape& shape = kShapes[data[0] % std::size(kShapes)];
  const char* coding = kCodings[data[1] % std::size(kCodings)];
  bool harness_compresses = (data[1] & 0x80) != 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 2, size - 2);
  std::string body(rest);
  if (harness_compresses) {
    // Codings apply in the order listed: "gzip, br" is gzip, then br.
    std::string_view list = coding;
    size_t start = 0;
    while (start <= list.size()) {
      size_t comma = list.find(',', start);
      if (comma == std::string_view::npos) comma = list.size();
      std::string_view one = list.substr(start, comma - start);
      while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
      body = testing::encode_as(one, body);
      start = comma + 1;
    }
  }

  AiRequest req = classify(shape.provider, "POST", shape.target, shape.body);
  HeaderList h;
  if (*shape.content_type) h.emplace_back("content-type", shape.content_type);
  h.emplace_back("content-encoding", coding);
  Rng rng(rest);
  bool complete = (data[1] & 0x40) == 0;
  Reading whole = run(req, shape, h, body, 0, rng, complete);
  Reading split = run(req, shape, h, body, 2, rng, complete);
  if (!whole.corrupt_coding && !split.corrupt_coding && !split.same(whole)) {
    die("readings depend on how the body was split");
  }
  if (body.size() <= 4096) {
    Reading bytewise = run(req, shape, h, body, 1, rng, complete);
    if (!whole.corrupt_coding && !bytewise.corrupt_coding && !bytewise.same(whole)) {
      die("readings differ when fed one byte at a time");
    }
  }
  return 0;
}
