#include "agent/web_cert.h"

#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/log.h"
#include "common/pki.h"

namespace kato {

Result<bool> EnsureWebCert(ClusterClient& client, const std::string& cert_path,
                           const std::string& key_path, const std::string& endpoint,
                           int64_t now_s, const char* who) {
  if (endpoint.empty()) return false;
  auto cert = ReadFile(cert_path);
  auto key = ReadFile(key_path);
  if (cert && key) {
    auto info = InspectCert(*cert);
    if (info && KeyMatchesCert(*key, *cert) && CertCoversHost(*info, endpoint) &&
        info->not_after_s - now_s > kWebCertRenewBeforeS)
      return false;
  }
  auto kc = CreateKeyAndCsr("kato web");
  if (!kc) return Err(kc.error());
  auto r = client.Call("POST", "/v1/webcert", nlohmann::json{{"csr", kc->csr_pem}}.dump());
  if (!r) return Err("cannot get the cluster's web certificate: " + r.error());
  auto j = nlohmann::json::parse(*r, nullptr, false);
  if (!j.is_object() || !j.contains("cert") || !j["cert"].is_string())
    return Err("cannot get the cluster's web certificate: the core's reply has no certificate");
  // The file holds the chain: the certificate, then the cluster CA, so that a
  // client can pin the CA the first time it sees it (`kato login`).
  std::string chain = j["cert"].get<std::string>();
  if (j.contains("ca") && j["ca"].is_string()) {
    if (!chain.empty() && chain.back() != '\n') chain += '\n';
    chain += j["ca"].get<std::string>();
  }
  // Key first: until the certificate follows, the pair does not match and is not used.
  KATO_TRY(WriteFileAtomic(key_path, kc->key_pem, 0600));
  KATO_TRY(WriteFileAtomic(cert_path, chain, 0644));
  LogInfo("{}: new web certificate for {}", who, j.value("names", nlohmann::json::array()).dump());
  return true;
}

Result<CertAndKey> SplitBundle(const std::string& bundle) {
  // The key's block: "-----BEGIN [EC |RSA ]PRIVATE KEY-----" ... its END line.
  size_t begin = bundle.find("-----BEGIN ");
  while (begin != std::string::npos) {
    size_t eol = bundle.find("-----", begin + 11);
    if (eol == std::string::npos) break;
    std::string label = bundle.substr(begin + 11, eol - begin - 11);
    if (label.size() >= 11 && label.compare(label.size() - 11, 11, "PRIVATE KEY") == 0) {
      std::string end_line = "-----END " + label + "-----";
      size_t end = bundle.find(end_line, eol);
      if (end == std::string::npos) break;
      end += end_line.size();
      CertAndKey out;
      out.key_pem = bundle.substr(begin, end - begin) + "\n";
      out.cert_pem = bundle.substr(0, begin) + bundle.substr(end);
      return out;
    }
    begin = bundle.find("-----BEGIN ", eol);
  }
  return Err("the certificate bundle holds no PEM private key");
}

}  // namespace kato
