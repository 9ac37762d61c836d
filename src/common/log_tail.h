// Reading the end of a rotating log without reading whole files.
//
// A log PATH rotates to PATH.1 (one older file kept) and records in
// PATH.offset the number of bytes that rotations have moved out of PATH, so
// that offset + size(PATH) counts every byte ever written: a follower asks
// again and prints only what lies past the end it saw (`end_offset`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/result.h"

namespace kato {

struct LogTail {
  std::string text;         // the last lines, whole lines (a partial last line included)
  uint64_t end_offset = 0;  // bytes ever written to the log, up to the end of `text`
};

// The last `lines` lines of PATH (continuing into PATH.1 when PATH has fewer),
// reading at most `max_bytes` from the end. A missing PATH is an error.
Result<LogTail> TailLog(const std::string& path, int lines, size_t max_bytes = 1u << 20);

}  // namespace kato
