// UnpackArchive: stages an app's bits (.tar.gz or plain .tar, told apart by
// content) into a fresh directory, treating the archive as hostile.
//
// Contract: `dest_dir` must not exist; its parent must. The archive is unpacked
// into a temporary directory beside `dest_dir` that is renamed to `dest_dir`
// only when every entry was accepted, so a refused archive leaves nothing
// behind. Refused: absolute paths, `..` components, paths deeper than
// `max_depth`, device/fifo/socket entries, symlinks whose target is absolute or
// could resolve outside the tree, hardlinks to anything but a regular file
// already unpacked, duplicate entries, and archives over the limits (bytes are
// counted as written, not as the headers claim). setuid/setgid/sticky bits are
// dropped. Nothing is ever written through a symlink: every directory on an
// entry's path is opened with O_NOFOLLOW relative to the staging directory.
//
// libarchive does the parsing (its read side); writing goes through *at()
// syscalls on directory descriptors rather than archive_write_disk, whose
// relative paths depend on the process-wide working directory (katod is
// multi-threaded). Thread-safe: calls share no state.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/result.h"

namespace kato {

struct UnpackLimits {
  int64_t max_entries = 100'000;
  int64_t max_file_bytes = int64_t{1} << 30;   // 1 GiB
  int64_t max_total_bytes = int64_t{2} << 30;  // 2 GiB, all files together
  int max_depth = 64;                          // path components of one entry
};

// Who owns the unpacked files (the app user). Needs root.
struct FileOwner {
  uid_t uid = 0;
  gid_t gid = 0;
};

Status UnpackArchive(const std::string& archive_path, const std::string& dest_dir,
                     const UnpackLimits& limits, std::optional<FileOwner> owner = std::nullopt);

}  // namespace kato
