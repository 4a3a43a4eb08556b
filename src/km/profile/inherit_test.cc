#include "km/profile/inherit.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "km/profile/testing.h"
#include "km/yaml/parse.h"

namespace km::profile {
namespace {

using testing::dump;
using testing::find;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/km-inherit-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }
  std::string write(const std::string& rel, const std::string& text) const {
    std::string full = path_ + "/" + rel;
    std::string dir = full.substr(0, full.rfind('/'));
    std::system(("mkdir -p '" + dir + "'").c_str());
    std::ofstream(full) << text;
    return full;
  }

 private:
  std::string path_;
};

// A fragment header: abstract, so it validates without required keys.
std::string fragment(const std::string& name, const std::string& extends, const std::string& spec) {
  std::string s = "apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\nmetadata:\n  name: " + name +
                  "\n  abstract: true\n";
  if (!extends.empty()) s += "extends: " + extends + "\n";
  return s + "spec:\n" + spec;
}

std::string leaf(const std::string& extends, const std::string& spec) {
  std::string s = "apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\nmetadata:\n  name: leaf\n";
  if (!extends.empty()) s += "extends: " + extends + "\n";
  return s + "spec:\n" + spec;
}

const char* kLifecycle = "  lifecycle: {ttl: 8h, idleTimeout: 1h}\n";
const char* kNetwork = "  network: {egress: {allowedDNSSuffixes: [.base.example], allowedHosts: []}}\n";

std::vector<std::string> strings_at(const yaml::Node& root, const char* path) {
  std::vector<std::string> out;
  const yaml::Node* n = yaml::at_path(root, path);
  if (n && n->is_sequence()) {
    for (const auto& i : n->items) out.push_back(i.value);
  }
  return out;
}

TEST(Merge, MapsDeepScalarsLastListsUnion) {
  auto a = yaml::parse("m: {x: 1, y: {p: 1}}\nl: [a, b]\ns: 1\n", "a");
  auto b = yaml::parse("m: {y: {q: 2}, z: 3}\nl: [b, c, a, d]\ns: 2\n", "b");
  yaml::Node m = merge(*a, *b);
  EXPECT_EQ(yaml::at_path(m, "m.x")->value, "1");
  EXPECT_EQ(yaml::at_path(m, "m.y.p")->value, "1");
  EXPECT_EQ(yaml::at_path(m, "m.y.q")->value, "2");
  EXPECT_EQ(yaml::at_path(m, "m.z")->value, "3");
  EXPECT_EQ(yaml::at_path(m, "s")->value, "2");
  EXPECT_EQ(strings_at(m, "l"), (std::vector<std::string>{"a", "b", "c", "d"}));
  // Values keep the file they came from.
  EXPECT_EQ(yaml::at_path(m, "m.x")->mark.file_name(), "a");
  EXPECT_EQ(yaml::at_path(m, "m.z")->mark.file_name(), "b");
}

TEST(Merge, ObjectListItemsDedupDeeply) {
  auto a = yaml::parse("l: [{a: 1, b: [x]}, {a: 2}]\n", "a");
  auto b = yaml::parse("l: [{a: 2}, {a: 1, b: [x]}, {a: 1, b: [y]}]\n", "b");
  yaml::Node m = merge(*a, *b);
  EXPECT_EQ(yaml::at_path(m, "l")->items.size(), 3u);
}

TEST(Merge, NullInheritsInsteadOfErasing) {
  auto a = yaml::parse("k: {x: 1}\ns: 1\n", "a");
  auto b = yaml::parse("k:\ns: ~\n", "b");
  yaml::Node m = merge(*a, *b);
  ASSERT_NE(yaml::at_path(m, "k.x"), nullptr);
  EXPECT_EQ(yaml::at_path(m, "s")->value, "1");
}

TEST(Merge, TypeChangeIsLastWins) {
  auto a = yaml::parse("k: {x: 1}\n", "a");
  auto b = yaml::parse("k: [1]\n", "b");
  EXPECT_TRUE(yaml::at_path(merge(*a, *b), "k")->is_sequence());
}

TEST(Inherit, SingleParentFromBuiltin) {
  TempDir d;
  std::string f = d.write("child.yaml", leaf("hardened", "  lifecycle: {ttl: 2h}\n"));
  Checked c = check_file(f, {});
  ASSERT_TRUE(c.resolved);
  EXPECT_FALSE(c.findings.has_errors()) << dump(c.findings);
  const yaml::Node& r = c.resolved->root;
  EXPECT_EQ(yaml::at_path(r, "spec.lifecycle.ttl")->value, "2h");           // child wins
  EXPECT_EQ(yaml::at_path(r, "spec.lifecycle.idleTimeout")->value, "1h");   // from hardened
  EXPECT_EQ(yaml::at_path(r, "spec.network.enforcement")->value, "both");
  EXPECT_EQ(yaml::at_path(r, "metadata.name")->value, "leaf");
  EXPECT_EQ(r.find("extends"), nullptr);
  EXPECT_EQ(c.resolved->sources.front(), f);
  EXPECT_EQ(c.resolved->sources.back(), "builtin:hardened");
}

TEST(Inherit, BuiltinsWinOverLocalFilesOfTheSameName) {
  TempDir d;
  d.write("sealed.yaml", fragment("sealed", "", "  lifecycle: {ttl: 99h}\n"));
  std::string f = d.write("child.yaml", leaf("sealed", ""));
  Checked c = check_file(f, {});
  ASSERT_TRUE(c.resolved);
  const yaml::Node* ttl = yaml::at_path(c.resolved->root, "spec.lifecycle.ttl");
  ASSERT_NE(ttl, nullptr) << dump(c.findings);
  EXPECT_EQ(ttl->value, "1h");
}

TEST(Inherit, SeveralParentsFoldLeftToRightChildLast) {
  TempDir d;
  d.write("a.yaml", fragment("a", "", std::string(kLifecycle) + "  execution: {env: {X: a, A: a}, initCommands: [a1, shared]}\n" + kNetwork));
  d.write("b.yaml", fragment("b", "", "  execution: {env: {X: b, B: b}, initCommands: [shared, b1]}\n  network: {egress: {allowedDNSSuffixes: [.b.example], allowedHosts: [b.example]}}\n"));
  std::string f = d.write("leaf.yaml", leaf("[a, b]", "  execution: {env: {X: leaf}, initCommands: [c1]}\n"));
  Checked c = check_file(f, {});
  ASSERT_TRUE(c.resolved);
  EXPECT_FALSE(c.findings.has_errors()) << dump(c.findings);
  const yaml::Node& r = c.resolved->root;
  EXPECT_EQ(yaml::at_path(r, "spec.execution.env.X")->value, "leaf");
  EXPECT_EQ(yaml::at_path(r, "spec.execution.env.A")->value, "a");
  EXPECT_EQ(yaml::at_path(r, "spec.execution.env.B")->value, "b");
  EXPECT_EQ(strings_at(r, "spec.execution.initCommands"), (std::vector<std::string>{"a1", "shared", "b1", "c1"}));
  EXPECT_EQ(strings_at(r, "spec.network.egress.allowedDNSSuffixes"),
            (std::vector<std::string>{".base.example", ".b.example"}));
}

TEST(Inherit, DiamondIsNotACycleAndSharedBaseCountsOnce) {
  TempDir d;
  d.write("base.yaml", fragment("base", "", std::string(kLifecycle) + kNetwork + "  execution: {initCommands: [base]}\n"));
  d.write("left.yaml", fragment("left", "base", "  execution: {initCommands: [left]}\n"));
  d.write("right.yaml", fragment("right", "base", "  execution: {initCommands: [right]}\n"));
  std::string f = d.write("leaf.yaml", leaf("[left, right]", ""));
  Checked c = check_file(f, {});
  ASSERT_TRUE(c.resolved);
  EXPECT_FALSE(c.findings.has_errors()) << dump(c.findings);
  EXPECT_EQ(strings_at(c.resolved->root, "spec.execution.initCommands"),
            (std::vector<std::string>{"base", "left", "right"}));
}

TEST(Inherit, CycleIsAnErrorNamingTheChain) {
  TempDir d;
  d.write("a.yaml", fragment("a", "b", kLifecycle));
  d.write("b.yaml", fragment("b", "c", ""));
  d.write("c.yaml", fragment("c", "a", ""));
  std::string f = d.write("leaf.yaml", leaf("a", kNetwork));
  Checked c = check_file(f, {});
  ASSERT_TRUE(c.findings.has_errors());
  bool found = false;
  for (const auto& i : c.findings.items()) {
    if (i.message.find("extends cycle:") != std::string::npos) {
      found = true;
      EXPECT_NE(i.message.find("a.yaml -> "), std::string::npos) << i.message;
      EXPECT_NE(i.message.find("b.yaml -> "), std::string::npos) << i.message;
      EXPECT_NE(i.message.find("c.yaml -> "), std::string::npos) << i.message;
      EXPECT_EQ(i.mark.file_name(), d.path() + "/c.yaml");  // at the extends that closes the loop
      EXPECT_EQ(i.path, "extends");
    }
  }
  EXPECT_TRUE(found) << dump(c.findings);
}

TEST(Inherit, SelfReferenceIsACycle) {
  TempDir d;
  std::string f = d.write("self.yaml", leaf("self", std::string(kLifecycle) + kNetwork));
  Checked c = check_file(f, {});
  ASSERT_TRUE(c.findings.has_errors());
  EXPECT_NE(c.findings.items()[0].message.find("extends cycle"), std::string::npos) << dump(c.findings);
}

// A chain leaf -> p1 -> ... -> pN.
Checked chain_of(TempDir& d, int parents) {
  for (int i = 1; i <= parents; ++i) {
    std::string ext = i < parents ? "p" + std::to_string(i + 1) : "";
    std::string spec = i == parents ? std::string(kLifecycle) + kNetwork : "  execution: {initCommands: [c" + std::to_string(i) + "]}\n";
    d.write("p" + std::to_string(i) + ".yaml", fragment("p" + std::to_string(i), ext, spec));
  }
  return check_file(d.write("leaf.yaml", leaf("p1", "")), {});
}

TEST(Inherit, DepthTenIsAcceptedElevenIsNot) {
  {
    TempDir d;
    Checked c = chain_of(d, 10);
    EXPECT_FALSE(c.findings.has_errors()) << dump(c.findings);
    EXPECT_EQ(strings_at(c.resolved->root, "spec.execution.initCommands").size(), 9u);
  }
  {
    TempDir d;
    Checked c = chain_of(d, 11);
    ASSERT_TRUE(c.findings.has_errors());
    bool found = false;
    for (const auto& i : c.findings.items()) found = found || i.message.find("deeper than 10 levels") != std::string::npos;
    EXPECT_TRUE(found) << dump(c.findings);
  }
}

TEST(Inherit, DepthIsCheckedThroughAlreadyResolvedParents) {
  TempDir d;
  // p1 -> ... -> p10 (10 levels), and a1 -> ... -> a6 -> p5 (a1's chain is 12 levels).
  for (int i = 1; i <= 10; ++i) {
    std::string ext = i < 10 ? "p" + std::to_string(i + 1) : "";
    d.write("p" + std::to_string(i) + ".yaml", fragment("p" + std::to_string(i), ext, i == 10 ? std::string(kLifecycle) + kNetwork : ""));
  }
  for (int i = 1; i <= 6; ++i) {
    std::string ext = i < 6 ? "a" + std::to_string(i + 1) : "p5";
    d.write("a" + std::to_string(i) + ".yaml", fragment("a" + std::to_string(i), ext, ""));
  }
  for (const char* order : {"[p5, a1]", "[a1, p5]", "[a1]"}) {
    Checked c = check_file(d.write("leaf.yaml", leaf(order, "")), {});
    bool found = false;
    for (const auto& i : c.findings.items()) found = found || i.message.find("deeper than 10 levels") != std::string::npos;
    EXPECT_TRUE(found) << order << "\n" << dump(c.findings);
  }
}

TEST(Inherit, RepeatedParentsCountOnceAndLongListsAreRefused) {
  TempDir d;
  d.write("big.yaml", fragment("big", "", std::string(kLifecycle) + kNetwork));
  std::string many = "[";
  for (int i = 0; i < 1000; ++i) many += i ? ", big" : "big";
  many += "]";
  Checked c = check_file(d.write("leaf.yaml", leaf(many, "")), {});
  EXPECT_FALSE(c.findings.has_errors()) << dump(c.findings);  // 1000 x the same name = 1 parent
  std::string distinct = "[";
  for (int i = 0; i < 40; ++i) {
    d.write("f" + std::to_string(i) + ".yaml", fragment("f" + std::to_string(i), "", ""));
    distinct += (i ? ", f" : "f") + std::to_string(i);
  }
  distinct += ", big]";
  Checked c2 = check_file(d.write("leaf2.yaml", leaf(distinct, "")), {});
  const Finding* e = find(c2.findings, "extends");
  ASSERT_NE(e, nullptr) << dump(c2.findings);
  EXPECT_NE(e->message.find("at most 32"), std::string::npos);
}

TEST(Inherit, ExactNameIsTriedBeforeExtensions) {
  TempDir d;
  d.write("base", fragment("exact", "", std::string(kLifecycle) + kNetwork + "  execution: {env: {WHICH: exact}}\n"));
  d.write("base.yaml", fragment("yaml", "", std::string(kLifecycle) + kNetwork + "  execution: {env: {WHICH: yaml}}\n"));
  Checked c = check_file(d.write("leaf.yaml", leaf("base", "")), {});
  ASSERT_TRUE(c.resolved);
  EXPECT_EQ(yaml::at_path(c.resolved->root, "spec.execution.env.WHICH")->value, "exact");
}

TEST(Inherit, TypoInChildIsReportedAtTheChildsPosition) {
  TempDir d;
  std::string f = d.write("child.yaml", leaf("open-dev", "  lifecycle:\n    tll: 2h\n"));
  Checked c = check_file(f, {});
  const Finding* e = find(c.findings, "spec.lifecycle.tll");
  ASSERT_NE(e, nullptr) << dump(c.findings);
  EXPECT_EQ(e->mark.file_name(), f);
  EXPECT_EQ(e->mark.line, 8);
  EXPECT_EQ(e->mark.col, 5);
  EXPECT_NE(e->message.find("did you mean \"ttl\""), std::string::npos);
}

TEST(Inherit, BadValueInParentIsReportedInTheParentFile) {
  TempDir d;
  std::string parent = d.write("base.yaml", fragment("base", "", "  lifecycle: {ttl: 8h, idleTimeout: 1h, teardownPolicy: explode}\n"));
  std::string f = d.write("child.yaml", leaf("base", kNetwork));
  Checked c = check_file(f, {});
  const Finding* e = find(c.findings, "spec.lifecycle.teardownPolicy");
  ASSERT_NE(e, nullptr) << dump(c.findings);
  EXPECT_EQ(e->mark.file_name(), parent);
  EXPECT_EQ(e->mark.line, 7);
}

TEST(Inherit, UnknownKeyInAbstractFragmentIsStillAnError) {
  TempDir d;
  std::string f = d.write("frag.yaml", fragment("frag", "", "  netwrk: {}\n"));
  Checked c = check_file(f, {});
  ASSERT_TRUE(c.resolved);
  EXPECT_TRUE(c.resolved->abstract);
  const Finding* e = find(c.findings, "spec.netwrk");
  ASSERT_NE(e, nullptr) << dump(c.findings);
  // Fragments do not need the required keys.
  EXPECT_EQ(find(c.findings, "spec.lifecycle"), nullptr);
  EXPECT_EQ(c.findings.error_count(), 1u) << dump(c.findings);
}

TEST(Inherit, AbstractIsNotInheritedAndIsStripped) {
  TempDir d;
  d.write("base.yaml", fragment("base", "", std::string(kLifecycle) + kNetwork));
  std::string f = d.write("leaf.yaml", leaf("base", ""));
  Checked c = check_file(f, {});
  ASSERT_TRUE(c.resolved);
  EXPECT_FALSE(c.resolved->abstract);
  EXPECT_EQ(yaml::at_path(c.resolved->root, "metadata.abstract"), nullptr);
  EXPECT_FALSE(c.findings.has_errors()) << dump(c.findings);
}

TEST(Inherit, MissingParentNamesWhereItLookedAndSuggests) {
  TempDir d;
  std::string f = d.write("leaf.yaml", leaf("[open-dve]", std::string(kLifecycle) + kNetwork));
  Checked c = check_file(f, {{"/nonexistent/km-profiles"}});
  const Finding* e = find(c.findings, "extends[0]");
  ASSERT_NE(e, nullptr) << dump(c.findings);
  EXPECT_NE(e->message.find("cannot find parent profile \"open-dve\""), std::string::npos);
  EXPECT_NE(e->message.find("/nonexistent/km-profiles"), std::string::npos);
  EXPECT_NE(e->message.find("did you mean the built-in \"open-dev\""), std::string::npos);
  EXPECT_EQ(e->mark.line, 5);
}

TEST(Inherit, LookupRelativeThenSearchPaths) {
  TempDir d;
  d.write("lib/base/net.yaml", fragment("net", "", kNetwork));
  d.write("profiles/base/life.yml", fragment("life", "", kLifecycle));
  // Relative to the extending file: profiles/team.yaml extends base/life (profiles/base/life.yml).
  std::string f = d.write("profiles/team.yaml", leaf("[base/life, base/net]", ""));
  Checked without = check_file(f, {});
  EXPECT_NE(find(without.findings, "extends[1]"), nullptr) << dump(without.findings);
  Checked with = check_file(f, {{d.path() + "/lib"}});
  EXPECT_FALSE(with.findings.has_errors()) << dump(with.findings);
}

TEST(Inherit, ParentsOfParentsResolveRelativeToTheirOwnFile) {
  TempDir d;
  d.write("shared/net.yaml", fragment("net", "", kNetwork));
  d.write("shared/base.yaml", fragment("base", "net", kLifecycle));
  std::string f = d.write("team/leaf.yaml", leaf("../shared/base", ""));
  Checked c = check_file(f, {});
  EXPECT_FALSE(c.findings.has_errors()) << dump(c.findings);
}

TEST(Inherit, ParentWithBrokenYamlIsReportedInBothPlaces) {
  TempDir d;
  std::string parent = d.write("broken.yaml", "spec: [unclosed\n");
  std::string f = d.write("leaf.yaml", leaf("broken", std::string(kLifecycle) + kNetwork));
  Checked c = check_file(f, {});
  bool in_parent = false, at_extends = false;
  for (const auto& i : c.findings.items()) {
    in_parent = in_parent || (i.mark.file_name() == parent && i.path == "(syntax)");
    at_extends = at_extends || (i.mark.file_name() == f && i.path == "extends");
  }
  EXPECT_TRUE(in_parent && at_extends) << dump(c.findings);
}

TEST(Inherit, ExtendsOfTheWrongShape) {
  TempDir d;
  std::string f = d.write("leaf.yaml", leaf("{a: b}", std::string(kLifecycle) + kNetwork));
  Checked c = check_file(f, {});
  const Finding* e = find(c.findings, "extends");
  ASSERT_NE(e, nullptr) << dump(c.findings);
  EXPECT_NE(e->message.find("expected a profile name or a list"), std::string::npos);
  std::string g = d.write("leaf2.yaml", leaf("[open-dev, [x]]", ""));
  Checked c2 = check_file(g, {});
  EXPECT_NE(find(c2.findings, "extends[1]"), nullptr) << dump(c2.findings);
}

TEST(Inherit, InitCommandsAppendRunsAfterEveryParent) {
  TempDir d;
  d.write("base.yaml", fragment("base", "", std::string(kLifecycle) + kNetwork +
                                                "  execution: {initCommands: [b1], initCommandsAppend: [b-last]}\n"));
  d.write("mid.yaml", fragment("mid", "base", "  execution: {initCommands: [m1], initCommandsAppend: [m-last]}\n"));
  std::string f = d.write("leaf.yaml", leaf("mid", "  execution: {initCommands: [l1]}\n"));
  Checked c = check_file(f, {});
  ASSERT_TRUE(c.resolved);
  EXPECT_FALSE(c.findings.has_errors()) << dump(c.findings);
  EXPECT_EQ(strings_at(c.resolved->root, "spec.execution.initCommands"),
            (std::vector<std::string>{"b1", "m1", "l1", "b-last", "m-last"}));
  EXPECT_EQ(yaml::at_path(c.resolved->root, "spec.execution.initCommandsAppend"), nullptr);
}

TEST(Inherit, ListsOnlyGrowAndDuplicatesCollapse) {
  TempDir d;
  d.write("base.yaml", fragment("base", "", std::string(kLifecycle) +
                                                "  network: {egress: {allowedDNSSuffixes: [.a.example, .b.example], allowedHosts: [h.example]}}\n"));
  std::string f = d.write("leaf.yaml", leaf("base", "  network: {egress: {allowedDNSSuffixes: [.b.example, .c.example], allowedHosts: []}}\n"));
  Checked c = check_file(f, {});
  ASSERT_TRUE(c.resolved);
  EXPECT_EQ(strings_at(c.resolved->root, "spec.network.egress.allowedDNSSuffixes"),
            (std::vector<std::string>{".a.example", ".b.example", ".c.example"}));
  EXPECT_EQ(strings_at(c.resolved->root, "spec.network.egress.allowedHosts"), (std::vector<std::string>{"h.example"}));
}

TEST(Inherit, UnreadableLeafIsAFinding) {
  Checked c = check_file("/nonexistent/km/profile.yaml", {});
  EXPECT_FALSE(c.resolved);
  ASSERT_EQ(c.findings.error_count(), 1u);
  EXPECT_NE(c.findings.items()[0].message.find("No such file"), std::string::npos);
}

TEST(Inherit, OversizedParentIsRefused) {
  TempDir d;
  d.write("huge.yaml", "a: \"" + std::string(kMaxProfileBytes + 10, 'x') + "\"\n");
  std::string f = d.write("leaf.yaml", leaf("huge", std::string(kLifecycle) + kNetwork));
  Checked c = check_file(f, {});
  const Finding* e = find(c.findings, "extends");
  ASSERT_NE(e, nullptr) << dump(c.findings);
  EXPECT_NE(e->message.find("larger than"), std::string::npos);
}

}  // namespace
}  // namespace km::profile
