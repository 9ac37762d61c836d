#include "services/memcached_driver.h"

#include "services/record_check.h"

namespace kato {

std::vector<ProcessDriver::File> MemcachedDriver::Files(const ServiceRecord& s,
                                                        const std::string&) const {
  return {{"auth", s.username + ":" + s.password + "\n", 0400}};
}

ProcessSpec MemcachedDriver::Spec(const ServiceRecord& s, const std::string& dir) const {
  ProcessSpec spec;
  // Started as root so that it can raise its limits; -u drops to the memcache user.
  spec.argv = {config().binary, "-l", config().ip, "-p", std::to_string(s.port), "-U", "0",
               "-u", config().user, "-m", std::to_string(InstanceMemoryMb(s)), "-Y", dir + "/auth"};
  return spec;
}

}  // namespace kato
