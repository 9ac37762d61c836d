#include "agent/agent.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "agent/custom_cert.h"
#include "agent/dea_logs.h"
#include "agent/identity.h"
#include "agent/member_set.h"
#include "common/fs.h"
#include "common/http.h"
#include "common/log.h"
#include "common/net.h"
#include "common/pki.h"
#include "common/redact.h"
#include "common/unix_socket.h"
#include "lb/lb_layout.h"
#include "primary/primary.h"
#include "roles/roles.h"
#include "store/store.h"
#include "supervisor/supervisor.h"

namespace kato {

using json = nlohmann::json;
using Progress = std::function<void(const std::string&)>;

namespace {

constexpr Millis kCallTimeout{3000};
constexpr Millis kPeerStatusTimeout{1500};

// Who asked: recorded in the cluster's history.
struct Caller {
  std::string user = "root";
  std::string command;
};

std::string UserName(uid_t uid) {
  struct passwd* pw = getpwuid(uid);
  return pw ? pw->pw_name : std::to_string(uid);
}

std::vector<std::string> Strings(const json& args, const char* key) {
  std::vector<std::string> out;
  if (args.contains(key) && args[key].is_array())
    for (const auto& v : args[key])
      if (v.is_string()) out.push_back(v.get<std::string>());
  return out;
}

std::string Str(const json& args, const char* key) {
  if (!args.is_object() || !args.contains(key) || !args[key].is_string()) return "";
  return args[key].get<std::string>();
}

json ProcessJson(const ProcessStatus& p) {
  return json{{"name", p.name},         {"state", ToString(p.state)}, {"pid", p.pid},
              {"message", p.message},   {"log", p.log_path},          {"since_ms", p.since_ms}};
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

struct Agent::Impl {
  AgentOptions opt;
  DataLayout layout;

  std::mutex mu;  // guards id, member, pki
  NodeIdentity id;
  Membership member;
  struct Pki {
    std::string ca, cert, key;
  } pki;

  PosixLauncher launcher;
  TcpProber prober;
  SystemRoleEnvironment roles_env;
  std::mutex sup_mu;  // guards sup
  std::unique_ptr<Supervisor> sup;

  std::atomic<bool> stopping{false};
  std::mutex wake_mu;
  std::condition_variable wake_cv;
  bool wake = false;  // guarded by wake_mu: heartbeat now

  std::mutex server_mu;
  std::unique_ptr<HttpsServer> node_server;  // agent port, guarded by server_mu
  std::string node_server_ip, node_server_cert;
  int cli_fd = -1;
  int lock_fd = -1;
  int loop_fd = -1;  // eventfd: wakes the main loop
  std::atomic<int64_t> seen_revision{0};
  std::atomic<bool> core_reachable{true};
  MemberSet members;  // who may use the agent port; from join replies and /v1/members
  std::atomic<int64_t> members_fetched{-1};  // the members_revision of the last fetch

  explicit Impl(AgentOptions o) : opt(std::move(o)), layout{opt.data_dir} {}

  // ---- state helpers ------------------------------------------------------

  NodeIdentity Identity() {
    std::lock_guard l(mu);
    return id;
  }
  Membership Member() {
    std::lock_guard l(mu);
    return member;
  }
  Pki PkiCopy() {
    std::lock_guard l(mu);
    return pki;
  }
  void LoadPki() {
    Pki p;
    if (auto c = ReadFile(layout.ca_cert())) p.ca = *c;
    if (auto c = ReadFile(layout.node_cert())) p.cert = *c;
    if (auto c = ReadFile(layout.node_key())) p.key = *c;
    std::lock_guard l(mu);
    pki = p;
  }
  bool IsCore() {
    std::lock_guard l(mu);
    return member.attached && Contains(member.roles, "primary");
  }

  void Wake() {
    {
      std::lock_guard l(wake_mu);
      wake = true;
    }
    wake_cv.notify_all();
  }

  // Applies the assigned roles to the supervisor.
  void Reconcile() {
    auto m = Member();
    auto ident = Identity();
    std::set<std::string> roles;
    if (m.attached) roles.insert(m.roles.begin(), m.roles.end());
    NodeContext ctx{opt.data_dir, ident.ip, ident.id, opt.katod_path};
    auto specs = ProcessesForRoles(roles, ctx, roles_env);
    std::lock_guard l(sup_mu);
    sup->set_desired(std::move(specs));
    sup->tick();
    WakeMainLoop();
  }

  // The main loop sleeps up to 100 ms when nothing is starting; a new or
  // restarted process wants its readiness checked sooner.
  void WakeMainLoop() {
    uint64_t one = 1;
    if (loop_fd >= 0) (void)::write(loop_fd, &one, sizeof one);
  }

  // Asks the primary to change this node's roles (body: {"node", "add"/"remove"})
  // and records its answer as this node's membership.
  Result<Membership> ChangeRoles(const json& body, const Caller& caller) {
    auto r = CallPrimary("POST", "/v1/nodes/roles", body, kCallTimeout, &caller);
    if (!r) return Err(r.error());
    Membership n = Member();
    n.roles = Strings(*r, "roles");
    if (r->contains("revision") && (*r)["revision"].is_number())
      n.revision = std::max(n.revision, (*r)["revision"].get<int64_t>());
    KATO_TRY(SetMembership(n));
    return n;
  }

  Status SetMembership(const Membership& m) {
    KATO_TRY(SaveMembership(layout, m));
    {
      std::lock_guard l(mu);
      member = m;
    }
    Reconcile();
    return Ok();
  }

  std::vector<ProcessStatus> Processes() {
    std::lock_guard l(sup_mu);
    return sup->status();
  }

  json LocalStatus() {
    auto ident = Identity();
    auto m = Member();
    json procs = json::array();
    for (const auto& p : Processes()) procs.push_back(ProcessJson(p));
    json out{{"id", ident.id},
             {"ip", ident.ip},
             {"hostname", ident.hostname},
             {"version", opt.version},
             {"state", "up"},
             {"attached", m.attached},
             {"core_ip", m.core_ip},
             {"roles", m.attached ? m.roles : std::vector<std::string>{}},
             {"processes", procs}};
    if (m.attached && Contains(m.roles, "load_balancer")) out["load_balancer"] = LbState();
    return out;
  }

  // What `katod lb` last wrote about itself: its pool, the routers' health, its certificate.
  json LbState() {
    auto text = ReadFile(LbLayout(opt.data_dir).state_file());
    json j = text ? json::parse(*text, nullptr, false) : json();
    return j.is_object() ? j : json::object();
  }

  // ---- talking to the cluster -------------------------------------------

  Result<json> DecodeReply(const Result<HttpResponse>& r, const std::string& who) {
    if (!r) return Err(r.error());
    json j = json::parse(r->body, nullptr, false);
    if (r->status >= 300) {
      if (!j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_string())
        return Err(j["error"].get<std::string>());
      return Err(who + " answered HTTP " + std::to_string(r->status));
    }
    if (j.is_discarded()) return Err(who + " sent a reply that is not JSON");
    return j;
  }

  Result<json> CallPrimary(const std::string& method, const std::string& path, json body,
                           Millis timeout = kCallTimeout, const Caller* caller = nullptr) {
    auto m = Member();
    if (!m.attached)
      return Err("this node is not in a cluster: attach it with `kato node attach CORE_IP` or "
                 "make it the core with `kato node setup core API_HOST`");
    auto p = PkiCopy();
    if (caller) body["audit"] = {{"node", Identity().ip}, {"user", caller->user},
                                 {"command", caller->command}};
    auto r = HttpsCall(ClientTls{p.ca, p.cert, p.key, ""}, m.core_ip, kPrimaryPort, method, path,
                       method == "GET" ? "" : body.dump(), timeout);
    if (!r) return Err("cannot reach the core: " + r.error());
    return DecodeReply(r, "the core");
  }

  Result<json> CallAgent(const std::string& ip, const std::string& method,
                         const std::string& path, const json& body, Millis timeout) {
    auto p = PkiCopy();
    auto r = HttpsCall(ClientTls{p.ca, p.cert, p.key, ""}, ip, kAgentPort, method, path,
                       method == "GET" ? "" : body.dump(), timeout);
    if (!r) return Err("cannot reach the node agent: " + r.error());
    return DecodeReply(r, "the agent at " + ip);
  }

  // Adopts what the primary says about this node (roles, endpoint).
  void ApplyNodeReply(const json& reply) {
    if (!reply.contains("node") || !reply["node"].is_object()) return;
    Membership m = Member();
    if (!m.attached) return;
    // A reply computed before a change this node already applied (a role
    // change that raced with this heartbeat) must not roll it back.
    if (reply.contains("revision") && reply["revision"].is_number() &&
        reply["revision"].get<int64_t>() < m.revision)
      return;
    Membership n = m;
    n.roles = Strings(reply["node"], "roles");
    if (reply.contains("endpoint") && reply["endpoint"].is_string())
      n.endpoint = reply["endpoint"].get<std::string>();
    if (reply.contains("version") && reply["version"].is_string())
      n.cluster_version = reply["version"].get<std::string>();
    if (reply.contains("revision") && reply["revision"].is_number())
      n.revision = reply["revision"].get<int64_t>();
    if (n.roles != m.roles || n.endpoint != m.endpoint || n.cluster_version != m.cluster_version ||
        n.revision != m.revision) {
      if (n.roles != m.roles) LogInfo("roles assigned by the cluster: {}", json(n.roles).dump());
      if (auto s = SetMembership(n); !s) LogError("{}", s.error());
    }
  }

  // Leaves the cluster locally: stops every cluster role, forgets the cluster.
  void DetachLocally(const std::string& why) {
    LogWarn("leaving the cluster: {}", why);
    Membership none;
    members.Clear();
    members_fetched = -1;
    if (auto s = SetMembership(none); !s) LogError("{}", s.error());
    for (auto f : {layout.node_cert(), layout.ca_cert()}) ::unlink(f.c_str());
    LoadPki();
    if (auto s = StartNodeServer(); !s) LogError("{}", s.error());
  }

  void Heartbeat() {
    auto m = Member();
    if (!m.attached) return;
    auto ident = Identity();
    json procs = json::array();
    for (const auto& p : Processes()) {
      json j{{"name", p.name}, {"state", ToString(p.state)}, {"pid", p.pid}};
      if (!p.message.empty() && p.state != ProcState::kRunning) j["message"] = p.message;
      procs.push_back(std::move(j));
    }
    auto p = PkiCopy();
    json body{{"ip", ident.ip}, {"hostname", ident.hostname}, {"version", opt.version},
              {"processes", procs}};
    if (Contains(m.roles, "load_balancer")) body["load_balancer"] = LbState();
    auto r = HttpsCall(ClientTls{p.ca, p.cert, p.key, ""}, m.core_ip, kPrimaryPort, "POST",
                       "/v1/heartbeat", body.dump(), Millis(2000));
    if (!r) {
      if (core_reachable.exchange(false))
        LogWarn("core unreachable ({}); keeping this node's processes running", r.error());
      return;
    }
    if (!core_reachable.exchange(true)) LogInfo("core reachable again at {}", m.core_ip);
    if (r->status == 410) {
      DetachLocally("the core removed this node");
      return;
    }
    auto j = DecodeReply(r, "the core");
    if (!j) {
      LogWarn("heartbeat refused: {}", j.error());
      return;
    }
    // The members are fetched again only when the set changed (a revision
    // change wakes this heartbeat: removals apply at once).
    int64_t members_rev = j->value("members_revision", static_cast<int64_t>(-1));
    if (members_rev < 0 || members_rev != members_fetched.load()) {
      auto list = CallPrimary("GET", "/v1/members", json::object());
      if (list && members.Update(*list)) {
        members_fetched = members_rev;
      } else {
        LogWarn("cannot read the cluster's members: {}", list ? "bad reply" : list.error());
      }
    }
    ApplyNodeReply(*j);
  }

  void HeartbeatLoop() {
    while (!stopping) {
      Heartbeat();
      std::unique_lock l(wake_mu);
      wake_cv.wait_for(l, kHeartbeatInterval, [&] { return wake || stopping; });
      wake = false;
    }
  }

  // Long-polls this node's scope of the cluster; a change triggers an
  // immediate heartbeat, which brings this node's new role assignment.
  void WatchLoop() {
    while (!stopping) {
      auto m = Member();
      if (!m.attached) {
        std::unique_lock l(wake_mu);
        wake_cv.wait_for(l, Millis(500), [&] { return stopping.load(); });
        continue;
      }
      // Only what concerns this node wakes it (its record, the endpoint, a removal).
      auto r = CallPrimary("GET",
                           "/v1/watch?after=" + std::to_string(seen_revision.load()) +
                               "&timeout_ms=15000&node=" + Identity().id,
                           json::object(), Millis(20000));
      if (stopping) break;
      if (r && r->contains("revision") && (*r)["revision"].is_number()) {
        int64_t rev = (*r)["revision"].get<int64_t>();
        if (rev != seen_revision.exchange(rev)) Wake();
        continue;
      }
      std::unique_lock l(wake_mu);
      wake_cv.wait_for(l, Millis(1000), [&] { return stopping.load(); });
    }
  }

  // Waits until every named process has left STARTING/BACKOFF (bounded), with
  // progress; fails naming a process that did not start and its log.
  Status WaitRunning(const std::vector<std::string>& names, Millis limit, const Progress& progress) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    std::set<std::string> reported;
    for (;;) {
      bool all = true;
      for (const auto& p : Processes()) {
        if (!names.empty() && !Contains(names, p.name)) continue;
        if (p.state == ProcState::kRunning) {
          if (reported.insert(p.name).second) progress(p.name + " RUNNING");
          continue;
        }
        if (p.state == ProcState::kFatal)
          return Err("process " + p.name + " did not start (" + p.message + "); see its log at " +
                     p.log_path);
        if (p.state == ProcState::kStopped && !Contains(names, p.name)) continue;
        all = false;
      }
      if (all) return Ok();
      if (std::chrono::steady_clock::now() > deadline) {
        std::string waiting;
        for (const auto& p : Processes())
          if (p.state != ProcState::kRunning &&
              (names.empty() || Contains(names, p.name)) && p.state != ProcState::kStopped)
            waiting += " " + p.name + " (" + ToString(p.state) + ", log " + p.log_path + ")";
        return Err("processes still not RUNNING after " + std::to_string(limit.count() / 1000) +
                   " s:" + waiting);
      }
      std::this_thread::sleep_for(Millis(10));  // polling a condition, bounded by the deadline
    }
  }

  std::vector<std::string> ProcessNamesOf(const std::vector<std::string>& roles) {
    auto ident = Identity();
    std::set<std::string> rs(roles.begin(), roles.end());
    std::vector<std::string> names;
    for (const auto& s :
         ProcessesForRoles(rs, NodeContext{opt.data_dir, ident.ip, ident.id, opt.katod_path},
                           roles_env))
      names.push_back(s.name);
    return names;
  }

  // ---- commands -----------------------------------------------------------

  Result<json> Info() {
    auto ident = Identity();
    auto m = Member();
    json available = json::array(), unavailable = json::object();
    for (const auto& r : AllRoles()) {
      auto a = RoleAvailability(r, roles_env);
      if (a.available)
        available.push_back(r);
      else
        unavailable[r] = a.reason;
    }
    return json{{"id", ident.id},
                {"hostname", ident.hostname},
                {"ip", ident.ip},
                {"version", opt.version},
                {"attached", m.attached},
                {"core_ip", m.attached ? m.core_ip : ""},
                {"endpoint", m.attached ? m.endpoint : ""},
                {"cluster_version", m.cluster_version},
                {"data_dir", opt.data_dir},
                {"store", StoreInfo(m)},
                {"roles",
                 {{"assigned", m.attached ? m.roles : std::vector<std::string>{}},
                  {"available", available},
                  {"unavailable", unavailable}}}};
  }

  // Where the core keeps the cluster state (null on other nodes), password masked.
  json StoreInfo(const Membership& m) {
    if (!m.attached || !Contains(m.roles, "primary")) return nullptr;
    auto spec = StoreSpecOf(opt.data_dir);
    if (!spec) return json{{"kind", "unknown"}, {"location", ""}, {"error", spec.error()}};
    return json{{"kind", StoreKind(*spec)}, {"location", MaskStoreSpec(*spec)}};
  }

  // `kato op migrate_store URL`: moves the cluster state from the core's
  // current store (SQLite state.db) into an empty PostgreSQL database. The
  // primary is stopped for the copy, so no write can happen meanwhile; any
  // failure before the switch leaves the cluster on its old store, untouched.
  Result<json> MigrateStore(const json& args, const Caller& caller, const Progress& progress) {
    if (!IsCore())
      return Err("`kato op migrate_store` runs on the core node (this node is not the core)");
    std::string url = Str(args, "url");
    KATO_TRY(CheckPostgresUrl(url));
    const std::string target_name = MaskStoreSpec(url);
    auto current = StoreSpecOf(opt.data_dir);
    if (!current) return Err(current.error());
    const std::string source_name = MaskStoreSpec(*current);
    if (*current == url) return Err("the cluster state is already in " + target_name);
    progress("checking " + target_name);
    auto target = OpenStore(url);
    if (!target) return Err(target.error() + "; nothing changed");
    auto empty = IsEmptyStore(**target);
    if (!empty) return Err(empty.error() + "; nothing changed");
    if (!*empty)
      return Err("the database at " + target_name +
                 " already holds a cluster's state; give an empty database; nothing changed");

    auto set_primary = [&](bool run) {
      {
        std::lock_guard l(sup_mu);
        if (run)
          sup->start("primary");
        else
          sup->stop("primary");
        sup->tick();
      }
      WakeMainLoop();
    };
    auto restart_primary = [&]() -> Status {
      set_primary(true);
      return WaitRunning({"primary"}, Millis(60000), progress);
    };
    // The copy failed before the switch: the old store is untouched and in use again.
    auto abandon = [&](const std::string& why) -> Error {
      Status back = restart_primary();
      return Err(
          why + "; the cluster stays on " + source_name + ", unchanged" +
          (back ? std::string() : " (but the primary did not start again: " + back.error() + ")"));
    };

    progress("stopping the primary (nothing can change while the state is copied)");
    set_primary(false);
    auto deadline = std::chrono::steady_clock::now() + Millis(30000);
    for (;;) {
      bool stopped = true;
      for (const auto& p : Processes())
        if (p.name == "primary" && p.state != ProcState::kStopped) stopped = false;
      if (stopped) break;
      if (std::chrono::steady_clock::now() > deadline)
        return abandon("the primary did not stop within 30 s");
      std::this_thread::sleep_for(Millis(50));  // polling a condition, bounded by the deadline
    }

    int64_t revision = 0;
    {
      auto source = OpenStore(*current);
      if (!source) return abandon(source.error());
      progress("copying the cluster state from " + source_name + " to " + target_name);
      if (Status st = CopyStore(**source, **target); !st)
        return abandon("copying the cluster state failed: " + st.error());
      auto rev = (*source)->Revision();
      if (!rev) return abandon(rev.error());
      revision = *rev;
    }
    target->reset();

    progress("switching the core to " + target_name);
    if (Status st = WriteFileAtomic(layout.store_spec(), url + "\n", 0600); !st)
      return abandon(st.error());
    // The old SQLite file stays as a backup under a name the primary never opens.
    std::string backup;
    if (!IsPostgresUrl(*current)) {
      backup = *current + ".before-postgresql-" + std::to_string(RealClock::instance().wall_ms());
      for (const char* suffix : {"", "-wal", "-shm"}) {
        std::string from = *current + suffix;
        if (::access(from.c_str(), F_OK) == 0 &&
            ::rename(from.c_str(), (backup + suffix).c_str()) != 0)
          LogWarn("cannot rename {} to {}: {}", from, backup + suffix, std::strerror(errno));
      }
    }
    progress("starting the primary on " + target_name);
    if (Status st = restart_primary(); !st) {
      // Back to the old store, which nothing has changed since.
      set_primary(false);
      ::unlink(layout.store_spec().c_str());
      if (!IsPostgresUrl(*current)) {
        for (const char* suffix : {"", "-wal", "-shm"})
          if (::access((backup + suffix).c_str(), F_OK) == 0)
            (void)::rename((backup + suffix).c_str(), (*current + suffix).c_str());
      } else {
        (void)WriteFileAtomic(layout.store_spec(), *current + "\n", 0600);
      }
      return abandon("the primary did not start on " + target_name + ": " + st.error());
    }
    Heartbeat();  // the new primary learns at once that this node is up
    if (auto r = CallPrimary("POST", "/v1/history", json::object(), kCallTimeout, &caller); !r)
      LogWarn("history not recorded: {}", r.error());
    json out{
        {"from", source_name}, {"to", target_name}, {"kind", "postgresql"}, {"revision", revision}};
    if (!backup.empty()) out["backup"] = backup;
    return out;
  }

  // Every node's state as its heartbeats report it (the primary keeps the
  // last one in memory): one call to the primary however many nodes there
  // are, a dead node shown down with no processes. This node's own part is
  // read live.
  Result<json> StatusAll() {
    auto cluster = CallPrimary("GET", "/v1/cluster", json::object());
    if (!cluster) return Err(cluster.error());
    const std::string self = Identity().id;
    const int64_t now_ms = RealClock::instance().wall_ms();
    json out{{"core_ip", (*cluster)["core_ip"]},
             {"endpoint", (*cluster)["endpoint"]},
             {"nodes", json::array()}};
    for (const auto& n : (*cluster)["nodes"]) {
      json node{{"id", n["id"]},     {"ip", n["ip"]},           {"hostname", n["hostname"]},
                {"roles", n["roles"]}, {"version", n["version"]}, {"state", n.value("state", "down")},
                {"processes", json::array()}};
      if (n["id"] == self) {
        json local = LocalStatus();
        node["state"] = "up";
        node["processes"] = local["processes"];
        if (local.contains("load_balancer")) node["load_balancer"] = local["load_balancer"];
      } else if (node["state"] == "up") {
        node["processes"] = n.value("processes", json::array());
        if (n.contains("load_balancer")) node["load_balancer"] = n["load_balancer"];
      } else {
        int64_t seen = n.value("last_seen_ms", static_cast<int64_t>(0));
        node["error"] = seen > 0 ? "no heartbeat for " + std::to_string((now_ms - seen) / 1000) + " s"
                                 : std::string("no heartbeat since the core started");
      }
      out["nodes"].push_back(std::move(node));
    }
    return out;
  }

  Result<json> SetupCore(const json& args, const Caller& caller, const Progress& progress) {
    std::string api_host = Str(args, "api_host");
    if (!IsHostname(api_host))
      return Err("'" + api_host + "' is not a valid API host name (e.g. api.example.com)");
    std::string store_url = Str(args, "store");
    if (!store_url.empty()) KATO_TRY(CheckPostgresUrl(store_url));
    auto m = Member();
    auto ident = Identity();
    if (m.attached && !Contains(m.roles, "primary"))
      return Err("this node is attached to the cluster at " + m.core_ip +
                 "; run `kato node detach` before making it a core");
    if (m.attached && !store_url.empty())
      return Err(
          "this node is already the core; its cluster state stays where it is (move it "
          "with `kato op migrate_store URL`); nothing changed");
    if (!m.attached) {
      // The PostgreSQL store is checked before anything changes: reachable,
      // credentials accepted, and holding no cluster's state yet.
      std::unique_ptr<Store> pg;
      if (!store_url.empty()) {
        progress("checking the state store " + MaskStoreSpec(store_url));
        auto opened = OpenStore(store_url);
        if (!opened) return Err(opened.error() + "; nothing changed");
        auto empty = IsEmptyStore(**opened);
        if (!empty) return Err(empty.error() + "; nothing changed");
        if (!*empty) {
          auto rev = (*opened)->Revision();
          return Err("the database at " + MaskStoreSpec(store_url) +
                     " already holds a cluster's state (revision " +
                     (rev ? std::to_string(*rev) : std::string("?")) +
                     "); give an empty database; nothing changed");
        }
        pg = std::move(*opened);
      }
      progress("creating the cluster CA and this node's certificate");
      KATO_TRY(MakeDirs(layout.pki_dir(), 0700));
      auto ca = CreateCa(ident.hostname);
      if (!ca) return Err(ca.error());
      auto kc = CreateKeyAndCsr(ident.id);
      if (!kc) return Err(kc.error());
      auto cert = SignCsr(*ca, kc->csr_pem, ident.id, 3650);
      if (!cert) return Err(cert.error());
      KATO_TRY(WriteFileAtomic(layout.ca_key(), ca->key_pem, 0600));
      KATO_TRY(WriteFileAtomic(layout.ca_cert(), ca->cert_pem, 0644));
      KATO_TRY(WriteFileAtomic(layout.node_key(), kc->key_pem, 0600));
      KATO_TRY(WriteFileAtomic(layout.node_cert(), *cert, 0644));
      Result<std::unique_ptr<Store>> store = std::move(pg);
      if (store_url.empty()) {
        progress("creating the cluster state store " + layout.state_db());
        ::unlink(layout.store_spec().c_str());
        ::unlink(layout.state_db().c_str());
        store = OpenSqliteStore(layout.state_db());
        if (!store) return Err(store.error());
      } else {
        progress("keeping the cluster state in " + MaskStoreSpec(store_url));
        KATO_TRY(WriteFileAtomic(layout.store_spec(), store_url + "\n", 0600));
      }
      Store& st = **store;
      auto fp = CertFingerprint(ca->cert_pem);
      if (!fp) return Err(fp.error());
      JoinToken token{*fp, RandomHex(32)};
      NodeRecord rec{ident.id, ident.ip, ident.hostname, opt.version,
                     CoreRoles(), RealClock::instance().wall_ms()};
      HistoryEntry h{0, RealClock::instance().wall_ms(), ident.ip, caller.user, caller.command};
      for (auto s : {st.SetSetting("core_ip", ident.ip), st.SetSetting("version", opt.version),
                     st.SetSetting("endpoint", api_host),
                     st.SetSetting("ca_fingerprint", *fp), st.PutNode(rec),
                     st.AddToken({Sha256Hex(token.secret), RealClock::instance().wall_ms(),
                                  RealClock::instance().wall_ms() + kJoinTokenTtl.count(), false}),
                     st.AppendHistory(h)})
        if (!s) return Err(s.error());
      KATO_TRY(WriteFileAtomic(layout.token_file(), token.str() + "\n", 0600));
      // The REST API's admin credential: only its hash is in the cluster state.
      std::string admin = RandomHex(32);
      KATO_TRY(WriteFileAtomic(layout.pki_dir() + "/admin-token", admin + "\n", 0600));
      if (auto s = st.SetSetting("admin_token_hash", Sha256Hex(admin)); !s) return Err(s.error());
      LoadPki();
      KATO_TRY(StartNodeServer());
      Membership core;
      core.attached = true;
      core.core_ip = ident.ip;
      core.endpoint = api_host;
      core.cluster_version = opt.version;
      core.roles = CoreRoles();
      KATO_TRY(SetMembership(core));
      progress("starting the primary");
      KATO_TRY(WaitRunning(ProcessNamesOf(core.roles), Millis(30000), progress));
    }
    if (m.attached) KATO_TRY(SetEndpoint(api_host, caller));  // a new core records it at creation
    Heartbeat();
    auto token = CallPrimary("POST", "/v1/token", json::object());
    if (!token) return Err(token.error());
    std::string t = (*token)["token"].get<std::string>();
    return json{{"core_ip", ident.ip},
                {"endpoint", api_host},
                {"token", t},
                {"token_expires_ms", token->value("expires_ms", static_cast<int64_t>(0))},
                {"attach_command", "kato node attach --token " + t + " " + ident.ip}};
  }

  // The guide's core: primary, controller, router (and base), each where available.
  std::vector<std::string> CoreRoles() {
    std::vector<std::string> roles;
    for (const auto& r : AllRoles())
      if (r == "primary" || r == "base" ||
          ((r == "controller" || r == "router") && RoleAvailability(r, roles_env).available))
        roles.push_back(r);
    return roles;
  }

  Status SetEndpoint(const std::string& endpoint, const Caller& caller) {
    auto r = CallPrimary("POST", "/v1/settings", json{{"endpoint", endpoint}}, kCallTimeout,
                         &caller);
    if (!r) return Err(r.error());
    Membership m = Member();
    m.endpoint = endpoint;
    return SetMembership(m);
  }

  // ---- the load balancer ---------------------------------------------------

  Result<json> SetupLoadBalancer(const json& args, const Caller& caller,
                                 const Progress& progress) {
    auto m = Member();
    if (!m.attached)
      return Err("this node is not in a cluster: attach it first with `kato node attach -e "
                 "router CORE_IP`, then run this again; nothing changed");
    auto avail = RoleAvailability("load_balancer", roles_env);
    if (!avail.available) return Err(avail.reason + "; nothing changed");
    auto cluster = CallPrimary("GET", "/v1/cluster", json::object());
    if (!cluster) return Err(cluster.error());
    std::vector<ClusterNodeView> nodes;
    for (const auto& n : (*cluster)["nodes"]) nodes.push_back({Str(n, "ip"), Strings(n, "roles")});
    auto routers = Strings(args, "routers");
    for (const auto& ip : routers) KATO_TRY(CheckIPv4(ip, "ROUTER_IP"));
    bool force = args.value("force", false);
    auto ident = Identity();
    auto plan = PlanLoadBalancer(ident.ip, m.roles, nodes, routers, force);
    if (!plan) return Err(plan.error());
    json out{{"ip", ident.ip},
             {"pool", plan->pool},
             {"follow_cluster", plan->follow_cluster},
             {"remove_roles", plan->remove_roles}};
    if (args.value("dry_run", false)) return out;
    // The pool restriction first: `katod lb` reads it when it starts.
    json key{{"component", "load_balancer"}, {"key", LbRoutersConfigKey(ident.id)}};
    if (plan->follow_cluster) {
      auto d = CallPrimary("POST", "/v1/config/del", key, kCallTimeout, &caller);
      if (!d && d.error().find("no config value") == std::string::npos) return Err(d.error());
    } else {
      json set = key;
      set["value"] = plan->pool;
      auto r = CallPrimary("POST", "/v1/config/set", set, kCallTimeout, &caller);
      if (!r) return Err(r.error());
    }
    if (!Contains(m.roles, "load_balancer") || !plan->remove_roles.empty()) {
      json body{{"node", ident.id}, {"remove", plan->remove_roles}, {"add", {"load_balancer"}}};
      KATO_TRY(ChangeRoles(body, caller));
    }
    progress("starting nginx over " + (plan->pool.empty() ? std::string("no router yet")
                                                           : json(plan->pool).dump()));
    KATO_TRY(WaitRunning({"load_balancer"}, Millis(120000), progress));
    // Port 80 answering proves little while this node's router still drains:
    // wait for nginx itself (bounded).
    auto deadline = std::chrono::steady_clock::now() + Millis(90000);
    for (;;) {
      json st = LbState();
      if (st.value("nginx_pid", 0) > 0) break;
      if (std::chrono::steady_clock::now() > deadline)
        return Err("the load_balancer process runs but nginx has not started after 90 s; see " +
                   layout.log_dir() + "/load_balancer.log");
      std::this_thread::sleep_for(Millis(50));  // polling a condition, bounded
    }
    progress("nginx RUNNING");
    out["roles"] = Member().roles;
    out["load_balancer"] = LbState();
    return out;
  }

  // The node's HTTPS server for web clients: nginx on a load balancer, else the router.
  Result<CustomCerts> WebCerts() {
    auto m = Member();
    CertPlace place;
    if (m.attached && Contains(m.roles, "load_balancer")) {
      place = LoadBalancerCertPlace(opt.data_dir);
    } else if (m.attached && Contains(m.roles, "router")) {
      place = RouterCertPlace(opt.data_dir);
    } else {
      return Err("this node serves no HTTPS: custom certificates go on a load balancer (`kato "
                 "node setup load_balancer`) or a router node; nothing changed");
    }
    std::string process = place.process;
    return CustomCerts(std::move(place), [this, process] {
      for (const auto& p : Processes())
        if (p.name == process && p.state == ProcState::kRunning) return true;
      return false;
    }, RealClock::instance());
  }

  Result<json> CertCommand(const std::string& cmd, const json& args, const Caller& caller) {
    auto certs = WebCerts();
    if (!certs) return Err(certs.error());
    Result<json> r = cmd == "install"
                         ? certs->Install(Str(args, "key_pem"), Str(args, "cert_pem"),
                                          args.value("wildcard", false), Member().endpoint)
                     : cmd == "remove" ? certs->Remove()
                                       : certs->List();
    if (r && cmd != "list") {
      if (auto h = CallPrimary("POST", "/v1/history", json::object(), kCallTimeout, &caller); !h)
        LogWarn("history not recorded: {}", h.error());
    }
    return r;
  }

  Result<json> Token(const json& args, const Caller& caller) {
    if (!IsCore())
      return Err("`kato node token` runs on the core node (this node is not the core)");
    if (args.value("api", false)) {
      auto t = ReadFile(layout.pki_dir() + "/admin-token");
      if (!t) return Err("this core has no API admin credential (it was set up by an older kato)");
      return json{{"token", t->substr(0, t->find('\n'))}};
    }
    json body{{"rotate", args.value("rotate", false)}};
    if (args.contains("ttl_s")) body["ttl_s"] = args["ttl_s"];
    return CallPrimary("POST", "/v1/token", body, kCallTimeout, &caller);
  }

  Result<json> Attach(const json& args, const Caller& caller, const Progress& progress) {
    std::string core_ip = Str(args, "core_ip");
    KATO_TRY(CheckIPv4(core_ip, "CORE_IP"));
    auto token = ParseJoinToken(Str(args, "token"));
    if (!token) return Err(token.error());
    auto m = Member();
    auto ident = Identity();
    if (m.attached)
      return Err("this node is already attached to the cluster at " + m.core_ip +
                 "; run `kato node detach` first");
    if (core_ip == ident.ip)
      return Err("CORE_IP " + core_ip + " is this node's own address; give the core's address");
    auto requested = SplitRoleList(Strings(args, "roles"));
    Result<Expansion> exp = requested.empty() ? Expansion{} : ExpandRoles(requested, roles_env);
    if (!exp) return Err(exp.error());
    for (const auto& s : exp->skipped) progress("skipping " + s);
    std::set<std::string> want(exp->roles.begin(), exp->roles.end());
    want.insert("base");
    KATO_TRY(CheckNodeRoles(want, false));
    auto kc = CreateKeyAndCsr(ident.id);
    if (!kc) return Err(kc.error());
    progress("contacting the core at " + core_ip + " (pinning its CA " +
             token->ca_hash.substr(0, 16) + "...)");
    json body{{"secret", token->secret},   {"node_id", ident.id},
              {"ip", ident.ip},            {"hostname", ident.hostname},
              {"version", opt.version},    {"roles", exp->roles},
              {"force", args.value("force", false)}, {"csr", kc->csr_pem},
              {"audit", {{"node", ident.ip}, {"user", caller.user}, {"command", caller.command}}}};
    ClientTls tls;
    tls.pin_ca_sha256 = token->ca_hash;
    auto r = HttpsCall(tls, core_ip, kPrimaryPort, "POST", "/v1/join", body.dump(), Millis(10000));
    if (!r) return Err("cannot attach to " + core_ip + ": " + r.error());
    auto j = DecodeReply(r, "the core");
    if (!j) return Err("the core refused to attach this node: " + j.error());
    (void)members.Update(*j);
    KATO_TRY(MakeDirs(layout.pki_dir(), 0700));
    KATO_TRY(WriteFileAtomic(layout.ca_cert(), r->peer_ca_pem, 0644));
    KATO_TRY(WriteFileAtomic(layout.node_key(), kc->key_pem, 0600));
    KATO_TRY(WriteFileAtomic(layout.node_cert(), Str(*j, "cert"), 0644));
    LoadPki();
    KATO_TRY(StartNodeServer());
    Membership nm;
    nm.attached = true;
    nm.core_ip = core_ip;
    nm.endpoint = Str(*j, "endpoint");
    nm.cluster_version = Str(*j, "version");
    nm.roles = Strings((*j)["node"], "roles");
    nm.revision = j->value("revision", static_cast<int64_t>(0));
    KATO_TRY(SetMembership(nm));
    progress("attached as node " + ident.id + " with roles: " + json(nm.roles).dump());
    Wake();
    KATO_TRY(WaitRunning(ProcessNamesOf(nm.roles), Millis(180000), progress));
    return Info();
  }

  Result<json> Detach(const Caller& caller) {
    auto m = Member();
    if (!m.attached) return Err("this node is not in a cluster; nothing to detach");
    if (Contains(m.roles, "primary"))
      return Err("this node is the core: the cluster lives here and it cannot detach");
    auto ident = Identity();
    auto r = CallPrimary("POST", "/v1/nodes/remove", json{{"node", ident.id}}, kCallTimeout,
                         &caller);
    std::string note = r ? "" : "the core could not be told (" + r.error() +
                                    "); run `kato node remove " + ident.ip + "` on the core";
    DetachLocally("kato node detach");
    KATO_TRY(WaitStopped(Millis(30000)));
    return json{{"detached", true}, {"warning", note}};
  }

  Status WaitStopped(Millis limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Processes().empty()) return Ok();
      std::this_thread::sleep_for(Millis(100));  // polling a condition, bounded
    }
    return Err("processes still stopping after " + std::to_string(limit.count() / 1000) + " s");
  }

  Result<json> Remove(const json& args, const Caller& caller) {
    std::string ip = Str(args, "ip");
    KATO_TRY(CheckIPv4(ip, "NODE_IP"));
    if (ip == Identity().ip) return Err("this is the node you are on; use `kato node detach`");
    auto r = CallPrimary("POST", "/v1/nodes/remove", json{{"node", ip}}, kCallTimeout, &caller);
    if (!r) return Err(r.error());
    // Best effort: tell the node now. If it is down, its next heartbeat learns it was removed.
    auto told = CallAgent(ip, "POST", "/v1/detach", json::object(), Millis(2000));
    json out = *r;
    out["node_told"] = told.ok();
    if (!told) out["warning"] = "the node was not reachable; it will leave when it comes back";
    return out;
  }

  Result<json> NodeList() {
    auto c = CallPrimary("GET", "/v1/cluster", json::object());
    if (!c) return Err(c.error());
    json out = json::array();
    for (const auto& n : (*c)["nodes"])
      out.push_back({{"id", n["id"]},
                     {"ip", n["ip"]},
                     {"hostname", n["hostname"]},
                     {"state", n["state"]},
                     {"version", n["version"]},
                     {"roles", n["roles"]}});
    return out;
  }

  Result<json> Rename(const json& args, const Caller& caller) {
    std::string hostname = Str(args, "hostname");
    if (!IsHostname(hostname))
      return Err("'" + hostname + "' is not a valid host name (letters, digits, '-' and dots)");
    NodeIdentity ident = Identity();
    if (args.value("system", false)) {
      KATO_TRY(WriteFileAtomic("/etc/hostname", hostname + "\n", 0644));
      if (sethostname(hostname.c_str(), hostname.size()) != 0)
        return Err("wrote /etc/hostname but could not set the running host name: " +
                   std::string(strerror(errno)));
    }
    ident.hostname = hostname;
    auto m = Member();
    if (m.attached) {
      auto r = CallPrimary("POST", "/v1/nodes/update", json{{"node", ident.id}, {"hostname", hostname}},
                           kCallTimeout, &caller);
      if (!r) return Err(r.error());
    }
    KATO_TRY(SaveIdentity(layout, ident));
    {
      std::lock_guard l(mu);
      id.hostname = hostname;
    }
    Heartbeat();  // brings the endpoint the core derives from a new core hostname
    return Info();
  }

  Result<json> Migrate(const json& args, const Caller& caller, const Progress& progress) {
    std::string old_ip = Str(args, "old_ip"), new_ip = Str(args, "new_ip");
    KATO_TRY(CheckIPv4(old_ip, "OLD_IP"));
    KATO_TRY(CheckIPv4(new_ip, "NEW_IP"));
    if (old_ip == new_ip) return Err("OLD_IP and NEW_IP are the same");
    auto m = Member();
    auto ident = Identity();
    if (!m.attached) return Err("this node is not in a cluster; nothing to migrate");
    bool core = Contains(m.roles, "primary");
    if (old_ip == ident.ip) {
      // This node moved.
      progress("this node moves from " + old_ip + " to " + new_ip);
      auto r = CallPrimary("POST", "/v1/nodes/update", json{{"node", ident.id}, {"ip", new_ip}},
                           kCallTimeout, &caller);
      if (!r) return Err(r.error());
      {
        std::lock_guard l(mu);
        id.ip = new_ip;
        if (core) member.core_ip = new_ip;
      }
      KATO_TRY(SaveIdentity(layout, Identity()));
      KATO_TRY(SaveMembership(layout, Member()));
      KATO_TRY(StartNodeServer());
      Reconcile();  // role processes bind the new address: their specs changed, they restart
      KATO_TRY(WaitRunning(ProcessNamesOf(m.roles), Millis(120000), progress));
      Wake();
      return Info();
    }
    if (old_ip == m.core_ip) {
      progress("the core moved from " + old_ip + " to " + new_ip);
      Membership n = m;
      n.core_ip = new_ip;
      KATO_TRY(SetMembership(n));
      auto c = CallPrimary("GET", "/v1/cluster", json::object());
      if (!c)
        return Err("core_ip is now " + new_ip + ", but the core does not answer there yet: " +
                   c.error());
      Wake();
      return Info();
    }
    return Err("OLD_IP " + old_ip + " is neither this node's address (" + ident.ip +
               ") nor the core's (" + m.core_ip + ")");
  }

  Result<json> RoleChange(bool add, const json& args, const Caller& caller,
                          const Progress& progress) {
    auto m = Member();
    if (!m.attached)
      return Err("this node is not in a cluster: set it up with `kato node setup core API_HOST` "
                 "or `kato node attach CORE_IP` first");
    std::vector<std::string> roles;
    if (add) {
      Result<Expansion> exp = args.value("all", false) || args.contains("all_but")
                                  ? AllRolesBut(SplitRoleList(Strings(args, "all_but")), roles_env)
                                  : ExpandRoles(SplitRoleList(Strings(args, "roles")), roles_env);
      if (!exp) return Err(exp.error());
      for (const auto& s : exp->skipped) progress("skipping " + s);
      roles = exp->roles;
    } else {
      for (const auto& r : SplitRoleList(Strings(args, "roles"))) {
        if (IsRoleGroup(r)) {
          for (const auto& g : GroupMembers(r)) roles.push_back(g);
        } else if (!IsRole(r)) {
          auto e = ExpandRoles({r}, roles_env);  // for its message
          return Err(e ? "unknown role '" + r + "'" : e.error());
        } else {
          roles.push_back(r);
        }
      }
    }
    if (roles.empty()) return Err("no roles given; name at least one (see `kato info`)");
    auto ident = Identity();
    json body{{"node", ident.id}, {add ? "add" : "remove", roles}};
    auto changed = ChangeRoles(body, caller);
    if (!changed) return Err(changed.error());
    const Membership& n = *changed;
    if (add) KATO_TRY(WaitRunning(ProcessNamesOf(roles), Millis(180000), progress));
    if (!add) {
      auto names = ProcessNamesOf(roles);
      auto deadline = std::chrono::steady_clock::now() + Millis(30000);
      for (;;) {
        bool gone = true;
        for (const auto& p : Processes())
          if (Contains(names, p.name) && !Contains(ProcessNamesOf(n.roles), p.name)) gone = false;
        if (gone || std::chrono::steady_clock::now() > deadline) break;
        std::this_thread::sleep_for(Millis(100));  // polling a condition, bounded
      }
    }
    return json{{"roles", n.roles}};
  }

  Result<json> RoleInfo(const json& args) {
    auto m = Member();
    auto names = SplitRoleList(Strings(args, "roles"));
    if (names.empty()) names = AllRoles();
    json out = json::array();
    for (const auto& r : names) {
      if (!IsRole(r)) return Err("unknown role '" + r + "'; see `kato info` for the roles");
      auto a = RoleAvailability(r, roles_env);
      out.push_back({{"role", r},
                     {"assigned", m.attached && Contains(m.roles, r)},
                     {"available", a.available},
                     {"reason", a.reason},
                     {"processes", RoleProcessNames(r)}});
    }
    return out;
  }

  // start/stop/restart of the processes of some roles (all assigned when none).
  Result<json> Control(const std::string& verb, const std::vector<std::string>& names,
                       bool by_role, const Caller& caller, const Progress& progress) {
    auto m = Member();
    std::vector<std::string> procs;
    if (by_role) {
      auto roles = SplitRoleList(names);
      for (const auto& r : roles) {
        if (!IsRole(r)) return Err("unknown role '" + r + "'; see `kato info` for the roles");
        if (!m.attached || !Contains(m.roles, r))
          return Err("role " + r + " is not assigned to this node (see `kato info`)");
      }
      procs = ProcessNamesOf(roles.empty() ? m.roles : roles);
    } else {
      std::set<std::string> known;
      for (const auto& p : Processes()) known.insert(p.name);
      for (const auto& n : names)
        if (!known.count(n))
          return Err("no process '" + n + "' on this node (see `kato process list`)");
      procs = names;
      if (procs.empty()) procs.assign(known.begin(), known.end());
    }
    {
      std::lock_guard l(sup_mu);
      for (const auto& p : procs) {
        if (verb == "start") sup->start(p);
        if (verb == "stop") sup->stop(p);
        if (verb == "restart") sup->restart(p);
      }
      sup->tick();
    }
    WakeMainLoop();
    if (auto r = CallPrimary("POST", "/v1/history", json::object(), kCallTimeout, &caller); !r)
      LogWarn("history not recorded: {}", r.error());
    if (verb == "stop") {
      auto deadline = std::chrono::steady_clock::now() + Millis(30000);
      for (;;) {
        bool done = true;
        for (const auto& p : Processes())
          if (Contains(procs, p.name) && p.state != ProcState::kStopped) done = false;
        if (done || std::chrono::steady_clock::now() > deadline) break;
        std::this_thread::sleep_for(Millis(100));  // polling a condition, bounded
      }
    } else {
      KATO_TRY(WaitRunning(procs, Millis(120000), progress));
    }
    json out = json::array();
    for (const auto& p : Processes())
      if (Contains(procs, p.name)) out.push_back(ProcessJson(p));
    return out;
  }

  Result<json> ConfigCmd(const std::string& op, const json& args, const Caller& caller) {
    std::string component = Str(args, "component"), key = Str(args, "key");
    if (component.empty() || key.empty()) return Err("config needs COMPONENT and KEY");
    json body{{"component", component}, {"key", key}};
    if (op == "set") {
      std::string raw = Str(args, "value");
      json value = json::parse(raw, nullptr, false);
      if (value.is_discarded()) value = raw;  // a bare word is a string
      auto existing = CallPrimary("POST", "/v1/config/get", body);
      if (existing && existing->contains("value")) {
        const json& old = (*existing)["value"];
        auto type_name = [](const json& v) -> std::string {
          if (v.is_boolean()) return "a boolean (true or false)";
          if (v.is_number()) return "a number";
          if (v.is_string()) return "a string";
          if (v.is_array()) return "a list";
          if (v.is_object()) return "an object";
          return "null";
        };
        bool same = (old.is_number() && value.is_number()) || old.type() == value.type() ||
                    old.is_null();
        if (!same)
          return Err("config " + component + " " + key + " is " + type_name(old) + "; '" + raw +
                     "' is " + type_name(value) + " (nothing changed)");
      }
      body["value"] = value;
    }
    return CallPrimary("POST", "/v1/config/" + op, body, kCallTimeout,
                       op == "get" ? nullptr : &caller);
  }

  // `kato app ...`: one request to a controller's API, authenticated by this
  // node's certificate. The CLI sends and receives bodies as JSON text, or
  // base64 for app archives.
  Result<json> AppCall(const json& args) {
    std::string method = Str(args, "method"), path = Str(args, "path");
    if (path.rfind("/v2/", 0) != 0) return Err("app calls go to /v2/ paths");
    std::string body = Str(args, "body");
    if (args.contains("body_base64")) {
      auto raw = Base64Decode(Str(args, "body_base64"));
      if (!raw) return Err(raw.error());
      body = *raw;
    }
    auto cluster = CallPrimary("GET", "/v1/cluster", json::object());
    if (!cluster) return Err(cluster.error());
    std::vector<std::string> controllers;
    for (const auto& n : (*cluster)["nodes"])
      if (n["state"] == "up" && Contains(Strings(n, "roles"), "controller"))
        controllers.push_back(n["ip"].get<std::string>());
    if (controllers.empty())
      return Err("no controller is up in this cluster (add the role with `kato role add controller`)");
    auto p = PkiCopy();
    std::string last;
    for (const auto& ip : controllers) {
      auto r = HttpsCall(ClientTls{p.ca, p.cert, p.key, ""}, ip, kControllerInternalPort, method,
                         path, body, Millis(60000));
      if (!r) {
        last = r.error();
        continue;
      }
      json reply = json::parse(r->body, nullptr, false);
      return json{{"status", r->status}, {"body", reply.is_discarded() ? json(r->body) : reply}};
    }
    return Err("no controller answered: " + last);
  }

  Result<json> Dispatch(const std::string& cmd, const json& args, const Caller& caller,
                        const Progress& progress) {
    if (cmd == "info") return Info();
    if (cmd == "status") return args.value("all", false) ? StatusAll() : LocalStatus();
    if (cmd == "version") return json{{"version", opt.version}};
    if (cmd == "node.setup_core") return SetupCore(args, caller, progress);
    if (cmd == "node.token") return Token(args, caller);
    if (cmd == "node.attach") return Attach(args, caller, progress);
    if (cmd == "node.detach") return Detach(caller);
    if (cmd == "node.remove") return Remove(args, caller);
    if (cmd == "node.list") return NodeList();
    if (cmd == "node.rename") return Rename(args, caller);
    if (cmd == "node.migrate") return Migrate(args, caller, progress);
    if (cmd == "node.setup_load_balancer") return SetupLoadBalancer(args, caller, progress);
    if (cmd == "lb.cert_install") return CertCommand("install", args, caller);
    if (cmd == "lb.cert_remove") return CertCommand("remove", args, caller);
    if (cmd == "lb.cert_list") return CertCommand("list", args, caller);
    if (cmd == "op.migrate_store") return MigrateStore(args, caller, progress);
    if (cmd == "history") {
      int limit = args.value("limit", 100);
      return CallPrimary("GET", "/v1/history?limit=" + std::to_string(limit), json::object());
    }
    if (cmd.rfind("config.", 0) == 0) return ConfigCmd(cmd.substr(7), args, caller);
    if (cmd == "app.call") return AppCall(args);
    // Commands that may act on another node (-n NODE_IP): forwarded to its agent.
    std::string node = Str(args, "node");
    if (!node.empty() && node != Identity().ip) {
      KATO_TRY(CheckIPv4(node, "NODE_IP"));
      if (!Member().attached) return Err("this node is not in a cluster; -n needs one");
      // A quick probe first: the command itself may legitimately take minutes
      // (servers starting), but a dead node must be reported in seconds.
      auto probe = CallAgent(node, "GET", "/v1/status", json::object(), kPeerStatusTimeout);
      if (!probe) return Err("node " + node + " does not answer: " + probe.error());
      json fwd{{"cmd", cmd}, {"args", args}, {"user", caller.user}, {"command", caller.command}};
      fwd["args"].erase("node");
      return CallAgent(node, "POST", "/v1/command", fwd, Millis(200000));
    }
    if (cmd == "role.add") return RoleChange(true, args, caller, progress);
    if (cmd == "role.remove") return RoleChange(false, args, caller, progress);
    if (cmd == "role.info") return RoleInfo(args);
    if (cmd == "start" || cmd == "stop" || cmd == "restart")
      return Control(cmd, Strings(args, "roles"), true, caller, progress);
    if (cmd == "process.list") {
      json out = json::array();
      for (const auto& p : Processes()) out.push_back(ProcessJson(p));
      return out;
    }
    if (cmd == "process.start" || cmd == "process.stop" || cmd == "process.restart")
      return Control(cmd.substr(8), Strings(args, "names"), false, caller, progress);
    return Err("unknown command '" + cmd + "'");
  }

  // Requests come from outside (the CLI socket, other nodes): a value of the
  // wrong JSON type makes nlohmann throw, which must become a clear error.
  Result<json> SafeDispatch(const std::string& cmd, const json& args, const Caller& caller,
                            const Progress& progress) {
    try {
      auto r = Dispatch(cmd, args, caller, progress);
      // The core shows what nodes report (`status --all`): report a change at once.
      static const std::set<std::string> kReadOnly{"info", "status", "version", "node.list",
                                                    "role.info", "process.list", "history",
                                                    "lb.cert_list", "node.token", "app.call"};
      if (r && !kReadOnly.count(cmd)) Heartbeat();
      return r;
    } catch (const json::exception& e) {
      return Err(std::string("bad request: ") + e.what());
    } catch (const std::exception& e) {
      return Err(std::string("internal error: ") + e.what());
    }
  }

  // ---- the CLI socket ----------------------------------------------------

  void ServeCliConnection(int fd) {
    std::string buffer;
    auto line = ReadLine(fd, buffer, 1 << 20, Millis(10000));
    auto reply = [&](const json& j) { (void)WriteAll(fd, j.dump() + "\n"); };
    if (!line) {
      reply({{"ok", false}, {"error", "bad request: " + line.error()}});
      ::close(fd);
      return;
    }
    json req = json::parse(*line, nullptr, false);
    if (req.is_discarded() || !req.is_object() || !req.contains("cmd") || !req["cmd"].is_string()) {
      reply({{"ok", false},
             {"error", "bad request: expected one JSON object with a \"cmd\" string per line"}});
      ::close(fd);
      return;
    }
    Caller caller;
    struct ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) caller.user = UserName(cred.uid);
    caller.command = RedactCommandLine(Str(req, "command"));  // also what old CLIs send
    json args = req.contains("args") && req["args"].is_object() ? req["args"] : json::object();
    auto result = SafeDispatch(req["cmd"].get<std::string>(), args, caller,
                               [&](const std::string& p) { reply({{"progress", p}}); });
    if (result)
      reply({{"ok", true}, {"result", *result}});
    else
      reply({{"ok", false}, {"error", result.error()}});
    ::close(fd);
  }

  void CliLoop() {
    while (!stopping) {
      pollfd p{cli_fd, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      int fd = ::accept4(cli_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::thread([this, fd] { ServeCliConnection(fd); }).detach();
    }
  }

  // ---- the agent port (other nodes) --------------------------------------

  void HandleNodeRequest(const HttpRequest& req, Responder respond) {
    auto reply = [](int status, const json& j) {
      HttpResponse r;
      r.status = status;
      r.body = j.dump();
      return r;
    };
    if (auto refused = members.Refuse(req)) {  // current members only, on every endpoint
      respond(std::move(*refused));
      return;
    }
    std::string path = req.target.substr(0, req.target.find('?'));
    if (path == "/v1/status" && req.method == "GET") {
      respond(reply(200, LocalStatus()));
    } else if (auto log = ServeDeaLog(opt.data_dir, req)) {
      respond(std::move(*log));
    } else if (path == "/v1/detach" && req.method == "POST") {
      // A nudge from the core: the next heartbeat learns whether this node was removed.
      Wake();
      respond(reply(200, {{"ok", true}}));
    } else if (path == "/v1/command" && req.method == "POST") {
      json body = json::parse(req.body, nullptr, false);
      static const std::set<std::string> allowed{
          "role.add", "role.remove", "role.info", "start", "stop", "restart",
          "process.list", "process.start", "process.stop", "process.restart", "status", "info"};
      if (body.is_discarded() || !body.is_object() || !allowed.count(Str(body, "cmd"))) {
        respond(reply(400, {{"error", "not a command another node may run here"}}));
        return;
      }
      // Commands can wait for processes: run them off the I/O threads.
      std::thread([this, body, respond, reply]() {
        Caller caller{Str(body, "user"), Str(body, "command")};
        json args = body.contains("args") && body["args"].is_object() ? body["args"]
                                                                      : json::object();
        auto r = SafeDispatch(Str(body, "cmd"), args, caller, [](const std::string&) {});
        respond(r ? reply(200, *r) : reply(409, {{"error", r.error()}}));
      }).detach();
    } else {
      respond(reply(404, {{"error", "no such API: " + req.method + " " + path}}));
    }
  }

  // (Re)starts the agent port on the node's current address, once it has certificates.
  Status StartNodeServer() {
    auto p = PkiCopy();
    auto ip = Identity().ip;
    std::lock_guard l(server_mu);
    if (node_server && node_server_ip == ip && node_server_cert == p.cert) return Ok();
    if (node_server) node_server->Stop();
    node_server.reset();
    if (p.cert.empty() || p.key.empty() || p.ca.empty()) return Ok();
    auto s = std::make_unique<HttpsServer>(
        ServerTls{p.ca, p.cert, p.key, p.ca},
        [this](const HttpRequest& req, Responder r) { HandleNodeRequest(req, std::move(r)); });
    KATO_TRY(s->Start(ip, kAgentPort));
    node_server = std::move(s);
    node_server_ip = ip;
    node_server_cert = p.cert;
    return Ok();
  }

  // ---- lifecycle -----------------------------------------------------------

  Status Init() {
    KATO_TRY(MakeDirs(opt.data_dir, 0755));
    KATO_TRY(MakeDirs(layout.log_dir(), 0755));
    KATO_TRY(MakeDirs(layout.run_dir(), 0755));
    lock_fd = ::open(layout.lock_file().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX | LOCK_NB) != 0)
      return Err("another katod is already running with data dir " + opt.data_dir);
    std::string ip = opt.ip;
    if (!ip.empty()) KATO_TRY(CheckIPv4(ip, "--ip"));
    auto ident = LoadOrCreateIdentity(layout, ip, "");
    if (!ident) return Err(ident.error());
    if (ident->ip.empty()) {
      auto def = DefaultRouteIp();
      if (!def) return Err(def.error());
      ident->ip = *def;
      KATO_TRY(SaveIdentity(layout, *ident));
    }
    auto m = LoadMembership(layout);
    if (!m) return Err(m.error());
    {
      std::lock_guard l(mu);
      id = *ident;
      member = *m;
    }
    LoadPki();
    BecomeChildSubreaper();
    sup = std::make_unique<Supervisor>(RealClock::instance(), launcher, prober, layout.log_dir(),
                                       layout.run_dir());
    sup->recover(Millis(15000));
    auto fd = UnixListen(layout.socket(), 0660);
    if (!fd) return Err(fd.error());
    cli_fd = *fd;
    if (struct group* g = getgrnam("kato")) (void)chown(layout.socket().c_str(), 0, g->gr_gid);
    KATO_TRY(StartNodeServer());
    return Ok();
  }

  int Run() {
    if (auto s = Init(); !s) {
      LogError("katod: {}", s.error());
      return 1;
    }
    auto ident = Identity();
    LogInfo("katod {} node {} at {} (data dir {})", opt.version, ident.id, ident.ip, opt.data_dir);
    Reconcile();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    loop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    std::thread cli([this] { CliLoop(); });
    std::thread hb([this] { HeartbeatLoop(); });
    std::thread watch([this] { WatchLoop(); });
    bool shutting_down = false;
    auto shutdown_deadline = std::chrono::steady_clock::now();
    bool busy = false;  // a process is starting or stopping: check it more often
    std::string last_states;
    for (;;) {
      pollfd p[2] = {{sfd, POLLIN, 0}, {loop_fd, POLLIN, 0}};
      ::poll(p, 2, busy ? 10 : 100);
      uint64_t drained;
      while (::read(loop_fd, &drained, sizeof drained) > 0) {
      }
      signalfd_siginfo si;
      while (::read(sfd, &si, sizeof si) == sizeof si) {
        if ((si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) && !shutting_down) {
          LogInfo("katod: signal {}, stopping this node's processes", si.ssi_signo);
          shutting_down = true;
          shutdown_deadline = std::chrono::steady_clock::now() + Millis(60000);
          stopping = true;
          wake_cv.notify_all();
          std::lock_guard l(sup_mu);
          sup->stop_all();
        }
      }
      std::lock_guard l(sup_mu);
      sup->tick();
      busy = false;
      std::string states;  // what a heartbeat reports: a change is reported at once
      for (const auto& st : sup->status()) {
        busy = busy || st.state == ProcState::kStarting || st.state == ProcState::kStopping;
        states += st.name + ' ' + ToString(st.state) + ' ' + std::to_string(st.pid) + '\n';
      }
      if (states != last_states) {
        last_states = std::move(states);
        Wake();
      }
      if (shutting_down &&
          (sup->all_stopped() || std::chrono::steady_clock::now() > shutdown_deadline))
        break;
    }
    cli.join();
    hb.join();
    watch.join();
    {
      std::lock_guard l(server_mu);
      if (node_server) node_server->Stop();
    }
    ::close(cli_fd);
    ::unlink(layout.socket().c_str());
    LogInfo("katod: stopped");
    return 0;
  }
};

Agent::Agent(AgentOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Agent::~Agent() = default;
int Agent::Run() { return impl_->Run(); }

}  // namespace kato
