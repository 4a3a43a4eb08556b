// TLS observation end to end (profile observability.tlsCapture; docs/tls-capture.md): kmd in
// the test world's namespace, a sandbox whose profile asks for TLS capture, real clients (curl,
// Python's urllib) making HTTPS requests to the world through the sandbox's enforcer, and the
// sandbox's audit trail holding what they sent and received (method, path, Host, status), joined
// with the enforcer's connect events by the client's source port. Programs whose TLS km cannot
// see (a statically linked, stripped OpenSSL built here) are reported, and the capture is gone
// once the last sandbox using it is.
#include <gtest/gtest.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
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
  name: tls
  prefix: tls
extends: quickstart
spec:
  network:
    egress:
      allowedDNSSuffixes: [".allowed.test"]
  observability:
    tlsCapture:
      enabled: true
      libraries: [openssl]
)";

class Tls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    auto w = TestWorld::create();
    if (!w) {
      setup_error_ = "test world: " + w.error().to_string();
      return;
    }
    world_ = w->release();
    char tmpl[] = "/tmp/km-tls-e2e-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    ::chmod(root_.c_str(), 0711);
    socket_ = root_ + "/run/kmd.sock";
    cgroup_ = "km-tls-e2e-" + std::to_string(::getpid());
    std::ofstream(root_ + "/kmd.yaml") << "upstreamDNS: [\"" << world_->resolver() << "\"]\n";
    std::ofstream(root_ + "/tls.yaml") << kProfile;
    if (auto started = start_kmd(); !started.empty()) {
      setup_error_ = started;
      return;
    }
    auto r = km({"create", root_ + "/tls.yaml"});
    if (r.status != 0) {
      setup_error_ = "km create: " + r.err + km::read_file(root_ + "/kmd.log", 1 << 20).value_or("");
      return;
    }
    id_ = r.out.substr(0, r.out.find('\n'));
    // The test CA, so clients can verify the world's certificates.
    km({"exec", id_, "--", "sh", "-c", "cat > /workspace/ca.pem"}, km::read_file(world_->ca_bundle(), 1 << 20).value_or(""));
  }

  // Starts kmd in the world's kmd namespace; an error message, or "" once it answers.
  static std::string start_kmd() {
    auto pid = world_->spawn_in_kmd_netns({KMD_BIN, "--foreground", "--config", root_ + "/kmd.yaml", "--state-dir",
                                           root_ + "/state", "--runtime-dir", root_ + "/run", "--group", "",
                                           "--cgroup-name", cgroup_},
                                          {}, root_ + "/kmd.log");
    if (!pid) return "kmd: " + pid.error().to_string();
    kmd_pid_ = *pid;
    for (int i = 0; i < 500 && km({"list"}).status != 0; ++i) std::this_thread::sleep_for(10ms);
    return "";
  }

  static void TearDownTestSuite() {
    if (root_.empty()) return;
    if (kmd_pid_ > 0) {
      if (!id_.empty()) km({"destroy", id_});
      ::kill(kmd_pid_, SIGTERM);
      (void)world_->wait_exit(kmd_pid_, 10s);
    }
    delete world_;
    world_ = nullptr;
    std::system(("umount -l '" + root_ + "/run/bpf' 2>/dev/null; rm -rf '" + root_ + "'").c_str());
    std::system(("for i in $(seq 50); do rmdir /sys/fs/cgroup/*/" + cgroup_ + " 2>/dev/null; "
                 "ls -d /sys/fs/cgroup/*/" + cgroup_ + " >/dev/null 2>&1 || break; sleep 0.1; done").c_str());
  }

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "e2e test: kmd needs root";
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }

  static RunResult km(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), KM_BIN);
    return run(args, {{"KM_SOCKET", socket_}}, input);
  }
  static RunResult sh(const std::string& cmd) { return km({"exec", id_, "--", "sh", "-c", cmd}); }
  static std::string dump(const RunResult& r) { return "status " + std::to_string(r.status) + "\nout: " + r.out + "\nerr: " + r.err; }

  // The sandbox's trail as km logs -o json prints it.
  static std::vector<Json> logs(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"-o", "json", "logs", id_, "-n", "100000"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = km(args);
    std::vector<Json> out;
    std::istringstream in(r.out);
    std::string line;
    while (std::getline(in, line)) {
      Json e = Json::parse(line, nullptr, false);
      if (e.is_object()) out.push_back(std::move(e));
    }
    return out;
  }
  static std::vector<Json> wait_logs(const std::function<bool(const std::vector<Json>&)>& done, std::vector<std::string> extra = {}) {
    std::vector<Json> events;
    for (auto deadline = std::chrono::steady_clock::now() + 30s; std::chrono::steady_clock::now() < deadline;) {
      events = logs(extra);
      if (done(events)) break;
      std::this_thread::sleep_for(200ms);
    }
    return events;
  }
  static std::string kind(const Json& e) { return e["detail"].value("kind", e.value("type", std::string())); }
  // The tls head event of `comm` writing a request for `path`, if any.
  static std::optional<Json> request_of(const std::vector<Json>& all, const std::string& path) {
    for (const auto& e : all) {
      if (e["type"] == "http" && e["source"] == "tls" && kind(e) == "tls" && e["detail"].value("path", "") == path) return e;
    }
    return std::nullopt;
  }

  static inline TestWorld* world_ = nullptr;
  static inline std::string setup_error_, root_, socket_, cgroup_, id_;
  static inline pid_t kmd_pid_ = -1;
};

// Asserts the request and its response are in the trail, by the same process on the same
// connection, and joined with the enforcer's connect event by the client's source port.
void expect_observed(const std::vector<Json>& all, const Json& req, const std::string& host, const std::string& comm_prefix) {
  const Json& d = req["detail"];
  EXPECT_EQ(d["method"], "GET") << d.dump();
  EXPECT_EQ(d["host"], host) << d.dump();
  EXPECT_EQ(d["direction"], "write");
  EXPECT_EQ(d["protocol"], "HTTP/1.1");
  EXPECT_EQ(d.value("comm", "").rfind(comm_prefix, 0), 0u) << d.dump();
  EXPECT_FALSE(d.contains("payload")) << "capturePayloads is off";
  bool response = false;
  for (const auto& e : all) {
    const Json& r = e["detail"];
    if (e["source"] == "tls" && r.value("kind", "") == "tls" && r.value("direction", "") == "read" && r["pid"] == d["pid"] &&
        r["conn"] == d["conn"]) {
      EXPECT_EQ(r["status"], 200) << r.dump();
      response = true;
    }
  }
  EXPECT_TRUE(response) << "no response head on the request's connection";
  ASSERT_TRUE(d.contains("sport")) << "the connection's socket was not learnt: " << d.dump();
  bool joined = false;
  for (const auto& e : all) {
    const Json& c = e["detail"];
    if (e["source"] == "enforcer" && e["type"] == "net" && c.value("kind", "") == "connect" && c.value("sport", 0) == d["sport"] &&
        c.value("name", "") == host) {
      EXPECT_EQ(c["verdict"], "allow");
      joined = true;
    }
  }
  EXPECT_TRUE(joined) << "no enforcer connect event with sport " << d["sport"];
}

TEST_F(Tls, CurlRequestIsInTheTrailJoinedWithTheProxy) {
  auto r = sh("curl -sS -m 10 --cacert /workspace/ca.pem -o /dev/null -w '%{http_code}' https://allowed.test/some/path");
  ASSERT_EQ(r.status, 0) << dump(r);
  EXPECT_EQ(r.out, "200");
  auto all = wait_logs([](const std::vector<Json>& a) {
    auto req = request_of(a, "/some/path");
    if (!req) return false;
    // Its connection's summary arrives when curl frees it (at exit).
    return std::any_of(a.begin(), a.end(), [&](const Json& e) {
      return kind(e) == "tls-conn" && e["detail"]["conn"] == (*req)["detail"]["conn"] && e["detail"]["pid"] == (*req)["detail"]["pid"];
    });
  });
  auto req = request_of(all, "/some/path");
  ASSERT_TRUE(req) << "no tls event for the request; kmd log:\n" << km::read_file(root_ + "/kmd.log", 1 << 20).value_or("");
  expect_observed(all, *req, "allowed.test", "curl");
  for (const auto& e : all) {
    if (kind(e) != "tls-conn" || e["detail"]["conn"] != (*req)["detail"]["conn"] || e["detail"]["pid"] != (*req)["detail"]["pid"]) continue;
    const Json& s = e["detail"];
    EXPECT_EQ(s["end"], "freed");
    EXPECT_EQ(s["requests"], 1);
    EXPECT_EQ(s["responses"], 1);
    EXPECT_GT(s["received"].get<uint64_t>(), 0u);
    EXPECT_GE(s["sent"].get<uint64_t>(), (*req)["detail"]["bytes"].get<uint64_t>());
  }
  // km logs --type http shows it as text.
  auto text = km({"logs", id_, "--type", "http", "-n", "1000"});
  EXPECT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("tls -> GET allowed.test/some/path"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("tls <- 200"), std::string::npos) << text.out;
}

TEST_F(Tls, PythonUrllibRequestIsInTheTrail) {
  auto r = sh("python3 -c \"import ssl, urllib.request; "
              "c = ssl.create_default_context(cafile='/workspace/ca.pem'); "
              "print(urllib.request.urlopen('https://api.allowed.test/py/path?x=1', context=c, timeout=10).status)\"");
  ASSERT_EQ(r.status, 0) << dump(r);
  EXPECT_EQ(r.out, "200\n");
  auto all = wait_logs([](const std::vector<Json>& a) { return request_of(a, "/py/path?x=1").has_value(); });
  auto req = request_of(all, "/py/path?x=1");
  ASSERT_TRUE(req) << "no tls event for python's request";
  expect_observed(all, *req, "api.allowed.test", "python");
}

TEST_F(Tls, SandboxMapsThePrivateCopyNotTheHostLibrary) {
  // The copy kmd made (under its state directory) is what the sandbox's processes map; the
  // host's own file has no probe on it.
  std::string copy;
  if (DIR* d = ::opendir((root_ + "/state/tls").c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (std::string(e->d_name).rfind("libssl.so.3.", 0) == 0) copy = root_ + "/state/tls/" + e->d_name;
    }
    ::closedir(d);
  }
  ASSERT_FALSE(copy.empty()) << "no private copy of libssl under " << root_ << "/state/tls";
  struct stat copy_st {};
  ASSERT_EQ(::stat(copy.c_str(), &copy_st), 0);
  auto r = sh("python3 -c \"import ssl\nfor l in open('/proc/self/maps'):\n  if 'libssl.so' in l: print(l.split()[4]); break\"");
  ASSERT_EQ(r.status, 0) << dump(r);
  EXPECT_EQ(r.out, std::to_string(copy_st.st_ino) + "\n");
  // Read-only even for root in the sandbox.
  auto w = km({"exec", "--root", id_, "--", "sh", "-c", "lib=$(python3 -c \"import ssl\nfor l in open('/proc/self/maps'):\n"
                                                          "  if 'libssl.so' in l: print(l.split()[5]); break\"); : >> $lib"});
  EXPECT_NE(w.status, 0) << dump(w);
  auto status = km({"status", id_});
  EXPECT_NE(status.out.find("tls capture"), std::string::npos) << status.out;
}

TEST_F(Tls, ProgramsWithStacksKmCannotSeeAreReported) {
  // A statically linked OpenSSL, stripped: no symbols to probe.
  std::string src = root_ + "/static_tls.c", bin = root_ + "/static_tls";
  std::ofstream(src) << "#include <openssl/ssl.h>\n#include <stdio.h>\n"
                        "int main(void) { SSL_CTX *c = SSL_CTX_new(TLS_client_method()); puts(OpenSSL_version(OPENSSL_VERSION));"
                        " SSL_CTX_free(c); return 0; }\n";
  auto cc = run({"/bin/sh", "-c", "cc -static -O1 -o '" + bin + "' '" + src + "' -lssl -lcrypto -lpthread 2>&1 && strip '" + bin + "'"}, {});
  if (cc.status != 0) GTEST_SKIP() << "cannot build a static OpenSSL program here: " << cc.out << cc.err;
  auto copied = km({"exec", id_, "--", "sh", "-c", "cat > /workspace/static_tls && chmod +x /workspace/static_tls"},
                   km::read_file(bin, 64 << 20).value_or(""));
  ASSERT_EQ(copied.status, 0) << dump(copied);
  auto r = sh("/workspace/static_tls");
  ASSERT_EQ(r.status, 0) << dump(r);
  EXPECT_NE(r.out.find("OpenSSL"), std::string::npos);
  auto again = sh("/workspace/static_tls");  // reported once per executable
  ASSERT_EQ(again.status, 0) << dump(again);
  auto is_report = [](const Json& e) {
    return e["type"] == "audit" && kind(e) == "tls-unobserved" && e["detail"].value("executable", "") == "/workspace/static_tls";
  };
  auto all = wait_logs([&](const std::vector<Json>& a) { return std::any_of(a.begin(), a.end(), is_report); }, {"--type", "audit"});
  ASSERT_EQ(std::count_if(all.begin(), all.end(), is_report), 1) << "one report per executable per sandbox";
  auto it = std::find_if(all.begin(), all.end(), is_report);
  const Json& d = (*it)["detail"];
  ASSERT_TRUE(d["stacks"].is_array() && !d["stacks"].empty()) << d.dump();
  EXPECT_EQ(d["stacks"][0]["stack"], "static-tls") << d.dump();
  EXPECT_FALSE(d["stacks"][0].value("reason", "").empty());
  auto text = km({"logs", id_, "--type", "audit", "-n", "1000"});
  EXPECT_NE(text.out.find("TLS not observed: /workspace/static_tls uses static-tls"), std::string::npos) << text.out;
  // Rewritten in place (the same inode, a new mtime), it is a new executable: looked at again.
  auto rewrite = sh("cp /workspace/static_tls /workspace/static_tls.new && sleep 0.01 && cat /workspace/static_tls.new > /workspace/static_tls && /workspace/static_tls");
  ASSERT_EQ(rewrite.status, 0) << dump(rewrite);
  all = wait_logs([&](const std::vector<Json>& a) { return std::count_if(a.begin(), a.end(), is_report) >= 2; }, {"--type", "audit"});
  EXPECT_EQ(std::count_if(all.begin(), all.end(), is_report), 2) << "the rewritten executable is reported again";
}

TEST_F(Tls, ObservedAgainAfterAKmdRestart) {
  // The sandbox outlives kmd; the capture (not pinned) is loaded again by the new kmd, on the
  // copy the sandbox maps even when the host's library changed meanwhile. That change is
  // played here without touching the host: the copy the sandbox maps is renamed while kmd is
  // down, so the new kmd's copy for the host's library is a new file the sandbox never saw.
  ::kill(kmd_pid_, SIGTERM);
  ASSERT_TRUE(world_->wait_exit(kmd_pid_, 10s));
  kmd_pid_ = -1;
  std::string dir = root_ + "/state/tls", mapped, moved;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (std::string(e->d_name).rfind("libssl.so.3.", 0) == 0) mapped = dir + "/" + e->d_name;
    }
    ::closedir(d);
  }
  ASSERT_FALSE(mapped.empty());
  moved = dir + "/libssl.so.3.before-the-upgrade";
  ASSERT_EQ(::rename(mapped.c_str(), moved.c_str()), 0);
  ASSERT_EQ(start_kmd(), "");
  auto r = sh("curl -sS -m 10 --cacert /workspace/ca.pem -o /dev/null -w '%{http_code}' https://allowed.test/after/restart");
  ASSERT_EQ(r.status, 0) << dump(r);
  auto all = wait_logs([](const std::vector<Json>& a) { return request_of(a, "/after/restart").has_value(); });
  auto req = request_of(all, "/after/restart");
  ASSERT_TRUE(req) << "not observed after the restart; kmd log:\n" << km::read_file(root_ + "/kmd.log", 1 << 20).value_or("");
  expect_observed(all, *req, "allowed.test", "curl");
  // The copy the sandbox maps stays; the one made for the "new" library, which no sandbox
  // maps, was removed at the start.
  EXPECT_EQ(::access(moved.c_str(), F_OK), 0);
  EXPECT_NE(::access(mapped.c_str(), F_OK), 0) << mapped << " should have been collected";
}

// Last: destroying the only sandbox that observes TLS unloads the capture.
TEST_F(Tls, NothingStaysLoadedWhenTheLastSandboxGoes) {
  ASSERT_EQ(km({"destroy", id_}).status, 0);
  std::string destroyed = id_;
  id_.clear();
  std::string log;
  for (int i = 0; i < 100; ++i) {
    log = km::read_file(root_ + "/kmd.log", 4 << 20).value_or("");
    if (log.find("TLS capture unloaded") != std::string::npos) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_NE(log.find("TLS capture unloaded"), std::string::npos) << log;
  (void)destroyed;
}

}  // namespace
