// A node's identity and its cluster membership, as kept in its data dir.
//
// node.json holds the node id, generated once and never changed (IPs and
// hostnames change; identities do not). cluster.json caches what the node
// knows of its cluster, so that it keeps running its roles while the core is
// away and reconciles when it returns. Both are written atomically.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/layout.h"
#include "common/result.h"

namespace kato {

struct NodeIdentity {
  std::string id;
  std::string ip;
  std::string hostname;
};

// Loads node.json, creating it (with a new id) when missing. `ip` and
// `hostname`, when not empty, replace the stored ones (and are saved).
Result<NodeIdentity> LoadOrCreateIdentity(const DataLayout& layout, const std::string& ip,
                                          const std::string& hostname);
Status SaveIdentity(const DataLayout& layout, const NodeIdentity& id);

struct Membership {
  bool attached = false;
  std::string core_ip;
  std::string endpoint;
  std::string cluster_version;
  std::vector<std::string> roles;  // assigned to this node by the cluster
  int64_t revision = 0;
};

Result<Membership> LoadMembership(const DataLayout& layout);  // a missing file: not attached
Status SaveMembership(const DataLayout& layout, const Membership& m);

// A new node id: 32 lowercase hex characters from a CSPRNG.
std::string NewNodeId();

}  // namespace kato
