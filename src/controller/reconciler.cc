#include "controller/reconciler.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "common/log.h"
#include "common/pki.h"
#include "controller/app_api.h"

namespace kato {

using json = nlohmann::json;

namespace {

constexpr int kDefaultDeaMemoryMb = 4096;

// An assignment as stored, with its place parsed from the key.
struct Assignment {
  std::string key, app, instance_id, node_id;
  int index = -1;
  int64_t version = 0;
  int64_t assigned_ms = 0;  // 0 in the first builds' assignments
};

std::vector<Assignment> ParseAssignments(
    const std::vector<std::pair<std::string, std::string>>& docs) {
  std::vector<Assignment> out;
  for (const auto& [key, value] : docs) {
    json a = json::parse(value, nullptr, false);
    Assignment x;
    x.key = key;
    if (a.is_object()) {
      x.app = a.value("app", "");
      x.index = a.value("index", -1);
      x.instance_id = a.value("instance_id", "");
      x.node_id = a.value("node_id", "");
      x.version = a.value("version", static_cast<int64_t>(0));
      x.assigned_ms = a.value("assigned_ms", static_cast<int64_t>(0));
    }
    if (x.app.empty()) x.app = key.substr(0, key.find('/'));  // unreadable: removed below
    out.push_back(std::move(x));
  }
  return out;
}

}  // namespace

void Reconciler::Observe(const std::vector<NodeRecord>& nodes,
                         const std::vector<std::pair<std::string, std::string>>& reports) {
  std::map<std::string, json> report_by_node;
  for (const auto& [node, value] : reports) report_by_node[node] = json::parse(value, nullptr, false);
  for (const auto& n : nodes) {
    if (std::find(n.roles.begin(), n.roles.end(), "dea") == n.roles.end()) continue;
    json r = report_by_node.count(n.id) ? report_by_node[n.id] : json();
    auto it = last_report_.find(n.id);
    int64_t reported = it == last_report_.end() ? 0 : it->second;
    if (reported == 0 || reported == seen_[n.id]) continue;
    seen_[n.id] = reported;
    DeaInfo dea{n.id, n.ip,
                r.is_object() ? r.value("memory_mb", kDefaultDeaMemoryMb) : kDefaultDeaMemoryMb,
                true};
    std::vector<InstanceReport> insts;
    if (r.is_object() && r.contains("instances") && r["instances"].is_array())
      for (const auto& i : r["instances"])
        if (i.is_object())
          insts.push_back({i.value("instance_id", ""), i.value("app", ""),
                           i.value("version", static_cast<int64_t>(0)), i.value("index", 0), n.id,
                           i.value("state", ""), i.value("port", 0),
                           i.value("since_ms", static_cast<int64_t>(0)), 0,
                           i.value("memory_mb", 0)});
    hm_.ObserveDea(dea, insts);
  }
}

void Reconciler::Round(bool leader) {
  auto apps = store_.ListDocs("app");
  auto reports = store_.ListDocs("instances");
  using Docs = std::vector<std::pair<std::string, std::string>>;
  auto docs = leader ? store_.ListDocs("assignment") : Result<Docs>(Docs{});
  // Never decide on a partial picture: a missing app would read as "delete it".
  if (!apps || !reports || !docs) return;
  std::vector<AppSpec> specs;
  std::map<std::string, std::string> droplets;  // app -> its droplet's SHA-256
  for (const auto& [name, value] : *apps) {
    auto a = AppFromJson(value);
    if (!a || a->droplet_sha256.empty()) continue;  // nothing to run before bits are pushed
    specs.push_back({a->name, a->instances, a->memory_mb, a->state, a->version});
    droplets[a->name] = a->droplet_sha256;
  }
  Observe(deas_, *reports);
  if (!leader) {
    HealthManager shadow = hm_;
    (void)shadow.Evaluate(specs);
    for (const auto& spec : specs) shadow_health_[spec.name] = shadow.AppHealth(spec.name);
    return;
  }
  shadow_health_.clear();

  auto actions = hm_.Evaluate(specs);
  const std::string& paused = hm_.FailoverPaused();
  if (paused != paused_) {
    if (!paused.empty()) LogWarn("controller: {}", paused);
    else LogInfo("controller: most DEAs are heard again: failover resumes");
    paused_ = paused;
  }
  std::vector<Assignment> assigned = ParseAssignments(*docs);
  // The round's writes go to the store together (WriteBatches): one round
  // trip per kWritesPerBatch, however many instances a scale-up places.
  std::vector<DocWrite> writes;
  std::set<std::string> deleted;
  auto remove = [&](const Assignment& a, const std::string& why) {
    if (!deleted.insert(a.key).second) return;
    LogInfo("controller: unassign {}/{} {} ({})", a.app, a.index, a.instance_id, why);
    writes.push_back({"assignment", a.key, std::nullopt});
  };
  std::map<std::string, int> started;  // app -> instances assigned this round
  for (const auto& action : actions) {
    if (action.kind == Action::kStart) {
      std::string id = RandomHex(8);
      std::string key = action.app + "/" + std::to_string(action.index) + "/" + id;
      // The droplet goes with the version it was read with: a DEA runs exactly these bits.
      json a{{"app", action.app},
             {"index", action.index},
             {"version", action.app_version},
             {"droplet_sha256", droplets[action.app]},
             {"node_id", action.dea_node_id},
             {"instance_id", id},
             {"assigned_ms", clock_.wall_ms()}};
      if (++started[action.app] <= kLoggedStarts)
        LogInfo("controller: start {} on {} ({})", key, action.dea_node_id, action.reason);
      writes.push_back({"assignment", key, a.dump()});
      continue;
    }
    // A DEA stops whatever is not assigned to it: a stop is a removed assignment.
    for (const auto& a : assigned)
      if (a.instance_id == action.instance_id) remove(a, action.reason);
  }

  std::map<std::string, const AppSpec*> by_name;
  for (const auto& s : specs) by_name[s.name] = &s;
  std::map<std::string, bool> dea_up;  // DEAs the health manager knows
  // While failover is paused, a silent DEA keeps its assignments.
  if (paused_.empty())
    for (const auto& d : hm_.Deas()) dea_up[d.node_id] = d.up;
  std::set<std::string> nodes;
  for (const auto& n : deas_) nodes.insert(n.id);
  std::map<std::string, std::string> reported;  // instance id -> state
  for (const auto& [node, value] : *reports) {
    json r = json::parse(value, nullptr, false);
    if (r.is_object() && r.contains("instances") && r["instances"].is_array())
      for (const auto& i : r["instances"])
        if (i.is_object()) reported[i.value("instance_id", "")] = i.value("state", "");
  }
  // The newest assignment of each index: an older one that does not serve
  // (crashed, still starting, never seen) has been replaced by it. One that
  // serves stays until the health manager stops it (once the new one runs).
  std::map<std::pair<std::string, int>, int64_t> newest;
  for (const auto& a : assigned) {
    int64_t& n = newest[{a.app, a.index}];
    n = std::max(n, a.assigned_ms);
  }
  for (const auto& a : assigned) {
    auto app = by_name.find(a.app);
    if (app == by_name.end() || app->second->state != "STARTED")
      remove(a, "the app is stopped or deleted");
    else if (a.index < 0 || a.index >= app->second->instances || a.instance_id.empty())
      remove(a, "no such index");
    else if (!nodes.count(a.node_id))
      remove(a, "its DEA left the cluster or is no DEA any more");
    else if (dea_up.count(a.node_id) && !dea_up[a.node_id])
      remove(a, "its DEA is down");
    else if (a.assigned_ms < newest[{a.app, a.index}] &&
             (!reported.count(a.instance_id) || reported[a.instance_id] != "RUNNING"))
      remove(a, "replaced");
  }
  for (const auto& [app, n] : started)
    if (n > kLoggedStarts)
      LogInfo("controller: start {} instances of {} ({} more not logged one by one)", n, app,
              n - kLoggedStarts);
  WriteBatches(writes);
}

void Reconciler::WriteBatches(const std::vector<DocWrite>& writes) {
  for (size_t i = 0; i < writes.size(); i += kWritesPerBatch) {
    size_t end = std::min(writes.size(), i + kWritesPerBatch);
    std::vector<DocWrite> batch(writes.begin() + i, writes.begin() + end);
    // A failed batch is not retried here: the next round sees what is missing.
    if (auto s = store_.WriteDocs(batch); !s)
      LogWarn("controller: {} assignment writes failed: {}", batch.size(), s.error());
  }
}

std::pair<std::string, std::string> Reconciler::Health(const std::string& app) const {
  auto it = shadow_health_.find(app);
  auto h = it != shadow_health_.end() ? it->second : hm_.AppHealth(app);
  if (!hm_.FailoverPaused().empty()) return {h.state, hm_.FailoverPaused()};
  return {h.state, h.message};
}

}  // namespace kato
