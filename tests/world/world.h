// The test world: a fake internet in network namespaces, for integration and e2e tests and
// benchmarks (ARCHITECTURE.md, "The test world").
//
//   namespace K ("kmd side")                 namespace W ("world")
//   kw0 198.51.100.1/24, 203.0.113.1/24 ---- wk0 every host address (/24), one veth pair
//   kmd, its enforcers, test clients          world_server.py: DNS, DoT, DoH, HTTP(S), echo
//
// Both namespaces are created by the fixture, pinned by bind mounts in its temp dir; nothing
// is added to the caller's namespace. Addresses come only from 198.51.100.0/24 and
// 203.0.113.0/24. Certificates come from a test CA made with the openssl CLI; the world
// server presents, per TLS connection, its local host's certificate, or the certificate of
// whichever host covers the name in SNI (so one address can front many names).
//
// Services (world_server.py has the details):
//   198.51.100.53   authoritative DNS for `zones` (UDP/TCP 53): A, AAAA, CNAME, TXT with TTLs,
//                   CNAME chains followed inside the zones, wildcards, NXDOMAIN in a zone,
//                   REFUSED outside; SOA (negative TTL) in the authority of negative answers.
//   203.0.113.53    "attacker" resolver: A `attacker_answer` for any name over DNS (UDP/TCP 53),
//                   DoT (853) and DoH (https://203.0.113.53/dns-query, GET ?dns= and POST).
//   every host      HTTP 80 and HTTPS 443 answering JSON {"server","port","host","sni","path",
//   (serve=true)    "method","body_bytes"}; /bytes/N sends exactly N bytes (N <= 4 GiB);
//                   /status/N answers with status N; keep-alive. TCP 7 echo, TCP 22 writes
//                   "SSH-2.0-world\r\n" then echoes; UDP echo on 7 and 443.
//
// Hits: every connection or query that reaches a server is recorded (one JSON line in
// dir()/hits.jsonl) before the server sends anything back; so once a client has its answer,
// hits() shows it. A connection that carries no request (a TLS handshake the client aborted, a
// DNS/TCP connection without a query) is recorded when it ends: use wait_for_hit for those.
//
// Lifetime: the destructor kills what the fixture spawned (SIGTERM, then SIGKILL after a short
// grace), then every process still in K or W, unpins both namespaces and removes the temp
// dir. If the test process dies without running it, the world server (which watches its
// parent) does the same. Every server loop is bounded (idle timeouts, request/byte budgets,
// a connection cap, `max_lifetime`).
//
// Thread-safety: hits(), wait_for_hit() and the spawn/run functions may be called from any
// thread; create and destroy from one.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "km/base/result.h"
#include "km/base/unique_fd.h"

namespace km::testing {

// One record in the authoritative zones. `type` is A, AAAA, CNAME or TXT; a name may start
// with "*." (a wildcard, RFC 4592).
struct DnsRecord {
  std::string name;
  std::string type;
  std::string value;
  int ttl = 300;
};

// A server address in W. `names` are its certificate's DNS SANs (the address is always an IP
// SAN). With serve = false the address and certificate exist but the world server binds nothing
// there, so a test can run its own server on it (spawn_in_world_netns).
struct WorldHost {
  std::string addr;
  std::vector<std::string> names;
  bool serve = true;
};

// The default world (tests rely on it; extend rather than replace where possible):
//   allowed.test               A     198.51.100.10
//   api.allowed.test           A     198.51.100.11
//   www.allowed.test           CNAME allowed.test
//   cdn.allowed.test           CNAME edge.evil.test
//   multi.allowed.test         A     198.51.100.10, 198.51.100.12
//   short.allowed.test         A     198.51.100.12   (TTL 5 s, for eviction tests)
//   v6.allowed.test            AAAA  2001:db8::10    (record only; W has no IPv6 addresses)
//   evil.test                  A     203.0.113.10
//   edge.evil.test             A     203.0.113.10
//   api.allowed.test.evil.test A     203.0.113.11
//   txt.evil.test              TXT   "exfil"
//   *.tunnel.evil.test         A     203.0.113.11    (so tunnelling attempts show up as hits)
// Other TTLs are 60 s; negative answers carry a 30 s SOA minimum.
// Hosts and certificate SANs:
//   198.51.100.10  allowed.test, *.allowed.test
//   198.51.100.11  api.allowed.test
//   198.51.100.12  multi.allowed.test, short.allowed.test
//   198.51.100.53  ns.allowed.test                (the authoritative server)
//   203.0.113.10   evil.test, *.evil.test
//   203.0.113.11   api.allowed.test.evil.test, *.tunnel.evil.test
//   203.0.113.53   dns.evil.test                  (the attacker resolver; DoT and DoH)
struct WorldOptions {
  std::vector<std::string> zones = default_zones();
  std::vector<DnsRecord> records = default_records();
  std::vector<WorldHost> hosts = default_hosts();
  std::string attacker_answer = "203.0.113.10";
  int negative_ttl = 30;
  // Bounds on the world server.
  std::chrono::seconds max_lifetime{1800};
  std::chrono::seconds idle_timeout{30};
  int max_connections = 512;
  int max_requests_per_connection = 10000;
  long long echo_bytes = 1LL << 30;
  long long max_body_bytes = 64LL << 20;
  std::chrono::milliseconds ready_timeout{10000};

  static std::vector<std::string> default_zones();
  static std::vector<DnsRecord> default_records();
  static std::vector<WorldHost> default_hosts();
};

class TestWorld {
 public:
  static constexpr const char* kResolver = "198.51.100.53";
  static constexpr const char* kAttackerResolver = "203.0.113.53";
  // K's own addresses (on kw0).
  static constexpr const char* kKmdAddr1 = "198.51.100.1";
  static constexpr const char* kKmdAddr2 = "203.0.113.1";

  // Builds the world. Needs root (kPermissionDenied otherwise). Fails if any part cannot be
  // built, leaving nothing behind.
  static Result<std::unique_ptr<TestWorld>> create(const WorldOptions& options = {});
  TestWorld(const TestWorld&) = delete;
  TestWorld& operator=(const TestWorld&) = delete;
  ~TestWorld();

  int kmd_netns_fd() const { return kmd_netns_.get(); }
  int world_netns_fd() const { return world_netns_.get(); }
  // The temp dir: ca.pem, ca.key, <addr>.pem (leaf chains), leaf.key, hits.jsonl,
  // world.json, world_server.log.
  const std::string& dir() const { return dir_; }
  std::string ca_bundle() const { return dir_ + "/ca.pem"; }
  std::string ca_key() const { return dir_ + "/ca.key"; }
  std::string resolver() const { return kResolver; }
  std::string attacker_resolver() const { return kAttackerResolver; }
  pid_t server_pid() const { return server_pid_; }

  // Spawns argv in K with exactly `env` (plus PATH, from the caller if env has none), stdin
  // from /dev/null, stdout and stderr appended to `log_path` (or inherited if empty). argv[0]
  // is looked up in PATH. The process is killed by the destructor if still running; the
  // caller may signal and reap it before (waitpid or wait_exit).
  Result<pid_t> spawn_in_kmd_netns(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                   const std::string& log_path);
  // The same in W, for servers of a test's own on a host with serve = false.
  Result<pid_t> spawn_in_world_netns(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                     const std::string& log_path);
  // Waits up to `timeout` for a spawned process to exit and reaps it; returns its status
  // (exit code, or 128 + signal). kUnavailable on timeout (the process keeps running).
  Result<int> wait_exit(pid_t pid, std::chrono::milliseconds timeout);

  // Runs argv in K to completion, capturing stdout and stderr. The environment is PATH,
  // HOME=dir() (so no ~/.curlrc or ~/.digrc applies) and `env`. A run that outlives `timeout`
  // is killed and reported as kUnavailable with what it printed. Each stream keeps its first
  // 64 MiB (the rest is read and dropped, so the program never blocks on a full pipe).
  struct Run {
    int status = -1;  // exit code, or 128 + signal
    std::string out, err;
  };
  Result<Run> run_in_kmd_netns(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                               const std::vector<std::string>& env = {});

  struct Hit {
    std::string server, proto, qname, host, sni, path, peer;
    int port = 0;
    int qtype = 0;
  };
  // Everything recorded since creation or the last clear_hits(), in order of arrival.
  std::vector<Hit> hits() const;
  void clear_hits();
  // Waits (up to `timeout`) until a hit satisfying `match` has been recorded.
  bool wait_for_hit(const std::function<bool(const Hit&)>& match, std::chrono::milliseconds timeout) const;

 private:
  TestWorld() = default;
  Status build(const WorldOptions& options);
  Result<pid_t> spawn_in(int netns_fd, const std::vector<std::string>& argv, const std::vector<std::string>& env,
                         const std::string& log_path);

  struct Child {
    pid_t pid;
    UniqueFd pidfd;
  };
  std::string dir_;
  std::string world_pin_, kmd_pin_;
  UniqueFd world_netns_, kmd_netns_;
  pid_t server_pid_ = -1;
  UniqueFd server_pidfd_;
  mutable std::mutex mu_;
  std::vector<Child> children_;  // guarded by mu_
  long long hits_offset_ = 0;    // guarded by mu_
};

}  // namespace km::testing
