#include "km/sandbox/egress.h"

#include <gtest/gtest.h>

namespace km::sandbox {
namespace {

TEST(LinkRuleset, RedirectsAllTcpAndDnsAndForwardsNothing) {
  NetSpec net;
  net.address = "10.88.0.6";
  net.peer_address = "10.88.0.5";
  net.proxy_port = 3128;
  std::string r = link_ruleset(net);
  // Explicit use of the enforcer is left alone; everything else TCP goes to the proxy, and DNS
  // to any address goes to the filter.
  EXPECT_NE(r.find("iifname \"km0\" ip daddr 10.88.0.5 tcp dport { 53, 3128 } accept"), std::string::npos) << r;
  EXPECT_NE(r.find("iifname \"km0\" udp dport 53 redirect to :53"), std::string::npos);
  EXPECT_NE(r.find("iifname \"km0\" tcp dport 53 redirect to :53"), std::string::npos);
  EXPECT_NE(r.find("iifname \"km0\" meta l4proto tcp redirect to :3128"), std::string::npos);
  // Nothing is forwarded and nothing else is accepted locally.
  EXPECT_NE(r.find("hook forward priority filter; policy drop;"), std::string::npos);
  EXPECT_NE(r.find("hook input priority filter; policy drop;"), std::string::npos);
  // What is dropped early is logged for the audit, then dropped.
  auto log = r.find("log group 7");
  auto drop = r.find("iifname \"km0\" drop");
  EXPECT_NE(log, std::string::npos);
  EXPECT_NE(drop, std::string::npos);
  EXPECT_LT(log, drop);
  EXPECT_EQ(r.find("policy accept;\n  }\n  chain forward"), std::string::npos);
}

}  // namespace
}  // namespace km::sandbox
