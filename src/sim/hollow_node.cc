#include "sim/hollow_node.h"

#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace kato {

using json = nlohmann::json;

namespace {

std::vector<std::string> RolesOf(const json& node) {
  std::vector<std::string> out;
  if (node.is_object() && node.contains("roles") && node["roles"].is_array())
    for (const auto& r : node["roles"])
      if (r.is_string()) out.push_back(r.get<std::string>());
  return out;
}

Result<json> Decode(const Result<HttpResponse>& r) {
  if (!r) return Err(r.error());
  json j = json::parse(r->body, nullptr, false);
  if (r->status >= 300) {
    if (j.is_object() && j.contains("error") && j["error"].is_string())
      return Err(j["error"].get<std::string>());
    return Err("the core answered HTTP " + std::to_string(r->status));
  }
  if (j.is_discarded()) return Err("the core sent a reply that is not JSON");
  return j;
}

}  // namespace

Result<HollowNode> HollowNode::Join(const HollowCore& core, const JoinToken& token,
                                    const std::string& ip, const std::vector<std::string>& roles) {
  const std::string id = RandomHex(16);
  auto kc = CreateKeyAndCsr(id);
  if (!kc) return Err(kc.error());
  json body{{"secret", token.secret},
            {"node_id", id},
            {"ip", ip},
            {"hostname", "sim-" + ip},
            {"version", core.version},
            {"roles", roles},
            {"csr", kc->csr_pem},
            {"audit", {{"node", ip}, {"user", "kato-sim"}, {"command", "kato-sim join"}}}};
  ClientTls pinned;
  pinned.pin_ca_sha256 = token.ca_hash;
  pinned.local_ip = ip;
  auto r = HttpsCall(pinned, core.ip, core.port, "POST", "/v1/join", body.dump(), Millis(30000));
  auto j = Decode(r);
  if (!j) return Err("node " + ip + " cannot join: " + j.error());
  if (!j->contains("cert") || !(*j)["cert"].is_string())
    return Err("node " + ip + ": the core sent no certificate");
  ClientTls tls{r->peer_ca_pem, (*j)["cert"].get<std::string>(), kc->key_pem, ""};
  tls.local_ip = ip;
  HollowNode node(core, id, ip, std::move(tls));
  node.roles_ = RolesOf((*j)["node"]);
  return node;
}

Result<json> HollowNode::Call(const std::string& method, const std::string& path,
                              const std::string& body, Millis timeout) {
  return Decode(HttpsCall(tls_, core_.ip, core_.port, method, path, body, timeout));
}

Status HollowNode::Heartbeat() {
  json procs = json::array();
  for (const auto& role : roles_)
    if (role != "base")
      procs.push_back(
          {{"name", role}, {"state", "RUNNING"}, {"pid", static_cast<int>(::getpid())}});
  json body{
      {"ip", ip_}, {"hostname", "sim-" + ip_}, {"version", core_.version}, {"processes", procs}};
  auto j = Call("POST", "/v1/heartbeat", body.dump(), Millis(5000));
  if (!j) return Err(j.error());
  if (j->contains("node")) roles_ = RolesOf((*j)["node"]);
  return Ok();
}

Result<bool> HollowNode::Watch(Millis timeout) {
  auto j = Call("GET",
                "/v1/watch?after=" + std::to_string(watched_) +
                    "&timeout_ms=" + std::to_string(timeout.count()) + "&node=" + id_,
                "", timeout + Millis(5000));
  if (!j) return Err(j.error());
  int64_t rev = j->value("revision", static_cast<int64_t>(0));
  bool changed = rev != watched_;
  watched_ = rev;
  return changed;
}

bool HollowNode::is_dea() const {
  return std::find(roles_.begin(), roles_.end(), "dea") != roles_.end();
}

Result<json> HollowNode::Assignments() {
  auto j = Call("GET", "/v1/docs/assignment", "", Millis(10000));
  if (!j) return Err(j.error());
  if (!j->is_array()) return Err("the core sent assignments that are not a list");
  return j;
}

Status HollowNode::Report(const json& instances, int memory_mb) {
  auto j = Call("POST", "/v1/report",
                json{{"memory_mb", memory_mb}, {"instances", instances}}.dump(), Millis(5000));
  if (!j) return Err(j.error());
  return Ok();
}

Status HollowNode::Leave() {
  auto j = Call("POST", "/v1/nodes/remove",
                json{{"node", id_},
                     {"audit", {{"node", ip_}, {"user", "kato-sim"}, {"command", "kato-sim stop"}}}}
                    .dump(),
                Millis(30000));
  if (!j) return Err("node " + ip_ + " cannot leave: " + j.error());
  return Ok();
}

}  // namespace kato
