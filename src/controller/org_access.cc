#include "controller/org_access.h"

#include <nlohmann/json.hpp>

#include "common/json_reply.h"

namespace kato {

namespace {

std::string Mb(int64_t mb) {
  return mb % 1024 == 0 && mb >= 1024 ? std::to_string(mb / 1024) + "G" : std::to_string(mb) + "M";
}

}  // namespace

Result<std::string> OrgAccess::ForNew(const std::string& requested, HttpResponse* refusal) const {
  auto refuse = [&](int status, const std::string& message) -> Result<std::string> {
    *refusal = ErrorReply(status, message);
    return Err(message);
  };
  if (requested.empty()) {
    if (caller_.admin()) return std::string();
    if (caller_.orgs.size() == 1) return caller_.orgs[0];
    if (caller_.orgs.empty())
      return refuse(403,
                    "you belong to no organization yet: ask an admin to add you to one "
                    "(`kato org add-user ORG EMAIL`)");
    std::string list;
    for (const auto& o : caller_.orgs) list += (list.empty() ? "" : ", ") + o;
    return refuse(400, "you belong to several organizations (" + list + "): choose one with --org");
  }
  if (auto s = CheckOrgName(requested); !s) return refuse(400, s.error());
  if (!caller_.InOrg(requested))
    return refuse(403, "you are not a member of the organization '" + requested + "'");
  auto org = LoadOrg(store_, requested);
  if (!org) return refuse(500, org.error());
  if (!*org) return refuse(404, "no organization named '" + requested + "' (see `kato org list`)");
  return requested;
}

Status OrgAccess::CheckAppQuota(const AppRecord& proposed) const {
  if (proposed.org.empty()) return Ok();
  auto org = LoadOrg(store_, proposed.org);
  if (!org) return Err(org.error());
  if (!*org) return Ok();  // its organization is gone: nothing to hold it to
  const Quota& q = (*org)->quota;
  if (!q.memory_mb && !q.instances) return Ok();
  auto docs = store_.ListDocs("app");
  if (!docs) return Err(docs.error());
  int64_t memory = 0, instances = 0;
  auto add = [&](const AppRecord& a) {
    if (a.state != "STARTED") return;
    memory += static_cast<int64_t>(a.instances) * a.memory_mb;
    instances += a.instances;
  };
  for (const auto& [name, value] : *docs) {
    if (name == proposed.name) continue;
    if (auto a = AppFromJson(value); a && a->org == proposed.org) add(*a);
  }
  int64_t before_memory = memory, before_instances = instances;
  add(proposed);
  const std::string who = "organization '" + proposed.org + "'";
  if (q.instances && instances > q.instances)
    return Err(who + " may run " + std::to_string(q.instances) + " instances; its other apps run " +
               std::to_string(before_instances) + " and this would add " +
               std::to_string(instances - before_instances) +
               ": scale something down, or ask an admin to raise the quota (`kato org quota`)");
  if (q.memory_mb && memory > q.memory_mb)
    return Err(who + " may use " + Mb(q.memory_mb) + " of memory; its other apps use " +
               Mb(before_memory) + " and this would add " + Mb(memory - before_memory) +
               ": scale something down, or ask an admin to raise the quota (`kato org quota`)");
  return Ok();
}

Status OrgAccess::CheckServiceQuota(const std::string& name) const {
  if (name.empty()) return Ok();
  auto org = LoadOrg(store_, name);
  if (!org) return Err(org.error());
  if (!*org || !(*org)->quota.services) return Ok();
  auto docs = store_.ListDocs("service");
  if (!docs) return Err(docs.error());
  int64_t count = 0;
  for (const auto& [key, value] : *docs)
    count += nlohmann::json::parse(value, nullptr, false).value("org", "") == name;
  if (count < (*org)->quota.services) return Ok();
  return Err("organization '" + name + "' may have " + std::to_string((*org)->quota.services) +
             " services and has " + std::to_string(count) +
             ": delete one, or ask an admin to raise the quota (`kato org quota`)");
}

HttpResponse OrgAccess::NotFound(const std::string& what, const std::string& name) {
  return ErrorReply(404, "no " + what + " named '" + name + "' (see `kato " + what + " list`)");
}

}  // namespace kato
