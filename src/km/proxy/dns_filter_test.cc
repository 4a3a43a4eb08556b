#include "km/proxy/dns_filter.h"

#include <gtest/gtest.h>

namespace km::proxy {
namespace {

namespace t = dns::type;

class DnsFilterTest : public ::testing::Test {
 protected:
  DnsFilterTest()
      : policy_(*EgressPolicy::compile({.dns_suffixes = {".allowed.test"}, .hosts = {"exact.other.test"}})),
        filter_(policy_) {}

  static std::vector<uint8_t> query(std::string name, uint16_t type, uint16_t id = 0x1234) {
    dns::Message m;
    m.id = id;
    m.rd = true;
    m.questions.push_back({std::move(name), type, dns::kClassIN});
    return dns::serialize(m);
  }
  // The same query with the question name in upper case (names are case-insensitive on the wire).
  static std::vector<uint8_t> upper(std::vector<uint8_t> wire) {
    for (size_t i = 12; i + 4 < wire.size(); ++i) {
      if (wire[i] >= 'a' && wire[i] <= 'z') wire[i] = static_cast<uint8_t>(wire[i] - 32);
    }
    return wire;
  }
  static dns::Record a(std::string owner, std::array<uint8_t, 4> addr, uint32_t ttl = 300) {
    dns::Record r;
    r.name = std::move(owner);
    r.type = t::kA;
    r.ttl = ttl;
    r.rdata.assign(addr.begin(), addr.end());
    return r;
  }
  static dns::Record cname(std::string owner, std::string target) {
    dns::Record r;
    r.name = std::move(owner);
    r.type = t::kCNAME;
    r.ttl = 300;
    r.rdata = *dns::encode_name(target);
    r.target = std::move(target);
    return r;
  }
  static std::vector<uint8_t> answer(const DnsQueryPlan& plan, std::vector<dns::Record> records,
                                     dns::Rcode rcode = dns::Rcode::kNoError) {
    dns::Message m = plan.upstream;
    m.qr = true;
    m.ra = true;
    m.rcode = rcode;
    m.answers = std::move(records);
    return dns::serialize(m);
  }
  static dns::Message reply_of(const std::vector<uint8_t>& wire) {
    auto m = dns::parse(wire);
    EXPECT_TRUE(m) << m.error().to_string();
    return m ? *m : dns::Message{};
  }

  EgressPolicy policy_;
  DnsFilter filter_;
};

TEST_F(DnsFilterTest, DeniedNamesGetNxdomainWithoutUpstream) {
  for (auto name : {"evil.test", "api.allowed.test.evil.test", "notallowed.test", "x.exact.other.test"}) {
    auto plan = filter_.on_query(query(name, t::kA));
    EXPECT_EQ(plan.action, DnsQueryPlan::Action::kReply) << name;
    EXPECT_FALSE(plan.decision.allowed);
    auto r = reply_of(plan.reply);
    EXPECT_EQ(r.rcode, dns::Rcode::kNxDomain);
    EXPECT_EQ(r.id, 0x1234);
    EXPECT_TRUE(r.qr);
    ASSERT_EQ(r.questions.size(), 1u);
    EXPECT_EQ(r.questions[0].name, name);
  }
}

TEST_F(DnsFilterTest, AllowedNamesAreForwardedAsACanonicalQuery) {
  auto plan = filter_.on_query(upper(query("api.allowed.test", t::kA)));
  ASSERT_EQ(plan.action, DnsQueryPlan::Action::kForward);
  EXPECT_TRUE(plan.decision.allowed);
  EXPECT_EQ(plan.decision.rule, "allowedDNSSuffixes: .allowed.test");
  ASSERT_EQ(plan.upstream.questions.size(), 1u);
  EXPECT_EQ(plan.upstream.questions[0].name, "api.allowed.test");
  EXPECT_TRUE(plan.upstream.rd);
  EXPECT_EQ(plan.name, "api.allowed.test");
  EXPECT_EQ(filter_.on_query(query("exact.other.test", t::kTXT)).action, DnsQueryPlan::Action::kForward);
}

TEST_F(DnsFilterTest, MalformedAndOddQueries) {
  std::vector<uint8_t> garbage = {0xab, 0xcd, 0x01};
  auto p1 = filter_.on_query(garbage);
  EXPECT_EQ(p1.action, DnsQueryPlan::Action::kReply);
  EXPECT_EQ(reply_of(p1.reply).rcode, dns::Rcode::kFormErr);
  EXPECT_EQ(reply_of(p1.reply).id, 0xabcd);

  dns::Message two;
  two.id = 7;
  two.questions = {{"allowed.test", t::kA, dns::kClassIN}, {"evil.test", t::kA, dns::kClassIN}};
  auto p2 = filter_.on_query(dns::serialize(two));
  EXPECT_EQ(reply_of(p2.reply).rcode, dns::Rcode::kFormErr);

  dns::Message none;
  none.id = 8;
  EXPECT_EQ(reply_of(filter_.on_query(dns::serialize(none)).reply).rcode, dns::Rcode::kFormErr);

  EXPECT_EQ(reply_of(filter_.on_query(query("allowed.test", t::kANY)).reply).rcode, dns::Rcode::kNotImp);
  EXPECT_EQ(reply_of(filter_.on_query(query("allowed.test", 252)).reply).rcode, dns::Rcode::kRefused);

  dns::Message chaos;
  chaos.questions = {{"allowed.test", t::kTXT, 3}};
  EXPECT_EQ(reply_of(filter_.on_query(dns::serialize(chaos)).reply).rcode, dns::Rcode::kRefused);

  // A label holding a dot is not two labels.
  auto esc = filter_.on_query(query("evil\\046allowed.test", t::kA));
  EXPECT_EQ(esc.action, DnsQueryPlan::Action::kReply);
  EXPECT_EQ(reply_of(esc.reply).rcode, dns::Rcode::kNxDomain);
}

TEST_F(DnsFilterTest, AaaaAndHttpsAreAnsweredLocallyWithNoData) {
  for (uint16_t type : {t::kAAAA, t::kHTTPS, t::kSVCB}) {
    auto plan = filter_.on_query(query("allowed.test", type));
    EXPECT_EQ(plan.action, DnsQueryPlan::Action::kReply);
    auto r = reply_of(plan.reply);
    EXPECT_EQ(r.rcode, dns::Rcode::kNoError);
    EXPECT_TRUE(r.answers.empty());
  }
}

TEST_F(DnsFilterTest, AllowedChainIsKeptAndBound) {
  auto plan = filter_.on_query(query("www.allowed.test", t::kA));
  auto up = answer(plan, {cname("www.allowed.test", "allowed.test"), a("allowed.test", {198, 51, 100, 10}, 30)});
  auto ans = filter_.on_answer(plan, up, 512);
  ASSERT_TRUE(ans) << ans.error().to_string();
  auto r = reply_of(ans->reply);
  EXPECT_EQ(r.id, 0x1234);
  ASSERT_EQ(r.answers.size(), 2u);
  ASSERT_EQ(ans->bindings.size(), 2u);
  EXPECT_EQ(ans->bindings[0].name, "www.allowed.test");
  EXPECT_EQ(ans->bindings[1].name, "allowed.test");
  EXPECT_EQ(ans->bindings[0].addr.to_string(), "198.51.100.10");
  EXPECT_EQ(ans->bindings[0].ttl, 30u);
  EXPECT_TRUE(ans->cut_at.empty());
}

TEST_F(DnsFilterTest, ChainLeavingTheAllowlistIsCut) {
  auto plan = filter_.on_query(query("cdn.allowed.test", t::kA));
  auto up = answer(plan, {cname("cdn.allowed.test", "edge.evil.test"), a("edge.evil.test", {203, 0, 113, 10})});
  auto ans = filter_.on_answer(plan, up, 512);
  ASSERT_TRUE(ans);
  EXPECT_EQ(ans->cut_at, "edge.evil.test");
  EXPECT_TRUE(ans->bindings.empty());
  EXPECT_TRUE(reply_of(ans->reply).answers.empty());
  EXPECT_EQ(ans->dropped, 2u);
}

TEST_F(DnsFilterTest, AddressesOfOtherOwnersAreDropped) {
  auto plan = filter_.on_query(query("allowed.test", t::kA));
  auto up = answer(plan, {a("allowed.test", {198, 51, 100, 10}), a("evil.test", {203, 0, 113, 10}),
                          a("other.allowed.test", {198, 51, 100, 99})});
  auto ans = filter_.on_answer(plan, up, 512);
  ASSERT_TRUE(ans);
  auto r = reply_of(ans->reply);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].name, "allowed.test");
  ASSERT_EQ(ans->bindings.size(), 1u);
  EXPECT_EQ(ans->addresses, std::vector<std::string>{"198.51.100.10"});
}

TEST_F(DnsFilterTest, UnusableUpstreamAnswers) {
  auto plan = filter_.on_query(query("allowed.test", t::kA));
  dns::Message other = plan.upstream;
  other.qr = true;
  other.questions[0].name = "evil.test";
  EXPECT_FALSE(filter_.on_answer(plan, dns::serialize(other), 512));
  EXPECT_FALSE(filter_.on_answer(plan, dns::serialize(plan.upstream), 512));  // not a response
  std::vector<uint8_t> junk = {1, 2, 3};
  EXPECT_FALSE(filter_.on_answer(plan, junk, 512));
  EXPECT_FALSE(filter_.on_answer(plan, answer(plan, {}, dns::Rcode::kRefused), 512));
  auto nx = filter_.on_answer(plan, answer(plan, {}, dns::Rcode::kNxDomain), 512);
  ASSERT_TRUE(nx);
  EXPECT_EQ(reply_of(nx->reply).rcode, dns::Rcode::kNxDomain);
  auto sf = reply_of(DnsFilter::servfail(plan));
  EXPECT_EQ(sf.rcode, dns::Rcode::kServFail);
  EXPECT_EQ(sf.id, 0x1234);
}

TEST_F(DnsFilterTest, OversizedRepliesAreTruncated) {
  auto plan = filter_.on_query(query("multi.allowed.test", t::kA));
  std::vector<dns::Record> many;
  for (uint8_t i = 0; i < 60; ++i) many.push_back(a("multi.allowed.test", {198, 51, 100, i}));
  auto ans = filter_.on_answer(plan, answer(plan, many), 512);
  ASSERT_TRUE(ans);
  auto r = reply_of(ans->reply);
  EXPECT_TRUE(r.tc);
  EXPECT_TRUE(r.answers.empty());
  EXPECT_LE(ans->reply.size(), 512u);
  auto tcp = filter_.on_answer(plan, answer(plan, many), 65535);
  EXPECT_EQ(reply_of(tcp->reply).answers.size(), 60u);
}

}  // namespace
}  // namespace km::proxy
