#include "router/run_router.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "agent/cluster_client.h"
#include "common/log.h"
#include "common/signals.h"
#include "roles/roles.h"
#include "router/proxy.h"

namespace kato {

using json = nlohmann::json;

Result<RouteMap> BuildRoutes(Store& store) {
  auto endpoint = store.GetSetting("endpoint");
  if (!endpoint) return Err(endpoint.error());
  auto nodes = store.ListNodes();
  if (!nodes) return Err(nodes.error());
  auto apps = store.ListDocs("app");
  if (!apps) return Err(apps.error());
  auto assignments = store.ListDocs("assignment");
  if (!assignments) return Err(assignments.error());
  auto reports = store.ListDocs("instances");
  if (!reports) return Err(reports.error());

  RouteMap routes;
  std::string api = endpoint->value_or("");
  std::map<std::string, std::string> ip_of;
  for (const auto& n : *nodes) {
    ip_of[n.id] = n.ip;
    if (!api.empty() && std::count(n.roles.begin(), n.roles.end(), "controller"))
      routes[api].push_back({n.ip, static_cast<uint16_t>(kControllerRouterPort), true});
  }
  if (!api.empty() && !routes.count(api)) routes[api] = {};  // 503: no controller
  std::string domain = api.rfind("api.", 0) == 0 ? api.substr(4) : api;
  // Only instances that are both assigned and reported RUNNING receive traffic.
  std::map<std::string, json> running;  // instance id -> report
  for (const auto& [node_id, value] : *reports) {
    json r = json::parse(value, nullptr, false);
    if (!r.is_object() || !r.contains("instances") || !r["instances"].is_array()) continue;
    for (const auto& i : r["instances"])
      if (i.is_object() && i.value("state", "") == "RUNNING")
        running[i.value("instance_id", "")] = json{{"node", node_id}, {"port", i.value("port", 0)}};
  }
  // An app's host never replaces the API endpoint's route, even if the store
  // holds an app whose name the controller would refuse today.
  std::set<std::string> app_hosts;
  for (const auto& [name, value] : *apps) {
    std::string host = name + "." + domain;
    if (host == api) {
      LogWarn("router: app '{}' would take the API endpoint's route {}; not routed", name, api);
      continue;
    }
    app_hosts.insert(host);
    routes[host] = {};
  }
  for (const auto& [key, value] : *assignments) {
    json a = json::parse(value, nullptr, false);
    if (!a.is_object()) continue;
    auto it = running.find(a.value("instance_id", ""));
    if (it == running.end()) continue;
    std::string host = a.value("app", "") + "." + domain;
    auto ip = ip_of.find(it->second["node"].get<std::string>());
    int port = it->second["port"].get<int>();
    if (ip == ip_of.end() || port <= 0 || port > 65535 || !app_hosts.count(host)) continue;
    routes[host].push_back({ip->second, static_cast<uint16_t>(port)});
  }
  return routes;
}

namespace {
constexpr auto kDrainNotice = std::chrono::milliseconds(1000);
constexpr auto kDrainLimit = std::chrono::milliseconds(5000);
}  // namespace

int RunRouter(const RouterConfig& config) {
  sigset_t set = BlockStopSignals();
  ClusterClient client(config.data_dir);
  auto id = client.Load();
  if (!id) {
    LogError("router: {}", id.error());
    return 1;
  }
  RemoteStore store(client);
  RouteTable table;
  RouterOptions options;
  options.ip = config.ip;
  options.port = config.http_port ? config.http_port : kRouterHttpPort;
  options.tls = ServerTls{id->ca_pem, id->cert_pem, id->key_pem, id->ca_pem};
  options.tls_port = kRouterHttpsPort;
  // To the controllers' API (TLS backends): they must chain to the cluster CA,
  // and the router shows its node certificate.
  options.upstream_tls = ClientTls{id->ca_pem, id->cert_pem, id->key_pem, ""};
  options.health_port = kRouterHealthPort;
  Router router(options, table);
  if (auto s = router.Start(); !s) {
    LogError("router: {}", s.error());
    return 1;
  }
  LogInfo("router: HTTP on {}:{}, HTTPS on {}, health on {}", config.ip, router.port(),
          router.tls_port(), router.health_port());
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    int64_t revision = -1;
    while (!done) {
      auto routes = BuildRoutes(store);
      if (routes) table.Replace(*routes);
      else LogWarn("router: keeping the last routes: {}", routes.error());
      if (auto nodes = store.ListNodes(); nodes) {
        std::vector<std::string> lbs;
        for (const auto& n : *nodes)
          if (std::count(n.roles.begin(), n.roles.end(), "load_balancer")) lbs.push_back(n.ip);
        router.SetTrustedProxies(lbs);
      }
      // Wake on any change of the cluster state; re-check at least every few seconds.
      auto r = client.Watch(revision, Millis(3000));
      if (r) revision = *r;
      else std::this_thread::sleep_for(Millis(500));  // the core is away: retry soon
    }
  });
  int sig = 0;
  sigwait(&set, &sig);
  // Load balancers see /health fail first (they poll it every 500 ms), then
  // requests in flight finish; the supervisor's SIGKILL comes after 10 s.
  LogInfo("router: signal {}, draining", sig);
  router.Drain(kDrainNotice, kDrainLimit);
  LogInfo("router: drained");
  done = true;
  watcher.join();
  return 0;
}

}  // namespace kato
