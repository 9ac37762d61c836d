// HollowNode: one simulated cluster node for kato-sim (as Kubernetes'
// kubemark): it joins with the real join token and gets a real certificate,
// heartbeats and watches like an agent, but runs no processes; it reports
// the processes of its roles as running.
//
// All its calls go to the primary over HttpsCall's kept connections, from
// the node's own loopback address. Not thread-safe: one thread calls
// Heartbeat at a time (a watch may run on another).
#pragma once

#include <atomic>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/http.h"
#include "common/pki.h"
#include "common/result.h"

namespace kato {

struct HollowCore {
  std::string ip;
  int port = 0;         // the primary's port (kPrimaryPort in a cluster)
  std::string version;  // what the simulated nodes say they run
};

class HollowNode {
 public:
  // Joins the cluster at `ip` with a new id, key and certificate.
  static Result<HollowNode> Join(const HollowCore& core, const JoinToken& token,
                                 const std::string& ip, const std::vector<std::string>& roles);

  // One heartbeat: the node's address, version and its roles' processes.
  // Fails with the primary's message; "removed" when the cluster removed it.
  Status Heartbeat();
  // Long-polls this node's scope of the cluster (its record, the endpoint, a
  // removal) for at most `timeout`; true when it changed since the last call.
  Result<bool> Watch(Millis timeout);
  // Leaves the cluster (as `kato node detach`).
  Status Leave();

  // As a DEA: whether the node has the role, the cluster's assignments (every
  // node's, as DEAs read them), and a report of this node's instances (each
  // {"instance_id", "app", "index", "version", "state", ...}).
  bool is_dea() const;
  Result<nlohmann::json> Assignments();
  Status Report(const nlohmann::json& instances, int memory_mb);

  const std::string& id() const { return id_; }
  const std::string& ip() const { return ip_; }
  // The roles as the primary last said.
  const std::vector<std::string>& roles() const { return roles_; }
  // Its certificate, key and the cluster CA.
  const ClientTls& credentials() const { return tls_; }

 private:
  HollowNode(HollowCore core, std::string id, std::string ip, ClientTls tls)
      : core_(std::move(core)), id_(std::move(id)), ip_(std::move(ip)), tls_(std::move(tls)) {}
  Result<nlohmann::json> Call(const std::string& method, const std::string& path,
                              const std::string& body, Millis timeout);

  HollowCore core_;
  std::string id_, ip_;
  ClientTls tls_;
  std::vector<std::string> roles_;
  int64_t watched_ = 0;  // the revision the last watch returned
};

}  // namespace kato
