// TLS capture on a throwaway cgroup: real clients (curl, Python, node, git) talk HTTPS to a
// local server; what they send and receive through OpenSSL or GnuTLS is recorded for the
// watched cgroup only, with the byte counts the calls really moved and the socket's peer.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "km/bpf/tls_capture.h"
#include "km/bpf/exec_audit.h"  // cgroup_id
#include "km/sys/cgroup.h"

namespace {

using km::bpf::TlsCapture;
using km::bpf::TlsDirection;
using km::bpf::TlsRecord;
using Clock = std::chrono::steady_clock;

// An HTTPS/1.1 server with a response head of its own making, so the test knows every byte:
// /large/N answers N bytes; anything else answers "received=<bytes of the request>\n".
constexpr const char* kServer = R"PY(
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
ctx.set_alpn_protocols(["http/1.1"])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print(srv.getsockname()[1], flush=True)
def serve(conn):
    try:
        s = ctx.wrap_socket(conn, server_side=True)
        f = s.makefile("rb")
        while True:
            line = f.readline()
            if not line:
                return
            received = len(line)
            target = line.split(b" ")[1].decode()
            length = 0
            while True:
                h = f.readline()
                received += len(h)
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode().partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v)
            body = f.read(length) if length else b""
            received += len(body)
            if target.startswith("/large/"):
                out = b"x" * int(target.split("/")[2])
            else:
                out = ("received=%d\n" % received).encode()
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
    except Exception:
        pass
    finally:
        conn.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
)PY";

constexpr const char* kPythonClient = R"PY(
import ssl, sys, urllib.request
data = b"y" * int(sys.argv[2]) if len(sys.argv) > 2 else None
req = urllib.request.Request(sys.argv[1], data=data)
with urllib.request.urlopen(req, context=ssl._create_unverified_context()) as r:
    body = r.read()
sys.stdout.write("%d %d\n" % (r.status, len(body)))
sys.stdout.write(body[:64].decode(errors="replace"))
)PY";

// Two connections open at once; each request on its own. Prints each socket's local port and fd.
constexpr const char* kTwoConnections = R"PY(
import http.client, ssl, sys
ctx = ssl._create_unverified_context()
port = int(sys.argv[1])
a = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
b = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
a.connect()
b.connect()
a.request("GET", "/conn/a")
b.request("GET", "/conn/b")
rb = b.getresponse()
rb.read()
ra = a.getresponse()
ra.read()
print(a.sock.getsockname()[1], b.sock.getsockname()[1], a.sock.fileno(), b.sock.fileno())
)PY";

constexpr const char* kNodeClient = R"JS(
const https = require('https');
https.get({host: '127.0.0.1', port: +process.argv[1], path: process.argv[2], rejectUnauthorized: false}, (r) => {
  let body = '';
  r.on('data', (d) => { body += d; });
  r.on('end', () => { process.stdout.write(r.statusCode + ' ' + body); });
});
)JS";

std::string find_program(const std::string& name) {
  for (const char* dir : {"/usr/bin", "/bin", "/usr/local/bin"}) {
    std::string p = std::string(dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

// The exact response the server sends with `body`.
size_t response_size(size_t body) { return std::string("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body) + "\r\n\r\n").size() + body; }

struct Ran {
  pid_t pid = -1;
  int status = -1;
  std::string out;
};

class TlsCaptureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "privileged test: needs root (BPF, uprobes, cgroups)";
    curl_ = find_program("curl");
    python_ = find_program("python3");
    std::string openssl = find_program("openssl");
    if (curl_.empty() || python_.empty() || openssl.empty()) GTEST_SKIP() << "needs curl, python3 and openssl in /usr/bin";
    if (auto s = km::bpf::probe_uprobe_support(); !s) GTEST_SKIP() << s.error().to_string();
    char tmpl[] = "/tmp/km-tls-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::string gen = openssl + " req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 -keyout '" +
                      dir_ + "/key.pem' -out '" + dir_ + "/cert.pem' >/dev/null 2>&1";
    ASSERT_EQ(std::system(gen.c_str()), 0) << gen;
    start_server();

    auto layout = km::sys::CgroupLayout::discover();
    ASSERT_TRUE(layout) << layout.error().to_string();
    layout->name = "km-tls-test-" + std::to_string(::getpid());
    cgroup_ = layout->v2_base();
    ASSERT_EQ(::mkdir(cgroup_.c_str(), 0755), 0) << cgroup_;
    auto id = km::bpf::cgroup_id(cgroup_);
    ASSERT_TRUE(id);
    cgid_ = *id;
  }

  void TearDown() override {
    capture_.reset();
    if (server_ > 0) {
      ::kill(server_, SIGKILL);
      ::waitpid(server_, nullptr, 0);
    }
    if (!cgroup_.empty()) {
      EXPECT_EQ(::rmdir(cgroup_.c_str()), 0) << cgroup_ << " still has processes";
    }
    if (!dir_.empty()) std::system(("rm -rf '" + dir_ + "'").c_str());
  }

  void start_server() {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    server_ = ::fork();
    if (server_ == 0) {
      ::dup2(p[1], 1);
      execl(python_.c_str(), python_.c_str(), "-c", kServer, (dir_ + "/cert.pem").c_str(), (dir_ + "/key.pem").c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    ::close(p[1]);
    std::string line = read_all(p[0], Clock::now() + std::chrono::seconds(20), true);
    ::close(p[0]);
    port_ = std::atoi(line.c_str());
    ASSERT_GT(port_, 0) << "the test server did not start";
  }

  // Reads `fd` to EOF (or to the first newline) before `deadline`.
  static std::string read_all(int fd, Clock::time_point deadline, bool one_line = false) {
    std::string out;
    char buf[4096];
    while (Clock::now() < deadline) {
      struct pollfd pfd = {fd, POLLIN, 0};
      int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (::poll(&pfd, 1, std::max(ms, 0)) <= 0) break;
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
      if (one_line && out.find('\n') != std::string::npos) break;
    }
    return out;
  }

  // Runs argv, in the test cgroup or not, with its stdout captured; proxies are off.
  Ran run(const std::vector<std::string>& argv, bool in_cgroup, const std::vector<std::string>& env = {},
          bool expect_success = true) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    Ran r;
    r.pid = ::fork();
    if (r.pid == 0) {
      if (in_cgroup) {
        int fd = ::open((cgroup_ + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ::write(fd, "0", 1) != 1) _exit(120);
        ::close(fd);
      }
      for (const char* v : {"http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) ::unsetenv(v);
      for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
      ::dup2(p[1], 1);
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 2);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      _exit(127);
    }
    ::close(p[1]);
    r.out = read_all(p[0], Clock::now() + std::chrono::seconds(60));
    ::close(p[0]);
    if (::waitpid(r.pid, &r.status, WNOHANG) == 0) {
      ::kill(r.pid, SIGKILL);
      ::waitpid(r.pid, &r.status, 0);
    }
    if (expect_success) {
      EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << argv[0] << " " << argv.back() << ": " << r.status;
    }
    return r;
  }

  Ran curl(const std::string& path, bool in_cgroup, const std::vector<std::string>& env = {}) {
    return run({curl_, "-sk", "--noproxy", "*", "https://127.0.0.1:" + std::to_string(port_) + path}, in_cgroup, env);
  }
  Ran python(const std::string& path, size_t upload = 0) {
    std::vector<std::string> argv = {python_, "-c", kPythonClient, "https://127.0.0.1:" + std::to_string(port_) + path};
    if (upload) argv.push_back(std::to_string(upload));
    return run(argv, true);
  }

  void open_capture(const std::vector<std::string>& libraries = {}, bool payloads = false) {
    TlsCapture::Options o;
    o.libraries = libraries;
    auto c = TlsCapture::open(o);
    ASSERT_TRUE(c) << c.error().to_string();
    capture_ = std::move(*c);
    ASSERT_TRUE(capture_->watch(cgid_, 7, payloads));
  }

  // Records until `done` holds for what was collected (or `wait` passed), then what follows
  // within a quiet 300 ms (records of other processes would come in that window too).
  std::vector<TlsRecord> collect(const std::function<bool(const std::vector<TlsRecord>&)>& done,
                                 std::chrono::milliseconds wait = std::chrono::seconds(10)) {
    std::vector<TlsRecord> out;
    auto deliver = [&](const TlsRecord& r) { out.push_back(r); };
    auto deadline = Clock::now() + wait;
    while (!done(out) && Clock::now() < deadline) {
      auto n = capture_->poll(100, deliver);
      EXPECT_TRUE(n);
    }
    for (;;) {
      auto n = capture_->poll(300, deliver);
      if (!n || *n == 0) break;
    }
    return out;
  }

  static std::vector<TlsRecord> of_pid(const std::vector<TlsRecord>& rs, pid_t pid) {
    std::vector<TlsRecord> out;
    for (const auto& r : rs) {
      if (r.pid == static_cast<uint32_t>(pid)) out.push_back(r);
    }
    return out;
  }
  static uint64_t sum(const std::vector<TlsRecord>& rs, uint64_t conn, TlsDirection d) {
    uint64_t n = 0;
    for (const auto& r : rs) {
      if (r.conn == conn && r.direction == d) n += r.bytes;
    }
    return n;
  }
  static const TlsRecord* request(const std::vector<TlsRecord>& rs, const std::string& path) {
    for (const auto& r : rs) {
      if (r.direction == TlsDirection::kWrite && r.http.path == path) return &r;
    }
    return nullptr;
  }
  static const TlsRecord* response(const std::vector<TlsRecord>& rs, uint64_t conn) {
    for (const auto& r : rs) {
      if (r.direction == TlsDirection::kRead && r.conn == conn && r.http.status != 0) return &r;
    }
    return nullptr;
  }
  std::string authority() const { return "127.0.0.1:" + std::to_string(port_); }

  std::string curl_, python_, dir_, cgroup_;
  uint64_t cgid_ = 0;
  pid_t server_ = -1;
  int port_ = 0;
  std::unique_ptr<TlsCapture> capture_;
};

TEST_F(TlsCaptureTest, CurlInTheCgroupIsRecordedAndCurlOutsideIsNot) {
  auto lib = km::bpf::default_libssl();
  ASSERT_TRUE(lib) << lib.error().to_string();
  // The same file by two names (the usrmerge /lib link): probed once, so counted once.
  open_capture({*lib, "/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib/x86_64-linux-gnu/libssl.so.3"});
  EXPECT_EQ(capture_->libraries().size(), 1u);

  Ran in = curl("/some/path?q=1", true);
  Ran out = curl("/outside/path", false);
  ASSERT_EQ(in.out.rfind("received=", 0), 0u) << in.out;
  uint64_t request_bytes = std::strtoull(in.out.c_str() + 9, nullptr, 10);

  auto rs = collect([&](const std::vector<TlsRecord>& got) {
    auto* req = request(got, "/some/path?q=1");
    return req && response(got, req->conn);
  });
  for (const auto& r : rs) {
    EXPECT_EQ(r.cgroup_id, cgid_);
    EXPECT_EQ(r.sandbox, 7u);
    EXPECT_NE(r.pid, static_cast<uint32_t>(out.pid)) << "a process outside the cgroup was recorded";
    EXPECT_NE(r.http.path, "/outside/path");
    EXPECT_FALSE(r.payload) << "plaintext left the capture without capture_payloads";
  }
  auto mine = of_pid(rs, in.pid);
  const TlsRecord* req = request(mine, "/some/path?q=1");
  ASSERT_NE(req, nullptr) << "no request record from curl (" << rs.size() << " records)";
  EXPECT_EQ(req->comm, "curl");
  EXPECT_EQ(req->function, "SSL_write");
  EXPECT_EQ(req->http.method, "GET");
  EXPECT_EQ(req->http.host, authority());
  EXPECT_EQ(req->http.protocol, "HTTP/1.1");
  EXPECT_TRUE(req->head);
  EXPECT_GE(req->fd, 0);
  ASSERT_TRUE(req->remote);
  EXPECT_EQ(req->remote->to_string(), authority());
  EXPECT_NE(req->local_port, 0);
  // Every byte the server says it received, no more (nothing counted twice).
  EXPECT_EQ(sum(mine, req->conn, TlsDirection::kWrite), request_bytes);

  const TlsRecord* resp = response(mine, req->conn);
  ASSERT_NE(resp, nullptr);
  EXPECT_EQ(resp->http.status, 200);
  EXPECT_EQ(resp->function, "SSL_read");
  ASSERT_TRUE(resp->remote);
  EXPECT_EQ(resp->remote->to_string(), authority());
  EXPECT_EQ(sum(mine, req->conn, TlsDirection::kRead), response_size(in.out.size()));
  EXPECT_EQ(capture_->lost(), 0u);
  // The connection ends with one close record, when curl frees it at exit.
  auto closes = std::count_if(mine.begin(), mine.end(), [&](const TlsRecord& r) { return r.closed && r.conn == req->conn; });
  EXPECT_EQ(closes, 1);

  // Unwatched: nothing more (the client has exited; its records would be queued by now).
  ASSERT_TRUE(capture_->unwatch(cgid_));
  curl("/after/unwatch", true);
  for (const auto& r : collect([](const std::vector<TlsRecord>&) { return false; }, std::chrono::milliseconds(500))) {
    EXPECT_NE(r.http.path, "/after/unwatch");
  }
}

TEST_F(TlsCaptureTest, PythonExVariantsReportExactCountsForLargeTransfers) {
  open_capture();
  // 200000 bytes down: many SSL_read_ex calls, full 16 KiB records among them.
  Ran down = python("/large/200000");
  EXPECT_EQ(down.out.substr(0, down.out.find('\n')), "200 200000");
  auto rs = of_pid(collect([&](const std::vector<TlsRecord>& got) {
                     auto* req = request(got, "/large/200000");
                     return req && sum(got, req->conn, TlsDirection::kRead) >= response_size(200000);
                   }),
                   down.pid);
  const TlsRecord* req = request(rs, "/large/200000");
  ASSERT_NE(req, nullptr);
  EXPECT_EQ(req->function, "SSL_write_ex");
  EXPECT_EQ(req->comm, "python3");
  ASSERT_TRUE(req->remote);
  EXPECT_EQ(req->remote->to_string(), authority());
  EXPECT_EQ(req->http.method, "GET");
  EXPECT_EQ(req->http.host, authority());
  const TlsRecord* resp = response(rs, req->conn);
  ASSERT_NE(resp, nullptr);
  EXPECT_EQ(resp->http.status, 200);
  EXPECT_EQ(resp->function, "SSL_read_ex");
  EXPECT_EQ(sum(rs, req->conn, TlsDirection::kRead), response_size(200000));
  uint64_t largest = 0;
  for (const auto& r : rs) {
    if (r.direction == TlsDirection::kRead) largest = std::max(largest, r.bytes);
  }
  EXPECT_EQ(largest, 16384u) << "a full TLS record read with SSL_read_ex";

  // 100000 bytes up in one sendall: one SSL_write_ex call reports all of it.
  Ran up = python("/upload", 100000);
  ASSERT_EQ(up.out.rfind("200 ", 0), 0u) << up.out;
  uint64_t received = std::strtoull(up.out.c_str() + up.out.find("received=") + 9, nullptr, 10);
  auto us = of_pid(collect([&](const std::vector<TlsRecord>& got) {
                     auto* r = request(got, "/upload");
                     return r && response(got, r->conn);
                   }),
                   up.pid);
  const TlsRecord* post = request(us, "/upload");
  ASSERT_NE(post, nullptr);
  EXPECT_EQ(post->http.method, "POST");
  EXPECT_EQ(sum(us, post->conn, TlsDirection::kWrite), received);
  uint64_t biggest_write = 0;
  for (const auto& r : us) {
    if (r.direction == TlsDirection::kWrite) biggest_write = std::max(biggest_write, r.bytes);
  }
  EXPECT_GE(biggest_write, 100000u) << "a write over 64 KiB counted whole, not modulo a buffer size";
  EXPECT_EQ(capture_->lost(), 0u);
}

TEST_F(TlsCaptureTest, TwoConnectionsInOneProcessKeepTheirOwnSockets) {
  open_capture();
  Ran in = run({python_, "-c", kTwoConnections, std::to_string(port_)}, true);
  unsigned port_a = 0, port_b = 0;
  int fd_a = -1, fd_b = -1;
  ASSERT_EQ(std::sscanf(in.out.c_str(), "%u %u %d %d", &port_a, &port_b, &fd_a, &fd_b), 4) << in.out;
  auto rs = of_pid(collect([&](const std::vector<TlsRecord>& got) {
                     auto* a = request(got, "/conn/a");
                     auto* b = request(got, "/conn/b");
                     return a && b && response(got, a->conn) && response(got, b->conn);
                   }),
                   in.pid);
  const TlsRecord* a = request(rs, "/conn/a");
  const TlsRecord* b = request(rs, "/conn/b");
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->conn, b->conn);
  for (const auto& r : rs) {
    if (r.conn != a->conn && r.conn != b->conn) continue;
    bool is_a = r.conn == a->conn;
    EXPECT_EQ(r.local_port, is_a ? port_a : port_b) << r.function << " on connection " << (is_a ? "a" : "b");
    EXPECT_EQ(r.fd, is_a ? fd_a : fd_b);
    ASSERT_TRUE(r.remote);
    EXPECT_EQ(r.remote->to_string(), authority());
  }
}

TEST_F(TlsCaptureTest, PayloadsOnlyForSandboxesThatAskForThem) {
  open_capture({}, true);
  Ran in = python("/large/50000");
  auto rs = of_pid(collect([&](const std::vector<TlsRecord>& got) {
                     auto* req = request(got, "/large/50000");
                     return req && sum(got, req->conn, TlsDirection::kRead) >= response_size(50000);
                   }),
                   in.pid);
  const TlsRecord* req = request(rs, "/large/50000");
  ASSERT_NE(req, nullptr);
  ASSERT_TRUE(req->payload);
  EXPECT_EQ(req->payload->rfind("GET /large/50000 HTTP/1.1\r\n", 0), 0u);
  for (const auto& r : rs) {
    if (r.closed) continue;  // the connection's end carries no plaintext
    ASSERT_TRUE(r.payload) << "every call carries its prefix with capture_payloads";
    EXPECT_EQ(r.payload->size(), std::min<uint64_t>(r.bytes, 4096));
    if (r.direction == TlsDirection::kRead && !r.head) {
      EXPECT_EQ(r.payload->find_first_not_of('x'), std::string::npos);
    }
  }

  // The same sandbox without payloads: heads are still parsed, nothing leaves.
  ASSERT_TRUE(capture_->watch(cgid_, 7, false));
  Ran again = python("/some/other");
  auto rs2 = of_pid(collect([&](const std::vector<TlsRecord>& got) {
                      auto* r = request(got, "/some/other");
                      return r && response(got, r->conn);
                    }),
                    again.pid);
  ASSERT_NE(request(rs2, "/some/other"), nullptr);
  for (const auto& r : rs2) EXPECT_FALSE(r.payload);
}

TEST_F(TlsCaptureTest, NodeIsSeenThroughItsBundledOpenSsl) {
  std::string node = find_program("node");
  if (node.empty()) GTEST_SKIP() << "node is not installed";
  auto stacks = km::bpf::inspect_executable_tls(node);
  ASSERT_TRUE(stacks) << stacks.error().to_string();
  bool bundled = false;
  for (const auto& f : stacks->findings) bundled = bundled || f.stack == km::bpf::TlsStack::kOpenSslBundled;
  if (!bundled) GTEST_SKIP() << node << " links OpenSSL dynamically or has no symbols; covered by the libssl tests";
  auto lib = km::bpf::default_libssl();
  ASSERT_TRUE(lib);
  open_capture({*lib, node});
  Ran in = run({node, "-e", kNodeClient, std::to_string(port_), "/from/node"}, true);
  ASSERT_EQ(in.out.rfind("200 received=", 0), 0u) << in.out;
  std::string body = in.out.substr(4);
  uint64_t received = std::strtoull(body.c_str() + 9, nullptr, 10);
  auto rs = of_pid(collect([&](const std::vector<TlsRecord>& got) {
                     auto* r = request(got, "/from/node");
                     return r && response(got, r->conn);
                   }),
                   in.pid);
  const TlsRecord* req = request(rs, "/from/node");
  ASSERT_NE(req, nullptr) << rs.size() << " records from node";
  EXPECT_EQ(req->comm, "node");
  EXPECT_EQ(req->http.method, "GET");
  EXPECT_EQ(req->http.host, authority());
  EXPECT_EQ(sum(rs, req->conn, TlsDirection::kWrite), received);
  const TlsRecord* resp = response(rs, req->conn);
  ASSERT_NE(resp, nullptr);
  EXPECT_EQ(resp->http.status, 200);
  EXPECT_EQ(sum(rs, req->conn, TlsDirection::kRead), response_size(body.size()));
  // node encrypts into memory BIOs and writes the socket itself later: no socket is seen
  // inside SSL_*, so these records have no fd or remote (docs/tls-capture.md).
}

TEST_F(TlsCaptureTest, GitOverHttpsIsSeenThroughGnuTls) {
  std::string git = find_program("git");
  auto gnutls = km::bpf::resolve_library("libgnutls.so.30");
  if (git.empty() || !gnutls) GTEST_SKIP() << "needs git and libgnutls.so.30";
  auto lib = km::bpf::default_libssl();
  ASSERT_TRUE(lib);
  open_capture({*lib, *gnutls});
  // The server answers with a body git does not understand: git fails after the exchange.
  Ran in = run({git, "ls-remote", "https://127.0.0.1:" + std::to_string(port_) + "/repo.git"}, true,
               {"GIT_SSL_NO_VERIFY=1", "GIT_TERMINAL_PROMPT=0", "HOME=" + dir_}, /*expect_success=*/false);
  const std::string path = "/repo.git/info/refs?service=git-upload-pack";
  auto rs = collect([&](const std::vector<TlsRecord>& got) {
    auto* r = request(got, path);
    return r && response(got, r->conn);
  });
  const TlsRecord* req = request(rs, path);
  ASSERT_NE(req, nullptr) << rs.size() << " records";
  EXPECT_EQ(req->comm, "git-remote-http");  // git-remote-https, cut to 15 characters
  EXPECT_EQ(req->function, "gnutls_record_send");
  EXPECT_EQ(req->http.method, "GET");
  EXPECT_EQ(req->http.host, authority());
  ASSERT_TRUE(req->remote);
  EXPECT_EQ(req->remote->to_string(), authority());
  const TlsRecord* resp = response(rs, req->conn);
  ASSERT_NE(resp, nullptr);
  EXPECT_EQ(resp->function, "gnutls_record_recv");
  EXPECT_EQ(resp->http.status, 200);
  // The server's body is "received=<request bytes>\n": both directions' sums agree with it.
  uint64_t sent = sum(rs, req->conn, TlsDirection::kWrite);
  EXPECT_EQ(sum(rs, req->conn, TlsDirection::kRead), response_size(("received=" + std::to_string(sent) + "\n").size()));
}

TEST_F(TlsCaptureTest, APrivateCopyIsTheOnlyFileProbed) {
  auto lib = km::bpf::default_libssl();
  ASSERT_TRUE(lib);
  auto copy = km::bpf::private_library_copy(*lib, dir_ + "/staged");
  ASSERT_TRUE(copy) << copy.error().to_string();
  auto again = km::bpf::private_library_copy(*lib, dir_ + "/staged");
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *copy) << "an unchanged library is copied once";
  EXPECT_FALSE(km::bpf::file_id(*copy).value() == km::bpf::file_id(*lib).value());
  // What a sandbox's bind mount does, by the loader's search path here.
  ASSERT_EQ(::mkdir((dir_ + "/ld").c_str(), 0755), 0);
  ASSERT_EQ(::symlink(copy->c_str(), (dir_ + "/ld/libssl.so.3").c_str()), 0);
  open_capture({*copy});

  Ran through_copy = curl("/through/copy", true, {"LD_LIBRARY_PATH=" + dir_ + "/ld"});
  Ran through_host = curl("/through/host", true);
  auto rs = collect([&](const std::vector<TlsRecord>& got) {
    auto* r = request(got, "/through/copy");
    return r && response(got, r->conn);
  });
  ASSERT_NE(request(of_pid(rs, through_copy.pid), "/through/copy"), nullptr);
  EXPECT_TRUE(of_pid(rs, through_host.pid).empty()) << "the host's libssl is not probed";
}

TEST_F(TlsCaptureTest, RefusesALibraryWithoutOpenSsl) {
  auto libz = km::bpf::resolve_library("libz.so.1");
  if (!libz) GTEST_SKIP() << "no libz.so.1 to try";
  TlsCapture::Options o;
  o.libraries = {*libz};
  auto c = TlsCapture::open(o);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().to_string().find("defines no SSL_read/SSL_write"), std::string::npos) << c.error().to_string();
}

// Which stacks the host's clients use, and what the capture can see of them.
TEST(TlsStacks, HostClients) {
  auto lib = km::bpf::default_libssl();
  if (!lib) GTEST_SKIP() << lib.error().to_string();
  auto libssl = km::bpf::file_id(*lib);
  ASSERT_TRUE(libssl);
  auto has = [](const km::bpf::TlsStackReport& r, km::bpf::TlsStack s) {
    for (const auto& f : r.findings) {
      if (f.stack == s) return &f;
    }
    return static_cast<const km::bpf::TlsStackFinding*>(nullptr);
  };
  // The profile's "openssl": the host's libssl, and node when it bundles OpenSSL.
  auto targets = km::bpf::tls_targets_for_profile({"openssl"});
  ASSERT_TRUE(targets) << targets.error().to_string();
  ASSERT_FALSE(targets->objects.empty());
  EXPECT_EQ(km::bpf::file_id(targets->objects[0]).value(), *libssl);
  EXPECT_TRUE(targets->unsupported.empty());
  if (std::string node = find_program("node"); !node.empty()) {
    auto r = km::bpf::inspect_executable_tls(node);
    ASSERT_TRUE(r) << r.error().to_string();
    if (has(*r, km::bpf::TlsStack::kOpenSslBundled)) {
      EXPECT_EQ(targets->objects.size(), 2u) << "node bundles OpenSSL with its symbols: a target of its own";
      EXPECT_TRUE(r->any_supported());
    } else {
      EXPECT_EQ(targets->objects.size(), 1u);
    }
  }
  if (std::string curl = find_program("curl"); !curl.empty()) {
    auto r = km::bpf::inspect_executable_tls(curl);
    ASSERT_TRUE(r) << r.error().to_string();
    auto* f = has(*r, km::bpf::TlsStack::kOpenSsl);
    ASSERT_NE(f, nullptr) << "curl links libssl through libcurl";
    EXPECT_TRUE(f->supported);
    EXPECT_EQ(f->id, *libssl);
  }
  if (::access("/usr/lib/git-core/git-remote-https", X_OK) == 0) {
    auto r = km::bpf::inspect_executable_tls("/usr/lib/git-core/git-remote-https");
    ASSERT_TRUE(r) << r.error().to_string();
    if (auto* f = has(*r, km::bpf::TlsStack::kGnuTls)) {  // Debian's: through libcurl-gnutls
      EXPECT_TRUE(f->supported);
      EXPECT_EQ(f->id, km::bpf::file_id(f->object).value());
    }
  }
  // A Go program's TLS cannot be seen, and says why.
  auto go = km::bpf::tls_targets_for_profile({"go"});
  ASSERT_TRUE(go);
  ASSERT_EQ(go->unsupported.size(), 1u);
  // A running Python that imported ssl maps the very libssl the capture probes (loaded with
  // dlopen, so only the process form sees it).
  if (std::string python = find_program("python3"); !python.empty()) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(p[1], 1);
      execl(python.c_str(), python.c_str(), "-c", "import ssl, sys, time; print('ready', flush=True); time.sleep(60)",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    ::close(p[1]);
    char buf[16] = {};
    ASSERT_GT(::read(p[0], buf, sizeof buf), 0);
    ::close(p[0]);
    auto r = km::bpf::inspect_process_tls(pid);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ASSERT_TRUE(r) << r.error().to_string();
    auto* f = has(*r, km::bpf::TlsStack::kOpenSsl);
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->id, *libssl) << f->object;
    auto exe = km::bpf::inspect_executable_tls(python);
    ASSERT_TRUE(exe);
    EXPECT_EQ(has(*exe, km::bpf::TlsStack::kOpenSsl), nullptr) << "the executable itself does not link libssl";
  }
}

}  // namespace
