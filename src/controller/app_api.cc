#include "controller/app_api.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "common/fs.h"
#include "common/json_reply.h"
#include "common/pki.h"
#include "controller/console.h"
#include "controller/org_access.h"

namespace kato {

using json = nlohmann::json;

namespace {
constexpr char kCsrfRefused[] = "this change needs the console's CSRF token (X-CSRF-Token)";
}  // namespace

namespace {

// The domain apps live under: the API endpoint without its "api." prefix.
std::string DomainOf(const std::string& endpoint) {
  return endpoint.rfind("api.", 0) == 0 ? endpoint.substr(4) : endpoint;
}

// Reads an optional field of the expected type; a present field of another type is an error.
template <typename T>
Status Field(const json& body, const char* key, std::optional<T>& out, const char* expect) {
  if (!body.contains(key) || body[key].is_null()) return Ok();
  const json& v = body[key];
  bool ok = false;
  if constexpr (std::is_same_v<T, int>) ok = v.is_number_integer();
  if constexpr (std::is_same_v<T, std::string>) ok = v.is_string();
  if (!ok) return Err(std::string("'") + key + "' must be " + expect);
  out = v.get<T>();
  return Ok();
}

Status EnvField(const json& body, std::optional<std::map<std::string, std::string>>& out) {
  if (!body.contains("env") || body["env"].is_null()) return Ok();
  if (!body["env"].is_object()) return Err("'env' must be an object of strings");
  std::map<std::string, std::string> env;
  for (const auto& [k, v] : body["env"].items()) {
    if (!v.is_string()) return Err("env value of '" + k + "' must be a string");
    if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos)
      return Err("env name '" + k + "' is not a valid variable name");
    if (k == "PORT" || k == "VCAP_APP_PORT" || k == "VCAP_APPLICATION" || k == "VCAP_SERVICES")
      return Err("env name '" + k + "' is set by kato for every instance");
    env[k] = v.get<std::string>();
  }
  out = std::move(env);
  return Ok();
}

}  // namespace

std::string AppToJson(const AppRecord& a) {
  return json{{"name", a.name},
              {"instances", a.instances},
              {"memory_mb", a.memory_mb},
              {"disk_mb", a.disk_mb},
              {"command", a.command},
              {"env", a.env},
              {"state", a.state},
              {"version", a.version},
              {"droplet_sha256", a.droplet_sha256},
              {"droplet_size", a.droplet_size},
              {"buildpack", a.buildpack},
              {"source_sha256", a.source_sha256},
              {"staged_key", a.staged_key},
              {"staged_command", a.staged_command},
              {"detected_buildpack", a.detected_buildpack},
              {"org", a.org},
              {"created_ms", a.created_ms},
              {"updated_ms", a.updated_ms}}
      .dump();
}

Result<AppRecord> AppFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Err("stored app is not a JSON object");
  try {
    AppRecord a;
    a.name = j.at("name").get<std::string>();
    a.instances = j.at("instances").get<int>();
    a.memory_mb = j.at("memory_mb").get<int>();
    a.disk_mb = j.value("disk_mb", 1024);
    a.command = j.value("command", "");
    a.env = j.value("env", std::map<std::string, std::string>{});
    a.state = j.value("state", "STARTED");
    a.version = j.value("version", static_cast<int64_t>(1));
    a.droplet_sha256 = j.value("droplet_sha256", "");
    a.droplet_size = j.value("droplet_size", static_cast<int64_t>(0));
    a.buildpack = j.value("buildpack", "");
    a.source_sha256 = j.value("source_sha256", "");
    a.staged_key = j.value("staged_key", "");
    a.staged_command = j.value("staged_command", "");
    a.detected_buildpack = j.value("detected_buildpack", "");
    a.org = j.value("org", "");
    a.created_ms = j.value("created_ms", static_cast<int64_t>(0));
    a.updated_ms = j.value("updated_ms", static_cast<int64_t>(0));
    return a;
  } catch (const json::exception& e) {
    return Err(std::string("stored app is damaged: ") + e.what());
  }
}

Status CheckAppName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 63 && name[0] >= 'a' && name[0] <= 'z' &&
            name.back() != '-';
  for (char c : name) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  if (ok) return Ok();
  return Err("app name '" + name +
             "' is not valid: use 1-63 lowercase letters, digits and '-', starting with a letter "
             "(it becomes the host name NAME.DOMAIN)");
}

const std::vector<std::string>& ReservedAppNames() {
  static const std::vector<std::string> names{"admin", "aok", "api", "console",
                                              "login", "uaa", "www"};
  return names;
}

Status CheckNewAppName(const std::string& name, const std::string& endpoint) {
  KATO_TRY(CheckAppName(name));
  if (name + "." + DomainOf(endpoint) == endpoint)
    return Err("app name '" + name + "' would take the route " + endpoint +
               ", the cluster's API endpoint; choose another name");
  const auto& reserved = ReservedAppNames();
  if (std::find(reserved.begin(), reserved.end(), name) != reserved.end()) {
    std::string list;
    for (const auto& r : reserved) list += (list.empty() ? "" : ", ") + r;
    return Err("app name '" + name + "' is reserved for the cluster (reserved: " + list +
               "); choose another name");
  }
  return Ok();
}

// ---- DropletStore ----------------------------------------------------------

Status DropletStore::CheckWritable() const {
  KATO_TRY(MakeDirs(dir_, 0750));
  std::string probe = dir_ + "/.write-test." + std::to_string(::getpid());
  if (auto s = WriteFileAtomic(probe, "ok", 0600); !s)
    return Err("droplets directory " + dir_ + " is not writable: " + s.error());
  std::remove(probe.c_str());
  return Ok();
}

std::string DropletStore::PathOf(const std::string& sha256) const {
  return IsSha256Hex(sha256) ? dir_ + "/sha256/" + sha256 + ".tar.gz" : "";
}

Result<std::string> DropletStore::Save(const std::string& bytes) const {
  std::string sha256 = Sha256Hex(bytes);
  KATO_TRY(MakeDirs(dir_ + "/sha256", 0750));
  KATO_TRY(WriteFileAtomic(PathOf(sha256), bytes, 0640));
  return sha256;
}

void DropletStore::Remove(const std::string& sha256) const {
  if (std::string path = PathOf(sha256); !path.empty()) std::remove(path.c_str());
}

HttpResponse ServeDroplet(const DropletStore& droplets, const HttpRequest& req) {
  const std::string prefix = "/v1/droplets/";
  std::string path = req.target.substr(0, req.target.find('?'));
  std::string file = path.rfind(prefix, 0) == 0 ? droplets.PathOf(path.substr(prefix.size())) : "";
  if (req.method != "GET" || file.empty())
    return ErrorReply(
        404, "no such API: " + req.method + " " + path + " (droplets are GET /v1/droplets/SHA256)");
  auto bytes = ReadFile(file);
  if (!bytes) return ErrorReply(404, "no droplet " + path.substr(prefix.size()) + " here");
  HttpResponse r;
  r.body = std::move(*bytes);
  r.content_type = "application/gzip";
  return r;
}

// ---- ControllerApi -----------------------------------------------------------

HttpResponse ReceiveDroplet(const DropletStore& droplets, const HttpRequest& req, size_t max_bytes) {
  if (req.body.size() < 2 || static_cast<unsigned char>(req.body[0]) != 0x1f ||
      static_cast<unsigned char>(req.body[1]) != 0x8b)
    return ErrorReply(400, "a droplet is a .tar.gz archive");
  if (req.body.size() > max_bytes)
    return ErrorReply(413, "the droplet is larger than " + std::to_string(max_bytes >> 20) +
                               " MiB: a droplet may be at most that big");
  auto sha = droplets.Save(req.body);
  if (!sha) return ErrorReply(500, sha.error());
  return JsonReply(200, {{"sha256", *sha}});
}

ControllerApi::ControllerApi(Options options, Store& store, const DropletStore& droplets,
                             const Clock& clock)
    : options_(std::move(options)),
      store_(store),
      droplets_(droplets),
      clock_(clock),
      services_(options_.services, store, clock),
      staging_(options_.staging, store, droplets, clock),
      accounts_(options_.accounts, store, clock),
      nodes_(options_.nodes) {}

namespace {

struct Ctx {
  Store& store;
  const DropletStore& droplets;
  const Clock& clock;
  const ControllerApi::Options& options;
};

std::string Endpoint(Store& store) {
  auto e = store.GetSetting("endpoint");
  return e && *e ? **e : "";
}

// The instances of an app: assignments joined with the DEAs' reports.
json Instances(Ctx& c, const AppRecord& app) {
  std::map<std::string, NodeRecord> nodes;
  if (auto l = c.store.ListNodes(); l)
    for (const auto& n : *l) nodes[n.id] = n;
  std::map<std::string, json> reported;  // by instance id
  if (auto reports = c.store.ListDocs("instances"); reports)
    for (const auto& [node_id, value] : *reports) {
      json r = json::parse(value, nullptr, false);
      if (!r.is_object() || !r.contains("instances") || !r["instances"].is_array()) continue;
      for (auto inst : r["instances"]) {
        if (!inst.is_object() || !inst.contains("instance_id")) continue;
        inst["node_id"] = node_id;
        reported[inst.value("instance_id", "")] = inst;
      }
    }
  json out = json::array();
  auto assignments = c.store.ListDocs("assignment");
  if (!assignments) return out;
  for (const auto& [key, value] : *assignments) {
    if (key.rfind(app.name + "/", 0) != 0) continue;
    json a = json::parse(value, nullptr, false);
    if (!a.is_object()) continue;
    std::string id = a.value("instance_id", "");
    std::string node_id = a.value("node_id", "");
    json inst{{"index", a.value("index", 0)},
              {"version", a.value("version", static_cast<int64_t>(0))},
              {"instance_id", id},
              {"node_id", node_id},
              {"node_ip", nodes.count(node_id) ? nodes[node_id].ip : ""},
              {"state", "STARTING"},
              {"port", 0}};
    if (auto it = reported.find(id); it != reported.end()) {
      inst["state"] = it->second.value("state", "STARTING");
      inst["port"] = it->second.value("port", 0);
      inst["message"] = it->second.value("message", "");
      if (it->second.contains("harbor")) inst["harbor"] = it->second["harbor"];  // its harbor ports
    }
    out.push_back(inst);
  }
  return out;
}

json AppView(Ctx& c, const AppRecord& a, bool with_instances) {
  std::string domain = DomainOf(Endpoint(c.store));
  json j{{"name", a.name},
         {"org", a.org},
         {"state", a.state},
         {"instances", a.instances},
         {"memory_mb", a.memory_mb},
         {"disk_mb", a.disk_mb},
         {"command", a.command},
         {"env", a.env},
         {"version", a.version},
         {"has_bits", !a.droplet_sha256.empty()},
         {"buildpack", a.buildpack},
         {"detected_buildpack", a.detected_buildpack},
         {"staged_command", a.staged_command},
         {"urls", json::array({a.name + "." + domain})}};
  if (c.options.app_health) {
    auto [state, message] = c.options.app_health(a.name);
    j["health"] = {{"state", state}, {"message", message}};
  }
  json inst = Instances(c, a);
  int running = 0;
  for (const auto& i : inst) running += i["state"] == "RUNNING";
  j["running"] = running;
  j["placed"] = inst.size();  // instances assigned to a DEA, in any state
  if (with_instances) j["instance_list"] = inst;
  return j;
}

Result<AppRecord> LoadApp(Ctx& c, const std::string& name) {
  KATO_TRY(CheckAppName(name));
  auto doc = c.store.GetDoc("app", name);
  if (!doc) return Err(doc.error());
  if (!*doc) return Err("no app named '" + name + "' (see `kato app list`)");
  return AppFromJson(**doc);
}

HttpResponse AppError(const kato::Error& e) {
  bool missing = e.message.rfind("no app named", 0) == 0;
  return ErrorReply(missing ? 404 : 400, e.message);
}

// Applies the optional fields of a create/update body to `app`; true when
// running instances must be replaced (command, env or memory changed).
Result<bool> ApplyChanges(const ControllerApi::Options& o, const json& body, AppRecord& app) {
  std::optional<int> instances, memory, disk;
  std::optional<std::string> command, state, buildpack;
  std::optional<std::map<std::string, std::string>> env;
  KATO_TRY(Field(body, "instances", instances, "a whole number"));
  KATO_TRY(Field(body, "memory", memory, "a whole number of MB"));
  KATO_TRY(Field(body, "disk", disk, "a whole number of MB"));
  KATO_TRY(Field(body, "command", command, "a string"));
  KATO_TRY(Field(body, "buildpack", buildpack, "a buildpack's name"));
  KATO_TRY(Field(body, "state", state, "\"STARTED\" or \"STOPPED\""));
  KATO_TRY(EnvField(body, env));
  if (instances && (*instances < 0 || *instances > o.max_instances))
    return Err("instances must be between 0 and " + std::to_string(o.max_instances));
  if (memory && (*memory < 16 || *memory > o.max_memory_mb))
    return Err("memory must be between 16 and " + std::to_string(o.max_memory_mb) + " MB");
  if (disk && (*disk < 64 || *disk > o.max_disk_mb))
    return Err("disk must be between 64 and " + std::to_string(o.max_disk_mb) + " MB");
  if (state && *state != "STARTED" && *state != "STOPPED")
    return Err("state must be \"STARTED\" or \"STOPPED\"");
  if (command && command->find('\0') != std::string::npos) return Err("command contains NUL");
  if (buildpack && !buildpack->empty() &&
      (buildpack->size() > 63 || buildpack->find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") !=
                                     std::string::npos))
    return Err("buildpack '" + *buildpack + "' is not a buildpack's name (see `kato buildpack list`)");
  bool replace = (command && *command != app.command) || (env && *env != app.env) ||
                 (memory && *memory != app.memory_mb) || (disk && *disk != app.disk_mb);
  if (instances) app.instances = *instances;
  if (memory) app.memory_mb = *memory;
  if (disk) app.disk_mb = *disk;
  if (command) app.command = *command;
  if (buildpack) app.buildpack = *buildpack;
  if (env) app.env = *env;
  if (state) app.state = *state;
  return replace;
}

// The services API as `caller` may use it: a developer's list holds their
// organizations' services, a new service goes to an organization (within its
// quota), and a service is bound only to an app of its own organization.
HttpResponse ServicesFor(ServiceBroker& broker, Store& store, const OrgAccess& access,
                         const Caller& caller, const HttpRequest& req) {
  std::string path = req.target.substr(0, req.target.find('?'));
  const std::string& m = req.method;
  if (path == "/v2/services" && m == "GET") {
    HttpResponse r = broker.Handle(req);
    json all = json::parse(r.body, nullptr, false);
    if (r.status != 200 || !all.is_array() || caller.admin()) return r;
    json mine = json::array();
    for (const auto& s : all)
      if (caller.InOrg(s.value("org", ""))) mine.push_back(s);
    return JsonReply(200, mine);
  }
  json body = json::object();
  if (!req.body.empty()) {
    body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object())
      return ErrorReply(400, "request body is not a JSON object");
  }
  if (path == "/v2/services" && m == "POST") {
    if (body.contains("org") && !body["org"].is_string())
      return ErrorReply(400, "'org' must be an organization's name");
    HttpResponse refusal;
    auto org = access.ForNew(body.value("org", ""), &refusal);
    if (!org) return refusal;
    if (auto q = access.CheckServiceQuota(*org); !q) return ErrorReply(403, q.error());
    HttpRequest create = req;
    body["org"] = *org;
    create.body = body.dump();
    return broker.Handle(create);
  }
  std::string rest = path.size() > 13 ? path.substr(13) : "";  // after "/v2/services/"
  std::string name = rest.substr(0, rest.find('/'));
  Result<std::optional<std::string>> doc = std::optional<std::string>();
  if (CheckServiceName(name)) doc = store.GetDoc("service", name);
  if (!doc) return ErrorReply(500, doc.error());
  if (!*doc) return broker.Handle(req);  // its own answer for a missing service
  std::string org = json::parse(**doc, nullptr, false).value("org", "");
  if (!caller.InOrg(org)) return OrgAccess::NotFound("service", name);
  if (rest.substr(name.size()) == "/bindings" && m == "POST" && body.contains("app") &&
      body["app"].is_string()) {
    std::string app_name = body["app"];
    Result<std::optional<std::string>> app_doc = std::optional<std::string>();
    if (CheckAppName(app_name)) app_doc = store.GetDoc("app", app_name);
    if (!app_doc) return ErrorReply(500, app_doc.error());
    if (*app_doc) {
      auto app = AppFromJson(**app_doc);
      if (app && !caller.InOrg(app->org)) return OrgAccess::NotFound("app", app_name);
      if (app && app->org != org)
        return ErrorReply(400, "app '" + app_name + "' belongs to " +
                                   (app->org.empty() ? "no organization" : "organization '" + app->org + "'") +
                                   " and service '" + name + "' to " +
                                   (org.empty() ? "none" : "'" + org + "'") +
                                   ": an app binds only its own organization's services");
    }
  }
  return broker.Handle(req);
}

}  // namespace

Result<Caller> ControllerApi::Identify(const HttpRequest& req) const {
  // A verified node certificate (the internal TLS port) stands for the admin:
  // `kato app ...` on any node goes through its agent that way.
  if (!req.peer_cn.empty()) return Caller{Caller::Kind::kNode};
  auto auth = req.headers.find("authorization");
  std::string token;
  if (auth != req.headers.end() && auth->second.rfind("Bearer ", 0) == 0)
    token = auth->second.substr(7);
  if (auth == req.headers.end()) {
    // The Management Console's session cookie; its changes need the CSRF token too.
    std::string session = Console::SessionToken(req);
    if (!session.empty()) {
      if (!Console::CsrfOk(req, session))
        return Err(std::string(kCsrfRefused) + ": reload the console and try again");
      return accounts_.Authenticate(session);
    }
  }
  if (token.rfind("kato_", 0) == 0) return accounts_.Authenticate(token);
  if (!token.empty() && !options_.admin_token_hash.empty() &&
      Sha256Hex(token) == options_.admin_token_hash)
    return Caller{Caller::Kind::kAdmin};
  return Err(
      "this API needs a credential: sign in with `kato login`, or use the admin credential "
      "(Authorization: Bearer TOKEN; print it with `kato node token --api` on the core)");
}

namespace {

constexpr long kMaxOpenBody = 64 * 1024;

HttpResponse Refusal413() {
  HttpResponse r = ErrorReply(413, "a sign-in is at most 64 KiB, with a Content-Length");
  Console::AddSecurityHeaders(r);
  return r;
}

HttpResponse Refusal(const std::string& why) {
  HttpResponse r = ErrorReply(why.rfind(kCsrfRefused, 0) == 0 ? 403 : 401, why);
  Console::AddSecurityHeaders(r);
  return r;
}

}  // namespace

std::optional<HttpResponse> ControllerApi::CheckCredential(const HttpRequest& req) const {
  // The console's pages, sign-in and session check decide for themselves; with
  // no credential checked yet, their bodies are small (no 64 MiB uploads).
  if (Accounts::IsLogin(req) || Console::Serves(req.target.substr(0, req.target.find('?')))) {
    auto length = req.headers.find("content-length");
    bool chunked = req.headers.count("transfer-encoding") > 0;
    if (chunked || (length != req.headers.end() &&
                    (length->second.size() > 6 || std::atol(length->second.c_str()) > kMaxOpenBody)))
      return Refusal413();
    return std::nullopt;
  }
  if (auto caller = Identify(req); !caller) return Refusal(caller.error());
  return std::nullopt;
}

HttpResponse ControllerApi::Handle(const HttpRequest& req) {
  HttpResponse r = HandleApi(req);
  Console::AddSecurityHeaders(r);
  return r;
}

HttpResponse ControllerApi::HandleApi(const HttpRequest& req) {
  try {
    std::string path = req.target.substr(0, req.target.find('?'));
    const std::string& m = req.method;
    if (Accounts::IsLogin(req)) return accounts_.Handle(req, Caller{});
    auto caller = Identify(req);
    if (Console::Serves(path))
      return Console::Handle(req, accounts_, caller ? std::optional<Caller>(*caller) : std::nullopt);
    if (!caller) return Refusal(caller.error());
    Ctx c{store_, droplets_, clock_, options_};
    OrgAccess access(store_, *caller);
    if (Accounts::Serves(path)) return accounts_.Handle(req, *caller);
    if (NodeOps::Serves(path)) return nodes_.Handle(req, *caller);
    if (ServiceBroker::Serves(path)) return ServicesFor(services_, store_, access, *caller, req);
    if (StagingApi::Serves(path)) {
      if (m != "GET" && !caller->admin()) return ErrorReply(403, "changing buildpacks needs an admin");
      return staging_.HandleBuildpacks(req);
    }

    if (path == "/v2/info" && m == "GET") {
      json nodes = json::array();
      json controllers = json::array();
      auto lease = store_.GetLease(kLeaderLease);
      std::string leader = lease && *lease ? (*lease)->holder : "";
      if (auto l = store_.ListNodes(); l)
        for (const auto& n : *l) {
          nodes.push_back({{"id", n.id}, {"ip", n.ip}, {"roles", n.roles}});
          if (std::count(n.roles.begin(), n.roles.end(), "controller"))
            controllers.push_back({{"id", n.id}, {"ip", n.ip}, {"leader", n.id == leader}});
        }
      auto core = store_.GetSetting("core_ip");
      if (!caller->admin())  // the cluster's machines are the operators' business
        return JsonReply(200, {{"version", options_.version}, {"endpoint", Endpoint(store_)}});
      return JsonReply(200, {{"version", options_.version},
                         {"endpoint", Endpoint(store_)},
                         {"core_ip", core && *core ? **core : ""},
                         {"nodes", nodes},
                         {"controllers", controllers}});
    }
    if (path == "/v2/apps" && m == "GET") {
      auto docs = store_.ListDocs("app");
      if (!docs) return ErrorReply(500, docs.error());
      json out = json::array();
      for (const auto& [name, value] : *docs)
        if (auto a = AppFromJson(value); a && caller->InOrg(a->org))
          out.push_back(AppView(c, *a, false));
      return JsonReply(200, out);
    }
    json body = json::object();
    if (!req.body.empty() && path.find("/bits") == std::string::npos) {
      body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object())
        return ErrorReply(400, "request body is not a JSON object");
    }
    if (path == "/v2/apps" && m == "POST") {
      std::string name = body.value("name", "");
      if (auto s = CheckNewAppName(name, Endpoint(store_)); !s) return ErrorReply(400, s.error());
      auto existing = store_.GetDoc("app", name);
      if (!existing) return ErrorReply(500, existing.error());
      if (*existing) return ErrorReply(409, "an app named '" + name + "' already exists");
      AppRecord app;
      app.name = name;
      app.created_ms = app.updated_ms = clock_.wall_ms();
      if (body.contains("org") && !body["org"].is_string())
        return ErrorReply(400, "'org' must be an organization's name");
      HttpResponse refusal;
      auto org = access.ForNew(body.value("org", ""), &refusal);
      if (!org) return refusal;
      app.org = *org;
      if (auto r = ApplyChanges(options_, body, app); !r) return ErrorReply(400, r.error());
      if (auto q = access.CheckAppQuota(app); !q) return ErrorReply(403, q.error());
      if (auto s = store_.PutDoc("app", name, AppToJson(app)); !s) return ErrorReply(500, s.error());
      return JsonReply(201, AppView(c, app, true));
    }
    const std::string prefix = "/v2/apps/";
    if (path.rfind(prefix, 0) != 0) return ErrorReply(404, "no such API: " + m + " " + path);
    std::string rest = path.substr(prefix.size());
    std::string name = rest.substr(0, rest.find('/'));
    std::string sub = rest.size() > name.size() ? rest.substr(name.size()) : "";
    auto app = LoadApp(c, name);
    if (!app) return AppError(std::move(app).take_error());
    if (!caller->InOrg(app->org)) return OrgAccess::NotFound("app", name);
    if (sub == "/staged" && !caller->node())
      return ErrorReply(403, "staging outcomes come from the DEAs (node certificates)");

    if (sub.empty() && m == "GET") return JsonReply(200, AppView(c, *app, true));
    if (sub.empty() && m == "PUT") {
      auto replace = ApplyChanges(options_, body, *app);
      if (!replace) return ErrorReply(400, replace.error());
      if (auto q = access.CheckAppQuota(*app); !q) return ErrorReply(403, q.error());
      if (*replace) ++app->version;
      app->updated_ms = clock_.wall_ms();
      if (auto s = store_.PutDoc("app", name, AppToJson(*app)); !s) return ErrorReply(500, s.error());
      return JsonReply(200, AppView(c, *app, true));
    }
    if (sub == "/bits" && m == "PUT") {
      if (req.body.empty()) return ErrorReply(400, "upload the app's .tar.gz as the request body");
      if (req.body.size() > options_.max_bits_bytes)
        return ErrorReply(413, "app archive is larger than " +
                              std::to_string(options_.max_bits_bytes >> 20) + " MiB");
      // gzip magic: the DEA unpacks it safely; here we only refuse what is clearly not one.
      if (req.body.size() < 2 || static_cast<unsigned char>(req.body[0]) != 0x1f ||
          static_cast<unsigned char>(req.body[1]) != 0x8b)
        return ErrorReply(400, "app bits must be a .tar.gz archive");
      auto sha = droplets_.Save(req.body);
      if (!sha) return ErrorReply(500, sha.error());
      std::string old_source = app->source_sha256;
      auto started = staging_.Stage(*app, *sha);
      if (started.status != 200) {
        ForgetArchive(store_, droplets_, *sha);
        return ErrorReply(started.status, started.error);
      }
      app->updated_ms = clock_.wall_ms();
      if (auto s = store_.PutDoc("app", name, AppToJson(*app)); !s) return ErrorReply(500, s.error());
      if (old_source != *sha) ForgetArchive(store_, droplets_, old_source);
      json view = AppView(c, *app, true);
      view["staging"] = started.staging;
      return JsonReply(200, view);
    }
    if (sub == "/staging" && m == "GET") return staging_.Status(name, req);
    if (sub == "/staged" && m == "POST") return staging_.Staged(name, req);
    if (sub == "/logs" && m == "GET") {
      if (!options_.fetch_log) return ErrorReply(501, "instance logs are not available here");
      int lines = 100;
      auto q = req.target.find("lines=");
      if (q != std::string::npos) lines = std::clamp(std::atoi(req.target.c_str() + q + 6), 1, 10000);
      json out = json::array();
      for (const auto& inst : Instances(c, *app)) {
        json entry{{"index", inst["index"]}, {"instance_id", inst["instance_id"]},
                   {"node_ip", inst["node_ip"]}, {"state", inst["state"]}};
        auto log = options_.fetch_log(inst["node_ip"], inst["instance_id"], lines);
        json body = log ? json::parse(*log, nullptr, false) : json();
        if (log && body.is_object()) {
          entry["end_offset"] = body.value("end_offset", static_cast<uint64_t>(0));
          entry["text"] = body.value("text", "");
        } else {
          entry["error"] = log ? "the DEA sent a malformed log" : log.error();
        }
        out.push_back(entry);
      }
      return JsonReply(200, out);
    }
    if (sub == "/restart" && m == "POST") {
      ++app->version;
      app->state = "STARTED";
      if (auto q = access.CheckAppQuota(*app); !q) return ErrorReply(403, q.error());
      app->updated_ms = clock_.wall_ms();
      if (auto s = store_.PutDoc("app", name, AppToJson(*app)); !s) return ErrorReply(500, s.error());
      return JsonReply(200, AppView(c, *app, true));
    }
    if (sub.empty() && m == "DELETE") {
      if (auto d = store_.DeleteDoc("app", name); !d) return ErrorReply(500, d.error());
      // Assignments go with the app; the DEAs stop what is no longer assigned.
      if (auto l = store_.ListDocs("assignment"); l)
        for (const auto& [key, v] : *l)
          if (key.rfind(name + "/", 0) == 0) (void)store_.DeleteDoc("assignment", key);
      staging_.ForgetApp(name);
      ForgetArchive(store_, droplets_, app->droplet_sha256);
      ForgetArchive(store_, droplets_, app->source_sha256);
      services_.ForgetApp(name);
      return JsonReply(200, {{"deleted", name}});
    }
    return ErrorReply(404, "no such API: " + m + " " + path);
  } catch (const json::exception& e) {
    return ErrorReply(400, std::string("bad request: ") + e.what());
  }
}

}  // namespace kato
