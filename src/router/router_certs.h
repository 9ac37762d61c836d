// RouterCerts: what the router serves on port 443, chosen from its files
// (RouterLayout): the operator's certificate (`kato op custom_ssl_cert
// install` on this node) first when it is installed and sound, then the
// cluster's web certificate (api.HOST, *.HOST, HOST), then the node's own
// certificate, which names no host (only until the web certificate arrives).
// The first is what clients without SNI get; SNI picks the first that covers
// the name (Router::SetCertificates).
// Thread-compatible: one caller (the router's certificate thread).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "router/proxy.h"
#include "router/router_layout.h"

namespace kato {

struct CertChoice {
  std::vector<ServedCert> certs;
  std::vector<std::string> sources;       // "custom", "cluster", "node", one per cert
  std::vector<std::string> fingerprints;  // SHA-256 of each leaf
  std::string custom_sha;                 // of the custom bundle when it is in the choice
  std::string id;                         // changes whenever the choice does
};

class RouterCerts {
 public:
  RouterCerts(RouterLayout layout, ServedCert node_cert);

  // Re-reads the files. A custom bundle that fails its checks (or whose
  // SHA-256 is `refused_sha`: the router would not load it) is left out,
  // and *problem says why (empty otherwise).
  CertChoice Choose(int64_t now_s, const std::string& refused_sha, std::string* problem) const;

 private:
  RouterLayout layout_;
  ServedCert node_cert_;
};

}  // namespace kato
