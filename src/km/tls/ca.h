// The sandbox's own certificate authority, for L7 inspection of the few hosts whose traffic the
// enforcer must read (AI providers, GitHub): kmd makes one CA per sandbox at creation; the
// sandbox trusts its certificate; only the enforcer (outside the sandbox) holds its key and
// mints a leaf per host it inspects.
//
// Keys are EC P-256. The CA certificate carries name constraints limiting it to the inspected
// hosts' domains, so even a leaked key cannot impersonate anything else to a client that
// enforces them (OpenSSL, Node, Go, curl do). Leaves are short-lived (a day, renewed on use).
// Thread-safety: make_ca is reentrant; a LeafMinter is used from one thread.
// Errors carry OpenSSL's error queue as context.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"

typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;

namespace km::tls {

struct X509Free {
  void operator()(X509* x) const;
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const;
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

struct Pem {
  std::string cert;
  std::string key;
};

// The domains an inspecting CA may issue for (DNS name constraints).
std::vector<std::string> inspected_domains();

// A new self-signed CA: CA:TRUE, pathlen 0, keyCertSign; name-constrained to `permitted_dns`
// (no constraint when empty).
Result<Pem> make_ca(std::string_view common_name, std::chrono::seconds validity,
                    const std::vector<std::string>& permitted_dns = inspected_domains());

// The OpenSSL error queue as text (and cleared), for error contexts.
std::string openssl_errors();

class LeafMinter {
 public:
  // Fails if the PEMs do not parse, the key does not match the certificate, or it is not a CA.
  static Result<std::unique_ptr<LeafMinter>> load(std::string_view ca_cert_pem, std::string_view ca_key_pem);

  struct Leaf {
    X509* cert;      // owned by the minter; valid until the next mint() of the same host
    EVP_PKEY* key;   // the minter's leaf key, shared by every leaf
    X509* ca;        // the CA certificate (for the chain)
  };
  // A certificate for `host` (a DNS name or IP literal), cached; renewed when it has less than
  // an hour to live.
  Result<Leaf> mint(std::string_view host);
  size_t cached() const { return leaves_.size(); }

 private:
  LeafMinter() = default;
  X509Ptr ca_;
  PkeyPtr ca_key_;
  PkeyPtr leaf_key_;
  struct Entry {
    X509Ptr cert;
    std::chrono::system_clock::time_point not_after;
  };
  std::map<std::string, Entry, std::less<>> leaves_;
};

}  // namespace km::tls
