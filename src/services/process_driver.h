// ProcessDriver: the part shared by the types that run a server process per
// instance (redis, memcached). Each instance has a directory ROOT/ID, owned
// by the server's user, mode 0700, holding its configuration (secrets in
// files of mode 0600/0400, never on a command line) and its data; and a
// process named KIND-ID on an InstanceHost, bound to the node's address and
// the record's port. Provision is kPending until the port answers; Remove
// stops the process, then deletes the directory.
#pragma once

#include <sys/types.h>

#include <string>

#include "services/instance_host.h"
#include "services/service_driver.h"

namespace kato {

struct ProcessDriverConfig {
  std::string root;    // DATA/services/instances/KIND
  std::string ip;      // the node's address, which the servers bind
  std::string binary;  // absolute path of redis-server or memcached
  std::string user;    // the server's user (redis, memcache): owns the instance's files
  std::string log_dir;  // where the InstanceHost keeps NAME.log (removed with the instance)
};

class ProcessDriver : public ServiceDriver {
 public:
  ProcessDriver(std::string kind, ProcessDriverConfig config, InstanceHost& host)
      : kind_(std::move(kind)), config_(std::move(config)), host_(host) {}

  Result<Progress> Provision(const ServiceRecord& s) override;
  Result<Progress> Remove(const ServiceRecord& s) override;
  void Sweep(const std::set<std::string>& live) override;

 protected:
  // The instance's files in `dir` (which exists): name -> content; each is
  // written with `mode` and owned by the server's user.
  struct File {
    std::string name, content;
    int mode = 0600;
  };
  virtual std::vector<File> Files(const ServiceRecord& s, const std::string& dir) const = 0;
  // Its process: argv, user; the name, readiness check, env and cwd are filled in.
  virtual ProcessSpec Spec(const ServiceRecord& s, const std::string& dir) const = 0;

  const ProcessDriverConfig& config() const { return config_; }

 private:
  std::string Dir(const std::string& id) const { return config_.root + "/" + id; }
  std::string Name(const std::string& id) const { return kind_ + "-" + id; }
  Status WriteFiles(const ServiceRecord& s, const std::string& dir);  // its directory and files
  // Stops KIND-ID and deletes its directory once the process is gone.
  Result<Progress> RemoveId(const std::string& id);

  std::string kind_;
  ProcessDriverConfig config_;
  InstanceHost& host_;
};

}  // namespace kato
