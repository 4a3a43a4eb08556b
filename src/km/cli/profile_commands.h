// `km validate` and `km profile ...`.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "km/cli/output.h"

namespace km::cli {

struct GlobalOptions {
  std::vector<std::string> profile_paths;  // --profile-path, then KM_PROFILE_PATH
  std::string output = "text";
  std::string socket;  // --socket; default KM_SOCKET or /run/km/kmd.sock
};

// Registers the commands on `app`; each sets `*exit_code` when it runs.
void add_profile_commands(CLI::App& app, GlobalOptions& global, int* exit_code);

}  // namespace km::cli
