// Agent: katod, the node agent.
//
// Owns the node's identity and certificates; supervises the processes of the
// roles the cluster assigns to the node; heartbeats to the primary and watches
// the cluster revision so role changes apply within a second; serves the CLI on
// a Unix socket in the data dir and other nodes on the agent port (TLS with
// client certificates). While the core is unreachable the node keeps running
// what it has and reconciles when the core returns.
#pragma once

#include <memory>
#include <string>

namespace kato {

struct AgentOptions {
  std::string data_dir;    // absolute
  std::string ip;          // empty: the stored one, else the default route's
  std::string version;     // the version this agent reports
  std::string katod_path;  // absolute path of katod (runs `katod primary`)
};

class Agent {
 public:
  explicit Agent(AgentOptions options);
  ~Agent();
  // Runs until SIGTERM or SIGINT; then stops the node's processes and returns
  // the exit code. The caller must block SIGTERM, SIGINT and SIGCHLD in every
  // thread before calling (the agent takes them with signalfd).
  int Run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kato
