// km::Error and km::Result<T>: errors as values (STYLE.md).
//
// Result<T> is shaped like std::expected<T, Error> (C++23), which GCC 12 lacks in C++20 mode.
// An Error carries a code, an optional errno and a context chain that reads outermost-first:
//   creating cgroup /sys/fs/cgroup/km/sb-1a2b3c4d: mkdir: Permission denied
// Thread-safety: values; no shared state.
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "km/base/check.h"

namespace km {

enum class ErrorCode {
  kUnknown,
  kInvalidArgument,  // bad input from a user, a file or a peer
  kNotFound,
  kAlreadyExists,
  kPermissionDenied,
  kUnavailable,      // a dependency (kernel feature, daemon, upstream) is missing or down
  kFailedPrecondition,
  kResourceExhausted,
  kInternal,
  kSystem,           // a system call failed; errno() says why
};

std::string_view error_code_name(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  // An error from a failed system call: `what` names the call, the message comes from errno.
  static Error from_errno(std::string_view what, int err = errno);

  ErrorCode code() const { return code_; }
  int sys_errno() const { return errno_; }
  const std::string& message() const { return message_; }
  const std::string& hint() const { return hint_; }

  // Prefixes context, outermost last call first: e.wrap("creating cgroup X").
  Error&& wrap(std::string_view context) &&;
  Error& wrap(std::string_view context) &;
  Error&& with_hint(std::string hint) &&;

  // "context: context: message".
  std::string to_string() const;

 private:
  ErrorCode code_;
  int errno_ = 0;
  std::string message_;
  std::vector<std::string> context_;  // innermost first
  std::string hint_;
};

// Tag type for constructing a failed Result, like std::unexpected.
template <typename E>
struct Unexpected {
  E error;
};
template <typename E>
Unexpected<E> fail(E e) {
  return Unexpected<E>{std::move(e)};
}
inline Unexpected<Error> fail(ErrorCode code, std::string message) {
  return Unexpected<Error>{Error(code, std::move(message))};
}

// E is km::Error almost everywhere; parsers use their own located error types.
template <typename T, typename E = Error>
class [[nodiscard]] Result {
 public:
  using value_type = T;
  using error_type = E;
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Unexpected<E> u) : v_(std::in_place_index<1>, std::move(u.error)) {}  // NOLINT

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { KM_CHECK(has_value()); return std::get<0>(v_); }
  const T& value() const& { KM_CHECK(has_value()); return std::get<0>(v_); }
  T&& value() && { KM_CHECK(has_value()); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  E& error() & { KM_CHECK(!has_value()); return std::get<1>(v_); }
  const E& error() const& { KM_CHECK(!has_value()); return std::get<1>(v_); }
  E&& error() && { KM_CHECK(!has_value()); return std::get<1>(std::move(v_)); }

  template <typename U>
  T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(v_) : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  std::variant<T, E> v_;
};

template <typename E>
class [[nodiscard]] Result<void, E> {
 public:
  Result() = default;
  Result(Unexpected<E> u) : error_(std::move(u.error)), ok_(false) {}  // NOLINT

  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  void value() const { KM_CHECK(ok_); }
  const E& error() const& { KM_CHECK(!ok_); return *error_; }
  E&& error() && { KM_CHECK(!ok_); return std::move(*error_); }

 private:
  std::optional<E> error_;
  bool ok_ = true;
};

using Status = Result<void>;
inline Status ok() { return {}; }

}  // namespace km

// Propagates a failed Result from the enclosing function, optionally adding context.
#define KM_TRY(expr)                                        \
  do {                                                      \
    auto&& km_try_r_ = (expr);                              \
    if (!km_try_r_) return ::km::fail(std::move(km_try_r_).error()); \
  } while (0)

#define KM_CONCAT_INNER_(a, b) a##b
#define KM_CONCAT_(a, b) KM_CONCAT_INNER_(a, b)
#define KM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)            \
  auto tmp = (expr);                                         \
  if (!tmp) return ::km::fail(std::move(tmp).error());       \
  lhs = std::move(tmp).value()
// KM_ASSIGN_OR_RETURN(auto x, f()); assigns the value or returns the error.
#define KM_ASSIGN_OR_RETURN(lhs, expr) \
  KM_ASSIGN_OR_RETURN_IMPL_(KM_CONCAT_(km_aor_, __LINE__), lhs, expr)
