// Small file helpers that return Result and never throw.
#pragma once

#include <cstddef>
#include <string>

#include "km/base/result.h"

namespace km {

// Reads a whole regular file, refusing anything larger than `max_bytes` (so a hostile or
// mistaken path such as /dev/zero cannot exhaust memory). Retries EINTR.
Result<std::string> read_file(const std::string& path, size_t max_bytes);

// Writes `content` to `path` atomically (a temporary file in the same directory, fsync'd, then
// renamed over it), with `mode` for a new file.
Status write_file_atomic(const std::string& path, const std::string& content, unsigned mode);

}  // namespace km
