// Runs a program and captures its exit status, stdout and stderr (test helper).
#pragma once

#include <map>
#include <string>
#include <vector>

namespace km::testing {

struct RunResult {
  int status = -1;  // exit code; 128+signal if killed
  std::string out;
  std::string err;
};

// Runs argv[0] with argv, extra environment variables set, stdin from /dev/null.
RunResult run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {},
              const std::string& stdin_text = "");

}  // namespace km::testing
