// Where the router keeps its files inside the node's data dir. Shared by
// `katod router` and the agent's commands (custom certificates, status).
// Header-only, so that the agent needs no link to the router library.
#pragma once

#include <string>

namespace kato {

struct RouterLayout {
  std::string dir;  // DATA/router

  explicit RouterLayout(const std::string& data_dir) : dir(data_dir + "/router") {}

  // What the router serves and its health: certificates, connections (JSON).
  std::string state_file() const { return dir + "/state.json"; }
  // One line per request, rotated at 64 MiB into access.log.1.
  std::string access_log() const { return dir + "/access.log"; }
  // The cluster's web certificate (api.HOST, *.HOST, HOST; signed on the core).
  std::string web_dir() const { return dir + "/web"; }
  std::string web_cert() const { return web_dir() + "/cert.pem"; }
  std::string web_key() const { return web_dir() + "/key.pem"; }
  // The operator's certificate (`kato op custom_ssl_cert install` on this
  // node): its chain and key in one file, served before the cluster's.
  std::string custom_dir() const { return dir + "/custom"; }
  std::string custom_bundle() const { return custom_dir() + "/bundle.pem"; }
  std::string custom_info() const { return custom_dir() + "/info.json"; }
};

}  // namespace kato
