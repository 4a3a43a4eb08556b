#include "world.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "km/base/file.h"
#include "km/sys/netlink.h"

#ifndef KM_WORLD_SERVER
#error "KM_WORLD_SERVER must name tests/world/world_server.py"
#endif

namespace km::testing {

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
constexpr const char* kDirPrefix = "km-world-";
constexpr size_t kMaxHitsBytes = 256u << 20;
constexpr size_t kMaxCapture = 64u << 20;  // per stream of run_in_kmd_netns; the rest is drained

// Reads `path` from `offset` to its end (at most `max` bytes).
std::string read_from(const std::string& path, long long offset, size_t max) {
  std::string out;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return out;
  char buf[65536];
  while (out.size() < max) {
    ssize_t n = ::pread(fd.get(), buf, sizeof buf, static_cast<off_t>(offset + static_cast<long long>(out.size())));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1 << 30));
}

// ---- processes ----------------------------------------------------------------------------

struct Started {
  pid_t pid = -1;
  UniqueFd pidfd;
};

// Looks `name` up in `path` (a PATH value) unless it names a file already.
Result<std::string> find_executable(const std::string& name, const std::string& path) {
  if (name.empty()) return fail(ErrorCode::kInvalidArgument, "empty argv");
  if (name.find('/') != std::string::npos) return name;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string candidate = (end > start ? path.substr(start, end - start) : ".") + "/" + name;
    struct stat st{};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return fail(ErrorCode::kNotFound, name + " not found in PATH " + path);
}

std::string path_of(const std::vector<std::string>& env) {
  for (const auto& e : env) {
    if (e.rfind("PATH=", 0) == 0) return e.substr(5);
  }
  const char* p = std::getenv("PATH");
  return p != nullptr && *p != '\0' ? p : kDefaultPath;
}

int status_of(const siginfo_t& info) {
  return info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
}

// Reaps the process behind `pidfd` if it has exited; the status, or nullopt if still running
// (or already reaped by someone else: -1).
std::optional<int> try_reap(int pidfd) {
  siginfo_t info{};
  int rc;
  do {
    rc = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return -1;  // ECHILD: reaped elsewhere
  if (info.si_pid == 0) return std::nullopt;
  return status_of(info);
}

// Waits until the process behind `pidfd` exits (or the deadline), then reaps it.
std::optional<int> wait_reap(int pidfd, Clock::time_point deadline) {
  for (;;) {
    if (auto s = try_reap(pidfd)) return s;
    pollfd p{pidfd, POLLIN, 0};
    int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n == 0) return std::nullopt;
    if (n < 0 && errno != EINTR) return std::nullopt;
  }
}

// Starts `exe` in network namespace `netns_fd` (-1: the caller's) with fds[i] as its fd i
// (fds[3] may be -1: none); every other descriptor is closed. Returns once the child has
// exec'd, or the reason it could not. The child only makes system calls until exec: the
// parent may be multithreaded.
Result<Started> start_process(int netns_fd, const std::string& exe, const std::vector<std::string>& argv,
                              const std::vector<std::string>& env, std::array<int, 4> fds) {
  std::vector<char*> args, envp;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const char* path = exe.c_str();
  unsigned keep = fds[3] >= 0 ? 4 : 3;
  // Close-on-exec: end-of-file means exec succeeded; otherwise the child writes what failed.
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return fail(Error::from_errno("pipe2"));
  UniqueFd report_r(report[0]), report_w(report[1]);
  int report_fd = report_w.get();

  int pidfd = -1;
  clone_args ca{};
  ca.flags = CLONE_PIDFD;
  ca.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  ca.exit_signal = SIGCHLD;
  long pid = ::syscall(SYS_clone3, &ca, sizeof ca);
  if (pid < 0) return fail(Error::from_errno("clone3"));
  if (pid == 0) {
    int out = static_cast<int>(::syscall(SYS_fcntl, report_fd, F_DUPFD_CLOEXEC, 100));
    auto die = [out](int step) {
      int msg[2] = {step, errno};
      ::syscall(SYS_write, out, msg, sizeof msg);
      ::syscall(SYS_exit_group, 127);
    };
    if (netns_fd >= 0 && ::syscall(SYS_setns, netns_fd, CLONE_NEWNET) != 0) die(1);
    uint64_t no_signals = 0;
    ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &no_signals, nullptr, sizeof no_signals);
    int high[4];
    for (unsigned i = 0; i < keep; ++i) {
      high[i] = static_cast<int>(::syscall(SYS_fcntl, fds[i], F_DUPFD_CLOEXEC, 100));
      if (high[i] < 0) die(2);
    }
    for (unsigned i = 0; i < keep; ++i) {
      if (::syscall(SYS_dup3, high[i], static_cast<int>(i), 0) < 0) die(2);
    }
    // Everything else closes at exec (the report pipe among them).
    ::syscall(SYS_close_range, keep, ~0U, CLOSE_RANGE_CLOEXEC);
    ::syscall(SYS_execve, path, args.data(), envp.data());
    die(3);
  }
  Started started{static_cast<pid_t>(pid), UniqueFd(pidfd)};
  report_w.reset();
  int msg[2] = {0, 0};
  ssize_t n;
  do {
    n = ::read(report_r.get(), msg, sizeof msg);
  } while (n < 0 && errno == EINTR);
  if (n == 0) return started;
  (void)wait_reap(started.pidfd.get(), Clock::now() + milliseconds(2000));
  const char* step = msg[0] == 1 ? "setns(net)" : msg[0] == 2 ? "setting up descriptors" : "execve";
  return fail(Error::from_errno(std::string("starting ") + exe + ": " + step, n == sizeof msg ? msg[1] : EIO));
}

void signal_pidfd(int pidfd, int sig) { ::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0); }

std::string file_tail(const std::string& path, size_t max) {
  auto text = km::read_file(path, 16u << 20);
  if (!text) return "";
  return text->size() > max ? text->substr(text->size() - max) : *text;
}

// ---- namespaces ---------------------------------------------------------------------------

using NsId = std::pair<dev_t, ino_t>;

std::optional<NsId> ns_id_of(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return NsId{st.st_dev, st.st_ino};
}

// SIGKILLs every process (but this one) whose network namespace is in `ns`, until none is
// left or the deadline passes. Returns how many were still there at the end.
int kill_namespace_members(const std::set<NsId>& ns, Clock::time_point deadline) {
  if (ns.empty()) return 0;
  for (;;) {
    int found = 0;
    DIR* d = ::opendir("/proc");
    if (d == nullptr) return -1;
    while (dirent* e = ::readdir(d)) {
      char* end = nullptr;
      long pid = std::strtol(e->d_name, &end, 10);
      if (*end != '\0' || pid <= 0 || pid == ::getpid()) continue;
      std::string link = std::string("/proc/") + e->d_name + "/ns/net";
      auto id = ns_id_of(link);
      if (!id || ns.count(*id) == 0) continue;
      // Through a pidfd, checked again after opening, so a recycled pid is never signalled.
      UniqueFd pfd(static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0)));
      if (!pfd) continue;
      auto again = ns_id_of(link);
      if (!again || ns.count(*again) == 0) continue;
      ++found;
      signal_pidfd(pfd.get(), SIGKILL);
    }
    ::closedir(d);
    if (found == 0 || remaining_ms(deadline) == 0) return found;
    std::this_thread::sleep_for(milliseconds(5));  // SIGKILL takes effect asynchronously
  }
}

// Removes worlds left by test processes that died without tearing down (and whose world
// server did not either, e.g. killed together with them).
void remove_stale_worlds() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/tmp", ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(kDirPrefix, 0) != 0) continue;
    long pid = std::strtol(name.c_str() + std::strlen(kDirPrefix), nullptr, 10);
    if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    std::string dir = entry.path().string();
    std::set<NsId> ns;
    for (const char* pin : {"/netns-world", "/netns-kmd"}) {
      if (auto id = ns_id_of(dir + pin)) ns.insert(*id);
    }
    kill_namespace_members(ns, Clock::now() + milliseconds(2000));
    for (const char* pin : {"/netns-world", "/netns-kmd"}) (void)sys::remove_pinned_netns(dir + pin);
    std::filesystem::remove_all(dir, ec);
  }
}

// ---- addresses and certificates -----------------------------------------------------------

Result<uint32_t> parse_world_addr(const std::string& addr) {
  in_addr a{};
  if (::inet_pton(AF_INET, addr.c_str(), &a) != 1) {
    return fail(ErrorCode::kInvalidArgument, "not an IPv4 address: " + addr);
  }
  uint32_t h = ntohl(a.s_addr);
  uint32_t net = h & 0xffffff00u, last = h & 0xffu;
  if (net != 0xc6336400u && net != 0xcb007100u) {  // 198.51.100.0/24, 203.0.113.0/24
    return fail(ErrorCode::kInvalidArgument, "world addresses must be in 198.51.100.0/24 or 203.0.113.0/24: " + addr);
  }
  if (last == 0 || last == 1 || last == 255) {
    return fail(ErrorCode::kInvalidArgument, addr + " is reserved (network, kmd side or broadcast)");
  }
  return a.s_addr;
}

Status write_text(const std::string& path, const std::string& text, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return fail(Error::from_errno("create " + path));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Error::from_errno("write " + path));
    done += static_cast<size_t>(n);
  }
  return ok();
}

constexpr const char* kOpensslConfig = R"([req]
distinguished_name = dn
prompt = no
[dn]
CN = km test world
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
)";

}  // namespace

// ---- defaults -----------------------------------------------------------------------------

std::vector<std::string> WorldOptions::default_zones() { return {"allowed.test", "evil.test"}; }

std::vector<DnsRecord> WorldOptions::default_records() {
  return {
      {"allowed.test", "A", "198.51.100.10", 60},
      {"api.allowed.test", "A", "198.51.100.11", 60},
      {"www.allowed.test", "CNAME", "allowed.test", 60},
      {"cdn.allowed.test", "CNAME", "edge.evil.test", 60},
      {"multi.allowed.test", "A", "198.51.100.10", 60},
      {"multi.allowed.test", "A", "198.51.100.12", 60},
      {"short.allowed.test", "A", "198.51.100.12", 5},
      {"v6.allowed.test", "AAAA", "2001:db8::10", 60},
      {"evil.test", "A", "203.0.113.10", 60},
      {"edge.evil.test", "A", "203.0.113.10", 60},
      {"api.allowed.test.evil.test", "A", "203.0.113.11", 60},
      {"txt.evil.test", "TXT", "exfil", 60},
      {"*.tunnel.evil.test", "A", "203.0.113.11", 60},
  };
}

std::vector<WorldHost> WorldOptions::default_hosts() {
  return {
      {"198.51.100.10", {"allowed.test", "*.allowed.test"}, true},
      {"198.51.100.11", {"api.allowed.test"}, true},
      {"198.51.100.12", {"multi.allowed.test", "short.allowed.test"}, true},
      {"198.51.100.53", {"ns.allowed.test"}, true},
      {"203.0.113.10", {"evil.test", "*.evil.test"}, true},
      {"203.0.113.11", {"api.allowed.test.evil.test", "*.tunnel.evil.test"}, true},
      {"203.0.113.53", {"dns.evil.test"}, true},
  };
}

// ---- TestWorld ----------------------------------------------------------------------------

Result<std::unique_ptr<TestWorld>> TestWorld::create(const WorldOptions& options) {
  if (::geteuid() != 0) {
    return fail(Error(ErrorCode::kPermissionDenied, "the test world needs root (network namespaces, veth)")
                    .with_hint("run the test as root"));
  }
  remove_stale_worlds();
  std::unique_ptr<TestWorld> world(new TestWorld());
  // On failure the destructor takes down whatever was built.
  if (auto s = world->build(options); !s) return fail(std::move(s).error().wrap("building the test world"));
  return world;
}

Status TestWorld::build(const WorldOptions& options) {
  // Validate first: nothing is built for a world that cannot be.
  std::vector<WorldHost> hosts = options.hosts;
  for (const char* needed : {kResolver, kAttackerResolver}) {
    if (std::none_of(hosts.begin(), hosts.end(), [&](const WorldHost& h) { return h.addr == needed; })) {
      hosts.push_back({needed, {}, true});
    }
  }
  std::set<uint32_t> seen;
  for (const auto& h : hosts) {
    KM_ASSIGN_OR_RETURN(uint32_t a, parse_world_addr(h.addr));
    if (!seen.insert(a).second) return fail(ErrorCode::kInvalidArgument, "host " + h.addr + " listed twice");
  }
  KM_TRY(parse_world_addr(options.attacker_answer));

  std::string tmpl = std::string("/tmp/") + kDirPrefix + std::to_string(::getpid()) + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return fail(Error::from_errno("mkdtemp " + tmpl));
  dir_ = tmpl;
  if (::chmod(dir_.c_str(), 0755) != 0) return fail(Error::from_errno("chmod " + dir_));

  // Certificates: one CA, one leaf key shared by all leaves, one leaf per host (in parallel).
  KM_TRY(write_text(dir_ + "/openssl.cnf", kOpensslConfig, 0644));
  auto openssl = [&](std::vector<std::string> args) -> Result<Started> {
    args.insert(args.begin(), "openssl");
    KM_ASSIGN_OR_RETURN(std::string exe, find_executable("openssl", path_of({})));
    UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    UniqueFd log(::open((dir_ + "/openssl.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (!null || !log) return fail(Error::from_errno("open /dev/null or openssl.log"));
    return start_process(-1, exe, args, {"PATH=" + path_of({})}, {null.get(), log.get(), log.get(), -1});
  };
  auto finish = [&](std::vector<Started> procs, const std::string& what) -> Status {
    auto deadline = Clock::now() + milliseconds(20000);
    bool all_ok = true;
    for (auto& p : procs) {
      auto st = wait_reap(p.pidfd.get(), deadline);
      if (!st) {
        signal_pidfd(p.pidfd.get(), SIGKILL);
        (void)wait_reap(p.pidfd.get(), Clock::now() + milliseconds(1000));
      }
      all_ok = all_ok && st && *st == 0;
    }
    if (!all_ok) return fail(ErrorCode::kInternal, what + " failed: " + file_tail(dir_ + "/openssl.log", 2000));
    return ok();
  };
  {
    std::vector<Started> procs;
    KM_ASSIGN_OR_RETURN(auto ca, openssl({"req", "-x509", "-config", dir_ + "/openssl.cnf", "-extensions", "ca_ext",
                                          "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                          "-keyout", dir_ + "/ca.key", "-out", dir_ + "/ca.pem", "-days", "3",
                                          "-subj", "/CN=km test world CA"}));
    procs.push_back(std::move(ca));
    KM_ASSIGN_OR_RETURN(auto key, openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                                           "-out", dir_ + "/leaf.key"}));
    procs.push_back(std::move(key));
    KM_TRY(finish(std::move(procs), "making the test CA"));
  }
  {
    std::vector<Started> procs;
    std::mt19937_64 rng(std::random_device{}());
    for (const auto& h : hosts) {
      std::string san = "subjectAltName=IP:" + h.addr;
      for (const auto& n : h.names) san += ",DNS:" + n;
      char serial[40];
      std::snprintf(serial, sizeof serial, "0x%016llx", static_cast<unsigned long long>(rng() >> 1));
      KM_ASSIGN_OR_RETURN(auto p, openssl({"req", "-x509", "-new", "-config", dir_ + "/openssl.cnf", "-extensions",
                                           "leaf_ext", "-key", dir_ + "/leaf.key", "-CA", dir_ + "/ca.pem", "-CAkey",
                                           dir_ + "/ca.key", "-subj", "/CN=" + h.addr, "-days", "3", "-set_serial",
                                           serial, "-addext", san, "-out", dir_ + "/" + h.addr + ".pem"}));
      procs.push_back(std::move(p));
    }
    KM_TRY(finish(std::move(procs), "issuing the world's certificates"));
  }
  if (::chmod((dir_ + "/ca.pem").c_str(), 0644) != 0) return fail(Error::from_errno("chmod ca.pem"));

  // The namespaces and the link between them.
  world_pin_ = dir_ + "/netns-world";
  kmd_pin_ = dir_ + "/netns-kmd";
  KM_ASSIGN_OR_RETURN(world_netns_, sys::create_pinned_netns(world_pin_));
  KM_ASSIGN_OR_RETURN(kmd_netns_, sys::create_pinned_netns(kmd_pin_));
  {
    KM_ASSIGN_OR_RETURN(auto nl, sys::Netlink::open_in(world_netns_.get()));
    KM_TRY(nl.create_veth("wk0", "kw0", kmd_netns_.get()));
    KM_ASSIGN_OR_RETURN(int wk0, nl.link_index("wk0"));
    for (const auto& h : hosts) {
      KM_ASSIGN_OR_RETURN(uint32_t a, parse_world_addr(h.addr));
      if (auto s = nl.add_ipv4(wk0, a, 24); !s) return fail(std::move(s).error().wrap("adding " + h.addr + " to wk0"));
    }
    KM_TRY(nl.set_up(wk0));
  }
  {
    KM_ASSIGN_OR_RETURN(auto nl, sys::Netlink::open_in(kmd_netns_.get()));
    KM_ASSIGN_OR_RETURN(int kw0, nl.link_index("kw0"));
    for (const char* addr : {kKmdAddr1, kKmdAddr2}) {
      in_addr a{};
      ::inet_pton(AF_INET, addr, &a);
      if (auto s = nl.add_ipv4(kw0, a.s_addr, 24); !s) return fail(std::move(s).error().wrap(std::string("adding ") + addr + " to kw0"));
    }
    KM_TRY(nl.set_up(kw0));
  }

  // The world server's configuration.
  Json jhosts = Json::array();
  for (const auto& h : hosts) {
    jhosts.push_back({{"addr", h.addr}, {"names", h.names}, {"serve", h.serve},
                      {"cert", dir_ + "/" + h.addr + ".pem"}, {"key", dir_ + "/leaf.key"}});
  }
  Json jrecords = Json::array();
  for (const auto& r : options.records) {
    jrecords.push_back({{"name", r.name}, {"type", r.type}, {"value", r.value}, {"ttl", r.ttl}});
  }
  Json config = {
      {"dir", dir_},
      {"hits", dir_ + "/hits.jsonl"},
      {"ready_fd", 3},
      {"ready_file", dir_ + "/ready"},
      {"netns_pins", {world_pin_, kmd_pin_}},
      {"max_lifetime_s", options.max_lifetime.count()},
      {"limits",
       {{"idle_timeout_s", options.idle_timeout.count()},
        {"max_connections", options.max_connections},
        {"max_requests_per_connection", options.max_requests_per_connection},
        {"echo_bytes", options.echo_bytes},
        {"max_body_bytes", options.max_body_bytes}}},
      {"hosts", jhosts},
      {"dns", {{"addr", kResolver}, {"zones", options.zones}, {"records", jrecords}, {"negative_ttl", options.negative_ttl}}},
      {"attacker", {{"addr", kAttackerResolver}, {"answer", options.attacker_answer}, {"ttl", 60}}},
  };
  KM_TRY(write_text(dir_ + "/world.json", config.dump(2) + "\n", 0644));
  KM_TRY(write_text(dir_ + "/hits.jsonl", "", 0644));

  // The world server, in W; it says "ready" on fd 3 once every listener is bound.
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return fail(Error::from_errno("pipe2"));
  UniqueFd ready_r(pipe_fds[0]), ready_w(pipe_fds[1]);
  KM_ASSIGN_OR_RETURN(std::string python, find_executable("python3", path_of({})));
  std::string log_path = dir_ + "/world_server.log";
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!null || !log) return fail(Error::from_errno("open " + log_path));
  KM_ASSIGN_OR_RETURN(Started server,
                      start_process(world_netns_.get(), python, {"python3", "-I", "-B", "-S", KM_WORLD_SERVER, dir_ + "/world.json"},
                                    {"PATH=" + path_of({})}, {null.get(), log.get(), log.get(), ready_w.get()}));
  server_pid_ = server.pid;
  server_pidfd_ = std::move(server.pidfd);
  ready_w.reset();
  auto deadline = Clock::now() + options.ready_timeout;
  std::string said;
  for (;;) {
    pollfd p{ready_r.get(), POLLIN, 0};
    int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return fail(ErrorCode::kUnavailable, "the world server was not ready within " +
                                               std::to_string(options.ready_timeout.count()) + " ms: " +
                                               file_tail(log_path, 4000));
    }
    char buf[64];
    ssize_t got = ::read(ready_r.get(), buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      auto st = wait_reap(server_pidfd_.get(), Clock::now() + milliseconds(2000));
      server_pidfd_.reset();
      server_pid_ = -1;
      return fail(ErrorCode::kUnavailable, "the world server exited (status " + std::to_string(st.value_or(-1)) +
                                               ") before it was ready: " + file_tail(log_path, 4000));
    }
    said.append(buf, static_cast<size_t>(got));
    if (said.find("ready\n") != std::string::npos) return ok();
  }
}

TestWorld::~TestWorld() {
  // What the fixture started: asked to stop, then killed after a short grace.
  std::vector<Child> children;
  {
    std::lock_guard lock(mu_);
    children.swap(children_);
  }
  for (auto& c : children) signal_pidfd(c.pidfd.get(), SIGTERM);
  auto grace = Clock::now() + milliseconds(1500);
  for (auto& c : children) {
    if (!wait_reap(c.pidfd.get(), grace)) signal_pidfd(c.pidfd.get(), SIGKILL);
  }
  if (server_pidfd_) signal_pidfd(server_pidfd_.get(), SIGKILL);
  // Then whatever else lives in the two namespaces (kmd's enforcers, strays).
  std::set<NsId> ns;
  for (const auto& pin : {world_pin_, kmd_pin_}) {
    if (!pin.empty()) {
      if (auto id = ns_id_of(pin)) ns.insert(*id);
    }
  }
  auto deadline = Clock::now() + milliseconds(3000);
  kill_namespace_members(ns, deadline);
  for (auto& c : children) (void)wait_reap(c.pidfd.get(), deadline);
  if (server_pidfd_) (void)wait_reap(server_pidfd_.get(), deadline);
  server_pidfd_.reset();
  world_netns_.reset();
  kmd_netns_.reset();
  for (const auto& pin : {world_pin_, kmd_pin_}) {
    if (!pin.empty()) (void)sys::remove_pinned_netns(pin);
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

Result<pid_t> TestWorld::spawn_in(int netns_fd, const std::vector<std::string>& argv,
                                  const std::vector<std::string>& env, const std::string& log_path) {
  if (argv.empty()) return fail(ErrorCode::kInvalidArgument, "empty argv");
  std::vector<std::string> full_env = env;
  std::string path = path_of(env);
  if (std::none_of(env.begin(), env.end(), [](const std::string& e) { return e.rfind("PATH=", 0) == 0; })) {
    full_env.push_back("PATH=" + path);
  }
  KM_ASSIGN_OR_RETURN(std::string exe, find_executable(argv[0], path));
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null) return fail(Error::from_errno("open /dev/null"));
  UniqueFd log;
  if (!log_path.empty()) {
    log.reset(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (!log) return fail(Error::from_errno("open " + log_path));
  }
  int out = log ? log.get() : 1, err = log ? log.get() : 2;
  KM_ASSIGN_OR_RETURN(Started s, start_process(netns_fd, exe, argv, full_env, {null.get(), out, err, -1}));
  std::lock_guard lock(mu_);
  children_.push_back({s.pid, std::move(s.pidfd)});
  return s.pid;
}

Result<pid_t> TestWorld::spawn_in_kmd_netns(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                            const std::string& log_path) {
  return spawn_in(kmd_netns_.get(), argv, env, log_path);
}

Result<pid_t> TestWorld::spawn_in_world_netns(const std::vector<std::string>& argv,
                                              const std::vector<std::string>& env, const std::string& log_path) {
  return spawn_in(world_netns_.get(), argv, env, log_path);
}

Result<int> TestWorld::wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  int pidfd = -1;
  {
    std::lock_guard lock(mu_);
    for (const auto& c : children_) {
      if (c.pid == pid) pidfd = c.pidfd.get();
    }
  }
  if (pidfd < 0) return fail(ErrorCode::kNotFound, "pid " + std::to_string(pid) + " was not spawned by this world");
  auto st = wait_reap(pidfd, Clock::now() + timeout);
  if (!st) return fail(ErrorCode::kUnavailable, "pid " + std::to_string(pid) + " still running after " +
                                                    std::to_string(timeout.count()) + " ms");
  std::lock_guard lock(mu_);
  std::erase_if(children_, [&](const Child& c) { return c.pid == pid; });
  if (*st < 0) return fail(ErrorCode::kNotFound, "pid " + std::to_string(pid) + " was already reaped");
  return *st;
}

Result<TestWorld::Run> TestWorld::run_in_kmd_netns(const std::vector<std::string>& argv,
                                                   std::chrono::milliseconds timeout,
                                                   const std::vector<std::string>& env) {
  if (argv.empty()) return fail(ErrorCode::kInvalidArgument, "empty argv");
  std::vector<std::string> full_env = {"HOME=" + dir_};
  std::string path = path_of(env);
  full_env.push_back("PATH=" + path);
  for (const auto& e : env) {
    if (e.rfind("PATH=", 0) != 0) full_env.push_back(e);
  }
  KM_ASSIGN_OR_RETURN(std::string exe, find_executable(argv[0], path));
  int out_p[2], err_p[2];
  if (::pipe2(out_p, O_CLOEXEC) != 0) return fail(Error::from_errno("pipe2"));
  UniqueFd out_r(out_p[0]), out_w(out_p[1]);
  if (::pipe2(err_p, O_CLOEXEC) != 0) return fail(Error::from_errno("pipe2"));
  UniqueFd err_r(err_p[0]), err_w(err_p[1]);
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null) return fail(Error::from_errno("open /dev/null"));
  auto deadline = Clock::now() + timeout;
  KM_ASSIGN_OR_RETURN(Started child,
                      start_process(kmd_netns_.get(), exe, argv, full_env, {null.get(), out_w.get(), err_w.get(), -1}));
  out_w.reset();
  err_w.reset();
  Run r;
  pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  bool timed_out = false;
  while (open_fds > 0) {
    int n = ::poll(fds, 2, remaining_ms(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      timed_out = true;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got > 0) {
        std::string& sink = i == 0 ? r.out : r.err;
        sink.append(buf, std::min(static_cast<size_t>(got), kMaxCapture - std::min(kMaxCapture, sink.size())));
      } else {
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  std::optional<int> st;
  if (!timed_out) st = wait_reap(child.pidfd.get(), deadline);
  if (!st) {
    signal_pidfd(child.pidfd.get(), SIGKILL);
    (void)wait_reap(child.pidfd.get(), Clock::now() + milliseconds(2000));
    return fail(ErrorCode::kUnavailable, argv[0] + " did not finish within " + std::to_string(timeout.count()) +
                                             " ms; stdout: " + r.out + "; stderr: " + r.err);
  }
  r.status = *st;
  return r;
}

std::vector<TestWorld::Hit> TestWorld::hits() const {
  long long offset;
  {
    std::lock_guard lock(mu_);
    offset = hits_offset_;
  }
  std::vector<Hit> out;
  std::string text = read_from(dir_ + "/hits.jsonl", offset, kMaxHitsBytes);
  size_t pos = 0;
  for (;;) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;  // a line still being written
    Json j = Json::parse(text.begin() + static_cast<std::ptrdiff_t>(pos), text.begin() + static_cast<std::ptrdiff_t>(nl),
                         nullptr, false);
    pos = nl + 1;
    if (!j.is_object()) continue;
    Hit h;
    h.server = j.value("server", "");
    h.proto = j.value("proto", "");
    h.qname = j.value("qname", "");
    h.host = j.value("host", "");
    h.sni = j.value("sni", "");
    h.path = j.value("path", "");
    h.peer = j.value("peer", "");
    h.port = j.value("port", 0);
    h.qtype = j.value("qtype", 0);
    out.push_back(std::move(h));
  }
  return out;
}

void TestWorld::clear_hits() {
  std::lock_guard lock(mu_);
  std::string text = read_from(dir_ + "/hits.jsonl", hits_offset_, kMaxHitsBytes);
  size_t end = text.rfind('\n');  // a line still being written stays for the next read
  if (end != std::string::npos) hits_offset_ += static_cast<long long>(end + 1);
}

bool TestWorld::wait_for_hit(const std::function<bool(const Hit&)>& match, std::chrono::milliseconds timeout) const {
  auto deadline = Clock::now() + timeout;
  // Watch before looking, so a hit written in between still wakes us.
  UniqueFd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (in) (void)::inotify_add_watch(in.get(), (dir_ + "/hits.jsonl").c_str(), IN_MODIFY);
  for (;;) {
    for (const auto& h : hits()) {
      if (match(h)) return true;
    }
    int left = remaining_ms(deadline);
    if (left == 0) return false;
    if (in) {
      pollfd p{in.get(), POLLIN, 0};
      (void)::poll(&p, 1, left);
      char drain[4096];
      while (::read(in.get(), drain, sizeof drain) > 0) {
      }
    } else {
      std::this_thread::sleep_for(milliseconds(5));
    }
  }
}

}  // namespace km::testing
