#include "common/pki.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <memory>

namespace kato {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

X509Ptr Parse(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return X509Ptr(x);
}

// Verifies `leaf` against `ca` as a TLS client certificate would be (or for another purpose).
bool ChainsTo(const std::string& leaf, const std::string& ca,
              int purpose = X509_PURPOSE_SSL_CLIENT) {
  X509Ptr l = Parse(leaf), c = Parse(ca);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, c.get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, l.get(), nullptr);
  X509_STORE_CTX_set_purpose(ctx, purpose);
  bool ok = X509_verify_cert(ctx) == 1;
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return ok;
}

std::string Signed(const CaBundle& ca, const std::string& cn, std::string* key = nullptr) {
  auto kc = CreateKeyAndCsr("ignored-" + cn);
  EXPECT_TRUE(kc.ok()) << kc.error();
  auto cert = SignCsr(ca, kc->csr_pem, cn, 30);
  EXPECT_TRUE(cert.ok()) << cert.error();
  if (key) *key = kc->key_pem;
  return *cert;
}

TEST(PkiTest, CreateCaIsASelfSignedCa) {
  auto ca = CreateCa("prod");
  ASSERT_TRUE(ca.ok()) << ca.error();
  EXPECT_EQ(*CertCommonName(ca->cert_pem), "kato cluster CA prod");
  EXPECT_TRUE(KeyMatchesCert(ca->key_pem, ca->cert_pem).ok());
  X509Ptr x = Parse(ca->cert_pem);
  ASSERT_TRUE(x);
  EXPECT_EQ(X509_check_ca(x.get()), 1);
  EXPECT_TRUE(X509_get_key_usage(x.get()) & KU_KEY_CERT_SIGN);
  EXPECT_EQ(X509_verify(x.get(), X509_get0_pubkey(x.get())), 1);  // self-signed
  EXPECT_NE(X509_get0_subject_key_id(x.get()), nullptr);
  // About ten years.
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x.get()), X509_get0_notAfter(x.get())),
            1);
  EXPECT_NEAR(days, 3650, 1);
}

TEST(PkiTest, FingerprintIsStableLowercaseHexAndDiffersPerCa) {
  auto a = CreateCa("a");
  auto b = CreateCa("a");
  ASSERT_TRUE(a.ok() && b.ok());
  auto fa = CertFingerprint(a->cert_pem);
  ASSERT_TRUE(fa.ok()) << fa.error();
  EXPECT_THAT(*fa, MatchesRegex("[0-9a-f]{64}"));
  EXPECT_EQ(*fa, *CertFingerprint(a->cert_pem));
  EXPECT_NE(*fa, *CertFingerprint(b->cert_pem));
  // Serials are random too.
  X509Ptr xa = Parse(a->cert_pem), xb = Parse(b->cert_pem);
  EXPECT_NE(ASN1_INTEGER_cmp(X509_get0_serialNumber(xa.get()), X509_get0_serialNumber(xb.get())),
            0);
}

TEST(PkiTest, SignCsrMakesALeafForTheGivenName) {
  auto ca = CreateCa("c");
  ASSERT_TRUE(ca.ok());
  auto kc = CreateKeyAndCsr("what-the-node-asked-for");
  ASSERT_TRUE(kc.ok()) << kc.error();
  auto cert = SignCsr(*ca, kc->csr_pem, "node-7", 365);
  ASSERT_TRUE(cert.ok()) << cert.error();
  EXPECT_EQ(*CertCommonName(*cert), "node-7");
  EXPECT_TRUE(KeyMatchesCert(kc->key_pem, *cert).ok());
  EXPECT_TRUE(ChainsTo(*cert, ca->cert_pem));

  X509Ptr x = Parse(*cert);
  EXPECT_EQ(X509_check_ca(x.get()), 0);
  EXPECT_EQ(X509_get_extended_key_usage(x.get()) & (XKU_SSL_SERVER | XKU_SSL_CLIENT),
            static_cast<uint32_t>(XKU_SSL_SERVER | XKU_SSL_CLIENT));
  EXPECT_TRUE(X509_get_key_usage(x.get()) & KU_DIGITAL_SIGNATURE);
  EXPECT_NE(X509_get0_authority_key_id(x.get()), nullptr);
  // Backdated a few minutes for clock skew.
  time_t four_minutes_ago = time(nullptr) - 4 * 60;
  EXPECT_LT(X509_cmp_time(X509_get0_notBefore(x.get()), &four_minutes_ago), 0);
}

TEST(PkiTest, SignServerCsrNamesTheWebHosts) {
  auto ca = CreateCa("c");
  ASSERT_TRUE(ca.ok());
  auto kc = CreateKeyAndCsr("web");
  ASSERT_TRUE(kc.ok());
  auto cert = SignServerCsr(*ca, kc->csr_pem, "example.com",
                            {"api.example.com", "*.example.com", "example.com"}, 365);
  ASSERT_TRUE(cert.ok()) << cert.error();
  EXPECT_TRUE(ChainsTo(*cert, ca->cert_pem, X509_PURPOSE_SSL_SERVER));
  // A web certificate is for servers only: never a client (node) certificate.
  EXPECT_FALSE(ChainsTo(*cert, ca->cert_pem, X509_PURPOSE_SSL_CLIENT));
  EXPECT_TRUE(KeyMatchesCert(kc->key_pem, *cert).ok());
  auto info = InspectCert(*cert);
  ASSERT_TRUE(info.ok()) << info.error();
  EXPECT_EQ(info->common_name, "example.com");
  EXPECT_EQ(info->dns_names,
            (std::vector<std::string>{"api.example.com", "*.example.com", "example.com"}));
  EXPECT_EQ(info->fingerprint, *CertFingerprint(*cert));
  int64_t now = time(nullptr);
  EXPECT_LE(info->not_before_s, now);
  EXPECT_GT(info->not_after_s, now + 364 * 86400);
  // OpenSSL's own host check agrees: the wildcard covers one label only.
  X509Ptr x = Parse(*cert);
  for (const char* h : {"api.example.com", "web.example.com", "example.com"})
    EXPECT_EQ(X509_check_host(x.get(), h, 0, 0, nullptr), 1) << h;
  EXPECT_NE(X509_check_host(x.get(), "a.b.example.com", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(x.get(), "example.org", 0, 0, nullptr), 1);
  EXPECT_TRUE(CertCoversHost(*info, "web.example.com"));
  EXPECT_TRUE(CertCoversHost(*info, "API.example.com"));
  EXPECT_FALSE(CertCoversHost(*info, "a.b.example.com"));
  EXPECT_FALSE(CertCoversHost(*info, "example.org"));
  // A node certificate has no SAN: its CommonName counts.
  auto node = InspectCert(Signed(*ca, "node-1"));
  ASSERT_TRUE(node.ok());
  EXPECT_TRUE(node->dns_names.empty());
  EXPECT_TRUE(CertCoversHost(*node, "node-1"));
}

TEST(PkiTest, SignServerCsrRefusesBadNames) {
  auto ca = CreateCa("c");
  auto kc = CreateKeyAndCsr("web");
  ASSERT_TRUE(ca.ok() && kc.ok());
  EXPECT_THAT(SignServerCsr(*ca, kc->csr_pem, "x", {}, 30).error(), HasSubstr("at least one"));
  for (const char* bad : {"", "a b.com", "a.*.com", "*", "x,DNS:evil.com", "**.a.com"})
    EXPECT_THAT(SignServerCsr(*ca, kc->csr_pem, "x", {bad}, 30).error(),
                HasSubstr("not a DNS name")) << bad;
  EXPECT_FALSE(SignServerCsr(*ca, "garbage", "x", {"a.com"}, 30).ok());
}

TEST(PkiTest, CheckKeyAndCertSaysWhatIsWrong) {
  auto ca = CreateCa("c");
  ASSERT_TRUE(ca.ok());
  std::string key, other_key;
  std::string cert = Signed(*ca, "web", &key);
  Signed(*ca, "other", &other_key);
  int64_t now = time(nullptr);
  auto ok = CheckKeyAndCert(key, cert + ca->cert_pem, now);  // leaf, then its chain
  ASSERT_TRUE(ok.ok()) << ok.error();
  EXPECT_EQ(ok->common_name, "web");
  EXPECT_THAT(CheckKeyAndCert(other_key, cert, now).error(),
              HasSubstr("key does not match the certificate"));
  EXPECT_THAT(CheckKeyAndCert(key, "not pem", now).error(), HasSubstr("no PEM certificate"));
  EXPECT_THAT(CheckKeyAndCert(key,
                              "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                              now).error(),
              HasSubstr("cannot be read"));
  EXPECT_THAT(CheckKeyAndCert("junk", cert, now).error(), HasSubstr("no PEM private key"));
  EXPECT_THAT(CheckKeyAndCert(cert, cert, now).error(), HasSubstr("no PEM private key"));
  // Signed for 30 days: 31 days from now it has expired.
  EXPECT_THAT(CheckKeyAndCert(key, cert, now + 31 * 86400).error(), HasSubstr("expired"));
  EXPECT_THAT(CheckKeyAndCert(key, cert, now - 86400).error(), HasSubstr("not valid yet"));
}

TEST(PkiTest, CertFromAnotherCaDoesNotMatch) {
  auto ca = CreateCa("mine");
  auto other = CreateCa("theirs");
  ASSERT_TRUE(ca.ok() && other.ok());
  std::string key;
  std::string cert = Signed(*other, "intruder", &key);
  EXPECT_FALSE(ChainsTo(cert, ca->cert_pem));
  EXPECT_TRUE(ChainsTo(cert, other->cert_pem));
  EXPECT_THAT(KeyMatchesCert(ca->key_pem, cert).error(), HasSubstr("does not belong"));
  EXPECT_FALSE(KeyMatchesCert(key, ca->cert_pem).ok());
  // A bundle whose key is not its certificate's is refused.
  CaBundle mixed{ca->cert_pem, other->key_pem};
  auto kc = CreateKeyAndCsr("x");
  EXPECT_THAT(SignCsr(mixed, kc->csr_pem, "x", 1).error(), HasSubstr("CA key does not belong"));
}

TEST(PkiTest, TamperedCsrIsRefused) {
  auto ca = CreateCa("c");
  auto kc = CreateKeyAndCsr("aaaaaaaaaaaa");
  ASSERT_TRUE(ca.ok() && kc.ok());
  // Change the signed subject inside the DER, keeping the encoding valid.
  BIO* bio = BIO_new_mem_buf(kc->csr_pem.data(), static_cast<int>(kc->csr_pem.size()));
  X509_REQ* req = PEM_read_bio_X509_REQ(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ASSERT_NE(req, nullptr);
  unsigned char* der = nullptr;
  int len = i2d_X509_REQ(req, &der);
  X509_REQ_free(req);
  std::string bytes(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  size_t at = bytes.find("aaaaaaaaaaaa");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 12, "bbbbbbbbbbbb");
  const unsigned char* p = reinterpret_cast<const unsigned char*>(bytes.data());
  X509_REQ* tampered = d2i_X509_REQ(nullptr, &p, static_cast<long>(bytes.size()));
  ASSERT_NE(tampered, nullptr);
  BIO* out = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(out, tampered);
  X509_REQ_free(tampered);
  char* data = nullptr;
  long n = BIO_get_mem_data(out, &data);
  std::string tampered_pem(data, static_cast<size_t>(n));
  BIO_free(out);

  auto cert = SignCsr(*ca, tampered_pem, "node-1", 30);
  ASSERT_FALSE(cert.ok());
  EXPECT_THAT(cert.error(), HasSubstr("signature does not verify"));
  EXPECT_TRUE(SignCsr(*ca, kc->csr_pem, "node-1", 30).ok());
}

TEST(PkiTest, GarbageInputIsAnErrorNotACrash) {
  auto ca = CreateCa("c");
  ASSERT_TRUE(ca.ok());
  const std::string bad[] = {
      "", "garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
      "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n",
      std::string(100000, 'A')};
  for (const auto& b : bad) {
    EXPECT_FALSE(CertFingerprint(b).ok());
    EXPECT_FALSE(CertCommonName(b).ok());
    EXPECT_FALSE(KeyMatchesCert(b, ca->cert_pem).ok());
    EXPECT_FALSE(KeyMatchesCert(ca->key_pem, b).ok());
    EXPECT_FALSE(SignCsr(*ca, b, "n", 1).ok());
    EXPECT_FALSE(SignCsr(CaBundle{b, ca->key_pem}, b, "n", 1).ok());
  }
  EXPECT_THAT(CertFingerprint("garbage").error(), HasSubstr("not a PEM certificate"));
  auto kc = CreateKeyAndCsr("n");
  EXPECT_FALSE(SignCsr(*ca, kc->csr_pem, "", 1).ok());
  EXPECT_FALSE(SignCsr(*ca, kc->csr_pem, "n", 0).ok());
  EXPECT_FALSE(SignCsr(*ca, kc->csr_pem, std::string(65, 'n'), 1).ok());
  EXPECT_FALSE(CreateCa(std::string(100, 'x')).ok());
}

TEST(PkiTest, RandomHexAndSha256) {
  EXPECT_THAT(RandomHex(32), MatchesRegex("[0-9a-f]{64}"));
  EXPECT_NE(RandomHex(16), RandomHex(16));
  EXPECT_EQ(RandomHex(0), "");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_TRUE(IsSha256Hex(Sha256Hex("abc")));
  EXPECT_FALSE(IsSha256Hex(""));
  EXPECT_FALSE(IsSha256Hex(std::string(63, 'a')));
  EXPECT_FALSE(IsSha256Hex(std::string(65, 'a')));
  EXPECT_FALSE(IsSha256Hex(std::string(64, 'A')));           // lowercase only
  EXPECT_FALSE(IsSha256Hex(std::string(62, 'a') + "/."));  // never a path
}

const std::string kHash = std::string(64, 'a');
const std::string kSecret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

TEST(JoinTokenTest, ParsesAndRoundTrips) {
  JoinToken t{Sha256Hex("ca"), RandomHex(32)};
  auto p = ParseJoinToken(t.str());
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(p->ca_hash, t.ca_hash);
  EXPECT_EQ(p->secret, t.secret);

  auto spaced = ParseJoinToken("  \n\tKATO1." + kHash + "." + kSecret + "\r\n ");
  ASSERT_TRUE(spaced.ok()) << spaced.error();
  EXPECT_EQ(spaced->str(), "KATO1." + kHash + "." + kSecret);

  auto upper = ParseJoinToken("KATO1." + std::string(64, 'A') + "." + kSecret);
  ASSERT_TRUE(upper.ok());
  EXPECT_EQ(upper->ca_hash, kHash);
}

TEST(JoinTokenTest, ErrorsSayWhatIsWrong) {
  struct Case {
    std::string text;
    std::string error;
  };
  const Case cases[] = {
      {"", "empty"},
      {"  \n", "empty"},
      {"hello", "not a kato join token (expected KATO1.<ca-hash>.<secret>)"},
      {"kato1." + kHash + "." + kSecret, "not a kato join token"},
      {"." + kHash + "." + kSecret, "not a kato join token"},
      {"KATO2." + kHash + "." + kSecret, "unsupported join token version KATO2"},
      {"KATO1", "truncated"},
      {"KATO1." + kHash, "truncated"},
      {"KATO1." + kHash + "." + kSecret + ".x", "extra parts"},
      {"KATO1.." + kSecret, "malformed CA hash"},
      {"KATO1." + kHash.substr(1) + "." + kSecret, "malformed CA hash"},
      {"KATO1." + kHash + "a." + kSecret, "malformed CA hash"},
      {"KATO1." + kHash.substr(1) + "g." + kSecret, "malformed CA hash"},
      {"KATO1." + kHash + ".", "malformed secret"},
      {"KATO1." + kHash + "." + kSecret + "0", "malformed secret"},
      {"KATO1." + kHash + "." + kSecret.substr(1) + "z", "malformed secret"},
      {"KATO1." + kHash + "." + kSecret.substr(2) + " 0", "malformed secret"},
      {"KATO1 " + kHash + "." + kSecret, "not a kato join token"},
  };
  for (const auto& c : cases) {
    auto r = ParseJoinToken(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_THAT(r.error(), HasSubstr(c.error)) << c.text;
    // The secret never appears in an error.
    EXPECT_THAT(r.error(), ::testing::Not(HasSubstr(kSecret.substr(0, 16)))) << c.text;
  }
}

}  // namespace
}  // namespace kato

namespace kato {
namespace {
TEST(Base64Test, RoundTripsAndRefusesGarbage) {
  for (std::string s : {std::string(""), std::string("a"), std::string("ab"), std::string("abc"),
                        std::string("\x00\xff\x1f\x8b", 4), std::string(1000, 'x')}) {
    auto d = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(d.ok()) << d.error();
    EXPECT_EQ(*d, s);
  }
  EXPECT_EQ(Base64Encode("hello"), "aGVsbG8=");
  EXPECT_FALSE(Base64Decode("abc").ok());
  EXPECT_FALSE(Base64Decode("ab$=").ok());
  EXPECT_FALSE(Base64Decode("a===").ok());
}
}  // namespace
}  // namespace kato
