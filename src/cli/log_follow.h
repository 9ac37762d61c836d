// LogFollower: what `kato app logs --follow` prints of each answer. An
// instance's log rotates, so lines cannot be counted; the DEA says instead
// where the returned text ends in everything the instance ever wrote
// (`end_offset`, common/log_tail.h), and the follower prints only what lies
// past what it printed before. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace kato {

class LogFollower {
 public:
  // The part of `text` (which ends at `end_offset`) not printed yet for
  // `instance`; remembers that everything up to `end_offset` is printed.
  std::string Unseen(const std::string& instance, uint64_t end_offset, const std::string& text);

 private:
  std::map<std::string, uint64_t> printed_;  // instance id -> end_offset printed up to
};

}  // namespace kato
