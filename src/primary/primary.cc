#include "primary/primary.h"

#include <signal.h>

#include <algorithm>
#include <cctype>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "common/ipv4.h"
#include "common/json_reply.h"
#include "common/layout.h"
#include "common/log.h"
#include "common/net.h"
#include "common/pki.h"
#include "common/redact.h"
#include "primary/assignment_index.h"
#include "roles/router_settings.h"
#include "lb/lb_layout.h"
#include "roles/roles.h"

namespace kato {

using json = nlohmann::json;

namespace {

// The path of a target without its query, and one query parameter.
std::string PathOf(const std::string& target) { return target.substr(0, target.find('?')); }
std::string QueryParam(const std::string& target, const std::string& name) {
  auto q = target.find('?');
  if (q == std::string::npos) return "";
  std::string rest = target.substr(q + 1);
  size_t i = 0;
  while (i <= rest.size()) {
    size_t j = rest.find('&', i);
    if (j == std::string::npos) j = rest.size();
    std::string kv = rest.substr(i, j - i);
    auto eq = kv.find('=');
    if (eq != std::string::npos && kv.substr(0, eq) == name) return kv.substr(eq + 1);
    i = j + 1;
  }
  return "";
}

std::vector<int> VersionParts(const std::string& v) {
  std::vector<int> parts;
  size_t i = 0;
  while (i < v.size() && parts.size() < 3) {
    size_t j = v.find('.', i);
    if (j == std::string::npos) j = v.size();
    try {
      parts.push_back(std::stoi(v.substr(i, j - i)));
    } catch (...) {
      return {};
    }
    i = j + 1;
  }
  return parts;
}

std::vector<std::string> StringList(const json& j, const char* key) {
  std::vector<std::string> out;
  if (!j.contains(key)) return out;
  if (!j[key].is_array()) return out;
  for (const auto& v : j[key])
    if (v.is_string()) out.push_back(v.get<std::string>());
  return out;
}

std::string Str(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) return "";
  return j[key].get<std::string>();
}

// json::value() throws on a field of another type; a request must not throw out of the handler.
bool Bool(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_boolean() && j[key].get<bool>();
}
int64_t Int(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<int64_t>() : 0;
}

std::vector<std::string> SortedRoles(const std::set<std::string>& roles) {
  std::vector<std::string> out;
  for (const auto& r : AllRoles())
    if (roles.count(r)) out.push_back(r);
  return out;
}

}  // namespace

std::vector<std::string> WebCertNames(const std::string& endpoint) {
  if (endpoint.rfind("api.", 0) == 0 && endpoint.size() > 4) {
    std::string domain = endpoint.substr(4);
    return {endpoint, "*." + domain, domain};
  }
  return {endpoint, "*." + endpoint};
}

bool VersionsCompatible(const std::string& a, const std::string& b) {
  auto pa = VersionParts(a), pb = VersionParts(b);
  return pa.size() >= 2 && pb.size() >= 2 && pa[0] == pb[0] && pa[1] == pb[1];
}

struct PrimaryService::Impl {
  PrimaryConfig cfg;
  Store& store;
  const Clock& clock;
  CaBundle ca;
  std::string ca_load_error;

  // Serializes mutations, so that rules checked against the state hold when applied.
  std::mutex mu;
  struct Live {
    SteadyTime last_seen;
    int64_t last_seen_ms = 0;
    int64_t last_report_ms = 0;  // a DEA's instance report (every 500 ms while it runs)
    json processes = json::array();
    json load_balancer;  // a load balancer's own report (pool, health), null otherwise
  };
  std::map<std::string, Live> live;  // by node id; guarded by mu

  struct Waiter {
    int64_t after;
    SteadyTime deadline;
    Responder respond;
  };
  std::mutex wmu;
  // Watches of any change, and watches of one node's scope (?node=ID: its own
  // record, the cluster's endpoint and version, a removal): a node's agent
  // wakes for what concerns it, not for every app or instance of the cluster.
  std::vector<Waiter> watches;                    // guarded by wmu
  std::multimap<std::string, Waiter> node_watches;  // by node id; guarded by wmu
  std::map<std::string, int64_t> node_revs;  // when each node's record last changed; wmu
  int64_t scope_rev = 0;         // when the endpoint or version changed or a node left; wmu
  std::set<std::string> touched;  // nodes changed since the last Complete; guarded by wmu
  bool scope_touched = false;     // guarded by wmu

  // The assignments by DEA (guarded by mu): what GET /v1/docs/assignment?node=ID
  // answers, and whose DEA's watch (?node=ID&assignments=1) a write wakes.
  AssignmentIndex assignments;

  // The revision at which the set of member ids last changed (a join, a
  // removal, a rename): nodes fetch the members again only when it moves.
  // Not stored: after a restart of the primary it is the current revision.
  std::atomic<int64_t> members_rev{0};

  Impl(PrimaryConfig c, Store& s, const Clock& k) : cfg(std::move(c)), store(s), clock(k) {
    DataLayout layout{cfg.data_dir};
    auto cert = ReadFile(layout.ca_cert());
    auto key = ReadFile(layout.ca_key());
    if (cert && key) {
      ca = CaBundle{*cert, *key};
    } else {
      ca_load_error = !cert ? cert.error() : key.error();
    }
    members_rev = Revision();
  }

  int64_t Revision() {
    auto r = store.Revision();
    return r ? *r : 0;
  }

  // After a change of one node's record: its scoped watches wake.
  void TouchNode(const std::string& id) {
    int64_t rev = Revision();
    std::lock_guard lock(wmu);
    node_revs[id] = rev;
    touched.insert(id);
  }
  // The watch key of a DEA's assignments (ids have no '#').
  static std::string AssignmentsScope(const std::string& node_id) { return node_id + "#a"; }

  // Applies document writes the store took to the assignment index; the DEAs
  // whose assignments changed have their watches woken. Caller holds mu.
  void IndexWrites(const std::vector<DocWrite>& writes) {
    std::set<std::string> deas;
    for (const DocWrite& w : writes) assignments.Apply(w, deas);
    for (const auto& id : deas) TouchNode(AssignmentsScope(id));
  }
  // Before a write of assignments: the index must hold what is there. Caller holds mu.
  void LoadAssignments() {
    if (auto s = assignments.EnsureLoaded(store); !s)
      LogWarn("primary: cannot index the assignments: {}", s.error());
  }

  // After a change every node must see (endpoint, version, a removal).
  void TouchScope() {
    int64_t rev = Revision();
    std::lock_guard lock(wmu);
    scope_rev = rev;
    scope_touched = true;
  }
  int64_t ScopeRevision(const std::string& id) {  // under wmu
    auto it = node_revs.find(id);
    return std::max(scope_rev, it == node_revs.end() ? 0 : it->second);
  }

  void Audit(const json& body, const std::string& fallback) {
    HistoryEntry h;
    h.time_ms = clock.wall_ms();
    const json audit = body.is_object() && body.contains("audit") ? body["audit"] : json::object();
    h.node = Str(audit, "node");
    h.user = Str(audit, "user");
    h.command = RedactCommandLine(Str(audit, "command"));  // whatever the client sent
    if (h.command.empty()) h.command = fallback;
    if (h.user.empty()) h.user = "root";
    auto s = store.AppendHistory(h);
    if (!s) LogWarn("cannot record history: {}", s.error());
  }

  bool IsUp(const std::string& id) {
    auto it = live.find(id);
    return it != live.end() && clock.now() - it->second.last_seen < kDownAfter;
  }

  json NodeJson(const NodeRecord& n, bool with_processes = true) {
    json j{{"id", n.id},
           {"ip", n.ip},
           {"hostname", n.hostname},
           {"version", n.version},
           {"roles", n.roles},
           {"joined_ms", n.joined_ms}};
    auto it = live.find(n.id);
    bool up = IsUp(n.id);
    j["state"] = up ? "up" : "down";
    j["last_seen_ms"] = it == live.end() ? 0 : it->second.last_seen_ms;
    j["last_report_ms"] = it == live.end() ? 0 : it->second.last_report_ms;
    if (!with_processes) return j;
    j["processes"] = it == live.end() ? json::array() : it->second.processes;
    if (it != live.end() && it->second.load_balancer.is_object())
      j["load_balancer"] = it->second.load_balancer;
    return j;
  }

  // The settings members read, and (unless !with_nodes) every node with its
  // liveness and (unless !with_processes) what its heartbeats last reported.
  json ClusterJson(bool with_nodes = true, bool with_processes = true,
                   const std::string& role = "") {
    json j;
    auto core_ip = store.GetSetting("core_ip");
    auto endpoint = store.GetSetting("endpoint");
    j["core_ip"] = core_ip && *core_ip ? **core_ip : "";
    j["endpoint"] = endpoint && *endpoint ? **endpoint : "";
    // Members check the API's admin credential against this (a hash of 256 random bits).
    auto admin = store.GetSetting("admin_token_hash");
    j["admin_token_hash"] = admin && *admin ? **admin : "";
    j["version"] = cfg.version;
    j["revision"] = Revision();
    if (!with_nodes) return j;
    j["nodes"] = json::array();
    auto nodes = store.ListNodes();
    if (nodes)
      for (const auto& n : *nodes)
        if (role.empty() || std::find(n.roles.begin(), n.roles.end(), role) != n.roles.end())
          j["nodes"].push_back(NodeJson(n, with_processes));
    return j;
  }

  // The member ids (and addresses), for servers that admit only members'
  // certificates (MemberSet); "revision" is members_rev.
  json MembersJson() {
    json j{{"revision", members_rev.load()}, {"nodes", json::array()}};
    auto nodes = store.ListNodes();
    if (nodes)
      for (const auto& n : *nodes) j["nodes"].push_back({{"id", n.id}, {"ip", n.ip}});
    return j;
  }

  // Node records are changed by the node itself (its roles, name, address, its
  // detach) or from the core (the node holding the primary role): any other
  // member's certificate is refused, so one node cannot remove or reshape another.
  std::optional<HttpResponse> RefuseOtherNode(const NodeRecord& caller, const json& body) {
    if (std::count(caller.roles.begin(), caller.roles.end(), "primary")) return std::nullopt;
    auto target = FindNode(Str(body, "node"));
    if (!target || target->id == caller.id) return std::nullopt;  // the handler answers
    auto core_ip = store.GetSetting("core_ip");
    return ErrorReply(403, "node " + caller.ip + " cannot change node " + target->ip +
                               ": run the command on the core (" +
                               (core_ip && *core_ip ? **core_ip : "the core node") +
                               ") or on " + target->ip + " itself");
  }

  // Finds a node by id or IP.
  Result<NodeRecord> FindNode(const std::string& ref) {
    auto byid = store.GetNode(ref);
    if (!byid) return Err(byid.error());
    if (*byid) return **byid;
    auto byip = store.FindNodeByIp(ref);
    if (!byip) return Err(byip.error());
    if (*byip) return **byip;
    return Err("no node " + ref + " in the cluster (see `kato node list`)");
  }

  // A join may take over the id of a member that is gone (its rejoin), never
  // the core's id nor the id of a member that is up: that would hijack its
  // identity (certificate, roles, instances).
  Status CheckIdFree(const NodeRecord& member) {
    if (std::count(member.roles.begin(), member.roles.end(), "primary"))
      return Err("node id " + member.id +
                 " is the core's; a node cannot join with it (give the "
                 "joining node its own identity: remove node.json from its data dir)");
    if (IsUp(member.id))
      return Err("node id " + member.id + " belongs to the member at " + member.ip +
                 ", which is up; a joining node cannot take a live member's id (if that node is "
                 "gone, run `kato node remove " +
                 member.ip + "` on the core first)");
    return Ok();
  }

  HttpResponse Join(const json& body) {
    std::string secret = Str(body, "secret");
    std::string node_id = Str(body, "node_id");
    std::string ip = Str(body, "ip");
    std::string hostname = Str(body, "hostname");
    std::string version = Str(body, "version");
    std::string csr = Str(body, "csr");
    bool force = Bool(body, "force");
    if (secret.empty() || node_id.empty() || ip.empty() || version.empty() || csr.empty())
      return ErrorReply(400, "join request needs secret, node_id, ip, version and csr");
    if (!ca_load_error.empty())
      return ErrorReply(500, "the core cannot sign certificates: " + ca_load_error);
    std::lock_guard lock(mu);
    auto tok = store.FindToken(Sha256Hex(secret));
    if (!tok) return ErrorReply(500, tok.error());
    if (!*tok)
      return ErrorReply(403,
                        "join token is not valid for this cluster; get the current one with "
                        "`kato node token` on the core");
    if ((*tok)->revoked)
      return ErrorReply(403,
                        "join token was rotated and is no longer valid; get the current one with "
                        "`kato node token` on the core");
    if ((*tok)->expires_ms != 0 && (*tok)->expires_ms < clock.wall_ms())
      return ErrorReply(403,
                        "join token has expired; make a new one with `kato node token --rotate` "
                        "on the core");
    if (!VersionsCompatible(version, cfg.version) && !force)
      return ErrorReply(409, "version mismatch: this node runs kato " + version +
                                 " and the core runs kato " + cfg.version +
                                 "; install the same MAJOR.MINOR, or pass --force");
    auto existing = store.GetNode(node_id);
    if (!existing) return ErrorReply(500, existing.error());
    if (*existing) {
      if (auto s = CheckIdFree(**existing); !s) return ErrorReply(409, s.error());
    }
    std::set<std::string> roles{"base"};
    for (const auto& r : StringList(body, "roles")) {
      if (!IsRole(r)) return ErrorReply(400, "unknown role '" + r + "'");
      roles.insert(r);
    }
    auto nodes = store.ListNodes();
    if (!nodes) return ErrorReply(500, nodes.error());
    bool primary_elsewhere = false;
    for (const auto& n : *nodes)
      if (n.id != node_id && std::count(n.roles.begin(), n.roles.end(), "primary"))
        primary_elsewhere = true;
    if (auto s = CheckNodeRoles(roles, primary_elsewhere); !s) return ErrorReply(400, s.error());
    auto cert = SignCsr(ca, csr, node_id, 3650);
    if (!cert) return ErrorReply(400, "cannot sign the node's certificate request: " + cert.error());
    NodeRecord rec;
    rec.id = node_id;
    rec.ip = ip;
    rec.hostname = hostname;
    rec.version = version;
    rec.roles = SortedRoles(roles);
    rec.joined_ms = *existing ? (*existing)->joined_ms : clock.wall_ms();
    // PutNode first: when it is refused (address taken), a removed node stays removed.
    if (auto s = store.PutNode(rec); !s) return ErrorReply(409, s.error());
    if (auto s = store.ClearRemoved(node_id); !s) return ErrorReply(500, s.error());
    TouchNode(node_id);
    Audit(body, "node attach " + ip);
    live[node_id] = Live{.last_seen = clock.now(), .last_seen_ms = clock.wall_ms()};
    members_rev = Revision();
    // The members (ids and addresses), not every node's state: a join costs
    // little however large the cluster.
    json reply = MembersJson();
    auto endpoint = store.GetSetting("endpoint");
    auto core_ip = store.GetSetting("core_ip");
    reply["core_ip"] = core_ip && *core_ip ? **core_ip : "";
    reply["endpoint"] = endpoint && *endpoint ? **endpoint : "";
    reply["version"] = cfg.version;
    reply["cert"] = *cert;
    reply["ca"] = ca.cert_pem;
    reply["node"] = NodeJson(rec);
    return JsonReply(200, reply);
  }

  // POST /v1/webcert {"csr"}: the web certificate a load balancer or a router
  // serves on 443, signed by the cluster CA for the API endpoint and every app
  // host. Only the core holds the CA key; only the nodes that terminate web
  // clients' TLS may ask (least privilege: the certificate speaks for the
  // whole domain).
  HttpResponse WebCert(const std::string& peer, const json& body) {
    auto node = store.GetNode(peer);
    if (!node) return ErrorReply(500, node.error());
    auto has = [&](const char* role) {
      return std::count((*node)->roles.begin(), (*node)->roles.end(), role) > 0;
    };
    if (!*node || !(has("load_balancer") || has("router")))
      return ErrorReply(403,
                        "only a load-balancer or router node gets the cluster's web certificate");
    std::string csr = Str(body, "csr");
    if (csr.empty()) return ErrorReply(400, "a web certificate request needs {\"csr\": PEM}");
    if (!ca_load_error.empty())
      return ErrorReply(500, "the core cannot sign certificates: " + ca_load_error);
    auto endpoint = store.GetSetting("endpoint");
    if (!endpoint) return ErrorReply(500, endpoint.error());
    std::string api = endpoint->value_or("");
    if (api.empty())
      return ErrorReply(409, "the cluster has no API endpoint yet (kato node setup core API_HOST)");
    auto names = WebCertNames(api);
    // A CommonName has at most 64 characters; clients look at the names anyway.
    std::string cn = names.back().size() <= 64 ? names.back() : "kato web certificate";
    auto cert = SignServerCsr(ca, csr, cn, names, kWebCertDays);
    if (!cert) return ErrorReply(400, "cannot sign the web certificate request: " + cert.error());
    return JsonReply(200, {{"cert", *cert}, {"ca", ca.cert_pem}, {"names", names}});
  }

  HttpResponse Heartbeat(const std::string& id, const json& body) {
    std::lock_guard lock(mu);
    auto removed = store.IsRemoved(id);
    if (removed && *removed)
      return ErrorReply(410, "this node was removed from the cluster");
    auto node = store.GetNode(id);
    if (!node) return ErrorReply(500, node.error());
    if (!*node) return ErrorReply(404, "this node is not a member of the cluster");
    NodeRecord rec = **node;
    // The node reports its own address and name: an IP change is routine (DESIGN.md).
    std::string ip = Str(body, "ip"), hostname = Str(body, "hostname"),
                version = Str(body, "version");
    if ((!ip.empty() && ip != rec.ip) || (!version.empty() && version != rec.version)) {
      NodeRecord updated = rec;
      if (!ip.empty()) updated.ip = ip;
      if (!version.empty()) updated.version = version;
      if (auto s = store.PutNode(updated); s) {
        rec = updated;
        TouchNode(id);
      } else {
        LogWarn("heartbeat of {}: {}", id, s.error());
      }
    }
    Live& l = live[id];
    l.last_seen = clock.now();
    l.last_seen_ms = clock.wall_ms();
    if (body.contains("processes") && body["processes"].is_array()) l.processes = body["processes"];
    l.load_balancer = body.contains("load_balancer") && body["load_balancer"].is_object()
                          ? body["load_balancer"]
                          : json();
    // What the node needs about itself, never the whole cluster: a heartbeat
    // costs the same at 5 nodes and at 5,000.
    auto endpoint = store.GetSetting("endpoint");
    json reply{{"revision", Revision()},
               {"members_revision", members_rev.load()},
               {"endpoint", endpoint && *endpoint ? **endpoint : ""},
               {"version", cfg.version},
               {"node", NodeJson(rec)}};
    return JsonReply(200, reply);
  }

  HttpResponse SetRoles(const json& body) {
    std::lock_guard lock(mu);
    auto found = FindNode(Str(body, "node"));
    if (!found) return ErrorReply(404, found.error());
    NodeRecord rec = *found;
    std::set<std::string> roles(rec.roles.begin(), rec.roles.end());
    for (const auto& r : StringList(body, "remove")) {
      if (!IsRole(r)) return ErrorReply(400, "unknown role '" + r + "'");
      if (r == "base")
        return ErrorReply(400, "the base role is on every node and cannot be removed");
      if (r == "primary" && roles.count("primary"))
        return ErrorReply(400,
                          "the primary role cannot be removed: a cluster has exactly one primary "
                          "(it lives on the core node)");
      roles.erase(r);
    }
    for (const auto& r : StringList(body, "add")) {
      if (!IsRole(r)) return ErrorReply(400, "unknown role '" + r + "'");
      roles.insert(r);
    }
    auto nodes = store.ListNodes();
    if (!nodes) return ErrorReply(500, nodes.error());
    bool primary_elsewhere = false;
    for (const auto& n : *nodes)
      if (n.id != rec.id && std::count(n.roles.begin(), n.roles.end(), "primary"))
        primary_elsewhere = true;
    if (auto s = CheckNodeRoles(roles, primary_elsewhere); !s) return ErrorReply(400, s.error());
    auto sorted = SortedRoles(roles);
    if (sorted != rec.roles) {
      rec.roles = sorted;
      if (auto s = store.PutNode(rec); !s) return ErrorReply(500, s.error());
      TouchNode(rec.id);
      Audit(body, "role change on " + rec.ip);
    }
    json reply = NodeJson(rec);
    reply["revision"] = Revision();
    return JsonReply(200, reply);
  }

  HttpResponse RemoveNode(const json& body) {
    std::lock_guard lock(mu);
    auto found = FindNode(Str(body, "node"));
    if (!found) return ErrorReply(404, found.error());
    if (std::count(found->roles.begin(), found->roles.end(), "primary"))
      return ErrorReply(400, "node " + found->ip +
                                 " is the core (it holds the primary role) and cannot be removed");
    json j = NodeJson(*found);
    if (auto s = store.RemoveNode(found->id); !s) return ErrorReply(500, s.error());
    // A load balancer's chosen routers go with it.
    (void)store.DeleteConfig("load_balancer", LbRoutersConfigKey(found->id));
    live.erase(found->id);
    TouchScope();  // the node itself learns it was removed; servers drop its certificate
    Audit(body, "node remove " + found->ip);
    return JsonReply(200, j);
  }

  HttpResponse UpdateNode(const json& body) {
    std::lock_guard lock(mu);
    auto found = FindNode(Str(body, "node"));
    if (!found) return ErrorReply(404, found.error());
    NodeRecord rec = *found;
    bool is_core = std::count(rec.roles.begin(), rec.roles.end(), "primary") > 0;
    std::string hostname = Str(body, "hostname"), ip = Str(body, "ip");
    if (!hostname.empty()) rec.hostname = hostname;
    if (!ip.empty()) rec.ip = ip;
    if (auto s = store.PutNode(rec); !s) return ErrorReply(409, s.error());
    if (is_core && !ip.empty()) {
      if (auto s = store.SetSetting("core_ip", ip); !s) return ErrorReply(500, s.error());
    }
    if (is_core && !hostname.empty()) {
      if (auto s = store.SetSetting("endpoint", "api." + hostname); !s)
        return ErrorReply(500, s.error());
    }
    TouchNode(rec.id);
    if (is_core) TouchScope();  // the core's address or the endpoint moved
    Audit(body, "node update " + rec.ip);
    return JsonReply(200, NodeJson(rec));
  }

  // Values of settings that kato itself reads are checked before they are stored.
  static Status CheckKnownConfig(const std::string& component, const std::string& key,
                                 const json& value) {
    if (component == "controller" && key == "droplets_dir") {
      if (!value.is_string() || value.get<std::string>().empty() ||
          value.get<std::string>()[0] != '/' || value.get<std::string>().size() > 4096)
        return Err("controller droplets_dir must be an absolute path (the controllers' shared "
                   "directory), e.g. /mnt/controller");
    }
    if (component == "dea" && key == "instance_cidr") {
      auto net = value.is_string() ? ParseIpv4Net(value.get<std::string>())
                                   : Result<Ipv4Net>(Err("it must be a string"));
      if (!net || net->prefix > 29 || net->prefix < 8)
        return Err("dea instance_cidr must be an IPv4 network from /8 to /29 that no app needs "
                   "to reach, e.g. 10.254.0.0/16" + (net ? "" : " (" + net.error() + ")"));
    }
    if (component == "dea" && key == "egress_allow") {
      if (auto rules = ParseEgressAllow(value.dump()); !rules) return Err(rules.error());
    }
    if (component == "dea" && key == "allow_unlimited" && !value.is_boolean())
      return Err("dea allow_unlimited must be true or false");
    if (component == "dea" && key == "staging_memory_mb" &&
        (!value.is_number_integer() || value.get<int64_t>() < 64 || value.get<int64_t>() > 65536))
      return Err("dea staging_memory_mb must be a whole number of MB from 64 to 65536");
    if (component == "dea" && key == "staging_timeout_s" &&
        (!value.is_number_integer() || value.get<int64_t>() < 1 || value.get<int64_t>() > 86400))
      return Err("dea staging_timeout_s must be a whole number of seconds from 1 to 86400");
    if (component == "dea" && key == "npm_registry" &&
        (!value.is_string() || (value.get<std::string>().rfind("http://", 0) != 0 &&
                                value.get<std::string>().rfind("https://", 0) != 0) ||
         value.get<std::string>().size() > 2048 ||
         value.get<std::string>().find_first_of(" \n\r\t") != std::string::npos))
      return Err("dea npm_registry must be an http:// or https:// URL, e.g. https://registry.npmjs.org/");
    if (component == "router") return CheckRouterSetting(key, value.dump());
    return Ok();
  }

  HttpResponse Config(const std::string& op, const json& body) {
    std::string component = Str(body, "component"), key = Str(body, "key");
    if (op == "list") {
      auto l = store.ListConfig(component);
      if (!l) return ErrorReply(500, l.error());
      json out = json::array();
      for (const auto& e : *l)
        out.push_back({{"component", e.component},
                       {"key", e.key},
                       {"value", json::parse(e.value_json, nullptr, false)}});
      return JsonReply(200, out);
    }
    if (component.empty() || key.empty())
      return ErrorReply(400, "config needs a component and a key");
    if (op == "get") {
      auto e = store.GetConfig(component, key);
      if (!e) return ErrorReply(500, e.error());
      if (!*e) return ErrorReply(404, "no config value " + component + " " + key);
      return JsonReply(200, {{"component", component},
                             {"key", key},
                             {"value", json::parse((*e)->value_json, nullptr, false)}});
    }
    std::lock_guard lock(mu);
    if (op == "set") {
      if (!body.contains("value")) return ErrorReply(400, "config set needs a value");
      if (auto v = CheckKnownConfig(component, key, body["value"]); !v) return ErrorReply(400, v.error());
      auto s = store.SetConfig({component, key, body["value"].dump()});
      if (!s) return ErrorReply(400, s.error());
      Audit(body, "config set " + component + " " + key);
      return JsonReply(200, {{"component", component}, {"key", key}, {"value", body["value"]}});
    }
    if (op == "del") {
      auto d = store.DeleteConfig(component, key);
      if (!d) return ErrorReply(500, d.error());
      if (!*d) return ErrorReply(404, "no config value " + component + " " + key);
      Audit(body, "config del " + component + " " + key);
      return JsonReply(200, {{"deleted", true}});
    }
    return ErrorReply(404, "no such config operation: " + op);
  }

  HttpResponse Token(const json& body) {
    std::lock_guard lock(mu);
    DataLayout layout{cfg.data_dir};
    bool rotate = Bool(body, "rotate");
    int64_t ttl_s = Int(body, "ttl_s");
    if (ttl_s < 0 || ttl_s > 3650LL * 86400)
      return ErrorReply(400, "a token's ttl_s must be between 1 s and 10 years");
    auto current = ReadFile(layout.token_file());
    if (!rotate && current) {
      std::string text = current->substr(0, current->find('\n'));
      auto parsed = ParseJoinToken(text);
      auto rec = parsed ? store.FindToken(Sha256Hex(parsed->secret))
                        : Result<std::optional<TokenRecord>>(std::nullopt);
      if (!rec) return ErrorReply(500, rec.error());
      json out{{"token", text}, {"expires_ms", *rec ? (*rec)->expires_ms : 0}};
      if (*rec && (*rec)->expires_ms != 0 && (*rec)->expires_ms < clock.wall_ms())
        out["expired"] = true;
      return JsonReply(200, out);
    }
    auto fp = CertFingerprint(ca.cert_pem);
    if (!fp) return ErrorReply(500, fp.error());
    JoinToken t{*fp, RandomHex(32)};
    if (auto s = store.RevokeAllTokens(); !s) return ErrorReply(500, s.error());
    TokenRecord rec{Sha256Hex(t.secret), clock.wall_ms(),
                    clock.wall_ms() + (ttl_s > 0 ? ttl_s * 1000 : kJoinTokenTtl.count()), false};
    if (auto s = store.AddToken(rec); !s) return ErrorReply(500, s.error());
    if (auto s = WriteFileAtomic(layout.token_file(), t.str() + "\n", 0600); !s)
      return ErrorReply(500, s.error());
    Audit(body, "node token --rotate");
    return JsonReply(200, {{"token", t.str()}, {"expires_ms", rec.expires_ms}});
  }

  // Kinds and keys are plain names (keys may have '/'): they come from URLs.
  static bool IsDocName(const std::string& s, bool allow_slash) {
    if (s.empty() || s.size() > 200 || s[0] == '/' || s.back() == '/') return false;
    for (char c : s)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
            (allow_slash && c == '/')))
        return false;
    return s.find("..") == std::string::npos;
  }

  // /v1/docs/KIND[/KEY]: GET lists or reads, PUT {"value": ...} writes, DELETE removes.
  HttpResponse Docs(const std::string& method, const std::string& rest, const json& body) {
    auto slash = rest.find('/');
    std::string kind = rest.substr(0, slash);
    std::string key = slash == std::string::npos ? "" : rest.substr(slash + 1);
    if (!IsDocName(kind, false) || (!key.empty() && !IsDocName(key, true)))
      return ErrorReply(400, "bad document name '" + rest + "'");
    if (key.empty()) {
      if (method != "GET") return ErrorReply(405, "documents are written one at a time");
      auto l = store.ListDocs(kind);
      if (!l) return ErrorReply(500, l.error());
      json out = json::array();
      for (const auto& [k, v] : *l) out.push_back({{"key", k}, {"value", json::parse(v, nullptr, false)}});
      return JsonReply(200, out);
    }
    if (method == "GET") {
      auto d = store.GetDoc(kind, key);
      if (!d) return ErrorReply(500, d.error());
      if (!*d) return ErrorReply(404, "no " + kind + " '" + key + "'");
      return JsonReply(200, {{"key", key}, {"value", json::parse(**d, nullptr, false)}});
    }
    // A node speaks only for itself: its instances come from its own /v1/report.
    if (kind == "instances")
      return ErrorReply(403,
                        "instance reports are read-only here: each node reports its own "
                        "with POST /v1/report");
    std::lock_guard lock(mu);
    if (kind == AssignmentIndex::kKind) LoadAssignments();
    if (method == "PUT") {
      if (!body.contains("value")) return ErrorReply(400, "PUT needs {\"value\": ...}");
      std::string value = body["value"].dump();
      if (auto st = store.PutDoc(kind, key, value); !st) return ErrorReply(400, st.error());
      IndexWrites({{kind, key, value}});
      return JsonReply(200, {{"key", key}, {"revision", Revision()}});
    }
    if (method == "DELETE") {
      auto d = store.DeleteDoc(kind, key);
      if (!d) return ErrorReply(500, d.error());
      if (!*d) return ErrorReply(404, "no " + kind + " '" + key + "'");
      IndexWrites({{kind, key, std::nullopt}});
      return JsonReply(200, {{"deleted", true}, {"revision", Revision()}});
    }
    return ErrorReply(405, "method " + method + " not allowed on documents");
  }

  // GET /v1/docs/assignment?node=ID: the assignments of one DEA, as the list of all.
  HttpResponse AssignmentsOf(const std::string& node) {
    std::lock_guard lock(mu);
    if (auto s = assignments.EnsureLoaded(store); !s) return ErrorReply(500, s.error());
    json out = json::array();
    for (const auto& [k, v] : assignments.Of(node))
      out.push_back({{"key", k}, {"value", json::parse(v, nullptr, false)}});
    return JsonReply(200, out);
  }

  // POST /v1/docs {"writes": [{"kind", "key", "value"} or {"kind", "key", "delete": true}]}:
  // several document writes in one transaction (the controller's placements).
  HttpResponse WriteDocs(const json& body) {
    if (!body.contains("writes") || !body["writes"].is_array())
      return ErrorReply(400, "POST /v1/docs needs {\"writes\": [...]}");
    std::vector<DocWrite> writes;
    for (const json& w : body["writes"]) {
      if (!w.is_object()) return ErrorReply(400, "each write is an object");
      std::string kind = Str(w, "kind"), key = Str(w, "key");
      if (!IsDocName(kind, false) || !IsDocName(key, true))
        return ErrorReply(400, "bad document name '" + kind + "/" + key + "'");
      if (kind == "instances")
        return ErrorReply(403, "instance reports are read-only here: each node reports its own "
                               "with POST /v1/report");
      bool del = w.contains("delete") && w["delete"] == true;
      if (del == w.contains("value"))
        return ErrorReply(400, "write " + kind + "/" + key + " needs a value or \"delete\": true");
      writes.push_back({kind, key, del ? std::nullopt : std::optional(w["value"].dump())});
    }
    std::lock_guard lock(mu);
    LoadAssignments();
    if (auto st = store.WriteDocs(writes); !st) return ErrorReply(400, st.error());
    IndexWrites(writes);
    return JsonReply(200, {{"written", writes.size()}, {"revision", Revision()}});
  }

  // /v1/lease/NAME: POST {"holder", "ttl_ms"} takes or renews the lease (the
  // primary's clock decides expiry), DELETE {"holder"} gives it up, GET reads it.
  HttpResponse Lease(const std::string& method, const std::string& name, const json& body) {
    if (!IsDocName(name, false)) return ErrorReply(400, "bad lease name '" + name + "'");
    auto reply = [&](bool held) -> HttpResponse {
      auto l = store.GetLease(name);
      if (!l) return ErrorReply(500, l.error());
      json out{{"name", name}, {"held", held}, {"now_ms", clock.wall_ms()}};
      if (*l) out["holder"] = (*l)->holder, out["expires_ms"] = (*l)->expires_ms;
      return JsonReply(200, out);
    };
    if (method == "GET") return reply(false);
    std::string holder = Str(body, "holder");
    if (holder.empty() || holder.size() > 200) return ErrorReply(400, "a lease needs a holder");
    std::lock_guard lock(mu);
    if (method == "POST") {
      int64_t ttl = body.contains("ttl_ms") && body["ttl_ms"].is_number_integer()
                        ? body["ttl_ms"].get<int64_t>() : 0;
      if (ttl < 100 || ttl > 600'000)
        return ErrorReply(400, "ttl_ms must be between 100 and 600000");
      auto held = store.AcquireLease(name, holder, clock.wall_ms(), ttl);
      if (!held) return ErrorReply(500, held.error());
      return reply(*held);
    }
    if (method == "DELETE") {
      if (auto st = store.ReleaseLease(name, holder); !st) return ErrorReply(500, st.error());
      return reply(false);
    }
    return ErrorReply(405, "method " + method + " not allowed on leases");
  }

  // A node's report of what it runs (a DEA's instances). Stored only when it
  // changed, so that watchers (routers, the controller) wake on real changes.
  HttpResponse Report(const std::string& id, const json& body) {
    if (!body.contains("instances") || !body["instances"].is_array())
      return ErrorReply(400, "a report needs {\"instances\": [...]}");
    std::lock_guard lock(mu);
    live[id].last_report_ms = clock.wall_ms();
    json doc{{"instances", body["instances"]}};
    if (body.contains("memory_mb") && body["memory_mb"].is_number_integer())
      doc["memory_mb"] = body["memory_mb"];
    std::string value = doc.dump();
    auto current = store.GetDoc("instances", id);
    if (!current) return ErrorReply(500, current.error());
    if (!*current || **current != value) {
      if (auto st = store.PutDoc("instances", id, value); !st) return ErrorReply(500, st.error());
    }
    return JsonReply(200, {{"revision", Revision()}});
  }

  HttpResponse History(const std::string& target) {
    int limit = 100;
    try {
      auto l = QueryParam(target, "limit");
      if (!l.empty()) limit = std::clamp(std::stoi(l), 1, 10000);
    } catch (...) {
      return ErrorReply(400, "limit must be a number");
    }
    auto h = store.ListHistory(limit);
    if (!h) return ErrorReply(500, h.error());
    json out = json::array();
    for (const auto& e : *h)
      out.push_back({{"id", e.id},
                     {"time_ms", e.time_ms},
                     {"node", e.node},
                     {"user", e.user},
                     {"command", e.command}});
    return JsonReply(200, out);
  }

  void Watch(const std::string& target, Responder respond) {
    int64_t after = 0;
    int64_t timeout_ms = 25000;
    std::string node = QueryParam(target, "node");
    // ?node=ID&assignments=1: wakes when that DEA's assignments change (or its scope does).
    if (!node.empty() && QueryParam(target, "assignments") == "1") node = AssignmentsScope(node);
    try {
      auto a = QueryParam(target, "after");
      if (!a.empty()) after = std::stoll(a);
      auto t = QueryParam(target, "timeout_ms");
      if (!t.empty()) timeout_ms = std::clamp<int64_t>(std::stoll(t), 0, 60000);
    } catch (...) {
      respond(ErrorReply(400, "after and timeout_ms must be numbers"));
      return;
    }
    std::lock_guard lock(wmu);
    int64_t rev = Revision();
    int64_t seen = node.empty() ? rev : ScopeRevision(node);
    if (seen > after || timeout_ms == 0) {
      respond(JsonReply(200, {{"revision", rev}, {"members_revision", members_rev.load()}}));
      return;
    }
    Waiter w{after, clock.now() + Millis(timeout_ms), std::move(respond)};
    if (node.empty())
      watches.push_back(std::move(w));
    else
      node_watches.emplace(node, std::move(w));
  }

  // Answers the watches whose scope changed past their `after` (unless
  // only_expired) and those whose deadline passed. A change looks at the
  // watches it concerns only: the unscoped ones and the touched nodes'.
  void Complete(bool only_expired) {
    std::vector<Responder> ready;
    int64_t rev;
    {
      std::lock_guard lock(wmu);
      rev = Revision();
      auto now = clock.now();
      auto it = std::partition(watches.begin(), watches.end(), [&](const auto& w) {
        return !(w.after < rev && !only_expired) && w.deadline > now;
      });
      for (auto i = it; i != watches.end(); ++i) ready.push_back(std::move(i->respond));
      watches.erase(it, watches.end());
      auto done = [&](const std::string& id, const Waiter& w) {
        return w.deadline <= now || (!only_expired && ScopeRevision(id) > w.after);
      };
      auto take = [&](auto first, auto last) {
        for (auto i = first; i != last;) {
          if (done(i->first, i->second)) {
            ready.push_back(std::move(i->second.respond));
            i = node_watches.erase(i);
          } else {
            ++i;
          }
        }
      };
      if (only_expired || scope_touched) {
        take(node_watches.begin(), node_watches.end());
      } else {
        for (const auto& id : touched) {
          auto [first, last] = node_watches.equal_range(id);
          take(first, last);
        }
      }
      if (!only_expired) {
        touched.clear();
        scope_touched = false;
      }
    }
    const int64_t members = members_rev.load();
    for (auto& r : ready) r(JsonReply(200, {{"revision", rev}, {"members_revision", members}}));
  }
};

PrimaryService::PrimaryService(PrimaryConfig config, Store& store, const Clock& clock)
    : impl_(std::make_unique<Impl>(std::move(config), store, clock)) {}
PrimaryService::~PrimaryService() = default;

void PrimaryService::NotifyChanged() { impl_->Complete(false); }
void PrimaryService::ExpireWatches() { impl_->Complete(true); }

void PrimaryService::Handle(const HttpRequest& req, Responder respond) {
  // A body value of the wrong JSON type makes nlohmann throw: answer 400, never crash.
  // `respond` is only moved from on the paths that do not throw afterwards.
  struct Once {
    Responder respond;
    std::atomic<bool> done{false};
    void operator()(HttpResponse r) {
      if (!done.exchange(true)) respond(std::move(r));
    }
  };
  auto once = std::make_shared<Once>();
  once->respond = std::move(respond);
  try {
    HandleUnsafe(req, [once](HttpResponse r) { (*once)(std::move(r)); });
  } catch (const std::exception& e) {
    (*once)(ErrorReply(400, std::string("bad request: ") + e.what()));  // unless already answered
  }
}

void PrimaryService::HandleUnsafe(const HttpRequest& req, Responder respond) {
  Impl& d = *impl_;
  std::string path = PathOf(req.target);
  json body = json::object();
  if (!req.body.empty()) {
    body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      respond(ErrorReply(400, "request body is not a JSON object"));
      return;
    }
  }
  if (path == "/v1/join" && req.method == "POST") {
    auto r = d.Join(body);
    if (r.status == 200) NotifyChanged();
    respond(r);
    return;
  }
  // Everything else is for members only: a client certificate of a node that is in the cluster.
  if (req.peer_cn.empty()) {
    respond(ErrorReply(401, "a node certificate of this cluster is required"));
    return;
  }
  if (path == "/v1/heartbeat" && req.method == "POST") {
    int64_t before = d.Revision();
    auto r = d.Heartbeat(req.peer_cn, body);
    if (d.Revision() != before) NotifyChanged();  // e.g. a new address: agents must see it
    respond(std::move(r));
    return;
  }
  {
    auto member = d.store.GetNode(req.peer_cn);
    if (!member || !*member) {
      respond(ErrorReply(403, "node " + req.peer_cn + " is not a member of this cluster"));
      return;
    }
    if (req.method == "POST" &&
        (path == "/v1/nodes/roles" || path == "/v1/nodes/remove" || path == "/v1/nodes/update")) {
      std::lock_guard lock(d.mu);
      if (auto refused = d.RefuseOtherNode(**member, body)) {
        respond(std::move(*refused));
        return;
      }
    }
  }
  int64_t before = d.Revision();
  HttpResponse r;
  if (path == "/v1/watch" && req.method == "GET") {
    d.Watch(req.target, std::move(respond));
    return;
  } else if (path == "/v1/cluster" && req.method == "GET") {
    // ?nodes=0: the settings only; ?processes=0: the nodes without their reports;
    // ?role=R: only the nodes with role R.
    std::lock_guard lock(d.mu);
    r = JsonReply(200, d.ClusterJson(QueryParam(req.target, "nodes") != "0",
                                     QueryParam(req.target, "processes") != "0",
                                     QueryParam(req.target, "role")));
  } else if (path == "/v1/members" && req.method == "GET") {
    std::lock_guard lock(d.mu);
    r = JsonReply(200, d.MembersJson());
  } else if (path == "/v1/nodes/roles" && req.method == "POST") {
    r = d.SetRoles(body);
  } else if (path == "/v1/nodes/remove" && req.method == "POST") {
    r = d.RemoveNode(body);
  } else if (path == "/v1/nodes/update" && req.method == "POST") {
    r = d.UpdateNode(body);
  } else if (path.rfind("/v1/config/", 0) == 0 && req.method == "POST") {
    r = d.Config(path.substr(11), body);
  } else if (path == "/v1/docs" && req.method == "POST") {
    r = d.WriteDocs(body);
  } else if (path == "/v1/docs/assignment" && req.method == "GET" &&
             !QueryParam(req.target, "node").empty()) {
    r = d.AssignmentsOf(QueryParam(req.target, "node"));
  } else if (path.rfind("/v1/docs/", 0) == 0) {
    r = d.Docs(req.method, path.substr(9), body);
  } else if (path.rfind("/v1/lease/", 0) == 0) {
    r = d.Lease(req.method, path.substr(10), body);
  } else if (path == "/v1/webcert" && req.method == "POST") {
    r = d.WebCert(req.peer_cn, body);
  } else if (path == "/v1/report" && req.method == "POST") {
    r = d.Report(req.peer_cn, body);
  } else if (path == "/v1/settings" && req.method == "POST") {
    std::string endpoint = Str(body, "endpoint");
    if (!IsHostname(endpoint)) {
      r = ErrorReply(400, "endpoint '" + endpoint + "' is not a valid host name");
    } else {
      std::lock_guard lock(d.mu);
      auto s = d.store.SetSetting("endpoint", endpoint);
      d.TouchScope();
      r = s ? JsonReply(200, {{"endpoint", endpoint}}) : ErrorReply(500, s.error());
      if (s) d.Audit(body, "set endpoint " + endpoint);
    }
  } else if (path == "/v1/token" && req.method == "POST") {
    r = d.Token(body);
  } else if (path == "/v1/history" && req.method == "GET") {
    r = d.History(req.target);
  } else if (path == "/v1/history" && req.method == "POST") {
    std::lock_guard lock(d.mu);
    d.Audit(body, "");
    r = JsonReply(200, json::object());
  } else {
    r = ErrorReply(404, "no such API: " + req.method + " " + path);
  }
  if (d.Revision() != before) {
    if (path == "/v1/nodes/remove" || path == "/v1/nodes/update") d.members_rev = d.Revision();
    NotifyChanged();
  }
  respond(std::move(r));
}

}  // namespace kato
