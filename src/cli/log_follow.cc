#include "cli/log_follow.h"

#include <algorithm>

namespace kato {

std::string LogFollower::Unseen(const std::string& instance, uint64_t end_offset,
                                const std::string& text) {
  auto it = printed_.find(instance);
  uint64_t start = end_offset >= text.size() ? end_offset - text.size() : 0;
  std::string out = text;
  if (it != printed_.end() && it->second > start)
    out = text.substr(static_cast<size_t>(std::min<uint64_t>(it->second - start, text.size())));
  printed_[instance] = end_offset;
  return out;
}

}  // namespace kato
