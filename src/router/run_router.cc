#include "router/run_router.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "agent/cluster_client.h"
#include "agent/web_cert.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/signals.h"
#include "roles/roles.h"
#include "roles/router_settings.h"
#include "router/proxy.h"
#include "router/router_certs.h"
#include "router/router_layout.h"

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
constexpr auto kCertCheckEvery = std::chrono::milliseconds(1000);
constexpr int kWebCertCheckEvery = 60;  // rounds of kCertCheckEvery

int64_t NowS() { return RealClock::instance().wall_ms() / 1000; }

// The router's settings as the cluster config holds them now (the defaults
// while the core cannot be asked).
RouterSettings LoadSettings(ClusterClient& client) {
  auto r = client.Call("POST", "/v1/config/list", json{{"component", "router"}}.dump());
  std::vector<std::pair<std::string, std::string>> entries;
  json list = r ? json::parse(*r, nullptr, false) : json();
  if (!r) LogWarn("router: cannot read the router settings, using the defaults: {}", r.error());
  if (list.is_array())
    for (const auto& e : list)
      if (e.is_object() && e.contains("key") && e["key"].is_string() && e.contains("value"))
        entries.emplace_back(e["key"].get<std::string>(), e["value"].dump());
  std::vector<std::string> warnings;
  RouterSettings s = ParseRouterSettings(entries, &warnings);
  for (const auto& w : warnings) LogWarn("router: {}", w);
  return s;
}

// Keeps what port 443 serves in step with the files (RouterCerts), fetching
// the cluster's web certificate when it is missing or due, and writes the
// state file the agent reads (`kato op custom_ssl_cert`). The endpoint is re-read,
// and the web certificate checked, once a minute.
class CertKeeper {
 public:
  CertKeeper(ClusterClient& client, Store& store, Router& router, const RouterLayout& layout,
             ServedCert node_cert, int max_connections, std::string access_log)
      : client_(client),
        store_(store),
        router_(router),
        layout_(layout),
        certs_(layout, std::move(node_cert)),
        max_connections_(max_connections),
        access_log_(std::move(access_log)) {}

  void Round() {
    if (round_++ % kWebCertCheckEvery == 0 || endpoint_.empty()) {
      auto endpoint = store_.GetSetting("endpoint");
      if (endpoint && *endpoint) endpoint_ = **endpoint;
      auto fetched = EnsureWebCert(client_, layout_.web_cert(), layout_.web_key(), endpoint_,
                                   NowS(), "router");
      if (!fetched && fetched.error() != last_warning_) {
        LogWarn("router: {}", fetched.error());
        last_warning_ = fetched.error();
      }
    }
    std::string problem;
    CertChoice choice = certs_.Choose(NowS(), refused_sha_, &problem);
    if (choice.id == served_id_ && problem == last_problem_) return;
    if (!problem.empty() && problem != last_problem_)
      LogWarn("router: not serving the custom certificate: {}", problem);
    last_problem_ = problem;
    auto s = router_.SetCertificates(choice.certs);
    if (!s && !choice.custom_sha.empty()) {
      // The operator's certificate would not load: serve the rest, say why.
      refused_sha_ = choice.custom_sha;
      refused_ = {{"fingerprint", choice.fingerprints[0]}, {"error", s.error()}};
      LogWarn("router: refused the custom certificate: {}", s.error());
      return Round();
    }
    if (!s) {
      LogError("router: {}", s.error());
      return;
    }
    served_id_ = choice.id;
    LogInfo("router: serving on 443: {}", [&] {
      std::string list;
      for (size_t i = 0; i < choice.sources.size(); ++i)
        list += (i ? ", " : "") + choice.sources[i] + " " + choice.fingerprints[i].substr(0, 16);
      return list;
    }());
    json certs = json::array();
    for (size_t i = 0; i < choice.sources.size(); ++i)
      certs.push_back({{"source", choice.sources[i]}, {"fingerprint", choice.fingerprints[i]}});
    json state{{"cert", certs.empty() ? json::object() : certs[0]},
               {"certs", certs},
               {"refused_cert", refused_},
               {"custom_problem", problem},
               {"max_connections", max_connections_},
               {"access_log", access_log_}};
    if (auto w = WriteFileAtomic(layout_.state_file(), state.dump(2) + "\n", 0644); !w)
      LogWarn("router: {}", w.error());
  }

 private:
  ClusterClient& client_;
  Store& store_;
  Router& router_;
  const RouterLayout& layout_;
  RouterCerts certs_;
  const int max_connections_;
  const std::string access_log_;
  int64_t round_ = 0;
  std::string endpoint_, served_id_, refused_sha_, last_problem_, last_warning_;
  json refused_ = json::object();
};

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
  RouterLayout layout(config.data_dir);
  for (const auto& dir : {layout.dir, layout.web_dir()}) {
    if (auto s = MakeDirs(dir, 0700); !s) {
      LogError("router: {}", s.error());
      return 1;
    }
  }
  RouterSettings settings = LoadSettings(client);
  RouteTable table;
  RouterOptions options;
  options.ip = config.ip;
  options.port = config.http_port ? config.http_port : kRouterHttpPort;
  // The node's certificate until RouterCerts has chosen (it names no host).
  options.tls = ServerTls{id->ca_pem, id->cert_pem, id->key_pem, id->ca_pem};
  options.tls_port = kRouterHttpsPort;
  // To the controllers' API (TLS backends): they must chain to the cluster CA,
  // and the router shows its node certificate.
  options.upstream_tls = ClientTls{id->ca_pem, id->cert_pem, id->key_pem, ""};
  options.health_port = kRouterHealthPort;
  options.max_connections = settings.max_connections;
  options.keepalive_timeout = std::chrono::seconds(settings.keepalive_timeout_s);
  options.header_timeout = std::chrono::seconds(settings.header_timeout_s);
  options.upstream_timeout = std::chrono::seconds(settings.upstream_timeout_s);
  options.max_request_body = uint64_t(settings.max_request_body_mb) << 20;
  if (settings.access_log) options.access_log = layout.access_log();
  Router router(options, table);
  if (auto s = router.Start(); !s) {
    LogError("router: {}", s.error());
    return 1;
  }
  LogInfo("router: HTTP on {}:{}, HTTPS on {}, health and metrics on {}; at most {} connections",
          config.ip, router.port(), router.tls_port(), router.health_port(),
          router.max_connections());

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  auto wait = [&](Millis d) {
    std::unique_lock l(mu);
    return cv.wait_for(l, d, [&] { return done; });
  };
  std::thread watcher([&] {
    int64_t revision = -1;
    for (;;) {
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
      else if (wait(Millis(500))) return;  // the core is away: retry soon
      std::lock_guard l(mu);
      if (done) return;
    }
  });
  std::thread cert_thread([&] {
    CertKeeper keeper(client, store, router, layout,
                      ServedCert{id->cert_pem + id->ca_pem, id->key_pem}, router.max_connections(),
                      options.access_log);
    do keeper.Round();
    while (!wait(kCertCheckEvery));
  });
  int sig = 0;
  sigwait(&set, &sig);
  // Load balancers see /health fail first (they poll it every 500 ms), then
  // requests in flight finish; the supervisor's SIGKILL comes after 10 s.
  LogInfo("router: signal {}, draining", sig);
  router.Drain(kDrainNotice, kDrainLimit);
  LogInfo("router: drained");
  {
    std::lock_guard l(mu);
    done = true;
  }
  cv.notify_all();
  watcher.join();
  cert_thread.join();
  return 0;
}

}  // namespace kato
