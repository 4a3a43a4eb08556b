// The km binary as a user runs it: exit codes, the finding format, JSON output, resolution,
// the built-in catalogue, and that the JSON Schema accepts every built-in and fixture.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "run.h"

namespace {

using km::testing::run;
using km::testing::RunResult;

std::string km_bin() { return KM_BIN; }
std::string src(const std::string& rel) { return std::string(KM_SOURCE_DIR) + "/" + rel; }

RunResult km(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  args.insert(args.begin(), km_bin());
  return run(args, env);
}

std::string write_temp(const std::string& text) {
  char tmpl[] = "/tmp/km-cli-XXXXXX.yaml";
  int fd = mkstemps(tmpl, 5);
  std::ofstream(tmpl) << text;
  close(fd);
  return tmpl;
}

TEST(KmValidate, BuiltinAndFilesValidExitZero) {
  RunResult r = km({"validate", "quickstart", src("tests/profiles/team/agent.yaml")});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("quickstart: valid\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("agent.yaml: valid\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");
}

TEST(KmValidate, ErrorsUseTheFindingFormatAndExitOne) {
  std::string typo = src("tests/profiles/team/typo.yaml");
  RunResult r = km({"validate", typo, "sealed"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, typo + ":8:5: error: spec.lifecycle.idleTimout: unknown key \"idleTimout\" (did you mean \"idleTimeout\"?)\n");
  // Every file is checked, the good one too.
  EXPECT_NE(r.out.find("typo.yaml: invalid (1 error)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sealed: valid"), std::string::npos) << r.out;
}

TEST(KmValidate, WarningsNeverFail) {
  RunResult r = km({"validate", src("tests/profiles/warnings-only.yaml"), src("tests/profiles/klanker-maker-compat.yaml")});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("warnings-only.yaml: valid (1 warning)"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find(": warning: spec.network.egress.allowedCIDRs[0]: "), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("klanker-maker-compat.yaml: valid ("), std::string::npos) << r.out;
}

TEST(KmValidate, AbstractFragment) {
  RunResult r = km({"validate", src("tests/profiles/base/company.yaml")});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("valid (abstract fragment)"), std::string::npos);
}

TEST(KmValidate, JsonOutput) {
  RunResult r = km({"--output", "json", "validate", src("tests/profiles/team/typo.yaml"), "open-dev"});
  EXPECT_EQ(r.status, 1);
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_FALSE(j[0]["valid"].get<bool>());
  EXPECT_EQ(j[0]["findings"][0]["line"], 8);
  EXPECT_EQ(j[0]["findings"][0]["column"], 5);
  EXPECT_EQ(j[0]["findings"][0]["path"], "spec.lifecycle.idleTimout");
  EXPECT_EQ(j[0]["findings"][0]["severity"], "error");
  EXPECT_TRUE(j[1]["valid"].get<bool>());
}

TEST(KmValidate, JsonOutputStaysValidWithNonAsciiAndBadBytes) {
  std::string e40;
  for (int i = 0; i < 40; ++i) e40 += "é";
  std::string f = write_temp("apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\nmetadata: {name: a, prefix: a" + e40 +
                             "}\nspec: {lifecycle: {ttl: \"1" + e40 + "\", idleTimeout: 1h}, network: {egress: {allowedDNSSuffixes: [], allowedHosts: []}}}\n");
  RunResult r = km({"-o", "json", "validate", f});
  EXPECT_EQ(r.status, 1) << r.err;
  auto j = nlohmann::json::parse(r.out);  // throws (fails the test) if not valid JSON
  EXPECT_EQ(j[0]["errors"], 2);
  unlink(f.c_str());
}

TEST(KmValidate, MissingFileIsAnErrorNotACrash) {
  RunResult r = km({"validate", "/nonexistent/profile.yaml"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("/nonexistent/profile.yaml:1:1: error: (file): open /nonexistent/profile.yaml: No such file or directory"),
            std::string::npos) << r.err;
}

TEST(KmValidate, SearchPathFromEnvironment) {
  std::string f = write_temp(
      "apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\nmetadata: {name: x}\n"
      "extends: [restricted-dev, company]\nspec: {}\n");
  RunResult without = km({"validate", f});
  EXPECT_EQ(without.status, 1);
  EXPECT_NE(without.err.find("cannot find parent profile \"company\""), std::string::npos) << without.err;
  RunResult with = km({"validate", f}, {{"KM_PROFILE_PATH", "/nonexistent:" + src("tests/profiles/base")}});
  EXPECT_EQ(with.status, 0) << with.err;
  RunResult flag = km({"--profile-path", src("tests/profiles/base"), "validate", f});
  EXPECT_EQ(flag.status, 0) << flag.err;
  unlink(f.c_str());
}

TEST(KmUsage, ErrorsExitTwo) {
  for (std::vector<std::string> args : {std::vector<std::string>{}, {"validate"}, {"frobnicate"},
                                        {"--output", "xml", "profile", "list"}, {"profile"}}) {
    RunResult r = km(args);
    EXPECT_EQ(r.status, 2) << args.size();
    EXPECT_NE(r.err.find("km: error: "), std::string::npos) << r.err;
  }
  RunResult help = km({"--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("validate"), std::string::npos);
}

TEST(KmProfile, ResolvePrintsYamlThatValidatesAgain) {
  RunResult r = km({"profile", "resolve", src("tests/profiles/team/agent.yaml")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.find("extends"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("echo company-setup-done"), std::string::npos);
  std::string f = write_temp(r.out);
  RunResult again = km({"validate", f});
  EXPECT_EQ(again.status, 0) << again.err << r.out;
  RunResult twice = km({"profile", "resolve", f});
  EXPECT_EQ(twice.out, r.out);  // resolving a resolved profile changes nothing
  unlink(f.c_str());
}

TEST(KmProfile, ResolveJsonIsTyped) {
  RunResult r = km({"-o", "json", "profile", "resolve", src("tests/profiles/team/agent.yaml")});
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["spec"]["lifecycle"]["ttl"], "4h");
  EXPECT_EQ(j["spec"]["budget"]["warningThreshold"], 0.7);
  EXPECT_EQ(j["spec"]["network"]["httpsOnly"], true);
  auto cmds = j["spec"]["execution"]["initCommands"];
  EXPECT_EQ(cmds.back(), "echo company-setup-done");
  auto suffixes = j["spec"]["network"]["egress"]["allowedDNSSuffixes"];
  EXPECT_EQ(suffixes.back(), ".corp.example");
}

TEST(KmProfile, ResolveOfAnInvalidProfileFails) {
  RunResult r = km({"profile", "resolve", src("tests/profiles/team/typo.yaml")});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("km: error: "), std::string::npos);
}

TEST(KmProfile, ListShowsTheBuiltins) {
  RunResult r = km({"profile", "list"});
  ASSERT_EQ(r.status, 0);
  for (const char* n : {"open-dev", "restricted-dev", "hardened", "sealed", "learn", "quickstart"}) {
    EXPECT_NE(r.out.find(std::string("\n") + n + " "), std::string::npos) << n << "\n" << r.out;
  }
  RunResult j = km({"--output", "json", "profile", "list"});
  auto arr = nlohmann::json::parse(j.out);
  EXPECT_EQ(arr.size(), 6u);
  for (const auto& p : arr) {
    if (p["name"] == "sealed") {
      EXPECT_EQ(p["egress"], "none");
    }
    if (p["name"] == "learn") {
      EXPECT_EQ(p["egress"], "any");
    }
  }
}

TEST(KmProfile, ShowPrintsTheEmbeddedText) {
  RunResult r = km({"profile", "show", "sealed"});
  ASSERT_EQ(r.status, 0);
  std::ifstream in(src("src/km/profile/builtins/sealed.yaml"));
  std::stringstream want;
  want << in.rdbuf();
  EXPECT_EQ(r.out, want.str());
  RunResult bad = km({"profile", "show", "seald"});
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("hint: did you mean sealed?"), std::string::npos) << bad.err;
}

TEST(KmProfile, ReferenceDocsAreGeneratedFromTheSchema) {
  RunResult r = km({"profile", "schema", "--markdown"});
  ASSERT_EQ(r.status, 0);
  std::ifstream in(src("docs/profile-reference.md"));
  std::stringstream doc;
  doc << in.rdbuf();
  EXPECT_NE(doc.str().find(r.out), std::string::npos)
      << "docs/profile-reference.md is stale: regenerate its table with `km profile schema --markdown`";
}

// The JSON Schema, checked by an independent validator (Debian's python3-jsonschema).
TEST(KmProfile, JsonSchemaAcceptsResolvedProfilesAndRejectsBadOnes) {
  if (run({"/usr/bin/python3", "-c", "import jsonschema"}).status != 0) {
    GTEST_SKIP() << "python3-jsonschema is not installed (scripts/setup installs it)";
  }
  RunResult schema = km({"profile", "schema"});
  ASSERT_EQ(schema.status, 0);
  auto s = nlohmann::json::parse(schema.out);
  EXPECT_EQ(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
  char dir_tmpl[] = "/tmp/km-schema-XXXXXX";
  std::string dir = mkdtemp(dir_tmpl);
  std::ofstream(dir + "/schema.json") << schema.out;
  std::vector<std::string> docs = {"open-dev", "restricted-dev", "hardened", "sealed", "learn", "quickstart",
                                   src("tests/profiles/team/agent.yaml"), src("tests/profiles/klanker-maker-compat.yaml")};
  int i = 0;
  for (const auto& d : docs) {
    RunResult j = km({"-o", "json", "profile", "resolve", d});
    ASSERT_EQ(j.status, 0) << d << j.err;
    std::ofstream(dir + "/good" + std::to_string(i++) + ".json") << j.out;
  }
  // What editors open: a child that extends others and an abstract fragment, unresolved.
  std::ofstream(dir + "/good-child.json")
      << R"({"apiVersion":"klankermaker.ai/v1alpha2","kind":"SandboxProfile","metadata":{"name":"team-agent","prefix":"team"},)"
      << R"("extends":["restricted-dev","../base/company"],"spec":{"lifecycle":{"ttl":"4h"},"execution":{"initCommands":["echo team-setup"]}}})";
  std::ofstream(dir + "/good-fragment.json")
      << R"({"apiVersion":"klankermaker.ai/v1alpha2","kind":"SandboxProfile","metadata":{"name":"company","abstract":true},)"
      << R"("spec":{"network":{"egress":{"allowedDNSSuffixes":[".corp.example"]}}}})";
  // Bad: an unknown key and a wrong type, which the schema must reject too.
  std::ofstream(dir + "/bad0.json") << R"({"apiVersion":"x/v1alpha2","kind":"SandboxProfile","metadata":{"name":"a"},"spec":{"lifecycle":{"ttl":"1h","idleTimeout":"1h"},"network":{"egress":{"allowedDNSSuffixes":[],"allowedHosts":[]}},"lifecylce":{}}})";
  std::ofstream(dir + "/bad1.json") << R"({"apiVersion":"x/v1alpha2","kind":"SandboxProfile","metadata":{"name":"a"},"spec":{"lifecycle":{"ttl":"8 hours","idleTimeout":"1h"},"network":{"egress":{"allowedDNSSuffixes":[],"allowedHosts":[]}}}})";
  const char* script = R"PY(
import glob, json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1] + "/schema.json"))
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema)
ok = True
for f in sorted(glob.glob(sys.argv[1] + "/good*.json")):
    errs = list(v.iter_errors(json.load(open(f))))
    if errs:
        ok = False
        print("rejected", f, errs[0].message)
for f in sorted(glob.glob(sys.argv[1] + "/bad*.json")):
    if not list(v.iter_errors(json.load(open(f)))):
        ok = False
        print("accepted", f)
sys.exit(0 if ok else 1)
)PY";
  RunResult py = run({"/usr/bin/python3", "-c", script, dir});
  EXPECT_EQ(py.status, 0) << py.out << py.err;
  std::system(("rm -rf '" + dir + "'").c_str());
}

}  // namespace
