#include "services/run_harbor.h"

#include <grp.h>
#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "agent/cluster_client.h"
#include "common/fs.h"
#include "common/log.h"
#include "lb/nginx_process.h"
#include "roles/roles.h"
#include "services/harbor_config.h"
#include "services/revision_watch.h"
#include "services/service_model.h"

namespace kato {

using json = nlohmann::json;

namespace {

constexpr Millis kRefresh{2000};
constexpr Millis kStopGrace{12000};

class Harbor {
 public:
  Harbor(HarborConfig cfg, std::string node_id, ClusterClient& client)
      : cfg_(std::move(cfg)),
        node_id_(std::move(node_id)),
        dir_(cfg_.data_dir + "/harbor"),
        client_(client),
        store_(client),
        nginx_(NginxFiles{cfg_.nginx, dir_, dir_ + "/nginx.conf", dir_ + "/run/nginx.pid",
                          dir_ + "/logs", "harbor"}) {}

  int Run(const sigset_t& signals) {
    for (const auto& d : {dir_, dir_ + "/run", dir_ + "/logs"})
      if (auto s = MakeDirs(d, 0755); !s) {
        LogError("harbor: {}", s.error());
        return 1;
      }
    module_ = NginxStreamModule(SystemRoleEnvironment());
    if (module_.empty()) {
      LogError("harbor: nginx's stream module is not installed (apt-get install libnginx-mod-stream)");
      return 1;
    }
    nginx_.KillStale();
    int rc = Serve(signals);
    nginx_.Stop(kStopGrace);
    return rc;
  }

 private:
  Result<std::string> Config(const std::vector<HarborListener>& listeners) {
    HarborConfigInput in;
    in.listen_ip = cfg_.ip;
    in.module_path = module_;
    in.run_dir = dir_ + "/run";
    in.log_dir = dir_ + "/logs";
    if (geteuid() == 0) in.user = getgrnam("nogroup") ? "nobody nogroup" : "nobody";
    in.listeners = listeners;
    return HarborNginxConfig(in);
  }

  // One look at the cluster: what nginx should serve, and what to tell it.
  struct View {
    std::vector<ServiceRecord> services;
    std::vector<HarborListener> listeners;
  };
  Result<View> Look() {
    auto docs = store_.ListDocs("service");
    if (!docs) return Err(docs.error());
    auto reports = store_.ListDocs("instances");
    if (!reports) return Err(reports.error());
    auto nodes = store_.ListNodes();
    if (!nodes) return Err(nodes.error());
    View v;
    for (const auto& [name, text] : *docs)
      if (auto s = ServiceFromJson(text); s && s->type == "harbor" && s->node_id == node_id_)
        v.services.push_back(*s);
    v.listeners = HarborListeners(node_id_, v.services, *reports, *nodes);
    return v;
  }

  // After nginx serves `applied`: READY for each of its services, and the
  // DELETING ones (no longer in it) lose their documents.
  void Tell(const View& v) {
    for (const auto& s : v.services) {
      if (s.state == "DELETING") {
        (void)store_.DeleteDoc("service_state", s.name);
        if (auto d = store_.DeleteDoc("service", s.name); d)
          LogInfo("harbor: removed service {} (port {})", s.name, s.port);
        continue;
      }
      if (told_[s.name] == s.id) continue;
      ServiceState st{s.id, "READY", "", RealClock::instance().wall_ms()};
      if (store_.PutDoc("service_state", s.name, ServiceStateToJson(st))) told_[s.name] = s.id;
    }
  }

  bool StopSignal(const sigset_t& signals, Millis wait) {
    timespec ts{static_cast<time_t>(wait.count() / 1000), static_cast<long>((wait.count() % 1000) * 1000000)};
    int sig = sigtimedwait(&signals, nullptr, &ts);
    return sig == SIGTERM || sig == SIGINT;
  }

  int Serve(const sigset_t& signals) {
    // nginx starts with no listener; the first look fills it in.
    auto empty = Config({});
    if (!empty) {
      LogError("{}", empty.error());
      return 1;
    }
    if (auto s = nginx_.Write(*empty); !s) {
      LogError("harbor: {}", s.error());
      return 1;
    }
    if (auto s = nginx_.Start(); !s) {
      LogError("harbor: {}", s.error());
      return 1;
    }
    RevisionWatch watch(client_);
    std::vector<HarborListener> applied, refused;
    auto next_look = std::chrono::steady_clock::now();
    for (;;) {
      if (StopSignal(signals, Millis(50))) return 0;
      if (auto how = nginx_.Exited()) {
        LogError("harbor: nginx exited ({}); see {}/logs/error.log", *how, dir_);
        return 1;
      }
      nginx_.RotateLogs();
      auto now = std::chrono::steady_clock::now();
      if (!watch.changed() && now < next_look) continue;
      next_look = now + kRefresh;
      auto v = Look();
      if (!v) {
        LogWarn("harbor: keeping the running configuration: {}", v.error());
        continue;
      }
      if (v->listeners != applied && v->listeners != refused) {
        auto conf = Config(v->listeners);
        Status s = conf ? nginx_.Write(*conf) : Status(Err(conf.error()));
        if (!s) {
          LogError("harbor: keeping the running configuration: {}", s.error());
          refused = v->listeners;
          continue;
        }
        nginx_.Reload();
        applied = v->listeners;
        LogInfo("harbor: serving {} port(s)", applied.size());
      }
      Tell(*v);
    }
  }

  HarborConfig cfg_;
  std::string node_id_, dir_, module_;
  ClusterClient& client_;
  RemoteStore store_;
  NginxProcess nginx_;
  std::map<std::string, std::string> told_;  // service name -> the id told READY
};

}  // namespace

int RunHarbor(const HarborConfig& config) {
  auto role = PrepareNginxRole(config.nginx, "apt-get install nginx libnginx-mod-stream");
  if (!role) {
    LogError("harbor: {}", role.error());
    return 1;
  }
  HarborConfig cfg = config;
  cfg.nginx = role->nginx;
  ClusterClient client(cfg.data_dir);
  auto id = client.Load();
  if (!id) {
    LogError("harbor: {}", id.error());
    return 1;
  }
  if (cfg.ip.empty()) cfg.ip = id->ip;
  Harbor h(cfg, id->node_id, client);
  return h.Run(role->signals);
}

}  // namespace kato
