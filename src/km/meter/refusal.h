// Budget refusals in each provider's own error shape, so the agent's SDK reports them as the
// provider's errors (and does not retry them: all are 403, which no provider SDK retries).
//   Anthropic  403 {"type":"error","error":{"type":"permission_error","message":...}}
//   OpenAI     403 {"error":{"message":...,"type":"insufficient_quota","param":null,
//                            "code":"budget_exhausted"}}
//   Bedrock    403 {"message":...} with x-amzn-ErrorType: AccessDeniedException
// The message is km's own text (e.g. "km: AI budget exhausted for sandbox sb-1a2b3c4d: spent
// $1.234567 of $1.000000; raise it with `km budget add sb-1a2b3c4d --ai 5`"); it is JSON-escaped,
// never interpreted. Thread-safety: stateless; no I/O.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "km/meter/request.h"

namespace km::meter {

struct Refusal {
  int status = 403;
  std::string content_type;  // "application/json"
  std::string body;
  // Provider-specific fields beyond Content-Type (Bedrock's x-amzn-ErrorType); empty for the
  // others. The caller writes Content-Type, framing (Content-Length) and connection handling.
  std::vector<std::pair<std::string, std::string>> headers;
};

Refusal budget_refusal(Provider p, std::string_view message);

}  // namespace km::meter
