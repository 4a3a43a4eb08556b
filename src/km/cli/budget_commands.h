// km budget add/show: a sandbox's spending limits, what it has spent per pool and per model,
// and its recent AI calls; and the spend lines km status shows.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "km/cli/profile_commands.h"

namespace km::cli {

void add_budget_commands(CLI::App& app, GlobalOptions& global, int* exit_code);

// The spend lines of `km status` (pools, then models) from kmd's budget JSON, each line
// prefixed by a label padded to `label_width`.
void print_spend(const nlohmann::json& budget, int label_width);

}  // namespace km::cli
