#include "dea/run_dea.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "agent/cluster_client.h"
#include "common/fs.h"
#include "common/http.h"
#include "common/log.h"
#include "common/pki.h"
#include "common/signals.h"
#include "common/mounts.h"
#include "dea/assignment_feed.h"
#include "dea/cgroup.h"
#include "dea/command.h"
#include "dea/fs_mounts.h"
#include "dea/instance_disk.h"
#include "dea/instance_log.h"
#include "dea/instance_network.h"
#include "dea/port.h"
#include "dea/sandbox.h"
#include "dea/stager.h"
#include "dea/unpack.h"
#include "roles/roles.h"
#include "services/service_model.h"
#include "supervisor/launcher.h"

namespace kato {

using json = nlohmann::json;

namespace {

constexpr int kDefaultMemoryMb = 4096;
constexpr int kDefaultDiskMb = 1024;
constexpr const char* kDefaultInstanceCidr = "10.254.0.0/16";
constexpr Millis kStopGrace{5000};
constexpr Millis kStartTimeout{60000};

// Names from assignments become path components: letters, digits and '-' only.
bool SafeName(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
  return true;
}

struct Instance {
  std::string id, app;
  int index = 0;
  int64_t version = 0;
  int memory_mb = 256;
  int port = 0;
  pid_t pid = 0;
  std::string state = "STARTING";  // STARTING RUNNING CRASHED STOPPED
  int64_t since_ms = 0;
  SteadyTime started, stop_sent;
  bool stopping = false;
  std::string dir;
  std::string message;
  Attachment net;     // its network namespace (index -1: none yet)
  json harbor = json::array();  // [{"service", "port" (on this node), "protocol"}]
  InstanceDisk disk;  // its disk image (empty: none yet)
  std::vector<FsMount> fs;  // its filesystem services, mounted with sshfs
};

// The dea component's settings (`kato config set dea KEY VALUE`).
struct DeaSettings {
  int memory_mb = kDefaultMemoryMb;
  std::string instance_cidr = kDefaultInstanceCidr;
  std::vector<EgressRule> egress_allow;
  bool allow_unlimited = false;
  int staging_memory_mb = 1024;
  int staging_timeout_s = 600;
  std::string npm_registry;
};

// "PID STARTTIME" of a process, which identifies it across pid reuse.
std::string OwnerLine(pid_t pid) {
  auto start = ProcessStartTime(pid);
  return std::to_string(pid) + " " + std::to_string(start ? *start : 0);
}

NetworkOptions NetworkOptionsFor(const std::string& node_id, const std::string& ip,
                                 const std::string& cidr) {
  NetworkOptions o;
  o.node_id = node_id;
  o.node_ip = ip;
  o.instance_cidr = cidr;
  o.owner = OwnerLine(::getpid());
  o.alive = [](const std::string& owner) {
    std::istringstream in(owner);
    long long pid = 0;
    unsigned long long start = 0;
    return in >> pid >> start && pid > 1 && pid < (1 << 30) &&
           ProcessAlive(static_cast<pid_t>(pid)) &&
           ProcessStartTime(static_cast<pid_t>(pid)) == start;
  };
  return o;
}

// The settings now; `last` when the core cannot be asked (it is away).
DeaSettings ReadSettings(RemoteStore& store, const DeaSettings& last = DeaSettings{}) {
  DeaSettings out;
  auto list = store.ListConfig("dea");
  if (!list) return last;
  for (const auto& e : *list) {
    json v = json::parse(e.value_json, nullptr, false);
    if (e.key == "memory_mb" && v.is_number_integer()) out.memory_mb = v.get<int>();
    if (e.key == "instance_cidr" && v.is_string()) out.instance_cidr = v.get<std::string>();
    if (e.key == "allow_unlimited" && v.is_boolean()) out.allow_unlimited = v.get<bool>();
    if (e.key == "staging_memory_mb" && v.is_number_integer() && v.get<int64_t>() >= 64 &&
        v.get<int64_t>() <= 65536)
      out.staging_memory_mb = v.get<int>();
    if (e.key == "staging_timeout_s" && v.is_number_integer() && v.get<int64_t>() >= 1 &&
        v.get<int64_t>() <= 86400)
      out.staging_timeout_s = v.get<int>();
    if (e.key == "npm_registry" && v.is_string()) out.npm_registry = v.get<std::string>();
    if (e.key == "egress_allow") {
      auto rules = ParseEgressAllow(e.value_json);
      if (rules) out.egress_allow = *rules;
      else LogWarn("dea: ignoring dea egress_allow: {}", rules.error());
    }
  }
  return out;
}

// The primary's side of a DEA's AssignmentFeed: its scoped watch and its own assignments.
AssignmentFeed::Source AssignmentSource(ClusterClient& client, const std::string& node_id) {
  return {[&client, node_id](int64_t after, Millis timeout) -> Result<int64_t> {
            auto body = client.Call("GET",
                                    "/v1/watch?after=" + std::to_string(after) + "&timeout_ms=" +
                                        std::to_string(timeout.count()) +
                                        "&assignments=1&node=" + node_id,
                                    "", timeout + Millis(5000));
            if (!body) return Err(body.error());
            json j = json::parse(*body, nullptr, false);
            if (!j.is_object() || !j.contains("revision") || !j["revision"].is_number_integer())
              return Err("the core sent a watch reply without a revision");
            return j["revision"].get<int64_t>();
          },
          [&client, node_id]() -> Result<AssignmentFeed::Docs> {
            auto body = client.Call("GET", "/v1/docs/assignment?node=" + node_id);
            if (!body) return Err(body.error());
            json j = json::parse(*body, nullptr, false);
            if (!j.is_array()) return Err("the core sent a malformed list of assignments");
            AssignmentFeed::Docs out;
            for (const auto& d : j)
              if (d.is_object() && d.contains("key") && d["key"].is_string() && d.contains("value"))
                out.emplace_back(d["key"].get<std::string>(), d["value"].dump());
            return out;
          }};
}

class Dea {
 public:
  Dea(const DeaConfig& c, const std::string& node_id, const DeaSettings& settings,
      ClusterClient& client, RemoteStore& store, std::unique_ptr<CgroupManager> cgroups)
      : config_(c), client_(client), store_(store), cgroups_(std::move(cgroups)),
        root_(c.data_dir + "/dea"), node_id_(node_id), settings_(settings),
        network_(runner_, NetworkOptionsFor(node_id, c.ip, settings.instance_cidr)),
        disks_(runner_, "/run/kato/dea-" + InstanceNetwork::TagOf(node_id)),
        stager_(Stager::Deps{network_, disks_, launcher_, cgroups_.get(), slow_runner_,
                             [this](const std::string& sha) { return FetchDroplet(sha); },
                             [this] { return PortsInUse(); },
                             [this](const StagingOutcome& o) { Staged(o); }},
                StagerOptionsFor(c, settings)) {}

  Status Init() {
    feed_.Start();
    KATO_TRY(MakeDirs(root_ + "/instances", 0755));
    KATO_TRY(MakeDirs(root_ + "/droplets", 0700));
    KATO_TRY(MakeDirs(root_ + "/staging", 0700));
    stager_.RemoveLeftovers();
    // Instances left by an earlier run (killed with the agent) are gone or
    // orphaned: clear their cgroups, disks, namespaces and rules, then their dirs.
    KATO_TRY(disks_.RemoveLeftovers());
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(root_ + "/instances", ec)) {
      if (cgroups_) (void)cgroups_->Remove(e.path().filename().string());
      std::filesystem::remove_all(e.path(), ec);
    }
    auto policy = Policy();
    if (!policy) return Err(policy.error());
    std::vector<std::string> swept;
    KATO_TRY(network_.Init(*policy, &swept));
    // The disks of DEAs that are gone from this host (killed, never restarted).
    for (const auto& tag : swept) {
      LogInfo("dea: removed what a DEA that is gone left on this host (tag {})", tag);
      std::string root = "/run/kato/dea-" + tag;
      if (auto s = InstanceDisks(runner_, root).RemoveLeftovers(); !s) LogWarn("dea: {}", s.error());
      std::filesystem::remove_all(root, ec);  // now only empty mount points
    }
    return Ok();
  }

  // Asks the feed to stop (its watch returns within its timeout); joined on destruction.
  void StopFollowing() { feed_.RequestStop(); }

  // Removes every namespace and rule of this DEA (after StopAll).
  void Shutdown() {
    if (auto s = network_.Shutdown(); !s) LogWarn("dea: {}", s.error());
    if (auto s = disks_.RemoveLeftovers(); !s) LogWarn("dea: {}", s.error());
    std::error_code ec;
    std::filesystem::remove_all(disks_.mount_root(), ec);
  }

  void Round() {
    Reap();
    CheckMounts();
    CheckReadiness();
    if (++rounds_ % 4 == 0) {
      settings_ = ReadSettings(store_, settings_);
      stager_.SetLimits(settings_.staging_memory_mb, settings_.staging_timeout_s,
                        settings_.npm_registry);
    }
    if (auto policy = Policy(); policy) {
      if (auto s = network_.SetPolicy(*policy); !s) LogWarn("dea: {}", s.error());
    }
    // This DEA's own assignments, followed through its scoped watch (none before the first read).
    auto assignments = feed_.Latest();
    if (assignments) {
      std::set<std::string> wanted;
      for (const auto& [key, value] : *assignments) {
        json a = json::parse(value, nullptr, false);
        if (!a.is_object() || a.value("node_id", "") != node_id_) continue;
        std::string id = a.value("instance_id", "");
        wanted.insert(id);
        if (!instances_.count(id)) Start(a);
      }
      for (auto& [id, inst] : instances_)
        if (!wanted.count(id) && !inst.stopping) Stop(inst);
    }
    EnforceStops();
    Stage();
    Report();
  }

  // Who instances may reach: the cluster's nodes, from the current node list.
  Result<EgressPolicy> Policy() {
    auto nodes = store_.ListNodes();
    if (!nodes) return Err(nodes.error());
    EgressPolicy p;
    for (const auto& n : *nodes) {
      p.nodes.insert(n.ip);
      for (const auto& r : n.roles)
        if (r == "router" || r == "load_balancer") p.routers.insert(n.ip);
    }
    if (auto core = client_.Load(); core && !core->core_ip.empty()) p.nodes.insert(core->core_ip);
    if (auto resolv = ReadFile("/etc/resolv.conf"); resolv)
      for (const auto& ns : Nameservers(*resolv)) p.dns.insert(ns);
    p.allow = settings_.egress_allow;
    return p;
  }

  // Between rounds: exits and instances coming up are reported as they
  // happen (every 20 ms), not at the next round, so that a pushed app serves
  // and a crash is seen sooner. Only starting instances are probed here.
  void Pause(Millis total, const std::atomic<bool>& done) {
    auto end = std::chrono::steady_clock::now() + total;
    while (!done && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(Millis(20));  // the pace of the quick checks
      Reap();
      for (auto& [id, i] : instances_)
        if (!i.stopping && i.pid > 0 && i.state == "STARTING" && prober_.ready({i.net.ip, i.port}))
          SetState(i, "RUNNING");
      if (changed_) Report();
    }
  }

  void StopAll() {
    stager_.StopAll();
    for (auto& [id, inst] : instances_)
      if (!inst.stopping) Stop(inst);
    auto deadline = std::chrono::steady_clock::now() + kStopGrace + Millis(2000);
    while ((!instances_.empty() || stager_.busy()) && std::chrono::steady_clock::now() < deadline) {
      Reap();
      EnforceStops();
      std::this_thread::sleep_for(Millis(50));  // waiting for exits, bounded
    }
  }

 private:
  void SetState(Instance& i, const std::string& state, const std::string& message = "") {
    if (i.state == state) return;
    LogInfo("dea: instance {} ({} #{}) {} -> {} {}", i.id, i.app, i.index, i.state, state, message);
    i.state = state;
    i.message = message;
    i.since_ms = RealClock::instance().wall_ms();
    changed_ = true;
  }

  // The droplet with this SHA-256, from the local cache or else from a controller;
  // what is downloaded is checked against the hash before it is cached.
  Result<std::string> FetchDroplet(const std::string& sha256) {
    if (!IsSha256Hex(sha256)) return Err("the assignment names no valid droplet (SHA-256)");
    std::string path = root_ + "/droplets/" + sha256 + ".tar.gz";
    if (PathExists(path)) return path;
    auto r = AskControllers("GET", "/v1/droplets/" + sha256, "",
                            [&](const std::string& ip, const HttpResponse& r, bool&) -> Status {
                              if (r.status != 200)
                                return Err("controller " + ip + " answered HTTP " + std::to_string(r.status));
                              if (Sha256Hex(r.body) != sha256)
                                return Err("controller " + ip + " sent a droplet whose SHA-256 is not " + sha256);
                              return Ok();
                            });
    if (!r) return Err("cannot fetch droplet " + sha256 + ": " + r.error());
    KATO_TRY(WriteFileAtomic(path, r->body, 0600));
    return path;
  }

  // Calls each controller in turn on its internal port until `accept` takes
  // an answer; it refuses one with an error, and sets `final` when every
  // controller would answer the same.
  Result<HttpResponse> AskControllers(
      const std::string& method, const std::string& path, const std::string& body,
      const std::function<Status(const std::string& ip, const HttpResponse&, bool& final)>& accept) {
    auto id = client_.Load();
    if (!id) return Err(id.error());
    auto nodes = store_.ListNodes();
    if (!nodes) return Err(nodes.error());
    std::string last = "no controller in the cluster";
    for (const auto& n : *nodes) {
      if (std::find(n.roles.begin(), n.roles.end(), "controller") == n.roles.end()) continue;
      auto r = HttpsCall(ClientTls{id->ca_pem, id->cert_pem, id->key_pem, ""}, n.ip,
                         kControllerInternalPort, method, path, body, Millis(30000));
      if (!r) {
        last = r.error();
        continue;
      }
      bool final = false;
      auto ok = accept(n.ip, *r, final);
      if (ok) return std::move(*r);
      last = ok.error();
      if (final) break;
    }
    return Err(last);
  }

  void Start(const json& a) {
    Instance inst;
    inst.id = a.value("instance_id", "");
    inst.app = a.value("app", "");
    inst.index = a.value("index", 0);
    inst.version = a.value("version", static_cast<int64_t>(0));
    inst.dir = root_ + "/instances/" + inst.id;
    inst.since_ms = RealClock::instance().wall_ms();
    inst.started = std::chrono::steady_clock::now();
    if (!SafeName(inst.id) || !SafeName(inst.app)) {
      LogWarn("dea: ignoring a malformed assignment {}", a.dump());
      return;
    }
    // What is set up so far is undone by Cleanup when the instance goes.
    auto fail = [&](const std::string& why) {
      SetState(inst, "CRASHED", why);
      LogWarn("dea: instance {} of {} cannot start: {}", inst.id, inst.app, why);
      Cleanup(inst);
      instances_[inst.id] = inst;
    };
    auto app_doc = store_.GetDoc("app", inst.app);
    if (!app_doc || !*app_doc) return fail("the app is gone");
    json app = json::parse(**app_doc, nullptr, false);
    inst.memory_mb = app.value("memory_mb", 256);
    int disk_mb = app.value("disk_mb", kDefaultDiskMb);
    InstanceConfig c;
    c.command = app.value("command", "");
    if (c.command.empty()) c.command = app.value("staged_command", "");
    if (c.command.empty()) return fail("the app has no start command (its staging found none)");
    auto droplet = FetchDroplet(a.value("droplet_sha256", app.value("droplet_sha256", "")));
    if (!droplet) return fail(droplet.error());
    if (auto s = MakeDirs(inst.dir + "/logs", 0700); !s) return fail(s.error());
    auto disk = disks_.Create(inst.id, inst.dir + "/disk.img", disk_mb, c.uid, c.gid);
    if (!disk) return fail(disk.error());
    inst.disk = *disk;
    if (auto s = UnpackArchive(*droplet, inst.disk.app(), UnpackLimits{}); !s)
      return fail("the app's archive was refused: " + s.error());
    // Buildpacks leave environment scripts in .profile.d (Heroku's convention).
    if (std::filesystem::is_directory(inst.disk.app() + "/.profile.d"))
      c.command = "for f in /app/.profile.d/*.sh; do [ -r \"$f\" ] && . \"$f\"; done; " + c.command;
    std::set<int> in_use = PortsInUse();
    for (int p : stager_.ports()) in_use.insert(p);
    auto port = AllocatePort(kInstancePortLo, kInstancePortHi, in_use);
    if (!port) return fail(port.error());
    inst.port = *port;
    in_use.insert(inst.port);
    // Its bound services: their credentials in its environment, and the only
    // cluster addresses it may reach besides the routers. A harbor service's
    // proxy reaches it on a port of its own (reported, for the harbor node).
    auto services = BoundServices(store_, inst.app);
    if (!services) return fail(services.error());
    std::vector<PortForward> forwards;
    for (const auto& svc : *services) {
      if (svc.type != "harbor") continue;
      auto host_port = AllocatePort(kInstancePortLo, kInstancePortHi, in_use);
      if (!host_port) return fail(host_port.error());
      in_use.insert(*host_port);
      forwards.push_back({*host_port, svc.port, svc.protocol});
      inst.harbor.push_back({{"service", svc.name}, {"port", *host_port}, {"protocol", svc.protocol}});
    }
    auto net = network_.Attach(inst.port, ServiceEndpoints(*services), forwards);
    if (!net) return fail(net.error());
    inst.net = *net;
    if (auto s = fs_.Mount(inst.dir, inst.disk.mount, inst.disk.app(), *services, store_, c.uid,
                           c.gid, inst.fs);
        !s)
      return fail(s.error());
    for (const auto& m : inst.fs) c.binds.emplace_back(m.host_dir, m.sandbox_dir);
    c.instance_id = inst.id;
    c.app_name = inst.app;
    c.instance_index = inst.index;
    auto endpoint = store_.GetSetting("endpoint");
    std::string domain = endpoint && *endpoint ? **endpoint : "";
    if (domain.rfind("api.", 0) == 0) domain = domain.substr(4);
    c.uris = {inst.app + "." + domain};
    c.app_dir = inst.disk.app();
    c.home_dir = inst.disk.home();
    c.tmp_dir = inst.disk.tmp();
    c.netns_path = inst.net.netns_path;
    c.probe_host = inst.net.ip;
    c.env = ServiceEnv(*services);  // the app's own variables may override DATABASE_URL & co.
    if (app.contains("env") && app["env"].is_object())
      for (const auto& [k, v] : app["env"].items())
        if (v.is_string() && k != "VCAP_SERVICES") c.env[k] = v.get<std::string>();
    c.port = inst.port;
    c.memory_mb = inst.memory_mb;
    c.hidden_paths = {config_.data_dir};
    if (cgroups_) {
      if (auto s = cgroups_->Create(inst.id, InstanceLimits(c)); !s) return fail(s.error());
      c.cgroup_procs_files = cgroups_->ProcsFiles(inst.id);
    }
    std::string args = inst.dir + "/sandbox.args";
    auto launch = InstanceSpec(c, args);
    if (!launch) return fail(launch.error());
    if (auto s = WriteSandboxArgs(args, launch->sandbox_args); !s) return fail(s.error());
    auto out = logs_.Open(inst.id, inst.dir + "/logs/app.log");
    if (!out) return fail(out.error());
    auto pid = launcher_.launch_to_fd(launch->spec, *out);
    ::close(*out);
    if (!pid) return fail(pid.error());
    inst.pid = *pid;
    LogInfo("dea: started {} #{} as instance {} on port {} at {} (pid {}, set up in {} ms)", inst.app,
            inst.index, inst.id, inst.port, inst.net.ip, inst.pid,
            std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - inst.started).count());
    instances_[inst.id] = inst;
  }

  void Stop(Instance& inst) {
    inst.stopping = true;
    inst.stop_sent = std::chrono::steady_clock::now();
    if (inst.pid > 0 && cgroups_) SignalInstance(*cgroups_, inst.id, inst.pid, SIGTERM);
    else if (inst.pid > 0) launcher_.kill_group(inst.pid, SIGTERM);
  }

  void EnforceStops() {
    auto now = std::chrono::steady_clock::now();
    for (auto it = instances_.begin(); it != instances_.end();) {
      Instance& i = it->second;
      if (i.stopping && i.pid > 0 && now - i.stop_sent > kStopGrace) launcher_.kill_group(i.pid, SIGKILL);
      if (i.stopping && i.pid == 0) {
        Cleanup(i);
        it = instances_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Undoes whatever Start set up; the processes are gone (or never started).
  void Cleanup(Instance& i) {
    logs_.Close(i.id);
    if (cgroups_) (void)cgroups_->Remove(i.id);
    if (auto s = network_.Detach(i.net); !s) LogWarn("dea: instance {}: {}", i.id, s.error());
    i.net = Attachment{};
    fs_.Unmount(i.fs);  // before the disk they are mounted in
    i.fs.clear();
    if (auto s = disks_.Remove(i.disk); !s) LogWarn("dea: instance {}: {}", i.id, s.error());
    i.disk = InstanceDisk{};
    std::error_code ec;
    std::filesystem::remove_all(i.dir, ec);
  }

  void Reap() {
    for (const auto& e : launcher_.reap()) {
      if (stager_.OnExit(e)) continue;
      for (auto& [id, i] : instances_)
        for (auto& m : i.fs)
          if (m.pid == e.pid) {
            m.pid = 0;
            LoseMount(i, m.service, "sshfs exited (see " + i.dir + "/logs/fs-" + m.service + ".log)");
          }
      for (auto& [id, i] : instances_) {
        if (i.pid != e.pid) continue;
        i.pid = 0;
        if (i.stopping) break;
        std::string why = WIFEXITED(e.status) ? "exited with status " + std::to_string(WEXITSTATUS(e.status))
                                              : "killed by signal " + std::to_string(WTERMSIG(e.status));
        if (cgroups_)
          if (auto m = cgroups_->ReadMemoryEvents(i.id); m && m->oom_kills > 0)
            why = "killed: out of memory (limit " + std::to_string(i.memory_mb) + " MB)";
        SetState(i, "CRASHED", why);
        break;
      }
    }
  }

  // An instance whose filesystem service is no longer mounted is stopped
  // (CRASHED, so it is started again, mounted anew), never left to write
  // into the empty directory under its mount point.
  void LoseMount(Instance& i, const std::string& service, const std::string& why) {
    if (i.stopping || i.pid == 0) return;
    SetState(i, "CRASHED", "filesystem service " + service + " is no longer mounted: " + why);
    Stop(i);
  }

  void CheckMounts() {
    bool any = false;
    for (const auto& [id, i] : instances_) any = any || !i.fs.empty();
    if (!any) return;
    auto info = ReadFile("/proc/self/mountinfo");
    if (!info) return;
    for (auto& [id, i] : instances_)
      if (std::string lost = FsMounts::Lost(i.fs, *info); !lost.empty())
        LoseMount(i, lost, "it was unmounted");
  }

  void CheckReadiness() {
    auto now = std::chrono::steady_clock::now();
    for (auto& [id, i] : instances_) {
      if (i.stopping || i.pid == 0) continue;
      bool up = prober_.ready({i.net.ip, i.port});
      if (i.state == "STARTING" && up) SetState(i, "RUNNING");
      else if (i.state == "RUNNING" && !up) SetState(i, "STARTING", "port " + std::to_string(i.port) + " stopped answering");
      else if (i.state == "STARTING" && now - i.started > kStartTimeout) {
        SetState(i, "CRASHED", "not listening on its port after 60 s");
        Stop(i);
      }
    }
  }

  std::set<int> PortsInUse() const {
    std::set<int> in_use;
    for (const auto& [id, i] : instances_) {
      in_use.insert(i.port);
      for (const auto& f : i.net.forwards) in_use.insert(f.host_port);
    }
    return in_use;
  }

  static StagerOptions StagerOptionsFor(const DeaConfig& c, const DeaSettings& s) {
    StagerOptions o;
    o.root = c.data_dir + "/dea/staging";
    o.cache_root = c.data_dir + "/dea/cache";
    o.buildpacks_dir = BuiltinBuildpacksDir();
    o.hidden_paths = {c.data_dir};
    o.memory_mb = s.staging_memory_mb;
    o.timeout_s = s.staging_timeout_s;
    o.npm_registry = s.npm_registry;
    o.port_lo = kInstancePortLo;
    o.port_hi = kInstancePortHi;
    return o;
  }

  // The builds asked of this DEA ("staging/APP" documents).
  void Stage() {
    auto docs = store_.ListDocs("staging");
    if (!docs) return;  // the core is away: running builds go on
    std::vector<StagingTask> wanted;
    for (const auto& [key, value] : *docs) {
      auto t = ParseStagingDoc(value, node_id_);
      if (!t) LogWarn("dea: ignoring staging/{}: {}", key, t.error());
      else if (*t) wanted.push_back(**t);
    }
    stager_.Round(wanted);
  }

  // A build ended: its droplet goes to a controller, then its outcome.
  void Staged(const StagingOutcome& o) {
    json result{{"task_id", o.task_id}, {"ok", o.ok}, {"message", o.message}};
    if (o.ok) {
      auto bytes = ReadFile(o.droplet_path);
      auto sha = bytes ? ToControllers("PUT", "/v1/droplets", *bytes) : Result<json>(Err(bytes.error()));
      if (!sha || !(*sha)["sha256"].is_string()) {
        result["ok"] = false;
        result["message"] = "cannot hand the droplet to a controller: " +
                            (sha ? std::string("no SHA-256 in its answer") : sha.error());
      } else {
        // This DEA runs it too, most likely: no need to fetch it back.
        std::string cached = root_ + "/droplets/" + (*sha)["sha256"].get<std::string>() + ".tar.gz";
        if (IsSha256Hex((*sha)["sha256"].get<std::string>()))
          ::rename(o.droplet_path.c_str(), cached.c_str());
        result["droplet_sha256"] = (*sha)["sha256"];
        result["command"] = o.command;
        result["buildpack"] = o.buildpack;
      }
    }
    auto r = ToControllers("POST", "/v2/apps/" + o.app + "/staged", result.dump());
    if (!r) LogWarn("dea: cannot report staging {} of {}: {}", o.task_id, o.app, r.error());
  }

  // A call to the first controller that answers it with 200 and JSON, on its internal port.
  Result<json> ToControllers(const std::string& method, const std::string& path,
                             const std::string& body) {
    json j;
    auto r = AskControllers(method, path, body,
                            [&](const std::string& ip, const HttpResponse& r, bool& final) -> Status {
                              j = json::parse(r.body, nullptr, false);
                              if (r.status == 200 && j.is_object()) return Ok();
                              final = r.status < 500;  // refused, not unavailable
                              return Err("controller " + ip + " answered HTTP " + std::to_string(r.status) +
                                         (j.is_object() && j.contains("error") ? ": " + j["error"].dump() : ""));
                            });
    if (!r) return Err(r.error());
    return j;
  }

  void Report() {
    changed_ = false;
    json list = json::array();
    for (const auto& [id, i] : instances_) {
      if (i.stopping) continue;
      list.push_back({{"instance_id", i.id}, {"app", i.app}, {"index", i.index},
                      {"version", i.version}, {"state", i.state}, {"port", i.port},
                      {"since_ms", i.since_ms}, {"memory_mb", i.memory_mb},
                      {"message", i.message}});
      if (!i.harbor.empty()) list.back()["harbor"] = i.harbor;
    }
    auto r = client_.Call("POST", "/v1/report",
                          json{{"memory_mb", settings_.memory_mb}, {"instances", list}}.dump(),
                          Millis(2000));
    if (!r) LogWarn("dea: cannot report to the core: {}", r.error());
  }

  DeaConfig config_;
  ClusterClient& client_;
  RemoteStore& store_;
  std::unique_ptr<CgroupManager> cgroups_;
  std::string root_;
  std::string node_id_;
  AssignmentFeed feed_{AssignmentSource(client_, node_id_), {}};  // after node_id_
  DeaSettings settings_;
  int64_t rounds_ = 0;
  bool changed_ = false;  // an instance changed state since the last report
  PosixCommandRunner runner_;
  PosixCommandRunner slow_runner_{std::chrono::seconds(300)};  // archiving builds
  InstanceNetwork network_;
  InstanceDisks disks_;
  LogPump logs_;
  PosixLauncher launcher_;
  FsMounts fs_{launcher_, runner_};
  TcpProber prober_;
  std::map<std::string, Instance> instances_;
  Stager stager_;  // after what it uses
};

}  // namespace

int RunDea(const DeaConfig& config) {
  sigset_t set = BlockStopSignals();
  ClusterClient client(config.data_dir);
  auto id = client.Load();
  if (!id) {
    LogError("dea: {}", id.error());
    return 1;
  }
  RemoteStore store(client);
  DeaSettings settings = ReadSettings(store);
  // Instances are untrusted: without every limit the DEA refuses to run them,
  // unless the operator said otherwise.
  auto cg = ProbeCgroups();
  Status limits = cg ? RequireControllers(**cg) : Status(Err(cg.error()));
  if (!limits) {
    if (!settings.allow_unlimited) {
      LogError("dea: refusing to start: {}", limits.error());
      return 1;
    }
    LogError("dea: WARNING: app instances run WITHOUT resource limits (dea allow_unlimited is "
             "true): {}", limits.error());
  }
  Dea dea(config, id->node_id, settings, client, store, cg ? std::move(*cg) : nullptr);
  if (auto s = dea.Init(); !s) {
    LogError("dea: {}", s.error());
    return 1;
  }
  LogInfo("dea: running instances for node {}", id->node_id);
  std::atomic<bool> done{false};
  std::thread signals([&] {
    int sig = 0;
    sigwait(&set, &sig);
    done = true;
  });
  while (!done) {
    dea.Round();
    dea.Pause(Millis(250), done);  // the report period is 500 ms at most
  }
  signals.join();
  dea.StopFollowing();
  dea.StopAll();
  dea.Shutdown();
  return 0;
}

}  // namespace kato
