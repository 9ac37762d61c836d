#include "router/router_certs.h"

#include "agent/web_cert.h"
#include "common/fs.h"
#include "common/pki.h"

namespace kato {

RouterCerts::RouterCerts(RouterLayout layout, ServedCert node_cert)
    : layout_(std::move(layout)), node_cert_(std::move(node_cert)) {}

CertChoice RouterCerts::Choose(int64_t now_s, const std::string& refused_sha,
                               std::string* problem) const {
  CertChoice out;
  problem->clear();
  auto add = [&](ServedCert c, const std::string& source, const std::string& fingerprint) {
    out.id += source + ":" + fingerprint + ";";
    out.certs.push_back(std::move(c));
    out.sources.push_back(source);
    out.fingerprints.push_back(fingerprint);
  };
  if (auto bundle = ReadFile(layout_.custom_bundle())) {
    std::string sha = Sha256Hex(*bundle);
    auto parts = SplitBundle(*bundle);
    Result<CertInfo> info = parts ? CheckKeyAndCert(parts->key_pem, parts->cert_pem, now_s)
                                  : Result<CertInfo>(Err(parts.error()));
    if (sha == refused_sha) {
      *problem = "the router refused it";
    } else if (!info) {
      *problem = info.error();
    } else {
      out.custom_sha = sha;
      add({parts->cert_pem, parts->key_pem}, "custom", info->fingerprint);
    }
  }
  auto cert = ReadFile(layout_.web_cert());
  auto key = ReadFile(layout_.web_key());
  if (cert && key) {
    auto info = CheckKeyAndCert(*key, *cert, now_s);
    if (info) add({*cert, *key}, "cluster", info->fingerprint);
  }
  if (auto info = InspectCert(node_cert_.cert_pem); info) add(node_cert_, "node", info->fingerprint);
  return out;
}

}  // namespace kato
