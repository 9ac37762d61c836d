// Stager: builds droplets from apps' source on this DEA (issue "Staging").
//
// The controller asks for a build with the store document "staging/APP"
// (ParseStagingDoc) naming this DEA. For each one the stager fetches the
// source archive (by SHA-256), unpacks it as the app user's into a disk image
// of its own, and runs the staging driver (buildpacks/stage) in the sandbox
// that app instances get (dea/sandbox.h: unprivileged, its own network
// namespace under the DEA's egress policy, a memory limit), with /app
// writable (the build dir), the app's build cache on this DEA at /cache and
// the buildpacks read-only at /buildpacks. The driver's output goes to the
// task's log (LogPath), which the agent serves while it grows. When the driver
// exits 0, the build dir is archived as the droplet and handed to `done` with
// the start command and buildpack the driver wrote; otherwise `done` gets the
// failure with the log's last lines. A build past its time limit or log size
// is killed and fails saying so; one whose document goes away is killed.
//
// Not thread-safe: the DEA calls it from its one loop.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"
#include "dea/cgroup.h"
#include "dea/command.h"
#include "dea/instance_disk.h"
#include "dea/instance_network.h"
#include "supervisor/launcher.h"

namespace kato {

struct StagingTask {
  std::string task_id;  // lowercase hex, unique per push
  std::string app;
  std::string source_sha256;  // the pushed archive
  std::string buildpack;      // push --buildpack; empty: detect
  std::string command;        // push --command; empty: the Procfile's or the buildpack's
  std::map<std::string, std::string> env;  // the app's variables (ENV_DIR)
  // The operator's buildpacks (name, archive SHA-256), detecting before the built-in ones.
  std::vector<std::pair<std::string, std::string>> custom_buildpacks;
  int disk_mb = 2048;
  bool operator==(const StagingTask&) const = default;
};

// The task of a "staging/APP" document when it names `node_id` and is still
// STAGING; nullopt when it is for another node or done; an error when it is
// malformed (names become paths and file names here).
Result<std::optional<StagingTask>> ParseStagingDoc(const std::string& text,
                                                   const std::string& node_id);

// The buildpacks that come with kato: BIN/../share/kato/buildpacks beside
// the running program (the build tree and an installed tree alike).
std::string BuiltinBuildpacksDir();

struct StagingOutcome {
  std::string task_id, app;
  bool ok = false;
  std::string message;       // a failure: why, then the log's last lines
  std::string droplet_path;  // ok: the droplet (.tar.gz), removed once `done` returns
  std::string command;       // ok: the start command ("" with no buildpack and a --command)
  std::string buildpack;     // ok: the buildpack that built it ("" when none)
};

struct StagerOptions {
  std::string root;                       // one directory per task: its log, its droplet
  std::string cache_root;                 // one build cache per app
  std::string buildpacks_dir;             // the built-in buildpacks (with `stage` and `order`)
  std::vector<std::string> hidden_paths;  // as for instances: at least the data dir
  uid_t uid = 65534;
  gid_t gid = 65534;
  int memory_mb = 1024;      // dea staging_memory_mb
  int timeout_s = 600;       // dea staging_timeout_s
  std::string npm_registry;  // dea npm_registry; empty: npm's default
  uint64_t max_log_bytes = 16u << 20;
  int port_lo = 0, port_hi = 0;  // where a build's (unused) port comes from
};

class Stager {
 public:
  struct Deps {
    InstanceNetwork& network;
    InstanceDisks& disks;
    ProcessLauncher& launcher;
    CgroupManager* cgroups;  // null: no limits (dea allow_unlimited)
    CommandRunner& run;      // tar
    // The local path of an archive by its SHA-256 (fetched from a controller).
    std::function<Result<std::string>(const std::string& sha256)> fetch;
    // Ports the DEA's instances hold.
    std::function<std::set<int>()> ports_in_use;
    std::function<void(const StagingOutcome&)> done;
  };
  Stager(Deps deps, StagerOptions options);
  ~Stager();

  // Limits from the dea settings; they apply to builds started afterwards.
  void SetLimits(int memory_mb, int timeout_s, const std::string& npm_registry);
  // Starts the wanted tasks that are not running (each task once), kills the
  // running ones no longer wanted and those past their limits.
  void Round(const std::vector<StagingTask>& wanted);
  // An exit the launcher reaped: true when it was a build's (then finished).
  bool OnExit(const ExitEvent& e);
  // Kills every build and removes what they set up (the DEA stops).
  void StopAll();
  // Removes what builds of an earlier run left (their disks are gone with the mounts).
  void RemoveLeftovers();
  std::set<int> ports() const;
  bool busy() const { return !jobs_.empty(); }

  static std::string LogPath(const std::string& root, const std::string& task_id);

 private:
  struct Job;
  void Start(const StagingTask& t);
  void Finish(Job& j, int status);
  void Kill(Job& j, const std::string& why);
  void Cleanup(Job& j);
  std::string Tail(const std::string& task_id) const;

  Deps d_;
  StagerOptions o_;
  std::map<std::string, std::unique_ptr<Job>> jobs_;  // by task id
  std::set<std::string> seen_;                        // tasks started by this run (each runs once)
};

}  // namespace kato
