// ServiceDriver: how the service node (`katod services`) makes one type's
// instances exist on its servers and removes them again. One driver per type
// (postgresql, mysql, rabbitmq: role-wide servers; redis, memcached: a process
// per instance). The reconciler (service_reconciler.h) calls a driver from
// one thread only; drivers need no locks.
//
// Records reach a driver only after CheckServiceRecord (record_check.h)
// accepted them: every name a driver puts into SQL, a command line or a path
// is derived from the record's random id and was checked to be lowercase hex.
#pragma once

#include <set>
#include <string>

#include "common/result.h"
#include "services/service_model.h"

namespace kato {

// kDone: the instance is as asked (it serves, or it is gone). kPending: on
// its way (a process starting or stopping); ask again soon.
enum class Progress { kDone, kPending };

class ServiceDriver {
 public:
  virtual ~ServiceDriver() = default;
  // Server-wide hardening before the first instance (drop default accounts,
  // revoke public access). Called until it returns Ok, then never again in
  // this process's life. An error (e.g. the server still starting) is retried.
  virtual Status Prepare() { return Ok(); }
  // Makes the instance exist as `s` says. Idempotent: safe to repeat after a
  // crash at any point, and after a restart of the node.
  virtual Result<Progress> Provision(const ServiceRecord& s) = 0;
  // Removes the instance: its data, processes and credentials. Idempotent
  // (what is already gone is no error).
  virtual Result<Progress> Remove(const ServiceRecord& s) = 0;
  // Removes what this driver keeps on the node for instances whose id is not
  // in `live` (no record names them any more). Not called in a round where
  // some record could not be read.
  virtual void Sweep(const std::set<std::string>& live) { (void)live; }
};

}  // namespace kato
