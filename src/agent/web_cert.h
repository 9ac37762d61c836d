// Web certificates: what load balancers and routers serve to web clients on
// port 443. The cluster's own (signed by the cluster CA on the core for
// api.HOST, *.HOST and HOST: POST /v1/webcert) and the operator's
// (`kato op custom_ssl_cert`, a bundle of the certificate chain and its key).
// Thread-compatible free functions.
#pragma once

#include <cstdint>
#include <string>

#include "agent/cluster_client.h"
#include "common/result.h"

namespace kato {

inline constexpr int64_t kWebCertRenewBeforeS = 30 * 86400;  // a month before it expires

// Fetches the cluster's web certificate into cert_path/key_path (a new key
// each time, made here: it never leaves the node) when they hold none, a
// pair that does not match, one that does not name `endpoint`, or one that
// expires within kWebCertRenewBeforeS. True when new files were written.
// `who` prefixes log lines ("lb", "router").
Result<bool> EnsureWebCert(ClusterClient& client, const std::string& cert_path,
                           const std::string& key_path, const std::string& endpoint,
                           int64_t now_s, const char* who);

// A bundle is the certificate chain followed by its private key (one file, so
// that one rename installs both): split it.
struct CertAndKey {
  std::string cert_pem, key_pem;
};
Result<CertAndKey> SplitBundle(const std::string& bundle);

}  // namespace kato
