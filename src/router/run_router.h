// `katod router`: the router role's process. Serves HTTP on the node's
// address (kRouterHttpPort; HTTPS on kRouterHttpsPort with the certificates
// RouterCerts chooses, re-read every second; GET /health and GET /metrics on
// kRouterHealthPort) and routes by Host: api.HOST to the controllers,
// APP.DOMAIN to the app's RUNNING instances. Its settings (RouterSettings)
// are read from the cluster config at start; it keeps an access log and a
// state file under RouterLayout.
// Routes come from the cluster state and are rebuilt whenever the cluster
// revision moves (a long-poll watch), so a moved instance is routed within
// milliseconds of its DEA's report.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "router/route_table.h"
#include "store/store.h"

namespace kato {

struct RouterConfig {
  std::string data_dir;
  std::string ip;
  std::string version;
  int http_port = 0;  // 0: kRouterHttpPort
};

// The routes the cluster state implies (pure: tested without a cluster).
Result<RouteMap> BuildRoutes(Store& store);

int RunRouter(const RouterConfig& config);

}  // namespace kato
