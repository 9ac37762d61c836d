// Harbor's stream proxy: which ports the harbor node opens and where they
// lead (from the cluster's documents), and the nginx configuration for that
// (Debian's libnginx-mod-stream). Pure functions, tested without nginx.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/result.h"
#include "services/service_model.h"
#include "store/store.h"

namespace kato {

struct HarborBackend {
  std::string ip;  // a DEA's address
  int port = 0;    // the instance's harbor port there (DNATed to its HARBOR_PORT)
  bool operator==(const HarborBackend&) const = default;
};

struct HarborListener {
  std::string service;  // its name (for logs and the state file)
  std::string id;       // the service's id: names its upstream
  int port = 0;         // public, on the harbor node's address
  std::string protocol = "tcp";
  std::vector<HarborBackend> backends;  // RUNNING instances of the bound apps, sorted
  bool operator==(const HarborListener&) const = default;
};

// The listeners of the harbor node `node_id`: its ACTIVE harbor services,
// each with the RUNNING instances of its bound apps as the DEAs report them
// ("instances/NODE_ID" documents: {"instances": [{"app", "state", "harbor":
// [{"service", "port", "protocol"}]}]}), at their DEA's address. Sorted by port.
std::vector<HarborListener> HarborListeners(
    const std::string& node_id, const std::vector<ServiceRecord>& services,
    const std::vector<std::pair<std::string, std::string>>& instance_reports,
    const std::vector<NodeRecord>& nodes);

struct HarborConfigInput {
  std::string listen_ip;    // the harbor node's address
  std::string module_path;  // ngx_stream_module.so
  std::string run_dir;      // the pid file
  std::string log_dir;      // error.log
  std::string user;         // worker user and group, or empty
  std::vector<HarborListener> listeners;
};

// nginx.conf: one stream server per listener (TCP, or UDP with `udp`),
// round robin over its backends with passive health checks (a backend that
// fails is skipped for a few seconds; a failed connect moves on to the next),
// or, with no backend, a listener whose connections fail at once. An error
// names a field that cannot go into the file.
Result<std::string> HarborNginxConfig(const HarborConfigInput& in);

}  // namespace kato
