// Output conventions of the km CLI (STYLE.md): results on stdout (tables on a terminal,
// JSON with --output json), diagnostics on stderr as `km: error: ...` and `hint: ...`.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "km/base/result.h"

namespace km::cli {

enum class OutputFormat { kText, kJson };

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

void print_error(const std::string& what, const std::string& hint = "");
void print_error(const Error& e);
void print_warning(const std::string& what);

// A left-aligned text table; columns sized to their widest cell.
std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows);

bool stdout_is_terminal();

}  // namespace km::cli
