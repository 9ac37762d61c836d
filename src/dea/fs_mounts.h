// FsMounts: a bound instance's filesystem services (issue "Data services for
// apps", filesystem role), mounted by the DEA with sshfs from the filesystem
// node's sshd (services/filesystem_driver.h) and bound into the sandbox at
// /app/fs/NAME.
//
// Per instance and service:
//   INSTANCE_DIR/fs-NAME.key, fs-NAME.known_hosts   root's, 0600: the account's
//       key and the node's published host key ("fs_host/NODE_ID"); checked
//       strictly, so a node that is not the one the cluster knows gets nothing
//   DISK/fs/NAME        the sshfs mount (DISK: the instance's disk mount, under
//       /run, which no sandbox sees); sshfs runs as the DEA's child in the
//       foreground (-f), so its exit is the DEA's to see
//   APP/fs/NAME         the empty, root-owned mount point in the droplet,
//       where bwrap binds DISK/fs/NAME writable
// While sshfs runs, a lost connection is reconnected (-o reconnect). When
// sshfs is gone the mount point holds an empty root-owned directory that the
// app cannot write: the DEA restarts the instance (run_dea.cc), it never
// writes to local disk in the service's place.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/result.h"
#include "dea/command.h"
#include "services/service_model.h"
#include "supervisor/launcher.h"
#include "supervisor/process_spec.h"

namespace kato {

class Store;

struct FsMount {
  std::string service;     // its name
  std::string host_dir;    // DISK/fs/NAME
  std::string sandbox_dir;  // /app/fs/NAME
  pid_t pid = 0;           // sshfs (0: exited, or never started)
};

struct SshfsInput {
  std::string sshfs;  // absolute path
  ServiceRecord service;
  FsHost host;
  std::string key_file, known_hosts_file, log_home, mount_point;
  uid_t uid = 65534;
  gid_t gid = 65534;
};

// sshfs's command line: foreground, strict host key checking against
// `known_hosts_file` only, the account's key only, no ssh config files,
// files owned by uid:gid, allow_other (the sandbox's user namespace),
// reconnecting with keepalives.
ProcessSpec SshfsSpec(const SshfsInput& in);

// "[IP]:PORT KEY" for ssh's known_hosts.
std::string KnownHostsLine(const FsHost& host);

class FsMounts {
 public:
  FsMounts(PosixLauncher& launcher, CommandRunner& run);

  // Mounts each filesystem service of `services` (others are skipped) for
  // one instance, appending to `mounted` as it goes (so that the caller's
  // cleanup undoes a half-done set). Waits for each mount, 20 s at most.
  Status Mount(const std::string& instance_dir, const std::string& disk_mount,
               const std::string& app_dir, const std::vector<ServiceRecord>& services,
               Store& store, uid_t uid, gid_t gid, std::vector<FsMount>& mounted);

  // Unmounts (lazily when busy) and stops sshfs. Gone already is fine.
  void Unmount(std::vector<FsMount>& mounts);

  // The first mount of `mounts` that is no longer a mount point in
  // `mountinfo` (its service name), or empty.
  static std::string Lost(const std::vector<FsMount>& mounts, const std::string& mountinfo);

 private:
  PosixLauncher& launcher_;
  CommandRunner& run_;
  std::string sshfs_, umount_;
};

}  // namespace kato
