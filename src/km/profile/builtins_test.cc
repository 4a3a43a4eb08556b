#include "km/profile/builtins.h"

#include <gtest/gtest.h>

#include <set>

#include "km/profile/inherit.h"
#include "km/profile/testing.h"

namespace km::profile {
namespace {

TEST(Builtins, TheSixAreThere) {
  std::set<std::string> names;
  for (const auto& b : builtins()) names.insert(b.name);
  for (const char* n : {"open-dev", "restricted-dev", "hardened", "sealed", "learn", "quickstart"}) {
    EXPECT_TRUE(names.count(n)) << n;
  }
}

TEST(Builtins, EachValidatesWithoutFindingsAndIsNamedForItself) {
  for (const auto& b : builtins()) {
    Checked c = check_builtin(b.name, {});
    ASSERT_TRUE(c.resolved) << b.name;
    EXPECT_TRUE(c.findings.empty()) << b.name << "\n" << testing::dump(c.findings);
    EXPECT_FALSE(c.resolved->abstract) << b.name;
    EXPECT_EQ(yaml::at_path(c.resolved->root, "metadata.name")->value, b.name);
    EXPECT_NE(yaml::at_path(c.resolved->root, "metadata.description"), nullptr) << b.name;
  }
}

size_t count_at(const yaml::Node& r, const char* path) {
  const yaml::Node* n = yaml::at_path(r, path);
  return n && n->is_sequence() ? n->items.size() : 0;
}

TEST(Builtins, SealedHasNoEgressAtAll) {
  Checked c = check_builtin("sealed", {});
  const yaml::Node& r = c.resolved->root;
  EXPECT_EQ(count_at(r, "spec.network.egress.allowedDNSSuffixes"), 0u);
  EXPECT_EQ(count_at(r, "spec.network.egress.allowedHosts"), 0u);
  EXPECT_EQ(count_at(r, "spec.network.egress.allowedCIDRs"), 0u);
  EXPECT_EQ(yaml::at_path(r, "spec.network.allowPrivateRanges")->value, "false");
}

TEST(Builtins, QuickstartRunsLocallyWithoutEgress) {
  Checked c = check_builtin("quickstart", {});
  const yaml::Node& r = c.resolved->root;
  EXPECT_EQ(yaml::at_path(r, "spec.runtime.substrate")->value, "local");
  EXPECT_EQ(count_at(r, "spec.network.egress.allowedDNSSuffixes") + count_at(r, "spec.network.egress.allowedHosts"), 0u);
}

TEST(Builtins, LearnIsWideOpenWithLearnMode) {
  Checked c = check_builtin("learn", {});
  const yaml::Node& r = c.resolved->root;
  EXPECT_EQ(yaml::at_path(r, "spec.observability.learnMode")->value, "true");
  EXPECT_EQ(yaml::at_path(r, "spec.network.egress.allowedDNSSuffixes[0]")->value, "*");
}

TEST(Builtins, UnknownNameIsAFinding) {
  Checked c = check_builtin("no-such-profile", {});
  EXPECT_FALSE(c.resolved);
  EXPECT_TRUE(c.findings.has_errors());
}

}  // namespace
}  // namespace km::profile
