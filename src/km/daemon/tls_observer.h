// kmd's TLS observation (profile spec.observability.tlsCapture; docs/tls-capture.md): what
// processes in a sandbox send and receive through OpenSSL or GnuTLS, as audit events in its
// trail (tls_events.h), and the programs it runs whose TLS km cannot see, reported rather than
// missed.
//
// For each sandbox that asks, prepare() makes (once per host library version) a private copy
// of each library the profile names (libssl.so.3, libgnutls.so.30, a node bundling OpenSSL)
// under `copies_dir`, attaches the capture's probes to the copies, and returns the binds that
// put each copy read-only over the library's path in the sandbox. Processes outside sandboxes
// map the host's files, which carry no probe. The capture (one BPF program for the host) is
// opened by the first sandbox that asks and closed when the last one stops: with none, nothing
// is loaded. watch() adds the sandbox's cgroup before anything runs in it; unwatch() drains
// what the kernel queued, summarises open connections and removes it.
//
// One thread reads the ring buffer for all sandboxes (every record to its sandbox's
// TlsConnections, events to `record`); records the kernel could not queue are reported to every
// observed sandbox as {"type":"audit","detail":{"kind":"tls-lost","count":N,"scope":"host"}}.
// A second thread classifies the executables the sandbox runs (exec_seen(), fed by the exec
// audit through a bounded queue, so the exec path never waits): each executable (by device,
// inode, size and mtime: a file rewritten in place is a new one) once per sandbox; one whose
// linked or compiled-in TLS stacks include one this capture does not see (Go, rustls, NSS, a
// static or stripped OpenSSL/BoringSSL, a library not attached) gives
// {"type":"audit","detail":{"kind":"tls-unobserved","executable","stacks":[...],"observed":[...]}}.
// Executables the queue cannot take are counted in status().
//
// Errors: prepare() and watch() fail with what is missing (uprobes, the library, the copy);
// the caller fails the sandbox's creation (the profile asked for observation).
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/audit/event.h"
#include "km/base/log.h"
#include "km/base/result.h"
#include "km/bpf/tls_capture.h"
#include "km/daemon/tls_events.h"
#include "km/profile/model.h"
#include "km/sandbox/spec.h"

namespace km::daemon {

struct TlsObserverOptions {
  std::string copies_dir;  // private copies of libraries (kmd's <stateDir>/tls)
  std::function<void(const std::string& id, audit::Event e)> record;
  // A process whose root is the sandbox's root (its init), to open executables as the sandbox
  // sees them; nullopt when the sandbox is not running.
  std::function<std::optional<pid_t>(const std::string& id)> sandbox_init;
  TlsEventOptions events;
  size_t classify_queue = 256;  // executables waiting for classification, all sandboxes
};

// An executable as its file is now: device, inode, size, mtime (s, ns).
using ExeIdentity = std::tuple<uint64_t, uint64_t, int64_t, int64_t, int64_t>;

class TlsObserver {
 public:
  TlsObserver(TlsObserverOptions o, log::Logger& log);
  ~TlsObserver();
  TlsObserver(const TlsObserver&) = delete;
  TlsObserver& operator=(const TlsObserver&) = delete;

  // Sets the sandbox up for observation as `settings` ask and returns the binds its spec needs.
  // Idempotent for a sandbox already prepared (a restart after stop). `running_init`: the sandbox
  // already runs (kmd restarted) with the copies it was given then; they are found in
  // `copies_dir` by the file the sandbox maps and attached, even when the host's library has
  // changed since (a new copy would not be what its processes map). Fails when the sandbox maps
  // a file kmd no longer has.
  Result<std::vector<sandbox::FileBind>> prepare(const std::string& id, const profile::Model::TlsCapture& settings,
                                                 std::optional<pid_t> running_init = std::nullopt);
  // Removes the copies in `copies_dir` that no observed sandbox maps (kmd calls it once the
  // running sandboxes are observed again after a start, and when a sandbox stops being
  // observed). Copies still mapped by a process survive their name: only the names go.
  void collect_copies();
  // Starts recording the processes of the sandbox's v2 cgroup (no-op for a sandbox not prepared).
  Status watch(const std::string& id, uint64_t cgroup_id);
  // Stops observing the sandbox (no-op if it is not observed).
  void unwatch(const std::string& id);
  bool observed(const std::string& id);
  // An exec in an observed sandbox (from the exec audit): queued for classification.
  void exec_seen(const std::string& id, uint32_t pid, const std::string& filename, const std::string& cwd);
  // For km status: {"enabled","payloads","libraries":[...],"connections","unclassified"}; null
  // when the sandbox is not observed.
  nlohmann::json status(const std::string& id);
  // Whether the capture is loaded now (tests).
  bool loaded();

 private:
  struct Sandbox {
    std::string id;
    uint32_t index = 0;
    bool payloads = false;
    std::optional<uint64_t> cgroup;
    std::vector<std::string> libraries;        // host paths of the libraries bound
    std::vector<bpf::FileId> observed_ids;     // the originals and their copies
    std::vector<bpf::FileId> copy_ids;         // the copies the sandbox maps
    std::vector<std::pair<std::string, std::string>> unsupported;  // stacks the profile named
    TlsConnections conns;
    std::set<ExeIdentity> checked;  // executables classified (each version of one once)
    uint64_t heads = 0;
  };
  struct Exec {
    std::string id;
    uint32_t pid = 0;
    std::string filename, cwd;
  };

  void poll_loop();
  void deliver(const bpf::TlsRecord& r, std::vector<std::pair<std::string, audit::Event>>& out);
  void drain_locked();  // with poll_mu_ held
  void classify_loop();
  void classify(const Exec& e);
  void stop_threads();  // with life_mu_ held

  TlsObserverOptions o_;
  log::Logger& log_;

  std::mutex life_mu_;  // capture_ and the threads' lifetimes; taken before poll_mu_ and mu_
  std::unique_ptr<bpf::TlsCapture> capture_;
  std::thread poller_, classifier_;
  std::atomic<bool> stopping_{false};
  std::mutex poll_mu_;  // one poll() at a time

  std::mutex mu_;  // everything below
  std::map<std::string, Sandbox> sandboxes_;
  std::map<uint32_t, std::string> by_index_;
  uint32_t next_index_ = 1;
  uint64_t reported_lost_ = 0;
  std::deque<Exec> queue_;
  std::condition_variable queue_cv_;
  uint64_t unclassified_ = 0;  // executables the queue could not take
  // Classifications by executable identity: stack findings.
  std::map<ExeIdentity, bpf::TlsStackReport> cache_;
};

}  // namespace km::daemon
