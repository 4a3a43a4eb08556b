#include "km/policy/egress_rules.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace km::policy {
namespace {

TEST(DnsSuffix, NormalisesAndMatches) {
  auto r = parse_dns_suffix(".Example.COM.");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->suffix, "example.com");
  EXPECT_TRUE(suffix_matches("example.com", *r));
  EXPECT_TRUE(suffix_matches("api.example.com", *r));
  EXPECT_TRUE(suffix_matches("a.b.example.com", *r));
  EXPECT_FALSE(suffix_matches("badexample.com", *r));
  EXPECT_FALSE(suffix_matches("example.com.evil.test", *r));
  EXPECT_FALSE(suffix_matches("com", *r));
  EXPECT_EQ(normalize_name("API.Example.COM."), "api.example.com");
  auto no_dot = parse_dns_suffix("example.com");
  EXPECT_TRUE(suffix_matches("x.example.com", *no_dot));
  EXPECT_TRUE(parse_dns_suffix("*")->any);
  EXPECT_TRUE(suffix_matches("anything.at.all", *parse_dns_suffix("*")));
}

TEST(DnsSuffix, RejectsWithHints) {
  auto wild = parse_dns_suffix("*.example.com");
  ASSERT_FALSE(wild);
  EXPECT_NE(wild.error().message().find("\".example.com\""), std::string::npos);
  auto ip = parse_dns_suffix("10.0.0.1");
  ASSERT_FALSE(ip);
  EXPECT_NE(ip.error().message().find("allowedCIDRs"), std::string::npos);
  for (const char* bad : {"", ".", "..com", "a..b", "ex ample.com", "example.com:443", "-a.com",
                          "a-.com", "bücher.de", "a/b", "exa*mple.com"}) {
    EXPECT_FALSE(parse_dns_suffix(bad)) << bad;
  }
  EXPECT_FALSE(parse_dns_suffix(std::string(64, 'a') + ".com"));
  EXPECT_TRUE(parse_dns_suffix(std::string(63, 'a') + ".com"));
  EXPECT_TRUE(parse_dns_suffix("_acme-challenge.example.com"));
  EXPECT_TRUE(parse_dns_suffix("xn--bcher-kva.de"));
}

TEST(HostRule, Forms) {
  auto h = parse_host_rule("API.github.com:8443");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->host, "api.github.com");
  EXPECT_EQ(h->port.value(), 8443);
  EXPECT_FALSE(parse_host_rule("github.com")->port);
  EXPECT_TRUE(parse_host_rule("*")->any);
  for (const char* bad : {"", "10.0.0.1", "10.0.0.1:443", "[::1]:443", "::1", "https://x.com",
                          "x.com/path", "*.x.com", ".x.com", "x.com:0", "x.com:65536", "x.com:ab",
                          "x.com:"}) {
    EXPECT_FALSE(parse_host_rule(bad)) << bad;
  }
  EXPECT_NE(parse_host_rule("10.0.0.1").error().message().find("allowedCIDRs"), std::string::npos);
}

std::string addr_str(const CidrRule& r) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(r.family, r.addr.data(), buf, sizeof buf);
  return buf;
}

TEST(CidrRule, Forms) {
  auto a = parse_cidr_rule("10.0.0.0/8");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->family, AF_INET);
  EXPECT_EQ(a->prefix_len, 8);
  EXPECT_TRUE(a->ports.empty());

  auto b = parse_cidr_rule("192.0.2.7:443,8000-8100");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->prefix_len, 32);
  ASSERT_EQ(b->ports.size(), 2u);
  EXPECT_EQ(b->ports[0], (PortRange{443, 443}));
  EXPECT_EQ(b->ports[1], (PortRange{8000, 8100}));

  auto c = parse_cidr_rule("[2001:db8::/32]:443");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->family, AF_INET6);
  EXPECT_EQ(c->prefix_len, 32);
  EXPECT_EQ(addr_str(*c), "2001:db8::");
  EXPECT_EQ(c->ports.size(), 1u);

  auto d = parse_cidr_rule("2001:db8::/32");
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->ports.empty());
  EXPECT_TRUE(parse_cidr_rule("0.0.0.0/0")->covers_everything());
  EXPECT_TRUE(parse_cidr_rule("::/0"));
}

TEST(CidrRule, Rejects) {
  auto hb = parse_cidr_rule("10.1.2.3/8");
  ASSERT_FALSE(hb);
  EXPECT_NE(hb.error().message().find("did you mean 10.0.0.0/8"), std::string::npos);
  auto mapped = parse_cidr_rule("::ffff:10.0.0.0/104");
  ASSERT_FALSE(mapped);
  EXPECT_NE(mapped.error().message().find("IPv4 form"), std::string::npos);
  for (const char* bad : {"", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0/8", "example.com",
                          "10.0.0.0/8:", "10.0.0.0/8:0", "10.0.0.0/8:70000", "10.0.0.0/8:9-1",
                          "[2001:db8::/32", "[2001:db8::/32]443", "2001:db8::/129",
                          "10.0.0.0/8/8", "1.2.3.4:a"}) {
    EXPECT_FALSE(parse_cidr_rule(bad)) << bad;
  }
  // Without brackets a trailing ":443" is part of the IPv6 address, not a port.
  auto v6 = parse_cidr_rule("2001:db8::1:443");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->ports.empty());
  EXPECT_EQ(v6->prefix_len, 128);
}

}  // namespace
}  // namespace km::policy

namespace km::policy {
namespace {

TEST(HostRule, NumericFormsOfIpAddressesAreNotNames) {
  for (const char* bad : {"127.1", "2130706433", "0x7f000001", "0177.0.0.1", "10.1", "1.2.3"}) {
    EXPECT_FALSE(parse_host_rule(bad)) << bad;
    EXPECT_FALSE(parse_dns_suffix(bad)) << bad;
  }
  EXPECT_TRUE(parse_host_rule("s3.amazonaws.com"));
  EXPECT_TRUE(parse_host_rule("1password.com"));
  EXPECT_TRUE(parse_dns_suffix(".123abc.example"));
}

}  // namespace
}  // namespace km::policy
