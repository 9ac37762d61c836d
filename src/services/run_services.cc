#include "services/run_services.h"

#include <signal.h>

#include <memory>
#include <thread>

#include "agent/cluster_client.h"
#include "common/fs.h"
#include "common/layout.h"
#include "common/log.h"
#include "common/signals.h"
#include "dea/command.h"
#include "roles/roles.h"
#include "services/filesystem_driver.h"
#include "services/instance_host.h"
#include "services/memcached_driver.h"
#include "services/mysql_driver.h"
#include "services/pg_session.h"
#include "services/postgres_driver.h"
#include "services/rabbit_driver.h"
#include "services/redis_driver.h"
#include "services/revision_watch.h"
#include "services/service_reconciler.h"
#include "supervisor/launcher.h"

namespace kato {
namespace {

constexpr Millis kPeriod{3000};     // a look at the documents at least this often
constexpr Millis kSoon{100};        // while an instance's process starts or stops
constexpr Millis kStopGrace{15000};  // for the instances' servers, within katod's 20 s

// A type whose client or server binary is missing: every instance fails, saying why.
class Unavailable final : public ServiceDriver {
 public:
  explicit Unavailable(std::string why) : why_(std::move(why)) {}
  Status Prepare() override { return Err(why_); }
  Result<Progress> Provision(const ServiceRecord&) override { return Err(why_); }
  Result<Progress> Remove(const ServiceRecord&) override { return Progress::kDone; }

 private:
  std::string why_;
};

bool StopSignal(const sigset_t& signals, Millis wait) {
  timespec ts{static_cast<time_t>(wait.count() / 1000),
              static_cast<long>((wait.count() % 1000) * 1000000)};
  int sig = sigtimedwait(&signals, nullptr, &ts);
  return sig == SIGTERM || sig == SIGINT;
}

class Services {
 public:
  Services(const ServicesConfig& c, std::string node_id, ClusterClient& client, CommandRunner& runner)
      : config_(c),
        node_id_(std::move(node_id)),
        svc_(DataLayout{c.data_dir}.services_dir()),
        client_(client),
        store_(client),
        runner_(runner),
        supervisor_(RealClock::instance(), launcher_, prober_, svc_ + "/instances/logs",
                    svc_ + "/instances/run"),
        host_(supervisor_) {}

  Status Init() {
    for (const auto& d : {svc_ + "/instances", svc_ + "/instances/logs", svc_ + "/instances/run"})
      KATO_TRY(MakeDirs(d, 0711));
    // Instance servers left by an earlier run (killed with SIGKILL): replaced, not duplicated.
    supervisor_.recover(Millis(10000));
    for (const auto& role : config_.roles) AddDriver(role);
    std::map<std::string, ServiceDriver*> by_type;
    for (auto& [type, d] : drivers_) by_type[type] = d.get();
    reconciler_ = std::make_unique<ServiceReconciler>(store_, node_id_, by_type, RealClock::instance());
    return Ok();
  }

  int Run(const sigset_t& signals) {
    {
      RevisionWatch watch(client_);
      Serve(signals, watch);
    }
    StopInstances();
    return 0;
  }

 private:
  void Serve(const sigset_t& signals, RevisionWatch& watch) {
    auto next = std::chrono::steady_clock::now();
    while (!StopSignal(signals, Millis(50))) {
      supervisor_.tick();
      auto now = std::chrono::steady_clock::now();
      if (!watch.changed() && now < next) continue;
      bool soon = reconciler_->Round();
      supervisor_.tick();
      next = std::chrono::steady_clock::now() + (soon ? kSoon : kPeriod);
    }
  }

  void AddDriver(const std::string& role) {
    SystemRoleEnvironment env;
    std::string missing;
    auto need = [&](const std::string& name, const std::string& package) {
      std::string p = env.FindExecutable(name);
      if (p.empty()) missing = name + " not installed (apt-get install " + package + ")";
      return p;
    };
    std::unique_ptr<ServiceDriver> d;
    std::string type = role == "rabbit" ? "rabbitmq" : role;
    if (role == "postgresql") {
      PgServer pg{config_.ip, 5432, svc_ + "/postgresql/superuser.pw"};
      d = std::make_unique<PostgresDriver>([pg] { return ConnectPostgres(pg); });
    } else if (role == "mysql") {
      std::string mariadb = need("mariadb", "mariadb-client");
      d = std::make_unique<MysqlDriver>(runner_, MysqlClient{mariadb, svc_ + "/mysql/run/mysqld.sock"});
    } else if (role == "rabbit") {
      std::vector<std::string> ctl = {need("setpriv", "util-linux"), "--reuid=rabbitmq",
                                      "--regid=rabbitmq", "--init-groups", "--",
                                      need("env", "coreutils"), "-i",
                                      "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"};
      for (const auto& [k, v] : RabbitEnv({config_.data_dir, config_.ip, node_id_, ""}))
        ctl.push_back(k + "=" + v);
      ctl.push_back(need("rabbitmqctl", "rabbitmq-server"));
      d = std::make_unique<RabbitDriver>(runner_, ctl);
    } else if (role == "redis") {
      d = std::make_unique<RedisDriver>(
          ProcessDriverConfig{svc_ + "/instances/redis", config_.ip,
                              need("redis-server", "redis-server"), "redis",
                              svc_ + "/instances/logs"},
          host_);
    } else if (role == "memcached") {
      d = std::make_unique<MemcachedDriver>(
          ProcessDriverConfig{svc_ + "/instances/memcached", config_.ip,
                              need("memcached", "memcached"), "memcache", svc_ + "/instances/logs"},
          host_);
    } else if (role == "filesystem") {
      FilesystemDriverConfig fc;
      fc.state_dir = svc_ + "/filesystem";
      fc.run_root = "/run/kato-fs-" + node_id_;
      fc.ip = config_.ip;
      fc.sshd = need("sshd", "openssh-server");
      fc.useradd = need("useradd", "passwd");
      fc.userdel = need("userdel", "passwd");
      fc.groupadd = need("groupadd", "passwd");
      fc.mkfs = need("mkfs.ext4", "e2fsprogs");
      fc.mount = need("mount", "mount");
      fc.umount = need("umount", "mount");
      fc.nologin = need("nologin", "login");
      d = std::make_unique<FilesystemDriver>(fc, runner_, host_, [this](const FsHost& h) {
        return store_.PutDoc("fs_host", node_id_, FsHostToJson(h));
      });
    } else {
      LogWarn("services: role {} has no service instances to provision; ignored", role);
      return;
    }
    if (!missing.empty()) d = std::make_unique<Unavailable>("cannot provision " + type + ": " + missing);
    drivers_[type] = std::move(d);
  }

  // The instances' servers stop with this process (they are started again,
  // from their documents, by the next one).
  void StopInstances() {
    supervisor_.stop_all();
    auto deadline = std::chrono::steady_clock::now() + kStopGrace;
    while (!supervisor_.all_stopped() && std::chrono::steady_clock::now() < deadline) {
      supervisor_.tick();
      std::this_thread::sleep_for(Millis(20));  // the pace of the exit checks, bounded above
    }
  }

  ServicesConfig config_;
  std::string node_id_, svc_;
  ClusterClient& client_;
  RemoteStore store_;
  CommandRunner& runner_;
  PosixLauncher launcher_;
  TcpProber prober_;
  Supervisor supervisor_;
  SupervisedInstances host_;
  std::map<std::string, std::unique_ptr<ServiceDriver>> drivers_;
  std::unique_ptr<ServiceReconciler> reconciler_;
};

}  // namespace

int RunServices(const ServicesConfig& config, CommandRunner& runner) {
  sigset_t signals = BlockStopSignals();
  signal(SIGPIPE, SIG_IGN);
  // The instances' servers run in sessions of their own; as subreaper this
  // process collects whatever they leave orphaned.
  BecomeChildSubreaper();
  ClusterClient client(config.data_dir);
  auto id = client.Load();
  if (!id) {
    LogError("services: {}", id.error());
    return 1;
  }
  ServicesConfig c = config;
  if (c.ip.empty()) c.ip = id->ip;
  Services s(c, id->node_id, client, runner);
  if (auto st = s.Init(); !st) {
    LogError("services: {}", st.error());
    return 1;
  }
  std::string roles;
  for (const auto& r : c.roles) roles += (roles.empty() ? "" : ", ") + r;
  LogInfo("services: provisioning the service instances of node {} ({})", id->node_id, roles);
  return s.Run(signals);
}

}  // namespace kato
