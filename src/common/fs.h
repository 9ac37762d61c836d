// File helpers. Writes that must survive a crash go through WriteFileAtomic:
// a temporary file, fsync, rename, fsync of the directory.
#pragma once

#include <string>

#include "common/result.h"

namespace kato {

Result<std::string> ReadFile(const std::string& path);
Status WriteFileAtomic(const std::string& path, const std::string& data, int mode = 0600);
Status MakeDirs(const std::string& path, int mode = 0755);
bool PathExists(const std::string& path);
// The absolute form of `path` (relative to the working directory); no symlink resolution.
std::string AbsolutePath(const std::string& path);
// The directory of the running executable (from /proc/self/exe).
std::string SelfExeDir();

}  // namespace kato
