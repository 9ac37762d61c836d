#include "agent/identity.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/pki.h"

namespace kato {

using json = nlohmann::json;

std::string NewNodeId() { return RandomHex(16); }

namespace {
std::string SystemHostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}
}  // namespace

Status SaveIdentity(const DataLayout& layout, const NodeIdentity& id) {
  json j{{"id", id.id}, {"ip", id.ip}, {"hostname", id.hostname}};
  return WriteFileAtomic(layout.node_file(), j.dump(2) + "\n", 0644);
}

Result<NodeIdentity> LoadOrCreateIdentity(const DataLayout& layout, const std::string& ip,
                                          const std::string& hostname) {
  NodeIdentity id;
  bool dirty = false;
  if (PathExists(layout.node_file())) {
    auto text = ReadFile(layout.node_file());
    if (!text) return Err(text.error());
    json j = json::parse(*text, nullptr, false);
    const std::string damaged = layout.node_file() +
                                " is damaged; restore it from a backup, or remove it to give "
                                "this node a new identity";
    if (j.is_discarded() || !j.is_object() || !j.contains("id") || !j["id"].is_string())
      return Err(damaged);
    // json::value throws on a field of another type: a damaged file, not a crash.
    try {
      id.id = j["id"].get<std::string>();
      id.ip = j.value("ip", "");
      id.hostname = j.value("hostname", "");
    } catch (const json::exception&) {
      return Err(damaged);
    }
  } else {
    id.id = NewNodeId();
    dirty = true;
  }
  if (!ip.empty() && ip != id.ip) {
    id.ip = ip;
    dirty = true;
  }
  if (!hostname.empty() && hostname != id.hostname) {
    id.hostname = hostname;
    dirty = true;
  }
  if (id.hostname.empty()) {
    id.hostname = SystemHostname();
    dirty = true;
  }
  if (dirty) KATO_TRY(SaveIdentity(layout, id));
  return id;
}

Result<Membership> LoadMembership(const DataLayout& layout) {
  Membership m;
  if (!PathExists(layout.cluster_file())) return m;
  auto text = ReadFile(layout.cluster_file());
  if (!text) return Err(text.error());
  json j = json::parse(*text, nullptr, false);
  const std::string damaged = layout.cluster_file() + " is damaged; run `kato node attach` again";
  if (j.is_discarded() || !j.is_object()) return Err(damaged);
  // json::value throws on a field of another type: a damaged file, not a crash.
  try {
    m.attached = j.value("attached", false);
    m.core_ip = j.value("core_ip", "");
    m.endpoint = j.value("endpoint", "");
    m.cluster_version = j.value("cluster_version", "");
    m.revision = j.value("revision", static_cast<int64_t>(0));
  } catch (const json::exception&) {
    return Err(damaged);
  }
  if (j.contains("roles") && j["roles"].is_array())
    for (const auto& r : j["roles"])
      if (r.is_string()) m.roles.push_back(r.get<std::string>());
  return m;
}

Status SaveMembership(const DataLayout& layout, const Membership& m) {
  json j{{"attached", m.attached},         {"core_ip", m.core_ip},   {"endpoint", m.endpoint},
         {"cluster_version", m.cluster_version}, {"roles", m.roles}, {"revision", m.revision}};
  return WriteFileAtomic(layout.cluster_file(), j.dump(2) + "\n", 0644);
}

}  // namespace kato
