#include "km/meter/refusal.h"

#include <nlohmann/json.hpp>

namespace km::meter {

Refusal budget_refusal(Provider p, std::string_view message) {
  using json = nlohmann::ordered_json;  // fields in the order the providers send them
  Refusal r;
  r.status = 403;
  r.content_type = "application/json";
  std::string msg(message);
  json body;
  switch (p) {
    case Provider::kAnthropic:
      body = {{"type", "error"}, {"error", {{"type", "permission_error"}, {"message", msg}}}};
      break;
    case Provider::kOpenAI:
      body = {{"error",
               {{"message", msg}, {"type", "insufficient_quota"}, {"param", nullptr}, {"code", "budget_exhausted"}}}};
      break;
    case Provider::kBedrock:
      body = {{"message", msg}};
      break;
  }
  // Invalid UTF-8 in a message is replaced rather than thrown on.
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  if (p == Provider::kBedrock) r.headers.emplace_back("x-amzn-ErrorType", "AccessDeniedException");
  return r;
}

}  // namespace km::meter
