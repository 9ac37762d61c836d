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
#include "roles/roles.h"

namespace kato {

using json = nlohmann::json;

namespace {

constexpr Millis kHealthInterval{500};
constexpr Millis kHealthTimeout{400};
constexpr Millis kStopGrace{12000};      // within the process's stop timeout (20 s)

int64_t NowS() { return RealClock::instance().wall_ms() / 1000; }

// Runs argv and waits for it; its stdout and stderr, and whether it exited 0.
struct RunResult {
  bool ok = false;
  std::string output;
};
RunResult RunAndWait(const std::vector<std::string>& argv) {
  // Built before fork: other threads may hold malloc's lock at that moment.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return {false, "pipe failed"};
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return {false, "fork failed"};
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  RunResult r;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) r.output.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  while (!r.output.empty() && (r.output.back() == '\n' || r.output.back() == ' '))
    r.output.pop_back();
  return r;
}

// The message of nginx's first error line ("2026/01/02 03:04:05 [emerg] 12#12: MESSAGE").
std::string NginxError(const std::string& output) {
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    auto level = line.find("] ");
    if (line.find(" [") == std::string::npos || level == std::string::npos) continue;
    auto colon = line.find(": ", level);
    return colon == std::string::npos ? line.substr(level + 2) : line.substr(colon + 2);
  }
  std::string one_line = output;
  std::replace(one_line.begin(), one_line.end(), '\n', ' ');
  return one_line;
}

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
        store_(client) {}

  int Run(const sigset_t& signals) {
    for (const auto& d : {layout_.dir, layout_.run_dir(), layout_.log_dir(), layout_.web_dir()})
      if (auto s = MakeDirs(d, 0755); !s) {
        LogError("lb: {}", s.error());
        return 1;
      }
    KillStaleNginx();
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
    KATO_TRY(WriteFileAtomic(layout_.conf_next(), *conf, 0644));
    auto t = RunAndWait(NginxArgs(layout_.conf_next(), true));
    if (!t.ok) return Err("nginx -t refused the new configuration: " + NginxError(t.output));
    if (std::rename(layout_.conf_next().c_str(), layout_.conf().c_str()) != 0)
      return Err("cannot rename " + layout_.conf_next() + ": " + strerror(errno));
    return Ok();
  }

  std::vector<std::string> NginxArgs(const std::string& conf, bool test) {
    std::vector<std::string> a = {cfg_.nginx, "-p", layout_.dir + "/", "-e", "stderr", "-c", conf};
    if (test) a.insert(a.begin() + 1, {"-q", "-t"});
    return a;
  }

  Status StartNginx() {
    auto argv = NginxArgs(layout_.conf(), false);
    std::vector<char*> args;  // built before fork (see RunAndWait)
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return Err("fork failed");
    if (pid == 0) {
      // Its own process group: SIGTERM to katod lb's group must not reach nginx,
      // which stops gracefully on the SIGQUIT this process sends it.
      setpgid(0, 0);
      // Should katod lb die without stopping it, the master stops too (and its workers with it).
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    setpgid(pid, pid);
    nginx_pid_ = pid;
    LogInfo("lb: nginx started (pid {})", pid);
    return Ok();
  }

  // An nginx left by an earlier `katod lb` that died without stopping it
  // still holds the ports: kill its process group (the master's pid), workers
  // included (they outlive a killed master). Only processes named nginx in
  // that group are touched, so a reused pid is harmless.
  void KillStaleNginx() {
    auto text = ReadFile(layout_.pid_file());
    if (!text) return;
    pid_t pgid = static_cast<pid_t>(std::atoi(text->c_str()));
    if (pgid <= 1) return;
    auto members = [&] {
      std::vector<pid_t> out;
      std::error_code ec;
      for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end;
           it.increment(ec)) {
        std::string name = it->path().filename().string();
        if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
        auto stat = ReadFile("/proc/" + name + "/stat");
        if (!stat) continue;
        // pid (comm) state ppid pgrp ...
        auto open = stat->find('('), close = stat->rfind(')');
        if (open == std::string::npos || close == std::string::npos) continue;
        std::string comm = stat->substr(open + 1, close - open - 1);
        std::istringstream rest(stat->substr(close + 1));
        std::string state;
        long ppid = 0, pgrp = 0;
        rest >> state >> ppid >> pgrp;
        if (comm == "nginx" && pgrp == pgid && state != "Z") out.push_back(static_cast<pid_t>(std::stol(name)));
      }
      return out;
    };
    auto stale = members();
    if (stale.empty()) return;
    LogWarn("lb: stopping {} nginx process(es) left by an earlier run (group {})", stale.size(),
            pgid);
    for (pid_t p : stale) kill(p, SIGKILL);
    auto deadline = std::chrono::steady_clock::now() + Millis(5000);
    while (!members().empty() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(Millis(20));  // polling a condition, bounded
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
           {"nginx_pid", nginx_pid_},
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
    if (auto s = StartNginx(); !s) {
      LogError("lb: {}", s.error());
      return 1;
    }
    Desired applied = want, refused;
    LogInfo("lb: balancing over {} with the {} certificate", json(applied.pool).dump(),
            applied.cert_source);
    WriteState(applied);
    for (;;) {
      if (StopSignal(signals, Millis(100))) break;
      int status = 0;
      pid_t r = waitpid(nginx_pid_, &status, WNOHANG);
      if (r == nginx_pid_) {
        LogError("lb: nginx exited ({}); see {}/error.log",
                 WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                                   : "signal " + std::to_string(WTERMSIG(status)),
                 layout_.log_dir());
        kill(-nginx_pid_, SIGKILL);  // its workers outlive a killed master
        nginx_pid_ = 0;
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
          auto before = Workers();
          kill(nginx_pid_, SIGHUP);  // graceful: old workers finish their requests
          WaitNewWorkers(before);
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
      RotateLogs();
    }
    StopNginx();
    return 0;
  }

  // nginx's logs grow with every request: past kMaxLogBytes the log becomes
  // NAME.1 (replacing the previous one) and nginx reopens its files (SIGUSR1).
  void RotateLogs() {
    auto now = std::chrono::steady_clock::now();
    if (now < next_rotate_check_) return;
    next_rotate_check_ = now + std::chrono::seconds(10);
    bool rotated = false;
    for (const char* name : {"access.log", "error.log"}) {
      std::string path = layout_.log_dir() + "/" + name;
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0 || st.st_size < kMaxLogBytes) continue;
      if (::rename(path.c_str(), (path + ".1").c_str()) == 0) rotated = true;
      else LogWarn("lb: cannot rotate {}: {}", path, std::strerror(errno));
    }
    if (rotated && nginx_pid_ > 0) {
      kill(nginx_pid_, SIGUSR1);
      LogInfo("lb: rotated nginx's logs (over {} MiB)", kMaxLogBytes >> 20);
    }
  }
  static constexpr off_t kMaxLogBytes = 64 << 20;
  std::chrono::steady_clock::time_point next_rotate_check_{};

  // nginx's worker pids (the master's children), when the kernel lists them.
  std::optional<std::set<std::string>> Workers() {
    std::string p = "/proc/" + std::to_string(nginx_pid_) + "/task/" +
                    std::to_string(nginx_pid_) + "/children";
    auto text = ReadFile(p);
    if (!text) return std::nullopt;
    std::set<std::string> out;
    std::istringstream in(*text);
    for (std::string pid; in >> pid;) out.insert(pid);
    return out;
  }

  // A reload is done when the master has started workers with the new
  // configuration (bounded: a reload that fails leaves the old ones).
  void WaitNewWorkers(const std::optional<std::set<std::string>>& before) {
    if (!before) return;
    auto deadline = std::chrono::steady_clock::now() + Millis(5000);
    while (std::chrono::steady_clock::now() < deadline) {
      auto now = Workers();
      if (!now) return;
      for (const auto& pid : *now)
        if (!before->count(pid)) return;
      std::this_thread::sleep_for(Millis(10));  // polling a condition, bounded
    }
    LogWarn("lb: nginx started no new workers within 5 s of the reload; see {}/error.log",
            layout_.log_dir());
  }

  void StopNginx() {
    if (nginx_pid_ <= 0) return;
    kill(nginx_pid_, SIGQUIT);
    auto deadline = std::chrono::steady_clock::now() + kStopGrace;
    for (;;) {
      if (waitpid(nginx_pid_, nullptr, WNOHANG) == nginx_pid_) break;
      if (std::chrono::steady_clock::now() > deadline) {
        LogWarn("lb: nginx did not stop within {} s; killing it", kStopGrace.count() / 1000);
        kill(-nginx_pid_, SIGKILL);
        waitpid(nginx_pid_, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(Millis(20));  // polling a condition, bounded
    }
    kill(-nginx_pid_, SIGKILL);  // workers that outlived their master, if any
    nginx_pid_ = 0;
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
  pid_t nginx_pid_ = 0;
  std::string state_text_, warned_;
  std::string bad_cert_sha_;  // a certificate nginx refused: not tried again
  json refusal_;              // which, and why (in the state file)
};

}  // namespace

int RunLb(const LbConfig& config) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  sigset_t stop = set;
  LbConfig cfg = config;
  if (cfg.nginx.empty()) cfg.nginx = SystemRoleEnvironment().FindExecutable("nginx");
  if (cfg.nginx.empty()) {
    LogError("lb: nginx not installed (apt-get install nginx)");
    return 1;
  }
  ClusterClient client(cfg.data_dir);
  auto id = client.Load();
  if (!id) {
    LogError("lb: {}", id.error());
    return 1;
  }
  if (cfg.ip.empty()) cfg.ip = id->ip;
  LoadBalancer lb(cfg, id->node_id, client);
  return lb.Run(stop);
}

}  // namespace kato
