// Scheduler: chooses the DEA for each new instance of an app. Pure and deterministic:
// the same inputs give the same placements.
//
// Only DEAs that are `up` and have room are eligible. Room is the DEA's
// memory_total_mb less the memory_mb of every STARTING or RUNNING instance on it,
// including the placements made earlier in the same call. Among eligible DEAs the
// one with the fewest STARTING/RUNNING instances of this app wins (spreading the app
// so that losing one DEA loses as few of its instances as possible), then the one
// with the most free memory, then the smallest node id.
//
// Placement is all-or-nothing: if one index cannot be placed, nothing is, and the
// error says which instance did not fit and how much room the roomiest DEA has.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "controller/model.h"

namespace kato {

struct Placement {
  int index = 0;
  std::string dea_node_id;

  bool operator==(const Placement&) const = default;
};

// True for the instance states that hold memory on their DEA and count for spreading.
bool HoldsResources(const InstanceReport& instance);

// What PlaceWhatFits could place: the first indices in order, up to the first
// that fits on no DEA; `unplaceable` says why that one did not ("" when all did).
struct PlacementPlan {
  std::vector<Placement> placed;
  std::string unplaceable;
};

// Places `indices` of `app` in the order given, as Place, stopping at the first that
// does not fit (every index of an app needs the same memory: the rest would not either).
PlacementPlan PlaceWhatFits(const AppSpec& app, const std::vector<int>& indices,
                            const std::vector<DeaInfo>& deas,
                            const std::vector<InstanceReport>& running);

// Places `indices` of `app`, in the order given. `running` holds the instances
// already on the DEAs (any app; instances on unknown DEAs and in other states than
// STARTING/RUNNING are ignored); each counts with its own memory_mb.
Result<std::vector<Placement>> Place(const AppSpec& app, const std::vector<int>& indices,
                                     const std::vector<DeaInfo>& deas,
                                     const std::vector<InstanceReport>& running);

}  // namespace kato
