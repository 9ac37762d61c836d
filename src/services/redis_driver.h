// RedisDriver: a redis-server per redis instance, run as the redis user, on
// the node's address and the record's port. Its configuration file (0600,
// owned by redis) holds the password (requirepass), the plan's memory
// (maxmemory, noeviction: a full instance refuses writes instead of
// dropping data) and its own data directory with the append-only file, so
// that its data survives restarts. Redis 7 refuses CONFIG SET of dir and
// the like (enable-protected-configs), so a client cannot move its files.
#pragma once

#include "services/process_driver.h"

namespace kato {

class RedisDriver final : public ProcessDriver {
 public:
  RedisDriver(ProcessDriverConfig config, InstanceHost& host)
      : ProcessDriver("redis", std::move(config), host) {}

 protected:
  std::vector<File> Files(const ServiceRecord& s, const std::string& dir) const override;
  ProcessSpec Spec(const ServiceRecord& s, const std::string& dir) const override;
};

}  // namespace kato
