#include "km/proxy/egress_policy.h"

#include <gtest/gtest.h>

namespace km::proxy {
namespace {

EgressPolicy make(EgressPolicy::Lists lists) {
  auto p = EgressPolicy::compile(lists);
  EXPECT_TRUE(p) << p.error().to_string();
  return *p;
}

IpAddress ip(std::string_view s) { return *IpAddress::parse(s); }

TEST(EgressPolicy, NamesMatchSuffixesAtLabelBoundaries) {
  auto p = make({.dns_suffixes = {".allowed.test"}, .hosts = {"api.other.test:8443"}});
  EXPECT_TRUE(p.check_name("allowed.test").allowed);
  EXPECT_TRUE(p.check_name("API.Allowed.Test.").allowed);
  EXPECT_FALSE(p.check_name("notallowed.test").allowed);
  EXPECT_FALSE(p.check_name("api.allowed.test.evil.test").allowed);
  EXPECT_FALSE(p.check_name("allowed.test..").allowed);
  EXPECT_TRUE(p.check_name("api.other.test").allowed);  // hosts are resolvable
  EXPECT_FALSE(p.check_name("x.api.other.test").allowed);
  auto d = p.check_name("evil.test");
  EXPECT_EQ(d.rule, "default deny");
  EXPECT_NE(d.hint.find("allowedDNSSuffixes"), std::string::npos);
  EXPECT_EQ(p.check_name("www.allowed.test").rule, "allowedDNSSuffixes: .allowed.test");
}

TEST(EgressPolicy, EmptyListsDenyEverythingAndStarAllowsAll) {
  auto none = make({});
  EXPECT_FALSE(none.check_name("example.com").allowed);
  EXPECT_FALSE(none.check_host("example.com", 443).allowed);
  EXPECT_FALSE(none.allows_any_egress());
  auto all = make({.dns_suffixes = {"*"}});
  EXPECT_TRUE(all.check_name("anything.example").allowed);
  EXPECT_TRUE(all.check_host("anything.example", 22).allowed);
  EXPECT_FALSE(all.check_name("bad name").allowed);
}

TEST(EgressPolicy, HostRulesHonourPorts) {
  auto p = make({.hosts = {"api.example.com:8443", "git.example.com"}});
  EXPECT_TRUE(p.check_host("api.example.com", 8443).allowed);
  auto d = p.check_host("api.example.com", 443);
  EXPECT_FALSE(d.allowed);
  EXPECT_NE(d.hint.find("api.example.com:443"), std::string::npos);
  EXPECT_TRUE(p.check_host("git.example.com", 22).allowed);
  EXPECT_FALSE(p.check_host("www.git.example.com", 443).allowed);
}

TEST(EgressPolicy, CidrRulesCoverAddressAndPort) {
  auto p = make({.cidrs = {"203.0.113.0/24:443", "[2001:db8::/32]:22", "198.51.100.7"}});
  EXPECT_TRUE(p.check_cidr(ip("203.0.113.9"), 443).allowed);
  EXPECT_FALSE(p.check_cidr(ip("203.0.113.9"), 80).allowed);
  EXPECT_FALSE(p.check_cidr(ip("203.0.114.9"), 443).allowed);
  EXPECT_TRUE(p.check_cidr(ip("::ffff:203.0.113.9"), 443).allowed);  // mapped is IPv4
  EXPECT_TRUE(p.check_cidr(ip("2001:db8::1"), 22).allowed);
  EXPECT_TRUE(p.check_cidr(ip("198.51.100.7"), 1).allowed);
  EXPECT_FALSE(p.check_cidr(ip("198.51.100.8"), 1).allowed);
}

TEST(EgressPolicy, SpecialRangesAreDeniedUnlessNamed) {
  auto p = make({.dns_suffixes = {"*"}});
  for (auto a : {"10.1.2.3", "127.0.0.1", "169.254.169.254", "172.16.0.1", "192.168.1.1", "100.64.0.1", "0.0.0.0",
                 "224.0.0.1", "255.255.255.255", "::1", "fe80::1", "fd00:ec2::254", "fc00::1", "::ffff:127.0.0.1",
                 "::ffff:10.0.0.1", "64:ff9b::a00:1"}) {
    EXPECT_FALSE(p.check_dial(ip(a), 443).allowed) << a;
  }
  EXPECT_EQ(*EgressPolicy::special_range(ip("169.254.169.254")), "metadata");
  EXPECT_EQ(*EgressPolicy::special_range(ip("fd00:ec2::254")), "metadata");
  EXPECT_TRUE(p.check_dial(ip("198.51.100.10"), 443).allowed);
  EXPECT_TRUE(p.check_dial(ip("2001:db8::1"), 443).allowed);

  auto priv = make({.dns_suffixes = {"*"}, .allow_private_ranges = true});
  EXPECT_TRUE(priv.check_dial(ip("10.1.2.3"), 443).allowed);
  EXPECT_TRUE(priv.check_dial(ip("fd12::1"), 443).allowed);
  // The host's loopback and metadata stay closed without an explicit CIDR.
  EXPECT_FALSE(priv.check_dial(ip("127.0.0.1"), 443).allowed);
  EXPECT_FALSE(priv.check_dial(ip("169.254.169.254"), 80).allowed);

  auto named = make({.cidrs = {"169.254.169.254/32:80"}});
  EXPECT_TRUE(named.check_dial(ip("169.254.169.254"), 80).allowed);
  EXPECT_FALSE(named.check_dial(ip("169.254.169.254"), 81).allowed);
}

TEST(EgressPolicy, TheHostsOwnAddressesNeedAnExplicitCidr) {
  auto p = make({.dns_suffixes = {"*"}, .allow_private_ranges = true});
  p.set_host_addresses({ip("198.51.100.1"), ip("10.0.0.5")});
  EXPECT_FALSE(p.check_dial(ip("198.51.100.1"), 22).allowed);
  EXPECT_FALSE(p.check_dial(ip("::ffff:198.51.100.1"), 22).allowed);
  EXPECT_FALSE(p.check_dial(ip("10.0.0.5"), 80).allowed);  // even with allowPrivateRanges
  EXPECT_TRUE(p.check_dial(ip("10.0.0.6"), 80).allowed);
  EXPECT_TRUE(p.check_dial(ip("198.51.100.2"), 22).allowed);
  auto named = make({.cidrs = {"198.51.100.1/32:8080"}});
  named.set_host_addresses({ip("198.51.100.1")});
  EXPECT_TRUE(named.check_dial(ip("198.51.100.1"), 8080).allowed);
  EXPECT_FALSE(named.check_dial(ip("198.51.100.1"), 8081).allowed);
}

TEST(AddressBook, BindsWithFloorAndEvicts) {
  AddressBook book(std::chrono::seconds(60), 100);
  auto t0 = AddressBook::Clock::time_point{};
  book.bind("API.Example.com.", ip("198.51.100.10"), 5, t0);
  EXPECT_TRUE(book.resolved_to("api.example.com", ip("198.51.100.10"), t0 + std::chrono::seconds(59)));
  EXPECT_TRUE(book.resolved_to("api.example.com", ip("::ffff:198.51.100.10"), t0));
  EXPECT_FALSE(book.resolved_to("api.example.com", ip("198.51.100.11"), t0));
  EXPECT_FALSE(book.resolved_to("other.example.com", ip("198.51.100.10"), t0));
  EXPECT_FALSE(book.resolved_to("api.example.com", ip("198.51.100.10"), t0 + std::chrono::seconds(60)));
  book.bind("long.example.com", ip("198.51.100.10"), 3600, t0);
  EXPECT_EQ(book.names_for(ip("198.51.100.10"), t0).size(), 2u);
  EXPECT_EQ(book.evict_expired(t0 + std::chrono::seconds(61)), 1u);
  EXPECT_EQ(book.size(), 1u);
  EXPECT_EQ(book.addresses_of("long.example.com", t0).size(), 1u);
  // A longer TTL extends a binding; a shorter one does not shorten it.
  book.bind("long.example.com", ip("198.51.100.10"), 1, t0);
  EXPECT_TRUE(book.resolved_to("long.example.com", ip("198.51.100.10"), t0 + std::chrono::seconds(3000)));
}

TEST(AddressBook, IsBounded) {
  AddressBook book(std::chrono::seconds(1), 3);
  auto t0 = AddressBook::Clock::time_point{};
  for (uint32_t i = 0; i < 10; ++i) book.bind("n" + std::to_string(i) + ".test", IpAddress::v4(0xC6336400 + i), i, t0);
  EXPECT_EQ(book.size(), 3u);
  EXPECT_TRUE(book.resolved_to("n9.test", IpAddress::v4(0xC6336409), t0));
  EXPECT_FALSE(book.resolved_to("n0.test", IpAddress::v4(0xC6336400), t0));
}

}  // namespace
}  // namespace km::proxy
