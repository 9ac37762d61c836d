// InstanceSpec: how one app instance is started in its sandbox.
//
// The command line, run by the supervisor's launcher as root with a fixed,
// minimal environment (nothing the user controls reaches a privileged step):
//   1. /bin/sh joins the instance's cgroups (writes its own pid to each of
//      `cgroup_procs_files`), opens the sandbox's argument file (root's, in the
//      instance dir) on fd 3 and execs step 2, so that the cgroup holds the
//      sandbox before any app code runs and every descendant inherits it;
//   2. nsenter enters the instance's network namespace (`netns_path`; without
//      one the host's network is shared);
//   3. prlimit sets the open-files limit and disables core dumps;
//   4. setpriv drops to the app's uid/gid (no supplementary groups, no new
//      privileges);
//   5. bwrap, now unprivileged, reads its arguments from fd 3 (so that the
//      app's environment never appears on a command line) and makes a user
//      namespace mapping only the app's uid/gid, in which further user
//      namespaces are disabled, plus its own PID, IPC, UTS and mount
//      namespaces: a tmpfs root holding the host's system directories
//      read-only, private /run and /home, fresh /proc and /dev,
//      `hidden_paths` covered by empty tmpfs (or /dev/null for a file such as
//      a socket), the droplet read-only at /app, the instance's home writable
//      at /home/app and its tmp (or a small tmpfs) at /tmp. Only there, in
//      its last exec (/bin/sh -c COMMAND, as the app's user), does the app's
//      environment apply: `--clearenv` then one `--setenv` per variable.
// bwrap runs after dropping privileges because as root without a user
// namespace it cannot switch uid, and with one the app's uid would map to root
// outside. The app user must therefore be able to reach `app_dir`, `home_dir`
// and `tmp_dir` (search permission on each directory above them):
// InstanceSpec checks this and says what to fix.
//
// Stopping: signalling the launcher's process group reaches bwrap only (the
// app is in its own session); bwrap dies and the kernel SIGKILLs the rest of
// the PID namespace at once. For a graceful stop use SignalInstance first.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "common/result.h"
#include "dea/cgroup.h"
#include "supervisor/process_spec.h"

namespace kato {

struct InstanceConfig {
  std::string instance_id;  // unique on the host; names the process and the cgroup
  std::string app_name;
  int instance_index = 0;
  std::vector<std::string> uris;           // e.g. "myapp.example.com"
  std::string app_dir;                     // the unpacked droplet, read-only at /app
  std::string home_dir;                    // writable, at /home/app (HOME)
  std::string tmp_dir;                     // writable, at /tmp; empty: a small tmpfs
  std::string netns_path;                  // the network namespace; empty: the host's
  // Host directories bound writable into the sandbox, at paths under /app
  // (the instance's filesystem services: host dir, "/app/fs/NAME"); each
  // sandbox path must exist as a directory in app_dir.
  std::vector<std::pair<std::string, std::string>> binds;
  // Staging (dea/stager.h): the build dir at /app is writable, the app's
  // build cache is bound writable at /cache and the buildpacks read-only at
  // /buildpacks (each when set).
  bool app_writable = false;
  std::string cache_dir;
  std::string buildpacks_dir;
  std::string probe_host = "127.0.0.1";    // where the DEA checks the port from the host
  std::string command;                     // run by /bin/sh -c in /app
  std::map<std::string, std::string> env;  // the user's; PORT and VCAP_* always win
  int port = 0;
  int memory_mb = 256;
  int cpu_shares = 1024;
  int pids_max = 1024;
  int open_files = 4096;  // RLIMIT_NOFILE, soft and hard
  uid_t uid = 65534;  // nobody
  gid_t gid = 65534;  // nogroup
  // Host paths the app must not see: at least the node's data dir (which holds
  // the agent socket and the other instances' directories).
  std::vector<std::string> hidden_paths;
  // From CgroupManager::ProcsFiles; empty runs without cgroups.
  std::vector<std::string> cgroup_procs_files;
  std::string bwrap = "/usr/bin/bwrap";
  std::string setpriv = "/usr/bin/setpriv";
  std::string nsenter = "/usr/bin/nsenter";
  std::string prlimit = "/usr/bin/prlimit";
};

// Where things are inside the sandbox.
inline constexpr const char* kSandboxAppDir = "/app";
inline constexpr const char* kSandboxHomeDir = "/home/app";
inline constexpr const char* kSandboxCacheDir = "/cache";
inline constexpr const char* kSandboxBuildpacksDir = "/buildpacks";

struct InstanceLaunch {
  ProcessSpec spec;
  // bwrap's arguments, NUL-separated: the caller writes them to `args_path`
  // (mode 0600, root's) before launching `spec`.
  std::string sandbox_args;
};

// `args_path`: where the caller keeps the sandbox's argument file.
Result<InstanceLaunch> InstanceSpec(const InstanceConfig& c, const std::string& args_path);

// Writes InstanceLaunch::sandbox_args where the spec expects them.
Status WriteSandboxArgs(const std::string& args_path, const std::string& sandbox_args);

// The cgroup limits the config asks for.
CgroupLimits InstanceLimits(const InstanceConfig& c);

// Sends `sig` to the instance's app processes: every process in its cgroup but
// `sandbox_pid` (bwrap, the pid the launcher returned), whose death would take
// the PID namespace down before the app could finish. bwrap's init inside the
// namespace ignores signals from outside it, and exits with the app's status
// once the app exits. Processes that are gone already are skipped.
void SignalInstance(const CgroupManager& cgroups, const std::string& id, pid_t sandbox_pid,
                    int sig);

}  // namespace kato
