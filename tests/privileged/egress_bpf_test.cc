// The kernel egress programs on a throwaway cgroup, in a network namespace of the test's own:
// each verdict checked from a child placed in the cgroup (allowed after an entry is added,
// denied before and after it is removed or expires, ports, DNS redirected, raw sockets
// refused, IPv6 and IPv4-mapped IPv6, redirect to the proxy with the original destination
// recovered, deny events).
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <string>

#include "km/base/unique_fd.h"
#include "km/bpf/egress_programs.h"
#include "km/sys/cgroup.h"
#include "km/sys/netlink.h"

namespace {

using km::UniqueFd;
using km::bpf::AllowEntry;
using km::bpf::EgressPrograms;

std::array<uint8_t, 16> v4(const char* s) {
  std::array<uint8_t, 16> a{};
  inet_pton(AF_INET, s, a.data());
  return a;
}
std::array<uint8_t, 16> v6(const char* s) {
  std::array<uint8_t, 16> a{};
  inet_pton(AF_INET6, s, a.data());
  return a;
}

UniqueFd listener(int family, int type, const char* addr, uint16_t port) {
  UniqueFd fd(::socket(family, type | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, addr, &sa.sin_addr);
    EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << addr << ":" << port << " " << strerror(errno);
  } else {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(port);
    inet_pton(AF_INET6, addr, &sa.sin6_addr);
    EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << addr << " " << strerror(errno);
  }
  if (type == SOCK_STREAM) ::listen(fd.get(), 16);
  return fd;
}

// connect() from a socket of `family` to addr:port; 0 or the errno.
int try_connect(int family, int type, const char* addr, uint16_t port) {
  int fd = ::socket(family, type, 0);
  if (fd < 0) return errno;
  int rc;
  if (family == AF_INET) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, addr, &sa.sin_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  } else {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(port);
    inet_pton(AF_INET6, addr, &sa.sin6_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  }
  int err = rc == 0 ? 0 : errno;
  if (rc == 0 && type == SOCK_STREAM) (void)!::write(fd, "hello", 5);
  ::close(fd);
  return err;
}

class EgressBpf : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    // A network namespace of the test's own, so loopback addresses stand in for remote hosts.
    if (::unshare(CLONE_NEWNET) != 0) return;
    auto nl = km::sys::Netlink::open();
    if (!nl) return;
    auto lo = nl->link_index("lo");
    if (!lo || !nl->set_up(*lo)) return;
    ready_ = true;
  }

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "privileged test: needs root (BPF, namespaces)";
    ASSERT_TRUE(ready_) << "could not make a network namespace";
    auto layout = km::sys::CgroupLayout::discover();
    ASSERT_TRUE(layout) << layout.error().to_string();
    layout->name = "km-egress-bpf-" + std::to_string(::getpid());
    cgroup_ = layout->v2_base();
    ASSERT_EQ(::mkdir(cgroup_.c_str(), 0755), 0) << cgroup_;
    km::bpf::EgressSettings s;
    s.dns_addr = {127, 0, 0, 53};
    s.dns_port = 5353;
    s.proxy_addr = {127, 0, 0, 54};
    s.proxy_port = 3128;
    s.allow_loopback = false;  // here loopback addresses play remote hosts
    auto p = EgressPrograms::load(s);
    ASSERT_TRUE(p) << p.error().to_string();
    progs_ = std::move(*p);
    UniqueFd cg(::open(cgroup_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(progs_->attach(cg.get())) << "attach";
  }
  void TearDown() override {
    progs_.reset();  // detaches
    if (!cgroup_.empty()) ::rmdir(cgroup_.c_str());
  }

  // Runs `fn` in a child placed in the cgroup; returns what it returned.
  int in_sandbox(const std::function<int()>& fn) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int fd = ::open((cgroup_ + "/cgroup.procs").c_str(), O_WRONLY);
      if (fd < 0 || ::write(fd, "0", 1) != 1) _exit(250);
      ::close(fd);
      _exit(fn() & 0xff);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 251;
  }

  AllowEntry entry(const char* addr, int family = AF_INET, int prefix = 32) {
    AllowEntry e;
    e.family = family;
    e.addr = family == AF_INET ? v4(addr) : v6(addr);
    e.prefix_len = prefix;
    return e;
  }

  static inline bool ready_ = false;
  std::string cgroup_;
  std::unique_ptr<EgressPrograms> progs_;
};

TEST_F(EgressBpf, AllowedOnlyWhileTheAllowlistSaysSo) {
  auto srv = listener(AF_INET, SOCK_STREAM, "127.0.0.2", 8080);
  auto connect_tcp = [] { return try_connect(AF_INET, SOCK_STREAM, "127.0.0.2", 8080); };
  EXPECT_EQ(in_sandbox(connect_tcp), EPERM);  // before resolution
  ASSERT_TRUE(progs_->allow(entry("127.0.0.2")));
  EXPECT_EQ(in_sandbox(connect_tcp), 0);
  EXPECT_EQ(try_connect(AF_INET, SOCK_STREAM, "127.0.0.3", 1), ECONNREFUSED);  // outside the cgroup: untouched
  ASSERT_TRUE(progs_->remove(AF_INET, v4("127.0.0.2"), 32));
  EXPECT_EQ(in_sandbox(connect_tcp), EPERM);  // after eviction
  auto expired = entry("127.0.0.2");
  expired.expires_boot_ns = km::bpf::boot_ns_now() - 1;
  ASSERT_TRUE(progs_->allow(expired));
  EXPECT_EQ(in_sandbox(connect_tcp), EPERM);  // an entry past its expiry allows nothing
  auto net = entry("127.0.0.0", AF_INET, 24);  // a CIDR covers it
  ASSERT_TRUE(progs_->remove(AF_INET, v4("127.0.0.2"), 32));
  ASSERT_TRUE(progs_->allow(net));
  EXPECT_EQ(in_sandbox(connect_tcp), 0);
}

TEST_F(EgressBpf, AConnectionAllowedAtConnectOutlivesItsEntry) {
  auto srv = listener(AF_INET, SOCK_STREAM, "127.0.0.2", 8085);
  ASSERT_TRUE(progs_->allow(entry("127.0.0.2")));
  int go[2], done[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(done), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open((cgroup_ + "/cgroup.procs").c_str(), O_WRONLY);
    if (fd < 0 || ::write(fd, "0", 1) != 1) _exit(250);
    ::close(fd);
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(8085);
    inet_pton(AF_INET, "127.0.0.2", &sa.sin_addr);
    if (::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) _exit(1);
    (void)!::write(done[1], "c", 1);
    char c;
    (void)!::read(go[0], &c, 1);  // the entry is gone now
    _exit(::write(s, "after-eviction", 14) == 14 ? 0 : 2);
  }
  char c;
  ASSERT_EQ(::read(done[0], &c, 1), 1);
  UniqueFd conn(::accept4(srv.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(conn);
  ASSERT_TRUE(progs_->remove(AF_INET, v4("127.0.0.2"), 32));
  (void)!::write(go[1], "g", 1);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  char buf[32] = {};
  timeval tv{2, 0};
  ::setsockopt(conn.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  EXPECT_EQ(::recv(conn.get(), buf, sizeof buf, MSG_WAITALL), 14);
  EXPECT_EQ(std::string(buf, 14), "after-eviction");
  // A new connection is refused.
  EXPECT_EQ(in_sandbox([] { return try_connect(AF_INET, SOCK_STREAM, "127.0.0.2", 8085); }), EPERM);
  for (int f : {go[0], go[1], done[0], done[1]}) ::close(f);
}

TEST_F(EgressBpf, PortsOfAnEntryAreEnforced) {
  auto a = listener(AF_INET, SOCK_STREAM, "127.0.0.3", 8081);
  auto b = listener(AF_INET, SOCK_STREAM, "127.0.0.3", 8082);
  auto e = entry("127.0.0.3");
  e.ports = {{8081, 8081}};
  ASSERT_TRUE(progs_->allow(e));
  EXPECT_EQ(in_sandbox([] { return try_connect(AF_INET, SOCK_STREAM, "127.0.0.3", 8081); }), 0);
  EXPECT_EQ(in_sandbox([] { return try_connect(AF_INET, SOCK_STREAM, "127.0.0.3", 8082); }), EPERM);
  EXPECT_EQ(in_sandbox([] { return try_connect(AF_INET, SOCK_DGRAM, "127.0.0.3", 8082); }), EPERM);
}

TEST_F(EgressBpf, DnsToAnyAddressGoesToTheFilter) {
  auto udp = listener(AF_INET, SOCK_DGRAM, "127.0.0.53", 5353);
  auto tcp = listener(AF_INET, SOCK_STREAM, "127.0.0.53", 5353);
  // Unconnected UDP (sendmsg), connected UDP and TCP to a resolver that is not the filter.
  EXPECT_EQ(in_sandbox([] {
              int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
              sockaddr_in sa{};
              sa.sin_family = AF_INET;
              sa.sin_port = htons(53);
              inet_pton(AF_INET, "127.0.0.9", &sa.sin_addr);
              return ::sendto(fd, "q1", 2, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 2 ? 0 : errno;
            }),
            0);
  EXPECT_EQ(in_sandbox([] {
              int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
              sockaddr_in sa{};
              sa.sin_family = AF_INET;
              sa.sin_port = htons(53);
              inet_pton(AF_INET, "127.0.0.10", &sa.sin_addr);
              if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return errno;
              return ::send(fd, "q2", 2, 0) == 2 ? 0 : errno;
            }),
            0);
  char buf[8] = {};
  EXPECT_EQ(::recv(udp.get(), buf, sizeof buf, MSG_DONTWAIT), 2);
  EXPECT_EQ(std::string(buf, 2), "q1");
  EXPECT_EQ(::recv(udp.get(), buf, sizeof buf, MSG_DONTWAIT), 2);
  EXPECT_EQ(std::string(buf, 2), "q2");
  EXPECT_EQ(in_sandbox([] { return try_connect(AF_INET, SOCK_STREAM, "127.0.0.11", 53); }), 0);
  UniqueFd accepted(::accept4(tcp.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  EXPECT_TRUE(accepted);
  // Other UDP is denied unless allowed.
  EXPECT_EQ(in_sandbox([] {
              int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
              sockaddr_in sa{};
              sa.sin_family = AF_INET;
              sa.sin_port = htons(443);
              inet_pton(AF_INET, "127.0.0.12", &sa.sin_addr);
              return ::sendto(fd, "quic", 4, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 4 ? 0 : errno;
            }),
            EPERM);
}

TEST_F(EgressBpf, RawAndPacketSocketsAreRefused) {
  EXPECT_EQ(in_sandbox([] { return ::socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) < 0 ? errno : 0; }), EPERM);
  EXPECT_EQ(in_sandbox([] { return ::socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6) < 0 ? errno : 0; }), EPERM);
  // (Packet sockets never reach cgroup/sock_create, which sees inet sockets only; sandboxes
  // cannot make them because they lack CAP_NET_RAW.)
  EXPECT_EQ(in_sandbox([] { return ::socket(AF_INET, SOCK_STREAM, 0) < 0 ? errno : 0; }), 0);
}

TEST_F(EgressBpf, Ipv6AndMappedIpv6) {
  auto srv6 = listener(AF_INET6, SOCK_STREAM, "::1", 8083);
  auto srv4 = listener(AF_INET, SOCK_STREAM, "127.0.0.2", 8084);
  EXPECT_EQ(in_sandbox([] { return try_connect(AF_INET6, SOCK_STREAM, "::1", 8083); }), EPERM);
  ASSERT_TRUE(progs_->allow(entry("::1", AF_INET6, 128)));
  EXPECT_EQ(in_sandbox([] { return try_connect(AF_INET6, SOCK_STREAM, "::1", 8083); }), 0);
  // ::ffff:127.0.0.2 is 127.0.0.2: judged by the IPv4 allowlist.
  EXPECT_EQ(in_sandbox([] { return try_connect(AF_INET6, SOCK_STREAM, "::ffff:127.0.0.2", 8084); }), EPERM);
  ASSERT_TRUE(progs_->allow(entry("127.0.0.2")));
  EXPECT_EQ(in_sandbox([] { return try_connect(AF_INET6, SOCK_STREAM, "::ffff:127.0.0.2", 8084); }), 0);
}

TEST_F(EgressBpf, RedirectToTheProxyRecoversTheOriginalDestination) {
  auto proxy = listener(AF_INET, SOCK_STREAM, "127.0.0.54", 3128);
  auto e = entry("127.0.0.4");
  e.redirect = true;
  ASSERT_TRUE(progs_->allow(e));
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open((cgroup_ + "/cgroup.procs").c_str(), O_WRONLY);
    if (fd < 0 || ::write(fd, "0", 1) != 1) _exit(250);
    ::close(fd);
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(80);
    inet_pton(AF_INET, "127.0.0.4", &sa.sin_addr);
    if (::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) _exit(1);
    char c;
    (void)!::read(s, &c, 1);  // hold the connection until the test has looked
    _exit(0);
  }
  sockaddr_in peer{};
  socklen_t len = sizeof peer;
  UniqueFd conn(::accept4(proxy.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC));
  ASSERT_TRUE(conn);
  auto orig = progs_->original_destination(ntohs(peer.sin_port));
  ASSERT_TRUE(orig);
  EXPECT_EQ(orig->family, AF_INET);
  EXPECT_EQ(orig->port, 80);
  EXPECT_EQ(orig->addr, v4("127.0.0.4"));
  conn.reset();  // the client sees end of file and exits
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(EgressBpf, DenialsAreEventsWithTheProcess) {
  pid_t child = 0;
  int rc = in_sandbox([&] {
    child = ::getpid();
    return try_connect(AF_INET, SOCK_STREAM, "127.0.0.7", 9999);
  });
  EXPECT_EQ(rc, EPERM);
  std::vector<km::bpf::EgressEvent> events;
  auto deliver = [&](const km::bpf::EgressEvent& e) { events.push_back(e); };
  for (int i = 0; i < 10 && events.empty(); ++i) ASSERT_TRUE(progs_->poll_events(50, deliver));
  ASSERT_FALSE(events.empty());
  const auto& e = events.back();
  EXPECT_EQ(e.type, km::bpf::EgressEvent::kDenyConnect);
  EXPECT_EQ(e.family, AF_INET);
  EXPECT_EQ(e.port, 9999);
  EXPECT_EQ(e.addr, v4("127.0.0.7"));
  EXPECT_NE(e.pid, 0u);
  EXPECT_FALSE(e.comm.empty());
  EXPECT_EQ(progs_->lost(), 0u);
}

}  // namespace
