// Token usage of one AI provider response, as the provider itself reports it.
//
// One convention across providers, so a price applies the same way to every field:
//   input        uncached input tokens. Anthropic and Bedrock report them so; OpenAI's
//                prompt_tokens / input_tokens include the cached ones, which are subtracted.
//   output       output tokens, OpenAI's reasoning tokens included (they are billed as output).
//   cache_read   input tokens served from the prompt cache.
//   cache_write  input tokens written to the prompt cache (Anthropic, Bedrock; 0 for OpenAI).
//   reasoning    informational: the part of `output` that was reasoning; never priced.
// Thread-safety: a value.
#pragma once

#include <cstdint>

namespace km::meter {

// Token figures outside [0, kMaxTokens] from a provider are clamped, so sums and prices of them
// cannot overflow (10^12 tokens is far beyond any single response).
inline constexpr int64_t kMaxTokens = 1'000'000'000'000;

struct Usage {
  int64_t input = 0;
  int64_t output = 0;
  int64_t cache_read = 0;
  int64_t cache_write = 0;
  int64_t reasoning = 0;

  // Field-wise maximum: how figures reported more than once (cumulative counts, a header and a
  // body) are combined, so a reading never goes down.
  void raise_to(const Usage& other);
  bool empty() const { return input == 0 && output == 0 && cache_read == 0 && cache_write == 0; }
  friend bool operator==(const Usage&, const Usage&) = default;
};

inline void Usage::raise_to(const Usage& o) {
  if (o.input > input) input = o.input;
  if (o.output > output) output = o.output;
  if (o.cache_read > cache_read) cache_read = o.cache_read;
  if (o.cache_write > cache_write) cache_write = o.cache_write;
  if (o.reasoning > reasoning) reasoning = o.reasoning;
}

}  // namespace km::meter
