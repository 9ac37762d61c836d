// Supervisor: keeps a node's role processes in the state the agent asks for.
//
// States, as supervisord names them:
//   STOPPED   not running, and not wanted running (operator stop, or not started yet)
//   STARTING  launched, not yet ready (no answer on its port / not start_secs old)
//   RUNNING   ready
//   BACKOFF   exited while STARTING; will be retried after an exponential delay
//   STOPPING  SIGTERM sent; SIGKILL to the group after stop_timeout
//   EXITED    exited from RUNNING; restarted (after back-off) unless stopped
//   FATAL     failed to start start_retries times in a row; stays down until started again
//
// Processes start in ascending `order`; a process starts only once every wanted
// process of a lower order has left STARTING. Stop is in the reverse order.
// A RUNNING process that exits is restarted with exponential back-off
// (1 s, 2 s, 4 s … capped at 30 s; reset after it stays RUNNING for 60 s).
//
// When a process exits, whatever is left in its process group is SIGKILLed, so that
// orphaned helpers cannot hold its port against the next start. A process not
// ready within start_timeout has its group SIGKILLed; its retry waits for the exit.
//
// The owner calls tick() often (on SIGCHLD and every ~100 ms); all work happens
// there, so the supervisor is single-threaded and needs no locks. Time comes
// from the injected Clock; processes from the injected launcher.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "supervisor/launcher.h"
#include "supervisor/process_spec.h"
#include "common/clock.h"

namespace kato {

enum class ProcState { kStopped, kStarting, kRunning, kBackoff, kStopping, kExited, kFatal };
const char* ToString(ProcState s);

struct ProcessStatus {
  std::string name;
  ProcState state = ProcState::kStopped;
  pid_t pid = 0;
  std::string log_path;
  std::string message;  // why it is in this state, e.g. "exited with status 1"
  int64_t since_ms = 0;  // wall clock time of the last state change
};

class Supervisor {
 public:
  // Logs go to `log_dir`/NAME.log; pid files to `run_dir`/NAME.pid (used to
  // replace processes left running by an earlier agent: see recover()).
  Supervisor(const Clock& clock, ProcessLauncher& launcher, ReadinessProber& prober,
             std::string log_dir, std::string run_dir);
  ~Supervisor();  // leaves processes running: call stop_all() first to stop them
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Kills (SIGTERM, then SIGKILL after `timeout`) process groups recorded in
  // run_dir by an earlier agent that are still alive, so that no duplicate
  // remains when they are started again. Blocking, bounded; call once at start.
  void recover(std::chrono::milliseconds timeout);

  // The processes that should exist. New ones are started (in order), removed
  // ones are stopped, changed specs are restarted. Operator-stopped processes
  // stay stopped until start().
  void set_desired(std::vector<ProcessSpec> specs);

  // Operator commands; false when no such process is desired.
  bool start(const std::string& name);
  bool stop(const std::string& name);
  bool restart(const std::string& name);

  void tick();

  // Stop everything (reverse order). Call tick() until all_stopped(). Nothing
  // starts again, not even processes set_desired() adds later, until start().
  void stop_all();
  bool all_stopped() const;

  std::vector<ProcessStatus> status() const;  // in start order
  std::optional<ProcessStatus> status(const std::string& name) const;

 private:
  struct Proc;

  Proc* find(const std::string& name) const;
  void sort_procs();
  void on_exit(Proc& p, int status);
  void advance_timers(Proc& p);
  void run_stops();
  void settle();
  void run_launches();
  void launch(Proc& p);
  void fail_start(Proc& p, const std::string& why);
  void begin_stop(Proc& p);
  void rearm(Proc& p);
  void set_state(Proc& p, ProcState s, std::string message);
  std::string log_path(const std::string& name) const;
  std::string pid_path(const std::string& name) const;
  void write_pid_file(const Proc& p);

  const Clock& clock_;
  ProcessLauncher& launcher_;
  ReadinessProber& prober_;
  std::string log_dir_;
  std::string run_dir_;
  std::vector<std::unique_ptr<Proc>> procs_;  // sorted by (order, name): the start order
  // Set by stop_all(): processes added later are not started until start().
  bool stopping_all_ = false;
};

}  // namespace kato
