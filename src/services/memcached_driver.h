// MemcachedDriver: a memcached per memcached instance, on the node's address
// and the record's port, with the plan's memory, no UDP, dropping root for
// the memcache user. It authenticates with memcached's ASCII authentication
// (-Y AUTHFILE, "USER:PASSWORD", readable by memcache only): until a client's
// first command is `set <any key> 0 0 <len>` with the data "USER PASSWORD",
// every command gets "CLIENT_ERROR unauthenticated" (the binary protocol gets
// no answer at all). pymemcache: Client(...).set("auth", "USER PASSWORD",
// noreply=False), then use the client as usual.
#pragma once

#include "services/process_driver.h"

namespace kato {

class MemcachedDriver final : public ProcessDriver {
 public:
  MemcachedDriver(ProcessDriverConfig config, InstanceHost& host)
      : ProcessDriver("memcached", std::move(config), host) {}

 protected:
  std::vector<File> Files(const ServiceRecord& s, const std::string& dir) const override;
  ProcessSpec Spec(const ServiceRecord& s, const std::string& dir) const override;
};

}  // namespace kato
