#include "km/audit/redact.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "km/audit/corpus_template.h"
#include "km/base/file.h"

namespace km::audit {
namespace {

using nlohmann::json;
using testing::expand_template;
using testing::Expanded;

// ---------------------------------------------------------------------------------------------
// The corpus in tests/redaction/.

struct Case {
  std::string where;  // file:line
  std::string kind;   // text, json, argv
  std::string type;   // secrets only
  std::string tmpl;
};

std::vector<Case> load(const std::string& name, bool typed) {
  std::string path = std::string(KM_SOURCE_DIR) + "/tests/redaction/" + name;
  auto text = read_file(path, 1 << 20);
  EXPECT_TRUE(text.has_value()) << path;
  std::vector<Case> out;
  if (!text) return out;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t nl = text->find('\n', pos);
    if (nl == std::string::npos) nl = text->size();
    std::string line = text->substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    auto field = [&](std::string& rest) {
      size_t sp = rest.find(' ');
      std::string f = rest.substr(0, sp);
      rest = sp == std::string::npos ? "" : rest.substr(rest.find_first_not_of(' ', sp) == std::string::npos
                                                            ? rest.size()
                                                            : rest.find_first_not_of(' ', sp));
      return f;
    };
    Case c;
    c.where = "tests/redaction/" + name + ":" + std::to_string(line_no);
    std::string rest = line;
    c.kind = field(rest);
    if (typed) c.type = field(rest);
    c.tmpl = rest;
    EXPECT_TRUE(c.kind == "text" || c.kind == "json" || c.kind == "argv") << c.where << ": unknown kind " << c.kind;
    out.push_back(c);
  }
  return out;
}

// Every string (keys and values) in a JSON value.
void strings_of(const json& j, std::vector<std::string>& out) {
  if (j.is_string()) {
    out.push_back(j.get<std::string>());
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      out.push_back(it.key());
      strings_of(it.value(), out);
    }
  } else if (j.is_array()) {
    for (const json& e : j) strings_of(e, out);
  }
}

// A region cut from a JSON template is JSON source: decode its escapes.
std::string json_unescape(const std::string& s) {
  auto j = json::parse("\"" + s + "\"", nullptr, false);
  return j.is_string() ? j.get<std::string>() : s;
}

struct Outcome {
  std::vector<std::string> outputs;  // every string of the output
  std::string shown;                 // the output, for messages
  std::string input_shown;
  std::vector<std::string> found;
  bool idempotent = true;
  bool unchanged = true;
  std::string error;
};

Outcome run_case(const Case& c, const Expanded& e, const Redactor& r) {
  Outcome run;
  if (c.kind == "text") {
    std::string out = r.redact(e.text, &run.found);
    run.outputs = {out};
    run.shown = out;
    run.input_shown = e.text;
    run.unchanged = out == e.text;
    run.idempotent = r.redact(out) == out;
    return run;
  }
  json in = json::parse(e.text, nullptr, false);
  if (in.is_discarded()) {
    run.error = "the template does not expand to JSON: " + e.text;
    return run;
  }
  run.input_shown = in.dump();
  if (c.kind == "json") {
    json out = r.redact_json(in, &run.found);
    strings_of(out, run.outputs);
    run.shown = out.dump();
    run.unchanged = out == in;
    run.idempotent = r.redact_json(out) == out;
    return run;
  }
  if (!in.is_array() || !std::all_of(in.begin(), in.end(), [](const json& x) { return x.is_string(); })) {
    run.error = "an argv template must be a JSON array of strings";
    return run;
  }
  auto argv = in.get<std::vector<std::string>>();
  auto out = r.redact_argv(argv, &run.found);
  run.outputs = out;
  run.shown = json(out).dump();
  run.unchanged = out == argv;
  run.idempotent = r.redact_argv(out) == out;
  return run;
}

bool any_contains(const std::vector<std::string>& hay, const std::string& needle) {
  for (const std::string& h : hay) {
    if (h.find(needle) != std::string::npos) return true;
  }
  return false;
}

TEST(RedactionCorpus, EverySecretIsRedacted) {
  auto cases = load("secrets.txt", true);
  size_t failures = 0;
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    Expanded e = expand_template(c.tmpl, k, c.kind == "text");
    std::vector<std::string> literals;
    if (c.type == "sandbox-secret") {
      for (const std::string& s : e.secrets) literals.push_back(c.kind == "text" ? s : json_unescape(s));
    }
    Redactor r(literals);
    Outcome run = run_case(c, e, r);
    std::vector<std::string> problems;
    if (!run.error.empty()) problems.push_back(run.error);
    if (e.secrets.empty()) problems.push_back("the template marks no secret with {! !}");
    for (const std::string& s : e.secrets) {
      std::string secret = c.kind == "text" ? s : json_unescape(s);
      if (!secret.empty() && any_contains(run.outputs, secret)) problems.push_back("the secret survived: " + secret);
    }
    for (const std::string& f : e.fillers) {
      if (any_contains(run.outputs, f)) problems.push_back("part of the secret survived: " + f);
    }
    if (!any_contains(run.outputs, marker(c.type))) problems.push_back("no " + marker(c.type) + " in the output");
    if (std::find(run.found.begin(), run.found.end(), c.type) == run.found.end()) {
      problems.push_back("`found` does not list " + c.type);
    }
    if (!run.idempotent) problems.push_back("redacting the output again changes it");
    if (!problems.empty()) {
      ++failures;
      std::string msg = c.where + ": " + c.kind + " " + c.type + "\n  input:  " + run.input_shown +
                        "\n  output: " + run.shown;
      for (const std::string& p : problems) msg += "\n  - " + p;
      ADD_FAILURE() << msg;
    }
  }
  EXPECT_EQ(failures, 0u) << "of " << cases.size() << " secret cases";
}

TEST(RedactionCorpus, EveryNearMissIsUnchanged) {
  auto cases = load("near_misses.txt", false);
  Redactor r;
  size_t failures = 0;
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    Expanded e = expand_template(c.tmpl, 1000 + k, c.kind == "text");
    Outcome run = run_case(c, e, r);
    if (!run.error.empty() || !run.unchanged || !run.found.empty()) {
      ++failures;
      ADD_FAILURE() << c.where << ": " << c.kind << " near-miss changed" << (run.error.empty() ? "" : ": ")
                    << run.error << "\n  input:  " << run.input_shown << "\n  output: " << run.shown;
    }
  }
  EXPECT_EQ(failures, 0u) << "of " << cases.size() << " near-miss cases";
}

TEST(RedactionCorpus, CoversEveryTypeWithEnoughCases) {
  auto secrets = load("secrets.txt", true);
  auto misses = load("near_misses.txt", false);
  EXPECT_GE(secrets.size(), 50u);
  EXPECT_GE(misses.size(), secrets.size());
  std::set<std::string> types;
  std::set<std::string> kinds;
  for (const Case& c : secrets) {
    types.insert(c.type);
    kinds.insert(c.kind);
    EXPECT_NE(std::find(marker_types().begin(), marker_types().end(), c.type), marker_types().end())
        << c.where << ": unknown type " << c.type;
  }
  for (std::string_view t : marker_types()) EXPECT_TRUE(types.count(std::string(t))) << "no case for " << t;
  EXPECT_EQ(kinds, (std::set<std::string>{"text", "json", "argv"}));
}

// ---------------------------------------------------------------------------------------------
// Markers, found, idempotency.

// A fake token built at run time, never written whole in the source.
std::string fake_ghp() { return std::string("gh") + "p_" + "FAKE" + std::string(28, 'x') + "0123"; }

TEST(Redactor, ReplacesWithTypedMarkersAndListsThem) {
  Redactor r;
  std::vector<std::string> found;
  std::string in = "a " + fake_ghp() + " b PASSWORD=hunter2hunter2";
  EXPECT_EQ(r.redact(in, &found), "a [REDACTED:github-token] b PASSWORD=[REDACTED:credential]");
  EXPECT_EQ(found, (std::vector<std::string>{"github-token", "credential"}));
  EXPECT_EQ(marker("jwt"), "[REDACTED:jwt]");
}

TEST(Redactor, KeepsMarkersAndNeverLooksInsideThem) {
  Redactor r({"REDACTED:credential-ish", "abcdefgh12345"});
  std::string in = "x [REDACTED:credential] y [REDACTED:github-token]";
  EXPECT_EQ(r.redact(in), in);
  // A value that is only markers is already redacted; markers cannot hide a secret after them.
  EXPECT_EQ(r.redact("token=[REDACTED:credential]"), "token=[REDACTED:credential]");
  EXPECT_EQ(r.redact("token=[REDACTED:credential]hunter2"), "token=[REDACTED:credential][REDACTED:credential]");
  // An unknown type is not a marker: it is text, and what is inside is redacted.
  EXPECT_EQ(r.redact("[REDACTED:" + fake_ghp() + "]"), "[REDACTED:[REDACTED:github-token]]");
}

TEST(Redactor, IsIdempotentOnAdjacentFindings) {
  Redactor r({"mysecret12", "tail!secret"});
  for (std::string in : {"mysecret12" + fake_ghp(), "tail!secret" + fake_ghp(), "x" + fake_ghp() + "mysecret12",
                         std::string("mysecret12PASSWORD=abc"), "AKIA" + std::string(16, 'Q') + "mysecret12"}) {
    std::string once = r.redact(in);
    EXPECT_EQ(r.redact(once), once) << in;
  }
}

// ---------------------------------------------------------------------------------------------
// Literal secrets.

TEST(Redactor, IgnoresShortLiteralsWithAReasonThatDoesNotLeakThem) {
  Redactor r({"tiny7", "longenough1", "        ", "REDACTED", "longenough1"});
  EXPECT_EQ(r.literal_count(), 1u);
  ASSERT_EQ(r.ignored_literals().size(), 3u);
  EXPECT_NE(r.ignored_literals()[0].find("#1 (5 bytes) is shorter than 8"), std::string::npos);
  EXPECT_NE(r.ignored_literals()[1].find("whitespace"), std::string::npos);
  EXPECT_NE(r.ignored_literals()[2].find("marker"), std::string::npos);
  for (const std::string& why : r.ignored_literals()) {
    EXPECT_EQ(why.find("tiny7"), std::string::npos) << why;
    EXPECT_EQ(why.find("REDACTED"), std::string::npos) << why;
  }
  EXPECT_EQ(r.redact("tiny7 longenough1"), "tiny7 [REDACTED:sandbox-secret]");
}

TEST(Redactor, FindsLiteralsEncoded) {
  const std::string secret = "s3cr3t/v@lue+\"x\"";
  Redactor r({secret});
  EXPECT_EQ(r.redact("raw " + secret), "raw [REDACTED:sandbox-secret]");
  // JSON-escaped, percent-encoded, base64 (any alignment, both alphabets).
  EXPECT_EQ(r.redact(R"({"v":"s3cr3t/v@lue+\"x\""})"), R"({"v":"[REDACTED:sandbox-secret]"})");
  EXPECT_EQ(r.redact("q=s3cr3t%2Fv%40lue%2B%22x%22&z=1"), "q=[REDACTED:sandbox-secret]&z=1");
  const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::string prefix : {"", "a", "ab"}) {
    std::string in = prefix + secret + "tail";
    std::string enc;
    uint32_t acc = 0;
    int bits = 0;
    for (unsigned char c : in) {
      acc = (acc << 8) | c;
      bits += 8;
      while (bits >= 6) {
        bits -= 6;
        enc += b64[(acc >> bits) & 63];
      }
    }
    std::string out = r.redact("echo " + enc);
    EXPECT_NE(out.find("[REDACTED:sandbox-secret]"), std::string::npos) << prefix << ": " << out;
  }
}

TEST(Redactor, LiteralsOverlapAndRepeat) {
  Redactor r({"abcdefgh", "efghijkl"});
  EXPECT_EQ(r.redact("xabcdefghijkly abcdefghabcdefgh"), "x[REDACTED:sandbox-secret]y [REDACTED:sandbox-secret][REDACTED:sandbox-secret]");
  Redactor nul({std::string("nul\0in\0it", 9)});
  EXPECT_EQ(nul.redact(std::string("<nul\0in\0it>", 11)), "<[REDACTED:sandbox-secret]>");
}

// ---------------------------------------------------------------------------------------------
// JSON.

TEST(RedactJson, RedactsKeysAndKeepsThemDistinct) {
  Redactor r;
  std::string a = fake_ghp(), b = fake_ghp();
  b[b.size() - 1] = '9';
  json in = {{a, 1}, {b, 2}, {"[REDACTED:github-token]", 3}, {"plain", true}};
  std::vector<std::string> found;
  json out = r.redact_json(in, &found);
  EXPECT_EQ(out.size(), 4u);
  EXPECT_EQ(out["[REDACTED:github-token]"], 3);  // a key that did not change keeps its name
  EXPECT_TRUE(out.contains("[REDACTED:github-token]#2"));
  EXPECT_TRUE(out.contains("[REDACTED:github-token]#3"));
  EXPECT_EQ(out["plain"], true);
  EXPECT_EQ(found.size(), 2u);
  EXPECT_EQ(r.redact_json(out), out);
}

TEST(RedactJson, ValuesUnderSecretKeys) {
  Redactor r;
  json in = json::parse(R"({
    "password": "hunter2", "api_key": 12345678, "token": true, "secret": null, "pass": "",
    "Authorization": ["Bearer abc.def", "Basic xyz"],
    "credentials": {"user": "bob", "value": ["y", 1], "nested": {"data": "z"}},
    "max_tokens": 4096, "note": "ok"})");
  json out = r.redact_json(in);
  EXPECT_EQ(out["password"], "[REDACTED:credential]");
  EXPECT_EQ(out["api_key"], "[REDACTED:credential]");
  EXPECT_EQ(out["token"], true);
  EXPECT_TRUE(out["secret"].is_null());
  EXPECT_EQ(out["pass"], "");
  EXPECT_EQ(out["Authorization"], json::array({"Bearer [REDACTED:authorization]", "Basic [REDACTED:authorization]"}));
  EXPECT_EQ(out["credentials"]["user"], "bob");
  EXPECT_EQ(out["credentials"]["value"], json::array({"[REDACTED:credential]", "[REDACTED:credential]"}));
  EXPECT_EQ(out["credentials"]["nested"]["data"], "z");  // nested is not a holder: its members decide
  EXPECT_EQ(out["max_tokens"], 4096);
  EXPECT_EQ(out["note"], "ok");
}

TEST(RedactJson, NameValuePairsAndArgv) {
  Redactor r;
  json in = json::parse(R"({"env": [{"name": "GITHUB_TOKEN", "value": "abc"}, {"name": "HOME", "value": "/root"}],
                            "Parameters": [{"ParameterKey": "DbPassword", "ParameterValue": "pw"}],
                            "argv": ["curl", "-u", "me:pw", "x"], "args": ["--token", "t0k"]})");
  json out = r.redact_json(in);
  EXPECT_EQ(out["env"][0]["value"], "[REDACTED:credential]");
  EXPECT_EQ(out["env"][1]["value"], "/root");
  EXPECT_EQ(out["Parameters"][0]["ParameterValue"], "[REDACTED:credential]");
  EXPECT_EQ(out["argv"], json::array({"curl", "-u", "me:[REDACTED:credential]", "x"}));
  EXPECT_EQ(out["args"], json::array({"--token", "[REDACTED:credential]"}));
}

TEST(RedactJson, DeepNestingDoesNotRecurse) {
  Redactor r;
  json deep = "PASSWORD=x1";
  for (int k = 0; k < 200000; ++k) deep = json::array({std::move(deep)});
  json out = r.redact_json(deep);
  const json* p = &out;
  while (p->is_array()) p = &(*p)[0];
  EXPECT_EQ(*p, "PASSWORD=[REDACTED:credential]");
  // Take the values apart iteratively: nlohmann's destructor is, its copy is not.
  for (json* v : {&deep, &out}) {
    std::vector<json> pending;
    pending.push_back(std::move(*v));
    while (!pending.empty()) {
      json j = std::move(pending.back());
      pending.pop_back();
      if (j.is_array()) {
        for (json& e : j) pending.push_back(std::move(e));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// argv.

TEST(RedactArgv, FlagsAndTools) {
  Redactor r;
  using V = std::vector<std::string>;
  EXPECT_EQ(r.redact_argv({"app", "--password", "pw1", "--user", "bob"}),
            (V{"app", "--password", "[REDACTED:credential]", "--user", "bob"}));
  EXPECT_EQ(r.redact_argv({"app", "--password", "--verbose"}), (V{"app", "--password", "--verbose"}));
  EXPECT_EQ(r.redact_argv({"app", "--no-password", "x"}), (V{"app", "--no-password", "x"}));
  EXPECT_EQ(r.redact_argv({"app", "--token=abc", "GH_TOKEN=def"}),
            (V{"app", "--token=[REDACTED:credential]", "GH_TOKEN=[REDACTED:credential]"}));
  EXPECT_EQ(r.redact_argv({"/usr/bin/curl", "-uuser:pw", "-U", "proxy:pw2", "--user", "u"}),
            (V{"/usr/bin/curl", "-uuser:[REDACTED:credential]", "-U", "proxy:[REDACTED:credential]", "--user", "u"}));
  EXPECT_EQ(r.redact_argv({"mysqldump", "-pPW", "-p", "db"}), (V{"mysqldump", "-p[REDACTED:credential]", "-p", "db"}));
  EXPECT_EQ(r.redact_argv({"sshpass", "-pPW", "ssh"}), (V{"sshpass", "-p[REDACTED:credential]", "ssh"}));
  EXPECT_EQ(r.redact_argv({"podman", "-p", "8080"}), (V{"podman", "-p", "8080"}));  // not a login
  EXPECT_EQ(r.redact_argv({"sudo", "docker", "login", "-p", "pw", "reg"}),
            (V{"sudo", "docker", "login", "-p", "[REDACTED:credential]", "reg"}));
  EXPECT_EQ(r.redact_argv({"npm", "config", "set", "//registry.npmjs.org/:_authToken", "tok"}),
            (V{"npm", "config", "set", "//registry.npmjs.org/:_authToken", "[REDACTED:credential]"}));
  EXPECT_EQ(r.redact_argv({}), V{});
}

// ---------------------------------------------------------------------------------------------
// Text rules, one by one.

TEST(Redactor, NamesSecret) {
  for (const char* k : {"password", "DB_PASSWORD", "passwd", "client_secret", "GITHUB_TOKEN", "x-api-key", "apikey",
                        "SecretAccessKey", "aws_secret_access_key", "access_key", "private_key", "Authorization",
                        "Proxy-Authorization", "cookie", "Set-Cookie", "X-Amz-Signature", "DB_PASS", "dbPass",
                        "db-pwd", "auth", "basic_auth", "_authToken", "credentials", "sig"}) {
    EXPECT_TRUE(names_secret(k)) << k;
  }
  for (const char* k : {"max_tokens", "token_count", "tokenizer", "password_file", "password-stdin", "PWD", "OLDPWD",
                        "bypass", "oauth", "pass", "session_id", "key", "access_key_id", "private_key_id", "secret_name",
                        "token_type", "author", "WWW-Authenticate", "signature_version"}) {
    EXPECT_FALSE(names_secret(k)) << k;
  }
}

TEST(Redactor, AuthorizationKeepsTheScheme) {
  Redactor r;
  EXPECT_EQ(r.redact("Authorization: Bearer abc.def-ghi"), "Authorization: Bearer [REDACTED:authorization]");
  EXPECT_EQ(r.redact("authorization: token abc\nnext"), "authorization: token [REDACTED:authorization]\nnext");
  EXPECT_EQ(r.redact("Authorization: rawtokenvalue"), "Authorization: [REDACTED:authorization]");
  EXPECT_EQ(r.redact("log: Authorization: Basic dXNlcjpwYXNz, Accept: */*"),
            "log: Authorization: Basic [REDACTED:authorization], Accept: */*");
}

TEST(Redactor, UrlPasswords) {
  Redactor r;
  EXPECT_EQ(r.redact("https://u:p@ss@h/x"), "https://u:[REDACTED:url-password]@h/x");
  EXPECT_EQ(r.redact("see https://u:pw@h."), "see https://u:[REDACTED:url-password]@h.");
  EXPECT_EQ(r.redact("https://u@h https://h:8080/"), "https://u@h https://h:8080/");
}

TEST(Redactor, ArbitraryBytes) {
  Redactor r({"sekr\xff\xfe\x00t!"});
  std::string in = std::string("\x00\xff", 2) + fake_ghp() + std::string("\x00", 1) + "\xc3(PASSWORD=\xff\xfe" +
                   std::string("\x00", 1) + "z";
  std::string out = r.redact(in);
  EXPECT_EQ(out, std::string("\x00\xff", 2) + "[REDACTED:github-token]" + std::string("\x00", 1) +
                     "\xc3(PASSWORD=[REDACTED:credential]" + std::string("\x00", 1) + "z");
}

// Inputs built to make a backtracking or re-scanning implementation quadratic. A linear one
// takes milliseconds; the bound only catches a blow-up (minutes), so it holds on a loaded box.
TEST(Redactor, PathologicalInputsStayLinear) {
  Redactor r({"abcdefghij", "abcdefghik", std::string(100, 'a')});
  const size_t n = 1 << 20;
  auto repeat = [&](const std::string& unit) {
    std::string s;
    while (s.size() < n) s += unit;
    return s;
  };
  std::vector<std::string> inputs = {
      repeat("token="),       repeat("token=x"),     repeat("a:"),          repeat("eyJ"),
      repeat("eyJhbGci."),    repeat("-----BEGIN PRIVATE " "KEY-----"),     repeat("https://"),
      repeat("://@"),         repeat("Bearer "),     std::string(n, 'a'),   repeat("AKIA"),
      repeat("sk-"),          repeat("--password "), repeat("token=x("),    repeat("\"token\": \""),
      repeat("Authorization: "), repeat("x-api-key: a "), repeat("ghp_"),  repeat("[REDACTED:"),
      repeat("[REDACTED:jwt]"), repeat("abcdefghi"), repeat("\\\"password\\\":\\\""),
      repeat("x Authorization: y "), repeat("eyJa.eyJb.c"), repeat("Bearer a/"), repeat("password=$x "),
      repeat("{ token: a b "), repeat("--token \""), repeat(" -u a:b"), repeat("curl -u \"a:")};
  for (const std::string& in : inputs) {
    auto start = std::chrono::steady_clock::now();
    std::string once = r.redact(in);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30)) << in.substr(0, 40);
  }
}

}  // namespace
}  // namespace km::audit
