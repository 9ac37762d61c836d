#include "controller/run_controller.h"

#include <signal.h>

#include <atomic>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/cluster_client.h"
#include "agent/member_set.h"
#include "common/fs.h"
#include "common/http.h"
#include "common/json_reply.h"
#include "common/layout.h"
#include "common/log.h"
#include "common/pki.h"
#include "common/signals.h"
#include "common/work_queue.h"
#include "controller/app_api.h"
#include "controller/revision_hub.h"
#include "controller/health.h"
#include "controller/reconciler.h"
#include "roles/roles.h"

namespace kato {

using json = nlohmann::json;

namespace {

// Leadership among several controllers: a lease in the cluster store, renewed
// every round. A controller that cannot renew (the core is away, another
// holds it) stands by; a stopping leader gives the lease up so another takes
// over at once. When a leader dies, the lease expires after kLeaseTtl.
constexpr int64_t kLeaseTtlMs = 3000;

// API requests in flight at once, and waiting beyond those (then 503).
constexpr int kApiThreads = 8;
constexpr size_t kApiBacklog = 64;
// What a DEA may upload as a staged droplet (the app's dependencies included).
constexpr size_t kMaxDropletBytes = 512u << 20;

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
  // The tail of a log a DEA's agent serves (agent/dea_logs.h): an instance's or a build's.
  auto agent_log = [&client](const std::string& ip, const std::string& path, int lines,
                             const std::string& missing) -> Result<std::string> {
    auto me = client.Load();
    if (!me) return Err(me.error());
    auto r = HttpsCall(ClientTls{me->ca_pem, me->cert_pem, me->key_pem, ""}, ip, kAgentPort, "GET",
                       path + "?lines=" + std::to_string(lines), "", Millis(3000));
    if (!r) return Err(r.error());
    if (r->status != 200) return Err("the DEA at " + ip + " has no " + missing);
    return r->body;
  };
  options.fetch_log = [agent_log](const std::string& ip, const std::string& instance, int lines) {
    return agent_log(ip, "/v1/instances/" + instance + "/log", lines, "log for " + instance);
  };
  // The health manager runs in the loop thread below; the API reads its verdicts.
  std::mutex hm_mu;
  Reconciler reconciler(store, RealClock::instance());  // guarded by hm_mu
  options.app_health = [&](const std::string& app) {
    std::lock_guard lock(hm_mu);
    return reconciler.Health(app);
  };
  options.staging.deas = [&] {
    std::lock_guard lock(hm_mu);
    return reconciler.Deas();
  };
  options.staging.fetch_log = [agent_log](const std::string& ip, const std::string& task, int lines) {
    return agent_log(ip, "/v1/staging/" + task + "/log", lines, "log of staging " + task);
  };
  options.nodes.cluster = [&client] { return client.Call("GET", "/v1/cluster"); };
  options.nodes.call_agent = [&client](const std::string& ip, const std::string& method,
                                       const std::string& path,
                                       const std::string& body) -> Result<HttpResponse> {
    auto me = client.Load();
    if (!me) return Err(me.error());
    // Role changes wait for the node's processes (the agent allows 180 s).
    Millis timeout = method == "POST" ? Millis(200000) : Millis(3000);
    return HttpsCall(ClientTls{me->ca_pem, me->cert_pem, me->key_pem, ""}, ip, kAgentPort, method,
                     path, body, timeout);
  };
  ControllerApi api(options, store, droplets, RealClock::instance());
  // The console's live updates: one watch of the primary for every open page.
  RevisionHub events({}, [&client](int64_t after, Millis timeout) { return client.Watch(after, timeout); });
  events.Start();

  // API requests call the primary (several round trips): off the I/O threads, on
  // a bounded pool that is stopped after the servers and joined before `api`
  // goes away. When it is full, clients are told to come back (503).
  WorkQueue workers(kApiThreads, kApiBacklog);
  auto offload = [&workers, &api, &events](HttpRequest req, const Responder& respond) {
    if (RevisionHub::Serves(req)) return events.Wait(req, respond);  // authenticated by the header check
    if (workers.TrySubmit([&api, req = std::move(req), respond] { respond(api.Handle(req)); }))
      return;
    HttpResponse busy = ErrorReply(503, "the controller is busy: try again in a moment");
    busy.headers["Retry-After"] = "1";
    respond(std::move(busy));
  };
  HttpServer server(
      [&offload](const HttpRequest& req, Responder respond) { offload(req, respond); });
  server.SetBodyLimit(options.max_bits_bytes + 4096);
  // No credential, no body: a stranger's upload is refused from its header.
  server.SetHeaderCheck([&api](const HttpRequest& head) { return api.CheckCredential(head); });

  if (auto s = server.Start(config.ip, kControllerPort); !s) {
    LogError("controller: {}", s.error());
    return 1;
  }
  // Only current members' node certificates get in on the TLS ports: a
  // removed node's certificate still chains to the CA.
  MemberSet members;
  PrimaryMemberSource member_source(client);
  MemberFollower follower(members, member_source);
  follower.Start();
  // App archives for DEAs, to current cluster members only.
  HttpsServer internal(ServerTls{id->ca_pem, id->cert_pem, id->key_pem, id->ca_pem},
                       [&droplets, &offload](const HttpRequest& req, Responder respond) {
                         // Only members get here (the header check below refuses anyone else).
                         if (req.target.rfind("/v2/", 0) == 0) return offload(req, respond);
                         if (req.method == "PUT" && req.target == "/v1/droplets")
                           return respond(ReceiveDroplet(droplets, req, kMaxDropletBytes));
                         respond(ServeDroplet(droplets, req));
                       });
  internal.SetBodyLimit(kMaxDropletBytes + 4096);
  internal.SetHeaderCheck(
      [&members](const HttpRequest& head) -> std::optional<HttpResponse> {
        return members.Refuse(head);  // 401 without a certificate, 403 for a non-member
      });
  if (auto s = internal.Start(config.ip, kControllerInternalPort); !s) {
    LogError("controller: {}", s.error());
    return 1;
  }
  // The API for the routers, over TLS: the routers check this certificate
  // against the cluster CA and show their node certificate (only members
  // connect). Their certificate is no credential: the client's bearer token,
  // passed on by the router, is (as on kControllerPort).
  HttpsServer routed(ServerTls{id->ca_pem, id->cert_pem, id->key_pem, id->ca_pem},
                     [&offload](const HttpRequest& req, Responder respond) {
                       HttpRequest from_client = req;
                       from_client.peer_cn.clear();
                       // The client's address (login rate limits): what the router saw.
                       from_client.peer_ip = ClientIp(req, true);
                       offload(std::move(from_client), respond);
                     });
  routed.SetBodyLimit(options.max_bits_bytes + 4096);
  routed.SetHeaderCheck([&api, &members](const HttpRequest& head) -> std::optional<HttpResponse> {
    if (auto refused = members.Refuse(head)) return refused;
    HttpRequest from_client = head;
    from_client.peer_cn.clear();
    return api.CheckCredential(from_client);
  });
  if (auto s = routed.Start(config.ip, kControllerRouterPort); !s) {
    LogError("controller: {}", s.error());
    return 1;
  }
  LogInfo("controller: API on http://{}:{} and for routers on TLS {}, droplets on {}", config.ip,
          kControllerPort, kControllerRouterPort, kControllerInternalPort);

  std::atomic<bool> done{false};
  bool leader = false;  // used by the loop thread only, then after it ends
  std::chrono::steady_clock::time_point renewed;
  std::thread loop([&] {
    while (!done) {
      // The DEAs only, without their processes: one call per round, O(DEAs).
      auto cluster = client.Call("GET", "/v1/cluster?processes=0&role=dea");
      if (cluster) {
        json c = json::parse(*cluster, nullptr, false);
        std::vector<NodeRecord> deas;
        std::map<std::string, int64_t> reports;
        if (c.is_object() && c.contains("nodes") && c["nodes"].is_array())
          for (const auto& n : c["nodes"]) {
            if (!n.is_object()) continue;
            deas.push_back(NodeFromJson(n));
            reports[deas.back().id] = n.value("last_report_ms", static_cast<int64_t>(0));
          }
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
        reconciler.SetDeas(std::move(deas), std::move(reports));
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
  events.Stop();
  server.Stop();
  internal.Stop();
  routed.Stop();
  follower.Stop();
  workers.Stop();
  return 0;
}

}  // namespace kato
