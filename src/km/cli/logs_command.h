// km logs REF [--follow] [--type T]... [--since D] [-n N] [--verify]: a sandbox's audit trail
// (every command, DNS and connection verdict, inspected request and AI call, shell session,
// lifecycle and budget event, in one hash-chained sequence; see daemon/audit_trails.h).
//
// Text: one line per event (time, seq, type, kind, summary; control characters escaped, long
// values cut). -o json: the events as stored, one JSON object per line (NDJSON). Loss counters
// go to stderr when anything was lost. --verify recomputes the chain: "chain intact: N events"
// (exit 0), or the first gap or edit, naming the event (exit 1).
#pragma once

#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "km/base/result.h"
#include "km/cli/kmd_client.h"
#include "km/cli/profile_commands.h"

namespace km::cli {

void add_logs_command(CLI::App& app, GlobalOptions& global, int* exit_code);

// Asks kmd (op logs or audit, in `req`) for the newest `limit` events, page after page when they
// do not fit one reply; returns the first reply with "events" holding all of them, oldest first.
Result<nlohmann::json> fetch_newest(KmdClient& client, nlohmann::json req, int64_t limit);

// The text line of one stored event (without the newline).
std::string event_line(const nlohmann::json& event);

// "D" ago (a duration such as 90m or 2h) or an RFC 3339 UTC time, in milliseconds since the
// epoch; nullopt when it is neither.
std::optional<int64_t> parse_since(const std::string& text, int64_t now_ms);

}  // namespace km::cli
