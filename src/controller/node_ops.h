// NodeOps: the cluster's nodes through the controller's API, for the
// Management Console's Cluster Nodes page (issue "Users, organizations, and
// the Management Console"). Admins only.
//
//   GET  /v2/nodes                         every node: IP, hostname, state, roles, and the
//                                          roles there are
//   GET  /v2/nodes/IP                      one node, with its processes (asked live of its agent)
//   POST /v2/nodes/IP/roles                {add: [ROLE...]} or {remove: [ROLE...]}: what
//                                          `kato role add|remove -n IP` does, by that node's
//                                          agent, with its constraints and errors
//   POST /v2/nodes/IP/processes/NAME/restart
//
// The node's agent does the work (its /v1/command, as for `-n`), so the rules
// are the CLI's; the history records the console user.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "common/http.h"
#include "common/result.h"
#include "controller/accounts.h"

namespace kato {

class NodeOps {
 public:
  struct Options {
    // The primary's GET /v1/cluster (JSON text). Unset: no node operations here.
    std::function<Result<std::string>()> cluster;
    // A call to a node's agent (its TLS port, with this node's certificate).
    std::function<Result<HttpResponse>(const std::string& ip, const std::string& method,
                                       const std::string& path, const std::string& body)>
        call_agent;
  };
  explicit NodeOps(Options options) : options_(std::move(options)) {}

  static bool Serves(const std::string& path) {
    return path == "/v2/nodes" || path.rfind("/v2/nodes/", 0) == 0;
  }
  HttpResponse Handle(const HttpRequest& req, const Caller& caller);

 private:
  HttpResponse Command(const std::string& ip, const std::string& cmd, const nlohmann::json& args,
                       const Caller& caller, const std::string& command_line);
  Options options_;
};

}  // namespace kato
