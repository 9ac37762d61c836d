#include "dea/instance_disk.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "common/fs.h"

namespace kato {
InstanceDisks::InstanceDisks(CommandRunner& run, std::string mount_root)
    : run_(run),
      mount_root_(std::move(mount_root)),
      mkfs_(FindTool("mkfs.ext4")),
      mount_(FindTool("mount")),
      umount_(FindTool("umount")) {}

Result<InstanceDisk> InstanceDisks::Create(const std::string& id, const std::string& image,
                                           int size_mb, uid_t uid, gid_t gid) {
  if (size_mb < kMinDiskMb || size_mb > kMaxDiskMb)
    return Err("disk must be between " + std::to_string(kMinDiskMb) + " and " +
               std::to_string(kMaxDiskMb) + " MB");
  if (mkfs_.empty() || mount_.empty() || umount_.empty())
    return Err("instance disks need mkfs.ext4 (apt-get install e2fsprogs) and mount");
  if (id.empty() || id.find('/') != std::string::npos) return Err("bad instance id '" + id + "'");
  InstanceDisk d{image, mount_root_ + "/" + id};
  // The root must be searchable by app users: bwrap, running as them, binds from it.
  KATO_TRY(MakeDirs(mount_root_, 0755));
  ::chmod(mount_root_.c_str(), 0755);
  KATO_TRY(MakeDirs(d.mount, 0755));
  int fd = ::open(image.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Err("cannot create the disk image " + image + ": " + std::strerror(errno));
  int rc = ::ftruncate(fd, static_cast<off_t>(size_mb) << 20);
  int err = errno;
  ::close(fd);
  auto undo = [&](const std::string& why) -> Result<InstanceDisk> {
    (void)run_.Run({umount_, "-l", d.mount});
    ::unlink(image.c_str());
    ::rmdir(d.mount.c_str());
    return Err("cannot make the instance's disk: " + why);
  };
  if (rc != 0) return undo(std::string("cannot size the image: ") + std::strerror(err));
  if (auto r = run_.Run({mkfs_, "-q", "-F", "-m", "0", "-O", "^has_journal", "-E",
                         "nodiscard,root_owner=0:0", image});
      !r)
    return undo(r.error());
  if (auto r = run_.Run({mount_, "-o", "loop,nosuid,nodev", image, d.mount}); !r)
    return undo(r.error());
  struct Sub {
    std::string path;
    mode_t mode;
    bool app_owned;
  };
  for (const Sub& s : {Sub{d.home(), 0700, true}, Sub{d.tmp(), 01777, true}}) {
    if (::mkdir(s.path.c_str(), s.mode) != 0 && errno != EEXIST)
      return undo("cannot create " + s.path + ": " + std::strerror(errno));
    if (::chmod(s.path.c_str(), s.mode) != 0 ||
        (s.app_owned && ::chown(s.path.c_str(), uid, gid) != 0))
      return undo("cannot set the owner of " + s.path + ": " + std::strerror(errno));
  }
  return d;
}

Status InstanceDisks::Remove(const InstanceDisk& disk) {
  Status out = Ok();
  if (!disk.mount.empty()) {
    auto info = ReadFile("/proc/self/mountinfo");
    bool mounted = info && std::string(*info).find(" " + disk.mount + " ") != std::string::npos;
    if (mounted) {
      if (auto r = run_.Run({umount_, disk.mount}); !r) {
        // Busy: detach it now; the kernel frees it when the last user goes.
        if (auto l = run_.Run({umount_, "-l", disk.mount}); !l) out = Err(l.error());
      }
    }
    ::rmdir(disk.mount.c_str());
  }
  if (!disk.image.empty() && ::unlink(disk.image.c_str()) != 0 && errno != ENOENT)
    out = Err("cannot remove " + disk.image + ": " + std::strerror(errno));
  return out;
}

Status InstanceDisks::RemoveLeftovers() {
  auto info = ReadFile("/proc/self/mountinfo");
  if (!info) return Err(info.error());
  for (const auto& m : MountsUnder(*info, mount_root_)) {
    if (auto r = run_.Run({umount_, "-l", m}); !r) return Err(r.error());
    ::rmdir(m.c_str());
  }
  return Ok();
}

}  // namespace kato
