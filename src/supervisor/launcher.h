// ProcessLauncher and ReadinessProber: the OS effects the supervisor depends on,
// behind interfaces so that the state machine is unit tested with fakes.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "supervisor/process_spec.h"
#include "common/result.h"

namespace kato {

struct ExitEvent {
  pid_t pid = 0;
  int status = 0;  // as from waitpid
};

class ProcessLauncher {
 public:
  virtual ~ProcessLauncher() = default;
  // Starts the process in its own session (so its pid is its process group id),
  // with stdout and stderr appended to `log_path`. Returns its pid.
  virtual Result<pid_t> launch(const ProcessSpec& spec, const std::string& log_path) = 0;
  // Sends `sig` to the whole process group `pgid`. ESRCH is not an error.
  virtual void kill_group(pid_t pgid, int sig) = 0;
  // Reaps every child that has exited, without blocking.
  virtual std::vector<ExitEvent> reap() = 0;
};

class ReadinessProber {
 public:
  virtual ~ReadinessProber() = default;
  // True when a TCP connection to the address succeeds within a short bound.
  virtual bool ready(const ReadinessCheck& check) = 0;
};

// fork/exec implementation. Children are put in their own session, get their
// user switched when the spec asks for one, and have their descriptors closed.
class PosixLauncher final : public ProcessLauncher {
 public:
  Result<pid_t> launch(const ProcessSpec& spec, const std::string& log_path) override;
  // The same, with stdout and stderr on `output_fd` (e.g. a pipe the caller
  // drains); the caller keeps and closes its descriptor. `spec.cwd` empty: /.
  Result<pid_t> launch_to_fd(const ProcessSpec& spec, int output_fd);
  void kill_group(pid_t pgid, int sig) override;
  std::vector<ExitEvent> reap() override;

 private:
  // `user_ids`: the looked-up user (launcher.cc's UserIds) or nullptr.
  Result<pid_t> Spawn(const ProcessSpec& spec, const std::string& cwd, const void* user_ids,
                      int log_fd);
};

// Connects to check.host (a numeric IPv4 or IPv6 address, never resolved, so
// that a probe cannot block on DNS) within about 200 ms.
class TcpProber final : public ReadinessProber {
 public:
  bool ready(const ReadinessCheck& check) override;
};

// Makes orphaned descendants of this process (e.g. daemons a role process forks)
// re-parent to it instead of init, so that reap() collects them.
void BecomeChildSubreaper();

// False when the process does not exist or is a zombie (kill(pid, 0) succeeds on
// zombies, so it cannot tell a dead process from a live one). Reads /proc.
bool ProcessAlive(pid_t pid);

// The start time of a process in clock ticks since boot (field 22 of
// /proc/PID/stat); with the pid, it identifies a process across pid reuse.
std::optional<unsigned long long> ProcessStartTime(pid_t pid);

}  // namespace kato
