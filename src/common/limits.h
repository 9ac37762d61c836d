// Process limits that a server sets for itself at start.
#pragma once

#include <cstdint>

#include "common/result.h"

namespace kato {

// Raises the soft RLIMIT_NOFILE to the hard limit (the default soft limit,
// 1024, is too low for a router or a busy agent). Children started
// afterwards inherit it: katod calls this before its supervisor starts
// anything. Returns the soft limit now in force.
Result<uint64_t> RaiseOpenFilesLimit();

}  // namespace kato
