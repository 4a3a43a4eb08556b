#include "km/base/result.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace km {

namespace detail {
void check_failed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "km: internal invariant broken: %s (%s:%d)\n", expr, file, line);
  std::abort();
}
}  // namespace detail

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kUnknown: return "unknown";
    case ErrorCode::kInvalidArgument: return "invalid-argument";
    case ErrorCode::kNotFound: return "not-found";
    case ErrorCode::kAlreadyExists: return "already-exists";
    case ErrorCode::kPermissionDenied: return "permission-denied";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kFailedPrecondition: return "failed-precondition";
    case ErrorCode::kResourceExhausted: return "resource-exhausted";
    case ErrorCode::kInternal: return "internal";
    case ErrorCode::kSystem: return "system";
  }
  return "unknown";
}

Error Error::from_errno(std::string_view what, int err) {
  ErrorCode code = ErrorCode::kSystem;
  if (err == EACCES || err == EPERM) code = ErrorCode::kPermissionDenied;
  if (err == ENOENT) code = ErrorCode::kNotFound;
  if (err == EEXIST) code = ErrorCode::kAlreadyExists;
  Error e(code, std::string(what) + ": " + std::strerror(err));
  e.errno_ = err;
  return e;
}

Error&& Error::wrap(std::string_view context) && {
  context_.emplace_back(context);
  return std::move(*this);
}

Error& Error::wrap(std::string_view context) & {
  context_.emplace_back(context);
  return *this;
}

Error&& Error::with_hint(std::string hint) && {
  hint_ = std::move(hint);
  return std::move(*this);
}

std::string Error::to_string() const {
  std::string out;
  for (auto it = context_.rbegin(); it != context_.rend(); ++it) {
    out += *it;
    out += ": ";
  }
  out += message_;
  return out;
}

}  // namespace km
