// CustomCerts: the `kato op custom_ssl_cert install|remove|list` commands,
// for the node's HTTPS server: nginx on a load balancer, the router on a
// router node. The operator's key and certificate are checked before the
// server sees them, kept as one bundle (chain, then key), and the command
// waits (bounded) until the server reports, in its state file, that it serves
// them; one it refuses is taken back out, leaving what was there before.
// Thread-compatible: the agent runs one command at a time per node.
#pragma once

#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "common/clock.h"
#include "common/result.h"

namespace kato {

struct CertPlace {
  std::string server;   // for messages: "nginx", "the router"
  std::string process;  // the supervised process that serves it
  std::string custom_dir, custom_bundle, custom_info;
  std::string web_cert;    // the cluster's certificate, for list
  std::string state_file;  // {"cert": {"fingerprint"}, "refused_cert": {"fingerprint", "error"}}
};

CertPlace LoadBalancerCertPlace(const std::string& data_dir);
CertPlace RouterCertPlace(const std::string& data_dir);

class CustomCerts {
 public:
  // `running`: whether place.process is RUNNING now.
  CustomCerts(CertPlace place, std::function<bool()> running, const Clock& clock);

  // endpoint: the API endpoint the certificate must name (api.DOMAIN).
  Result<nlohmann::json> Install(const std::string& key_pem, const std::string& cert_pem,
                                 bool wildcard, const std::string& endpoint);
  Result<nlohmann::json> Remove();
  Result<nlohmann::json> List();

 private:
  // True once the server serves `fingerprint`; false when it does not run or
  // time is up; an error when it refused the certificate.
  Result<bool> WaitServed(const std::string& fingerprint, Millis limit);
  nlohmann::json State();

  CertPlace place_;
  std::function<bool()> running_;
  const Clock& clock_;
};

}  // namespace kato
