#include "common/limits.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace kato {

Result<uint64_t> RaiseOpenFilesLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return Err(std::string("cannot read the open-files limit: ") + std::strerror(errno));
  if (rl.rlim_cur != rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      return Err(std::string("cannot raise the open-files limit to ") +
                 std::to_string(rl.rlim_max) + ": " + std::strerror(errno));
  }
  return static_cast<uint64_t>(rl.rlim_cur);
}

}  // namespace kato
