// Test and benchmark support for km::meter (not linked into km's binaries): the encoders the
// library only decodes (gzip, deflate, brotli, zstd, base64) and builders for provider
// payloads (SSE events, Bedrock event-stream messages). Thread-safety: stateless.
#pragma once

#include <string>
#include <string_view>

namespace km::meter::testing {

enum class Wrap { kGzip, kZlib, kRawDeflate };
std::string deflate_compress(std::string_view data, Wrap wrap, int level = 6);
std::string brotli_compress(std::string_view data, int quality = 5);
std::string zstd_compress(std::string_view data, int level = 3);
// Encodes with one content coding by its HTTP name: gzip, x-gzip, deflate, br, zstd, identity.
std::string encode_as(std::string_view coding, std::string_view data);

std::string base64_encode(std::string_view data);

// "event: <name>\ndata: <data>\n\n" (no event line when name is empty).
std::string sse(std::string_view name, std::string_view data);

// One Bedrock InvokeModelWithResponseStream "chunk" message carrying `event_json`.
std::string bedrock_chunk(std::string_view event_json);
// One event-stream event message (:message-type event) with a JSON payload.
std::string bedrock_event(std::string_view event_type, std::string_view payload_json);
// One exception message (:message-type exception).
std::string bedrock_exception(std::string_view exception_type, std::string_view message);

}  // namespace km::meter::testing
