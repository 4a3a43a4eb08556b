#include "km/meter/response_meter.h"

#include <optional>

#include <nlohmann/json.hpp>

#include "km/base/strings.h"
#include "km/meter/base64.h"
#include "km/meter/content_decoding.h"
#include "km/meter/event_stream.h"
#include "km/meter/json_depth.h"
#include "km/meter/sse.h"

namespace km::meter {

namespace {

using nlohmann::json;

enum class Framing { kNone, kSse, kEventStream, kJson };

const json& field(const json& obj, std::string_view key) {
  static const json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

// A token count: a non-negative integer (or integral float) clamped to kMaxTokens; nullopt when
// absent, null or of another type.
std::optional<int64_t> count(const json& v) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    return u > static_cast<uint64_t>(kMaxTokens) ? kMaxTokens : static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    return i < 0 ? 0 : (i > kMaxTokens ? kMaxTokens : i);
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (!(d >= 0)) return 0;  // negative or NaN
    return d >= static_cast<double>(kMaxTokens) ? kMaxTokens : static_cast<int64_t>(d);
  }
  return std::nullopt;
}

int64_t count_or_zero(const json& v) { return count(v).value_or(0); }

// Usage in each provider's own naming. nullopt when `u` holds none of the fields.
std::optional<Usage> anthropic_usage(const json& u) {
  if (!u.is_object()) return std::nullopt;
  auto in = count(field(u, "input_tokens"));
  auto out = count(field(u, "output_tokens"));
  auto cr = count(field(u, "cache_read_input_tokens"));
  auto cw = count(field(u, "cache_creation_input_tokens"));
  if (!in && !out && !cr && !cw) return std::nullopt;
  return Usage{in.value_or(0), out.value_or(0), cr.value_or(0), cw.value_or(0), 0};
}

std::optional<Usage> openai_chat_usage(const json& u) {
  if (!u.is_object()) return std::nullopt;
  auto prompt = count(field(u, "prompt_tokens"));
  auto completion = count(field(u, "completion_tokens"));
  if (!prompt && !completion) return std::nullopt;
  int64_t cached = count_or_zero(field(field(u, "prompt_tokens_details"), "cached_tokens"));
  int64_t reasoning = count_or_zero(field(field(u, "completion_tokens_details"), "reasoning_tokens"));
  int64_t p = prompt.value_or(0);
  if (cached > p) cached = p;
  return Usage{p - cached, completion.value_or(0), cached, 0, reasoning};
}

std::optional<Usage> openai_responses_usage(const json& u) {
  if (!u.is_object()) return std::nullopt;
  auto in = count(field(u, "input_tokens"));
  auto out = count(field(u, "output_tokens"));
  if (!in && !out) return std::nullopt;
  int64_t cached = count_or_zero(field(field(u, "input_tokens_details"), "cached_tokens"));
  int64_t reasoning = count_or_zero(field(field(u, "output_tokens_details"), "reasoning_tokens"));
  int64_t i = in.value_or(0);
  if (cached > i) cached = i;
  return Usage{i - cached, out.value_or(0), cached, 0, reasoning};
}

std::optional<Usage> bedrock_converse_usage(const json& u) {
  if (!u.is_object()) return std::nullopt;
  auto in = count(field(u, "inputTokens"));
  auto out = count(field(u, "outputTokens"));
  auto cr = count(field(u, "cacheReadInputTokens"));
  auto cw = count(field(u, "cacheWriteInputTokens"));
  if (!in && !out && !cr && !cw) return std::nullopt;
  return Usage{in.value_or(0), out.value_or(0), cr.value_or(0), cw.value_or(0), 0};
}

std::optional<Usage> bedrock_invocation_metrics(const json& m) {
  if (!m.is_object()) return std::nullopt;
  auto in = count(field(m, "inputTokenCount"));
  auto out = count(field(m, "outputTokenCount"));
  auto cr = count(field(m, "cacheReadInputTokenCount"));
  auto cw = count(field(m, "cacheWriteInputTokenCount"));
  if (!in && !out && !cr && !cw) return std::nullopt;
  return Usage{in.value_or(0), out.value_or(0), cr.value_or(0), cw.value_or(0), 0};
}


size_t string_size(const json& v) { return v.is_string() ? v.get_ref<const std::string&>().size() : 0; }

// A provider's error type or code, safe to put in a warning: a short token of [A-Za-z0-9_.:-],
// or "unknown". Provider messages are never quoted (they may echo the request).
std::string safe_token(std::string_view s) {
  if (s.empty() || s.size() > 64) return "unknown";
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == ':' || c == '-';
    if (!ok) return "unknown";
  }
  return std::string(s);
}

std::string safe_token(const json& v) {
  return v.is_string() ? safe_token(std::string_view(v.get_ref<const std::string&>())) : "unknown";
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "123" -> 123 (clamped to kMaxTokens); nullopt for anything but 1-19 digits.
std::optional<int64_t> header_count(std::string_view v) {
  v = trim(v);
  if (v.empty() || v.size() > 19) return std::nullopt;
  int64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n > kMaxTokens ? kMaxTokens : n;
}

bool is_event_stream_api(std::string_view api) { return api == "invoke-stream" || api == "converse-stream"; }

}  // namespace

struct ResponseMeter::Impl {
  AiRequest req;
  bool metered = false;      // billable and 2xx
  bool read_errors = false;  // billable, not 2xx: a small JSON body is looked at, silently
  Framing framing = Framing::kNone;
  std::optional<ContentDecoder> decoder;
  SseParser sse;
  EventStreamDecoder events;
  std::string json_body;
  size_t json_limit = kMaxJsonBody;
  bool json_overflow = false;
  std::vector<SseEvent> sse_out;
  std::vector<EventStreamMessage> event_out;

  Usage usage;
  std::string model;  // from the response; "" until it names one
  bool final_usage = false;
  uint64_t text_bytes = 0;
  uint64_t decoded_bytes = 0;
  bool json_estimate_from_bytes = false;
  bool stopped = false;   // a fatal decoding or framing error: the rest of the body is ignored
  bool finished = false;
  std::vector<std::string> warnings;

  void warn(std::string w) {
    if (!metered) return;
    for (const auto& existing : warnings) {
      if (existing == w) return;
    }
    if (warnings.size() + 1 < kMaxWarnings) {
      warnings.push_back(std::move(w));
    } else if (warnings.size() + 1 == kMaxWarnings) {
      warnings.push_back("further warnings suppressed");
    }
  }

  void stop(std::string why) {
    warn(std::move(why));
    stopped = true;
  }

  void raise(const std::optional<Usage>& u, bool is_final) {
    if (!u) return;
    usage.raise_to(*u);
    if (is_final) final_usage = true;
  }

  void set_model(const json& v) {
    if (!v.is_string()) return;
    const std::string& m = v.get_ref<const std::string&>();
    if (m.empty()) return;
    model = req.provider == Provider::kBedrock ? normalise_bedrock_model(m) : m.substr(0, kMaxModelName);
  }

  void text(const json& v) { text_bytes += string_size(v); }

  // --- framing ---

  void on_decoded(std::string_view d) {
    decoded_bytes += d.size();
    if (stopped) return;
    switch (framing) {
      case Framing::kNone: return;
      case Framing::kSse: {
        sse_out.clear();
        Status s = sse.feed(d, sse_out);
        for (const SseEvent& ev : sse_out) on_sse(ev);
        if (!s) stop(s.error().message());
        return;
      }
      case Framing::kEventStream: {
        event_out.clear();
        Status s = events.feed(d, event_out);
        for (const EventStreamMessage& m : event_out) on_event_stream(m);
        if (!s) stop(s.error().message());
        return;
      }
      case Framing::kJson:
        if (json_body.size() + d.size() > json_limit) {
          json_overflow = true;
          stop("JSON body larger than " + std::to_string(json_limit) + " bytes; not read");
          return;
        }
        json_body.append(d);
        return;
    }
  }

  static json parse(std::string_view text) {
    if (!json_depth_within(text)) return json(json::value_t::discarded);
    return json::parse(text, nullptr, /*allow_exceptions=*/false);
  }

  // --- SSE ---

  void on_sse(const SseEvent& ev) {
    if (req.provider == Provider::kOpenAI && ev.data == "[DONE]") return;
    json j = parse(ev.data);
    if (j.is_discarded() || !j.is_object()) {
      warn("unparseable server-sent event data (" + std::to_string(ev.data.size()) + " bytes)");
      return;
    }
    if (req.provider == Provider::kAnthropic || req.provider == Provider::kBedrock) {
      on_anthropic_event(j);
    } else if (req.api == "responses") {
      on_responses_event(j);
    } else {
      on_chat_chunk(j);
    }
  }

  // Anthropic's stream events, from SSE or from Bedrock's chunk payloads.
  void on_anthropic_event(const json& j) {
    const json& type = field(j, "type");
    std::string_view t = type.is_string() ? std::string_view(type.get_ref<const std::string&>()) : "";
    if (t == "content_block_delta") {
      const json& d = field(j, "delta");
      text(field(d, "text"));
      text(field(d, "partial_json"));
      text(field(d, "thinking"));
    } else if (t == "message_start") {
      const json& msg = field(j, "message");
      set_model(field(msg, "model"));
      raise(anthropic_usage(field(msg, "usage")), false);
    } else if (t == "message_delta") {
      // Cumulative figures; newer API versions repeat the input and cache counts here.
      raise(anthropic_usage(field(j, "usage")), true);
    } else if (t == "content_block_start") {
      const json& block = field(j, "content_block");
      text(field(block, "text"));
      text(field(block, "thinking"));
    } else if (t == "error") {
      warn("provider error event: " + safe_token(field(field(j, "error"), "type")));
    }
    // Bedrock adds its own figures to the last event of an InvokeModelWithResponseStream.
    raise(bedrock_invocation_metrics(field(j, "amazon-bedrock-invocationMetrics")), true);
  }

  void on_chat_chunk(const json& j) {
    if (j.contains("error")) {
      const json& e = field(j, "error");
      const json& type = field(e, "type");
      warn("provider error event: " + safe_token(type.is_string() ? type : field(e, "code")));
      return;
    }
    set_model(field(j, "model"));
    const json& choices = field(j, "choices");
    if (choices.is_array()) {
      for (const json& c : choices) {
        const json& d = field(c, "delta");
        text(field(d, "content"));
        text(field(d, "refusal"));
        const json& calls = field(d, "tool_calls");
        if (calls.is_array()) {
          for (const json& call : calls) text(field(field(call, "function"), "arguments"));
        }
      }
    }
    raise(openai_chat_usage(field(j, "usage")), true);
  }

  void on_responses_event(const json& j) {
    const json& type = field(j, "type");
    std::string_view t = type.is_string() ? std::string_view(type.get_ref<const std::string&>()) : "";
    constexpr std::string_view kDelta = ".delta";
    if (t.size() > kDelta.size() && t.substr(t.size() - kDelta.size()) == kDelta) {
      // Text, refusal, tool arguments and reasoning text; audio deltas are base64 of sound.
      if (t.find("audio") == std::string_view::npos) text(field(j, "delta"));
      return;
    }
    if (t == "error") {
      const json& code = field(j, "code");
      warn("provider error event: " + safe_token(code.is_string() ? code : field(j, "type")));
      return;
    }
    const json& resp = field(j, "response");
    if (!resp.is_object()) return;
    set_model(field(resp, "model"));
    bool closing = t == "response.completed" || t == "response.incomplete" || t == "response.failed";
    raise(openai_responses_usage(field(resp, "usage")), closing);
  }

  // --- AWS event-stream ---

  void on_event_stream(const EventStreamMessage& m) {
    auto message_type = m.string_header(":message-type").value_or("event");
    if (message_type == "exception") {
      warn("provider stream exception: " + safe_token(m.string_header(":exception-type").value_or("unknown")));
      return;
    }
    if (message_type == "error") {
      warn("provider stream error: " + safe_token(m.string_header(":error-code").value_or("unknown")));
      return;
    }
    if (message_type != "event") return;
    std::string_view event_type = m.string_header(":event-type").value_or("");
    json j = parse(m.payload);
    if (j.is_discarded() || !j.is_object()) {
      warn("unparseable event-stream payload (" + std::to_string(m.payload.size()) + " bytes)");
      return;
    }
    if (event_type == "chunk") {
      const json& b = field(j, "bytes");
      std::string decoded;
      if (!b.is_string() || !base64_decode(b.get_ref<const std::string&>(), decoded)) {
        warn("event-stream chunk without valid base64 bytes");
        return;
      }
      json inner = parse(decoded);
      if (inner.is_discarded() || !inner.is_object()) {
        warn("unparseable event-stream chunk (" + std::to_string(decoded.size()) + " bytes)");
        return;
      }
      on_anthropic_event(inner);
      return;
    }
    // ConverseStream: the payload is the event's member; tolerate it wrapped in its name.
    const json& body = j.contains(event_type) && field(j, event_type).is_object() ? field(j, event_type) : j;
    if (event_type == "contentBlockDelta") {
      const json& d = field(body, "delta");
      text(field(d, "text"));
      text(field(field(d, "toolUse"), "input"));
      text(field(field(d, "reasoningContent"), "text"));
    } else if (event_type == "metadata") {
      raise(bedrock_converse_usage(field(body, "usage")), true);
    }
  }

  // --- JSON bodies ---

  void on_json_body(bool complete) {
    json j = parse(json_body);
    if (j.is_discarded() || !j.is_object()) {
      json_estimate_from_bytes = true;
      if (complete && !json_body.empty()) warn("response body is not a JSON object");
      return;
    }
    set_model(field(j, "model"));
    switch (req.provider) {
      case Provider::kAnthropic:
        raise(anthropic_usage(field(j, "usage")), true);
        anthropic_content_text(j);
        break;
      case Provider::kOpenAI:
        if (req.api == "responses") {
          raise(openai_responses_usage(field(j, "usage")), true);
          responses_output_text(j);
        } else {
          raise(openai_chat_usage(field(j, "usage")), true);
          const json& choices = field(j, "choices");
          if (choices.is_array()) {
            for (const json& c : choices) {
              const json& msg = field(c, "message");
              text(field(msg, "content"));
              text(field(msg, "refusal"));
              const json& calls = field(msg, "tool_calls");
              if (calls.is_array()) {
                for (const json& call : calls) text(field(field(call, "function"), "arguments"));
              }
            }
          }
        }
        break;
      case Provider::kBedrock:
        if (req.api == "converse" || req.api == "converse-stream") {
          raise(bedrock_converse_usage(field(j, "usage")), true);
          const json& content = field(field(field(j, "output"), "message"), "content");
          if (content.is_array()) {
            for (const json& block : content) {
              text(field(block, "text"));
              text(field(field(field(block, "reasoningContent"), "reasoningText"), "text"));
            }
          }
        } else {
          raise(anthropic_usage(field(j, "usage")), true);
          raise(bedrock_invocation_metrics(field(j, "amazon-bedrock-invocationMetrics")), true);
          anthropic_content_text(j);
        }
        break;
    }
  }

  void anthropic_content_text(const json& j) {
    const json& content = field(j, "content");
    if (!content.is_array()) return;
    for (const json& block : content) {
      text(field(block, "text"));
      text(field(block, "thinking"));
    }
  }

  void responses_output_text(const json& j) {
    const json& output = field(j, "output");
    if (!output.is_array()) return;
    for (const json& item : output) {
      text(field(item, "arguments"));
      for (std::string_view key : {"content", "summary"}) {
        const json& parts = field(item, key);
        if (!parts.is_array()) continue;
        for (const json& part : parts) {
          text(field(part, "text"));
          text(field(part, "refusal"));
        }
      }
    }
  }
};

ResponseMeter::ResponseMeter(const AiRequest& req, int status, const HeaderList& headers)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.req = req;
  bool ok_status = status >= 200 && status <= 299;
  m.metered = req.billable && ok_status;
  m.read_errors = req.billable && !ok_status;
  if (!m.metered && !m.read_errors) return;

  std::string content_type, content_encoding;
  std::optional<int64_t> in_count, out_count, cache_read_count, cache_write_count;
  for (const auto& field_line : headers) {
    // Plain references, not a structured binding: older clang cannot capture those.
    const std::string& name = field_line.first;
    const std::string& value = field_line.second;
    if (equals_ignore_case(name, "content-type")) {
      content_type = to_lower(trim(value.substr(0, value.find(';'))));
    } else if (equals_ignore_case(name, "content-encoding")) {
      if (!content_encoding.empty()) content_encoding += ',';
      content_encoding += value;
    } else if (req.provider == Provider::kBedrock) {
      auto parse_count = [&](std::optional<int64_t>& slot) {
        slot = header_count(value);
        if (!slot) m.warn("response header " + to_lower(name) + " is not a token count");
      };
      if (equals_ignore_case(name, "x-amzn-bedrock-input-token-count")) parse_count(in_count);
      else if (equals_ignore_case(name, "x-amzn-bedrock-output-token-count")) parse_count(out_count);
      else if (equals_ignore_case(name, "x-amzn-bedrock-cache-read-input-token-count")) parse_count(cache_read_count);
      else if (equals_ignore_case(name, "x-amzn-bedrock-cache-write-input-token-count")) parse_count(cache_write_count);
    }
  }
  if (m.metered && (in_count || out_count)) {
    Usage u{in_count.value_or(0), out_count.value_or(0), cache_read_count.value_or(0),
            cache_write_count.value_or(0), 0};
    m.raise(u, in_count && out_count);
  }

  if (m.read_errors) {
    if (content_type.find("json") == std::string::npos) return;
    m.framing = Framing::kJson;
    m.json_limit = kMaxErrorBody;
  } else if (content_type == "text/event-stream") {
    m.framing = Framing::kSse;
  } else if (content_type == "application/vnd.amazon.eventstream") {
    m.framing = Framing::kEventStream;
  } else if (content_type.find("json") != std::string::npos) {
    m.framing = Framing::kJson;
  } else if (content_type.empty()) {
    m.framing = req.provider == Provider::kBedrock ? (is_event_stream_api(req.api) ? Framing::kEventStream : Framing::kJson)
                                                   : (req.stream ? Framing::kSse : Framing::kJson);
  } else {
    m.warn("unexpected content type " + quoted(content_type, 60) + "; body not read");
    return;
  }

  auto decoder = ContentDecoder::create(content_encoding);
  if (!decoder) {
    m.framing = Framing::kNone;
    m.warn(decoder.error().message() + "; body not read");
    return;
  }
  m.decoder.emplace(std::move(decoder).value());
}

ResponseMeter::~ResponseMeter() = default;
ResponseMeter::ResponseMeter(ResponseMeter&&) noexcept = default;
ResponseMeter& ResponseMeter::operator=(ResponseMeter&&) noexcept = default;

void ResponseMeter::feed(std::string_view body_bytes) {
  Impl& m = *impl_;
  if (m.finished || m.stopped || !m.decoder || body_bytes.empty()) return;
  Status s = m.decoder->feed(body_bytes, [&m](std::string_view d) { m.on_decoded(d); });
  if (!s) m.stop(s.error().message());
}

void ResponseMeter::finish(bool complete) {
  Impl& m = *impl_;
  if (m.finished) return;
  m.finished = true;
  if (!m.decoder) return;
  if (!m.stopped) {
    Status s = m.decoder->finish();
    if (!s) m.stop(s.error().message());
  }
  switch (m.framing) {
    case Framing::kNone: break;
    case Framing::kSse:
      if (m.sse.finish() && !m.stopped) m.warn("body ended inside a server-sent event");
      break;
    case Framing::kEventStream:
      if (m.events.mid_message() && !m.stopped) m.warn("body ended inside an event-stream message");
      break;
    case Framing::kJson:
      if (!m.json_overflow) {
        m.on_json_body(complete && !m.stopped);
      } else {
        m.json_estimate_from_bytes = true;
      }
      m.json_body.clear();
      m.json_body.shrink_to_fit();
      break;
  }
  if (!m.metered) return;
  if (!complete) {
    m.warn("response cut off after " + std::to_string(m.decoded_bytes) + " decoded body bytes");
  }
  if (!m.final_usage) {
    if (m.req.api == "chat.completions" && m.req.stream && !m.req.stream_include_usage &&
        m.framing == Framing::kSse) {
      m.warn("no usage in the stream: the request did not set stream_options.include_usage");
    } else {
      m.warn(complete ? "no final usage figure in the response" : "cut off before the final usage figure");
    }
  }
}

Usage ResponseMeter::usage() const { return impl_->usage; }

std::string ResponseMeter::model() const {
  return impl_->model.empty() ? impl_->req.model : impl_->model;
}

bool ResponseMeter::final_usage() const { return impl_->final_usage; }

int64_t ResponseMeter::output_estimate() const {
  uint64_t bytes = impl_->json_estimate_from_bytes ? impl_->decoded_bytes : impl_->text_bytes;
  uint64_t est = bytes / 4 + (bytes % 4 != 0);
  return est > static_cast<uint64_t>(kMaxTokens) ? kMaxTokens : static_cast<int64_t>(est);
}

const std::vector<std::string>& ResponseMeter::warnings() const { return impl_->warnings; }

bool ResponseMeter::metered() const { return impl_->metered; }

uint64_t ResponseMeter::decoded_bytes() const { return impl_->decoded_bytes; }

}  // namespace km::meter
