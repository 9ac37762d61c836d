// SQLite implementation of Store (see store.h for the contract).
//
// One connection, serialized by a mutex. Every mutation is one
// BEGIN IMMEDIATE ... COMMIT transaction that also bumps meta.revision when it
// changed at least one row; a failure anywhere rolls the whole call back. WAL +
// synchronous=FULL makes a returned Ok durable (the WAL is fsynced at commit).
// Statements are prepared once, cached, and only ever take bound parameters.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "store/store.h"

namespace kato {
namespace {

// Bump when the schema changes, and add the migration from the previous
// version to Migrate() below.
constexpr int64_t kSchemaVersion = 3;

// Other processes (a CLI reading the store) may hold the write lock briefly.
constexpr int kBusyTimeoutMs = 5000;

// Child tables of nodes reference nodes(id) ON DELETE CASCADE, so removing a
// node clears everything recorded about it in the same statement.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE settings (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE nodes (
  id        TEXT PRIMARY KEY,
  ip        TEXT NOT NULL UNIQUE,
  hostname  TEXT NOT NULL,
  version   TEXT NOT NULL,
  joined_ms INTEGER NOT NULL
);
CREATE TABLE node_roles (
  node_id  TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  role     TEXT NOT NULL,
  PRIMARY KEY (node_id, position)
);
CREATE TABLE removed_nodes (
  id TEXT PRIMARY KEY
);
CREATE TABLE tokens (
  secret_hash TEXT PRIMARY KEY,
  created_ms  INTEGER NOT NULL,
  expires_ms  INTEGER NOT NULL,
  revoked     INTEGER NOT NULL
);
CREATE TABLE config (
  component  TEXT NOT NULL,
  key        TEXT NOT NULL,
  value_json TEXT NOT NULL,
  PRIMARY KEY (component, key)
);
CREATE TABLE history (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  time_ms INTEGER NOT NULL,
  node    TEXT NOT NULL,
  user    TEXT NOT NULL,
  command TEXT NOT NULL
);
)sql";

// Version 2: documents (apps, instance assignments).
constexpr const char* kSchemaV2 = R"sql(
CREATE TABLE docs (
  kind       TEXT NOT NULL,
  key        TEXT NOT NULL,
  value_json TEXT NOT NULL,
  PRIMARY KEY (kind, key)
);
)sql";

// Version 3: leases (the controllers' leader lock).
constexpr const char* kSchemaV3 = R"sql(
CREATE TABLE leases (
  name       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_ms INTEGER NOT NULL
);
)sql";

#define KATO_NODE_COLUMNS "SELECT id, ip, hostname, version, joined_ms FROM nodes "
constexpr const char* kNodesById = KATO_NODE_COLUMNS "WHERE id = ?";
constexpr const char* kNodesByIp = KATO_NODE_COLUMNS "WHERE ip = ?";
constexpr const char* kNodesByJoin = KATO_NODE_COLUMNS "ORDER BY joined_ms, id";
#undef KATO_NODE_COLUMNS

// A cached prepared statement in use: resets it and clears its bindings when
// the scope ends, so the next user starts clean.
class Stmt {
 public:
  explicit Stmt(sqlite3_stmt* s) : s_(s) {}
  ~Stmt() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // Binds parameters 1..n in order. Bind errors surface from the next Step.
  template <typename... Args>
  void Bind(const Args&... args) {
    [[maybe_unused]] int i = 0;
    (BindOne(++i, args), ...);
  }

  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(s_); }

  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(s_, col);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(s_, col)))
             : std::string();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(s_, col); }

 private:
  void BindOne(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void BindOne(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); }
  void BindOne(int i, int v) { sqlite3_bind_int64(s_, i, v); }
  void BindOne(int i, bool v) { sqlite3_bind_int(s_, i, v ? 1 : 0); }

  sqlite3_stmt* s_;
};

class SqliteStore final : public Store {
 public:
  SqliteStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  ~SqliteStore() override {
    for (auto& [sql, stmt] : stmts_) sqlite3_finalize(stmt);
    sqlite3_close(db_);
  }

  // Pragmas and schema; called once before the store is handed out.
  Status Init();

  Result<int64_t> Revision() override {
    std::lock_guard lock(mu_);
    return ReadRevision();
  }

  Result<std::optional<std::string>> GetSetting(const std::string& key) override {
    std::lock_guard lock(mu_);
    auto s = Prepare("SELECT value FROM settings WHERE key = ?");
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    st.Bind(key);
    int rc = st.Step();
    if (rc == SQLITE_ROW) return std::optional<std::string>(st.Text(0));
    if (rc == SQLITE_DONE) return std::optional<std::string>();
    return Fail("cannot read setting " + key);
  }

  Status SetSetting(const std::string& key, const std::string& value) override {
    if (key.empty()) return Err("setting name must not be empty");
    std::lock_guard lock(mu_);
    return Write([&]() -> Status {
      return Exec("cannot write setting " + key,
                  "INSERT INTO settings (key, value) VALUES (?, ?) "
                  "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                  key, value);
    });
  }

  Status PutNode(const NodeRecord& node) override {
    if (node.id.empty()) return Err("node id must not be empty");
    if (node.ip.empty()) return Err("node " + node.id + " has no IP address");
    std::lock_guard lock(mu_);
    return Write([&]() -> Status {
      const std::string what = "cannot write node " + node.id;
      auto s = Prepare("SELECT id FROM nodes WHERE ip = ? AND id <> ?");
      if (!s.ok()) return std::move(s).take_error();
      {
        Stmt st(*s);
        st.Bind(node.ip, node.id);
        int rc = st.Step();
        if (rc == SQLITE_ROW) {
          return Err("address " + node.ip + " is already used by node " + st.Text(0));
        }
        if (rc != SQLITE_DONE) return Fail(what);
      }
      // An upsert, not INSERT OR REPLACE: replacing would delete the row and
      // cascade to everything else recorded about the node.
      KATO_TRY(Exec(what,
                    "INSERT INTO nodes (id, ip, hostname, version, joined_ms) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                    "ip = excluded.ip, hostname = excluded.hostname, "
                    "version = excluded.version, joined_ms = excluded.joined_ms",
                    node.id, node.ip, node.hostname, node.version, node.joined_ms));
      KATO_TRY(Exec(what, "DELETE FROM node_roles WHERE node_id = ?", node.id));
      for (size_t i = 0; i < node.roles.size(); ++i) {
        KATO_TRY(Exec(what, "INSERT INTO node_roles (node_id, position, role) VALUES (?, ?, ?)",
                      node.id, static_cast<int64_t>(i), node.roles[i]));
      }
      return Ok();
    });
  }

  Result<std::optional<NodeRecord>> GetNode(const std::string& id) override {
    std::lock_guard lock(mu_);
    return ReadOneNode(kNodesById, id, "cannot read node " + id);
  }

  Result<std::optional<NodeRecord>> FindNodeByIp(const std::string& ip) override {
    std::lock_guard lock(mu_);
    return ReadOneNode(kNodesByIp, ip, "cannot read node with address " + ip);
  }

  Result<std::vector<NodeRecord>> ListNodes() override {
    std::lock_guard lock(mu_);
    std::vector<NodeRecord> nodes;
    KATO_TRY(ReadTx([&]() -> Status {
      auto r = ReadNodes(kNodesByJoin, std::nullopt, "cannot list nodes");
      if (!r.ok()) return std::move(r).take_error();
      nodes = std::move(*r);
      return Ok();
    }));
    return nodes;
  }

  Status RemoveNode(const std::string& id) override {
    std::lock_guard lock(mu_);
    return Write([&]() -> Status {
      const std::string what = "cannot remove node " + id;
      KATO_TRY(Exec(what, "DELETE FROM nodes WHERE id = ?", id));
      if (sqlite3_changes64(db_) == 0) return Err("no node with id " + id);
      // Documents a node reports about itself are keyed by its id.
      KATO_TRY(Exec(what, "DELETE FROM docs WHERE kind = 'instances' AND key = ?", id));
      return Exec(what, "INSERT OR IGNORE INTO removed_nodes (id) VALUES (?)", id);
    });
  }

  Result<bool> IsRemoved(const std::string& id) override {
    std::lock_guard lock(mu_);
    auto s = Prepare("SELECT 1 FROM removed_nodes WHERE id = ?");
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    st.Bind(id);
    int rc = st.Step();
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) return rc == SQLITE_ROW;
    return Fail("cannot read removed node " + id);
  }

  Status ClearRemoved(const std::string& id) override {
    std::lock_guard lock(mu_);
    return Write([&]() -> Status {
      return Exec("cannot clear removed node " + id, "DELETE FROM removed_nodes WHERE id = ?", id);
    });
  }

  Status AddToken(const TokenRecord& token) override {
    if (token.secret_hash.empty()) return Err("token hash must not be empty");
    std::lock_guard lock(mu_);
    return Write([&]() -> Status {
      auto exists = Prepare("SELECT 1 FROM tokens WHERE secret_hash = ?");
      if (!exists.ok()) return std::move(exists).take_error();
      {
        Stmt st(*exists);
        st.Bind(token.secret_hash);
        int rc = st.Step();
        if (rc == SQLITE_ROW) return Err("a token with this hash already exists");
        if (rc != SQLITE_DONE) return Fail("cannot add token");
      }
      return Exec("cannot add token",
                  "INSERT INTO tokens (secret_hash, created_ms, expires_ms, revoked) "
                  "VALUES (?, ?, ?, ?)",
                  token.secret_hash, token.created_ms, token.expires_ms, token.revoked);
    });
  }

  Result<std::optional<TokenRecord>> FindToken(const std::string& secret_hash) override {
    std::lock_guard lock(mu_);
    auto s = Prepare(
        "SELECT secret_hash, created_ms, expires_ms, revoked FROM tokens WHERE secret_hash = ?");
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    st.Bind(secret_hash);
    int rc = st.Step();
    if (rc == SQLITE_DONE) return std::optional<TokenRecord>();
    if (rc != SQLITE_ROW) return Fail("cannot read token");
    return std::optional<TokenRecord>(TokenRecord{.secret_hash = st.Text(0),
                                                  .created_ms = st.Int(1),
                                                  .expires_ms = st.Int(2),
                                                  .revoked = st.Int(3) != 0});
  }

  Status RevokeAllTokens() override {
    std::lock_guard lock(mu_);
    return Write([&]() -> Status {
      return Exec("cannot revoke tokens", "UPDATE tokens SET revoked = 1 WHERE revoked = 0");
    });
  }

  Status SetConfig(const ConfigEntry& entry) override {
    const std::string name = entry.component + "." + entry.key;
    if (entry.component.empty() || entry.key.empty()) {
      return Err("config key " + name + " needs both a component and a key");
    }
    if (!nlohmann::json::accept(entry.value_json)) {
      return Err("config value for " + name + " is not valid JSON: " + entry.value_json);
    }
    std::lock_guard lock(mu_);
    return Write([&]() -> Status {
      return Exec("cannot write config " + name,
                  "INSERT INTO config (component, key, value_json) VALUES (?, ?, ?) "
                  "ON CONFLICT (component, key) DO UPDATE SET value_json = excluded.value_json",
                  entry.component, entry.key, entry.value_json);
    });
  }

  Result<std::optional<ConfigEntry>> GetConfig(const std::string& component,
                                               const std::string& key) override {
    std::lock_guard lock(mu_);
    auto s = Prepare("SELECT value_json FROM config WHERE component = ? AND key = ?");
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    st.Bind(component, key);
    int rc = st.Step();
    if (rc == SQLITE_DONE) return std::optional<ConfigEntry>();
    if (rc != SQLITE_ROW) return Fail("cannot read config " + component + "." + key);
    return std::optional<ConfigEntry>(
        ConfigEntry{.component = component, .key = key, .value_json = st.Text(0)});
  }

  Result<bool> DeleteConfig(const std::string& component, const std::string& key) override {
    std::lock_guard lock(mu_);
    bool deleted = false;
    KATO_TRY(Write([&]() -> Status {
      KATO_TRY(Exec("cannot delete config " + component + "." + key,
                    "DELETE FROM config WHERE component = ? AND key = ?", component, key));
      deleted = sqlite3_changes64(db_) > 0;
      return Ok();
    }));
    return deleted;
  }

  Result<std::vector<ConfigEntry>> ListConfig(const std::string& component) override {
    std::lock_guard lock(mu_);
    auto s = Prepare(
        "SELECT component, key, value_json FROM config WHERE ?1 = '' OR component = ?1 "
        "ORDER BY component, key");
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    st.Bind(component);
    std::vector<ConfigEntry> out;
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) {
      out.push_back({.component = st.Text(0), .key = st.Text(1), .value_json = st.Text(2)});
    }
    if (rc != SQLITE_DONE) return Fail("cannot list config");
    return out;
  }

  Status AppendHistory(const HistoryEntry& entry) override {
    std::lock_guard lock(mu_);
    return Write([&]() -> Status {
      return Exec("cannot append history",
                  "INSERT INTO history (time_ms, node, user, command) VALUES (?, ?, ?, ?)",
                  entry.time_ms, entry.node, entry.user, entry.command);
    });
  }

  Result<std::vector<HistoryEntry>> ListHistory(int limit) override {
    if (limit < 0) {
      return Err("history limit must not be negative (got " + std::to_string(limit) + ")");
    }
    std::lock_guard lock(mu_);
    auto s =
        Prepare("SELECT id, time_ms, node, user, command FROM history ORDER BY id DESC LIMIT ?");
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    st.Bind(limit);
    std::vector<HistoryEntry> out;
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) {
      out.push_back({.id = st.Int(0),
                     .time_ms = st.Int(1),
                     .node = st.Text(2),
                     .user = st.Text(3),
                     .command = st.Text(4)});
    }
    if (rc != SQLITE_DONE) return Fail("cannot read history");
    std::reverse(out.begin(), out.end());
    return out;
  }

 private:
  // "state store PATH: WHAT: <SQLite's message>"; WHAT "" while opening.
  Error Fail(const std::string& what) const {
    if (what.empty()) return OpenFail();
    return Err("state store " + path_ + ": " + what + ": " + sqlite3_errmsg(db_));
  }
  Error OpenFail() const {
    return Err("cannot open state store " + path_ + ": " + sqlite3_errmsg(db_));
  }

  // The cached statement for `sql` (a string literal), prepared on first use.
  Result<sqlite3_stmt*> Prepare(const char* sql) {
    auto it = stmts_.find(sql);
    if (it != stmts_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
      return Fail("cannot prepare query");
    }
    stmts_.emplace(sql, stmt);
    return stmt;
  }

  // Runs a statement that returns no rows.
  template <typename... Args>
  Status Exec(const std::string& what, const char* sql, const Args&... args) {
    auto s = Prepare(sql);
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    st.Bind(args...);
    int rc = st.Step();
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return Fail(what);
    return Ok();
  }

  // Runs `sql` (no parameters, possibly several statements): pragmas,
  // transaction control and the schema.
  Status ExecScript(const std::string& what, const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return Fail(what);
    return Ok();
  }

  void RollbackIfOpen() {
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }

  // One write transaction around `body`; bumps the revision when `body`
  // changed a row. On any failure nothing is kept. Caller holds mu_.
  Status Write(const std::function<Status()>& body) {
    KATO_TRY(ExecScript("cannot start a write transaction", "BEGIN IMMEDIATE"));
    int64_t before = sqlite3_total_changes64(db_);
    Status st = body();
    if (st.ok() && sqlite3_total_changes64(db_) != before) {
      st = Exec("cannot bump the revision",
                "UPDATE meta SET value = value + 1 WHERE key = 'revision'");
    }
    if (st.ok()) st = ExecScript("cannot commit", "COMMIT");
    if (!st.ok()) RollbackIfOpen();
    return st;
  }

  // A read transaction, so that multi-statement reads see one snapshot even
  // while another process writes. Caller holds mu_.
  Status ReadTx(const std::function<Status()>& body) {
    KATO_TRY(ExecScript("cannot start a read transaction", "BEGIN"));
    Status st = body();
    if (st.ok()) st = ExecScript("cannot end a read transaction", "COMMIT");
    if (!st.ok()) RollbackIfOpen();
    return st;
  }

  Result<int64_t> ReadRevision() {
    auto s = Prepare("SELECT value FROM meta WHERE key = 'revision'");
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    if (st.Step() != SQLITE_ROW) return Fail("cannot read the revision");
    return st.Int(0);
  }

  // The nodes that `sql` (one of the kNodesBy* queries) selects, with their
  // roles. Caller holds mu_ inside a transaction.
  Result<std::vector<NodeRecord>> ReadNodes(const char* sql, const std::optional<std::string>& arg,
                                            const std::string& what) {
    std::vector<NodeRecord> nodes;
    {
      auto s = Prepare(sql);
      if (!s.ok()) return std::move(s).take_error();
      Stmt st(*s);
      if (arg) st.Bind(*arg);
      int rc;
      while ((rc = st.Step()) == SQLITE_ROW) {
        nodes.push_back({.id = st.Text(0),
                         .ip = st.Text(1),
                         .hostname = st.Text(2),
                         .version = st.Text(3),
                         .joined_ms = st.Int(4)});
      }
      if (rc != SQLITE_DONE) return Fail(what);
    }
    auto s = Prepare("SELECT role FROM node_roles WHERE node_id = ? ORDER BY position");
    if (!s.ok()) return std::move(s).take_error();
    for (NodeRecord& n : nodes) {
      Stmt st(*s);
      st.Bind(n.id);
      int rc;
      while ((rc = st.Step()) == SQLITE_ROW) n.roles.push_back(st.Text(0));
      if (rc != SQLITE_DONE) return Fail(what);
    }
    return nodes;
  }

  Result<std::optional<NodeRecord>> ReadOneNode(const char* sql, const std::string& arg,
                                                const std::string& what) {
    std::optional<NodeRecord> node;
    KATO_TRY(ReadTx([&]() -> Status {
      auto r = ReadNodes(sql, arg, what);
      if (!r.ok()) return std::move(r).take_error();
      if (!r->empty()) node = std::move(r->front());
      return Ok();
    }));
    return node;
  }

  Result<int64_t> ReadSchemaVersion() {
    auto s = Prepare("SELECT value FROM meta WHERE key = 'schema_version'");
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    if (st.Step() != SQLITE_ROW) return Fail("cannot read the schema version");
    return st.Int(0);
  }

  // Brings a store at `from` (older than kSchemaVersion) up to date. Runs
  // inside Init's transaction: a crash midway leaves the old version intact.
  Status Migrate(int64_t from) {
    if (from < 1)
      return Err("cannot open state store " + path_ + ": unknown schema version " +
                 std::to_string(from));
    if (from < 2)
      KATO_TRY(ExecScript("cannot upgrade state store " + path_ + " to version 2", kSchemaV2));
    if (from < 3)
      KATO_TRY(ExecScript("cannot upgrade state store " + path_ + " to version 3", kSchemaV3));
    return Exec("cannot upgrade state store " + path_,
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", kSchemaVersion);
  }

  Status PutDoc(const std::string& kind, const std::string& key,
                const std::string& value_json) override {
    if (kind.empty() || key.empty()) return Err("a document needs a kind and a key");
    if (!nlohmann::json::accept(value_json))
      return Err("document " + kind + "/" + key + " is not valid JSON");
    std::lock_guard lock(mu_);
    return Write([&]() -> Status {
      return Exec("cannot write document " + kind + "/" + key,
                  "INSERT INTO docs (kind, key, value_json) VALUES (?, ?, ?) "
                  "ON CONFLICT (kind, key) DO UPDATE SET value_json = excluded.value_json",
                  kind, key, value_json);
    });
  }

  Result<std::optional<std::string>> GetDoc(const std::string& kind,
                                            const std::string& key) override {
    std::lock_guard lock(mu_);
    auto s = Prepare("SELECT value_json FROM docs WHERE kind = ? AND key = ?");
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    st.Bind(kind, key);
    int rc = st.Step();
    if (rc == SQLITE_DONE) return std::optional<std::string>();
    if (rc != SQLITE_ROW) return Fail("cannot read document " + kind + "/" + key);
    return std::optional<std::string>(st.Text(0));
  }

  Result<std::vector<std::pair<std::string, std::string>>> ListDocs(
      const std::string& kind) override {
    std::lock_guard lock(mu_);
    auto s = Prepare("SELECT key, value_json FROM docs WHERE kind = ? ORDER BY key");
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    st.Bind(kind);
    std::vector<std::pair<std::string, std::string>> out;
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) out.emplace_back(st.Text(0), st.Text(1));
    if (rc != SQLITE_DONE) return Fail("cannot list documents of kind " + kind);
    return out;
  }

  Result<bool> DeleteDoc(const std::string& kind, const std::string& key) override {
    std::lock_guard lock(mu_);
    bool deleted = false;
    KATO_TRY(Write([&]() -> Status {
      KATO_TRY(Exec("cannot delete document " + kind + "/" + key,
                    "DELETE FROM docs WHERE kind = ? AND key = ?", kind, key));
      deleted = sqlite3_changes64(db_) > 0;
      return Ok();
    }));
    return deleted;
  }

  Status WriteDocs(const std::vector<DocWrite>& writes) override {
    KATO_TRY(CheckDocWrites(writes));
    if (writes.empty()) return Ok();
    std::lock_guard lock(mu_);
    return Write([&]() -> Status {
      for (const DocWrite& w : writes) {
        if (w.value_json)
          KATO_TRY(Exec("cannot write document " + w.kind + "/" + w.key,
                        "INSERT INTO docs (kind, key, value_json) VALUES (?, ?, ?) "
                        "ON CONFLICT (kind, key) DO UPDATE SET value_json = excluded.value_json",
                        w.kind, w.key, *w.value_json));
        else
          KATO_TRY(Exec("cannot delete document " + w.kind + "/" + w.key,
                        "DELETE FROM docs WHERE kind = ? AND key = ?", w.kind, w.key));
      }
      return Ok();
    });
  }

  Result<bool> AcquireLease(const std::string& name, const std::string& holder, int64_t now_ms,
                            int64_t ttl_ms) override {
    if (name.empty() || holder.empty()) return Err("a lease needs a name and a holder");
    if (ttl_ms <= 0) return Err("a lease needs a positive duration");
    std::lock_guard lock(mu_);
    bool held = false;
    KATO_TRY(ExecScript("cannot start a write transaction", "BEGIN IMMEDIATE"));
    Status st = [&]() -> Status {
      auto s = Prepare("SELECT holder, expires_ms FROM leases WHERE name = ?");
      if (!s.ok()) return std::move(s).take_error();
      std::string current;
      int64_t expires = 0;
      {
        Stmt q(*s);
        q.Bind(name);
        int rc = q.Step();
        if (rc == SQLITE_ROW) current = q.Text(0), expires = q.Int(1);
        else if (rc != SQLITE_DONE) return Fail("cannot read lease " + name);
      }
      if (!current.empty() && current != holder && expires > now_ms) return Ok();
      held = true;
      KATO_TRY(Exec("cannot write lease " + name,
                    "INSERT INTO leases (name, holder, expires_ms) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                    "expires_ms = excluded.expires_ms",
                    name, holder, now_ms + ttl_ms));
      if (current == holder) return Ok();
      return Exec("cannot bump the revision",
                  "UPDATE meta SET value = value + 1 WHERE key = 'revision'");
    }();
    if (st.ok()) st = ExecScript("cannot commit", "COMMIT");
    if (!st.ok()) {
      RollbackIfOpen();
      return std::move(st).take_error();
    }
    return held;
  }

  Status ReleaseLease(const std::string& name, const std::string& holder) override {
    std::lock_guard lock(mu_);
    return Write([&]() -> Status {
      return Exec("cannot release lease " + name,
                  "DELETE FROM leases WHERE name = ? AND holder = ?", name, holder);
    });
  }

  Result<StoreSnapshot> Dump() override {
    std::lock_guard lock(mu_);
    StoreSnapshot snap;
    KATO_TRY(ReadTx([&]() -> Status {
      auto rev = ReadRevision();
      if (!rev.ok()) return std::move(rev).take_error();
      snap.revision = *rev;
      auto rows = [&](const char* sql, const std::function<void(Stmt&)>& row) -> Status {
        auto s = Prepare(sql);
        if (!s.ok()) return std::move(s).take_error();
        Stmt st(*s);
        int rc;
        while ((rc = st.Step()) == SQLITE_ROW) row(st);
        if (rc != SQLITE_DONE) return Fail("cannot read the whole state");
        return Ok();
      };
      KATO_TRY(rows("SELECT key, value FROM settings ORDER BY key",
                    [&](Stmt& st) { snap.settings.emplace_back(st.Text(0), st.Text(1)); }));
      auto nodes = ReadNodes(kNodesByJoin, std::nullopt, "cannot read the whole state");
      if (!nodes.ok()) return std::move(nodes).take_error();
      snap.nodes = std::move(*nodes);
      KATO_TRY(rows("SELECT id FROM removed_nodes ORDER BY id",
                    [&](Stmt& st) { snap.removed_nodes.push_back(st.Text(0)); }));
      KATO_TRY(rows(
          "SELECT secret_hash, created_ms, expires_ms, revoked FROM tokens ORDER BY secret_hash",
          [&](Stmt& st) {
            snap.tokens.push_back({st.Text(0), st.Int(1), st.Int(2), st.Int(3) != 0});
          }));
      KATO_TRY(rows("SELECT component, key, value_json FROM config ORDER BY component, key",
                    [&](Stmt& st) {
                      snap.config.push_back({st.Text(0), st.Text(1), st.Text(2)});
                    }));
      KATO_TRY(rows("SELECT kind, key, value_json FROM docs ORDER BY kind, key", [&](Stmt& st) {
        snap.docs.push_back({st.Text(0), st.Text(1), st.Text(2)});
      }));
      KATO_TRY(rows("SELECT name, holder, expires_ms FROM leases ORDER BY name", [&](Stmt& st) {
        snap.leases.push_back({st.Text(0), st.Text(1), st.Int(2)});
      }));
      return rows(
          "SELECT id, time_ms, node, user, command FROM history ORDER BY id", [&](Stmt& st) {
            snap.history.push_back({st.Int(0), st.Int(1), st.Text(2), st.Text(3), st.Text(4)});
          });
    }));
    return snap;
  }

  Status Load(const StoreSnapshot& snap) override {
    std::lock_guard lock(mu_);
    KATO_TRY(ExecScript("cannot start a write transaction", "BEGIN IMMEDIATE"));
    Status st = [&]() -> Status {
      const std::string what = "cannot load the state";
      auto rev = ReadRevision();
      if (!rev.ok()) return std::move(rev).take_error();
      auto count = Prepare(
          "SELECT (SELECT count(*) FROM settings) + (SELECT count(*) FROM nodes) + "
          "(SELECT count(*) FROM removed_nodes) + (SELECT count(*) FROM tokens) + "
          "(SELECT count(*) FROM config) + (SELECT count(*) FROM docs) + "
          "(SELECT count(*) FROM leases) + (SELECT count(*) FROM history)");
      if (!count.ok()) return std::move(count).take_error();
      {
        Stmt q(*count);
        if (q.Step() != SQLITE_ROW) return Fail(what);
        if (*rev != 0 || q.Int(0) != 0)
          return Err("state store " + path_ + " is not empty (revision " + std::to_string(*rev) +
                     "); it already holds a cluster's state");
      }
      for (const auto& [k, v] : snap.settings)
        KATO_TRY(Exec(what, "INSERT INTO settings (key, value) VALUES (?, ?)", k, v));
      for (const NodeRecord& n : snap.nodes) {
        KATO_TRY(Exec(what,
                      "INSERT INTO nodes (id, ip, hostname, version, joined_ms) "
                      "VALUES (?, ?, ?, ?, ?)",
                      n.id, n.ip, n.hostname, n.version, n.joined_ms));
        for (size_t i = 0; i < n.roles.size(); ++i)
          KATO_TRY(Exec(what, "INSERT INTO node_roles (node_id, position, role) VALUES (?, ?, ?)",
                        n.id, static_cast<int64_t>(i), n.roles[i]));
      }
      for (const std::string& id : snap.removed_nodes)
        KATO_TRY(Exec(what, "INSERT INTO removed_nodes (id) VALUES (?)", id));
      for (const TokenRecord& t : snap.tokens)
        KATO_TRY(Exec(what,
                      "INSERT INTO tokens (secret_hash, created_ms, expires_ms, revoked) "
                      "VALUES (?, ?, ?, ?)",
                      t.secret_hash, t.created_ms, t.expires_ms, t.revoked));
      for (const ConfigEntry& c : snap.config)
        KATO_TRY(Exec(what, "INSERT INTO config (component, key, value_json) VALUES (?, ?, ?)",
                      c.component, c.key, c.value_json));
      for (const auto& d : snap.docs)
        KATO_TRY(Exec(what, "INSERT INTO docs (kind, key, value_json) VALUES (?, ?, ?)", d.kind,
                      d.key, d.value_json));
      for (const LeaseRecord& l : snap.leases)
        KATO_TRY(Exec(what, "INSERT INTO leases (name, holder, expires_ms) VALUES (?, ?, ?)",
                      l.name, l.holder, l.expires_ms));
      for (const HistoryEntry& h : snap.history)
        KATO_TRY(Exec(
            what, "INSERT INTO history (id, time_ms, node, user, command) VALUES (?, ?, ?, ?, ?)",
            h.id, h.time_ms, h.node, h.user, h.command));
      return Exec(what, "UPDATE meta SET value = ? WHERE key = 'revision'", snap.revision);
    }();
    if (st.ok()) st = ExecScript("cannot commit", "COMMIT");
    if (!st.ok()) RollbackIfOpen();
    return st;
  }

  Result<std::optional<LeaseRecord>> GetLease(const std::string& name) override {
    std::lock_guard lock(mu_);
    auto s = Prepare("SELECT holder, expires_ms FROM leases WHERE name = ?");
    if (!s.ok()) return std::move(s).take_error();
    Stmt st(*s);
    st.Bind(name);
    int rc = st.Step();
    if (rc == SQLITE_DONE) return std::optional<LeaseRecord>();
    if (rc != SQLITE_ROW) return Fail("cannot read lease " + name);
    return std::optional<LeaseRecord>(LeaseRecord{name, st.Text(0), st.Int(1)});
  }

  const std::string path_;
  std::mutex mu_;                               // serializes every call; guards everything below
  sqlite3* const db_;                           // one connection, used only under mu_
  std::map<std::string, sqlite3_stmt*> stmts_;  // by SQL text
};

Status SqliteStore::Init() {
  sqlite3_extended_result_codes(db_, 1);
  if (sqlite3_busy_timeout(db_, kBusyTimeoutMs) != SQLITE_OK) return OpenFail();
  // journal_mode answers with the mode it got, which is not WAL when the file
  // system cannot do it; WAL is what the durability and concurrency rely on.
  {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, "PRAGMA journal_mode = WAL", -1, &stmt, nullptr) != SQLITE_OK) {
      return OpenFail();
    }
    int rc = sqlite3_step(stmt);
    std::string mode = rc == SQLITE_ROW && sqlite3_column_text(stmt, 0)
                           ? reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))
                           : "";
    if (rc != SQLITE_ROW) {
      Error e = OpenFail();
      sqlite3_finalize(stmt);
      return e;
    }
    sqlite3_finalize(stmt);
    if (mode != "wal") {
      return Err("cannot open state store " + path_ +
                 ": WAL mode is not available (journal mode is " + mode +
                 "); put the data dir on a local file system");
    }
  }
  KATO_TRY(ExecScript("", "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON"));

  KATO_TRY(ExecScript("", "BEGIN IMMEDIATE"));
  Status st = [&]() -> Status {
    auto s = Prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'");
    if (!s.ok()) return std::move(s).take_error();
    bool has_meta;
    {
      Stmt q(*s);
      if (q.Step() != SQLITE_ROW) return OpenFail();
      has_meta = q.Int(0) > 0;
    }
    if (!has_meta) {
      KATO_TRY(ExecScript("", "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"));
      KATO_TRY(ExecScript("", kSchemaV1));
      KATO_TRY(ExecScript("", kSchemaV2));
      KATO_TRY(ExecScript("", kSchemaV3));
      return Exec("", "INSERT INTO meta (key, value) VALUES ('schema_version', ?), ('revision', 0)",
                  kSchemaVersion);
    }
    auto version = ReadSchemaVersion();
    if (!version.ok()) return std::move(version).take_error();
    if (*version > kSchemaVersion) {
      return Err("cannot open state store " + path_ + ": its schema version is " +
                 std::to_string(*version) + ", newer than this kato supports (" +
                 std::to_string(kSchemaVersion) + "); upgrade kato");
    }
    if (*version < kSchemaVersion) return Migrate(*version);
    return Ok();
  }();
  if (st.ok()) st = ExecScript("", "COMMIT");
  if (!st.ok()) RollbackIfOpen();
  return st;
}

}  // namespace

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path) {
  const std::string prefix = "cannot open state store " + path + ": ";
  // Create the file ourselves so it is 0600 from its first byte (it holds token
  // hashes); SQLite gives its -wal and -shm files the same mode. An existing
  // file is tightened too.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Err(prefix + std::strerror(errno));
  struct stat sb;
  if (::fstat(fd, &sb) != 0 || ((sb.st_mode & 0777) != 0600 && ::fchmod(fd, 0600) != 0)) {
    std::string e = std::strerror(errno);
    ::close(fd);
    return Err(prefix + "cannot make it private (mode 0600): " + e);
  }
  ::close(fd);

  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string e = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return Err(prefix + e);
  }
  auto store = std::make_unique<SqliteStore>(path, db);
  if (Status st = store->Init(); !st.ok()) return std::move(st).take_error();
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace kato
