// The km command line: builds the command tree and runs it. Returns the process exit code
// (0 ok, 1 failure, 2 usage). Never throws.
#pragma once

namespace km::cli {

int run(int argc, char** argv);

}  // namespace km::cli
