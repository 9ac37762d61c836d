// ServiceReconciler: the service node's provisioning logic, one Round() at a
// time over the cluster store (see service_model.h for the documents).
//
// Every "service/NAME" whose node_id is this node and whose type has a driver
// here: ACTIVE -> the driver provisions it, then "service_state/NAME" says
// READY (with the record's id); DELETING -> the driver removes it, then both
// documents are deleted. A state document is written only when what it says
// changes, since every write bumps the cluster revision and wakes every
// watcher. A failure is PROVISIONING with the reason while it may pass (a
// server still starting) and FAILED once it has lasted `give_up`, or at once
// for a record the node refuses (CheckServiceRecord). Drivers are prepared
// (Prepare) before their first instance, retried every round until done.
// Instances that no document names any more are swept.
//
// Single-threaded: call Round() from one thread. Time from the injected Clock.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>

#include "common/clock.h"
#include "services/service_driver.h"
#include "store/store.h"

namespace kato {

class ServiceReconciler {
 public:
  struct Options {
    Millis give_up{20000};  // the controller's create waits 45 s for READY or FAILED
  };
  // `drivers`: by service type (postgresql, mysql, redis, memcached,
  // rabbitmq); records of other types are not this node's business.
  ServiceReconciler(Store& store, std::string node_id, std::map<std::string, ServiceDriver*> drivers,
                    const Clock& clock, Options options);
  ServiceReconciler(Store& store, std::string node_id, std::map<std::string, ServiceDriver*> drivers,
                    const Clock& clock)
      : ServiceReconciler(store, std::move(node_id), std::move(drivers), clock, Options{}) {}

  // One look at the documents. True when something is on its way (a process
  // starting or stopping): call again soon rather than at the next period.
  bool Round();

 private:
  void PrepareDrivers();
  void Ensure(const ServiceRecord& s, const std::optional<ServiceState>& now);
  void Delete(const ServiceRecord& s, const std::optional<ServiceState>& now);
  void Failed(const ServiceRecord& s, const std::optional<ServiceState>& now, const std::string& why,
              bool at_once);
  void Tell(const ServiceRecord& s, const std::optional<ServiceState>& now, const std::string& state,
            const std::string& message);
  void Warn(const std::string& key, const std::string& message);

  Store& store_;
  std::string node_id_;
  std::map<std::string, ServiceDriver*> drivers_;
  const Clock& clock_;
  Options options_;
  bool pending_ = false;
  std::map<std::string, std::string> prepare_error_;  // type -> why Prepare failed; absent: done
  std::set<std::string> prepared_;
  std::map<std::string, std::string> provisioned_;  // name -> id provisioned in this process
  std::map<std::string, SteadyTime> failing_since_;  // name/id -> first failure
  std::map<std::string, std::string> warned_;        // what was last logged, per subject
};

}  // namespace kato
