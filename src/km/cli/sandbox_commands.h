// km create, list, status, exec, stop, pause, resume, lock, unlock, extend, destroy: clients
// of kmd.
#pragma once

#include <CLI/CLI.hpp>

#include "km/cli/profile_commands.h"

namespace km::cli {

void add_sandbox_commands(CLI::App& app, GlobalOptions& global, int* exit_code);

}  // namespace km::cli
