// `katod services`: the data roles' provisioning process (issue "Data
// services for apps"). On a node with any of postgresql, mysql, redis,
// memcached, rabbit it makes this node's "service/NAME" documents true on the
// servers (ServiceReconciler with one driver per type), after every cluster
// change (long poll on the revision) and every 3 s. Redis and memcached
// instances are servers of their own, supervised here (logs and pid files in
// DATA/services/instances/{logs,run}); this process is their subreaper, stops
// them when it stops, and replaces what an earlier run left behind.
#pragma once

#include <string>
#include <vector>

namespace kato {

class CommandRunner;

struct ServicesConfig {
  std::string data_dir;
  std::string ip;
  std::string version;
  std::vector<std::string> roles;  // the node's data roles: which drivers exist
};

// `runner` runs the servers' command-line clients (mariadb, rabbitmqctl).
int RunServices(const ServicesConfig& config, CommandRunner& runner);

}  // namespace kato
