// Reconciler: one round of the controller's control loop around the
// HealthManager. It reads the cluster state (apps, DEAs, their reports, the
// assignments), feeds the health manager and carries out its decisions by
// writing instance assignments, which the DEAs follow.
//
// Assignments are documents of kind "assignment", one per instance, keyed
// APP/INDEX/INSTANCE_ID, so that two instances of one index can coexist: a new
// version's instance starts beside the old one, which is stopped only once the
// new one is RUNNING (a re-push drops no request). An assignment goes when the
// health manager stops its instance, when its index is no longer wanted
// (scaled down, app stopped or deleted), when its DEA is down (its
// replacement is assigned elsewhere in the same round) or gone from the
// cluster, or when a newer assignment of its index exists and its instance is
// not RUNNING (it crashed and was restarted, or never started). Keys of kato
// 0.1's first builds (APP/INDEX) are understood.
//
// A leader acts; a standby (another controller holds the leader lease) only
// observes, so that it knows every DEA when it takes over, and judges the
// apps' health on a copy of the health manager for its API. Not thread-safe.
#pragma once

#include <map>
#include <string>
#include <utility>

#include "common/clock.h"
#include "controller/health.h"
#include "store/store.h"

namespace kato {

class Reconciler {
 public:
  // Writes per Store::WriteDocs call: about 250 KB to the primary (under its 1 MiB limit).
  static constexpr size_t kWritesPerBatch = 1000;
  // Starts of one app logged one by one in a round; beyond, one line sums them up.
  static constexpr int kLoggedStarts = 20;

  Reconciler(Store& store, const Clock& clock, HealthOptions options = {})
      : store_(store), clock_(clock), hm_(clock, options) {}

  // The cluster's DEAs (nodes with the dea role) and the primary's
  // last_report_ms of each: a DEA is alive while it moves. Round() works on
  // the last ones given (the owner reads them from the primary in one call).
  void SetDeas(std::vector<NodeRecord> deas, std::map<std::string, int64_t> last_reports) {
    deas_ = std::move(deas);
    last_report_ = std::move(last_reports);
  }
  void Round(bool leader);
  // The health manager's verdict on an app: {state, message}.
  std::pair<std::string, std::string> Health(const std::string& app) const;
  // The DEAs the health manager knows, and whether each is up.
  std::vector<DeaInfo> Deas() const { return hm_.Deas(); }

 private:
  void WriteBatches(const std::vector<DocWrite>& writes);
  void Observe(const std::vector<NodeRecord>& nodes,
               const std::vector<std::pair<std::string, std::string>>& reports);

  Store& store_;
  const Clock& clock_;
  HealthManager hm_;
  std::map<std::string, int64_t> seen_;         // last_report_ms already observed, per DEA
  std::vector<NodeRecord> deas_;                // from SetDeas
  std::map<std::string, int64_t> last_report_;  // from SetDeas
  std::map<std::string, AppHealthStatus> shadow_health_;  // a standby's verdicts
  std::string paused_;  // the health manager's FailoverPaused() as last logged
};

}  // namespace kato
