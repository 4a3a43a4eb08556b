// A guard run before handing untrusted text to nlohmann::json: its DOM parser allocates a value
// per nesting level, so a body of a few megabytes of '[' would cost gigabytes. Real requests and
// provider responses nest a few dozen levels at most.
// Thread-safety: stateless; no I/O.
#pragma once

#include <cstddef>
#include <string_view>

namespace km::meter {

inline constexpr size_t kMaxJsonDepth = 128;

// False when arrays and objects in `text` nest deeper than `max_depth` (brackets inside JSON
// strings do not count). Says nothing else about validity.
bool json_depth_within(std::string_view text, size_t max_depth = kMaxJsonDepth);

}  // namespace km::meter
