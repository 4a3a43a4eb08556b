#include "km/daemon/lifecycle.h"

#include <algorithm>
#include <chrono>

#include "km/base/duration.h"

namespace km::daemon {

int64_t SystemClock::now() const {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

int64_t warning_lead(int64_t period) { return std::max<int64_t>(1, std::min<int64_t>(300, period / 10)); }

std::vector<Due> due(const store::Sandbox& s, int64_t now, int open_sessions) {
  using store::State;
  std::vector<Due> out;
  bool live = s.state == State::kRunning || s.state == State::kPaused || s.state == State::kStopped;
  if (!live) return out;
  if (s.expires_at > 0) {
    int64_t period = s.expires_at - s.created_at;
    if (now >= s.expires_at) {
      out.push_back(Due::kTtlExpired);
      return out;
    }
    if (!s.ttl_warned && now >= s.expires_at - warning_lead(period)) out.push_back(Due::kTtlWarning);
  }
  if (s.state == State::kRunning && s.idle_timeout > 0 && open_sessions == 0) {
    int64_t deadline = s.last_activity + s.idle_timeout;
    if (now >= deadline) {
      out.push_back(Due::kIdleExpired);
    } else if (!s.idle_warned && now >= deadline - warning_lead(s.idle_timeout)) {
      out.push_back(Due::kIdleWarning);
    }
  }
  return out;
}

Result<Extension> extend(const store::Sandbox& s, int64_t now, int64_t seconds) {
  if (seconds <= 0) return fail(ErrorCode::kInvalidArgument, "extend by a positive duration");
  Extension e;
  int64_t base = std::max(now, s.expires_at > 0 ? s.expires_at : now);
  e.expires_at = base + seconds;
  if (s.max_lifetime > 0) {
    int64_t cap = s.created_at + s.max_lifetime;
    if (cap <= now) {
      return fail(Error(ErrorCode::kFailedPrecondition,
                        "cannot extend: the sandbox has reached its maxLifetime (" + format_duration({s.max_lifetime}) + ")"));
    }
    if (e.expires_at > cap) {
      e.expires_at = cap;
      e.capped = true;
    }
  }
  return e;
}

}  // namespace km::daemon
