// `katod harbor`: the harbor role's process. Runs Debian's nginx with its
// stream module as a child (an NginxProcess, like the load balancer's) and
// keeps its configuration equal to this node's harbor services: a public TCP
// or UDP port each, forwarded round robin to the RUNNING instances of the
// apps bound to it (their DEAs report a harbor port per instance). It follows
// the cluster through the revision watch (and every 2 s), checks each new
// configuration with `nginx -t` before a graceful reload, writes READY in
// "service_state/NAME" once a service's port is open, and removes a DELETING
// service's port before deleting its documents.
#pragma once

#include <string>

namespace kato {

struct HarborConfig {
  std::string data_dir;
  std::string ip;
  std::string version;
  std::string nginx;  // empty: found in /usr/sbin and PATH
};

int RunHarbor(const HarborConfig& config);

}  // namespace kato
