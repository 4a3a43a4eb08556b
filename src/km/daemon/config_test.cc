#include "km/daemon/config.h"

#include <gtest/gtest.h>

namespace km::daemon {
namespace {

TEST(Config, DefaultsAndOverrides) {
  profile::Findings f;
  auto c = parse_config("stateDir: /srv/km\nlinkPool: 10.200.0.0/20\nupstreamDNS: [192.0.2.53]\ngroup: ''\n", "kmd.yaml", f);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->state_dir, "/srv/km");
  EXPECT_EQ(c->runtime_dir, "/run/km");
  EXPECT_EQ(c->socket_path(), "/run/km/kmd.sock");
  EXPECT_EQ(c->group, "");
  EXPECT_EQ(c->upstream_dns.size(), 1u);
}

TEST(Config, UnknownKeysAndBadValuesAreLocatedErrors) {
  profile::Findings f;
  auto c = parse_config("stateDr: /x\nlinkPool: 10.0.0.0/30\nupstreamDNS: [dns.example]\nruntimeDir: relative\n", "kmd.yaml", f);
  EXPECT_FALSE(c);
  ASSERT_EQ(f.error_count(), 4u);
  EXPECT_EQ(f.items()[0].to_string(), "kmd.yaml:1:1: error: stateDr: unknown setting \"stateDr\" (did you mean \"stateDir\"?)");
}

}  // namespace
}  // namespace km::daemon
