#include "km/enforcer/ai_accounting.h"

#include <unistd.h>

#include <ctime>
#include <random>

namespace km::enforcer {

namespace {

constexpr auto kWriteInterval = std::chrono::seconds(1);
constexpr int64_t kDefaultMaxOutput = 16384;

store::TokenDelta tokens_of(const meter::Usage& u) { return {u.input, u.output, u.cache_read, u.cache_write}; }

std::string basis_of(const meter::PriceTable::Lookup& l) {
  switch (l.how) {
    case meter::PriceTable::Lookup::kExact:
      return "exact";
    case meter::PriceTable::Lookup::kFamily:
      return "family:" + l.matched;
    case meter::PriceTable::Lookup::kFallback:
      return "fallback:" + l.matched;
  }
  return "exact";
}

}  // namespace

AiAccounting::AiAccounting(std::string sandbox, std::unique_ptr<store::SpendLedger> ledger, meter::PriceTable prices,
                           AuditLog& audit, log::Logger& log)
    : sandbox_(std::move(sandbox)), ledger_(std::move(ledger)), prices_(std::move(prices)), audit_(audit), log_(log) {
  // Call ids are unique across restarts of this sandbox's enforcer: a random prefix per process.
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  id_prefix_ = buf;
}

std::string AiAccounting::refusal_message(int64_t spent, int64_t limit) const {
  std::string m = "km: AI budget exhausted for sandbox " + sandbox_ + ": spent " + meter::format_usd(spent);
  if (reserved_ > 0) m += " (and " + meter::format_usd(reserved_) + " reserved by calls in flight)";
  m += " of " + meter::format_usd(limit) + "; raise it with `km budget add " + sandbox_ + " --ai 5`";
  return m;
}

AiAccounting::Admission AiAccounting::admit(const meter::AiRequest& req, std::string_view method, size_t body_bytes) {
  Admission out;
  if (!unrecorded_.empty()) retry_unrecorded();
  auto limits = ledger_->limits();
  auto spent = limits ? ledger_->ai_spent() : Result<int64_t>(fail(limits.error()));
  if (!limits || !spent) {
    // Without the ledger the ceiling cannot be enforced: refuse rather than run unmetered.
    Error e = !limits ? limits.error() : spent.error();
    log_.log(log::Level::kError, "spend ledger unreadable; AI request refused", {{"error", e.to_string()}}, sandbox_);
    out.reason = "the sandbox's spend ledger cannot be read";
    meter::Refusal r = meter::budget_refusal(req.provider, "km: the sandbox's spend ledger cannot be read, so its AI budget cannot be enforced; the request was not sent");
    r.status = 503;
    out.refusal = std::move(r);
    return out;
  }
  if (!req.billable) {
    // Token counting and listings cost nothing. Other endpoints km does not meter (batches,
    // embeddings, ...) would spend unseen: refused under a ceiling, allowed (audited) without.
    bool reads = method == "GET" || method == "HEAD" || method == "OPTIONS";
    if (req.api == "other" && !reads && limits->ai_micros) {
      out.reason = "km does not meter this endpoint, and the sandbox has an AI budget";
      out.refusal = meter::budget_refusal(req.provider, "km: this endpoint is not metered, so it is refused while the sandbox has an AI budget");
    }
    return out;
  }
  if (limits->ai_micros && *spent + reserved_ >= *limits->ai_micros) {
    out.reason = "AI budget exhausted";
    out.refusal = meter::budget_refusal(req.provider, refusal_message(*spent, *limits->ai_micros));
    return out;
  }
  auto call = std::make_shared<Call>();
  call->request = req;
  call->started = call->last_write = std::chrono::steady_clock::now();
  call->row.id = id_prefix_ + "-" + std::to_string(++next_id_);
  call->row.ts = static_cast<int64_t>(std::time(nullptr));
  call->row.provider = std::string(meter::provider_name(req.provider));
  call->row.api = req.api;
  call->row.model = req.model;
  call->request_bytes = body_bytes;
  meter::Usage estimate;
  estimate.input = static_cast<int64_t>((body_bytes + 1) / 2);
  estimate.output = req.max_output_tokens > 0 ? req.max_output_tokens : kDefaultMaxOutput;
  call->reserved = meter::cost_micros(estimate, prices_.lookup(req.provider, req.model).price);
  reserved_ += call->reserved;
  out.call = std::move(call);
  return out;
}

AiAccounting::Priced AiAccounting::price(const Call& call, const meter::ResponseMeter& meter) const {
  Priced p;
  p.model = meter.model().empty() ? call.request.model : meter.model();
  auto lookup = prices_.lookup(call.request.provider, p.model);
  p.basis = basis_of(lookup);
  if (lookup.how != meter::PriceTable::Lookup::kExact && warned_models_.insert(p.model).second) {
    log_.log(log::Level::kWarn, "model not in the price table; priced as " + lookup.matched,
             {{"model", p.model}, {"basis", p.basis}}, sandbox_);
  }
  p.usage = meter.usage();
  if (!meter.final_usage()) {
    int64_t est = meter.output_estimate();
    if (est > p.usage.output) {
      p.usage.output = est;
      p.estimated = true;
    }
    if (p.usage.input == 0 && p.usage.cache_read == 0 && p.usage.cache_write == 0 && est > 0) {
      p.usage.input = static_cast<int64_t>((call.request_bytes + 3) / 4);
      p.estimated = true;
    }
  }
  p.cost = meter::cost_micros(p.usage, lookup.price);
  return p;
}

bool AiAccounting::write(Call& call, const Priced& p, int status) {
  store::TokenDelta now = tokens_of(p.usage);
  store::TokenDelta delta{now.input - call.recorded.input, now.output - call.recorded.output,
                          now.cache_read - call.recorded.cache_read, now.cache_write - call.recorded.cache_write};
  int64_t cost_delta = p.cost - call.cost_recorded;
  bool meta_changed = call.row.model != p.model || call.row.status != status || call.row.estimated != p.estimated ||
                      call.row.price_basis != p.basis;
  bool nothing = delta.input == 0 && delta.output == 0 && delta.cache_read == 0 && delta.cache_write == 0 && cost_delta == 0;
  bool never_spent = call.cost_recorded == 0 && call.recorded.input == 0 && call.recorded.output == 0 &&
                     call.recorded.cache_read == 0 && call.recorded.cache_write == 0;
  // Nothing new; or nothing ever spent (an error response without usage), which needs no row.
  if (nothing && (!meta_changed || never_spent)) return true;
  store::AiCall row = call.row;
  row.model = p.model;
  row.status = status;
  row.estimated = p.estimated;
  row.price_basis = p.basis;
  auto r = ledger_->record(row, delta, cost_delta);
  if (!r) {
    log_.log(log::Level::kError, "recording AI spend failed; will retry", {{"error", r.error().to_string()}}, sandbox_);
    return false;
  }
  call.row = row;
  call.recorded = now;
  call.cost_recorded = p.cost;
  call.last_write = std::chrono::steady_clock::now();
  return true;
}

void AiAccounting::retry_unrecorded() {
  std::vector<Unrecorded> still;
  for (auto& u : unrecorded_) {
    if (write(*u.call, u.final, u.status)) {
      reserved_ -= u.call->reserved;
      u.call->reserved = 0;
    } else {
      still.push_back(std::move(u));
    }
  }
  unrecorded_ = std::move(still);
}

void AiAccounting::progress(Call& call, const meter::ResponseMeter& meter, int status, bool force) {
  if (call.settled) return;
  auto now = std::chrono::steady_clock::now();
  if (!force && now - call.last_write < kWriteInterval) return;
  Priced p = price(call, meter);
  if (p.usage.empty() && call.cost_recorded == 0) return;
  write(call, p, status);
}

void AiAccounting::settle(const std::shared_ptr<Call>& callp, const meter::ResponseMeter* meter, int status, bool complete) {
  Call& call = *callp;
  if (call.settled) return;
  call.settled = true;
  nlohmann::json f{{"provider", call.row.provider}, {"api", call.request.api}, {"status", status},
                   {"stream", call.request.stream}, {"complete", complete}};
  bool recorded = true;
  if (meter) {
    Priced p = price(call, *meter);
    if (!p.usage.empty() || call.cost_recorded != 0) recorded = write(call, p, status);
    if (!recorded) unrecorded_.push_back({callp, p, status});
    f["model"] = p.model;
    f["input_tokens"] = p.usage.input;
    f["output_tokens"] = p.usage.output;
    f["cache_read_tokens"] = p.usage.cache_read;
    f["cache_write_tokens"] = p.usage.cache_write;
    f["cost_micros"] = p.cost;
    f["price_basis"] = p.basis;
    if (p.estimated) f["estimated"] = true;
    if (call.cost_recorded != p.cost) f["unrecorded_micros"] = p.cost - call.cost_recorded;
    for (const auto& w : meter->warnings()) f["warnings"].push_back(w);
  } else {
    f["model"] = call.request.model;
  }
  if (recorded) {
    reserved_ -= call.reserved;
    call.reserved = 0;
  }
  f["duration_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - call.started).count();
  audit_.emit("ai", std::move(f));
}

}  // namespace km::enforcer
