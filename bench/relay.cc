// The floor under any relaying proxy on this machine (issue: egress enforcement, the download
// throughput figure). One large download, in a network namespace of its own on loopback:
//   direct   the client reads from the server;
//   splice   through a relay that moves the bytes between the sockets through a pipe, one splice
//            in and one out each time the upstream socket is readable (what km's enforcer does
//            once a connection needs no more inspection; squid and tinyproxy copy);
//   copy     through a relay that read()s and write()s a 64 KiB buffer;
//   sockmap  through the kernel alone: an sk_skb verdict program redirects what the upstream
//            socket receives to the client socket's send side; no user space in the data path.
// Two servers: one sends from a file in memory with sendfile() (the bytes stay in the file's
// pages all the way), one with send() from a buffer (ordinary socket buffers, as bytes that came
// from a network are). The client reads 64 KiB at a time, like curl. Server, relays and client
// are separate processes. For each path: MB/s, its ratio to direct, and the CPU seconds the
// whole machine spent per GB (every process, the kernel's network work included). Repetitions
// are interleaved across paths. Then a slow reader: the client reads little for 3 s, then all
// of it; every path must still deliver every byte.
//   build/release/bench/relay_bench [--mib 1024] [--reps 5]
// Needs root (a network namespace; BPF). Every transfer is bounded in bytes and time; every
// process it starts ends with it. Timings are for reading: it exits 0 unless setup fails.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "relay_bench.skel.h"

namespace {

constexpr uint16_t kSendfilePort = 9000, kSendPort = 9010;
constexpr int kTimeoutSeconds = 20;  // no single transfer waits longer on a socket

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Busy and total CPU seconds of the whole machine so far (every core), from /proc/stat.
struct MachineCpu {
  double busy = 0, total = 0;
};
MachineCpu machine_cpu() {
  MachineCpu m;
  FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return m;
  unsigned long long v[8] = {};
  int got = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
  std::fclose(f);
  if (got != 8) return m;
  double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  unsigned long long total = 0;
  for (unsigned long long x : v) total += x;
  m.total = static_cast<double>(total) / hz;
  m.busy = static_cast<double>(total - v[3] - v[4]) / hz;  // idle and iowait are not busy
  return m;
}

void set_timeouts(int fd) {
  timeval tv{kTimeoutSeconds, 0};
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

int listen_on(uint16_t port) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  (void)::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = loopback(port);
  if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 16) != 0) {
    std::perror("relay_bench: listen");
    std::exit(1);
  }
  return s;
}

int dial(uint16_t port) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(port);
  if (s < 0 || ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (s >= 0) ::close(s);
    return -1;
  }
  set_timeouts(s);
  return s;
}

// A child that dies with its parent.
template <class F>
pid_t child(F&& f) {
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  (void)::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(0);
  f();
  ::_exit(0);
}

// What a client asks for: five bytes, the server ('f': sendfile, 's': send) and how many MiB
// (uint32, host order).
constexpr size_t kRequestBytes = 5;

bool recv_all(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t m = ::recv(fd, p, n, 0);
    if (m <= 0) return false;
    p += m;
    n -= static_cast<size_t>(m);
  }
  return true;
}

// Each connection: a request, then that many bytes of the file, with sendfile() or with send()
// from a buffer, then close.
void serve(int listener, int file, bool use_sendfile) {
  std::vector<char> buf(use_sendfile ? 0 : 1 << 20);
  if (!buf.empty() && ::pread(file, buf.data(), buf.size(), 0) != static_cast<ssize_t>(buf.size())) return;
  for (;;) {
    int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    set_timeouts(c);
    char req[kRequestBytes];
    if (recv_all(c, req, sizeof req)) {
      uint32_t mib;
      std::memcpy(&mib, req + 1, sizeof mib);
      size_t left = static_cast<size_t>(mib) << 20;
      off_t off = 0;
      while (left > 0) {
        ssize_t n = use_sendfile ? ::sendfile(c, file, &off, left) : ::send(c, buf.data(), std::min(left, buf.size()), 0);
        if (n <= 0) break;
        left -= static_cast<size_t>(n);
      }
    }
    ::close(c);
  }
}

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t m = ::write(fd, p, n);
    if (m <= 0) return false;
    p += m;
    n -= static_cast<size_t>(m);
  }
  return true;
}

// Upstream to client through a pipe, as km's enforcer does: wait until readable, splice what
// is there into the pipe, splice the pipe out.
void relay_splice(int up, int c) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return;
  (void)::fcntl(p[1], F_SETPIPE_SZ, 256 << 10);
  (void)::fcntl(up, F_SETFL, O_NONBLOCK);
  for (;;) {
    pollfd pf{up, POLLIN, 0};
    if (::poll(&pf, 1, kTimeoutSeconds * 1000) <= 0) break;
    ssize_t n = ::splice(up, nullptr, p[1], nullptr, 1 << 20, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      break;
    }
    while (n > 0) {
      ssize_t m = ::splice(p[0], nullptr, c, nullptr, static_cast<size_t>(n), SPLICE_F_MOVE);
      if (m <= 0) {
        n = -1;
        break;
      }
      n -= m;
    }
    if (n < 0) break;
  }
  ::close(p[0]);
  ::close(p[1]);
}

void relay_copy(int up, int c) {
  std::vector<char> buf(64 << 10);
  for (;;) {
    ssize_t n = ::read(up, buf.data(), buf.size());
    if (n <= 0 || !write_all(c, buf.data(), static_cast<size_t>(n))) return;
  }
}

unsigned long long cookie_of(int fd) {
  unsigned long long c = 0;
  socklen_t len = sizeof c;
  (void)::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &len);
  return c;
}

// The kernel relays; this process only puts the pair in the maps (before the request goes
// upstream: bytes already queued on a socket when it joins the map wait there until more
// arrive, and with a full window none do) and waits. The redirected bytes are sent from a work
// queue, so the upstream's end says nothing about what the client has: the relay waits for the
// client to close (it does once it has every byte).
bool sockmap_join(int up, int c, relay_bench* skel) {
  int socks = bpf_map__fd(skel->maps.socks), peer = bpf_map__fd(skel->maps.peer);
  unsigned long long cc = cookie_of(c), uc = cookie_of(up);
  uint32_t cfd = static_cast<uint32_t>(c), ufd = static_cast<uint32_t>(up);
  if (bpf_map_update_elem(socks, &cc, &cfd, BPF_ANY) != 0 || bpf_map_update_elem(peer, &uc, &cc, BPF_ANY) != 0 ||
      bpf_map_update_elem(socks, &uc, &ufd, BPF_ANY) != 0) {
    std::perror("relay_bench: sockmap update");
    return false;
  }
  return true;
}

void sockmap_wait(int up, int c, relay_bench* skel) {
  int socks = bpf_map__fd(skel->maps.socks), peer = bpf_map__fd(skel->maps.peer);
  unsigned long long cc = cookie_of(c), uc = cookie_of(up);
  pollfd pf{c, POLLRDHUP, 0};
  (void)::poll(&pf, 1, kTimeoutSeconds * 1000);
  (void)bpf_map_delete_elem(peer, &uc);
  (void)bpf_map_delete_elem(socks, &uc);
  (void)bpf_map_delete_elem(socks, &cc);
}

void relay(int listener, const std::string& mode, relay_bench* skel) {
  for (;;) {
    int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    set_timeouts(c);
    char req[kRequestBytes];
    int up = recv_all(c, req, sizeof req) ? dial(req[0] == 's' ? kSendPort : kSendfilePort) : -1;
    bool joined = up >= 0 && mode == "sockmap" && sockmap_join(up, c, skel);
    if (up >= 0 && ::send(up, req, sizeof req, 0) == static_cast<ssize_t>(sizeof req)) {
      if (mode == "splice") relay_splice(up, c);
      if (mode == "copy") relay_copy(up, c);
      if (joined) sockmap_wait(up, c, skel);
    }
    (void)::shutdown(c, SHUT_WR);
    if (up >= 0) ::close(up);
    ::close(c);
  }
}

struct Sample {
  double seconds = 0, mbps = 0, cpu_per_gb = 0, busy_share = 0;
  size_t got = 0;
  bool ok = false;
};

// One download of `mib` MiB through `port` from the server `kind`, read 64 KiB at a time. A slow
// reader reads 64 KiB every 20 ms for its first 3 seconds (about 3 MB/s), then all the rest.
Sample download(uint16_t port, char kind, uint32_t mib, bool slow) {
  Sample s;
  const size_t size = static_cast<size_t>(mib) << 20;
  MachineCpu m0 = machine_cpu();
  double t0 = now_s();
  int c = dial(port);
  if (c < 0) return s;
  char req[kRequestBytes] = {kind};
  std::memcpy(req + 1, &mib, sizeof mib);
  if (::send(c, req, sizeof req, 0) == static_cast<ssize_t>(sizeof req)) {
    std::vector<char> buf(64 << 10);
    while (s.got < size) {
      if (slow && now_s() - t0 < 3) ::usleep(20000);
      ssize_t n = ::recv(c, buf.data(), std::min(buf.size(), size - s.got), 0);
      if (n <= 0) break;
      s.got += static_cast<size_t>(n);
    }
  }
  double t1 = now_s();
  MachineCpu m1 = machine_cpu();
  ::close(c);
  s.seconds = t1 - t0;
  if (s.got != size || t1 <= t0) return s;
  s.ok = true;
  s.mbps = static_cast<double>(size) / (t1 - t0) / 1e6;
  s.cpu_per_gb = (m1.busy - m0.busy) / (static_cast<double>(size) / 1e9);
  s.busy_share = m1.total > m0.total ? (m1.busy - m0.busy) / (m1.total - m0.total) : 0;
  return s;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t mib = 1024;
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--mib") mib = static_cast<uint32_t>(std::clamp(std::atoi(argv[i + 1]), 16, 8192));
    if (k == "--reps") reps = std::clamp(std::atoi(argv[i + 1]), 1, 50);
  }
  const size_t size = static_cast<size_t>(mib) << 20;
  if (::geteuid() != 0) {
    std::fprintf(stderr, "relay_bench: needs root (a network namespace of its own; BPF)\n");
    return 1;
  }
  if (::unshare(CLONE_NEWNET) != 0 || std::system("ip link set lo up") != 0) {
    std::fprintf(stderr, "relay_bench: could not make a network namespace with loopback up\n");
    return 1;
  }
  int file = ::memfd_create("relay-bench", MFD_CLOEXEC);
  if (file < 0 || ::ftruncate(file, static_cast<off_t>(size)) != 0) {
    std::perror("relay_bench: memfd");
    return 1;
  }
  {
    std::vector<char> chunk(1 << 20);
    for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>(i * 131 + 7);
    for (size_t off = 0; off < size; off += chunk.size()) {
      if (::pwrite(file, chunk.data(), chunk.size(), static_cast<off_t>(off)) != static_cast<ssize_t>(chunk.size())) {
        std::perror("relay_bench: filling the file");
        return 1;
      }
    }
  }
  relay_bench* skel = relay_bench__open_and_load();
  if (!skel) {
    std::fprintf(stderr, "relay_bench: loading the sk_skb program failed (%s)\n", std::strerror(errno));
    return 1;
  }
  if (bpf_prog_attach(bpf_program__fd(skel->progs.relay_verdict), bpf_map__fd(skel->maps.socks), BPF_SK_SKB_VERDICT, 0) != 0) {
    std::fprintf(stderr, "relay_bench: attaching the sk_skb verdict program failed (%s)\n", std::strerror(errno));
    relay_bench__destroy(skel);
    return 1;
  }

  std::vector<pid_t> kids;
  for (bool use_sendfile : {true, false}) {
    int l = listen_on(use_sendfile ? kSendfilePort : kSendPort);
    kids.push_back(child([&] { serve(l, file, use_sendfile); }));
    ::close(l);
  }
  const std::vector<std::string> modes = {"direct", "splice", "copy", "sockmap"};
  std::map<std::string, uint16_t> ports;
  for (size_t i = 1; i < modes.size(); ++i) {
    uint16_t port = static_cast<uint16_t>(kSendfilePort + i);
    int l = listen_on(port);
    const std::string mode = modes[i];
    kids.push_back(child([&] { relay(l, mode, skel); }));
    ::close(l);
    ports[mode] = port;
  }

  long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  double load[1] = {0};
  (void)::getloadavg(load, 1);
  std::printf("== relay floor: one %u MiB download on loopback, median of %d (interleaved); %ld cores, load %.2f at the start ==\n",
              mib, reps, cores, load[0]);
  std::printf("machine = CPU seconds the whole machine spent per GB; busy = share of all cores in use\n");
  for (char kind : {'f', 's'}) {
    std::map<std::string, std::vector<double>> rate, cpu, busy;
    std::map<std::string, int> failed;
    for (int r = 0; r < reps; ++r) {
      for (const auto& mode : modes) {
        Sample s = download(mode == "direct" ? (kind == 's' ? kSendPort : kSendfilePort) : ports[mode], kind, mib, false);
        if (!s.ok) {
          ++failed[mode];
          continue;
        }
        rate[mode].push_back(s.mbps);
        cpu[mode].push_back(s.cpu_per_gb);
        busy[mode].push_back(s.busy_share);
      }
    }
    std::printf("\nserver with %s:\n", kind == 'f' ? "sendfile() (the bytes stay in the file's pages)" : "send() from a buffer");
    std::printf("%-10s %10s %8s %9s %6s %8s\n", "path", "MB/s", "/direct", "machine", "busy", "failed");
    double direct = median(rate["direct"]);
    for (const auto& mode : modes) {
      double v = median(rate[mode]);
      char ratio[16] = "-";
      if (direct > 0) std::snprintf(ratio, sizeof ratio, "%.2f", v / direct);
      std::printf("%-10s %10.0f %8s %9.2f %5.0f%% %8d\n", mode.c_str(), v, ratio, median(cpu[mode]), median(busy[mode]) * 100,
                  failed[mode]);
    }
  }
  const uint32_t slow_mib = std::min<uint32_t>(mib, 256);
  std::printf("\nslow reader (about 3 MB/s for 3 s, then as fast as it can), %u MiB from the send() server; each read waits at most %d s:\n",
              slow_mib, kTimeoutSeconds);
  std::printf("%-10s %12s %10s\n", "path", "delivered", "seconds");
  for (const auto& mode : modes) {
    Sample s = download(mode == "direct" ? kSendPort : ports[mode], 's', slow_mib, true);
    char got[32];
    std::snprintf(got, sizeof got, "%zu MiB%s", s.got >> 20, s.ok ? "" : " (cut)");
    std::printf("%-10s %12s %10.1f\n", mode.c_str(), got, s.seconds);
  }

  for (pid_t k : kids) ::kill(k, SIGKILL);
  for (pid_t k : kids) ::waitpid(k, nullptr, 0);
  relay_bench__destroy(skel);
  return 0;
}
