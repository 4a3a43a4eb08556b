// km otel: a sandbox's agent telemetry (Claude Code's OTLP logs and metrics, received by its
// enforcer): a summary with the spend km metered next to what the agent reported, and the
// prompts, events, tool calls and per-turn timeline.
#pragma once

#include <CLI/CLI.hpp>

#include "km/cli/profile_commands.h"

namespace km::cli {

void add_otel_commands(CLI::App& app, GlobalOptions& global, int* exit_code);

}  // namespace km::cli
