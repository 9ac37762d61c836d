#include "controller/staging.h"

#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/json_reply.h"
#include "common/pki.h"
#include "controller/app_api.h"

namespace kato {

using json = nlohmann::json;

namespace {

constexpr size_t kMaxMessageBytes = 8 * 1024;  // of a failure, as the DEA sends it
constexpr int kMinStagingDiskMb = 2048;        // room for dependencies and the cache

bool BuildpackName(const std::string& s) {
  if (s.empty() || s.size() > 63 || s[0] == '-' || s[0] == '_') return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  return true;
}

bool IsGzip(const std::string& b) {
  return b.size() >= 2 && static_cast<unsigned char>(b[0]) == 0x1f &&
         static_cast<unsigned char>(b[1]) == 0x8b;
}

int LinesOf(const std::string& target) {
  auto q = target.find("lines=");
  return q == std::string::npos ? 100 : std::clamp(std::atoi(target.c_str() + q + 6), 1, 10000);
}

Result<json> Doc(Store& store, const std::string& kind, const std::string& key) {
  auto d = store.GetDoc(kind, key);
  if (!d) return Err(d.error());
  if (!*d) return json();
  json j = json::parse(**d, nullptr, false);
  if (!j.is_object()) return Err("stored " + kind + "/" + key + " is not a JSON object");
  return j;
}

}  // namespace

const std::vector<std::string>& BuiltinBuildpacks() {
  static const std::vector<std::string> packs{"nodejs", "python", "go", "static", "procfile"};
  return packs;
}

void ForgetArchive(Store& store, const DropletStore& droplets, const std::string& sha256) {
  if (sha256.empty()) return;
  auto apps = store.ListDocs("app");
  auto packs = store.ListDocs("buildpack");
  auto stagings = store.ListDocs("staging");
  if (!apps || !packs || !stagings) return;  // unsure who uses it: keep it
  for (const auto& [name, value] : *apps) {
    auto a = AppFromJson(value);
    if (!a || a->droplet_sha256 == sha256 || a->source_sha256 == sha256) return;
  }
  for (const auto& list : {*packs, *stagings})
    for (const auto& [key, value] : list) {
      json j = json::parse(value, nullptr, false);
      if (!j.is_object()) return;
      if (j.value("sha256", "") == sha256) return;
      if (j.value("state", "") == "STAGING" && j.value("source_sha256", "") == sha256) return;
      if (j.contains("custom_buildpacks") && j.value("state", "") == "STAGING")
        for (const auto& p : j["custom_buildpacks"])
          if (p.is_object() && p.value("sha256", "") == sha256) return;
    }
  droplets.Remove(sha256);
}

StagingApi::StagingApi(Options options, Store& store, const DropletStore& droplets,
                       const Clock& clock)
    : options_(std::move(options)), store_(store), droplets_(droplets), clock_(clock) {}

Result<json> StagingApi::CustomBuildpacks() {
  auto docs = store_.ListDocs("buildpack");
  if (!docs) return Err(docs.error());
  std::vector<json> packs;
  for (const auto& [name, value] : *docs) {
    json j = json::parse(value, nullptr, false);
    if (j.is_object() && BuildpackName(j.value("name", "")) && IsSha256Hex(j.value("sha256", "")))
      packs.push_back(j);
  }
  std::sort(packs.begin(), packs.end(), [](const json& a, const json& b) {
    auto ka = std::make_pair(a.value("created_ms", int64_t{0}), a.value("name", ""));
    auto kb = std::make_pair(b.value("created_ms", int64_t{0}), b.value("name", ""));
    return ka < kb;
  });
  json out = json::array();
  for (const auto& p : packs) out.push_back({{"name", p["name"]}, {"sha256", p["sha256"]}});
  return out;
}

std::string StagingApi::StagedKey(const AppRecord& app, const std::string& source,
                                  const json& custom) const {
  return Sha256Hex(json{
      {"source", source},
      {"buildpack", app.buildpack},
      {"command", app.command},
      {"env", app.env},
      {"custom_buildpacks",
       custom}}.dump());
}

StagingApi::Started StagingApi::Stage(AppRecord& app, const std::string& source) {
  auto custom = CustomBuildpacks();
  if (!custom) return {500, custom.error(), nullptr};
  if (!app.buildpack.empty()) {
    const auto& builtin = BuiltinBuildpacks();
    bool known = std::find(builtin.begin(), builtin.end(), app.buildpack) != builtin.end();
    for (const auto& p : *custom) known = known || p["name"] == app.buildpack;
    if (!known)
      return {400, "no buildpack is named '" + app.buildpack + "' (see `kato buildpack list`)",
              nullptr};
  }
  std::string key = StagedKey(app, source, *custom);
  app.source_sha256 = source;
  struct stat st;
  if (key == app.staged_key && !app.droplet_sha256.empty() &&
      ::stat(droplets_.PathOf(app.droplet_sha256).c_str(), &st) == 0) {
    ++app.version;  // the same droplet: new instances of it, as a restart
    return {200, "", nullptr};
  }
  std::vector<DeaInfo> deas = options_.deas ? options_.deas() : std::vector<DeaInfo>{};
  std::set<std::string> known;
  for (const auto& d : deas) known.insert(d.node_id);
  deas.erase(std::remove_if(deas.begin(), deas.end(), [](const DeaInfo& d) { return !d.up; }),
             deas.end());
  // DEAs that joined since the health manager last looked: up as far as we know.
  if (auto nodes = store_.ListNodes(); deas.empty() && nodes)
    for (const auto& n : *nodes)
      if (std::count(n.roles.begin(), n.roles.end(), "dea") && !known.count(n.id))
        deas.push_back(DeaInfo{n.id, n.ip, 0, true});
  if (deas.empty())
    return {
        503,
        "no DEA is up to stage " + app.name + " (add the dea role to a node: kato role add dea)",
        nullptr};
  // The DEA with the fewest builds under way.
  std::map<std::string, int> builds;
  if (auto docs = store_.ListDocs("staging"); docs)
    for (const auto& [name, value] : *docs) {
      json j = json::parse(value, nullptr, false);
      if (j.is_object() && j.value("state", "") == "STAGING" && name != app.name)
        ++builds[j.value("node_id", "")];
    }
  std::sort(deas.begin(), deas.end(), [&](const DeaInfo& a, const DeaInfo& b) {
    return std::make_pair(builds[a.node_id], a.node_id) <
           std::make_pair(builds[b.node_id], b.node_id);
  });
  const DeaInfo& dea = deas.front();
  json doc{{"task_id", RandomHex(16)},
           {"app", app.name},
           {"node_id", dea.node_id},
           {"node_ip", dea.ip},
           {"source_sha256", source},
           {"buildpack", app.buildpack},
           {"command", app.command},
           {"env", app.env},
           {"disk_mb", std::max(app.disk_mb, kMinStagingDiskMb)},
           {"custom_buildpacks", *custom},
           {"key", key},
           {"state", "STAGING"},
           {"started_ms", clock_.wall_ms()}};
  if (auto s = store_.PutDoc("staging", app.name, doc.dump()); !s) return {500, s.error(), nullptr};
  return {200, "", json{{"task_id", doc["task_id"]}, {"node_ip", dea.ip}, {"state", "STAGING"}}};
}

HttpResponse StagingApi::Status(const std::string& app, const HttpRequest& req) {
  auto d = Doc(store_, "staging", app);
  if (!d) return ErrorReply(500, d.error());
  if (d->is_null()) return ErrorReply(404, "app " + app + " has not been staged (push its source)");
  json& doc = *d;
  if (doc.value("state", "") == "STAGING" &&
      clock_.wall_ms() - doc.value("started_ms", int64_t{0}) > options_.give_up_ms) {
    doc["state"] = "FAILED";
    doc["message"] = "the DEA at " + doc.value("node_ip", "") + " sent no outcome in " +
                     std::to_string(options_.give_up_ms / 60000) +
                     " minutes (it may have stopped): push again";
    (void)store_.PutDoc("staging", app, doc.dump());
  }
  json out = doc;
  out.erase("env");  // the app's own view shows them; this is about the build
  out.erase("key");
  std::string ip = doc.value("node_ip", ""), task = doc.value("task_id", "");
  if (!options_.fetch_log) {
    out["log_error"] = "staging logs are not available here";
  } else if (auto log = options_.fetch_log(ip, task, LinesOf(req.target)); !log) {
    out["log_error"] = log.error();
  } else {
    json l = json::parse(*log, nullptr, false);
    if (l.is_object())
      out["log"] = {{"end_offset", l.value("end_offset", uint64_t{0})},
                    {"text", l.value("text", "")}};
    else
      out["log_error"] = "the DEA sent a malformed log";
  }
  return JsonReply(200, out);
}

HttpResponse StagingApi::Staged(const std::string& app, const HttpRequest& req) {
  json body = json::parse(req.body, nullptr, false);
  if (!body.is_object() || !body.contains("task_id") || !body["task_id"].is_string() ||
      !body.contains("ok") || !body["ok"].is_boolean())
    return ErrorReply(
        400, "a staging outcome is {task_id, ok, message, droplet_sha256, command, buildpack}");
  auto d = Doc(store_, "staging", app);
  if (!d) return ErrorReply(500, d.error());
  json& doc = *d;
  if (doc.is_null() || doc.value("task_id", "") != body["task_id"].get<std::string>())
    return ErrorReply(409, "staging task " + body["task_id"].get<std::string>() + " of " + app +
                               " was superseded by another push");
  if (req.peer_cn.empty() || req.peer_cn != doc.value("node_id", ""))
    return ErrorReply(403, "only the DEA that stages " + app + " reports its outcome");
  if (doc.value("state", "") != "STAGING")
    return ErrorReply(409, "staging task of " + app + " already ended " + doc.value("state", ""));
  doc["finished_ms"] = clock_.wall_ms();
  std::string message = body.value("message", "");
  if (message.size() > kMaxMessageBytes)
    message = "..." + message.substr(message.size() - kMaxMessageBytes);
  bool ok = body["ok"].get<bool>();
  std::string droplet = body.value("droplet_sha256", "");
  std::string command = body.value("command", "");
  if (ok && (!IsSha256Hex(droplet) || command.empty() || command.find('\0') != std::string::npos)) {
    ok = false;
    message = "the DEA's outcome names no droplet or start command";
  }
  if (ok) {
    auto stored = store_.GetDoc("app", app);
    if (!stored) return ErrorReply(500, stored.error());
    if (!*stored) return ErrorReply(404, "no app named '" + app + "'");
    auto a = AppFromJson(**stored);
    if (!a) return ErrorReply(500, a.error());
    std::string old = a->droplet_sha256;
    struct stat st;
    a->droplet_sha256 = droplet;
    a->droplet_size = ::stat(droplets_.PathOf(droplet).c_str(), &st) == 0 ? st.st_size : 0;
    a->staged_command = command;
    a->detected_buildpack = body.value("buildpack", "");
    a->staged_key = doc.value("key", "");
    ++a->version;
    a->updated_ms = clock_.wall_ms();
    if (auto s = store_.PutDoc("app", app, AppToJson(*a)); !s) return ErrorReply(500, s.error());
    doc["state"] = "STAGED";
    doc["version"] = a->version;
    doc["droplet_sha256"] = droplet;
    doc["staged_command"] = command;
    doc["detected_buildpack"] = a->detected_buildpack;
    if (auto s = store_.PutDoc("staging", app, doc.dump()); !s) return ErrorReply(500, s.error());
    if (old != droplet) ForgetArchive(store_, droplets_, old);
  } else {
    doc["state"] = "FAILED";
    doc["message"] = message.empty() ? "the build failed" : message;
    if (auto s = store_.PutDoc("staging", app, doc.dump()); !s) return ErrorReply(500, s.error());
  }
  return JsonReply(200, {{"state", doc["state"]}});
}

void StagingApi::ForgetApp(const std::string& app) { (void)store_.DeleteDoc("staging", app); }

HttpResponse StagingApi::HandleBuildpacks(const HttpRequest& req) {
  std::string path = req.target.substr(0, req.target.find('?'));
  const std::string& m = req.method;
  if (path == "/v2/buildpacks" && m == "GET") {
    auto custom = store_.ListDocs("buildpack");
    if (!custom) return ErrorReply(500, custom.error());
    auto order = CustomBuildpacks();
    if (!order) return ErrorReply(500, order.error());
    std::map<std::string, json> docs;
    for (const auto& [name, value] : *custom) docs[name] = json::parse(value, nullptr, false);
    json out = json::array();
    int position = 1;
    for (const auto& p : *order) {
      const json& d = docs[p["name"].get<std::string>()];
      out.push_back({{"name", p["name"]},
                     {"position", position++},
                     {"builtin", false},
                     {"sha256", p["sha256"]},
                     {"size", d.value("size", int64_t{0})},
                     {"created_ms", d.value("created_ms", int64_t{0})}});
    }
    for (const auto& name : BuiltinBuildpacks())
      out.push_back({{"name", name}, {"position", position++}, {"builtin", true}});
    return JsonReply(200, out);
  }
  const std::string prefix = "/v2/buildpacks/";
  std::string name = path.rfind(prefix, 0) == 0 ? path.substr(prefix.size()) : "";
  if (name.empty() || (m != "PUT" && m != "DELETE"))
    return ErrorReply(404, "no such API: " + m + " " + path);
  if (!BuildpackName(name))
    return ErrorReply(400, "buildpack name '" + name +
                               "' is not valid: use 1-63 lowercase letters, digits, '-' and '_'");
  const auto& builtin = BuiltinBuildpacks();
  if (std::find(builtin.begin(), builtin.end(), name) != builtin.end())
    return ErrorReply(409, name + " is a built-in buildpack; give yours another name");
  auto existing = Doc(store_, "buildpack", name);
  if (!existing) return ErrorReply(500, existing.error());
  if (m == "DELETE") {
    if (existing->is_null()) return ErrorReply(404, "no buildpack named '" + name + "'");
    if (auto s = store_.DeleteDoc("buildpack", name); !s) return ErrorReply(500, s.error());
    ForgetArchive(store_, droplets_, existing->value("sha256", ""));
    return JsonReply(200, {{"deleted", name}});
  }
  if (req.body.empty() || !IsGzip(req.body))
    return ErrorReply(
        400, "upload the buildpack's directory as a .tar.gz (with bin/detect and bin/compile)");
  if (req.body.size() > options_.max_buildpack_bytes)
    return ErrorReply(413, "a buildpack's archive may be at most " +
                               std::to_string(options_.max_buildpack_bytes >> 20) + " MiB");
  auto sha = droplets_.Save(req.body);
  if (!sha) return ErrorReply(500, sha.error());
  int64_t created =
      existing->is_null() ? clock_.wall_ms() : existing->value("created_ms", clock_.wall_ms());
  json doc{{"name", name},
           {"sha256", *sha},
           {"size", static_cast<int64_t>(req.body.size())},
           {"created_ms", created},
           {"updated_ms", clock_.wall_ms()}};
  if (auto s = store_.PutDoc("buildpack", name, doc.dump()); !s) return ErrorReply(500, s.error());
  if (!existing->is_null() && existing->value("sha256", "") != *sha)
    ForgetArchive(store_, droplets_, existing->value("sha256", ""));
  return JsonReply(existing->is_null() ? 201 : 200, doc);
}

}  // namespace kato
