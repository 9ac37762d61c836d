// Where a node keeps its files inside its data dir (DESIGN.md "Node data dir").
#pragma once

#include <string>

namespace kato {

struct DataLayout {
  std::string dir;  // absolute

  std::string node_file() const { return dir + "/node.json"; }        // identity
  std::string cluster_file() const { return dir + "/cluster.json"; }  // membership + roles cache
  std::string pki_dir() const { return dir + "/pki"; }
  std::string ca_cert() const { return pki_dir() + "/ca.pem"; }
  std::string ca_key() const { return pki_dir() + "/ca.key"; }  // core only
  std::string node_key() const { return pki_dir() + "/node.key"; }
  std::string node_cert() const { return pki_dir() + "/node.pem"; }
  std::string token_file() const { return pki_dir() + "/join-token"; }  // core only
  std::string socket() const { return dir + "/kato.sock"; }
  std::string lock_file() const { return dir + "/katod.lock"; }
  std::string log_dir() const { return dir + "/logs"; }
  std::string run_dir() const { return dir + "/run"; }
  std::string state_db() const { return dir + "/state.db"; }  // primary only
  // The state store's spec (a postgresql:// URL) when it is not state.db; 0600.
  std::string store_spec() const { return dir + "/state-store"; }
  std::string services_dir() const { return dir + "/services"; }
};

constexpr const char* kDefaultDataDir = "/var/lib/kato";

}  // namespace kato
