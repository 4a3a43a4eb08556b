// The program that becomes PID 1 of a sandbox (apps/km-sandbox-init). It runs as root of the
// sandbox's user namespace (mapped to an unprivileged host range), builds the sandbox from
// the spec kmd sends, then serves exec and shell requests on its control socket until the
// sandbox is stopped. See protocol.h for the messages.
#pragma once

namespace km::sandbox {

int init_main();

}  // namespace km::sandbox
