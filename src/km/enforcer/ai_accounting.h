// What the inspecting proxy does with AI calls besides relaying them: the budget gate before a
// request is forwarded, and the sandbox's spend ledger as its response streams.
//
// Admission: a billable request is refused (in the provider's own error shape) when the AI
// ceiling is reached counting what is already spent plus what admitted, unfinished calls have
// reserved. Each admitted call reserves an upper estimate of its cost (input: half a token per
// request byte; output: the request's max tokens, or 16,384 when it names none) until it
// settles, so N calls racing to the ceiling overshoot it by at most the reservation of the last
// one admitted, whatever N.
//
// Recording: a call is written to the ledger as soon as the response names its usage, then at
// most once per second while it streams, and once when it ends; each write is the difference
// from what the ledger already holds (a correction may be negative), so an enforcer killed
// mid-stream leaves what it had recorded, at most one second behind. Until the provider's final
// figure arrives the output is the larger of what the provider reported and an estimate from
// the text delivered, so a client that cuts its streams before the final usage event still pays
// for what it received (the call is marked estimated); and a stream cut before the provider named
// any input (OpenAI reports usage only at the end) is charged a quarter token per request byte.
//
// Billable endpoints are the ones meter::classify recognises. Writes to other endpoints of an AI
// host (batches, embeddings, files, ...) would spend unseen: they are refused while the sandbox
// has an AI ceiling, and pass (audited) when it has none.
//
// Unknown models are priced by family, else at the provider's most expensive model, with a
// warning; never at zero. If the ledger cannot be read, billable requests are refused (the
// budget could not be enforced); if a write fails, the call is kept in memory and written again
// at its next step; a final write that fails keeps the call's reservation until it succeeds.
// Thread-safety: the enforcer's event loop only.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <vector>
#include <string>

#include "km/base/log.h"
#include "km/enforcer/audit.h"
#include "km/meter/response_meter.h"
#include "km/meter/price.h"
#include "km/meter/refusal.h"
#include "km/store/ledger.h"

namespace km::enforcer {

class AiAccounting {
 public:
  AiAccounting(std::string sandbox, std::unique_ptr<store::SpendLedger> ledger, meter::PriceTable prices,
               AuditLog& audit, log::Logger& log);

  // One admitted call, from admit() to settle().
  struct Call {
    meter::AiRequest request;
    store::AiCall row;
    int64_t reserved = 0;
    size_t request_bytes = 0;
    store::TokenDelta recorded;  // what the ledger holds for this call
    int64_t cost_recorded = 0;
    std::chrono::steady_clock::time_point started, last_write;
    bool settled = false;
  };
  struct Admission {
    std::shared_ptr<Call> call;              // admitted (null when refused)
    std::optional<meter::Refusal> refusal;   // refused: send this to the client
    std::string reason;                      // for the audit record
  };
  // `method` as sent: reads (GET, HEAD, OPTIONS) of endpoints km does not meter always pass.
  Admission admit(const meter::AiRequest& req, std::string_view method, size_t body_bytes);

  // The response is under way: writes the call's usage to the ledger if it changed and a second
  // has passed since the last write (or `force`).
  void progress(Call& call, const meter::ResponseMeter& meter, int status, bool force = false);
  // The call is over (`meter` null if no response came): final write, reservation released.
  void settle(const std::shared_ptr<Call>& call, const meter::ResponseMeter* meter, int status, bool complete);

  int64_t reserved() const { return reserved_; }
  size_t unrecorded() const { return unrecorded_.size(); }
  const meter::PriceTable& prices() const { return prices_; }

 private:
  struct Priced {
    meter::Usage usage;
    int64_t cost = 0;
    std::string model, basis;
    bool estimated = false;
  };
  // A settled call whose final write failed: it keeps its reservation (so the gate still counts
  // it) until a later admit() writes it.
  struct Unrecorded {
    std::shared_ptr<Call> call;
    Priced final;
    int status = 0;
  };
  void retry_unrecorded();
  Priced price(const Call& call, const meter::ResponseMeter& meter) const;
  bool write(Call& call, const Priced& p, int status);
  std::string refusal_message(int64_t spent, int64_t limit) const;

  std::string sandbox_;
  std::unique_ptr<store::SpendLedger> ledger_;
  meter::PriceTable prices_;
  AuditLog& audit_;
  log::Logger& log_;
  int64_t reserved_ = 0;
  uint64_t next_id_ = 0;
  std::string id_prefix_;
  mutable std::set<std::string> warned_models_;
  std::vector<Unrecorded> unrecorded_;
};

}  // namespace km::enforcer
