// AllocatePort: a port for a new app instance that is free on the whole host.
//
// Several DEAs may share one machine and apps bind 0.0.0.0, so a port unused
// by this DEA's own instances (`in_use`) is not enough: each candidate is also
// test-bound on 0.0.0.0 (and [::] where IPv6 exists) without SO_REUSEADDR,
// which fails if any socket holds the port on any address. The scan starts at
// a random point of the range so that DEAs allocating at once rarely race for
// the same port. Thread-safe.
#pragma once

#include <set>

#include "common/result.h"

namespace kato {

Result<int> AllocatePort(int range_lo, int range_hi, const std::set<int>& in_use);

}  // namespace kato
