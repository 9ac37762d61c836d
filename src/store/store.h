// Store: the cluster state, owned by the primary (DESIGN.md "Cluster state").
//
// Every mutation bumps the cluster revision in the same transaction, so a
// reader that saw revision R and later sees R' > R knows something changed.
// Implementations are thread-safe (calls are serialized internally) and
// durable: a mutation that returned Ok survives a crash.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"

namespace kato {

struct NodeRecord {
  std::string id;  // generated node id; never changes
  std::string ip;  // unique among nodes
  std::string hostname;
  std::string version;
  std::vector<std::string> roles;
  int64_t joined_ms = 0;
  bool operator==(const NodeRecord&) const = default;
};

struct TokenRecord {
  std::string secret_hash;  // SHA-256 hex of the token secret; the secret itself is never stored
  int64_t created_ms = 0;
  int64_t expires_ms = 0;  // 0: never
  bool revoked = false;
  bool operator==(const TokenRecord&) const = default;
};

struct HistoryEntry {
  int64_t id = 0;  // assigned by the store, increasing
  int64_t time_ms = 0;
  std::string node;  // the node (IP) the command ran on
  std::string user;
  std::string command;
  bool operator==(const HistoryEntry&) const = default;
};

struct ConfigEntry {
  std::string component;
  std::string key;
  std::string value_json;  // a JSON document
  bool operator==(const ConfigEntry&) const = default;
};

// A named lock with an expiry: who leads among several controllers.
struct LeaseRecord {
  std::string name;
  std::string holder;
  int64_t expires_ms = 0;
  bool operator==(const LeaseRecord&) const = default;
};

// One change of Store::WriteDocs: a put of value_json, or a delete when it
// has none.
struct DocWrite {
  std::string kind, key;
  std::optional<std::string> value_json;
  bool operator==(const DocWrite&) const = default;
};

// Everything a store holds, for copying a whole cluster state from one store
// to another (CopyStore). Lists are in a fixed order (by key, id or name), so
// two snapshots of equal states compare equal.
struct StoreSnapshot {
  int64_t revision = 0;
  std::vector<std::pair<std::string, std::string>> settings;  // by key
  std::vector<NodeRecord> nodes;                              // as ListNodes
  std::vector<std::string> removed_nodes;                     // by id
  std::vector<TokenRecord> tokens;                            // by secret_hash
  std::vector<ConfigEntry> config;                            // as ListConfig("")
  struct Doc {
    std::string kind, key, value_json;
    bool operator==(const Doc&) const = default;
  };
  std::vector<Doc> docs;              // by kind, then key
  std::vector<LeaseRecord> leases;    // by name
  std::vector<HistoryEntry> history;  // by id
  bool operator==(const StoreSnapshot&) const = default;
};

class Store {
 public:
  virtual ~Store() = default;

  virtual Result<int64_t> Revision() = 0;

  // Cluster settings (endpoint, core_ip, ca_cert, ...): plain strings.
  virtual Result<std::optional<std::string>> GetSetting(const std::string& key) = 0;
  virtual Status SetSetting(const std::string& key, const std::string& value) = 0;

  // Inserts or replaces the node with this id. Fails, changing nothing, when
  // another node already has this IP ("address 10.0.0.5 is already used by node <id>").
  virtual Status PutNode(const NodeRecord& node) = 0;
  virtual Result<std::optional<NodeRecord>> GetNode(const std::string& id) = 0;
  virtual Result<std::optional<NodeRecord>> FindNodeByIp(const std::string& ip) = 0;
  virtual Result<std::vector<NodeRecord>> ListNodes() = 0;  // ordered by joined_ms, then id
  // Deletes the node and everything recorded about it (its roles, the
  // "instances" document it reported), and remembers its id as
  // removed (a removed node never comes back by itself), in one transaction.
  virtual Status RemoveNode(const std::string& id) = 0;
  virtual Result<bool> IsRemoved(const std::string& id) = 0;
  virtual Status ClearRemoved(const std::string& id) = 0;  // an explicit re-attach

  virtual Status AddToken(const TokenRecord& token) = 0;
  virtual Result<std::optional<TokenRecord>> FindToken(const std::string& secret_hash) = 0;
  virtual Status RevokeAllTokens() = 0;

  virtual Status SetConfig(const ConfigEntry& entry) = 0;
  virtual Result<std::optional<ConfigEntry>> GetConfig(const std::string& component,
                                                       const std::string& key) = 0;
  // Ok(false) when there was no such key.
  virtual Result<bool> DeleteConfig(const std::string& component, const std::string& key) = 0;
  virtual Result<std::vector<ConfigEntry>> ListConfig(const std::string& component) = 0;  // "" = all

  // Documents: JSON values by (kind, key), for state that later roles own (the
  // controller's apps and instance assignments). Values must be valid JSON.
  virtual Status PutDoc(const std::string& kind, const std::string& key,
                        const std::string& value_json) = 0;
  virtual Result<std::optional<std::string>> GetDoc(const std::string& kind,
                                                    const std::string& key) = 0;
  // (key, value_json) pairs of one kind, ordered by key.
  virtual Result<std::vector<std::pair<std::string, std::string>>> ListDocs(
      const std::string& kind) = 0;
  // Ok(false) when there was no such document.
  virtual Result<bool> DeleteDoc(const std::string& kind, const std::string& key) = 0;
  // Applies `writes` in order in one transaction: all of them or none, with
  // one revision bump (none when nothing changed). Deleting a document that
  // is not there is no error. Checked first with CheckDocWrites.
  virtual Status WriteDocs(const std::vector<DocWrite>& writes) = 0;

  // Leases. AcquireLease takes or renews lease `name` for `holder` until
  // now_ms + ttl_ms: Ok(true) when `holder` holds it afterwards (it was free,
  // expired at now_ms, or already held by `holder`), Ok(false) when another
  // holder's lease is still valid (then nothing changes). A change of holder
  // bumps the revision; a renewal does not (renewals are frequent and nobody
  // needs to wake for them). now_ms comes from one clock, the primary's.
  virtual Result<bool> AcquireLease(const std::string& name, const std::string& holder,
                                    int64_t now_ms, int64_t ttl_ms) = 0;
  // Gives the lease up when `holder` holds it (no-op otherwise).
  virtual Status ReleaseLease(const std::string& name, const std::string& holder) = 0;
  virtual Result<std::optional<LeaseRecord>> GetLease(const std::string& name) = 0;

  // Appends a history entry (its id and nothing else are assigned by the store).
  virtual Status AppendHistory(const HistoryEntry& entry) = 0;
  // The newest `limit` entries, oldest first.
  virtual Result<std::vector<HistoryEntry>> ListHistory(int limit) = 0;

  // The whole state, read in one transaction (a consistent snapshot).
  virtual Result<StoreSnapshot> Dump() = 0;
  // Fills an empty store (revision 0, no rows) with `snapshot` in one
  // transaction, keeping history ids and setting the revision to the
  // snapshot's: all or nothing. Refused when the store is not empty.
  virtual Status Load(const StoreSnapshot& snapshot) = 0;
};

// Why `writes` cannot be applied (an empty kind or key, a value that is not
// JSON, more than kMaxDocWrites), naming the first bad one; Ok otherwise.
inline constexpr size_t kMaxDocWrites = 20000;
Status CheckDocWrites(const std::vector<DocWrite>& writes);

// SQLite in WAL mode at `path` (created with its schema when missing; the
// schema has a version so later releases can migrate it).
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path);

// PostgreSQL at `url` (postgresql://USER:PASSWORD@HOST:PORT/DB[?...]): the
// same schema and semantics as SQLite, created when missing. connect_timeout=5
// is added when the URL has none. Errors name the URL with its password masked.
Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url);

// A store spec is a postgresql:// or postgres:// URL, or else an SQLite path.
bool IsPostgresUrl(const std::string& spec);
Result<std::unique_ptr<Store>> OpenStore(const std::string& spec);
// "postgresql" or "sqlite".
std::string StoreKind(const std::string& spec);
// The spec with any URL password replaced by "***" (safe for logs and output).
std::string MaskStoreSpec(const std::string& spec);
// Checks that `spec` is a usable postgresql:// URL (without connecting).
Status CheckPostgresUrl(const std::string& spec);

// Copies everything in `from` into the empty store `to` (Dump, Load), then
// reads `to` back and compares it with what was copied.
Status CopyStore(Store& from, Store& to);
// True when the store holds nothing (revision 0 and no rows).
Result<bool> IsEmptyStore(Store& store);

// Where a core's primary keeps the cluster state: the spec saved in the data
// dir by `node setup core --store` or `op migrate_store`, else SQLite state.db.
Result<std::string> StoreSpecOf(const std::string& data_dir);

}  // namespace kato
