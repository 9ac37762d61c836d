#include "agent/cluster_client.h"

#include <nlohmann/json.hpp>

#include "agent/identity.h"
#include "common/fs.h"
#include "common/http.h"
#include "roles/roles.h"

namespace kato {

using json = nlohmann::json;

ClusterClient::ClusterClient(std::string data_dir) : data_dir_(std::move(data_dir)) {}

Result<ClusterClient::Identity> ClusterClient::Load() {
  DataLayout layout{data_dir_};
  auto ident = LoadOrCreateIdentity(layout, "", "");
  if (!ident) return Err(ident.error());
  auto member = LoadMembership(layout);
  if (!member) return Err(member.error());
  if (!member->attached) return Err("this node is not in a cluster");
  Identity out{ident->id, ident->ip, "", "", "", member->core_ip};
  for (auto [path, field] : {std::pair{layout.ca_cert(), &out.ca_pem},
                             std::pair{layout.node_cert(), &out.cert_pem},
                             std::pair{layout.node_key(), &out.key_pem}}) {
    auto text = ReadFile(path);
    if (!text) return Err(text.error());
    *field = *text;
  }
  return out;
}

Result<std::string> ClusterClient::Call(const std::string& method, const std::string& path,
                                        const std::string& body, Millis timeout) {
  // Read each time: the agent rewrites these on attach, detach and migrate.
  auto id = Load();
  if (!id) return Err(id.error());
  auto r = HttpsCall(ClientTls{id->ca_pem, id->cert_pem, id->key_pem, ""}, id->core_ip,
                     kPrimaryPort, method, path, body, timeout);
  if (!r) return Err("cannot reach the core: " + r.error());
  if (r->status >= 300) {
    json j = json::parse(r->body, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_string())
      return Err(j["error"].get<std::string>());
    return Err("the core answered HTTP " + std::to_string(r->status));
  }
  return r->body;
}

Result<int64_t> ClusterClient::Watch(int64_t after, Millis timeout) {
  auto w = WatchRevisions(after, timeout);
  if (!w) return Err(w.error());
  return w->first;
}

Result<std::pair<int64_t, int64_t>> ClusterClient::WatchRevisions(int64_t after, Millis timeout) {
  auto body = Call("GET",
                   "/v1/watch?after=" + std::to_string(after) +
                       "&timeout_ms=" + std::to_string(timeout.count()),
                   "", timeout + Millis(5000));
  if (!body) return Err(body.error());
  json j = json::parse(*body, nullptr, false);
  if (!j.is_object() || !j.contains("revision") || !j["revision"].is_number())
    return Err("the core sent a watch reply without a revision");
  int64_t members = j.contains("members_revision") && j["members_revision"].is_number_integer()
                        ? j["members_revision"].get<int64_t>()
                        : j["revision"].get<int64_t>();
  return std::pair{j["revision"].get<int64_t>(), members};
}

// ---- RemoteStore ---------------------------------------------------------------

namespace {

Status NotHere(const char* what) {
  return Err(std::string(what) + " is not available to role processes (only the agent's "
                                 "commands change it)");
}

Result<json> ParsedCall(ClusterClient& c, const std::string& method, const std::string& path,
                        const std::string& body = "") {
  auto r = c.Call(method, path, body);
  if (!r) return Err(r.error());
  json j = json::parse(*r, nullptr, false);
  if (j.is_discarded()) return Err("the core sent a reply that is not JSON");
  return j;
}

}  // namespace

NodeRecord NodeFromJson(const json& n) {
  NodeRecord r;
  r.id = n.value("id", "");
  r.ip = n.value("ip", "");
  r.hostname = n.value("hostname", "");
  r.version = n.value("version", "");
  r.joined_ms = n.value("joined_ms", static_cast<int64_t>(0));
  if (n.contains("roles") && n["roles"].is_array())
    for (const auto& x : n["roles"])
      if (x.is_string()) r.roles.push_back(x.get<std::string>());
  return r;
}

Result<int64_t> RemoteStore::Revision() {
  auto j = ParsedCall(client_, "GET", "/v1/watch?after=-1&timeout_ms=0");
  if (!j) return Err(j.error());
  return j->value("revision", static_cast<int64_t>(0));
}

Result<std::optional<std::string>> RemoteStore::GetSetting(const std::string& key) {
  auto j = ParsedCall(client_, "GET", "/v1/cluster?nodes=0");
  if (!j) return Err(j.error());
  if (key != "core_ip" && key != "endpoint" && key != "version" && key != "admin_token_hash")
    return Err("setting " + key + " is not available to role processes");
  std::string v = j->value(key, "");
  return v.empty() ? std::optional<std::string>() : std::optional<std::string>(v);
}

Status RemoteStore::SetSetting(const std::string&, const std::string&) {
  return NotHere("changing cluster settings");
}
Status RemoteStore::PutNode(const NodeRecord&) { return NotHere("changing nodes"); }

Result<std::vector<NodeRecord>> RemoteStore::ListNodes() {
  auto j = ParsedCall(client_, "GET", "/v1/cluster?processes=0");
  if (!j) return Err(j.error());
  std::vector<NodeRecord> out;
  if (j->contains("nodes") && (*j)["nodes"].is_array())
    for (const auto& n : (*j)["nodes"]) out.push_back(NodeFromJson(n));
  return out;
}

Result<std::optional<NodeRecord>> RemoteStore::GetNode(const std::string& id) {
  auto nodes = ListNodes();
  if (!nodes) return Err(nodes.error());
  for (const auto& n : *nodes)
    if (n.id == id) return std::optional<NodeRecord>(n);
  return std::optional<NodeRecord>();
}

Result<std::optional<NodeRecord>> RemoteStore::FindNodeByIp(const std::string& ip) {
  auto nodes = ListNodes();
  if (!nodes) return Err(nodes.error());
  for (const auto& n : *nodes)
    if (n.ip == ip) return std::optional<NodeRecord>(n);
  return std::optional<NodeRecord>();
}

Status RemoteStore::RemoveNode(const std::string&) { return NotHere("removing nodes"); }
Result<bool> RemoteStore::IsRemoved(const std::string&) { return NotHere("node removal records").take_error(); }
Status RemoteStore::ClearRemoved(const std::string&) { return NotHere("node removal records"); }
Status RemoteStore::AddToken(const TokenRecord&) { return NotHere("join tokens"); }
Result<std::optional<TokenRecord>> RemoteStore::FindToken(const std::string&) {
  return NotHere("join tokens").take_error();
}
Status RemoteStore::RevokeAllTokens() { return NotHere("join tokens"); }

Status RemoteStore::SetConfig(const ConfigEntry& e) {
  json body{{"component", e.component}, {"key", e.key},
            {"value", json::parse(e.value_json, nullptr, false)}};
  auto r = client_.Call("POST", "/v1/config/set", body.dump());
  return r ? Ok() : Status(Err(r.error()));
}

Result<std::optional<ConfigEntry>> RemoteStore::GetConfig(const std::string& component,
                                                          const std::string& key) {
  auto j = ParsedCall(client_, "POST", "/v1/config/list", json{{"component", component}}.dump());
  if (!j) return Err(j.error());
  for (const auto& e : *j)
    if (e.value("key", "") == key)
      return std::optional<ConfigEntry>(ConfigEntry{component, key, e["value"].dump()});
  return std::optional<ConfigEntry>();
}

Result<bool> RemoteStore::DeleteConfig(const std::string&, const std::string&) {
  return NotHere("deleting config").take_error();
}

Result<std::vector<ConfigEntry>> RemoteStore::ListConfig(const std::string& component) {
  auto j = ParsedCall(client_, "POST", "/v1/config/list", json{{"component", component}}.dump());
  if (!j) return Err(j.error());
  std::vector<ConfigEntry> out;
  for (const auto& e : *j)
    out.push_back({e.value("component", ""), e.value("key", ""), e["value"].dump()});
  return out;
}

Status RemoteStore::PutDoc(const std::string& kind, const std::string& key,
                           const std::string& value_json) {
  json value = json::parse(value_json, nullptr, false);
  if (value.is_discarded()) return Err("document " + kind + "/" + key + " is not valid JSON");
  auto r = client_.Call("PUT", "/v1/docs/" + kind + "/" + key, json{{"value", value}}.dump());
  return r ? Ok() : Status(Err(r.error()));
}

Result<std::optional<std::string>> RemoteStore::GetDoc(const std::string& kind,
                                                       const std::string& key) {
  auto r = client_.Call("GET", "/v1/docs/" + kind + "/" + key);
  if (!r) {
    if (r.error().rfind("no " + kind + " '", 0) == 0) return std::optional<std::string>();
    return Err(r.error());
  }
  json j = json::parse(*r, nullptr, false);
  if (!j.is_object() || !j.contains("value")) return Err("the core sent a malformed document");
  return std::optional<std::string>(j["value"].dump());
}

Result<std::vector<std::pair<std::string, std::string>>> RemoteStore::ListDocs(
    const std::string& kind) {
  auto j = ParsedCall(client_, "GET", "/v1/docs/" + kind);
  if (!j) return Err(j.error());
  std::vector<std::pair<std::string, std::string>> out;
  if (j->is_array())
    for (const auto& d : *j) out.emplace_back(d.value("key", ""), d["value"].dump());
  return out;
}

Result<bool> RemoteStore::DeleteDoc(const std::string& kind, const std::string& key) {
  auto r = client_.Call("DELETE", "/v1/docs/" + kind + "/" + key);
  if (!r) {
    if (r.error().rfind("no " + kind + " '", 0) == 0) return false;
    return Err(r.error());
  }
  return true;
}

Status RemoteStore::WriteDocs(const std::vector<DocWrite>& writes) {
  KATO_TRY(CheckDocWrites(writes));
  if (writes.empty()) return Ok();
  json list = json::array();
  for (const DocWrite& w : writes) {
    json one{{"kind", w.kind}, {"key", w.key}};
    if (w.value_json) one["value"] = json::parse(*w.value_json);
    else one["delete"] = true;
    list.push_back(std::move(one));
  }
  auto r = client_.Call("POST", "/v1/docs", json{{"writes", list}}.dump());
  return r ? Ok() : Status(Err(r.error()));
}

Result<bool> RemoteStore::AcquireLease(const std::string& name, const std::string& holder,
                                       int64_t, int64_t ttl_ms) {
  auto j = ParsedCall(client_, "POST", "/v1/lease/" + name,
                      json{{"holder", holder}, {"ttl_ms", ttl_ms}}.dump());
  if (!j) return Err(j.error());
  return j->value("held", false);
}

Status RemoteStore::ReleaseLease(const std::string& name, const std::string& holder) {
  auto r = client_.Call("DELETE", "/v1/lease/" + name, json{{"holder", holder}}.dump());
  return r ? Ok() : Status(Err(r.error()));
}

Result<std::optional<LeaseRecord>> RemoteStore::GetLease(const std::string& name) {
  auto j = ParsedCall(client_, "GET", "/v1/lease/" + name);
  if (!j) return Err(j.error());
  if (!j->contains("holder")) return std::optional<LeaseRecord>();
  return std::optional<LeaseRecord>(
      LeaseRecord{name, j->value("holder", ""), j->value("expires_ms", static_cast<int64_t>(0))});
}

Status RemoteStore::AppendHistory(const HistoryEntry& e) {
  json body{{"audit", {{"node", e.node}, {"user", e.user}, {"command", e.command}}}};
  auto r = client_.Call("POST", "/v1/history", body.dump());
  return r ? Ok() : Status(Err(r.error()));
}

Result<std::vector<HistoryEntry>> RemoteStore::ListHistory(int limit) {
  auto j = ParsedCall(client_, "GET", "/v1/history?limit=" + std::to_string(limit));
  if (!j) return Err(j.error());
  std::vector<HistoryEntry> out;
  for (const auto& e : *j)
    out.push_back({e.value("id", static_cast<int64_t>(0)), e.value("time_ms", static_cast<int64_t>(0)),
                   e.value("node", ""), e.value("user", ""), e.value("command", "")});
  return out;
}

Result<StoreSnapshot> RemoteStore::Dump() {
  return Err(
      "copying the whole cluster state is not supported remotely (run `kato op "
      "migrate_store` on the core)");
}
Status RemoteStore::Load(const StoreSnapshot&) {
  return Err(
      "loading a whole cluster state is not supported remotely (run `kato op "
      "migrate_store` on the core)");
}

}  // namespace kato
