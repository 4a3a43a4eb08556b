#include "km/enforcer/config.h"

#include <gtest/gtest.h>

#include "km/enforcer/enforcer.h"

namespace km::enforcer {
namespace {

TEST(EnforcerConfig, RoundTripsThroughJson) {
  Config c;
  c.sandbox = "sb-1a2b3c4d";
  c.link_address = "10.88.0.1";
  c.policy.dns_suffixes = {".example.com"};
  c.policy.hosts = {"api.other.com:8443"};
  c.policy.cidrs = {"203.0.113.0/24:443"};
  c.policy.https_only = true;
  c.upstream_dns = {"198.51.100.53", "[2001:db8::53]:5353"};
  c.pid_file = "/run/km/sandboxes/sb-1a2b3c4d/enforcer.pid";
  c.run_as_uid = 65534;
  auto back = config_from_json(to_json(c));
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(back->sandbox, c.sandbox);
  EXPECT_EQ(back->policy.dns_suffixes, c.policy.dns_suffixes);
  EXPECT_EQ(back->policy.hosts, c.policy.hosts);
  EXPECT_EQ(back->policy.cidrs, c.policy.cidrs);
  EXPECT_TRUE(back->policy.https_only);
  EXPECT_EQ(back->upstream_dns, c.upstream_dns);
  EXPECT_EQ(back->pid_file, c.pid_file);
  EXPECT_EQ(back->run_as_uid, 65534u);
}

TEST(EnforcerConfig, BadInputIsAnError) {
  EXPECT_FALSE(config_from_json("not json"));
  EXPECT_FALSE(config_from_json("{}"));
  EXPECT_FALSE(config_from_json(R"({"sandbox": 7, "linkAddress": "10.88.0.1"})"));
}

TEST(EnforcerConfig, UpstreamServers) {
  EXPECT_EQ(*parse_server("198.51.100.53"), std::make_pair(std::string("198.51.100.53"), uint16_t{53}));
  EXPECT_EQ(*parse_server("198.51.100.53:5353"), std::make_pair(std::string("198.51.100.53"), uint16_t{5353}));
  EXPECT_EQ(parse_server("[2001:db8::53]:53")->first, "2001:db8::53");
  EXPECT_FALSE(parse_server("dns.example.com"));
  EXPECT_FALSE(parse_server("198.51.100.53:0"));
  EXPECT_EQ(nameservers_from_resolv_conf("# c\nnameserver 192.0.2.1\nsearch x\nnameserver ::1\n"),
            (std::vector<std::string>{"192.0.2.1", "::1"}));
}

}  // namespace
}  // namespace km::enforcer
