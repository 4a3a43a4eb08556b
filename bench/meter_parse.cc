// meter_parse_bench: how fast km::meter reads AI provider responses, in MB/s of body bytes.
//
//   build/release/bench/meter_parse_bench [--mb 8] [--rounds 5] [--feed 16384]
//
// Builds a synthetic response of about --mb MB in each shape (an Anthropic SSE stream of short
// text deltas, and the same events as a Bedrock InvokeModelWithResponseStream event-stream),
// then times, best of --rounds, feeding it in --feed-byte pieces to:
//   1. the SSE parser alone;
//   2. a ResponseMeter on the Anthropic stream, identity;
//   3. a ResponseMeter on the Anthropic stream, gzip (MB/s of decoded bytes; wire bytes too);
//   4. the event-stream decoder alone on the Bedrock stream;
//   5. a ResponseMeter on the Bedrock stream.
// Each run checks the usage it read, so a fast wrong answer cannot pass unnoticed. Loops are
// bounded by --rounds; the program exits 1 only if a check fails.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "km/meter/event_stream.h"
#include "km/meter/response_meter.h"
#include "km/meter/sse.h"
#include "km/meter/test_payloads.h"

namespace {

using namespace km::meter;

struct Options {
  double mb = 8;
  int rounds = 5;
  size_t feed = 16384;
};

const char* kStart =
    R"({"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant",)"
    R"("content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{)"
    R"("input_tokens":472,"cache_creation_input_tokens":1024,"cache_read_input_tokens":20480,"output_tokens":2}}})";
// Text deltas vary like real output does, so gzip compresses them about as well as it would.
const char* kWords[] = {"the",   "meter",  "reads", "usage", "from",    "each",  "stream", "as",
                        "bytes", "arrive", "while", "the",   "enforcer", "relays", "them",  "on"};

std::string delta_json(size_t i) {
  std::string text;
  for (size_t w = 0; w < 6; ++w) {
    text += kWords[(i * 7 + w * 3 + (i >> 4)) % std::size(kWords)];
    text += ' ';
  }
  text += std::to_string(i % 997);
  return R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":")" + text + "\"}}";
}
const char* kStop = R"({"type":"message_stop"})";

std::string message_delta(size_t deltas) {
  return R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":)" +
         std::to_string(deltas * 11) + "}}";
}

// Seconds for the fastest of `rounds` runs of `fn`.
double best_of(int rounds, const std::function<void()>& fn) {
  double best = 1e100;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best) best = s;
  }
  return best;
}

bool g_failed = false;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "meter_parse_bench: check failed: %s\n", what);
    g_failed = true;
  }
}

void report(const char* name, size_t bytes, double seconds, const char* note = "") {
  std::printf("  %-44s %9.1f MB/s  %s\n", name, static_cast<double>(bytes) / 1e6 / seconds, note);
}

void feed_meter(ResponseMeter& m, std::string_view body, size_t piece) {
  for (size_t i = 0; i < body.size(); i += piece) m.feed(body.substr(i, piece));
}

bool parse_args(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (i + 1 >= argc) return false;
    if (a == "--mb") {
      o.mb = std::atof(argv[++i]);
    } else if (a == "--rounds") {
      o.rounds = std::atoi(argv[++i]);
    } else if (a == "--feed") {
      o.feed = static_cast<size_t>(std::atol(argv[++i]));
    } else {
      return false;
    }
  }
  return o.mb > 0 && o.mb <= 1024 && o.rounds > 0 && o.rounds <= 100 && o.feed > 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (!parse_args(argc, argv, opt)) {
    std::fprintf(stderr, "usage: meter_parse_bench [--mb 0<N<=1024] [--rounds 1..100] [--feed BYTES]\n");
    return 2;
  }
  const size_t target = static_cast<size_t>(opt.mb * 1e6);
  std::string sse_body = testing::sse("message_start", kStart);
  std::string es_body = testing::bedrock_chunk(kStart);
  size_t deltas = 0;
  while (sse_body.size() < target) {
    std::string d = delta_json(deltas++);
    sse_body += testing::sse("content_block_delta", d);
    es_body += testing::bedrock_chunk(d);
  }
  sse_body += testing::sse("message_delta", message_delta(deltas)) + testing::sse("message_stop", kStop);
  es_body += testing::bedrock_chunk(message_delta(deltas)) + testing::bedrock_chunk(kStop);
  const std::string gzip_body = testing::encode_as("gzip", sse_body);

  const Usage expected{472, static_cast<int64_t>(deltas * 11), 20480, 1024, 0};
  AiRequest anthropic = classify(Provider::kAnthropic, "POST", "/v1/messages", R"({"model":"claude-sonnet-4-5","stream":true})");
  AiRequest bedrock = classify(Provider::kBedrock, "POST",
                               "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream", "{}");

  std::printf("meter_parse_bench: %zu text deltas; SSE body %.1f MB (gzip %.2f MB), event-stream body %.1f MB; "
              "%zu-byte feeds, best of %d\n",
              deltas, static_cast<double>(sse_body.size()) / 1e6, static_cast<double>(gzip_body.size()) / 1e6,
              static_cast<double>(es_body.size()) / 1e6, opt.feed, opt.rounds);

  {
    size_t events = 0;
    double s = best_of(opt.rounds, [&] {
      SseParser p;
      std::vector<SseEvent> out;
      events = 0;
      for (size_t i = 0; i < sse_body.size(); i += opt.feed) {
        out.clear();
        check(p.feed(std::string_view(sse_body).substr(i, opt.feed), out).has_value(), "SSE parse");
        events += out.size();
      }
    });
    check(events == deltas + 3, "SSE event count");
    report("SSE parser alone", sse_body.size(), s);
  }
  for (bool gzip : {false, true}) {
    const std::string& body = gzip ? gzip_body : sse_body;
    HeaderList h{{"content-type", "text/event-stream"}};
    if (gzip) h.emplace_back("content-encoding", "gzip");
    Usage got;
    double s = best_of(opt.rounds, [&] {
      ResponseMeter m(anthropic, 200, h);
      feed_meter(m, body, opt.feed);
      m.finish(true);
      got = m.usage();
    });
    check(got == expected, "Anthropic usage");
    if (gzip) {
      char note[64];
      std::snprintf(note, sizeof note, "(%.1f MB/s of gzip on the wire)", static_cast<double>(body.size()) / 1e6 / s);
      report("ResponseMeter, Anthropic SSE, gzip", sse_body.size(), s, note);
    } else {
      report("ResponseMeter, Anthropic SSE, identity", sse_body.size(), s);
    }
  }
  {
    size_t messages = 0;
    double s = best_of(opt.rounds, [&] {
      EventStreamDecoder d;
      std::vector<EventStreamMessage> out;
      messages = 0;
      for (size_t i = 0; i < es_body.size(); i += opt.feed) {
        out.clear();
        check(d.feed(std::string_view(es_body).substr(i, opt.feed), out).has_value(), "event-stream decode");
        messages += out.size();
      }
    });
    check(messages == deltas + 3, "event-stream message count");
    report("event-stream decoder alone", es_body.size(), s);
  }
  {
    Usage got;
    double s = best_of(opt.rounds, [&] {
      ResponseMeter m(bedrock, 200, {{"content-type", "application/vnd.amazon.eventstream"}});
      feed_meter(m, es_body, opt.feed);
      m.finish(true);
      got = m.usage();
    });
    check(got == expected, "Bedrock usage");
    report("ResponseMeter, Bedrock invoke-stream", es_body.size(), s);
  }
  return g_failed ? 1 : 0;
}
