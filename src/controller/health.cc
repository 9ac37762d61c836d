#include "controller/health.h"

#include <algorithm>
#include <utility>

#include "controller/scheduler.h"

namespace kato {

namespace {

std::string Seconds(Millis d) {
  const int64_t ms = d.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  return std::to_string(ms / 1000) + "." + std::to_string(ms % 1000 / 100) + " s";
}

}  // namespace

HealthManager::HealthManager(const Clock& clock, HealthOptions options)
    : clock_(clock), options_(options), started_at_(clock.now()) {}

bool HealthManager::IsUp(const DeaRecord& dea, SteadyTime now) const {
  return now - dea.last_seen <= options_.dea_grace;
}

std::string HealthManager::MassSilence(SteadyTime now) const {
  if (deas_.size() < options_.mass_silence_min_deas) return "";
  size_t down = 0;
  for (const auto& [id, record] : deas_) down += !IsUp(record, now);
  if (down * 2 <= deas_.size()) return "";
  return std::to_string(down) + " of " + std::to_string(deas_.size()) +
         " DEAs stopped reporting at once: failover is paused until most are heard again (an "
         "overloaded or cut-off core is likelier than that many failed machines)";
}

void HealthManager::ObserveDea(const DeaInfo& dea, std::vector<InstanceReport> instances) {
  const SteadyTime now = clock_.now();
  auto [it, inserted] = deas_.try_emplace(dea.node_id);
  DeaRecord& record = it->second;
  if (inserted || !IsUp(record, now)) record.up_since = now;
  record.info = dea;
  record.info.up = true;
  record.last_seen = now;
  for (InstanceReport& r : instances) r.dea_node_id = dea.node_id;
  record.instances = std::move(instances);
}

void HealthManager::ForgetDea(const std::string& node_id) { deas_.erase(node_id); }

void HealthManager::Reset(const std::string& app) {
  auto it = apps_.find(app);
  if (it == apps_.end()) return;
  it->second.slots.clear();
  it->second.flapping.clear();
}

AppHealthStatus HealthManager::AppHealth(const std::string& app) const {
  auto it = apps_.find(app);
  if (it == apps_.end()) return {"DOWN", "not evaluated yet"};
  return it->second.status;
}

std::vector<DeaInfo> HealthManager::Deas() const {
  const SteadyTime now = clock_.now();
  std::vector<DeaInfo> out;
  for (const auto& [id, record] : deas_) {
    out.push_back(record.info);
    out.back().up = IsUp(record, now);
  }
  return out;
}

std::vector<InstanceReport> HealthManager::Instances(const std::string& app) const {
  const SteadyTime now = clock_.now();
  std::vector<InstanceReport> out;
  for (const auto& [id, record] : deas_) {
    if (!IsUp(record, now)) continue;
    for (const InstanceReport& r : record.instances) {
      if (r.app == app) out.push_back(r);
    }
  }
  std::sort(out.begin(), out.end(), [](const InstanceReport& a, const InstanceReport& b) {
    return std::tie(a.index, a.instance_id) < std::tie(b.index, b.instance_id);
  });
  return out;
}

bool HealthManager::Preferred(const InstanceReport& a, const InstanceReport& b) const {
  const bool a_running = a.state == "RUNNING", b_running = b.state == "RUNNING";
  if (a_running != b_running) return a_running;
  // A DEA that was down (and so was already replaced) has the later up_since.
  const SteadyTime a_up = deas_.at(a.dea_node_id).up_since;
  const SteadyTime b_up = deas_.at(b.dea_node_id).up_since;
  if (a_up != b_up) return a_up < b_up;
  if (a.since_ms != b.since_ms) return a.since_ms > b.since_ms;
  return a.instance_id < b.instance_id;
}

void HealthManager::Stop(const InstanceReport& instance, std::string reason, SteadyTime now,
                         std::vector<Action>& actions) {
  Action action{Action::kStop,        instance.app,      instance.index,      instance.dea_node_id,
                instance.instance_id, std::move(reason), instance.app_version};
  pending_stops_[instance.instance_id] = PendingStop{now, action};
  actions.push_back(std::move(action));
}

void HealthManager::CountCrashes(const std::map<std::string, const AppSpec*>& desired,
                                 SteadyTime now) {
  std::set<std::string> reported;
  for (const auto& [node, record] : deas_) {
    for (const InstanceReport& r : record.instances) {
      if (r.state != "CRASHED") continue;
      reported.insert(r.instance_id);
      if (!counted_crashes_.insert(r.instance_id).second) continue;
      auto it = desired.find(r.app);
      if (it == desired.end()) continue;
      const AppSpec& spec = *it->second;
      if (spec.state != "STARTED" || r.app_version != spec.version || r.index < 0 ||
          r.index >= spec.instances) {
        continue;
      }
      AppState& state = apps_[r.app];
      Slot& slot = state.slots[r.index];
      slot.crashes.push_back(now);
      while (now - slot.crashes.front() > options_.flapping_window) slot.crashes.pop_front();
      const size_t k = slot.crashes.size();
      Millis delay = options_.backoff_initial;
      for (size_t j = 1; j < k && delay < options_.backoff_max; ++j) delay *= 2;
      slot.next_start = now + std::min(delay, options_.backoff_max);
      if (k > static_cast<size_t>(options_.flapping_crashes) && state.flapping.empty()) {
        state.flapping = "instance " + std::to_string(r.index) + " crashed " + std::to_string(k) +
                         " times within " + Seconds(options_.flapping_window) +
                         "; see its logs, then push a fix or restart the app";
      }
    }
  }
  // Forget ids no DEA reports any more, so the set stays as small as the reports.
  std::erase_if(counted_crashes_, [&](const std::string& id) { return !reported.count(id); });
}

void HealthManager::ResolvePendingStarts(AppState& state, const std::string& app,
                                         SteadyTime now) const {
  std::erase_if(state.pending, [&](const auto& entry) {
    const auto& [index, pending] = entry;
    if (pending.version != state.version) return true;
    if (now - pending.issued >= options_.pending_timeout) return true;  // lost
    auto dea = deas_.find(pending.dea_node_id);
    if (dea == deas_.end() || !IsUp(dea->second, now)) return true;  // lost with its DEA
    for (const InstanceReport& r : dea->second.instances) {
      if (r.app == app && r.app_version == pending.version && r.index == index &&
          !pending.known_ids.count(r.instance_id)) {
        return true;  // reported: from now on the report speaks for it
      }
    }
    return false;
  });
}

std::vector<Action> HealthManager::Evaluate(const std::vector<AppSpec>& apps) {
  const SteadyTime now = clock_.now();
  std::vector<Action> actions;
  if (now - started_at_ < options_.dea_grace) return actions;
  paused_ = MassSilence(now);
  if (!paused_.empty()) return actions;

  std::map<std::string, const AppSpec*> desired;
  for (const AppSpec& app : apps) desired[app.name] = &app;
  std::erase_if(apps_, [&](const auto& entry) { return !desired.count(entry.first); });
  for (const auto& [name, spec] : desired) {
    AppState& state = apps_[name];
    if (state.version != spec->version) {
      // A new version starts with a clean slate: no crash history, not FLAPPING.
      state = AppState{};
      state.version = spec->version;
    }
    if (spec->state != "STARTED") state.pending.clear();
  }
  CountCrashes(desired, now);

  std::vector<DeaInfo> deas;
  std::vector<const InstanceReport*> live;  // holding resources on an up DEA
  std::set<std::string> live_ids;
  for (const auto& [node, record] : deas_) {
    deas.push_back(record.info);
    deas.back().up = IsUp(record, now);
    if (!deas.back().up) continue;
    for (const InstanceReport& r : record.instances) {
      if (!HoldsResources(r)) continue;
      live.push_back(&r);
      live_ids.insert(r.instance_id);
    }
  }

  // Stops already sent: done once the instance is gone; resent if it outlives the timeout.
  std::erase_if(pending_stops_, [&](const auto& entry) { return !live_ids.count(entry.first); });
  for (auto& [id, pending] : pending_stops_) {
    if (now - pending.issued < options_.pending_timeout) continue;
    pending.issued = now;
    actions.push_back(pending.action);
  }

  // What the scheduler sees: live instances plus starts not reported yet.
  std::vector<InstanceReport> placed;
  for (const InstanceReport* r : live) {
    placed.push_back(*r);
    auto spec = desired.find(r->app);
    if (placed.back().memory_mb == 0 && spec != desired.end()) {
      placed.back().memory_mb = spec->second->memory_mb;
    }
  }
  for (auto& [name, state] : apps_) {
    ResolvePendingStarts(state, name, now);
    for (const auto& [index, pending] : state.pending) {
      InstanceReport r;
      r.app = name;
      r.app_version = pending.version;
      r.index = index;
      r.dea_node_id = pending.dea_node_id;
      r.state = "STARTING";
      r.memory_mb = desired.at(name)->memory_mb;
      placed.push_back(std::move(r));
    }
  }

  for (const auto& [name, spec] : desired) {
    EvaluateApp(*spec, apps_.at(name), deas, live, placed, now, actions);
  }

  std::vector<const InstanceReport*> orphans;
  for (const InstanceReport* r : live) {
    if (!desired.count(r->app) && !pending_stops_.count(r->instance_id)) orphans.push_back(r);
  }
  std::sort(orphans.begin(), orphans.end(),
            [](const auto* a, const auto* b) { return a->instance_id < b->instance_id; });
  for (const InstanceReport* r : orphans) Stop(*r, "app deleted", now, actions);
  return actions;
}

void HealthManager::EvaluateApp(const AppSpec& app, AppState& state,
                                const std::vector<DeaInfo>& deas,
                                const std::vector<const InstanceReport*>& live,
                                std::vector<InstanceReport>& placed, SteadyTime now,
                                std::vector<Action>& actions) {
  std::vector<const InstanceReport*> mine;
  for (const InstanceReport* r : live) {
    if (r->app == app.name && !pending_stops_.count(r->instance_id)) mine.push_back(r);
  }
  if (app.state != "STARTED") {
    for (const InstanceReport* r : mine) Stop(*r, "app stopped", now, actions);
    state.status = {"STOPPED", "stopped"};
    return;
  }

  const int n = std::max(app.instances, 0);
  const std::string version = std::to_string(app.version);
  std::map<int, std::vector<const InstanceReport*>> current, old;
  std::vector<const InstanceReport*> surplus;
  for (const InstanceReport* r : mine) {
    if (r->index < 0 || r->index >= n) {
      surplus.push_back(r);
    } else {
      (r->app_version == app.version ? current : old)[r->index].push_back(r);
    }
  }
  // Highest indices first, as a scale down removes them.
  std::sort(surplus.begin(), surplus.end(), [](const auto* a, const auto* b) {
    return std::tie(b->index, a->instance_id) < std::tie(a->index, b->instance_id);
  });
  for (const InstanceReport* r : surplus) {
    Stop(*r, "scaled down to " + std::to_string(n) + " instances", now, actions);
  }

  auto by_preference = [this](const auto* a, const auto* b) { return Preferred(*a, *b); };
  int running = 0;
  std::string waiting;  // why an index waits (crash back-off), for the status
  std::vector<int> missing;
  for (int i = 0; i < n; ++i) {
    std::vector<const InstanceReport*>& cur = current[i];
    std::vector<const InstanceReport*>& olds = old[i];
    std::sort(cur.begin(), cur.end(), by_preference);
    std::sort(olds.begin(), olds.end(), by_preference);
    for (size_t k = 1; k < cur.size(); ++k) {
      Stop(*cur[k], "duplicate of " + cur[0]->instance_id, now, actions);
    }
    const bool serving = !cur.empty() && cur[0]->state == "RUNNING";
    if (serving) ++running;
    // Old versions go once the new one serves; until then one keeps the index up.
    for (size_t k = serving ? 0 : 1; k < olds.size(); ++k) {
      Stop(*olds[k],
           serving ? "replaced by version " + version : "duplicate of " + olds[0]->instance_id, now,
           actions);
    }
    if (!cur.empty() || state.pending.count(i) || !state.flapping.empty()) continue;
    auto slot = state.slots.find(i);
    if (slot != state.slots.end() && now < slot->second.next_start) {
      if (waiting.empty()) {
        waiting = "instance " + std::to_string(i) + " crashed; restarting in " +
                  Seconds(std::chrono::duration_cast<Millis>(slot->second.next_start - now));
      }
      continue;
    }
    missing.push_back(i);
  }

  // Indices that lost their instance on a DEA that went down, and that DEA's address.
  std::map<int, std::string> failed_over;
  for (const auto& [id, record] : deas_) {
    if (IsUp(record, now)) continue;
    for (const InstanceReport& r : record.instances)
      if (r.app == app.name && HoldsResources(r)) failed_over[r.index] = record.info.ip;
  }
  PlacementPlan plan = PlaceWhatFits(app, missing, deas, placed);
  const std::string& unplaceable = plan.unplaceable;
  for (const Placement& p : plan.placed) {
    const int i = p.index;
    const std::string& node = p.dea_node_id;
    PendingStart pending{node, app.version, now, {}};
    for (const InstanceReport& r : deas_.at(node).instances) {
      if (r.app == app.name && r.app_version == app.version && r.index == i) {
        pending.known_ids.insert(r.instance_id);
      }
    }
    state.pending[i] = std::move(pending);

    std::string reason = "starting missing instance";
    if (auto lost = failed_over.find(i); lost != failed_over.end())
      reason = "DEA " + lost->second + " stopped heartbeating";
    if (state.slots.count(i)) reason = "restarting after a crash";
    actions.push_back(Action{Action::kStart, app.name, i, node, "", reason, app.version});

    InstanceReport r;
    r.app = app.name;
    r.app_version = app.version;
    r.index = i;
    r.dea_node_id = node;
    r.state = "STARTING";
    r.memory_mb = app.memory_mb;
    placed.push_back(std::move(r));
  }

  const std::string counts =
      std::to_string(running) + " of " + std::to_string(n) + " instances running";
  if (!state.flapping.empty()) {
    state.status = {"FLAPPING", state.flapping};
  } else if (!unplaceable.empty()) {
    state.status = {"UNPLACEABLE", unplaceable};
  } else if (running == n) {
    state.status = {"RUNNING", counts};
  } else if (running == 0 && !waiting.empty()) {
    state.status = {"DOWN", waiting};
  } else {
    state.status = {"STARTING", counts};
  }
}

}  // namespace kato
