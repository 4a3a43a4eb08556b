// L7 inspection end to end (issue: AI metering, budgets, MITM): real clients in a real sandbox
// call fake AI providers and a fake GitHub in the test world, by their real host names, through
// the sandbox's enforcer. What the provider sent (the fake's own log) must be what km recorded,
// to the token; budgets must refuse before anything reaches the provider; GitHub requests must
// name allowed repositories.
//
// Layout: the test world with, in W, tests/world/fake_ai.py on 198.51.100.20 (certificate for
// api.anthropic.com, api.openai.com and bedrock-runtime.us-east-1.amazonaws.com, from the world's
// test CA) and the world server on 198.51.100.21 (github.com, api.github.com);
// bedrock-runtime.eu-west-1.amazonaws.com points at 203.0.113.10, whose certificate does not
// name it. kmd in K trusts the world's CA for upstream TLS (extraCABundle). Sandboxes: `ai`
// (budget $100), `tiny` ($0.01), `race` ($1).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
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

constexpr const char* kAiAddr = "198.51.100.20";
constexpr const char* kGithubAddr = "198.51.100.21";

// The suite runs with `enforcement: proxy` by default; ctest runs part of it again with kernel
// enforcement (KM_AI_MODE=both: BPF redirects every connection to the transparent proxy).
std::string mode() {
  const char* m = std::getenv("KM_AI_MODE");
  return m && *m ? m : "proxy";
}

std::string profile(const std::string& name, const std::string& budget_usd) {
  return R"(apiVersion: klankermaker.ai/v1alpha2
kind: SandboxProfile
metadata:
  name: )" + name + R"(
  prefix: )" + name + R"(
extends: quickstart
spec:
  network:
    enforcement: )" + mode() + R"(
    egress:
      allowedHosts: ["api.anthropic.com", "api.openai.com", "bedrock-runtime.us-east-1.amazonaws.com",
                     "bedrock-runtime.eu-west-1.amazonaws.com", "github.com", "api.github.com"]
  sourceAccess:
    github:
      allowedRepos: ["octo/allowed"]
      allowedRefs: ["main", "feature/*"]
  budget:
    ai:
      maxSpendUSD: )" + budget_usd + "\n";
}

class Ai : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    km::testing::WorldOptions o;
    for (const char* z : {"anthropic.com", "openai.com", "amazonaws.com", "github.com"}) o.zones.push_back(z);
    for (const char* n : {"api.anthropic.com", "api.openai.com", "bedrock-runtime.us-east-1.amazonaws.com"}) {
      o.records.push_back({n, "A", kAiAddr, 60});
    }
    o.records.push_back({"bedrock-runtime.eu-west-1.amazonaws.com", "A", "203.0.113.10", 60});
    o.records.push_back({"github.com", "A", kGithubAddr, 60});
    o.records.push_back({"api.github.com", "A", kGithubAddr, 60});
    o.hosts.push_back({kAiAddr, {"api.anthropic.com", "api.openai.com", "bedrock-runtime.us-east-1.amazonaws.com"}, false});
    o.hosts.push_back({kGithubAddr, {"github.com", "api.github.com"}, true});
    auto w = TestWorld::create(o);
    if (!w) {
      setup_error_ = "test world: " + w.error().to_string();
      return;
    }
    world_ = w->release();
    char tmpl[] = "/tmp/km-ai-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    ::chmod(root_.c_str(), 0711);
    socket_ = root_ + "/run/kmd.sock";
    cgroup_ = "km-ai-" + std::to_string(::getpid());
    fake_log_ = root_ + "/fake_ai.jsonl";
    auto fake = world_->spawn_in_world_netns(
        {"python3", "-I", "-B", "-S", std::string(KM_SOURCE_DIR) + "/tests/world/fake_ai.py", "--listen",
         std::string(kAiAddr) + ":443", "--cert", world_->dir() + "/" + kAiAddr + ".pem", "--key",
         world_->dir() + "/leaf.key", "--log", fake_log_, "--ready-file", root_ + "/fake.ready", "--max-lifetime", "900"},
        {}, root_ + "/fake_ai.out");
    if (!fake) {
      setup_error_ = "fake_ai: " + fake.error().to_string();
      return;
    }
    for (int i = 0; i < 500 && ::access((root_ + "/fake.ready").c_str(), F_OK) != 0; ++i) std::this_thread::sleep_for(20ms);
    if (::access((root_ + "/fake.ready").c_str(), F_OK) != 0) {
      setup_error_ = "fake_ai did not start: " + km::read_file(root_ + "/fake_ai.out", 1 << 20).value_or("");
      return;
    }
    std::ofstream(root_ + "/kmd.yaml") << "upstreamDNS: [\"" << world_->resolver() << "\"]\nextraCABundle: "
                                       << world_->ca_bundle() << "\n";
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
    for (auto [name, usd, id] : {std::tuple{"ai", "100", &id_}, std::tuple{"tiny", "0.01", &tiny_id_},
                                 std::tuple{"race", "1", &race_id_}}) {
      std::ofstream(root_ + "/" + name + ".yaml") << profile(name, usd);
      auto r = km({"create", root_ + "/" + name + ".yaml"});
      if (r.status != 0) {
        setup_error_ = "km create " + std::string(name) + ": " + r.err + km::read_file(root_ + "/kmd.log", 1 << 20).value_or("");
        return;
      }
      *id = r.out.substr(0, r.out.find('\n'));
    }
  }

  static void TearDownTestSuite() {
    if (root_.empty()) return;
    if (kmd_pid_ > 0) {
      for (const auto& id : {id_, tiny_id_, race_id_}) {
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
    fake_mark_ = fake_log().size();
  }

  static RunResult km(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), KM_BIN);
    return run(args, {{"KM_SOCKET", socket_}}, input);
  }
  static RunResult sh(const std::string& cmd, const std::string& id = id_) {
    return km({"exec", id, "--", "sh", "-c", cmd});
  }
  static std::string dump(const RunResult& r) {
    return "status " + std::to_string(r.status) + "\nout: " + r.out + "\nerr: " + r.err;
  }

  // What the fake provider sent, request by request (its ground truth).
  static std::vector<Json> fake_log() {
    std::vector<Json> out;
    std::ifstream in(fake_log_);
    std::string line;
    while (std::getline(in, line)) out.push_back(Json::parse(line, nullptr, false));
    return out;
  }
  std::vector<Json> fake_since_setup() const {
    auto all = fake_log();
    return std::vector<Json>(all.begin() + static_cast<long>(std::min(fake_mark_, all.size())), all.end());
  }

  // km budget show REF -o json.
  static Json budget(const std::string& id) {
    auto r = km({"budget", "show", id, "--output", "json"});
    EXPECT_EQ(r.status, 0) << dump(r);
    return Json::parse(r.out, nullptr, false);
  }
  // The ledger's row for one call, found by model: tokens and cost as km recorded them.
  static Json call_for(const Json& b, const std::string& model, size_t nth_newest = 0) {
    size_t seen = 0;
    for (const auto& c : b.value("calls", Json::array())) {
      if (c.value("model", "") == model && seen++ == nth_newest) return c;
    }
    return Json();
  }

  // An Anthropic Messages request from inside the sandbox with curl; `extra` adds curl options.
  static RunResult anthropic(const std::string& id, const std::string& model, const std::string& usage, bool stream,
                             const std::string& extra = "") {
    std::string body = R"({"model":")" + model + R"(","max_tokens":1024,"stream":)" + (stream ? "true" : "false") +
                       R"(,"messages":[{"role":"user","content":"hello"}]})";
    return sh("curl -sS -m 30 " + extra + " https://api.anthropic.com/v1/messages -H 'x-api-key: sk-ant-test' " +
                  "-H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' -H 'x-fake-usage: " + usage +
                  "' -d '" + body + "'",
              id);
  }

  // The real agent (pinned by tests/agents/install_claude_code.sh, which `scripts/setup test`
  // runs), copied into a sandbox's workspace: cli.js needs nothing but node.
  static std::string package_dir() { return std::string(KM_SOURCE_DIR) + "/build/agents/node_modules/@anthropic-ai/claude-code"; }
  static void install(const std::string& id) {
    auto tar = run({"/bin/tar", "-C", package_dir(), "-c", "cli.js", "package.json"});
    ASSERT_EQ(tar.status, 0) << "Claude Code is not installed: run tests/agents/install_claude_code.sh\n" << tar.err;
    auto x = km({"exec", id, "--", "sh", "-c", "mkdir -p /workspace/cc && tar -x -C /workspace/cc"}, tar.out);
    ASSERT_EQ(x.status, 0) << dump(x);
  }
  static RunResult claude(const std::string& id, const std::string& prompt) {
    // HTTPS_PROXY, NODE_EXTRA_CA_CERTS and the resolver come from the sandbox; no base URL: it
    // reaches api.anthropic.com by name, as it would in production.
    return km({"exec", id, "--", "env", "ANTHROPIC_API_KEY=sk-ant-api03-test", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
               "DISABLE_AUTOUPDATER=1", "CLAUDE_CODE_MAX_RETRIES=0", "node", "/workspace/cc/cli.js", "-p", prompt,
               "--output-format", "json"});
  }


  static inline TestWorld* world_ = nullptr;
  static inline std::string setup_error_, root_, socket_, cgroup_, fake_log_, id_, tiny_id_, race_id_;
  static inline pid_t kmd_pid_ = -1;
  size_t fake_mark_ = 0;
};

// claude-sonnet-4-5: $3 in, $15 out, cache read $0.30, cache write $3.75 per million tokens.
int64_t sonnet_micros(int64_t in, int64_t out, int64_t cr, int64_t cw) {
  // Rounded up to the micro-dollar, as km prices (the figures here stay far below 2^63).
  int64_t pico = in * 3000000 + out * 15000000 + cr * 300000 + cw * 3750000;
  return (pico + 999999) / 1000000;
}

TEST_F(Ai, StreamedAnthropicCallIsMeteredExactlyAndTheSandboxTrustsItsCa) {
  // No --cacert: the sandbox's system bundle carries its inspection CA.
  auto r = anthropic(id_, "claude-sonnet-4-5-20250929", "input=1200,output=345,cache_read=5000,cache_write=700", true);
  ASSERT_EQ(r.status, 0) << dump(r);
  EXPECT_NE(r.out.find("message_stop"), std::string::npos) << r.out;
  auto sent = fake_since_setup();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0]["host"], "api.anthropic.com");
  auto b = budget(id_);
  Json c = call_for(b, "claude-sonnet-4-5-20250929");
  ASSERT_FALSE(c.is_null()) << b.dump(2);
  EXPECT_EQ(c["input_tokens"], sent[0]["usage"]["input"]);
  EXPECT_EQ(c["output_tokens"], sent[0]["usage"]["output"]);
  EXPECT_EQ(c["cache_read_tokens"], sent[0]["usage"]["cache_read"]);
  EXPECT_EQ(c["cache_write_tokens"], sent[0]["usage"]["cache_write"]);
  EXPECT_EQ(c["cost_micros"], sonnet_micros(1200, 345, 5000, 700));
  EXPECT_EQ(c.value("estimated", false), false);
  // The certificate the client saw was minted by the sandbox's CA.
  auto v = sh("curl -sS -m 10 -o /dev/null -w '%{ssl_verify_result}' -v https://api.anthropic.com/v1/messages 2>&1 | "
              "grep -i 'issuer:'");
  EXPECT_NE(v.out.find("inspection CA"), std::string::npos) << dump(v);
}

TEST_F(Ai, TransparentAndCompressedAndNonStreamedCallsAreMetered) {
  auto t = anthropic(id_, "claude-haiku-4-5", "input=10,output=20", true, "--noproxy '*'");
  ASSERT_EQ(t.status, 0) << dump(t);
  for (const char* enc : {"gzip", "br", "zstd", "deflate"}) {
    auto g = anthropic(id_, "claude-haiku-4-5", "input=100,output=200", true,
                       std::string("--compressed -H 'x-fake-encoding: ") + enc + "'");
    ASSERT_EQ(g.status, 0) << enc << ": " << dump(g);
  }
  auto j = anthropic(id_, "claude-haiku-4-5", "input=1000,output=2000", false);
  ASSERT_EQ(j.status, 0) << dump(j);
  auto sent = fake_since_setup();
  ASSERT_EQ(sent.size(), 6u);
  int64_t want_in = 0, want_out = 0;
  for (const auto& s : sent) {
    if (s["status"] == 200 && !s["usage"].is_null()) {
      want_in += s["usage"]["input"].get<int64_t>();
      want_out += s["usage"]["output"].get<int64_t>();
    }
  }
  auto b = budget(id_);
  int64_t got_in = 0, got_out = 0;
  size_t n = 0;
  for (const auto& c : b["calls"]) {
    if (c["model"] != "claude-haiku-4-5") continue;
    got_in += c["input_tokens"].get<int64_t>();
    got_out += c["output_tokens"].get<int64_t>();
    if (++n == 6) break;
  }
  EXPECT_EQ(n, 6u) << b.dump(2);
  EXPECT_EQ(got_in, want_in);
  EXPECT_EQ(got_out, want_out);
}

TEST_F(Ai, OpenAiAndBedrockShapesAreMetered) {
  auto chat = sh(R"(curl -sS -m 30 https://api.openai.com/v1/chat/completions -H 'authorization: Bearer sk-test' )"
                 R"(-H 'content-type: application/json' -H 'x-fake-usage: input=300,output=40,cache_read=100' )"
                 R"(-d '{"model":"gpt-4.1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}')");
  ASSERT_EQ(chat.status, 0) << dump(chat);
  // A stream that did not ask for usage: km asks for it, so it is metered exactly too.
  auto bare = sh(R"(curl -sS -m 30 https://api.openai.com/v1/chat/completions -H 'authorization: Bearer sk-test' )"
                 R"(-H 'content-type: application/json' -H 'x-fake-usage: input=11,output=22' )"
                 R"(-d '{"model":"gpt-4.1-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}')");
  ASSERT_EQ(bare.status, 0) << dump(bare);
  EXPECT_NE(bare.out.find("\"usage\""), std::string::npos) << bare.out;
  auto resp = sh(R"(curl -sS -m 30 https://api.openai.com/v1/responses -H 'authorization: Bearer sk-test' )"
                 R"(-H 'content-type: application/json' -H 'x-fake-usage: input=50,output=60' )"
                 R"(-d '{"model":"gpt-5.4","stream":true,"input":"hi"}')");
  ASSERT_EQ(resp.status, 0) << dump(resp);
  auto br = sh(R"(curl -sS -m 30 -o /dev/null https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream )"
               R"(-H 'authorization: AWS4-HMAC-SHA256 Credential=x' -H 'content-type: application/json' -H 'x-fake-usage: input=700,output=80' )"
               R"(-d '{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}')");
  ASSERT_EQ(br.status, 0) << dump(br);
  auto cv = sh(R"(curl -sS -m 30 -o /dev/null https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-haiku-4-5-20251001-v1%3A0/converse-stream )"
               R"(-H 'authorization: AWS4-HMAC-SHA256 Credential=x' -H 'content-type: application/json' -H 'x-fake-usage: input=90,output=9' )"
               R"(-d '{"messages":[{"role":"user","content":[{"text":"hi"}]}]}')");
  ASSERT_EQ(cv.status, 0) << dump(cv);
  auto b = budget(id_);
  Json c = call_for(b, "gpt-4.1");
  ASSERT_FALSE(c.is_null()) << b.dump(2);
  EXPECT_EQ(c["input_tokens"], 300);
  EXPECT_EQ(c["cache_read_tokens"], 100);
  EXPECT_EQ(c["output_tokens"], 40);
  Json m = call_for(b, "gpt-4.1-mini");
  ASSERT_FALSE(m.is_null()) << b.dump(2);
  EXPECT_EQ(m["input_tokens"], 11);
  EXPECT_EQ(m["output_tokens"], 22);
  EXPECT_EQ(m["estimated"], false);
  Json r = call_for(b, "gpt-5.4");
  ASSERT_FALSE(r.is_null()) << b.dump(2);
  EXPECT_EQ(r["input_tokens"], 50);
  EXPECT_EQ(r["output_tokens"], 60);
  Json s = call_for(b, "claude-sonnet-4-5-20250929");
  ASSERT_FALSE(s.is_null()) << b.dump(2);
  EXPECT_EQ(s["provider"], "bedrock");
  EXPECT_EQ(s["input_tokens"], 700);
  EXPECT_EQ(s["output_tokens"], 80);
  Json h = call_for(b, "claude-haiku-4-5-20251001");
  ASSERT_FALSE(h.is_null()) << b.dump(2);
  EXPECT_EQ(h["input_tokens"], 90);
  EXPECT_EQ(h["output_tokens"], 9);
}

TEST_F(Ai, AStreamCutBeforeItsFinalUsageIsChargedForWhatWasDelivered) {
  auto r = anthropic(id_, "claude-opus-4-5", "input=400,output=900", true,
                     "-H 'x-fake-cut-after: 5' -H 'x-fake-reply: " + std::string(200, 'w') + " and more words here'");  // cut after two deltas
  EXPECT_NE(r.status, 0);  // curl sees the cut
  auto b = budget(id_);
  Json c = call_for(b, "claude-opus-4-5");
  ASSERT_FALSE(c.is_null()) << b.dump(2);
  EXPECT_EQ(c["input_tokens"], 400);
  EXPECT_GE(c["output_tokens"].get<int64_t>(), 51);  // the 204 bytes of text delivered, a quarter token each
  EXPECT_EQ(c["estimated"], true);
}

TEST_F(Ai, ACutJsonResponseAndUnmeterableRequestsCannotSpendUnseen) {
  // A non-streamed answer cut before its usage: charged by estimate from what arrived.
  auto cut = anthropic(id_, "claude-3-haiku", "input=10,output=10", false,
                       "-H 'x-fake-cut-after: 600' -H 'x-fake-reply: " + std::string(2000, 'x') + "'");
  EXPECT_NE(cut.status, 0);
  Json c = call_for(budget(id_), "claude-3-haiku");
  ASSERT_FALSE(c.is_null());
  EXPECT_EQ(c["estimated"], true);
  EXPECT_GT(c["output_tokens"].get<int64_t>(), 0);
  // A background response would be fetched later, unmetered: refused under a ceiling.
  auto bg = sh(R"(curl -sS -m 10 -w '\n%{http_code}' https://api.openai.com/v1/responses -H 'authorization: Bearer k' )"
               R"(-H 'content-type: application/json' -d '{"model":"gpt-5.4","background":true,"input":"hi"}')");
  EXPECT_NE(bg.out.find("\n403"), std::string::npos) << dump(bg);
  // Framing the provider might read differently, and compressed bodies km cannot read.
  auto get_body = sh(R"(curl -sS -m 10 -o /dev/null -w '%{http_code}' -X GET https://api.anthropic.com/v1/models -d 'x=1')");
  EXPECT_EQ(get_body.out, "400") << dump(get_body);
  auto gz = sh(R"(printf '{}' | gzip | curl -sS -m 10 -o /dev/null -w '%{http_code}' https://api.anthropic.com/v1/messages )"
               R"(-H 'content-encoding: gzip' -H 'content-type: application/json' --data-binary @-)");
  EXPECT_EQ(gz.out, "415") << dump(gz);
  for (const auto& s : fake_since_setup()) EXPECT_NE(s.value("path", ""), "/v1/responses") << s.dump();
}

TEST_F(Ai, UpstreamThatFailsVerificationIsRefusedNeverPassed) {
  auto r = sh("curl -sS -m 20 -w '%{http_code}' https://bedrock-runtime.eu-west-1.amazonaws.com/model/x/invoke -d '{}'");
  EXPECT_NE(r.out.find("502"), std::string::npos) << dump(r);
  EXPECT_NE(r.out.find("upstream_tls_failed"), std::string::npos) << dump(r);
  // The server saw a handshake at most, never a request.
  for (const auto& h : world_->hits()) EXPECT_TRUE(h.path.empty()) << h.server << " " << h.path;
}

TEST_F(Ai, PlainHttpAndAddressOnlyConnectionsToInspectedHostsAreRefused) {
  auto p = sh("curl -sS -m 10 -w '%{http_code}' http://api.anthropic.com/v1/messages -d '{}'");
  EXPECT_NE(p.out.find("403"), std::string::npos) << dump(p);
  // TLS without the name (SNI) to the provider's address: no name, no inspection, no entry.
  auto n = sh("getent hosts api.anthropic.com >/dev/null; curl -sS -m 10 -k --noproxy '*' https://198.51.100.20/v1/messages -d '{}'");
  EXPECT_NE(n.status, 0) << dump(n);
  EXPECT_TRUE(fake_since_setup().empty());
}

TEST_F(Ai, AtTheCeilingTheNextCallGetsTheProvidersOwnErrorAndIsNotSent) {
  auto first = anthropic(tiny_id_, "claude-sonnet-4-5", "input=10000,output=1000", false);
  ASSERT_EQ(first.status, 0) << dump(first);
  auto second = anthropic(tiny_id_, "claude-sonnet-4-5", "input=1,output=1", false, "-w '\\n%{http_code}'");
  EXPECT_NE(second.out.find("403"), std::string::npos) << dump(second);
  auto body = Json::parse(second.out.substr(0, second.out.rfind('\n')), nullptr, false);
  EXPECT_EQ(body["type"], "error") << second.out;
  EXPECT_EQ(body["error"]["type"], "permission_error");
  std::string msg = body["error"].value("message", "");
  EXPECT_NE(msg.find("km budget add " + tiny_id_), std::string::npos) << msg;
  EXPECT_NE(msg.find("$0.010000"), std::string::npos) << msg;
  EXPECT_EQ(fake_since_setup().size(), 1u);  // the refused call never reached the provider
  // Token counting is free and still works.
  auto count = sh(R"(curl -sS -m 10 -w '\n%{http_code}' https://api.anthropic.com/v1/messages/count_tokens -H 'x-api-key: k' -H 'content-type: application/json' -d '{"model":"claude-sonnet-4-5","messages":[]}')",
                  tiny_id_);
  EXPECT_NE(count.out.find("200"), std::string::npos) << dump(count);
  // Raising the budget re-opens AI.
  auto add = km({"budget", "add", tiny_id_, "--ai", "1"});
  ASSERT_EQ(add.status, 0) << dump(add);
  auto third = anthropic(tiny_id_, "claude-sonnet-4-5", "input=1,output=1", false, "-w '\\n%{http_code}'");
  EXPECT_NE(third.out.find("\n200"), std::string::npos) << dump(third);
}

TEST_F(Ai, ParallelStreamsRacingToTheCeilingOvershootByAtMostOneReservation) {
  // 16 calls at once, each honestly sized: ~40 KB of prompt (the fake reports 20,000 input
  // tokens, within km's estimate of half a token per byte) and max_tokens 2,000 (it reports
  // 2,000): $0.09 each on claude-sonnet-4-5, against a $1 ceiling.
  std::string prompt(40000, 'a');
  std::string script =
      "cd /tmp; printf '%s' '{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":2000,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"" +
      prompt +
      "\"}]}' > body.json; for i in $(seq 16); do (curl -sS -m 60 -o out.$i -w '%{http_code}\\n' "
      "https://api.anthropic.com/v1/messages -H 'x-api-key: k' -H 'content-type: application/json' "
      "-H 'x-fake-usage: input=20000,output=2000' -H 'x-fake-delay-ms: 20' --data-binary @body.json > code.$i) & done; wait; cat code.*";
  auto r = sh(script, race_id_);
  ASSERT_EQ(r.status, 0) << dump(r);
  int ok = 0, refused = 0;
  std::istringstream codes(r.out);
  std::string code;
  while (codes >> code) (code == "200" ? ok : refused) += code == "200" || code == "403" ? 1 : 0;
  EXPECT_EQ(ok + refused, 16) << r.out;
  EXPECT_GT(refused, 0) << r.out;
  EXPECT_GE(ok, 1);
  auto b = budget(race_id_);
  int64_t spent = b["ai"]["spent_micros"].get<int64_t>();
  int64_t limit = b["ai"]["limit_micros"].get<int64_t>();
  int64_t one = sonnet_micros(20000, 2000, 0, 0);
  EXPECT_EQ(spent, ok * one) << b.dump(2);
  // The bound: the ceiling plus one call's reservation (an upper estimate of its cost).
  int64_t reservation = sonnet_micros((static_cast<int64_t>(prompt.size()) + 120) / 2 + 1, 2000, 0, 0);
  EXPECT_LE(spent, limit + reservation) << b.dump(2);
  EXPECT_EQ(static_cast<int>(fake_since_setup().size()), ok);
}

TEST_F(Ai, AnEnforcerKilledMidStreamLosesNoRecordedSpend) {
  // A slow stream: 30 deltas 200 ms apart. Its input is recorded within a second of the start.
  std::string cmd = "curl -sS -m 60 -o /dev/null https://api.anthropic.com/v1/messages -H 'x-api-key: k' "
                    "-H 'content-type: application/json' -H 'x-fake-usage: input=7777,output=30' -H 'x-fake-delay-ms: 200' "
                    "-H 'x-fake-chunks: 30' -d '{\"model\":\"claude-3-5-haiku\",\"max_tokens\":100,\"stream\":true,\"messages\":[]}'";
  std::jthread client([&] { sh(cmd); });  // joined however the test ends
  Json c;
  for (int i = 0; i < 100 && c.is_null(); ++i) {
    std::this_thread::sleep_for(100ms);
    c = call_for(budget(id_), "claude-3-5-haiku");
  }
  ASSERT_FALSE(c.is_null()) << "the call was never recorded while streaming";
  EXPECT_EQ(c["input_tokens"], 7777);
  int64_t recorded = c["cost_micros"].get<int64_t>();
  auto pid_text = km::read_file(root_ + "/run/sandboxes/" + id_ + "/enforcer.pid", 4096);
  ASSERT_TRUE(pid_text) << pid_text.error().to_string();
  pid_t enforcer = std::stoi(*pid_text);
  ASSERT_EQ(::kill(enforcer, SIGKILL), 0);
  client.join();
  Json after = call_for(budget(id_), "claude-3-5-haiku");
  ASSERT_FALSE(after.is_null());
  EXPECT_GE(after["cost_micros"].get<int64_t>(), recorded);
  EXPECT_EQ(after["input_tokens"], 7777);
  // kmd restarts the enforcer and AI calls work again.
  RunResult again;
  for (int i = 0; i < 100; ++i) {
    again = anthropic(id_, "claude-haiku-4-5", "input=1,output=1", false);
    if (again.status == 0) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(again.status, 0) << dump(again);
}

// ---- Claude Code ----------------------------------------------------------------------------

TEST_F(Ai, ClaudeCodeTokensAndCostKmReportsEqualWhatTheProviderSent) {
  install(id_);
  auto before = budget(id_);
  auto r = claude(id_, "say hello");
  ASSERT_EQ(r.status, 0) << dump(r);
  auto out = Json::parse(r.out, nullptr, false);
  EXPECT_EQ(out.value("is_error", true), false) << r.out;
  // Every billable call the provider answered, against what km recorded for this sandbox.
  int64_t sent_in = 0, sent_out = 0, sent_cr = 0, sent_cw = 0;
  size_t calls = 0;
  for (const auto& s : fake_since_setup()) {
    // Claude Code's own calls (a stream of an earlier test may log its end late).
    if (s["endpoint"] != "messages" || s["usage"].is_null() || s.value("user_agent", "").find("claude-cli") != 0) continue;
    ++calls;
    sent_in += s["usage"]["input"].get<int64_t>();
    sent_out += s["usage"]["output"].get<int64_t>();
    sent_cr += s["usage"]["cache_read"].get<int64_t>();
    sent_cw += s["usage"]["cache_write"].get<int64_t>();
  }
  ASSERT_GT(calls, 0u);
  auto after = budget(id_);
  int64_t in = 0, out_tokens = 0, cr = 0, cw = 0;
  for (const auto& m : after["models"]) {
    in += m["input_tokens"].get<int64_t>();
    out_tokens += m["output_tokens"].get<int64_t>();
    cr += m["cache_read_tokens"].get<int64_t>();
    cw += m["cache_write_tokens"].get<int64_t>();
  }
  for (const auto& m : before["models"]) {
    in -= m["input_tokens"].get<int64_t>();
    out_tokens -= m["output_tokens"].get<int64_t>();
    cr -= m["cache_read_tokens"].get<int64_t>();
    cw -= m["cache_write_tokens"].get<int64_t>();
  }
  EXPECT_EQ(in, sent_in) << after.dump(2);
  EXPECT_EQ(out_tokens, sent_out);
  EXPECT_EQ(cr, sent_cr);
  EXPECT_EQ(cw, sent_cw);
  // Claude Code's own figures agree too.
  if (out.contains("usage")) {
    EXPECT_EQ(out["usage"].value("output_tokens", -1), sent_out) << r.out;
  }
  auto status = km({"status", id_});
  EXPECT_NE(status.out.find("claude"), std::string::npos) << dump(status);
}

TEST_F(Ai, ClaudeCodeTelemetryReachesKmOtel) {
  // The sandbox's environment points Claude Code's OTLP exporter at its enforcer; km otel
  // summarises what arrived, next to what km metered.
  install(id_);
  auto r = claude(id_, "say hello again");
  ASSERT_EQ(r.status, 0) << dump(r);
  Json o;
  for (int i = 0; i < 100; ++i) {  // the exporter flushes at exit; the receiver stores at once
    auto k = km({"otel", id_, "-o", "json"});
    ASSERT_EQ(k.status, 0) << dump(k);
    o = Json::parse(k.out, nullptr, false);
    if (o["telemetry"].value("api_requests", 0) > 0) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_GT(o["telemetry"].value("api_requests", 0), 0) << o.dump(2).substr(0, 4000);
  EXPECT_GT(o["records"].value("logs", 0), 0);
  EXPECT_FALSE(o["telemetry"]["by_model"].empty());
  EXPECT_FALSE(o["metered"].empty());
  auto text = km({"otel", id_});
  EXPECT_EQ(text.status, 0) << dump(text);
  EXPECT_NE(text.out.find("KM COST"), std::string::npos) << text.out;
  auto timeline = km({"otel", id_, "--timeline"});
  EXPECT_EQ(timeline.status, 0) << dump(timeline);
  // The receiver answers OTLP only at the enforcer's own address, to the sandbox.
  auto junk = sh("curl -sS -m 5 -o /dev/null -w '%{http_code}' --noproxy '*' -X POST -H 'content-type: application/x-protobuf' "
                 "--data-binary 'not protobuf' http://$(awk '/nameserver/{print $2}' /etc/resolv.conf):3128/v1/logs");
  EXPECT_EQ(junk.out, "400") << dump(junk);
}

TEST_F(Ai, ClaudeCodeWithItsBudgetSpentItReportsKmsRefusal) {
  install(tiny_id_);
  // Spend the tiny budget, then let the agent try.
  (void)anthropic(tiny_id_, "claude-sonnet-4-5", "input=100000,output=100000", false);
  auto r = claude(tiny_id_, "say hello");
  EXPECT_NE(r.status, 0) << dump(r);
  EXPECT_NE((r.out + r.err).find("AI budget exhausted"), std::string::npos) << dump(r);
  EXPECT_NE((r.out + r.err).find("403"), std::string::npos) << dump(r);
  for (const auto& s : fake_since_setup()) EXPECT_NE(s.value("user_agent", "").find("claude-cli"), 0u) << s.dump();
}

// ---- GitHub ---------------------------------------------------------------------------------

TEST_F(Ai, GithubRequestsMustNameAnAllowedRepository) {
  auto code = [&](const std::string& url, const std::string& extra = "") {
    return sh("curl -sS -m 10 -o /tmp/gh.out -w '%{http_code}' " + extra + " '" + url + "'; echo; cat /tmp/gh.out").out;
  };
  EXPECT_EQ(code("https://github.com/octo/allowed/info/refs?service=git-upload-pack").substr(0, 3), "200");
  EXPECT_EQ(code("https://github.com/OCTO/Allowed.git/info/refs?service=git-upload-pack").substr(0, 3), "200");
  EXPECT_EQ(code("https://api.github.com/repos/octo/allowed/pulls").substr(0, 3), "200");
  std::string other = code("https://github.com/octo/other/info/refs?service=git-upload-pack");
  EXPECT_EQ(other.substr(0, 3), "403") << other;
  EXPECT_NE(other.find("octo/other"), std::string::npos) << other;
  EXPECT_EQ(code("https://api.github.com/graphql", "-d '{\"query\":\"{viewer{login}}\"}'").substr(0, 3), "403");
  EXPECT_EQ(code("https://api.github.com/repositories/12345").substr(0, 3), "403");
  EXPECT_EQ(code("https://github.com/octo/allowed/../other/info/refs").substr(0, 3), "403");
  // Only the allowed requests reached the server.
  size_t hits = 0;
  for (const auto& h : world_->hits()) {
    if (h.server != kGithubAddr || h.path.empty()) continue;
    ++hits;
    EXPECT_EQ(h.path.find("other"), std::string::npos) << h.path;
    EXPECT_EQ(h.path.find("graphql"), std::string::npos) << h.path;
  }
  EXPECT_EQ(hits, 3u);
}

TEST_F(Ai, GithubPushesOnlyUpdateAllowedRefs) {
  auto push = [&](const std::string& ref) {
    std::string line = std::string(40, '0') + " " + std::string(40, 'a') + " " + ref + "\\0report-status\\n";
    char len[5];
    std::snprintf(len, sizeof len, "%04zx", line.size() - 2 + 4);  // printf turns "\\0" and "\\n" into one byte each
    std::string cmd = "printf '" + std::string(len) + line + "0000PACK' | curl -sS -m 10 -o /tmp/push.out -w '%{http_code}' "
                      "-H 'content-type: application/x-git-receive-pack-request' --data-binary @- "
                      "https://github.com/octo/allowed.git/git-receive-pack; echo; cat /tmp/push.out";
    return sh(cmd).out;
  };
  EXPECT_EQ(push("refs/heads/main").substr(0, 3), "200");
  EXPECT_EQ(push("refs/heads/feature/x").substr(0, 3), "200");
  std::string denied = push("refs/heads/release");
  EXPECT_EQ(denied.substr(0, 3), "403") << denied;
  EXPECT_NE(denied.find("refs/heads/release"), std::string::npos) << denied;
}

}  // namespace
