#include "common/pki.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <ctime>
#include <climits>
#include <memory>
#include <vector>

namespace kato {
namespace {

template <typename T, void (*F)(T*)>
struct Free {
  void operator()(T* p) const { F(p); }
};
using BioPtr = std::unique_ptr<BIO, Free<BIO, BIO_free_all>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Free<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Free<X509, X509_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Free<X509_REQ, X509_REQ_free>>;
using NamePtr = std::unique_ptr<X509_NAME, Free<X509_NAME, X509_NAME_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Free<BIGNUM, BN_free>>;

constexpr long kBackdateSeconds = 5 * 60;  // tolerate clock skew between nodes
constexpr int kCaDays = 3650;

// Drains OpenSSL's thread-local error queue into one line, so that a failure
// never leaks a stale error into the next call on this thread.
std::string OpenSslError() {
  std::string out;
  while (unsigned long code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

Error SslErr(const std::string& what) { return Err(what + ": " + OpenSslError()); }

// Never prompts for a passphrase: kato keys are unencrypted, and a daemon has no terminal.
int NoPassphrase(char*, int, int, void*) { return 0; }

Result<BioPtr> MemBio(const std::string& data) {
  if (data.size() > INT_MAX) return Err("PEM input too large");
  BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (!bio) return SslErr("cannot allocate a memory BIO");
  return bio;
}

Result<X509Ptr> ReadCert(const std::string& pem, const std::string& what) {
  auto bio = MemBio(pem);
  if (!bio) return std::move(bio).take_error();
  X509Ptr cert(PEM_read_bio_X509(bio->get(), nullptr, NoPassphrase, nullptr));
  if (!cert) return SslErr(what + " is not a PEM certificate");
  return cert;
}

Result<PkeyPtr> ReadKey(const std::string& pem, const std::string& what) {
  auto bio = MemBio(pem);
  if (!bio) return std::move(bio).take_error();
  PkeyPtr key(PEM_read_bio_PrivateKey(bio->get(), nullptr, NoPassphrase, nullptr));
  if (!key) return SslErr(what + " is not an unencrypted PEM private key");
  return key;
}

Result<ReqPtr> ReadCsr(const std::string& pem) {
  auto bio = MemBio(pem);
  if (!bio) return std::move(bio).take_error();
  ReqPtr req(PEM_read_bio_X509_REQ(bio->get(), nullptr, NoPassphrase, nullptr));
  if (!req) return SslErr("the certificate request is not a PEM CSR");
  return req;
}

template <typename T, int (*Write)(BIO*, T*)>
Result<std::string> ToPem(T* obj) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || Write(bio.get(), obj) != 1) return SslErr("cannot encode PEM");
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

int WriteCert(BIO* b, X509* x) { return PEM_write_bio_X509(b, x); }
int WriteCsr(BIO* b, X509_REQ* r) { return PEM_write_bio_X509_REQ(b, r); }
int WriteKey(BIO* b, EVP_PKEY* k) {
  return PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
}

std::string Hex(const unsigned char* data, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xf];
  }
  return out;
}

Result<PkeyPtr> NewP256Key() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) return SslErr("cannot generate an EC P-256 key");
  return key;
}

Result<NamePtr> CommonNameOnly(const std::string& cn) {
  NamePtr name(X509_NAME_new());
  if (!name) return SslErr("cannot allocate a name");
  if (X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()),
                                 static_cast<int>(cn.size()), -1, 0) != 1) {
    return SslErr("invalid CommonName '" + cn + "' (at most 64 characters)");
  }
  return name;
}

// 16 random bytes with the top bit clear: a positive serial of 127 bits of entropy.
Status SetRandomSerial(X509* cert) {
  unsigned char buf[16];
  if (RAND_bytes(buf, sizeof buf) != 1) return SslErr("cannot get random bytes");
  buf[0] &= 0x7f;
  buf[0] |= 0x01;  // never zero, and always 16 bytes long
  BnPtr bn(BN_bin2bn(buf, sizeof buf, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert))) {
    return SslErr("cannot set the serial number");
  }
  return Ok();
}

Status AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value);
  if (!ext) return SslErr(std::string("cannot build extension ") + OBJ_nid2sn(nid));
  int rc = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (rc != 1) return SslErr(std::string("cannot add extension ") + OBJ_nid2sn(nid));
  return Ok();
}

// The parts common to the CA and leaf certificates.
Result<X509Ptr> NewCert(EVP_PKEY* subject_key, const X509_NAME* subject, const X509_NAME* issuer,
                        int days) {
  X509Ptr cert(X509_new());
  if (!cert) return SslErr("cannot allocate a certificate");
  KATO_TRY(SetRandomSerial(cert.get()));
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      !X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kBackdateSeconds) ||
      !X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr) ||
      X509_set_subject_name(cert.get(), subject) != 1 ||
      X509_set_issuer_name(cert.get(), issuer) != 1 ||
      X509_set_pubkey(cert.get(), subject_key) != 1) {
    return SslErr("cannot fill in the certificate");
  }
  return cert;
}

bool IsHex(const std::string& s) {
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Result<CaBundle> CreateCa(const std::string& name) {
  auto key = NewP256Key();
  if (!key) return std::move(key).take_error();
  auto subject = CommonNameOnly("kato cluster CA " + name);
  if (!subject) return std::move(subject).take_error();
  auto cert = NewCert(key->get(), subject->get(), subject->get(), kCaDays);
  if (!cert) return std::move(cert).take_error();
  X509* x = cert->get();
  // The subject key id goes first: the self-referencing authority key id copies it.
  KATO_TRY(AddExt(x, x, NID_basic_constraints, "critical,CA:TRUE"));
  KATO_TRY(AddExt(x, x, NID_key_usage, "critical,keyCertSign,cRLSign"));
  KATO_TRY(AddExt(x, x, NID_subject_key_identifier, "hash"));
  KATO_TRY(AddExt(x, x, NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(x, key->get(), EVP_sha256()) <= 0) return SslErr("cannot self-sign the CA");
  auto cert_pem = ToPem<X509, WriteCert>(x);
  if (!cert_pem) return std::move(cert_pem).take_error();
  auto key_pem = ToPem<EVP_PKEY, WriteKey>(key->get());
  if (!key_pem) return std::move(key_pem).take_error();
  return CaBundle{std::move(*cert_pem), std::move(*key_pem)};
}

Result<std::string> CertFingerprint(const std::string& cert_pem) {
  auto cert = ReadCert(cert_pem, "the certificate");
  if (!cert) return std::move(cert).take_error();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert->get(), EVP_sha256(), md, &len) != 1) return SslErr("cannot hash");
  return Hex(md, len);
}

Result<KeyAndCsr> CreateKeyAndCsr(const std::string& cn) {
  auto key = NewP256Key();
  if (!key) return std::move(key).take_error();
  auto subject = CommonNameOnly(cn);
  if (!subject) return std::move(subject).take_error();
  ReqPtr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1 ||
      X509_REQ_set_subject_name(req.get(), subject->get()) != 1 ||
      X509_REQ_set_pubkey(req.get(), key->get()) != 1 ||
      X509_REQ_sign(req.get(), key->get(), EVP_sha256()) <= 0) {
    return SslErr("cannot create a certificate request");
  }
  auto key_pem = ToPem<EVP_PKEY, WriteKey>(key->get());
  if (!key_pem) return std::move(key_pem).take_error();
  auto csr_pem = ToPem<X509_REQ, WriteCsr>(req.get());
  if (!csr_pem) return std::move(csr_pem).take_error();
  return KeyAndCsr{std::move(*key_pem), std::move(*csr_pem)};
}

namespace {

// A leaf certificate for a CSR (whose signature must verify): CommonName `cn`
// (the CSR's own subject is ignored), extended key usage `eku`, and, when not
// empty, subjectAltName `san`.
Result<std::string> SignLeaf(const CaBundle& ca, const std::string& csr_pem, const std::string& cn,
                             int days, const char* eku, const std::string& san) {
  if (cn.empty()) return Err("cannot sign a certificate with an empty CommonName");
  if (days < 1 || days > 36500) return Err("certificate validity must be 1..36500 days");
  auto ca_cert = ReadCert(ca.cert_pem, "the CA certificate");
  if (!ca_cert) return std::move(ca_cert).take_error();
  auto ca_key = ReadKey(ca.key_pem, "the CA key");
  if (!ca_key) return std::move(ca_key).take_error();
  if (X509_check_private_key(ca_cert->get(), ca_key->get()) != 1) {
    ERR_clear_error();
    return Err("the CA key does not belong to the CA certificate");
  }
  auto req = ReadCsr(csr_pem);
  if (!req) return std::move(req).take_error();
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req->get());
  if (!pub || X509_REQ_verify(req->get(), pub) != 1) {
    ERR_clear_error();
    return Err("the certificate request's signature does not verify (corrupted or tampered CSR)");
  }
  auto subject = CommonNameOnly(cn);
  if (!subject) return std::move(subject).take_error();
  auto cert = NewCert(pub, subject->get(), X509_get_subject_name(ca_cert->get()), days);
  if (!cert) return std::move(cert).take_error();
  X509* x = cert->get();
  KATO_TRY(AddExt(x, ca_cert->get(), NID_basic_constraints, "critical,CA:FALSE"));
  KATO_TRY(AddExt(x, ca_cert->get(), NID_key_usage, "critical,digitalSignature,keyAgreement"));
  KATO_TRY(AddExt(x, ca_cert->get(), NID_ext_key_usage, eku));
  KATO_TRY(AddExt(x, ca_cert->get(), NID_subject_key_identifier, "hash"));
  KATO_TRY(AddExt(x, ca_cert->get(), NID_authority_key_identifier, "keyid:always"));
  if (!san.empty()) KATO_TRY(AddExt(x, ca_cert->get(), NID_subject_alt_name, san.c_str()));
  if (X509_sign(x, ca_key->get(), EVP_sha256()) <= 0) return SslErr("cannot sign the certificate");
  return ToPem<X509, WriteCert>(x);
}

}  // namespace

Result<std::string> SignCsr(const CaBundle& ca, const std::string& csr_pem, const std::string& cn,
                            int days) {
  return SignLeaf(ca, csr_pem, cn, days, "serverAuth,clientAuth", "");
}

Result<std::string> SignServerCsr(const CaBundle& ca, const std::string& csr_pem,
                                  const std::string& cn, const std::vector<std::string>& dns_names,
                                  int days) {
  if (dns_names.empty()) return Err("a server certificate needs at least one DNS name");
  std::string san;
  for (const auto& n : dns_names) {
    bool ok = !n.empty() && n.size() <= 253;
    for (size_t i = 0; i < n.size() && ok; ++i) {
      char c = n[i];
      ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' ||
           (c == '*' && i == 0 && n.size() > 2 && n[1] == '.');
    }
    if (!ok) return Err("'" + n + "' is not a DNS name for a certificate");
    san += (san.empty() ? "DNS:" : ",DNS:") + n;
  }
  // serverAuth only: TLS servers refuse it as a client certificate (OpenSSL
  // checks the purpose), so it never speaks for a node.
  return SignLeaf(ca, csr_pem, cn, days, "serverAuth", san);
}

namespace {

Result<int64_t> UnixTime(const ASN1_TIME* t) {
  struct tm tm {};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return Err("the certificate has an unreadable date");
  return static_cast<int64_t>(timegm(&tm));
}

}  // namespace

Result<CertInfo> InspectCert(const std::string& cert_pem) {
  auto cert = ReadCert(cert_pem, "the certificate");
  if (!cert) return std::move(cert).take_error();
  CertInfo info;
  if (auto cn = CertCommonName(cert_pem)) info.common_name = *cn;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert->get(), NID_subject_alt_name, nullptr, nullptr));
  if (names) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
      if (g->type != GEN_DNS) continue;
      const ASN1_STRING* s = g->d.dNSName;
      info.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                  static_cast<size_t>(ASN1_STRING_length(s)));
    }
    GENERAL_NAMES_free(names);
  }
  ERR_clear_error();
  auto nb = UnixTime(X509_get0_notBefore(cert->get()));
  if (!nb) return std::move(nb).take_error();
  auto na = UnixTime(X509_get0_notAfter(cert->get()));
  if (!na) return std::move(na).take_error();
  info.not_before_s = *nb;
  info.not_after_s = *na;
  auto fp = CertFingerprint(cert_pem);
  if (!fp) return std::move(fp).take_error();
  info.fingerprint = *fp;
  return info;
}

bool CertCoversHost(const CertInfo& info, const std::string& host) {
  std::string h = Lower(host);
  auto matches = [&](const std::string& pattern) {
    std::string p = Lower(pattern);
    if (p == h) return true;
    if (p.size() > 2 && p.compare(0, 2, "*.") == 0) {
      auto dot = h.find('.');
      return dot != std::string::npos && dot > 0 && h.substr(dot) == p.substr(1);
    }
    return false;
  };
  if (info.dns_names.empty()) return !info.common_name.empty() && matches(info.common_name);
  for (const auto& n : info.dns_names)
    if (matches(n)) return true;
  return false;
}

Result<CertInfo> CheckKeyAndCert(const std::string& key_pem, const std::string& cert_pem,
                                 int64_t now_s) {
  if (cert_pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
    return Err("the certificate file holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
  auto info = InspectCert(cert_pem);
  if (!info) return Err("the certificate file cannot be read: " + info.error());
  if (key_pem.find("PRIVATE KEY-----") == std::string::npos)
    return Err("the key file holds no PEM private key (-----BEGIN PRIVATE KEY-----)");
  if (auto s = KeyMatchesCert(key_pem, cert_pem); !s) {
    if (s.error().find("does not belong") != std::string::npos)
      return Err("the key does not match the certificate (it is the key of another certificate)");
    return Err("the key file cannot be read: " + s.error());
  }
  if (info->not_after_s <= now_s) return Err("the certificate has expired");
  if (info->not_before_s > now_s) return Err("the certificate is not valid yet");
  return info;
}

Result<std::string> CertCommonName(const std::string& cert_pem) {
  auto cert = ReadCert(cert_pem, "the certificate");
  if (!cert) return std::move(cert).take_error();
  const X509_NAME* name = X509_get_subject_name(cert->get());
  int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return Err("the certificate has no CommonName");
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) return SslErr("the certificate's CommonName is not valid text");
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

Status KeyMatchesCert(const std::string& key_pem, const std::string& cert_pem) {
  auto key = ReadKey(key_pem, "the key");
  if (!key) return std::move(key).take_error();
  auto cert = ReadCert(cert_pem, "the certificate");
  if (!cert) return std::move(cert).take_error();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return Err("the private key does not belong to the certificate");
  }
  return Ok();
}

std::string RandomHex(size_t n) {
  std::vector<unsigned char> buf(n);
  // Without entropy no key or token is safe to hand out: that is fatal, not an error to report.
  KATO_CHECK(n == 0 || RAND_bytes(buf.data(), static_cast<int>(n)) == 1);
  return Hex(buf.data(), n);
}

std::string Sha256Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  KATO_CHECK(EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) == 1);
  return Hex(md, len);
}

bool IsSha256Hex(const std::string& text) {
  return text.size() == 64 &&
         text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

Result<JoinToken> ParseJoinToken(const std::string& text) {
  static const char kForm[] = "(expected KATO1.<ca-hash>.<secret>)";
  const char* ws = " \t\r\n\v\f";
  size_t begin = text.find_first_not_of(ws);
  if (begin == std::string::npos) return Err("the join token is empty " + std::string(kForm));
  std::string s = text.substr(begin, text.find_last_not_of(ws) - begin + 1);

  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    size_t dot = s.find('.', start);
    parts.push_back(s.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  // The token text is a secret: errors never echo it.
  if (parts[0] != "KATO1") {
    if (parts.size() == 3 && parts[0].size() == 5 && parts[0].compare(0, 4, "KATO") == 0) {
      return Err("unsupported join token version " + parts[0] +
                 " (this kato understands KATO1); make the token with a matching kato version");
    }
    return Err("not a kato join token " + std::string(kForm));
  }
  if (parts.size() != 3) {
    return Err("the join token is truncated or has extra parts " + std::string(kForm) +
               "; copy it again in full");
  }
  if (parts[1].size() != 64 || !IsHex(parts[1])) {
    return Err("join token has a malformed CA hash (expected 64 hex characters)");
  }
  if (parts[2].size() != 64 || !IsHex(parts[2])) {
    return Err("join token has a malformed secret (expected 64 hex characters)");
  }
  return JoinToken{Lower(parts[1]), Lower(parts[2])};
}

std::string Base64Encode(const std::string& data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> Base64Decode(const std::string& text) {
  if (text.size() % 4 != 0) return Err("not base64: length is not a multiple of 4");
  for (char c : text)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/' && c != '=')
      return Err("not base64: unexpected character");
  std::string out(3 * (text.size() / 4), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return Err("not base64");
  // EVP_DecodeBlock counts padding as data: drop one byte per '='.
  size_t pad = 0;
  for (size_t i = text.size(); i > 0 && text[i - 1] == '='; --i) ++pad;
  if (pad > 2) return Err("not base64: too much padding");
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

}  // namespace kato
