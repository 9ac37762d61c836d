#include "controller/node_ops.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/json_reply.h"
#include "common/net.h"
#include "roles/roles.h"

namespace kato {

using json = nlohmann::json;

namespace {

bool ValidName(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
  });
}

}  // namespace

HttpResponse NodeOps::Handle(const HttpRequest& req, const Caller& caller) {
  if (!caller.admin()) return ErrorReply(403, "the cluster's nodes are for admins");
  if (!options_.cluster || !options_.call_agent)
    return ErrorReply(501, "node operations are not available on this controller");
  std::string path = req.target.substr(0, req.target.find('?'));
  const std::string& m = req.method;
  auto cluster_text = options_.cluster();
  if (!cluster_text) return ErrorReply(502, "cannot reach the core: " + cluster_text.error());
  json cluster = json::parse(*cluster_text, nullptr, false);
  if (!cluster.is_object() || !cluster.contains("nodes") || !cluster["nodes"].is_array())
    return ErrorReply(502, "the core sent a malformed cluster state");
  auto view = [](const json& n) {
    return json{{"id", n.value("id", "")},
                {"ip", n.value("ip", "")},
                {"hostname", n.value("hostname", "")},
                {"version", n.value("version", "")},
                {"state", n.value("state", "down")},
                {"roles", n.value("roles", json::array())},
                {"processes", n.value("processes", json::array())}};
  };
  if (path == "/v2/nodes" && m == "GET") {
    json nodes = json::array();
    for (const auto& n : cluster["nodes"]) nodes.push_back(view(n));
    return JsonReply(200, {{"nodes", nodes},
                           {"roles", AllRoles()},
                           {"core_ip", cluster.value("core_ip", "")},
                           {"revision", cluster.value("revision", static_cast<int64_t>(0))}});
  }
  std::string rest = path.size() > 10 ? path.substr(10) : "";  // after "/v2/nodes/"
  std::string ip = rest.substr(0, rest.find('/'));
  std::string sub = rest.substr(ip.size());
  if (auto s = CheckIPv4(ip, "the node's IP"); !s) return ErrorReply(400, s.error());
  auto it = std::find_if(cluster["nodes"].begin(), cluster["nodes"].end(),
                         [&](const json& n) { return n.value("ip", "") == ip; });
  if (it == cluster["nodes"].end())
    return ErrorReply(404, "no node " + ip + " in the cluster (see `kato node list`)");
  json node = view(*it);
  if (sub.empty() && m == "GET") {
    // Live from its agent; what its last heartbeat said when it does not answer.
    auto r = options_.call_agent(ip, "GET", "/v1/status", "");
    json live = r && r->status == 200 ? json::parse(r->body, nullptr, false) : json();
    if (live.is_object() && live.contains("processes")) {
      node["processes"] = live["processes"];
      node["live"] = true;
    } else {
      node["live"] = false;
      node["message"] = "the node's agent does not answer (" +
                        (r ? "HTTP " + std::to_string(r->status) : r.error()) +
                        "); processes as of its last heartbeat";
    }
    return JsonReply(200, node);
  }
  json body = req.body.empty() ? json::object() : json::parse(req.body, nullptr, false);
  if (!body.is_object()) return ErrorReply(400, "request body is not a JSON object");
  if (sub == "/roles" && m == "POST") {
    bool add = body.contains("add");
    const json& list = add ? body["add"] : body.value("remove", json());
    if (add == body.contains("remove") || !list.is_array() || list.empty())
      return ErrorReply(400, "give {\"add\": [ROLE...]} or {\"remove\": [ROLE...]}");
    std::vector<std::string> roles;
    for (const auto& r : list) {
      if (!r.is_string() || !ValidName(r))
        return ErrorReply(400, "roles are names such as \"dea\"");
      roles.push_back(r);
    }
    std::string line = std::string("kato role ") + (add ? "add " : "remove ");
    for (const auto& r : roles) line += r + " ";
    return Command(ip, add ? "role.add" : "role.remove", {{"roles", roles}}, caller,
                   line + "-n " + ip);
  }
  const std::string procs = "/processes/";
  const std::string restart = "/restart";
  if (m == "POST" && sub.rfind(procs, 0) == 0 && sub.size() > procs.size() + restart.size() &&
      sub.compare(sub.size() - restart.size(), restart.size(), restart) == 0) {
    std::string name = sub.substr(procs.size(), sub.size() - procs.size() - restart.size());
    if (!ValidName(name)) return ErrorReply(400, "'" + name + "' is not a process name");
    return Command(ip, "process.restart", {{"names", json::array({name})}}, caller,
                   "kato process restart " + name + " -n " + ip);
  }
  return ErrorReply(404, "no such API: " + m + " " + path);
}

HttpResponse NodeOps::Command(const std::string& ip, const std::string& cmd, const json& args,
                              const Caller& caller, const std::string& command_line) {
  std::string user = caller.email.empty() ? "console" : caller.email;
  json fwd{{"cmd", cmd}, {"args", args}, {"user", user}, {"command", command_line + " (console)"}};
  auto r = options_.call_agent(ip, "POST", "/v1/command", fwd.dump());
  if (!r) return ErrorReply(502, "node " + ip + " does not answer: " + r.error());
  json reply = json::parse(r->body, nullptr, false);
  if (r->status == 200) return JsonReply(200, reply.is_discarded() ? json::object() : reply);
  // The agent's own words: the same constraints and errors as `kato role ... -n`.
  std::string error = reply.is_object() ? reply.value("error", "") : "";
  return ErrorReply(
      r->status == 409 ? 409 : 502,
      error.empty() ? "node " + ip + " answered HTTP " + std::to_string(r->status) : error);
}

}  // namespace kato
