// InstanceHost: where the service node runs its per-instance servers (a
// redis-server or memcached per service), behind an interface so that the
// drivers are unit tested with a fake. SupervisedInstances is kato's
// Supervisor (src/supervisor/) under the services process: restarts with
// back-off, logs per process, pid files (recover() replaces what an earlier
// services process left running). Single-threaded: the owner ticks the
// supervisor from the thread that calls the drivers.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "supervisor/supervisor.h"

namespace kato {

class InstanceHost {
 public:
  virtual ~InstanceHost() = default;
  // Runs the process (a changed spec restarts it).
  virtual void Want(const ProcessSpec& spec) = 0;
  // Stops it; Status() says when it is gone (nullopt).
  virtual void Drop(const std::string& name) = 0;
  virtual std::optional<ProcessStatus> Status(const std::string& name) const = 0;
  // Every process wanted or still stopping.
  virtual std::vector<std::string> Names() const = 0;
};

class SupervisedInstances final : public InstanceHost {
 public:
  explicit SupervisedInstances(Supervisor& supervisor) : sup_(supervisor) {}
  void Want(const ProcessSpec& spec) override;
  void Drop(const std::string& name) override;
  std::optional<ProcessStatus> Status(const std::string& name) const override;
  std::vector<std::string> Names() const override;

 private:
  void Apply();

  Supervisor& sup_;
  std::map<std::string, ProcessSpec> wanted_;
};

}  // namespace kato
