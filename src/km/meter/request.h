// Which hosts carry metered AI traffic, and what one request to them is: the provider, the API,
// whether it is billable, the model, streaming, and the output cap the agent asked for.
//
// Pure functions over caller-owned bytes; no I/O, no exceptions, no allocation beyond the
// returned values. Request bodies come from the sandboxed agent and are untrusted: malformed
// JSON, wrong types, huge numbers and bodies nested deeper than kMaxJsonDepth (json_depth.h,
// not parsed) all classify (the endpoint decides billability, the body only fills in details),
// and nothing from a body or target is echoed anywhere but the returned fields.
// Thread-safety: stateless.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace km::meter {

enum class Provider { kAnthropic, kOpenAI, kBedrock };

// "anthropic", "openai", "bedrock": the names the price table and logs use.
std::string_view provider_name(Provider p);
std::optional<Provider> provider_from_name(std::string_view name);

// api.anthropic.com, api.openai.com, bedrock-runtime.<region>.amazonaws.com and
// bedrock-runtime-fips.<region>.amazonaws.com (region: lowercase letters, digits and '-').
// `host` is lowercase, without port or trailing dot (as km::proxy::http::Authority gives it).
std::optional<Provider> ai_provider_for_host(std::string_view host);

// Longest model name kept from a request; longer ones are cut (they cannot name a real model,
// and the name ends up in records).
inline constexpr size_t kMaxModelName = 256;

struct AiRequest {
  Provider provider = Provider::kAnthropic;
  // "messages", "count_tokens", "chat.completions", "responses", "invoke", "invoke-stream",
  // "converse", "converse-stream", or "other".
  std::string api = "other";
  // The response reports token usage that costs money. False for token counting, model
  // listing, any GET, and endpoints not listed above (batches, embeddings, files, ...): those
  // are not metered here; whether to allow them is the enforcer's policy.
  bool billable = false;
  // From the JSON body's "model", or for Bedrock from the path, normalised by
  // normalise_bedrock_model(). "" when absent or not a string.
  std::string model;
  bool stream = false;
  // max_tokens (Anthropic, Bedrock invoke), max_completion_tokens or max_tokens (OpenAI chat),
  // max_output_tokens (OpenAI responses), inferenceConfig.maxTokens (Bedrock converse);
  // 0 when absent or not a non-negative integer.
  int64_t max_output_tokens = 0;
  // OpenAI chat.completions with stream: stream_options.include_usage is true. Without it the
  // stream carries no usage figure and only an estimate of the output can be metered.
  bool stream_include_usage = false;
};

// Classifies one request. `method` as sent (compared case-sensitively, as HTTP does);
// `target` the origin-form path and query as sent (percent-encoded; the query is ignored, and
// the path is compared after decoding, dropping empty and "." segments and resolving "..", so
// "/v1//messages/" and "/v1/%6Dessages" are "messages" as the provider would route them);
// `body` the complete request body, possibly empty or not JSON.
AiRequest classify(Provider p, std::string_view method, std::string_view target,
                   std::string_view body);

// A Bedrock model identifier as it appears (percent-decoded) in /model/{modelId}/..., reduced to
// the model it names, lowercase:
//   - ARNs: arn:<partition>:bedrock:<region>:<account>:inference-profile/<id> and
//     foundation-model/<id> give <id>; other resources (application-inference-profile/<opaque>,
//     provisioned-model/..., custom-model/...) stay as "<type>/<opaque>": they name no model;
//   - a cross-region inference prefix (us., eu., apac., global., us-gov., jp., au., ca., ...)
//     is dropped when a vendor and model follow it;
//   - the "anthropic." vendor prefix is dropped (other vendors' prefixes are kept);
//   - a version suffix -v<N>[:<N>][:<N>k] is dropped.
// "us.anthropic.claude-sonnet-4-5-20250929-v1:0" -> "claude-sonnet-4-5-20250929".
std::string normalise_bedrock_model(std::string_view model_id);

// %XX decoding for a path segment; false on a malformed escape (a '%' not followed by two hex
// digits). '+' is not special in paths.
bool percent_decode(std::string_view in, std::string& out);

}  // namespace km::meter
