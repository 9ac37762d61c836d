#include "supervisor/supervisor.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <thread>

#include "common/fs.h"

namespace kato {

using std::chrono::milliseconds;

namespace {

constexpr milliseconds kMaxBackoff{30000};
constexpr milliseconds kBackoffResetAfter{60000};

// 1 s, 2 s, 4 s … capped at 30 s, for the n-th consecutive failure (n from 0).
milliseconds Backoff(int n) {
  if (n >= 5) return kMaxBackoff;
  return std::min(kMaxBackoff, milliseconds(1000LL << std::max(n, 0)));
}

std::string FormatDuration(milliseconds d) {
  long long ms = d.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  if (ms > 1000) {
    std::ostringstream s;
    s.precision(1);
    s << std::fixed << static_cast<double>(ms) / 1000.0 << "s";
    return s.str();
  }
  return std::to_string(ms) + "ms";
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    std::string s = "killed by signal " + std::to_string(sig);
    if (const char* abbrev = ::sigabbrev_np(sig)) s += std::string(" (SIG") + abbrev + ")";
    if (WCOREDUMP(status)) s += ", core dumped";
    return s;
  }
  return "ended with wait status " + std::to_string(status);
}

std::string Address(const ReadinessCheck& c) { return c.host + ":" + std::to_string(c.port); }

// Names become file names in log_dir and run_dir.
bool ValidName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

}  // namespace

const char* ToString(ProcState s) {
  switch (s) {
    case ProcState::kStopped:
      return "STOPPED";
    case ProcState::kStarting:
      return "STARTING";
    case ProcState::kRunning:
      return "RUNNING";
    case ProcState::kBackoff:
      return "BACKOFF";
    case ProcState::kStopping:
      return "STOPPING";
    case ProcState::kExited:
      return "EXITED";
    case ProcState::kFatal:
      return "FATAL";
  }
  return "UNKNOWN";
}

struct Supervisor::Proc {
  ProcessSpec spec;
  ProcState state = ProcState::kStopped;
  pid_t pid = 0;  // nonzero from launch until the exit is reaped, whatever the state
  std::string message;
  int64_t since_ms = 0;

  bool wanted = true;                    // false after an operator stop (or stop_all)
  bool removed = false;                  // no longer desired: stop, then forget
  bool restart = false;                  // stop, then start again (restart(), or a changed spec)
  std::optional<ProcessSpec> next_spec;  // applied once stopped

  int failed_starts = 0;  // consecutive; FATAL at spec.start_retries
  int crashes = 0;        // exits from RUNNING since the back-off was last reset
  bool sigkilled = false;
  SteadyTime started_at{};
  SteadyTime running_since{};
  SteadyTime retry_at{};
  SteadyTime kill_at{};

  // Must leave (or stay out of) the running states.
  bool must_stop() const { return !wanted || removed || restart; }
  // A wanted process that has not got through its start yet: higher orders wait.
  bool holds_back_start() const {
    return wanted && !removed &&
           (state == ProcState::kStarting || state == ProcState::kStopped ||
            state == ProcState::kStopping);
  }
};

Supervisor::Supervisor(const Clock& clock, ProcessLauncher& launcher, ReadinessProber& prober,
                       std::string log_dir, std::string run_dir)
    : clock_(clock),
      launcher_(launcher),
      prober_(prober),
      log_dir_(std::move(log_dir)),
      run_dir_(std::move(run_dir)) {}

Supervisor::~Supervisor() = default;

std::string Supervisor::log_path(const std::string& name) const {
  return log_dir_ + "/" + name + ".log";
}

std::string Supervisor::pid_path(const std::string& name) const {
  return run_dir_ + "/" + name + ".pid";
}

Supervisor::Proc* Supervisor::find(const std::string& name) const {
  for (const auto& p : procs_) {
    if (p->spec.name == name) return p.get();
  }
  return nullptr;
}

void Supervisor::sort_procs() {
  std::stable_sort(procs_.begin(), procs_.end(), [](const auto& a, const auto& b) {
    if (a->spec.order != b->spec.order) return a->spec.order < b->spec.order;
    return a->spec.name < b->spec.name;
  });
}

void Supervisor::set_state(Proc& p, ProcState s, std::string message) {
  if (p.state != s) {
    p.since_ms = clock_.wall_ms();
    spdlog::info("{}: {} -> {}{}{}", p.spec.name, ToString(p.state), ToString(s),
                 message.empty() ? "" : ": ", message);
  }
  p.state = s;
  p.message = std::move(message);
}

// ---- pid files and recovery ----

void Supervisor::write_pid_file(const Proc& p) {
  // Without the start time a reused pid could not be told apart (fake pids in tests
  // have none); recover() then leaves the process alone. (fmt rather than string
  // concatenation: g++ 12 -O3 reports a false -Wrestrict on the latter.)
  auto start = ProcessStartTime(p.pid);
  std::string content = start ? fmt::format("{} {}\n", p.pid, *start) : fmt::format("{}\n", p.pid);
  Status s = MakeDirs(run_dir_, 0755);
  if (s) s = WriteFileAtomic(pid_path(p.spec.name), content, 0644);
  if (!s)
    spdlog::warn("{}: {}; a restarted agent will not find this process", p.spec.name, s.error());
}

void Supervisor::recover(milliseconds timeout) {
  namespace fs = std::filesystem;
  std::vector<pid_t> victims;
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::directory_iterator it(run_dir_, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".pid") files.push_back(it->path());
  }
  for (const fs::path& file : files) {
    auto content = ReadFile(file.string());
    long long pid = 0;
    unsigned long long start = 0;
    bool has_start = false;
    if (content) {
      std::istringstream in(*content);
      in >> pid;
      has_start = static_cast<bool>(in >> start);
    }
    if (pid > 1 && has_start && ProcessAlive(static_cast<pid_t>(pid)) &&
        ProcessStartTime(static_cast<pid_t>(pid)) == start) {
      spdlog::info("stopping {} (pid {}) left running by an earlier agent", file.stem().string(),
                   pid);
      launcher_.kill_group(static_cast<pid_t>(pid), SIGTERM);
      victims.push_back(static_cast<pid_t>(pid));
    }
    std::error_code rm;
    fs::remove(file, rm);
  }
  // The one place that waits in real time: it runs once, before anything starts.
  auto wait_dead = [&](milliseconds bound) {
    auto deadline = std::chrono::steady_clock::now() + bound;
    for (;;) {
      std::erase_if(victims, [](pid_t pid) { return !ProcessAlive(pid); });
      if (victims.empty() || std::chrono::steady_clock::now() >= deadline) return;
      std::this_thread::sleep_for(milliseconds(20));
    }
  };
  wait_dead(timeout);
  for (pid_t pid : victims) {
    spdlog::warn("pid {} did not stop within {} of SIGTERM; killing its group", pid,
                 FormatDuration(timeout));
    launcher_.kill_group(pid, SIGKILL);
  }
  wait_dead(milliseconds(1000));
}

// ---- desired state and operator commands ----

void Supervisor::set_desired(std::vector<ProcessSpec> specs) {
  std::map<std::string, ProcessSpec> desired;
  for (auto& s : specs) {
    KATO_CHECK(ValidName(s.name));
    desired[s.name] = std::move(s);  // the last spec of a name wins
  }
  for (auto& p : procs_) {
    auto it = desired.find(p->spec.name);
    if (it == desired.end()) {
      p->removed = true;
      continue;
    }
    p->removed = false;
    if (it->second != (p->next_spec ? *p->next_spec : p->spec)) {
      if (p->pid != 0) {
        p->next_spec = std::move(it->second);
        p->restart = true;
      } else {
        p->spec = std::move(it->second);
        p->next_spec.reset();
        rearm(*p);  // a new spec deserves fresh retries, even after FATAL
      }
    }
    desired.erase(it);
  }
  for (auto& [name, spec] : desired) {
    auto p = std::make_unique<Proc>();
    p->spec = std::move(spec);
    p->wanted = !stopping_all_;
    p->since_ms = clock_.wall_ms();
    procs_.push_back(std::move(p));
  }
  sort_procs();
}

// Makes a process that is down (or about to be) start at the next tick, with
// its failure counts cleared.
void Supervisor::rearm(Proc& p) {
  p.failed_starts = 0;
  p.crashes = 0;
  p.retry_at = clock_.now();
  bool down = p.state == ProcState::kBackoff || p.state == ProcState::kExited ||
              p.state == ProcState::kFatal;
  if (!down) return;
  if (p.pid == 0) {
    set_state(p, ProcState::kStopped, "");
  } else {
    // Killed after a start timeout but not reaped yet: retried once it is.
    set_state(p, ProcState::kBackoff, "waiting for the previous process to exit");
  }
}

bool Supervisor::start(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->removed) return false;
  stopping_all_ = false;
  p->wanted = true;
  rearm(*p);
  return true;
}

bool Supervisor::stop(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->removed) return false;
  p->wanted = false;
  return true;
}

bool Supervisor::restart(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->removed) return false;
  stopping_all_ = false;
  p->wanted = true;
  if (p->pid != 0) {
    p->restart = true;
  } else {
    rearm(*p);
  }
  return true;
}

void Supervisor::stop_all() {
  stopping_all_ = true;
  for (auto& p : procs_) p->wanted = false;
}

bool Supervisor::all_stopped() const {
  return std::all_of(procs_.begin(), procs_.end(), [](const auto& p) {
    return p->pid == 0 && (p->state == ProcState::kStopped || p->state == ProcState::kFatal);
  });
}

// ---- the state machine ----

void Supervisor::tick() {
  for (const ExitEvent& e : launcher_.reap()) {
    auto it =
        std::find_if(procs_.begin(), procs_.end(), [&](const auto& p) { return p->pid == e.pid; });
    // Other pids are orphaned descendants re-parented to us (see BecomeChildSubreaper).
    if (it != procs_.end()) on_exit(**it, e.status);
  }
  for (auto& p : procs_) advance_timers(*p);
  run_stops();
  settle();
  run_launches();
}

void Supervisor::on_exit(Proc& p, int status) {
  pid_t pgid = p.pid;
  p.pid = 0;
  if (::unlink(pid_path(p.spec.name).c_str()) != 0 && errno != ENOENT) {
    spdlog::warn("{}: cannot remove {}: {}", p.spec.name, pid_path(p.spec.name),
                 std::strerror(errno));
  }
  // Whatever the leader left behind in its group would outlive it, hold its port
  // and collide with the next start.
  launcher_.kill_group(pgid, SIGKILL);

  SteadyTime now = clock_.now();
  std::string why = DescribeExit(status);
  switch (p.state) {
    case ProcState::kStarting:
      fail_start(p, why);
      break;
    case ProcState::kRunning: {
      if (now - p.running_since >= kBackoffResetAfter) p.crashes = 0;
      milliseconds delay = Backoff(p.crashes++);
      p.retry_at = now + delay;
      set_state(p, ProcState::kExited, why + "; restarting in " + FormatDuration(delay));
      break;
    }
    case ProcState::kStopping:
      set_state(p, ProcState::kStopped,
                p.sigkilled
                    ? "killed after not stopping within " + FormatDuration(p.spec.stop_timeout) +
                          " of signal " + std::to_string(p.spec.stop_signal)
                    : "stopped");
      break;
    default:  // BACKOFF or FATAL after a start timeout killed it: already accounted for
      break;
  }
}

void Supervisor::advance_timers(Proc& p) {
  SteadyTime now = clock_.now();
  if (p.state == ProcState::kStarting) {
    auto alive_for = now - p.started_at;
    if (p.spec.ready) {
      if (prober_.ready(*p.spec.ready)) {
        p.failed_starts = 0;
        p.running_since = now;
        set_state(p, ProcState::kRunning, "");
      } else if (alive_for >= p.spec.start_timeout) {
        launcher_.kill_group(p.pid, SIGKILL);
        fail_start(p, "not ready on " + Address(*p.spec.ready) + " after " +
                          FormatDuration(p.spec.start_timeout));
      }
    } else if (alive_for >= p.spec.start_secs) {
      p.failed_starts = 0;
      p.running_since = now;
      set_state(p, ProcState::kRunning, "");
    }
  } else if (p.state == ProcState::kStopping && !p.sigkilled && now >= p.kill_at) {
    launcher_.kill_group(p.pid, SIGKILL);
    p.sigkilled = true;
  }
}

void Supervisor::fail_start(Proc& p, const std::string& why) {
  ++p.failed_starts;
  if (p.failed_starts >= p.spec.start_retries) {
    set_state(p, ProcState::kFatal,
              why + "; gave up after " + std::to_string(p.failed_starts) +
                  " failed starts in a row (kato start " + p.spec.name + " to retry)");
    return;
  }
  milliseconds delay = Backoff(p.failed_starts - 1);
  p.retry_at = clock_.now() + delay;
  set_state(p, ProcState::kBackoff, why + "; retrying in " + FormatDuration(delay));
}

// Reverse order: a live process is signalled only once every higher-order
// process that is also being stopped has exited.
void Supervisor::run_stops() {
  for (auto it = procs_.rbegin(); it != procs_.rend(); ++it) {
    Proc& p = **it;
    if (!p.must_stop() || p.state == ProcState::kStopping) continue;
    if (p.pid == 0) {
      if (p.state == ProcState::kBackoff || p.state == ProcState::kExited) {
        set_state(p, ProcState::kStopped, "stopped");
      }
      continue;
    }
    bool waiting = std::any_of(procs_.begin(), procs_.end(), [&](const auto& q) {
      return q->spec.order > p.spec.order && q->must_stop() && q->pid != 0;
    });
    if (!waiting) begin_stop(p);
  }
}

void Supervisor::begin_stop(Proc& p) {
  launcher_.kill_group(p.pid, p.spec.stop_signal);
  p.sigkilled = false;
  p.kill_at = clock_.now() + p.spec.stop_timeout;
  set_state(p, ProcState::kStopping, "sent signal " + std::to_string(p.spec.stop_signal));
}

// Processes that are down: removed ones are forgotten, restarts take their new spec.
void Supervisor::settle() {
  std::erase_if(procs_, [](const auto& p) {
    return p->removed && p->pid == 0 &&
           (p->state == ProcState::kStopped || p->state == ProcState::kFatal);
  });
  for (auto& p : procs_) {
    if (!p->restart || p->pid != 0) continue;
    p->restart = false;
    if (p->next_spec) {
      p->spec = std::move(*p->next_spec);
      p->next_spec.reset();
    }
    rearm(*p);
  }
  sort_procs();  // a new spec may have a new order
}

void Supervisor::run_launches() {
  SteadyTime now = clock_.now();
  for (auto& pp : procs_) {
    Proc& p = *pp;
    if (p.must_stop() || p.pid != 0) continue;
    bool due =
        p.state == ProcState::kStopped ||
        ((p.state == ProcState::kBackoff || p.state == ProcState::kExited) && now >= p.retry_at);
    if (!due) continue;
    bool held = std::any_of(procs_.begin(), procs_.end(), [&](const auto& q) {
      return q->spec.order < p.spec.order && q->holds_back_start();
    });
    if (!held) launch(p);
  }
}

void Supervisor::launch(Proc& p) {
  auto pid = launcher_.launch(p.spec, log_path(p.spec.name));
  if (!pid) {
    fail_start(p, pid.error());
    return;
  }
  p.pid = *pid;
  p.started_at = clock_.now();
  write_pid_file(p);
  set_state(p, ProcState::kStarting,
            p.spec.ready ? "waiting for " + Address(*p.spec.ready) : std::string());
}

// ---- status ----

std::vector<ProcessStatus> Supervisor::status() const {
  std::vector<ProcessStatus> out;
  for (const auto& p : procs_) out.push_back(*status(p->spec.name));
  return out;
}

std::optional<ProcessStatus> Supervisor::status(const std::string& name) const {
  const Proc* p = find(name);
  if (p == nullptr) return std::nullopt;
  return ProcessStatus{p->spec.name,           p->state,   p->pid,
                       log_path(p->spec.name), p->message, p->since_ms};
}

}  // namespace kato
