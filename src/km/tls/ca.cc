#include "km/tls/ca.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "km/proxy/egress_policy.h"

namespace km::tls {

void X509Free::operator()(X509* x) const { X509_free(x); }
void PkeyFree::operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }

namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

Error ssl_error(const std::string& what) { return Error(ErrorCode::kInternal, what + ": " + openssl_errors()); }

Result<PkeyPtr> new_key() {
  PkeyPtr k(EVP_EC_gen("P-256"));
  if (!k) return fail(ssl_error("generating an EC P-256 key"));
  return k;
}

Status add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return fail(ssl_error("certificate extension " + std::string(OBJ_nid2sn(nid)) + "=" + value));
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (!ok) return fail(ssl_error("adding certificate extension"));
  return {};
}

Status random_serial(X509* cert) {
  BIGNUM* bn = BN_new();
  bool ok = bn && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
            BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != nullptr;
  BN_free(bn);
  if (!ok) return fail(ssl_error("certificate serial"));
  return {};
}

Status set_name(X509* cert, std::string_view cn, bool issuer_too) {
  X509_NAME* name = X509_get_subject_name(cert);
  std::string org = "km sandbox";
  if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(org.data()),
                                  static_cast<int>(org.size()), -1, 0) ||
      !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.data()),
                                  static_cast<int>(cn.size()), -1, 0)) {
    return fail(ssl_error("certificate name"));
  }
  if (issuer_too && !X509_set_issuer_name(cert, name)) return fail(ssl_error("certificate issuer"));
  return {};
}

Result<std::string> pem_of(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_X509(bio.get(), cert)) return fail(ssl_error("writing a certificate"));
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

Result<std::string> pem_of(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) {
    return fail(ssl_error("writing a private key"));
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

}  // namespace

std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

std::vector<std::string> inspected_domains() {
  return {"api.anthropic.com", "api.openai.com", "amazonaws.com", "github.com", "githubusercontent.com"};
}

Result<Pem> make_ca(std::string_view common_name, std::chrono::seconds validity, const std::vector<std::string>& permitted_dns) {
  KM_ASSIGN_OR_RETURN(PkeyPtr key, new_key());
  X509Ptr cert(X509_new());
  if (!cert) return fail(ssl_error("allocating a certificate"));
  X509_set_version(cert.get(), 2);
  KM_TRY(random_serial(cert.get()));
  KM_TRY(set_name(cert.get(), common_name, true));
  // A little slack backwards for clocks that disagree.
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(validity.count()));
  if (!X509_set_pubkey(cert.get(), key.get())) return fail(ssl_error("certificate key"));
  KM_TRY(add_ext(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  KM_TRY(add_ext(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  KM_TRY(add_ext(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  if (!permitted_dns.empty()) {
    std::string nc = "critical";
    for (const auto& d : permitted_dns) nc += ",permitted;DNS:" + d;
    KM_TRY(add_ext(cert.get(), cert.get(), NID_name_constraints, nc));
  }
  if (!X509_sign(cert.get(), key.get(), EVP_sha256())) return fail(ssl_error("signing the CA certificate"));
  Pem out;
  KM_ASSIGN_OR_RETURN(out.cert, pem_of(cert.get()));
  KM_ASSIGN_OR_RETURN(out.key, pem_of(key.get()));
  return out;
}

Result<std::unique_ptr<LeafMinter>> LeafMinter::load(std::string_view ca_cert_pem, std::string_view ca_key_pem) {
  std::unique_ptr<LeafMinter> m(new LeafMinter());
  BioPtr cb(BIO_new_mem_buf(ca_cert_pem.data(), static_cast<int>(ca_cert_pem.size())));
  m->ca_.reset(cb ? PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!m->ca_) return fail(ssl_error("reading the CA certificate"));
  BioPtr kb(BIO_new_mem_buf(ca_key_pem.data(), static_cast<int>(ca_key_pem.size())));
  m->ca_key_.reset(kb ? PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!m->ca_key_) return fail(ssl_error("reading the CA key"));
  if (X509_check_private_key(m->ca_.get(), m->ca_key_.get()) != 1) {
    return fail(ssl_error("the CA key does not belong to the CA certificate"));
  }
  if (X509_check_ca(m->ca_.get()) == 0) return fail(ErrorCode::kInvalidArgument, "the CA certificate is not a CA");
  KM_ASSIGN_OR_RETURN(m->leaf_key_, new_key());
  return m;
}

Result<LeafMinter::Leaf> LeafMinter::mint(std::string_view host) {
  auto now = std::chrono::system_clock::now();
  auto it = leaves_.find(host);
  if (it != leaves_.end() && it->second.not_after - now > std::chrono::hours(1)) {
    return Leaf{it->second.cert.get(), leaf_key_.get(), ca_.get()};
  }
  X509Ptr cert(X509_new());
  if (!cert) return fail(ssl_error("allocating a certificate"));
  X509_set_version(cert.get(), 2);
  KM_TRY(random_serial(cert.get()));
  KM_TRY(set_name(cert.get(), host, false));
  if (!X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_.get()))) return fail(ssl_error("certificate issuer"));
  constexpr long kLife = 24 * 3600;
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), kLife);
  if (!X509_set_pubkey(cert.get(), leaf_key_.get())) return fail(ssl_error("certificate key"));
  std::string san = proxy::IpAddress::parse(host) ? "IP:" + std::string(host) : "DNS:" + std::string(host);
  KM_TRY(add_ext(cert.get(), ca_.get(), NID_subject_alt_name, san));
  KM_TRY(add_ext(cert.get(), ca_.get(), NID_basic_constraints, "critical,CA:FALSE"));
  KM_TRY(add_ext(cert.get(), ca_.get(), NID_key_usage, "critical,digitalSignature"));
  KM_TRY(add_ext(cert.get(), ca_.get(), NID_ext_key_usage, "serverAuth"));
  KM_TRY(add_ext(cert.get(), ca_.get(), NID_authority_key_identifier, "keyid:always"));
  if (!X509_sign(cert.get(), ca_key_.get(), EVP_sha256())) return fail(ssl_error("signing a leaf certificate"));
  Entry e{std::move(cert), now + std::chrono::seconds(kLife)};
  X509* raw = e.cert.get();
  leaves_.insert_or_assign(std::string(host), std::move(e));
  return Leaf{raw, leaf_key_.get(), ca_.get()};
}

}  // namespace km::tls
