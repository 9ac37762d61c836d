// CachedStore: the primary's view of its Store, with what every heartbeat
// reads kept in memory: the revision, the settings, the nodes and whether a
// node was removed. Thousands of nodes heartbeat every second; with the cache
// a heartbeat that changes nothing touches neither the disk nor the database.
//
// The primary is the only writer of its store while it runs, and it writes
// through this object: each write drops what it can change (a node write the
// nodes, any write the revision), so a read after a write sees the write.
// Everything else (documents, config, leases, tokens, history) passes through.
// Thread-safe: a read that raced with a write does not refill the cache.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "store/store.h"

namespace kato {

class CachedStore final : public Store {
 public:
  explicit CachedStore(Store& inner) : inner_(inner) {}

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
  Status WriteDocs(const std::vector<DocWrite>& writes) override;
  Result<bool> AcquireLease(const std::string& name, const std::string& holder, int64_t now_ms,
                            int64_t ttl_ms) override;
  Status ReleaseLease(const std::string& name, const std::string& holder) override;
  Result<std::optional<LeaseRecord>> GetLease(const std::string& name) override;
  Status AppendHistory(const HistoryEntry& entry) override;
  Result<std::vector<HistoryEntry>> ListHistory(int limit) override;
  Result<StoreSnapshot> Dump() override;
  Status Load(const StoreSnapshot& snapshot) override;

 private:
  // What a write may have changed.
  enum Part : unsigned { kRevision = 1, kSettings = 2, kNodes = 4, kRemoved = 8, kAll = 15 };
  void Drop(unsigned parts);
  // Loads the nodes into the cache if they are not there; false if the store failed.
  Status EnsureNodes();
  // A cached entry, or `load`'s answer, kept unless a write raced with it.
  template <class Value, class Fetch>
  Result<Value> ReadThrough(std::map<std::string, Value>& cache, const std::string& key,
                            Fetch load);

  Store& inner_;
  std::mutex mu_;
  uint64_t generation_ = 0;  // bumped by every write; guarded by mu_
  std::optional<int64_t> revision_;
  std::map<std::string, std::optional<std::string>> settings_;
  std::optional<std::vector<NodeRecord>> nodes_;
  std::map<std::string, size_t> by_id_;  // index into nodes_
  std::map<std::string, bool> removed_;
};

}  // namespace kato
