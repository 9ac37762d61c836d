#include "controller/scheduler.h"

#include <map>
#include <tuple>

namespace kato {

bool HoldsResources(const InstanceReport& instance) {
  return instance.state == "STARTING" || instance.state == "RUNNING";
}

namespace {

struct Load {
  const DeaInfo* dea;
  int used_mb = 0;
  int of_app = 0;

  int free_mb() const { return dea->memory_total_mb - used_mb; }
};

// Strict "a is a better home than b" for the next instance.
bool Better(const Load& a, const Load& b) {
  return std::make_tuple(a.of_app, -a.free_mb(), a.dea->node_id) <
         std::make_tuple(b.of_app, -b.free_mb(), b.dea->node_id);
}

}  // namespace

PlacementPlan PlaceWhatFits(const AppSpec& app, const std::vector<int>& indices,
                            const std::vector<DeaInfo>& deas,
                            const std::vector<InstanceReport>& running) {
  PlacementPlan plan;
  std::vector<Load> loads;
  std::map<std::string, size_t> by_node;
  for (const DeaInfo& dea : deas) {
    if (!dea.up || by_node.count(dea.node_id)) continue;
    by_node[dea.node_id] = loads.size();
    loads.push_back(Load{&dea});
  }
  if (indices.empty()) return plan;
  if (loads.empty()) {
    plan.unplaceable = "no DEA is up to run app '" + app.name +
                       "'; start a node with the dea role or bring a stopped one back";
    return plan;
  }
  for (const InstanceReport& r : running) {
    auto it = by_node.find(r.dea_node_id);
    if (it == by_node.end() || !HoldsResources(r)) continue;
    Load& load = loads[it->second];
    load.used_mb += r.memory_mb;
    if (r.app == app.name) ++load.of_app;
  }

  plan.placed.reserve(indices.size());
  for (int index : indices) {
    Load* best = nullptr;
    for (Load& load : loads) {
      if (load.free_mb() < app.memory_mb) continue;
      if (best == nullptr || Better(load, *best)) best = &load;
    }
    if (best == nullptr) {
      const Load* roomiest = &loads.front();
      for (const Load& load : loads) {
        if (std::make_tuple(-load.free_mb(), load.dea->node_id) <
            std::make_tuple(-roomiest->free_mb(), roomiest->dea->node_id)) {
          roomiest = &load;
        }
      }
      plan.unplaceable = "no DEA can fit instance " + std::to_string(index) + " of app '" +
                         app.name + "' (needs " + std::to_string(app.memory_mb) +
                         " MB; the most free on any DEA is " +
                         std::to_string(roomiest->free_mb()) + " MB on " + roomiest->dea->ip + ")";
      return plan;
    }
    best->used_mb += app.memory_mb;
    ++best->of_app;
    plan.placed.push_back(Placement{index, best->dea->node_id});
  }
  return plan;
}

Result<std::vector<Placement>> Place(const AppSpec& app, const std::vector<int>& indices,
                                     const std::vector<DeaInfo>& deas,
                                     const std::vector<InstanceReport>& running) {
  PlacementPlan plan = PlaceWhatFits(app, indices, deas, running);
  if (!plan.unplaceable.empty()) return Err(plan.unplaceable);
  return std::move(plan.placed);
}

}  // namespace kato
