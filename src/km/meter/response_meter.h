// Meters one AI provider response: the token usage the provider reports in it, read as the
// body arrives, so a stream that is cut off is still metered for what was delivered.
//
// The enforcer constructs one ResponseMeter per response, with the classified request and the
// response's status and headers, then feeds the body as it relays it: de-chunked but still
// content-encoded, in fragments of any size. Shapes understood:
//   Anthropic messages        SSE (message_start, content_block_*, message_delta, ping, error)
//                             or JSON with "usage";
//   OpenAI chat.completions   SSE chunks ("usage" on the last one when the request set
//                             stream_options.include_usage; "[DONE]") or JSON;
//   OpenAI responses          SSE events (response.completed / .incomplete / .failed carry
//                             response.usage) or JSON;
//   Bedrock invoke            JSON (Anthropic's shape) and the x-amzn-bedrock-*-token-count
//                             response headers (any model);
//   Bedrock invoke-stream     event-stream "chunk" events, {"bytes": base64 of an Anthropic
//                             stream event}; amazon-bedrock-invocationMetrics on the last one;
//   Bedrock converse(-stream) JSON "usage" / the event-stream "metadata" event.
// The framing follows Content-Type (text/event-stream, application/vnd.amazon.eventstream,
// anything with "json"); without one, the request's API decides. Content-Encoding is undone
// first (content_decoding.h).
//
// Only billable requests with a 2xx status are metered. For other statuses a small JSON body is
// still read for a usage figure in the provider's shape (none report one today) and nothing is
// warned about; non-billable requests are not read at all.
//
// Readings: usage() is the best figure so far, each field the maximum reported anywhere (a
// cumulative count, a header, the final figure), so it never decreases. final_usage() says the
// provider's closing figure was seen; until then, and for a stream cut off before it, callers
// should bill max(usage().output, output_estimate()) output tokens.
//
// Never fails and never aborts on its input: malformed bytes, corrupt compression, oversized
// events and unknown shapes become warnings (bounded in number, never quoting body text, so
// never a secret) and parsing stops where it cannot go on; figures already read are kept.
// Memory is bounded: one SSE event or event-stream message (16 MiB), a JSON body (32 MiB),
// the decompressors' windows; JSON nested deeper than kMaxJsonDepth is not parsed. Thread-safety: single owner. No I/O, no clock.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "km/meter/request.h"
#include "km/meter/usage.h"

namespace km::meter {

// Largest non-streaming JSON body read for its usage (AI responses are far smaller).
inline constexpr size_t kMaxJsonBody = 32u << 20;
// Largest error body (non-2xx) read.
inline constexpr size_t kMaxErrorBody = 1u << 20;
inline constexpr size_t kMaxWarnings = 16;

using HeaderList = std::vector<std::pair<std::string, std::string>>;

class ResponseMeter {
 public:
  // `headers`: the response's header fields, names in any case; Content-Type,
  // Content-Encoding (repeated fields are joined in order) and, for Bedrock, the
  // x-amzn-bedrock-{input,output,cache-read-input,cache-write-input}-token-count fields are read.
  ResponseMeter(const AiRequest& req, int status, const HeaderList& headers);
  ~ResponseMeter();
  ResponseMeter(ResponseMeter&&) noexcept;
  ResponseMeter& operator=(ResponseMeter&&) noexcept;

  // The next bytes of the body as received (still content-encoded). Ignored after finish().
  void feed(std::string_view body_bytes);
  // The body ended; `complete` false: it was cut off (connection lost, client gone, refused).
  // A JSON body is parsed here. Later calls do nothing.
  void finish(bool complete);

  Usage usage() const;
  // The model the response names (normalised for Bedrock), else the request's.
  std::string model() const;
  bool final_usage() const;
  // ceil(bytes / 4) of the text, tool-input JSON and reasoning deltas delivered so far; for a
  // JSON body, of its text parts once parsed, or of its decoded bytes if it could not be.
  int64_t output_estimate() const;
  const std::vector<std::string>& warnings() const;

  // Billable and 2xx: the body is read for usage.
  bool metered() const;
  // Body bytes after content decoding, so far.
  uint64_t decoded_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace km::meter
