// NginxProcess: one nginx master run by a kato role process (`katod lb`, and
// harbor's stream proxy), from a configuration file it checks before use.
//
// - Write(text): writes CONF.next, has `nginx -t` check it, renames it over
//   CONF; a refused file leaves the running configuration alone.
// - Start(): nginx in its own process group (SIGTERM to the role's group must
//   not reach it; it stops gracefully on SIGQUIT), dying with its parent.
// - Reload(): SIGHUP, then waits (bounded) for workers of the new
//   configuration; old workers finish their connections.
// - KillStale(): an nginx left by an earlier run that died without stopping
//   it still holds the ports: its process group (from the pid file) is killed,
//   nginx processes only, so a reused pid is harmless.
// - RotateLogs(): past 64 MiB a log becomes NAME.1 and nginx reopens its files.
// Single-threaded: the role's main loop calls it.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace kato {

struct NginxFiles {
  std::string nginx;     // the binary
  std::string prefix;    // nginx -p (relative paths in the configuration)
  std::string conf;      // the configuration it runs
  std::string pid_file;  // as the configuration's `pid` says
  std::string log_dir;   // access.log, error.log (rotated)
  std::string tag;       // log prefix: "lb", "harbor"
};

// The message of nginx's first error line ("2026/01/02 03:04:05 [emerg] 12#12: MESSAGE").
std::string NginxError(const std::string& output);

// What `katod lb` and `katod harbor` do first: block SIGTERM, SIGINT and
// SIGCHLD (their loops wait for them with sigtimedwait) and find nginx when
// `nginx` is empty (an error with `install_hint` when it is not installed).
struct NginxRole {
  sigset_t signals;
  std::string nginx;
};
Result<NginxRole> PrepareNginxRole(const std::string& nginx, const std::string& install_hint);

class NginxProcess {
 public:
  explicit NginxProcess(NginxFiles files) : f_(std::move(files)) {}
  ~NginxProcess() { Stop(Millis(12000)); }
  NginxProcess(const NginxProcess&) = delete;
  NginxProcess& operator=(const NginxProcess&) = delete;

  Status Write(const std::string& conf_text);
  void KillStale();
  Status Start();
  // When nginx has exited: how ("status 1", "signal 9"); its workers are killed.
  std::optional<std::string> Exited();
  void Reload();
  void RotateLogs();
  // SIGQUIT, then SIGKILL of its group after `grace`.
  void Stop(Millis grace);
  pid_t pid() const { return pid_; }

 private:
  std::vector<std::string> Args(const std::string& conf, bool test) const;
  std::optional<std::set<std::string>> Workers() const;

  NginxFiles f_;
  pid_t pid_ = 0;
  std::chrono::steady_clock::time_point next_rotate_check_{};
};

}  // namespace kato
