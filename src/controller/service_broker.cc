#include "controller/service_broker.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <cstdio>
#include <thread>

#include "common/json_reply.h"
#include "common/pki.h"
#include "common/ssh_key.h"
#include "controller/app_api.h"
#include "roles/roles.h"
#include "services/record_check.h"
#include "services/service_model.h"

namespace kato {

using json = nlohmann::json;

Status CheckServiceName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 63 && std::islower(static_cast<unsigned char>(name[0]));
  for (char c : name)
    ok = ok && (std::islower(static_cast<unsigned char>(c)) ||
                std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '_');
  if (ok) return Ok();
  return Err("service name '" + name +
             "' is not valid: use 1-63 lowercase letters, digits, '-' and '_', starting with a "
             "letter");
}

namespace {

std::string TypeList() {
  std::string s;
  for (const auto& t : ServiceTypes()) s += (s.empty() ? "" : ", ") + t;
  return s;
}

// "free", or a size: "64M", "1G", "512" (MB). Only redis and memcached have sizes.
Result<std::pair<std::string, int>> ParsePlan(const std::string& type, const std::string& plan) {
  bool sized = type == "redis" || type == "memcached" || type == "filesystem";
  if (plan.empty() || plan == "free") {
    if (type == "filesystem") return std::make_pair(std::string("1024M"), 1024);
    if (sized) return std::make_pair(std::string("64M"), 64);
    return std::make_pair(std::string("free"), 0);
  }
  if (!sized)
    return Err(type + " has no size plans (its instances share the role's server); leave "
                      "--plan out");
  size_t digits = 0;
  while (digits < plan.size() && std::isdigit(static_cast<unsigned char>(plan[digits]))) ++digits;
  std::string unit = plan.substr(digits);
  long mb = digits && digits <= 6 ? std::stol(plan.substr(0, digits)) : 0;
  if (unit == "G" || unit == "g" || unit == "GB") mb *= 1024;
  else if (!unit.empty() && unit != "M" && unit != "m" && unit != "MB") mb = 0;
  long least = type == "filesystem" ? kMinFilesystemMb : 8;
  if (mb < least || mb > 65536)
    return Err("plan '" + plan + "' is not a size between " + std::to_string(least) +
               "M and 64G (e.g. --plan 64M, --plan 1G)");
  return std::make_pair(std::to_string(mb) + "M", static_cast<int>(mb));
}

// `kato config set harbor port_range 35000-40000` (a string "LO-HI").
Result<std::pair<int, int>> HarborRange(Store& store) {
  auto c = store.GetConfig("harbor", "port_range");
  if (!c) return Err(c.error());
  if (!*c) return std::make_pair(kHarborPortLo, kHarborPortHi);
  json v = json::parse((*c)->value_json, nullptr, false);
  std::string text = v.is_string() ? v.get<std::string>() : v.dump();
  int lo = 0, hi = 0;
  char dash = 0, extra = 0;
  if (std::sscanf(text.c_str(), "%d%c%d%c", &lo, &dash, &hi, &extra) != 3 || dash != '-' ||
      lo < 1024 || hi > 65535 || lo > hi)
    return Err("harbor port_range is '" + text +
               "', not LO-HI with 1024 <= LO <= HI <= 65535; fix it with `kato config set harbor "
               "port_range 35000-40000`");
  return std::make_pair(lo, hi);
}

int RolePort(const std::string& type) {
  if (type == "postgresql") return 5432;
  if (type == "mysql") return 3306;
  if (type == "rabbitmq") return 5672;
  if (type == "filesystem") return kFilesystemSshPort;
  return 0;  // its own process: a port of kServicePortLo..Hi
}

std::optional<ServiceState> StateOf(Store& store, const ServiceRecord& s) {
  auto d = store.GetDoc("service_state", s.name);
  if (!d || !*d) return std::nullopt;
  auto st = ServiceStateFromJson(**d);
  if (!st || st->id != s.id) return std::nullopt;
  return *st;
}

json View(Store& store, const ServiceRecord& s, bool with_credentials) {
  json j{{"name", s.name},       {"type", s.type},        {"plan", s.plan},
         {"node_id", s.node_id}, {"node_ip", s.node_ip},  {"port", s.port},
         {"bound_apps", s.bound_apps}, {"created_ms", s.created_ms}, {"org", s.org}};
  auto st = StateOf(store, s);
  j["state"] = s.state == "DELETING" ? "DELETING" : st ? st->state : "PROVISIONING";
  j["message"] = st ? st->message : "";
  if (s.type == "harbor") j["protocol"] = s.protocol;
  if (with_credentials) j["credentials"] = json::parse(CredentialsJson(s));
  return j;
}

HttpResponse StoreError(const std::string& e) { return ErrorReply(500, e); }

constexpr const char kNoService[] = "no service named '";
Result<ServiceRecord> LoadService(Store& store, const std::string& name) {
  auto d = store.GetDoc("service", name);
  if (!d) return Err(d.error());
  if (!*d) return Err(kNoService + name + "' (see `kato service list`)");
  return ServiceFromJson(**d);
}
// 404 for a missing service, 500 for a store that failed.
HttpResponse LoadError(const std::string& e) {
  return ErrorReply(e.rfind(kNoService, 0) == 0 ? 404 : 500, e);
}

}  // namespace

ServiceBroker::ServiceBroker(Options options, Store& store, const Clock& clock)
    : options_(std::move(options)), store_(store), clock_(clock) {}

void ServiceBroker::Pause() {
  if (options_.poll_pause) options_.poll_pause();
  else std::this_thread::sleep_for(Millis(20));  // between looks at the node's answer, bounded
}

HttpResponse ServiceBroker::Handle(const HttpRequest& req) {
  std::string path = req.target.substr(0, req.target.find('?'));
  std::string query = req.target.size() > path.size() ? req.target.substr(path.size() + 1) : "";
  const std::string& m = req.method;
  if (path == "/v2/services" && m == "GET") {
    auto docs = store_.ListDocs("service");
    if (!docs) return StoreError(docs.error());
    json out = json::array();
    for (const auto& [name, value] : *docs)
      if (auto s = ServiceFromJson(value); s) out.push_back(View(store_, *s, false));
    return JsonReply(200, out);
  }
  if (path == "/v2/services" && m == "POST") return Create(req.body);
  std::string rest = path.size() > 13 ? path.substr(13) : "";  // after "/v2/services/"
  std::string name = rest.substr(0, rest.find('/'));
  std::string sub = rest.substr(name.size());
  if (auto s = CheckServiceName(name); !s) return ErrorReply(400, s.error());
  if (sub.empty() && m == "GET") {
    auto s = LoadService(store_, name);
    if (!s) return LoadError(s.error());
    return JsonReply(200, View(store_, *s, true));
  }
  if (sub.empty() && m == "DELETE")
    return Delete(name, query.find("force=1") != std::string::npos ||
                            query.find("force=true") != std::string::npos);
  if (sub == "/bindings" && m == "POST") return Bind(name, req.body);
  if (sub.rfind("/bindings/", 0) == 0 && m == "DELETE") return Unbind(name, sub.substr(10));
  return ErrorReply(404, "no such API: " + m + " " + path);
}

HttpResponse ServiceBroker::Create(const std::string& text) {
  json body = json::parse(text, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return ErrorReply(400, "request body is not a JSON object");
  for (const char* k : {"type", "name", "node", "plan", "org"})
    if (body.contains(k) && !body[k].is_string())
      return ErrorReply(400, std::string("'") + k + "' must be a string");
  if (body.contains("udp") && !body["udp"].is_boolean())
    return ErrorReply(400, "'udp' must be true or false");
  bool udp = body.value("udp", false);
  std::string type = body.value("type", ""), name = body.value("name", "");
  std::string node = body.value("node", ""), plan_text = body.value("plan", "");
  std::string org = body.value("org", "");  // checked by the caller (controller/org_access.h)
  if (type == "mongodb")
    return ErrorReply(400, "mongodb has no server on Debian 12 (no mongod), so kato cannot "
                           "provision it; types: " + TypeList());
  if (!IsServiceType(type))
    return ErrorReply(400, "unknown service type '" + type + "'; types: " + TypeList());
  if (auto s = CheckServiceName(name); !s) return ErrorReply(400, s.error());
  auto plan = ParsePlan(type, plan_text);
  if (!plan) return ErrorReply(400, plan.error());
  if (udp && type != "harbor") return ErrorReply(400, "only harbor services take --udp");
  auto harbor_range = HarborRange(store_);
  if (type == "harbor" && !harbor_range) return ErrorReply(400, harbor_range.error());

  ServiceRecord s;
  {
    std::lock_guard lock(mu_);
    auto existing = store_.GetDoc("service", name);
    if (!existing) return StoreError(existing.error());
    if (*existing) {
      auto old = ServiceFromJson(**existing);
      return ErrorReply(409, "a service named '" + name + "' already exists" +
                                 (old && old->state == "DELETING" ? " (it is being deleted)" : ""));
    }
    auto nodes = store_.ListNodes();
    auto docs = store_.ListDocs("service");
    if (!nodes) return StoreError(nodes.error());
    if (!docs) return StoreError(docs.error());
    std::vector<ServiceRecord> all;
    for (const auto& [n, v] : *docs)
      if (auto r = ServiceFromJson(v); r) all.push_back(*r);
    const std::string role = RoleOfServiceType(type);
    const NodeRecord* chosen = nullptr;
    size_t chosen_load = 0;
    for (const auto& n : *nodes) {
      bool has_role = std::count(n.roles.begin(), n.roles.end(), role) > 0;
      if (!node.empty() && n.ip != node) continue;
      if (!has_role) {
        if (!node.empty())
          return ErrorReply(400, "node " + node + " has no " + role + " role; add it with `kato role add " +
                                     role + "` on that node, or leave --node out");
        continue;
      }
      size_t load = std::count_if(all.begin(), all.end(),
                                  [&](const ServiceRecord& r) { return r.node_id == n.id; });
      if (!chosen || load < chosen_load) chosen = &n, chosen_load = load;
    }
    if (!chosen && !node.empty())
      return ErrorReply(400, "no node " + node + " in the cluster (see `kato node list`)");
    if (!chosen)
      return ErrorReply(400, "no node of the cluster has the " + role + " role, which " + type +
                                 " services need; add it to a node with `kato role add " + role +
                                 "`");
    s.name = name;
    s.type = type;
    s.org = org;
    s.id = RandomHex(8);
    s.plan = plan->first;
    s.plan_mb = plan->second;
    s.node_id = chosen->id;
    s.node_ip = chosen->ip;
    s.port = RolePort(type);
    if (type == "harbor") {
      auto [lo, hi] = *harbor_range;
      std::set<int> used;
      for (const auto& r : all)
        if (r.node_id == s.node_id && r.type == "harbor") used.insert(r.port);
      for (int p = lo; p <= hi && !s.port; ++p)
        if (!used.count(p)) s.port = p;
      if (!s.port)
        return ErrorReply(409, "the harbor port range " + std::to_string(lo) + "-" +
                                   std::to_string(hi) + " of node " + s.node_ip +
                                   " is full; widen it with `kato config set harbor port_range "
                                   "LO-HI`, or delete a harbor service");
      s.protocol = udp ? "udp" : "tcp";
    } else if (!s.port) {
      std::set<int> used;
      for (const auto& r : all)
        if (r.node_id == s.node_id) used.insert(r.port);
      for (int p = kServicePortLo; p <= kServicePortHi && !s.port; ++p)
        if (!used.count(p)) s.port = p;
      if (!s.port)
        return ErrorReply(409, "node " + s.node_ip + " has no free service port (" +
                                   std::to_string(kServicePortLo) + "-" +
                                   std::to_string(kServicePortHi) +
                                   " are all taken); place it on another node with --node");
    }
    if (type != "redis" && type != "harbor") s.username = "u" + s.id;
    if (type == "postgresql" || type == "mysql") s.dbname = "d" + s.id;
    if (type == "rabbitmq") s.dbname = "v" + s.id;
    if (type != "harbor" && type != "filesystem") s.password = RandomHex(16);
    if (type == "filesystem") {
      auto key = CreateSshKey("kato-fs-" + s.id);
      if (!key) return ErrorReply(500, key.error());
      s.ssh_key = key->private_pem;
      s.ssh_public_key = key->public_line;
    }
    s.created_ms = clock_.wall_ms();
    if (auto st = store_.PutDoc("service", name, ServiceToJson(s)); !st) return StoreError(st.error());
  }
  // The service node provisions it; wait for its answer.
  auto deadline = clock_.now() + options_.provision_wait;
  for (;;) {
    auto st = StateOf(store_, s);
    if (st && st->state == "READY") return JsonReply(201, View(store_, s, true));
    if (st && st->state == "FAILED") {
      // Undo: the node removes what it made, then the documents.
      s.state = "DELETING";
      (void)store_.PutDoc("service", name, ServiceToJson(s));
      return ErrorReply(500, "node " + s.node_ip + " could not provision " + type + " service '" +
                                 name + "': " + st->message);
    }
    if (clock_.now() >= deadline) {
      std::string why = st ? st->message : "";
      return ErrorReply(504, "node " + s.node_ip + " has not provisioned service '" + name +
                                 "' within " + std::to_string(options_.provision_wait.count() / 1000) +
                                 " s" + (why.empty() ? "" : " (" + why + ")") +
                                 "; it stays, PROVISIONING: see `kato service info " + name +
                                 "`, or delete it");
    }
    Pause();
  }
}

HttpResponse ServiceBroker::Delete(const std::string& name, bool force) {
  ServiceRecord s;
  {
    std::lock_guard lock(mu_);
    auto r = LoadService(store_, name);
    if (!r) return LoadError(r.error());
    s = *r;
    if (!s.bound_apps.empty() && !force) {
      std::string apps;
      for (const auto& a : s.bound_apps) apps += (apps.empty() ? "" : ", ") + a;
      return ErrorReply(409, "service '" + name + "' is bound to " + apps +
                                 "; unbind it first, or delete with --force (which unbinds)");
    }
    for (const auto& app : s.bound_apps) {
      auto a = store_.GetDoc("app", app);
      if (!a || !*a) continue;
      auto rec = AppFromJson(**a);
      if (!rec) continue;
      ++rec->version;  // its instances are replaced without the service
      rec->updated_ms = clock_.wall_ms();
      (void)store_.PutDoc("app", app, AppToJson(*rec));
    }
    s.bound_apps.clear();
    s.state = "DELETING";
    if (auto st = store_.PutDoc("service", name, ServiceToJson(s)); !st) return StoreError(st.error());
  }
  auto deadline = clock_.now() + options_.delete_wait;
  for (;;) {
    auto d = store_.GetDoc("service", name);
    if (d && !*d) return JsonReply(200, {{"deleted", name}});
    if (clock_.now() >= deadline)
      return JsonReply(202, {{"deleting", name},
                             {"message", "node " + s.node_ip +
                                             " has not removed it yet; it will when it is back"}});
    Pause();
  }
}

HttpResponse ServiceBroker::Bind(const std::string& name, const std::string& text) {
  json body = json::parse(text, nullptr, false);
  if (body.is_discarded() || !body.is_object() || !body.contains("app") || !body["app"].is_string())
    return ErrorReply(400, "bind needs {\"app\": NAME}");
  std::string app = body["app"];
  if (auto s = CheckAppName(app); !s) return ErrorReply(400, s.error());
  std::lock_guard lock(mu_);
  auto s = LoadService(store_, name);
  if (!s) return LoadError(s.error());
  if (s->state == "DELETING") return ErrorReply(409, "service '" + name + "' is being deleted");
  auto a = store_.GetDoc("app", app);
  if (!a) return StoreError(a.error());
  if (!*a) return ErrorReply(404, "no app named '" + app + "' (see `kato app list`)");
  auto rec = AppFromJson(**a);
  if (!rec) return StoreError(rec.error());
  if (std::count(s->bound_apps.begin(), s->bound_apps.end(), app))
    return ErrorReply(409, "service '" + name + "' is already bound to " + app);
  s->bound_apps.push_back(app);
  std::sort(s->bound_apps.begin(), s->bound_apps.end());
  if (auto st = store_.PutDoc("service", name, ServiceToJson(*s)); !st) return StoreError(st.error());
  ++rec->version;
  rec->updated_ms = clock_.wall_ms();
  if (auto st = store_.PutDoc("app", app, AppToJson(*rec)); !st) return StoreError(st.error());
  json v = View(store_, *s, false);
  v["app_version"] = rec->version;
  return JsonReply(200, v);
}

HttpResponse ServiceBroker::Unbind(const std::string& name, const std::string& app) {
  std::lock_guard lock(mu_);
  auto s = LoadService(store_, name);
  if (!s) return LoadError(s.error());
  auto it = std::find(s->bound_apps.begin(), s->bound_apps.end(), app);
  if (it == s->bound_apps.end())
    return ErrorReply(404, "service '" + name + "' is not bound to '" + app + "'");
  s->bound_apps.erase(it);
  if (auto st = store_.PutDoc("service", name, ServiceToJson(*s)); !st) return StoreError(st.error());
  json v = View(store_, *s, false);
  if (auto a = store_.GetDoc("app", app); a && *a)
    if (auto rec = AppFromJson(**a); rec) {
      ++rec->version;
      rec->updated_ms = clock_.wall_ms();
      if (auto st = store_.PutDoc("app", app, AppToJson(*rec)); !st) return StoreError(st.error());
      v["app_version"] = rec->version;
    }
  return JsonReply(200, v);
}

void ServiceBroker::ForgetApp(const std::string& app) {
  std::lock_guard lock(mu_);
  auto docs = store_.ListDocs("service");
  if (!docs) return;
  for (const auto& [name, value] : *docs) {
    auto s = ServiceFromJson(value);
    if (!s) continue;
    auto it = std::find(s->bound_apps.begin(), s->bound_apps.end(), app);
    if (it == s->bound_apps.end()) continue;
    s->bound_apps.erase(it);
    (void)store_.PutDoc("service", name, ServiceToJson(*s));
  }
}

}  // namespace kato
