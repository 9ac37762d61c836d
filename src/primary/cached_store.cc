#include "primary/cached_store.h"

namespace kato {

void CachedStore::Drop(unsigned parts) {
  std::lock_guard lock(mu_);
  ++generation_;
  if (parts & kRevision) revision_.reset();
  if (parts & kSettings) settings_.clear();
  if (parts & kNodes) {
    nodes_.reset();
    by_id_.clear();
  }
  if (parts & kRemoved) removed_.clear();
}

Result<int64_t> CachedStore::Revision() {
  uint64_t gen;
  {
    std::lock_guard lock(mu_);
    if (revision_) return *revision_;
    gen = generation_;
  }
  auto r = inner_.Revision();
  std::lock_guard lock(mu_);
  if (r && gen == generation_) revision_ = *r;
  return r;
}

template <class Value, class Fetch>
Result<Value> CachedStore::ReadThrough(std::map<std::string, Value>& cache, const std::string& key,
                                       Fetch load) {
  uint64_t gen;
  {
    std::lock_guard lock(mu_);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    gen = generation_;
  }
  Result<Value> r = load();
  std::lock_guard lock(mu_);
  if (r && gen == generation_) cache[key] = *r;  // unless a write came in between
  return r;
}

Result<std::optional<std::string>> CachedStore::GetSetting(const std::string& key) {
  return ReadThrough(settings_, key, [&] { return inner_.GetSetting(key); });
}

Status CachedStore::SetSetting(const std::string& key, const std::string& value) {
  auto s = inner_.SetSetting(key, value);
  Drop(kRevision | kSettings);
  return s;
}

Status CachedStore::EnsureNodes() {
  uint64_t gen;
  {
    std::lock_guard lock(mu_);
    if (nodes_) return Ok();
    gen = generation_;
  }
  auto r = inner_.ListNodes();
  if (!r) return Err(r.error());
  std::lock_guard lock(mu_);
  if (gen != generation_ || nodes_) return Ok();  // callers read through below
  by_id_.clear();
  for (size_t i = 0; i < r->size(); ++i) by_id_[(*r)[i].id] = i;
  nodes_ = std::move(*r);
  return Ok();
}

Status CachedStore::PutNode(const NodeRecord& node) {
  auto s = inner_.PutNode(node);
  Drop(kRevision | kNodes);
  return s;
}

Result<std::optional<NodeRecord>> CachedStore::GetNode(const std::string& id) {
  KATO_TRY(EnsureNodes());
  {
    std::lock_guard lock(mu_);
    if (nodes_) {
      auto it = by_id_.find(id);
      if (it == by_id_.end()) return std::optional<NodeRecord>();
      return std::optional<NodeRecord>((*nodes_)[it->second]);
    }
  }
  return inner_.GetNode(id);  // a write came in between: read the store itself
}

Result<std::optional<NodeRecord>> CachedStore::FindNodeByIp(const std::string& ip) {
  KATO_TRY(EnsureNodes());
  {
    std::lock_guard lock(mu_);
    if (nodes_) {
      for (const auto& n : *nodes_)
        if (n.ip == ip) return std::optional<NodeRecord>(n);
      return std::optional<NodeRecord>();
    }
  }
  return inner_.FindNodeByIp(ip);
}

Result<std::vector<NodeRecord>> CachedStore::ListNodes() {
  KATO_TRY(EnsureNodes());
  {
    std::lock_guard lock(mu_);
    if (nodes_) return *nodes_;
  }
  return inner_.ListNodes();
}

Status CachedStore::RemoveNode(const std::string& id) {
  auto s = inner_.RemoveNode(id);
  Drop(kRevision | kNodes | kRemoved);
  return s;
}

Result<bool> CachedStore::IsRemoved(const std::string& id) {
  return ReadThrough(removed_, id, [&] { return inner_.IsRemoved(id); });
}

Status CachedStore::ClearRemoved(const std::string& id) {
  auto s = inner_.ClearRemoved(id);
  Drop(kRevision | kRemoved);
  return s;
}

Status CachedStore::AddToken(const TokenRecord& token) {
  auto s = inner_.AddToken(token);
  Drop(kRevision);
  return s;
}

Result<std::optional<TokenRecord>> CachedStore::FindToken(const std::string& secret_hash) {
  return inner_.FindToken(secret_hash);
}

Status CachedStore::RevokeAllTokens() {
  auto s = inner_.RevokeAllTokens();
  Drop(kRevision);
  return s;
}

Status CachedStore::SetConfig(const ConfigEntry& entry) {
  auto s = inner_.SetConfig(entry);
  Drop(kRevision);
  return s;
}

Result<std::optional<ConfigEntry>> CachedStore::GetConfig(const std::string& component,
                                                          const std::string& key) {
  return inner_.GetConfig(component, key);
}

Result<bool> CachedStore::DeleteConfig(const std::string& component, const std::string& key) {
  auto r = inner_.DeleteConfig(component, key);
  Drop(kRevision);
  return r;
}

Result<std::vector<ConfigEntry>> CachedStore::ListConfig(const std::string& component) {
  return inner_.ListConfig(component);
}

Status CachedStore::PutDoc(const std::string& kind, const std::string& key,
                           const std::string& value_json) {
  auto s = inner_.PutDoc(kind, key, value_json);
  Drop(kRevision);
  return s;
}

Result<std::optional<std::string>> CachedStore::GetDoc(const std::string& kind,
                                                       const std::string& key) {
  return inner_.GetDoc(kind, key);
}

Result<std::vector<std::pair<std::string, std::string>>> CachedStore::ListDocs(
    const std::string& kind) {
  return inner_.ListDocs(kind);
}

Result<bool> CachedStore::DeleteDoc(const std::string& kind, const std::string& key) {
  auto r = inner_.DeleteDoc(kind, key);
  Drop(kRevision);
  return r;
}

Status CachedStore::WriteDocs(const std::vector<DocWrite>& writes) {
  auto s = inner_.WriteDocs(writes);
  Drop(kRevision);
  return s;
}

Result<bool> CachedStore::AcquireLease(const std::string& name, const std::string& holder,
                                       int64_t now_ms, int64_t ttl_ms) {
  auto r = inner_.AcquireLease(name, holder, now_ms, ttl_ms);
  Drop(kRevision);
  return r;
}

Status CachedStore::ReleaseLease(const std::string& name, const std::string& holder) {
  auto s = inner_.ReleaseLease(name, holder);
  Drop(kRevision);
  return s;
}

Result<std::optional<LeaseRecord>> CachedStore::GetLease(const std::string& name) {
  return inner_.GetLease(name);
}

Status CachedStore::AppendHistory(const HistoryEntry& entry) {
  auto s = inner_.AppendHistory(entry);
  Drop(kRevision);
  return s;
}

Result<std::vector<HistoryEntry>> CachedStore::ListHistory(int limit) {
  return inner_.ListHistory(limit);
}

Result<StoreSnapshot> CachedStore::Dump() { return inner_.Dump(); }

Status CachedStore::Load(const StoreSnapshot& snapshot) {
  auto s = inner_.Load(snapshot);
  Drop(kAll);
  return s;
}

}  // namespace kato
