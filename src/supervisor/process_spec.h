// ProcessSpec: what the supervisor needs to know to run one process of a role.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kato {

// A process is RUNNING once something answers on this TCP address, not once it
// has forked. Without a check it is RUNNING after `ProcessSpec::start_secs` of life.
struct ReadinessCheck {
  std::string host;
  int port = 0;
  bool operator==(const ReadinessCheck&) const = default;
};

struct ProcessSpec {
  std::string name;               // unique on the node, e.g. "postgresql"
  std::vector<std::string> argv;  // argv[0] is an absolute path
  std::map<std::string, std::string> env;  // the whole environment of the child
  std::string cwd;                         // empty: the log dir
  std::string user;                        // run as this user (empty: as katod's user)
  int order = 0;                           // start order; stop order is the reverse
  std::optional<ReadinessCheck> ready;
  std::chrono::milliseconds start_secs{1000};     // life needed when there is no check
  std::chrono::milliseconds start_timeout{30000};  // not ready by then: a failed start
  std::chrono::milliseconds stop_timeout{10000};   // SIGTERM, then SIGKILL of the group
  int stop_signal = 15;                            // SIGTERM
  int start_retries = 3;  // fast failures in a row before FATAL (supervisord's startretries)

  bool operator==(const ProcessSpec&) const = default;
};

}  // namespace kato
