// Where the load balancer keeps its files inside the node's data dir. Shared
// by `katod lb` (which runs nginx over them) and the agent's commands (which
// install the operator's certificate and read the balancer's state).
// Header-only, so that the agent needs no link to the lb library.
#pragma once

#include <string>

namespace kato {

struct LbLayout {
  std::string dir;  // DATA/lb

  explicit LbLayout(const std::string& data_dir) : dir(data_dir + "/lb") {}

  std::string conf() const { return dir + "/nginx.conf"; }      // what nginx runs
  std::string conf_next() const { return dir + "/nginx.conf.next"; }  // checked before use
  std::string run_dir() const { return dir + "/run"; }          // pid file, temp dirs
  std::string pid_file() const { return run_dir() + "/nginx.pid"; }
  std::string log_dir() const { return dir + "/logs"; }         // error.log, access.log
  std::string state_file() const { return dir + "/state.json"; }  // pool, health, certificate
  // The cluster's web certificate (signed by the cluster CA on the core).
  std::string web_dir() const { return dir + "/web"; }
  std::string web_cert() const { return web_dir() + "/cert.pem"; }
  std::string web_key() const { return web_dir() + "/key.pem"; }
  // The operator's certificate (`kato op custom_ssl_cert install`), used instead
  // when present: its chain and its key in one file, so that one atomic rename
  // installs both (nginx reads the key from the certificate file too).
  std::string custom_dir() const { return dir + "/custom"; }
  std::string custom_bundle() const { return custom_dir() + "/bundle.pem"; }
  std::string custom_info() const { return custom_dir() + "/info.json"; }  // for `list`
};

// The cluster config entry (component "load_balancer") that restricts a
// load balancer's pool to chosen routers: a JSON list of IPs. Absent: every
// router of the cluster.
inline std::string LbRoutersConfigKey(const std::string& node_id) { return "routers." + node_id; }

}  // namespace kato
