#include "controller/run_controller.h"

#include <signal.h>

#include <atomic>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/cluster_client.h"
#include "common/fs.h"
#include "common/http.h"
#include "common/layout.h"
#include "common/log.h"
#include "common/signals.h"
#include "common/pki.h"
#include "controller/app_api.h"
#include "controller/health.h"
#include "roles/roles.h"

namespace kato {

using json = nlohmann::json;

namespace {

constexpr int kDefaultDeaMemoryMb = 4096;

// One round of the health manager: read the cluster, decide, write assignments.
class Reconciler {
 public:
  Reconciler(Store& store, const Clock& clock) : store_(store), hm_(clock) {}

  // One round. A leader acts on the health manager's decisions; a standby only
  // observes (so that it has heard from every DEA when it takes over) and
  // judges the apps' health on a copy, for its API.
  void Round(bool leader) {
    auto apps = store_.ListDocs("app");
    auto cluster = store_.ListNodes();
    auto reports = store_.ListDocs("instances");
    using Docs = std::vector<std::pair<std::string, std::string>>;
    auto assignments = leader ? store_.ListDocs("assignment") : Result<Docs>(Docs{});
    // Never decide on a partial picture: a missing app would read as "delete it".
    if (!apps || !cluster || !reports || !assignments) return;
    std::vector<AppSpec> specs;
    for (const auto& [name, value] : *apps) {
      auto a = AppFromJson(value);
      if (!a || a->droplet_sha256.empty()) continue;  // nothing to run before bits are pushed
      specs.push_back({a->name, a->instances, a->memory_mb, a->state, a->version});
    }
    std::map<std::string, json> report_by_node;
    for (const auto& [node, value] : *reports) report_by_node[node] = json::parse(value, nullptr, false);
    for (const auto& n : *cluster) {
      if (std::find(n.roles.begin(), n.roles.end(), "dea") == n.roles.end()) continue;
      json r = report_by_node.count(n.id) ? report_by_node[n.id] : json();
      // A DEA is alive while its reports keep arriving (last_report_ms from the primary).
      int64_t reported = LastReport(n.id);
      if (reported == 0 || reported == seen_[n.id]) continue;
      seen_[n.id] = reported;
      DeaInfo dea{n.id, n.ip, r.is_object() ? r.value("memory_mb", kDefaultDeaMemoryMb)
                                            : kDefaultDeaMemoryMb,
                  true};
      std::vector<InstanceReport> insts;
      if (r.is_object() && r.contains("instances") && r["instances"].is_array())
        for (const auto& i : r["instances"])
          insts.push_back({i.value("instance_id", ""), i.value("app", ""),
                           i.value("version", static_cast<int64_t>(0)), i.value("index", 0), n.id,
                           i.value("state", ""), i.value("port", 0),
                           i.value("since_ms", static_cast<int64_t>(0)), 0,
                           i.value("memory_mb", 0)});
      hm_.ObserveDea(dea, insts);
    }
    if (!leader) {
      HealthManager shadow = hm_;
      (void)shadow.Evaluate(specs);
      for (const auto& spec : specs) shadow_health_[spec.name] = shadow.AppHealth(spec.name);
      return;
    }
    shadow_health_.clear();
    std::map<std::string, std::string> assigned;  // "app/index" -> instance id
    for (const auto& [key, value] : *assignments)
      assigned[key] = json::parse(value, nullptr, false).value("instance_id", "");
    for (const auto& action : hm_.Evaluate(specs)) {
      std::string key = action.app + "/" + std::to_string(action.index);
      if (action.kind == Action::kStart) {
        json a{{"app", action.app},       {"index", action.index},
               {"version", action.app_version}, {"node_id", action.dea_node_id},
               {"instance_id", RandomHex(8)}};
        LogInfo("controller: start {} on {} ({})", key, action.dea_node_id, action.reason);
        if (auto s = store_.PutDoc("assignment", key, a.dump()); !s)
          LogWarn("controller: {}", s.error());
      } else if (assigned.count(key) && assigned[key] == action.instance_id) {
        LogInfo("controller: stop {} ({})", key, action.reason);
        (void)store_.DeleteDoc("assignment", key);
      }
      // Other stops need no write: a DEA stops whatever is not assigned to it.
    }
    // Assignments of indices that no longer exist (scaled down, app deleted or stopped).
    std::map<std::string, AppSpec> by_name;
    for (const auto& s : specs) by_name[s.name] = s;
    for (const auto& [key, id] : assigned) {
      auto slash = key.rfind('/');
      std::string app = key.substr(0, slash);
      int index = std::atoi(key.c_str() + slash + 1);
      auto it = by_name.find(app);
      if (it == by_name.end() || it->second.state != "STARTED" || index >= it->second.instances)
        (void)store_.DeleteDoc("assignment", key);
    }
  }

  void SetLastReports(std::map<std::string, int64_t> r) { last_report_ = std::move(r); }
  std::pair<std::string, std::string> Health(const std::string& app) const {
    auto it = shadow_health_.find(app);
    auto h = it != shadow_health_.end() ? it->second : hm_.AppHealth(app);
    return {h.state, h.message};
  }

 private:
  int64_t LastReport(const std::string& node) {
    auto it = last_report_.find(node);
    return it == last_report_.end() ? 0 : it->second;
  }
  Store& store_;
  HealthManager hm_;
  std::map<std::string, int64_t> seen_;
  std::map<std::string, int64_t> last_report_;
  std::map<std::string, AppHealthStatus> shadow_health_;  // a standby's verdicts
};

// Leadership among several controllers: a lease in the cluster store, renewed
// every round. A controller that cannot renew (the core is away, another
// holds it) stands by; a stopping leader gives the lease up so another takes
// over at once. When a leader dies, the lease expires after kLeaseTtl.
constexpr int64_t kLeaseTtlMs = 3000;

}  // namespace

int RunController(const ControllerConfig& config) {
  sigset_t set = BlockStopSignals();

  ClusterClient client(config.data_dir);
  auto id = client.Load();
  if (!id) {
    LogError("controller: {}", id.error());
    return 1;
  }
  RemoteStore store(client);
  std::string droplets_dir = DataLayout{config.data_dir}.dir + "/droplets";
  if (auto c = store.GetConfig("controller", "droplets_dir"); c && *c) {
    json v = json::parse((*c)->value_json, nullptr, false);
    if (v.is_string()) droplets_dir = v.get<std::string>();
  }
  DropletStore droplets(droplets_dir);
  if (auto s = droplets.CheckWritable(); !s) {
    LogError("controller: {} (set another with `kato config set controller droplets_dir PATH`)",
             s.error());
    return 1;
  }
  auto admin = store.GetSetting("admin_token_hash");
  ControllerApi::Options options;
  options.version = config.version;
  options.admin_token_hash = admin && *admin ? **admin : "";
  if (options.admin_token_hash.empty())
    LogWarn("controller: the cluster has no admin credential yet; every API request gets 401");
  options.fetch_log = [&client](const std::string& ip, const std::string& instance,
                                int lines) -> Result<std::string> {
    auto me = client.Load();
    if (!me) return Err(me.error());
    auto r = HttpsCall(ClientTls{me->ca_pem, me->cert_pem, me->key_pem, ""}, ip, kAgentPort, "GET",
                       "/v1/instances/" + instance + "/log?lines=" + std::to_string(lines), "",
                       Millis(3000));
    if (!r) return Err(r.error());
    if (r->status != 200) return Err("the DEA at " + ip + " has no log for " + instance);
    return r->body;
  };
  // The health manager runs in the loop thread below; the API reads its verdicts.
  std::mutex hm_mu;
  Reconciler reconciler(store, RealClock::instance());  // guarded by hm_mu
  options.app_health = [&](const std::string& app) {
    std::lock_guard lock(hm_mu);
    return reconciler.Health(app);
  };
  ControllerApi api(options, store, droplets, RealClock::instance());

  // API requests call the primary (several round trips): off the I/O threads.
  HttpServer server([&api](const HttpRequest& req, Responder respond) {
    std::thread([&api, req, respond = std::move(respond)]() { respond(api.Handle(req)); }).detach();
  });
  server.SetBodyLimit(options.max_bits_bytes + 4096);

  if (auto s = server.Start(config.ip, kControllerPort); !s) {
    LogError("controller: {}", s.error());
    return 1;
  }
  // App archives for DEAs, to cluster members only.
  HttpsServer internal(
      ServerTls{id->ca_pem, id->cert_pem, id->key_pem, id->ca_pem},
      [&droplets, &api](const HttpRequest& req, Responder respond) {
        if (!req.peer_cn.empty() && req.target.rfind("/v2/", 0) == 0) {
          std::thread([&api, req, respond]() { respond(api.Handle(req)); }).detach();
          return;
        }
        HttpResponse r;
        std::string path = req.target.substr(0, req.target.find('?'));
        const std::string prefix = "/v1/droplets/";
        auto slash = path.rfind('/');
        std::string app = path.size() > prefix.size() && slash > prefix.size()
                              ? path.substr(prefix.size(), slash - prefix.size())
                              : "";
        std::string version = path.substr(slash + 1);
        bool numeric = !version.empty() && version.find_first_not_of("0123456789") == std::string::npos;
        if (req.peer_cn.empty()) {
          r.status = 401;
          r.body = R"({"error":"a node certificate of this cluster is required"})";
        } else if (req.method != "GET" || path.rfind(prefix, 0) != 0 || !CheckAppName(app).ok() ||
                   !numeric) {
          r.status = 404;
          r.body = R"({"error":"no such droplet"})";
        } else if (auto bytes = ReadFile(droplets.PathOf(app, std::stoll(version))); !bytes) {
          r.status = 404;
          r.body = R"({"error":"no such droplet"})";
        } else {
          r.body = std::move(*bytes);
          r.content_type = "application/gzip";
        }
        respond(std::move(r));
      });
  internal.SetBodyLimit(options.max_bits_bytes + 4096);
  if (auto s = internal.Start(config.ip, kControllerInternalPort); !s) {
    LogError("controller: {}", s.error());
    return 1;
  }
  LogInfo("controller: API on http://{}:{}, droplets on {}", config.ip, kControllerPort,
          kControllerInternalPort);

  std::atomic<bool> done{false};
  bool leader = false;  // used by the loop thread only, then after it ends
  std::chrono::steady_clock::time_point renewed;
  std::thread loop([&] {
    while (!done) {
      auto cluster = client.Call("GET", "/v1/cluster");
      if (cluster) {
        json c = json::parse(*cluster, nullptr, false);
        std::map<std::string, int64_t> reports;
        if (c.is_object() && c.contains("nodes") && c["nodes"].is_array())
          for (const auto& n : c["nodes"])
            reports[n.value("id", "")] = n.value("last_report_ms", static_cast<int64_t>(0));
        // A leader renews a third of the way into its lease; a standby asks every
        // round (a refused attempt writes nothing), to take over soon after expiry.
        auto now = std::chrono::steady_clock::now();
        Result<bool> held = true;
        if (!leader || now - renewed >= std::chrono::milliseconds(kLeaseTtlMs / 3)) {
          held = store.AcquireLease(ControllerApi::kLeaderLease, id->node_id, 0, kLeaseTtlMs);
          if (held && *held) renewed = now;
        }
        bool now_leader = held && *held;
        if (now_leader != leader) {
          if (now_leader) LogInfo("controller: leading: the scheduler and health manager run here");
          else LogInfo("controller: standing by: {}", held ? "another controller leads" : held.error());
          leader = now_leader;
        }
        std::lock_guard lock(hm_mu);
        reconciler.SetLastReports(std::move(reports));
        reconciler.Round(leader);
      } else if (leader) {
        // Without the core the lease cannot be renewed: stop acting before it expires.
        LogInfo("controller: standing by: {}", cluster.error());
        leader = false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));  // the health manager's period
    }
  });
  int sig = 0;
  sigwait(&set, &sig);
  LogInfo("controller: signal {}, stopping", sig);
  done = true;
  loop.join();
  if (leader) (void)store.ReleaseLease(ControllerApi::kLeaderLease, id->node_id);
  server.Stop();
  internal.Stop();
  return 0;
}

}  // namespace kato
