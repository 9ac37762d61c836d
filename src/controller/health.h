// HealthManager: compares the apps' desired instances with what the DEAs report and
// decides which instances to start and stop. Pure decision logic: it does no I/O and
// keeps no threads; the owner feeds it DEA heartbeats, calls Evaluate() periodically
// (every ~500 ms) and carries out the returned Actions. Time comes from the injected
// Clock, so every decision is deterministic given the inputs and the clock. Not
// thread-safe: call it from one thread (or under the owner's lock).
//
// Liveness. ObserveDea() records a heartbeat at clock.now(); a DEA whose last
// heartbeat is older than `dea_grace` is down, and its instances are lost: their
// indices are started elsewhere in the same Evaluate() (failover). Times are taken on
// receipt rather than from the DEA's clock, so clock skew between nodes is harmless.
// For the first `dea_grace` after construction Evaluate() decides nothing, so that a
// restarted controller hears from every live DEA before it starts "missing" instances.
//
// Convergence, for each STARTED app, version V, N instances:
//   - every index 0..N-1 gets exactly one STARTING/RUNNING instance of version V on an
//     up DEA; missing ones are placed with the Scheduler (spread across DEAs). When no
//     DEA can fit them the app is UNPLACEABLE, with the scheduler's message.
//   - duplicates of an index (e.g. a DEA coming back with instances that were already
//     replaced) are stopped, keeping one: RUNNING before STARTING, then the one on the
//     DEA that has been up the longest (a DEA that was down comes last), then the
//     newest, then the smallest instance id.
//   - an older version's instance of an index is stopped once a version-V instance of
//     that index is RUNNING, so no index is left without a running instance meanwhile.
//   - indices >= N (scale down) are stopped; so is every instance of a STOPPED or
//     deleted app.
//   - a start issued and not yet reported is pending: the index is not started again
//     until its DEA reports the new instance (in any state), the DEA goes down, or
//     `pending_timeout` passes. A stop issued is resent only after `pending_timeout`.
//   - each newly seen CRASHED instance of version V counts as a crash of its index; the
//     index is restarted after a back-off of backoff_initial * 2^(k-1), capped at
//     backoff_max, where k is the number of crashes of that index within
//     `flapping_window`. More than `flapping_crashes` crashes in the window mark the
//     app FLAPPING: none of its indices is started again until its version changes or
//     Reset() is called (operator restart).
#pragma once

#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "controller/model.h"

namespace kato {

struct HealthOptions {
  // With heartbeats every 500 ms this tolerates two lost heartbeats and keeps failover
  // (down detection + start elsewhere) within the 3 s goal for fast-starting apps.
  Millis dea_grace{1500};
  Millis pending_timeout{30000};
  Millis backoff_initial{1000};
  Millis backoff_max{60000};
  int flapping_crashes = 5;
  Millis flapping_window{120000};
  // Mass silence: when at least this many DEAs are known and more than half of them
  // are down at once, the fault is more likely the control plane's (an overloaded or
  // cut-off core, a controller partitioned from the DEAs) than theirs. Then nothing
  // fails over: Evaluate() returns no action until most DEAs are heard again.
  size_t mass_silence_min_deas = 10;
};

struct AppHealthStatus {
  // "RUNNING"     every index has a RUNNING instance of the current version
  // "STARTING"    converging: some instances are still starting or being placed
  // "DOWN"        no instance running and some index waiting to restart after a crash
  // "FLAPPING"    crashing repeatedly; not restarted until a new version or Reset()
  // "UNPLACEABLE" no DEA can fit a missing instance (message says why)
  // "STOPPED"     the app's desired state is STOPPED
  std::string state;
  std::string message;

  bool operator==(const AppHealthStatus&) const = default;
};

class HealthManager {
 public:
  explicit HealthManager(const Clock& clock, HealthOptions options = {});

  // A heartbeat from `dea` carrying every instance it currently knows of (a full
  // snapshot: it replaces the previous one). dea.up is ignored; dea_node_id of the
  // reports is set to dea.node_id.
  void ObserveDea(const DeaInfo& dea, std::vector<InstanceReport> instances);
  // Drops a DEA removed from the cluster (its instances are then simply gone).
  void ForgetDea(const std::string& node_id);

  // The actions that move the cluster towards `apps`. Pass the full list of apps: an
  // instance of an app not in it is stopped, so when the list cannot be read (store
  // error) skip this Evaluate() rather than pass a partial one. Deterministic: stops
  // resent after pending_timeout first, then per app in name order, then stops of
  // deleted apps by instance id.
  std::vector<Action> Evaluate(const std::vector<AppSpec>& apps);

  // As of the last Evaluate(). Unknown apps: {"DOWN", "not evaluated yet"}.
  AppHealthStatus AppHealth(const std::string& app) const;
  // Operator restart: forgets the app's crash history and FLAPPING mark, so that its
  // missing instances are started at the next Evaluate().
  void Reset(const std::string& app);

  // Why failover is paused as of the last Evaluate() (see mass_silence_min_deas), or "".
  const std::string& FailoverPaused() const { return paused_; }

  // Every known DEA by node id, with `up` computed from its last heartbeat.
  std::vector<DeaInfo> Deas() const;
  // The instances of `app` reported by up DEAs, in any state, by index then id.
  std::vector<InstanceReport> Instances(const std::string& app) const;

 private:
  struct DeaRecord {
    DeaInfo info;
    SteadyTime last_seen;
    SteadyTime up_since;  // start of the current run of timely heartbeats
    std::vector<InstanceReport> instances;
  };
  struct PendingStart {
    std::string dea_node_id;
    int64_t version = 0;
    SteadyTime issued;
    std::set<std::string> known_ids;  // ids on that DEA for the index when issued
  };
  struct Slot {  // crash history of one index
    std::deque<SteadyTime> crashes;
    SteadyTime next_start{};
  };
  struct AppState {
    int64_t version = 0;
    std::map<int, PendingStart> pending;
    std::map<int, Slot> slots;
    std::string flapping;  // non-empty: FLAPPING, with this message
    AppHealthStatus status{"DOWN", "not evaluated yet"};
  };
  struct PendingStop {
    SteadyTime issued;
    Action action;
  };

  bool IsUp(const DeaRecord& dea, SteadyTime now) const;
  // The mass-silence message when more than half of enough known DEAs are down, else "".
  std::string MassSilence(SteadyTime now) const;
  void CountCrashes(const std::map<std::string, const AppSpec*>& desired, SteadyTime now);
  void ResolvePendingStarts(AppState& state, const std::string& app, SteadyTime now) const;
  void EvaluateApp(const AppSpec& app, AppState& state, const std::vector<DeaInfo>& deas,
                   const std::vector<const InstanceReport*>& live,
                   std::vector<InstanceReport>& placed, SteadyTime now,
                   std::vector<Action>& actions);
  void Stop(const InstanceReport& instance, std::string reason, SteadyTime now,
            std::vector<Action>& actions);
  // Orders candidates for one index: the first is the one to keep.
  bool Preferred(const InstanceReport& a, const InstanceReport& b) const;

  const Clock& clock_;
  HealthOptions options_;
  SteadyTime started_at_;
  std::string paused_;  // FailoverPaused()
  std::map<std::string, DeaRecord> deas_;
  std::map<std::string, AppState> apps_;
  std::map<std::string, PendingStop> pending_stops_;  // by instance id
  std::set<std::string> counted_crashes_;             // CRASHED instance ids already counted
};

}  // namespace kato
