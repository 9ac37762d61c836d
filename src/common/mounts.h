// Reading /proc/self/mountinfo: which paths are mount points (instance
// disks, filesystem services' images and their sshfs mounts).
#pragma once

#include <string>
#include <vector>

namespace kato {

// The mount points under `root` listed in a mountinfo text, deepest first
// (the order to unmount them in).
std::vector<std::string> MountsUnder(const std::string& mountinfo, const std::string& root);

// Whether `path` is a mount point in a mountinfo text.
bool IsMountPoint(const std::string& mountinfo, const std::string& path);

// IsMountPoint on this process's /proc/self/mountinfo (false when unreadable).
bool IsMounted(const std::string& path);

}  // namespace kato
