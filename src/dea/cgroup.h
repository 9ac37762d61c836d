// CgroupManager: one cgroup per app instance, for its memory limit, CPU share
// and process count, and to find and kill everything the instance started.
//
// Groups live at <hierarchy>/<parent>/<instance-id> (parent "kato" by
// default): under each of the memory, cpu and pids hierarchies on cgroup v1,
// in the one unified tree on v2. ProbeCgroups picks the version: v2 when
// <root>/cgroup.controllers lists "memory", else v1 when <root>/memory is a
// v1 memory hierarchy. Instance ids must be unique on the host (several DEAs
// may share one). Only the file tree under `root` is touched, so tests point it
// at a scratch directory. Not thread-safe per instance id: the DEA serializes
// an instance's lifecycle.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace kato {

struct CgroupLimits {
  int64_t memory_bytes = 0;  // 0: no limit. Swap is not allowed on top of it.
  int cpu_shares = 1024;     // v1 cpu.shares scale (2..262144); mapped to cpu.weight on v2
  int pids_max = 0;          // 0: no limit
};

struct MemoryEvents {
  uint64_t oom_kills = 0;   // processes the kernel's OOM killer took in this group
  uint64_t limit_hits = 0;  // times usage hit the limit (v1 failcnt, v2 "max" events)
};

class CgroupManager {
 public:
  virtual ~CgroupManager() = default;
  virtual int version() const = 0;  // 1 or 2
  // Whether "memory", "cpu" or "pids" limits are applied.
  virtual bool HasController(const std::string& controller) const = 0;
  // Creates the instance's group (or reuses one left by a crash) and sets its limits.
  virtual Status Create(const std::string& id, const CgroupLimits& limits) = 0;
  // The cgroup.procs files a process writes its own pid to, to join the group
  // (one per v1 hierarchy, one on v2). Its children inherit the group.
  virtual std::vector<std::string> ProcsFiles(const std::string& id) const = 0;
  // The processes in the group now (empty when it does not exist).
  virtual std::vector<pid_t> Pids(const std::string& id) const = 0;
  virtual Result<MemoryEvents> ReadMemoryEvents(const std::string& id) const = 0;
  // Kills whatever is left in the group, waits (briefly, bounded) for it to
  // empty, and removes it. A group that does not exist is already removed.
  virtual Status Remove(const std::string& id) = 0;
};

// Ok when memory, cpu and pids are all there; else an error naming what is
// missing, how to enable it, and the override.
Status RequireControllers(const CgroupManager& cgroups);

Result<std::unique_ptr<CgroupManager>> ProbeCgroups(const std::string& root = "/sys/fs/cgroup",
                                                    const std::string& parent = "kato");

}  // namespace kato
