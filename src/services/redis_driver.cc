#include "services/redis_driver.h"

#include "services/record_check.h"

namespace kato {

std::vector<ProcessDriver::File> RedisDriver::Files(const ServiceRecord& s,
                                                    const std::string& dir) const {
  std::string conf;
  conf += "bind " + config().ip + "\n";
  conf += "port " + std::to_string(s.port) + "\n";
  conf += "protected-mode yes\n";
  conf += "requirepass " + s.password + "\n";
  conf += "maxmemory " + std::to_string(InstanceMemoryMb(s)) + "mb\n";
  conf += "maxmemory-policy noeviction\n";
  conf += "dir " + dir + "\n";
  conf += "appendonly yes\n";
  conf += "daemonize no\n";
  conf += "logfile \"\"\n";  // stdout: the process's log
  return {{"redis.conf", conf, 0600}};
}

ProcessSpec RedisDriver::Spec(const ServiceRecord&, const std::string& dir) const {
  ProcessSpec spec;
  spec.argv = {config().binary, dir + "/redis.conf"};
  spec.user = config().user;
  return spec;
}

}  // namespace kato
