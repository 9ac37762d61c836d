#include "services/service_model.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "store/store.h"

namespace kato {

using json = nlohmann::json;

std::string ServiceToJson(const ServiceRecord& s) {
  json j{{"name", s.name},         {"type", s.type},         {"id", s.id},
              {"plan", s.plan},         {"plan_mb", s.plan_mb},   {"node_id", s.node_id},
              {"node_ip", s.node_ip},   {"port", s.port},         {"username", s.username},
              {"password", s.password}, {"dbname", s.dbname},     {"bound_apps", s.bound_apps},
              {"state", s.state},       {"created_ms", s.created_ms}, {"protocol", s.protocol}};
  if (!s.org.empty()) j["org"] = s.org;
  if (!s.ssh_key.empty()) j["ssh_key"] = s.ssh_key;
  if (!s.ssh_public_key.empty()) j["ssh_public_key"] = s.ssh_public_key;
  return j.dump();
}

Result<ServiceRecord> ServiceFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Err("stored service is not a JSON object");
  try {
    ServiceRecord s;
    s.name = j.at("name").get<std::string>();
    s.type = j.at("type").get<std::string>();
    s.id = j.at("id").get<std::string>();
    s.plan = j.value("plan", "free");
    s.plan_mb = j.value("plan_mb", 0);
    s.node_id = j.at("node_id").get<std::string>();
    s.node_ip = j.at("node_ip").get<std::string>();
    s.port = j.at("port").get<int>();
    s.username = j.value("username", "");
    s.password = j.value("password", "");
    s.dbname = j.value("dbname", "");
    s.bound_apps = j.value("bound_apps", std::vector<std::string>{});
    s.state = j.value("state", "ACTIVE");
    s.created_ms = j.value("created_ms", int64_t{0});
    s.protocol = j.value("protocol", "tcp");
    s.ssh_key = j.value("ssh_key", "");
    s.ssh_public_key = j.value("ssh_public_key", "");
    s.org = j.value("org", "");
    return s;
  } catch (const json::exception& e) {
    return Err(std::string("stored service is malformed: ") + e.what());
  }
}

std::string ServiceStateToJson(const ServiceState& s) {
  return json{{"id", s.id}, {"state", s.state}, {"message", s.message}, {"updated_ms", s.updated_ms}}
      .dump();
}

Result<ServiceState> ServiceStateFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Err("stored service state is not a JSON object");
  try {
    ServiceState s;
    s.id = j.at("id").get<std::string>();
    s.state = j.at("state").get<std::string>();
    s.message = j.value("message", "");
    s.updated_ms = j.value("updated_ms", int64_t{0});
    return s;
  } catch (const json::exception& e) {
    return Err(std::string("stored service state is malformed: ") + e.what());
  }
}

const std::vector<std::string>& ServiceTypes() {
  static const std::vector<std::string> types = {"postgresql", "mysql",    "redis",
                                                 "memcached",  "rabbitmq", "filesystem", "harbor"};
  return types;
}

bool IsServiceType(const std::string& type) {
  const auto& t = ServiceTypes();
  return std::find(t.begin(), t.end(), type) != t.end();
}

std::string RoleOfServiceType(const std::string& type) {
  return type == "rabbitmq" ? "rabbit" : type;
}

std::string ServiceUri(const ServiceRecord& s) {
  std::string hostport = s.node_ip + ":" + std::to_string(s.port);
  if (s.type == "postgresql")
    return "postgres://" + s.username + ":" + s.password + "@" + hostport + "/" + s.dbname;
  if (s.type == "mysql")
    return "mysql://" + s.username + ":" + s.password + "@" + hostport + "/" + s.dbname;
  if (s.type == "redis") return "redis://:" + s.password + "@" + hostport + "/0";
  if (s.type == "rabbitmq")
    return "amqp://" + s.username + ":" + s.password + "@" + hostport + "/" + s.dbname;
  if (s.type == "memcached") return "memcached://" + s.username + ":" + s.password + "@" + hostport;
  if (s.type == "harbor") return s.protocol + "://" + hostport;
  if (s.type == "filesystem") return "sftp://" + s.username + "@" + hostport + "/data";
  return "";
}

std::string FilesystemMountPoint(const std::string& name) { return "/app/fs/" + name; }

std::string FsHostToJson(const FsHost& h) {
  return json{{"ip", h.ip}, {"port", h.port}, {"public_key", h.public_key}}.dump();
}

Result<FsHost> FsHostFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Err("stored filesystem host is not a JSON object");
  try {
    return FsHost{j.at("ip").get<std::string>(), j.at("port").get<int>(),
                  j.at("public_key").get<std::string>()};
  } catch (const json::exception& e) {
    return Err(std::string("stored filesystem host is malformed: ") + e.what());
  }
}

namespace {
json Credentials(const ServiceRecord& s) {
  json c{{"uri", ServiceUri(s)}, {"host", s.node_ip}, {"hostname", s.node_ip}, {"port", s.port}};
  if (s.type == "harbor") {
    c["protocol"] = s.protocol;
    return c;
  }
  if (s.type == "filesystem") {  // mounted for the app: where, not how (no key)
    return json{{"dir", FilesystemMountPoint(s.name)}, {"host", s.node_ip}, {"port", s.port},
                {"username", s.username}, {"name", s.name}};
  }
  c["password"] = s.password;
  if (!s.username.empty()) c["username"] = s.username, c["user"] = s.username;
  if (!s.dbname.empty()) c["name"] = s.dbname;
  if (s.type == "rabbitmq") c["vhost"] = s.dbname;
  return c;
}
}  // namespace

std::string CredentialsJson(const ServiceRecord& s) { return Credentials(s).dump(); }

std::map<std::string, std::string> ServiceEnv(const std::vector<ServiceRecord>& services) {
  std::map<std::string, std::string> env;
  if (services.empty()) return env;
  json vcap = json::object();
  // DATABASE_URL: the first postgresql, else the first mysql.
  for (const auto& s : services)
    if (s.type == "postgresql" && !env.count("DATABASE_URL")) env["DATABASE_URL"] = ServiceUri(s);
  for (const auto& s : services)
    if (s.type == "mysql" && !env.count("DATABASE_URL")) env["DATABASE_URL"] = ServiceUri(s);
  for (const auto& s : services) {
    vcap[s.type].push_back(
        {{"name", s.name}, {"label", s.type}, {"plan", s.plan}, {"credentials", Credentials(s)}});
    auto first = [&](const std::string& k, const std::string& v) { env.emplace(k, v); };
    if (s.type == "redis") first("REDIS_URL", ServiceUri(s));
    if (s.type == "rabbitmq") first("RABBITMQ_URL", ServiceUri(s));
    if (s.type == "harbor") first("HARBOR_PORT", std::to_string(s.port));
    if (s.type == "filesystem") {
      first("STACKATO_FILESYSTEM", FilesystemMountPoint(s.name));
      first("KATO_FILESYSTEM", FilesystemMountPoint(s.name));
    }
    if (s.type == "memcached" && !env.count("MEMCACHE_SERVERS")) {
      env["MEMCACHE_SERVERS"] = s.node_ip + ":" + std::to_string(s.port);
      env["MEMCACHE_USERNAME"] = s.username;
      env["MEMCACHE_PASSWORD"] = s.password;
    }
  }
  env["VCAP_SERVICES"] = vcap.dump();
  return env;
}

std::vector<ServiceEndpoint> ServiceEndpoints(const std::vector<ServiceRecord>& services) {
  std::vector<ServiceEndpoint> out;
  for (const auto& s : services)
    if (s.type != "harbor" && s.type != "filesystem") out.push_back({s.node_ip, s.port});
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<std::vector<ServiceRecord>> BoundServices(Store& store, const std::string& app) {
  auto docs = store.ListDocs("service");
  if (!docs) return Err("cannot read the app's services: " + docs.error());
  std::vector<ServiceRecord> out;
  for (const auto& [name, value] : *docs) {
    auto s = ServiceFromJson(value);
    if (!s || s->state != "ACTIVE") continue;
    if (std::count(s->bound_apps.begin(), s->bound_apps.end(), app)) out.push_back(*s);
  }
  return out;
}

}  // namespace kato
