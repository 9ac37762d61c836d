// `katod dea`: the dea role's process. Runs the app instances the controller
// assigns to this node ("assignment/APP/INDEX" documents naming its node id):
// fetches the app's archive from a controller, unpacks it safely, starts it in
// a sandbox (sandbox.h) with a free port, checks its port for health, stops
// what is no longer assigned, and reports every instance's state to the
// primary every 500 ms (the controller's health manager reads those reports;
// their arrival is also how it knows this DEA is alive).
#pragma once

#include <string>

namespace kato {

struct DeaConfig {
  std::string data_dir;
  std::string ip;
  std::string version;
};

int RunDea(const DeaConfig& config);

}  // namespace kato
