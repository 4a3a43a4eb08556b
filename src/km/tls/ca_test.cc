#include "km/tls/ca.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <gtest/gtest.h>

namespace km::tls {
namespace {

X509Ptr parse(const std::string& pem) {
  BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509Ptr x(PEM_read_bio_X509(b, nullptr, nullptr, nullptr));
  BIO_free(b);
  return x;
}

// Verifies `leaf` against `ca` as a TLS client would for `host`: chain, purpose, host name and
// the CA's name constraints.
bool verifies(X509* leaf, X509* ca, const std::string& host) {
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf, nullptr);
  X509_VERIFY_PARAM* p = X509_STORE_CTX_get0_param(ctx);
  X509_VERIFY_PARAM_set1_host(p, host.c_str(), host.size());
  X509_VERIFY_PARAM_set_purpose(p, X509_PURPOSE_SSL_SERVER);
  bool ok = X509_verify_cert(ctx) == 1;
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return ok;
}

TEST(Ca, MintedLeavesVerifyForTheirHostOnly) {
  auto ca = make_ca("km sandbox sb-test CA", std::chrono::hours(24));
  ASSERT_TRUE(ca) << ca.error().to_string();
  auto minter = LeafMinter::load(ca->cert, ca->key);
  ASSERT_TRUE(minter) << minter.error().to_string();
  auto leaf = (*minter)->mint("api.anthropic.com");
  ASSERT_TRUE(leaf) << leaf.error().to_string();
  X509Ptr root = parse(ca->cert);
  EXPECT_TRUE(verifies(leaf->cert, root.get(), "api.anthropic.com"));
  EXPECT_FALSE(verifies(leaf->cert, root.get(), "api.openai.com"));
  // Cached: the same certificate again.
  auto again = (*minter)->mint("api.anthropic.com");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->cert, leaf->cert);
  EXPECT_EQ((*minter)->cached(), 1u);
}

TEST(Ca, NameConstraintsRefuseOtherDomainsEvenIfMinted) {
  auto ca = make_ca("km sandbox sb-test CA", std::chrono::hours(24));
  ASSERT_TRUE(ca);
  auto minter = LeafMinter::load(ca->cert, ca->key);
  ASSERT_TRUE(minter);
  X509Ptr root = parse(ca->cert);
  for (std::string host : {"bedrock-runtime.us-east-1.amazonaws.com", "github.com", "codeload.github.com",
                           "raw.githubusercontent.com"}) {
    auto leaf = (*minter)->mint(host);
    ASSERT_TRUE(leaf);
    EXPECT_TRUE(verifies(leaf->cert, root.get(), host)) << host;
  }
  // A leaked key could sign for a bank; clients that honour name constraints refuse it.
  auto bank = (*minter)->mint("www.example-bank.com");
  ASSERT_TRUE(bank);
  EXPECT_FALSE(verifies(bank->cert, root.get(), "www.example-bank.com"));
  auto lookalike = (*minter)->mint("api.anthropic.com.evil.test");
  ASSERT_TRUE(lookalike);
  EXPECT_FALSE(verifies(lookalike->cert, root.get(), "api.anthropic.com.evil.test"));
}

TEST(Ca, CertificateIsACaAndTheKeyIsPrivate) {
  auto ca = make_ca("c", std::chrono::hours(1));
  ASSERT_TRUE(ca);
  X509Ptr root = parse(ca->cert);
  ASSERT_TRUE(root);
  EXPECT_EQ(X509_check_ca(root.get()), 1);
  EXPECT_NE(ca->key.find("PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(ca->cert.find("PRIVATE KEY"), std::string::npos);
  // Two CAs never share a key.
  auto other = make_ca("c", std::chrono::hours(1));
  ASSERT_TRUE(other);
  EXPECT_NE(ca->key, other->key);
}

TEST(Ca, LoadRefusesMismatchedOrBrokenInput) {
  auto a = make_ca("a", std::chrono::hours(1));
  auto b = make_ca("b", std::chrono::hours(1));
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(LeafMinter::load(a->cert, b->key));
  EXPECT_FALSE(LeafMinter::load("not a certificate", a->key));
  EXPECT_FALSE(LeafMinter::load(a->cert, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"));
}

}  // namespace
}  // namespace km::tls
