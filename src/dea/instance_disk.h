// InstanceDisks: each instance's writable space is an ext4 image of its own
// size (`kato app push --disk MB`), so an app that fills it gets ENOSPC and
// the node's disk and data dir are untouched.
//
// The image is a sparse file in the instance's directory (it takes only the
// space written), formatted without a journal (an instance's files do not
// outlive it) and mounted nosuid,nodev over a loop device at
// MOUNT_ROOT/INSTANCE_ID. MOUNT_ROOT is under /run, which sandboxes never get:
// a mount under a directory that sandboxes bind (the data dir under /var)
// would be copied into every sandbox started later and kept busy there after
// the host unmounts it. The image holds home/ and tmp/ (the app user's) and
// app/, where the caller unpacks the droplet (root's, read-only in the sandbox).
//
// Commands (truncate is done here; mkfs.ext4, mount, umount) go through a
// CommandRunner. Not thread-safe per instance: the DEA serializes it.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/mounts.h"
#include "common/result.h"
#include "dea/command.h"

namespace kato {

constexpr int kMinDiskMb = 64;
constexpr int kMaxDiskMb = 1 << 20;

struct InstanceDisk {
  std::string image;  // the image file
  std::string mount;  // where it is mounted
  std::string app() const { return mount + "/app"; }
  std::string home() const { return mount + "/home"; }
  std::string tmp() const { return mount + "/tmp"; }
};

class InstanceDisks {
 public:
  InstanceDisks(CommandRunner& run, std::string mount_root);

  const std::string& mount_root() const { return mount_root_; }
  // Creates, formats and mounts the image; home/ and tmp/ belong to uid:gid.
  // On failure nothing is left mounted and the image is removed.
  Result<InstanceDisk> Create(const std::string& id, const std::string& image, int size_mb,
                              uid_t uid, gid_t gid);
  // Unmounts (lazily when busy) and deletes the image. Gone already is fine.
  Status Remove(const InstanceDisk& disk);
  // Unmounts whatever is mounted under the mount root (left by a run that was
  // killed); the images go with their instance directories.
  Status RemoveLeftovers();

 private:
  CommandRunner& run_;
  std::string mount_root_;
  std::string mkfs_, mount_, umount_;
};

}  // namespace kato
