// Messages between kmd and a sandbox's init, one JSON object per SEQPACKET datagram.
//
// kmd -> init (setup, on the inherited fd 3): {"spec": {...}} with the idmapped lower-layer
//   mount as the one attached fd. init answers {"ready": true} or {"error": "..."}.
// kmd -> init (control socket, one connection per request):
//   {"op":"exec","argv":[...],"env":{...},"cwd":"...","root":false} + fds [stdin,stdout,stderr]
//       -> {"pid":N} then, when it ends, {"exit":code} or {"signal":n}
//   {"op":"shell","cols":C,"rows":R,"root":false}  -> {"pid":N} + the pty master fd, later {"exit":..}
//   {"op":"signal","sig":n}  (on an exec/shell connection) forwards a signal to its process group
//   {"op":"ping"} -> {"pong":true,"processes":N}
#pragma once

#include <cstdint>

namespace km::sandbox {

// Fixed descriptors of km-sandbox-init.
inline constexpr int kInitSetupFd = 3;   // SEQPACKET to kmd for the setup exchange
inline constexpr int kInitListenFd = 4;  // listening control socket
inline constexpr int kInitLogFd = 5;     // the sandbox's init log (initCommands output)

inline constexpr uint32_t kSandboxUid = 1000;
inline constexpr uint32_t kIdRange = 65536;

}  // namespace km::sandbox
