// Kernel enforcement figures (issue: cgroup eBPF), in one run, as root:
//   1. connect() latency to an allowed address from a cgroup with km's egress programs
//      attached, next to the same from a cgroup without them: p50, p99 and the added time;
//   2. how many deny events per second the audit path (ring buffer -> reader) carries, and
//      how many were lost.
// Runs in a network namespace of its own on loopback; every loop is bounded.
//   build/release/bench/bpf_connect_bench [--n 20000] [--events 200000]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "km/bpf/egress_programs.h"
#include "km/sys/cgroup.h"
#include "km/sys/netlink.h"

namespace {

double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void join(const std::string& cgroup) {
  int fd = ::open((cgroup + "/cgroup.procs").c_str(), O_WRONLY);
  if (fd < 0 || ::write(fd, "0", 1) != 1) _exit(90);
  ::close(fd);
}

// In a child in `cgroup`: n connects to 127.0.0.2:port, each timed; writes the times to `out`.
std::vector<double> measure(const std::string& cgroup, uint16_t port, int n) {
  int p[2];
  if (::pipe(p) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    join(cgroup);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.2", &sa.sin_addr);
    std::vector<double> t;
    t.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      double a = now_us();
      int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
      double b = now_us();
      // Closed with a reset: no TIME_WAIT, so tens of thousands of connects do not leave the
      // later ones searching a full ephemeral port range (which shows as ms stalls at p99).
      linger lg{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      ::close(fd);
      if (rc == 0) t.push_back(b - a);
    }
    size_t bytes = t.size() * sizeof(double);
    (void)!::write(p[1], &bytes, sizeof bytes);
    const char* d = reinterpret_cast<const char*>(t.data());
    for (size_t off = 0; off < bytes;) {
      ssize_t w = ::write(p[1], d + off, bytes - off);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    _exit(0);
  }
  ::close(p[1]);
  size_t bytes = 0;
  std::vector<double> t;
  if (::read(p[0], &bytes, sizeof bytes) == sizeof bytes) {
    t.resize(bytes / sizeof(double));
    char* d = reinterpret_cast<char*>(t.data());
    for (size_t off = 0; off < bytes;) {
      ssize_t r = ::read(p[0], d + off, bytes - off);
      if (r <= 0) break;
      off += static_cast<size_t>(r);
    }
  }
  ::close(p[0]);
  ::waitpid(pid, nullptr, 0);
  return t;
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  int n = 20000, events = 200000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--n") n = std::clamp(std::atoi(argv[i + 1]), 100, 1000000);
    if (std::string(argv[i]) == "--events") events = std::clamp(std::atoi(argv[i + 1]), 1000, 5000000);
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "bpf_connect_bench: needs root\n");
    return 1;
  }
  if (::unshare(CLONE_NEWNET) != 0) return 1;
  auto nl = km::sys::Netlink::open();
  if (!nl || !nl->set_up(*nl->link_index("lo"))) return 1;
  auto layout = km::sys::CgroupLayout::discover();
  if (!layout) return 1;
  std::string base = layout->v2_mount + layout->v2_self + "/km-bench-bpf-" + std::to_string(::getpid());
  std::string plain = base + "-plain", gated = base + "-gated";
  ::mkdir(plain.c_str(), 0755);
  ::mkdir(gated.c_str(), 0755);
  // Where the added time goes: cgroups with one or two of the programs a TCP connect meets.
  struct Part {
    std::string label, dir;
    std::vector<std::string> programs;
    std::vector<double> t;
  };
  std::vector<Part> parts = {{"connect4 + cgroup_skb", base + "-c4skb", {"km_connect4", "km_skb_egress"}, {}},
                             {"connect4 only", base + "-c4", {"km_connect4"}, {}},
                             {"connect4 + sockops", base + "-c4so", {"km_connect4", "km_sockops"}, {}}};
  for (const Part& part : parts) ::mkdir(part.dir.c_str(), 0755);
  // The cgroups go whichever way this ends (a load the verifier refuses returns early).
  struct Cleanup {
    std::vector<std::string> dirs;
    ~Cleanup() {
      for (const auto& d : dirs) ::rmdir(d.c_str());
    }
  } cleanup{{plain, gated}};
  for (const Part& part : parts) cleanup.dirs.push_back(part.dir);

  // A listener that accepts everything (outside both cgroups).
  int srv = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(9000);
  inet_pton(AF_INET, "127.0.0.2", &sa.sin_addr);
  if (::bind(srv, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(srv, 4096) != 0) return 1;

  km::bpf::EgressSettings s;
  s.dns_addr = {127, 0, 0, 53};
  s.proxy_addr = {127, 0, 0, 54};
  s.allow_loopback = false;  // 127.0.0.2 is "remote": found through the allowlist
  auto progs = km::bpf::EgressPrograms::load(s);
  if (!progs) {
    std::fprintf(stderr, "load: %s\n", progs.error().to_string().c_str());
    return 1;
  }
  int cg = ::open(gated.c_str(), O_RDONLY | O_DIRECTORY);
  if (!(*progs)->attach(cg)) return 1;
  for (const Part& part : parts) {
    int fd = ::open(part.dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd < 0 || !(*progs)->attach(fd, part.programs)) return 1;
    ::close(fd);
  }
  km::bpf::AllowEntry e;
  e.family = AF_INET;
  e.addr = {127, 0, 0, 2};
  e.prefix_len = 32;
  (void)(*progs)->allow(e);
  // A realistic allowlist: thousands of other entries.
  for (uint32_t i = 0; i < 5000; ++i) {
    km::bpf::AllowEntry x;
    x.family = AF_INET;
    x.addr = {198, 18, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)};
    (void)(*progs)->allow(x);
  }

  // Started once nothing can return early (a joinable thread must not be left behind).
  std::atomic<bool> stop{false};
  std::thread acceptor([&] {
    while (!stop) {
      int c = ::accept4(srv, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) ::close(c);
    }
  });
  std::printf("== connect() to an allowed address, %d per path, interleaved rounds ==\n", n);
  std::vector<double> t_plain, t_gated;
  for (int round = 0; round < 4; ++round) {
    auto a = measure(plain, 9000, n / 4);
    auto b = measure(gated, 9000, n / 4);
    t_plain.insert(t_plain.end(), a.begin(), a.end());
    t_gated.insert(t_gated.end(), b.begin(), b.end());
    for (Part& part : parts) {
      auto c = measure(part.dir, 9000, n / 8);
      part.t.insert(part.t.end(), c.begin(), c.end());
    }
  }
  std::printf("%-26s %10s %10s %8s\n", "path", "p50 us", "p99 us", "ok");
  std::printf("%-26s %10.2f %10.2f %8zu\n", "no programs", pct(t_plain, 50), pct(t_plain, 99), t_plain.size());
  std::printf("%-26s %10.2f %10.2f %8zu\n", "km egress programs", pct(t_gated, 50), pct(t_gated, 99), t_gated.size());
  std::printf("added: p50 %+.2f us, p99 %+.2f us   (goal: under 2 us)\n", pct(t_gated, 50) - pct(t_plain, 50),
              pct(t_gated, 99) - pct(t_plain, 99));
  std::printf("where it goes (p50 added over no programs, fewer samples):\n");
  for (const Part& part : parts) {
    std::printf("  %-24s p50 %+.2f us, p99 %+.2f us\n", part.label.c_str(), pct(part.t, 50) - pct(t_plain, 50), pct(part.t, 99) - pct(t_plain, 99));
  }

  // Deny events: a child in the gated cgroup connects to denied addresses as fast as it can;
  // this process reads the ring buffer meanwhile.
  std::printf("\n== deny events through the ring buffer: %d attempts ==\n", events);
  std::atomic<uint64_t> delivered{0};
  std::atomic<bool> reading{true};
  std::thread reader([&] {
    auto deliver = [&](const km::bpf::EgressEvent&) { delivered.fetch_add(1, std::memory_order_relaxed); };
    while (reading) (void)(*progs)->poll_events(20, deliver);
    for (int i = 0; i < 5; ++i) (void)(*progs)->poll_events(20, deliver);
  });
  double t0 = now_us();
  pid_t pid = ::fork();
  if (pid == 0) {
    join(gated);
    sockaddr_in d{};
    d.sin_family = AF_INET;
    d.sin_port = htons(80);
    inet_pton(AF_INET, "127.0.0.7", &d.sin_addr);
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    for (int i = 0; i < events; ++i) (void)::connect(fd, reinterpret_cast<sockaddr*>(&d), sizeof d);
    _exit(0);
  }
  ::waitpid(pid, nullptr, 0);
  double secs = (now_us() - t0) / 1e6;
  reading = false;
  reader.join();
  uint64_t lost = (*progs)->lost();
  std::printf("generated %d denials in %.2f s (%.0f/s); delivered %llu, lost %llu (%.4f%%)\n", events, secs, events / secs,
              static_cast<unsigned long long>(delivered.load()), static_cast<unsigned long long>(lost),
              100.0 * static_cast<double>(lost) / events);

  stop = true;
  ::shutdown(srv, SHUT_RDWR);
  ::close(srv);
  acceptor.join();
  progs->reset();
  ::close(cg);
  return 0;
}
