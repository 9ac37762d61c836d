// `katod lb`: the load_balancer role's process. Runs Debian's nginx as its
// child over a configuration generated from the cluster: round-robin over the
// routers (ClusterClient long-poll on the cluster revision), TLS on 443 with
// the cluster's web certificate (POST /v1/webcert on the core) or the
// operator's (DATA/lb/custom, `kato op custom_ssl_cert`), and an active
// health check of each router's /health every 500 ms. When the healthy pool
// or the certificate changes it rewrites the configuration, checks it with
// `nginx -t` and reloads nginx gracefully (SIGHUP); a configuration that fails
// the check is never loaded. SIGTERM stops nginx gracefully (SIGQUIT), bounded.
#pragma once

#include <string>

namespace kato {

struct LbConfig {
  std::string data_dir;
  std::string ip;
  std::string version;
  std::string nginx;  // the nginx binary; empty: found in the usual places
};

int RunLb(const LbConfig& config);

}  // namespace kato
