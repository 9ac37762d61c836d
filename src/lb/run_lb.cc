#include "lb/run_lb.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/cluster_client.h"
#include "agent/web_cert.h"
#include "common/fs.h"
#include "common/http.h"
#include "common/log.h"
#include "common/pki.h"
#include "lb/lb_layout.h"
#include "lb/nginx_config.h"
#include "lb/nginx_process.h"
#include "roles/roles.h"

namespace kato {

using json = nlohmann::json;

namespace {

constexpr Millis kHealthInterval{500};
constexpr Millis kHealthTimeout{400};
constexpr Millis kStopGrace{12000};      // within the process's stop timeout (20 s)

int64_t NowS() { return RealClock::instance().wall_ms() / 1000; }

// Whether a TCP listener could bind ip:port now (the router this node ran
// before may still be draining it).
bool CanBind(const std::string& ip, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

// What nginx should be running: the pool and the certificate.
struct Desired {
  std::vector<std::string> pool;
  std::string cert_path, key_path, cert_source, cert_fingerprint, cert_sha;
  bool operator==(const Desired& o) const {
    return pool == o.pool && cert_path == o.cert_path && key_path == o.key_path &&
           cert_sha == o.cert_sha;
  }
};

class LoadBalancer {
 public:
  LoadBalancer(LbConfig config, std::string node_id, ClusterClient& client)
      : cfg_(std::move(config)),
        node_id_(std::move(node_id)),
        layout_(cfg_.data_dir),
        client_(client),
        store_(client),
        nginx_(NginxFiles{cfg_.nginx, layout_.dir, layout_.conf(), layout_.pid_file(),
                          layout_.log_dir(), "lb"}) {}

  int Run(const sigset_t& signals) {
    for (const auto& d : {layout_.dir, layout_.run_dir(), layout_.log_dir(), layout_.web_dir()})
      if (auto s = MakeDirs(d, 0755); !s) {
        LogError("lb: {}", s.error());
        return 1;
      }
    nginx_.KillStale();
    LoadCachedCandidates();
    ::unlink(layout_.state_file().c_str());  // written again once nginx runs
    std::thread watcher([this] { WatchCluster(); });
    std::thread checker([this] { CheckHealth(); });
    int rc = Serve(signals);
    {
      std::lock_guard l(mu_);
      done_ = true;
    }
    cv_.notify_all();
    watcher.join();
    checker.join();
    return rc;
  }

 private:
  // ---- the cluster side (watcher thread) ----------------------------------

  void WatchCluster() {
    int64_t revision = -1;
    while (!Done()) {
      RefreshCandidates();
      EnsureWebCert();
      auto r = client_.Watch(revision, Millis(3000));
      if (r) {
        revision = *r;
      } else {
        std::unique_lock l(mu_);
        cv_.wait_for(l, Millis(1000), [&] { return done_; });  // the core is away: retry soon
      }
    }
  }

  void RefreshCandidates() {
    auto nodes = store_.ListNodes();
    if (!nodes) {
      LogWarn("lb: keeping the last router list: {}", nodes.error());
      return;
    }
    std::vector<std::string> only;
    auto cfg = client_.Call("POST", "/v1/config/list",
                            json{{"component", "load_balancer"}}.dump());
    if (!cfg) {
      LogWarn("lb: keeping the last router list: {}", cfg.error());
      return;
    }
    json entries = json::parse(*cfg, nullptr, false);
    std::string key = LbRoutersConfigKey(node_id_);
    if (entries.is_array())
      for (const auto& e : entries)
        if (e.is_object() && e.value("key", "") == key && e.contains("value") &&
            e["value"].is_array())
          for (const auto& ip : e["value"])
            if (ip.is_string()) only.push_back(ip.get<std::string>());
    auto endpoint = store_.GetSetting("endpoint");
    std::lock_guard l(mu_);
    candidates_ = RouterCandidates(*nodes, cfg_.ip, only);
    restricted_ = only;
    candidates_known_ = true;
    if (endpoint && *endpoint) endpoint_ = **endpoint;
  }

  void EnsureWebCert() {
    std::string endpoint;
    {
      std::lock_guard l(mu_);
      endpoint = endpoint_;
    }
    auto r = kato::EnsureWebCert(client_, layout_.web_cert(), layout_.web_key(), endpoint, NowS(),
                                 "lb");
    if (!r) LogWarn("lb: {}", r.error());
  }

  // ---- active health checks (checker thread) --------------------------------

  void CheckHealth() {
    while (!Done()) {
      auto start = std::chrono::steady_clock::now();
      std::vector<std::string> cands;
      {
        std::lock_guard l(mu_);
        cands = candidates_;
      }
      std::vector<char> passed(cands.size(), 0);
      std::vector<std::thread> probes;
      for (size_t i = 0; i < cands.size(); ++i)
        probes.emplace_back([&, i] {
          auto r = HttpCall(cands[i], kRouterHealthPort, "GET", "/health", "", kHealthTimeout);
          passed[i] = r && r->status == 200;
        });
      for (auto& t : probes) t.join();
      {
        std::lock_guard l(mu_);
        for (size_t i = 0; i < cands.size(); ++i) {
          bool before = health_.Healthy(cands[i]);
          health_.Observe(cands[i], passed[i]);
          if (before != health_.Healthy(cands[i]))
            LogInfo("lb: router {} is {}", cands[i], health_.Healthy(cands[i]) ? "up" : "down");
        }
        health_.Retain(candidates_);
        checked_ = true;
      }
      std::unique_lock l(mu_);
      cv_.wait_until(l, start + kHealthInterval, [&] { return done_; });
    }
  }

  // ---- nginx (main thread) -----------------------------------------------

  // The certificate nginx should serve: the operator's when it is installed
  // and sound, else the cluster's.
  bool ChooseCert(Desired& d) {
    auto pick = [&](const std::string& cert_path, const std::string& key_path,
                    const char* source) {
      auto cert = ReadFile(cert_path);
      auto key = ReadFile(key_path);
      if (!cert || !key) return false;
      std::string sha = Sha256Hex(cert_path == key_path ? *cert : *cert + *key);
      if (sha == bad_cert_sha_) return false;  // nginx refused it
      auto info = CheckKeyAndCert(*key, *cert, NowS());
      if (!info) {
        if (warned_ != cert_path + info.error())
          LogWarn("lb: not using {}: {}", cert_path, info.error());
        warned_ = cert_path + info.error();
        return false;
      }
      d.cert_path = cert_path;
      d.key_path = key_path;
      d.cert_source = source;
      d.cert_fingerprint = info->fingerprint;
      d.cert_sha = sha;
      return true;
    };
    return pick(layout_.custom_bundle(), layout_.custom_bundle(), "custom") ||
           pick(layout_.web_cert(), layout_.web_key(), "cluster");
  }

  // What nginx should run now; false while the certificate or the routers are not known yet.
  bool Want(Desired& d) {
    if (!ChooseCert(d)) return false;
    std::lock_guard l(mu_);
    if (!candidates_known_) return false;
    d.pool = health_.Pool(candidates_);
    return true;
  }

  Status WriteAndCheck(const Desired& d) {
    NginxConfigInput in;
    in.listen_ip = cfg_.ip;
    in.routers = d.pool;
    in.router_port = kRouterHttpPort;
    in.http_port = kRouterHttpPort;
    in.https_port = kRouterHttpsPort;
    in.cert_path = d.cert_path;
    in.key_path = d.key_path;
    in.run_dir = layout_.run_dir();
    in.log_dir = layout_.log_dir();
    if (geteuid() == 0) in.user = getgrnam("nogroup") ? "nobody nogroup" : "nobody";
    auto conf = NginxConfig(in);
    if (!conf) return Err(conf.error());
    return nginx_.Write(*conf);
  }

  void LoadCachedCandidates() {
    auto text = ReadFile(layout_.state_file());
    if (!text) return;
    json j = json::parse(*text, nullptr, false);
    if (!j.is_object() || !j.contains("candidates") || !j["candidates"].is_array()) return;
    std::lock_guard l(mu_);
    for (const auto& c : j["candidates"])
      if (c.is_string()) candidates_.push_back(c.get<std::string>());
    candidates_known_ = true;  // until the cluster answers: what this node last knew
  }

  void WriteState(const Desired& d) {
    json j;
    {
      std::lock_guard l(mu_);
      json healthy = json::array();
      for (const auto& c : candidates_)
        if (health_.Healthy(c)) healthy.push_back(c);
      j = {{"pool", d.pool},
           {"candidates", candidates_},
           {"healthy", healthy},
           {"restricted_to", restricted_},
           {"cert", {{"source", d.cert_source}, {"fingerprint", d.cert_fingerprint}}},
           {"nginx_pid", nginx_.pid()},
           {"reloads", reloads_},
           {"refused_cert", refusal_},
           {"listen", {{"ip", cfg_.ip}, {"http", kRouterHttpPort}, {"https", kRouterHttpsPort}}}};
    }
    std::string text = j.dump(2) + "\n";
    if (text == state_text_) return;
    if (auto s = WriteFileAtomic(layout_.state_file(), text, 0644); !s)
      LogWarn("lb: {}", s.error());
    else
      state_text_ = text;
  }

  // Waits for a stop signal for up to `wait`; true when one came.
  bool StopSignal(const sigset_t& signals, Millis wait) {
    timespec ts{static_cast<time_t>(wait.count() / 1000),
                static_cast<long>((wait.count() % 1000) * 1000000)};
    int sig = sigtimedwait(&signals, nullptr, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      LogInfo("lb: signal {}, stopping nginx gracefully", sig);
      return true;
    }
    return false;
  }

  int Serve(const sigset_t& signals) {
    // Before nginx can start: a certificate, the routers, and free ports.
    Desired want;
    for (int n = 0; !Want(want); ++n) {
      if (n % 20 == 19) LogInfo("lb: waiting for the web certificate and the router list");
      if (StopSignal(signals, Millis(250))) return 0;
    }
    auto bind_deadline = std::chrono::steady_clock::now() + Millis(60000);
    while (!CanBind(cfg_.ip, kRouterHttpPort) || !CanBind(cfg_.ip, kRouterHttpsPort)) {
      if (std::chrono::steady_clock::now() > bind_deadline) {
        LogError("lb: {}:{} or :{} is still taken by another process after 60 s", cfg_.ip,
                 kRouterHttpPort, kRouterHttpsPort);
        return 1;
      }
      if (StopSignal(signals, Millis(100))) return 0;
    }
    if (auto s = WriteAndCheck(want); !s) {
      // An operator's certificate that nginx refuses must not keep the balancer down.
      if (want.cert_source != "custom") {
        LogError("lb: {}", s.error());
        return 1;
      }
      LogError("lb: not using the custom certificate: {}", s.error());
      bad_cert_sha_ = want.cert_sha;
      refusal_ = {{"fingerprint", want.cert_fingerprint}, {"error", s.error()}};
      if (!Want(want)) return 1;
      if (auto again = WriteAndCheck(want); !again) {
        LogError("lb: {}", again.error());
        return 1;
      }
    }
    if (auto s = nginx_.Start(); !s) {
      LogError("lb: {}", s.error());
      return 1;
    }
    Desired applied = want, refused;
    LogInfo("lb: balancing over {} with the {} certificate", json(applied.pool).dump(),
            applied.cert_source);
    WriteState(applied);
    for (;;) {
      if (StopSignal(signals, Millis(100))) break;
      if (auto how = nginx_.Exited()) {
        LogError("lb: nginx exited ({}); see {}/error.log", *how, layout_.log_dir());
        return 1;
      }
      Desired d;
      if (Want(d) && !(d == applied) && !(d == refused)) {
        if (auto s = WriteAndCheck(d); !s) {
          LogError("lb: keeping the running configuration: {}", s.error());
          refused = d;
          if (d.cert_source == "custom") {
            // Serve on without it (the pool must still follow the routers); the agent reports it.
            bad_cert_sha_ = d.cert_sha;
            refusal_ = {{"fingerprint", d.cert_fingerprint}, {"error", s.error()}};
          }
        } else {
          if (d.cert_source == "custom") refusal_ = nullptr;
          nginx_.Reload();
          {
            std::lock_guard l(mu_);
            ++reloads_;
          }
          LogInfo("lb: reloaded nginx: pool {}, {} certificate", json(d.pool).dump(),
                  d.cert_source);
          applied = d;
        }
      }
      WriteState(applied);
      nginx_.RotateLogs();
    }
    nginx_.Stop(kStopGrace);
    return 0;
  }

  bool Done() {
    std::lock_guard l(mu_);
    return done_;
  }

 private:
  LbConfig cfg_;
  std::string node_id_;
  LbLayout layout_;
  ClusterClient& client_;
  RemoteStore store_;

  std::mutex mu_;  // guards what follows, shared by the three threads
  std::condition_variable cv_;
  bool done_ = false;
  std::vector<std::string> candidates_, restricted_;
  bool candidates_known_ = false;
  bool checked_ = false;
  std::string endpoint_;
  RouterHealth health_;
  int reloads_ = 0;

  // Main thread only.
  NginxProcess nginx_;
  std::string state_text_, warned_;
  std::string bad_cert_sha_;  // a certificate nginx refused: not tried again
  json refusal_;              // which, and why (in the state file)
};

}  // namespace

int RunLb(const LbConfig& config) {
  auto role = PrepareNginxRole(config.nginx, "apt-get install nginx");
  if (!role) {
    LogError("lb: {}", role.error());
    return 1;
  }
  LbConfig cfg = config;
  cfg.nginx = role->nginx;
  ClusterClient client(cfg.data_dir);
  auto id = client.Load();
  if (!id) {
    LogError("lb: {}", id.error());
    return 1;
  }
  if (cfg.ip.empty()) cfg.ip = id->ip;
  LoadBalancer lb(cfg, id->node_id, client);
  return lb.Run(role->signals);
}

}  // namespace kato
