// PKI for the cluster: the cluster CA, node certificates, and join tokens.
//
// Node certificates carry the node id as their CommonName and no address: a
// node keeps its certificate across `node migrate`. Peers are trusted when
// their certificate chains to the cluster CA. All functions are thread-safe
// and return PEM text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace kato {

struct CaBundle {
  std::string cert_pem;
  std::string key_pem;
};

// A new self-signed CA (EC P-256, 10 years), CN "kato cluster CA <name>".
Result<CaBundle> CreateCa(const std::string& name);

// Lowercase hex SHA-256 of the certificate's DER encoding.
Result<std::string> CertFingerprint(const std::string& cert_pem);

// A new private key (EC P-256) and a CSR for it with CommonName `cn`.
struct KeyAndCsr {
  std::string key_pem;
  std::string csr_pem;
};
Result<KeyAndCsr> CreateKeyAndCsr(const std::string& cn);

// Signs a CSR (whose signature must verify) as a leaf certificate valid for
// `days`, usable for TLS server and client authentication, with CommonName
// `cn` (the CSR's own subject is ignored) and no subjectAltName: peers are
// identified by chaining to the CA and by CN, never by address.
Result<std::string> SignCsr(const CaBundle& ca, const std::string& csr_pem, const std::string& cn,
                            int days);

// Like SignCsr, but a TLS server certificate for web clients: its
// subjectAltName lists `dns_names` (at least one; "*.example.com" wildcards
// allowed), which browsers check instead of the CommonName. Its extended key
// usage is serverAuth only: it is never accepted as a client certificate
// (node certificates from SignCsr have serverAuth and clientAuth).
Result<std::string> SignServerCsr(const CaBundle& ca, const std::string& csr_pem,
                                  const std::string& cn, const std::vector<std::string>& dns_names,
                                  int days);

// What a certificate says about itself (the first one of a PEM chain).
struct CertInfo {
  std::string common_name;             // empty when the subject has none
  std::vector<std::string> dns_names;  // subjectAltName DNS entries
  int64_t not_before_s = 0;            // Unix seconds
  int64_t not_after_s = 0;
  std::string fingerprint;  // SHA-256 of the DER, lowercase hex
};
Result<CertInfo> InspectCert(const std::string& cert_pem);

// Whether `host` is named by the certificate: an exact DNS name, or a
// "*.domain" wildcard covering exactly one label (the CommonName counts only
// when there is no DNS subjectAltName, as RFC 6125 says).
bool CertCoversHost(const CertInfo& info, const std::string& host);

// Checks an operator's key and certificate (the leaf first, then its chain)
// before a server uses them: both parse, the key belongs to the leaf, and the
// leaf is valid at `now_s`. The error says which check failed.
Result<CertInfo> CheckKeyAndCert(const std::string& key_pem, const std::string& cert_pem,
                                 int64_t now_s);

// The CommonName of a certificate's subject.
Result<std::string> CertCommonName(const std::string& cert_pem);

// Checks that `key_pem` is the private key of `cert_pem`.
Status KeyMatchesCert(const std::string& key_pem, const std::string& cert_pem);

// Cryptographically random bytes as lowercase hex (2*n characters).
std::string RandomHex(size_t n);

// Lowercase hex SHA-256 of arbitrary bytes.
std::string Sha256Hex(const std::string& data);
// True for exactly 64 lowercase hex digits (what Sha256Hex returns): safe as a file name.
bool IsSha256Hex(const std::string& text);

// Standard base64 (RFC 4648, with padding). Decoding refuses anything else.
std::string Base64Encode(const std::string& data);
Result<std::string> Base64Decode(const std::string& text);

// Join token: KATO1.<ca-sha256-hex>.<secret-hex>.
struct JoinToken {
  std::string ca_hash;  // 64 hex chars
  std::string secret;   // 64 hex chars
  std::string str() const { return "KATO1." + ca_hash + "." + secret; }
};
// Parses a token; the error says what is wrong with it ("not a kato join
// token", "malformed CA hash", ...) and never contains the token. Surrounding
// whitespace is ignored; hex is returned lowercase.
Result<JoinToken> ParseJoinToken(const std::string& text);

}  // namespace kato
