// The sandbox spec: everything the in-sandbox init (km-sandbox-init) needs to build one
// sandbox, computed by plan.h from a profile and sent by kmd as JSON. Paths named *_dir are
// host paths; every other path is as seen inside the sandbox.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "km/base/result.h"

namespace km::sandbox {

struct NetSpec {
  std::string ifname = "eth0";
  std::string address;       // the sandbox's end, e.g. 10.88.0.2
  std::string peer_address;  // the link's other end (where the enforcer listens), e.g. 10.88.0.1
  int prefix_len = 30;
  // The sandbox may reach its enforcer: a default route via peer_address, resolv.conf naming
  // it, and proxy variables in the environment. Without it the link leads nowhere.
  bool egress = false;
  uint16_t proxy_port = 3128;
  std::string enforcement = "proxy";  // proxy | ebpf | both (cgroup BPF programs as the gate)
};

// Where the sandbox finds its trust store (the system bundle plus its inspection CA), and the
// inspection CA alone.
inline constexpr const char* kTrustBundle = "/etc/ssl/certs/ca-certificates.crt";
inline constexpr const char* kInspectionCaFile = "/etc/ssl/certs/km-sandbox-ca.pem";

// A host file bound read-only over a file of the sandbox's tree (kmd's private copy of a TLS
// library, so that only sandboxes map the copy its probes are on: docs/tls-capture.md). kmd
// opens `source` and passes the mount with the setup message; the init mounts it on `target`.
struct FileBind {
  std::string source;  // host path
  std::string target;  // inside path, resolved in the sandbox's root (an existing file)
};

struct Spec {
  std::string id;
  std::string hostname;
  std::string user = "sandbox";
  uint32_t uid = 1000;
  uint32_t gid = 1000;
  std::string home;  // e.g. /home/sandbox
  bool privileged = false;

  // Host paths.
  std::string root_dir;       // where the root is assembled (overlay mount point)
  std::string lower_dir;      // where the idmapped lower layer is attached
  std::string upper_dir;
  std::string work_dir;
  std::string workspace_dir;  // persistent, mounted at /workspace
  std::string home_dir;       // persistent, mounted at `home`

  // Inside paths.
  std::vector<std::string> masks;      // hidden behind empty read-only tmpfs
  std::vector<std::string> writable;   // writable besides workspace, home, /tmp, /var/tmp, /dev/shm
  std::vector<std::string> read_only;
  std::vector<std::string> deny_read;  // paths or globs
  std::vector<std::string> protected_paths;  // ~/... and **/... patterns, read-only
  std::vector<std::string> unprotect;        // concrete paths exempted from protected_paths

  std::map<std::string, std::string> env;
  std::string working_dir = "/workspace";
  std::string shell = "/bin/bash";
  std::vector<std::string> init_commands;
  std::map<std::string, std::string> config_files;
  // PEM of the sandbox's inspection CA, added to its trust store (empty: none).
  std::string trusted_ca;
  std::vector<FileBind> file_binds;
  NetSpec net;
};

std::string to_json(const Spec& spec);
Result<Spec> spec_from_json(const std::string& text);

}  // namespace km::sandbox
