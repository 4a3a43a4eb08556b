// KM_CHECK: broken invariants abort with a message. Never used for input from outside the
// process (files, network, sandbox, kernel): those get a km::Error.
#pragma once

namespace km::detail {
[[noreturn]] void check_failed(const char* expr, const char* file, int line);
}  // namespace km::detail

#define KM_CHECK(cond)                                               \
  do {                                                               \
    if (!(cond)) ::km::detail::check_failed(#cond, __FILE__, __LINE__); \
  } while (0)
