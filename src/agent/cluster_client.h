// ClusterClient: how a role process (controller, router, dea) of a node talks
// to the primary: with the node's certificate, to the core address its agent
// keeps in the data dir (re-read when it changes, e.g. after `node migrate`).
//
// RemoteStore: the Store interface over that client, for processes that do
// not hold the store themselves. Documents, settings and nodes are supported;
// tokens, config and history belong to the agent's commands and are refused.
// Thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "common/result.h"
#include "store/store.h"

namespace kato {

class ClusterClient {
 public:
  explicit ClusterClient(std::string data_dir);

  // One call to the primary; the reply body on 2xx, else the primary's error message.
  Result<std::string> Call(const std::string& method, const std::string& path,
                           const std::string& body = "", Millis timeout = Millis(3000));
  // Long-polls until the cluster revision passes `after` (or the timeout); the new revision.
  Result<int64_t> Watch(int64_t after, Millis timeout);
  // The same, with the revision at which the set of members last changed: {revision, members}.
  Result<std::pair<int64_t, int64_t>> WatchRevisions(int64_t after, Millis timeout);

  // The node's own id and address, and its TLS material (for serving peers).
  struct Identity {
    std::string node_id, ip, ca_pem, cert_pem, key_pem, core_ip;
  };
  Result<Identity> Load();

 private:
  std::string data_dir_;
};

// A node as the primary's /v1/cluster lists it (missing fields are empty).
NodeRecord NodeFromJson(const nlohmann::json& node);

class RemoteStore final : public Store {
 public:
  explicit RemoteStore(ClusterClient& client) : client_(client) {}

  Result<int64_t> Revision() override;
  Result<std::optional<std::string>> GetSetting(const std::string& key) override;
  Status SetSetting(const std::string& key, const std::string& value) override;
  Status PutNode(const NodeRecord& node) override;
  Result<std::optional<NodeRecord>> GetNode(const std::string& id) override;
  Result<std::optional<NodeRecord>> FindNodeByIp(const std::string& ip) override;
  Result<std::vector<NodeRecord>> ListNodes() override;
  Status RemoveNode(const std::string& id) override;
  Result<bool> IsRemoved(const std::string& id) override;
  Status ClearRemoved(const std::string& id) override;
  Status AddToken(const TokenRecord& token) override;
  Result<std::optional<TokenRecord>> FindToken(const std::string& secret_hash) override;
  Status RevokeAllTokens() override;
  Status SetConfig(const ConfigEntry& entry) override;
  Result<std::optional<ConfigEntry>> GetConfig(const std::string& component,
                                               const std::string& key) override;
  Result<bool> DeleteConfig(const std::string& component, const std::string& key) override;
  Result<std::vector<ConfigEntry>> ListConfig(const std::string& component) override;
  Status PutDoc(const std::string& kind, const std::string& key,
                const std::string& value_json) override;
  Result<std::optional<std::string>> GetDoc(const std::string& kind,
                                            const std::string& key) override;
  Result<std::vector<std::pair<std::string, std::string>>> ListDocs(
      const std::string& kind) override;
  Result<bool> DeleteDoc(const std::string& kind, const std::string& key) override;
  // One POST /v1/docs: the request must fit the primary's body limit (1 MiB).
  Status WriteDocs(const std::vector<DocWrite>& writes) override;
  // Leases use the primary's clock: now_ms is ignored.
  Result<bool> AcquireLease(const std::string& name, const std::string& holder, int64_t now_ms,
                            int64_t ttl_ms) override;
  Status ReleaseLease(const std::string& name, const std::string& holder) override;
  Result<std::optional<LeaseRecord>> GetLease(const std::string& name) override;
  Status AppendHistory(const HistoryEntry& entry) override;
  Result<std::vector<HistoryEntry>> ListHistory(int limit) override;
  // Whole-state copies run on the core against the store itself: refused here.
  Result<StoreSnapshot> Dump() override;
  Status Load(const StoreSnapshot& snapshot) override;

 private:
  ClusterClient& client_;
};

}  // namespace kato
