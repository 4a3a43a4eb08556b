#include "km/sandbox/plan.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace km::sandbox {
namespace {

profile::Model model() {
  profile::Model m;
  m.name = "t";
  m.writable = {"~/.cache"};
  m.deny_read = {"~/.ssh"};
  m.unprotect = {"~/.bashrc"};
  m.env = {{"A", "1"}};
  return m;
}

bool has(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

TEST(Plan, PathsDeriveFromTheId) {
  HostLayout h;
  auto s = plan(model(), Allocation{"sb-1a2b3c4d", 1000000, 0}, h);
  ASSERT_TRUE(s) << s.error().to_string();
  EXPECT_EQ(s->workspace_dir, "/var/lib/km/sandboxes/sb-1a2b3c4d/workspace");
  EXPECT_EQ(s->upper_dir, "/var/lib/km/sandboxes/sb-1a2b3c4d/upper");
  EXPECT_EQ(s->root_dir, "/run/km/sandboxes/sb-1a2b3c4d/root");
  EXPECT_EQ(s->hostname, "sb-1a2b3c4d");
  EXPECT_EQ(s->home, "/home/sandbox");
}

TEST(Plan, SensitiveHostPathsAreMasked) {
  HostLayout h;
  h.state_dir = "/srv/km";
  auto s = plan(model(), Allocation{"sb-1", 1000000, 0}, h);
  for (const char* p : {"/root", "/home", "/srv/km", "/run/km", "/run", "/var/log"}) EXPECT_TRUE(has(s->masks, p)) << p;
}

TEST(Plan, ProtectedSetMinusExplicitUnprotect) {
  auto s = plan(model(), Allocation{"sb-1", 1000000, 0}, HostLayout{});
  EXPECT_FALSE(has(s->protected_paths, "~/.bashrc"));
  EXPECT_TRUE(has(s->protected_paths, "~/.profile"));
  EXPECT_TRUE(has(s->protected_paths, "**/.git/hooks"));
  EXPECT_EQ(s->unprotect, std::vector<std::string>{"~/.bashrc"});
}

TEST(Plan, LinkAddressesComeFromThePoolAndRunOut) {
  HostLayout h;
  h.pool_base = "10.88.0.0";
  h.pool_prefix = 16;
  auto a = link_addresses(h, 0);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->first, "10.88.0.2");
  EXPECT_EQ(a->second, "10.88.0.1");
  EXPECT_EQ(link_addresses(h, 1)->first, "10.88.0.6");
  EXPECT_EQ(link_addresses(h, 16383)->first, "10.88.255.254");
  EXPECT_EQ(pool_capacity(h), 16384u);
  auto out = link_addresses(h, 16384);
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code(), ErrorCode::kResourceExhausted);
}

TEST(Plan, SpecRoundTripsThroughJson) {
  auto s = plan(model(), Allocation{"sb-1", 1000000, 3}, HostLayout{});
  auto back = spec_from_json(to_json(*s));
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(back->net.address, s->net.address);
  EXPECT_EQ(back->env, s->env);
  EXPECT_EQ(back->deny_read, s->deny_read);
  EXPECT_FALSE(spec_from_json("{}"));
  EXPECT_FALSE(spec_from_json("not json"));
}

TEST(Plan, InspectionCaIsTrustedThroughTheBundleAndTheVariables) {
  auto s = plan(model(), Allocation{"sb-1", 1000000, 3}, HostLayout{});
  ASSERT_TRUE(s);
  s->env["SSL_CERT_FILE"] = "/profile/own.pem";  // a profile's own setting wins
  trust_inspection_ca(*s, "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
  EXPECT_EQ(s->env["SSL_CERT_FILE"], "/profile/own.pem");
  EXPECT_EQ(s->env["REQUESTS_CA_BUNDLE"], kTrustBundle);
  EXPECT_EQ(s->env["CURL_CA_BUNDLE"], kTrustBundle);
  EXPECT_EQ(s->env["GIT_SSL_CAINFO"], kTrustBundle);
  EXPECT_EQ(s->env["NODE_EXTRA_CA_CERTS"], kInspectionCaFile);
  auto back = spec_from_json(to_json(*s));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->trusted_ca, s->trusted_ca);
}

}  // namespace
}  // namespace km::sandbox
