// `katod controller`: the controller role's process. Serves the REST API
// (HTTP, kControllerPort; and over TLS for routers, kControllerRouterPort) and
// app archives to DEAs (TLS with node certificates, kControllerInternalPort). The leader among the
// controllers (a lease in the cluster store) also runs the health manager: every 250 ms it compares
// the apps with what the DEAs report and writes instance assignments that the DEAs carry out (see
// controller/reconciler.h).
#pragma once

#include <string>

namespace kato {

struct ControllerConfig {
  std::string data_dir;
  std::string ip;
  std::string version;
};

int RunController(const ControllerConfig& config);

}  // namespace kato
