// Talking to a running sandbox's init: run a command with given stdio, or capture its output.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/base/result.h"
#include "km/base/unique_fd.h"

namespace km::sandbox {

struct ExitStatus {
  int code = 0;     // exit code, or 128 + signal
  int signal = 0;
};

struct ExecRequest {
  std::vector<std::string> argv;
  nlohmann::json env = nlohmann::json::object();
  std::string cwd;   // "" = the profile's workingDir
  bool root = false; // run as root inside (only honoured for privileged sandboxes)
};

// Starts `req` on the control connection `conn` with the given stdio; returns the pid.
Result<int> start_exec(int conn, const ExecRequest& req, int in, int out, int err);
// Waits for the end of the process started on `conn`.
Result<ExitStatus> wait_exit(int conn);

struct Captured {
  ExitStatus status;
  std::string out;
  std::string err;
};
// Convenience for tests and kmd's own use: runs to completion, capturing output (bounded).
Result<Captured> run_captured(const std::string& ctl_path, const ExecRequest& req, const std::string& input = "");

}  // namespace km::sandbox
