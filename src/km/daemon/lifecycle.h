// Pure lifecycle decisions: given a sandbox record and the time, what is due (a TTL or idle
// warning, or an expiry). kmd's timer applies them; tests drive them with any clock.
#pragma once

#include <cstdint>
#include <vector>

#include "km/base/result.h"
#include "km/store/store.h"

namespace km::daemon {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t now() const = 0;  // unix seconds, UTC
};

class SystemClock : public Clock {
 public:
  int64_t now() const override;
};

class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t t) : t_(t) {}
  int64_t now() const override { return t_; }
  void advance(int64_t s) { t_ += s; }

 private:
  int64_t t_;
};

enum class Due { kTtlWarning, kIdleWarning, kTtlExpired, kIdleExpired };

// Warnings come min(5 minutes, a tenth of the period) before the action.
int64_t warning_lead(int64_t period);

// What is due for `s` at `now`. `open_sessions` counts running km exec/shell sessions (a
// sandbox with one is never idle). Stopped sandboxes still expire by TTL; only running
// sandboxes go idle.
std::vector<Due> due(const store::Sandbox& s, int64_t now, int open_sessions);

// The expiry after `km extend REF DUR`: from max(now, current expiry), capped by maxLifetime.
struct Extension {
  int64_t expires_at = 0;
  bool capped = false;
};
Result<Extension> extend(const store::Sandbox& s, int64_t now, int64_t seconds);

}  // namespace km::daemon
