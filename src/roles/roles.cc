#include "roles/roles.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>

#include "common/layout.h"

#ifndef KATO_VERSION
#define KATO_VERSION "0.0.0"
#endif

namespace kato {
namespace {

const char kDataServices[] = "data-services";
const char kPath[] = "/usr/sbin:/usr/bin:/sbin:/bin";

// Roles whose processes come with a later release, and why they are absent.
const std::map<std::string, std::string>& NotYetAvailable() {
  static const auto* m = new std::map<std::string, std::string>{
      {"mdns", "mdns serves micro clouds only; clusters use real DNS"},
  };
  return *m;
}

// A data-service server: the executables it needs and how to install them.
struct ServerNeeds {
  std::vector<std::vector<std::string>> any_of;  // each entry: one of these names
  std::string missing;                           // reason when something is missing
};

const std::map<std::string, ServerNeeds>& Servers() {
  static const auto* m = new std::map<std::string, ServerNeeds>{
      {"postgresql",
       {{{"postgres"}, {"initdb"}},
        "PostgreSQL server not installed (apt-get install postgresql-15)"}},
      {"mysql",
       {{{"mariadbd", "mysqld"}, {"mariadb-install-db", "mysql_install_db"}},
        "MariaDB server not installed (apt-get install mariadb-server)"}},
      {"redis", {{{"redis-server"}}, "Redis server not installed (apt-get install redis-server)"}},
      {"memcached", {{{"memcached"}}, "memcached not installed (apt-get install memcached)"}},
      {"rabbit",
       {{{"rabbitmq-server"}}, "RabbitMQ server not installed (apt-get install rabbitmq-server)"}},
      {"load_balancer", {{{"nginx"}}, "nginx not installed (apt-get install nginx)"}},
      {"harbor", {{{"nginx"}}, "nginx not installed (apt-get install nginx libnginx-mod-stream)"}},
      {"filesystem", {{{"sshd"}}, "OpenSSH server not installed (apt-get install openssh-server)"}},
      {"mongodb",
       {{{"mongod"}},
        "MongoDB server not installed (no mongod binary found; Debian 12 does not package it: "
        "install mongodb-org from MongoDB's repository)"}},
  };
  return *m;
}

// The first of `names` found by `env`, or empty.
std::string FindAny(const RoleEnvironment& env, const std::vector<std::string>& names) {
  for (const auto& n : names) {
    std::string p = env.FindExecutable(n);
    if (!p.empty()) return p;
  }
  return "";
}

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

std::string RolesHelp() {
  return "roles are: " + Join(AllRoles(), ", ") + " (groups: " + kDataServices + ")";
}

size_t CatalogIndex(const std::string& role) {
  const auto& all = AllRoles();
  return static_cast<size_t>(std::find(all.begin(), all.end(), role) - all.begin());
}

std::vector<std::string> InCatalogOrder(const std::set<std::string>& roles) {
  std::vector<std::string> out(roles.begin(), roles.end());
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return CatalogIndex(a) < CatalogIndex(b); });
  return out;
}

// Start-order phases from DESIGN.md; a role's processes get phase*100 + catalog index.
int StartOrder(const std::string& role) {
  int phase = 4;  // data services
  if (role == "base") phase = 0;
  if (role == "primary") phase = 1;
  if (role == "controller") phase = 2;
  if (role == "dea") phase = 3;
  if (role == "router") phase = 5;
  if (role == "load_balancer") phase = 6;
  return phase * 100 + static_cast<int>(CatalogIndex(role));
}

// The dist port RabbitMQ's prelaunch check wants free on every address, so two
// nodes on one machine need different ones even though the listener is bound to
// loopback. Derived from the low 12 bits of the node's IPv4 address: distinct
// for all nodes within one /20, which covers any set of nodes sharing a machine.
int RabbitDistPort(const std::string& ip) {
  in_addr a{};
  if (inet_pton(AF_INET, ip.c_str(), &a) == 1) return 25672 + 1 + (ntohl(a.s_addr) & 0xfff);
  return 25672 + 1 + static_cast<int>(std::hash<std::string>{}(ip) % 4096);
}

// An Erlang node name part from the node id: "kato-" + its first 8 name characters.
std::string RabbitNodeName(const std::string& node_id) {
  std::string s;
  for (char c : node_id) {
    if (s.size() == 8) break;
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') s += c;
  }
  return "kato" + (s.empty() ? "" : "-" + s) + "@localhost";
}

// Shell prelude shared by the server wrappers. The wrappers run as katod's user
// (root), because ProcessesForRoles must stay free of side effects and someone
// has to create the service dir and hand it to the service user; then they exec
// the server as that user with setpriv, which (unlike runuser) does not fork, so
// signals to the process group reach the server and its exit status is the
// process's own. The node's data dir and its parents need o+x for the service
// users: `prepare` checks that and says so instead of letting the server fail
// with EACCES.
const char kPrelude[] = R"SH(set -eu
umask 077
prepare() {  # USER DIR: DIR exists, belongs to USER, mode 0700, and USER can reach it
  mkdir -p "$2"
  chmod 0711 "$(dirname "$2")"
  chown "$1:" "$2"
  chmod 0700 "$2"
  if ! run_as "$1" test -x "$2"; then
    echo "kato: user $1 cannot reach $2; every parent directory needs o+x (chmod o+x DIR)" >&2
    exit 1
  fi
  cd "$2"
}
run_as() {  # USER CMD...: runs CMD as USER
  u=$1
  shift
  setpriv --reuid="$u" --regid="$u" --init-groups -- "$@"
}
)SH";

// PostgreSQL refuses to run as root. Positional args: DIR IP PORT POSTGRES INITDB.
// initdb works in data.init and renames it into place, so a start interrupted
// during initdb never leaves a half-made cluster that postgres would then reject.
const char kPostgresScript[] = R"SH(dir=$1 ip=$2 port=$3 postgres=$4 initdb=$5
prepare postgres "$dir"
mkdir -p run
chown postgres: run
if [ ! -s superuser.pw ]; then
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > superuser.pw.tmp
  chown postgres: superuser.pw.tmp
  mv superuser.pw.tmp superuser.pw
fi
if [ ! -f data/PG_VERSION ]; then
  if [ -e data ] && ! rmdir data 2>/dev/null; then
    echo "kato: $dir/data exists but holds no PostgreSQL cluster; move it away" >&2
    exit 1
  fi
  rm -rf data.init
  run_as postgres "$initdb" -D "$dir/data.init" -U postgres --pwfile="$dir/superuser.pw" \
    --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8
  # initdb admits loopback clients only; apps connect from other nodes, with passwords.
  echo "host all all all scram-sha-256" >> data.init/pg_hba.conf
  mv data.init data
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$postgres" -D "$dir/data" \
  -c listen_addresses="$ip" -c port="$port" -c unix_socket_directories="$dir/run"
)SH";

// Positional args: DIR IP PORT MARIADBD INSTALL_DB. mariadbd drops to mysql itself.
// MariaDB 10.11's install-db makes root@localhost (unix_socket) and no anonymous
// account (it has no --skip-auth-anonymous-user); `katod services` drops any that
// an older data dir has.
const char kMysqlScript[] = R"SH(dir=$1 ip=$2 port=$3 mysqld=$4 installdb=$5
prepare mysql "$dir"
mkdir -p run
chown mysql: run
if [ ! -d data/mysql ]; then
  if [ -e data ] && ! rmdir data 2>/dev/null; then
    echo "kato: $dir/data exists but holds no MariaDB system tables; move it away" >&2
    exit 1
  fi
  rm -rf data.init
  "$installdb" --no-defaults --datadir="$dir/data.init" --user=mysql \
    --auth-root-authentication-method=socket --skip-test-db
  mv data.init data
fi
exec "$mysqld" --no-defaults --datadir="$dir/data" --user=mysql --bind-address="$ip" \
  --port="$port" --socket="$dir/run/mysqld.sock" --pid-file="$dir/run/mysqld.pid" \
  --skip-name-resolve
)SH";

// Positional args: DIR IP PORT REDIS_SERVER. Run as redis, since a root redis can
// be made to write files anywhere. Clients need the password in DIR/kato.conf
// (0600, made once from /dev/urandom by shell builtins: it is on no command line).
const char kRedisScript[] = R"SH(dir=$1 ip=$2 port=$3 redis=$4
prepare redis "$dir"
if [ ! -s kato.conf ]; then
  pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf 'requirepass %s\n' "$pw" > kato.conf.tmp
  chown redis: kato.conf.tmp
  mv kato.conf.tmp kato.conf
fi
exec setpriv --reuid=redis --regid=redis --init-groups -- "$redis" "$dir/kato.conf" --bind "$ip" \
  --port "$port" --dir "$dir" --daemonize no --protected-mode no --appendonly yes
)SH";

// Positional args: DIR IP PORT MEMCACHED. memcached drops root to memcache itself;
// -U 0: no UDP (amplification). -Y: ASCII authentication with the user:password
// in DIR/auth (kato:RANDOM, readable by memcache only); no command works before it.
const char kMemcachedScript[] = R"SH(dir=$1 ip=$2 port=$3 memcached=$4
prepare memcache "$dir"
if [ ! -s auth ]; then
  pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf 'kato:%s\n' "$pw" > auth.tmp
  chown memcache: auth.tmp
  chmod 0400 auth.tmp
  mv auth.tmp auth
fi
exec "$memcached" -l "$ip" -p "$port" -U 0 -u memcache -m 64 -Y "$dir/auth"
)SH";

// Positional args: DIR RABBITMQ_SERVER. Everything else comes from the environment.
// SIGTERM to the group stops RabbitMQ cleanly in about a second. The epmd daemon
// that the first Erlang node of a machine starts leaves the group and outlives
// the node, by design: every Erlang node of the machine (other kato nodes'
// RabbitMQ included) registers with it. It listens on loopback only; `epmd -kill`
// stops it once `epmd -names` lists no node.
const char kRabbitScript[] = R"SH(dir=$1 server=$2
prepare rabbitmq "$dir"
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups -- "$server"
)SH";

// Positional args: DIR IP PORT MONGOD.
const char kMongoScript[] = R"SH(dir=$1 ip=$2 port=$3 mongod=$4
mkdir -p "$dir"
cd "$dir"
exec "$mongod" --bind_ip "$ip" --port "$port" --dbpath "$dir"
)SH";

// The environment of katod's own role processes (`katod ROLE`): PATH and LANG,
// and the sanitizer settings katod itself was given, so that a sanitized build
// reports where katod's does (the cluster tests collect those reports; see
// tests/cluster/conftest.py). Servers and app instances never get them.
std::map<std::string, std::string> KatodEnv(const RoleEnvironment& env) {
  std::map<std::string, std::string> e = {{"PATH", kPath}, {"LANG", "C.UTF-8"}};
  for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"}) {
    std::string value = env.Getenv(name);
    if (!value.empty()) e[name] = value;
  }
  return e;
}

// A data-service server's spec; `args` follow the wrapper `script` as $1, $2, ...
// (values never go into the script text, so paths need no shell quoting).
// An empty script means `args` is the whole argv.
ProcessSpec ServerSpec(const std::string& name, const std::string& role, const std::string& ip,
                       int port, const char* script, std::vector<std::string> args) {
  ProcessSpec s;
  s.name = name;
  if (*script) {
    s.argv = {"/bin/sh", "-c", std::string(kPrelude) + script, "kato-" + name};
    s.argv.insert(s.argv.end(), args.begin(), args.end());
  } else {
    s.argv = std::move(args);
  }
  s.env = {{"PATH", kPath}, {"LANG", "C.UTF-8"}};
  s.order = StartOrder(role);
  s.ready = ReadinessCheck{ip, port};
  s.stop_timeout = std::chrono::seconds(20);
  s.start_retries = 3;
  return s;
}

// The `katod services` process: provisions service instances on the servers of
// `data_roles` (postgresql, mysql, redis, memcached, rabbit; their order), after
// every data server (phase 4's end), before the router.
ProcessSpec ServicesSpec(const std::vector<std::string>& data_roles, const NodeContext& node,
                         const RoleEnvironment& env) {
  std::string list;
  for (const auto& r : data_roles) list += (list.empty() ? "" : ",") + r;
  ProcessSpec s;
  s.name = "services";
  s.argv = {node.katod_path, "services", "--data-dir", node.data_dir, "--ip", node.ip,
            "--roles", list};
  s.env = KatodEnv(env);
  s.order = 4 * 100 + 99;
  // No port to check: RUNNING once alive for a moment, so that `role add` and
  // `attach` do not wait a whole second for it (its instances report on their own).
  s.start_secs = std::chrono::milliseconds(200);
  s.stop_timeout = std::chrono::seconds(20);  // it stops its instances' servers first
  return s;
}

// The processes of one available role (empty for base and for roles of later releases).
std::vector<ProcessSpec> RoleProcesses(const std::string& role, const NodeContext& node,
                                       const RoleEnvironment& env) {
  const std::string svc = DataLayout{node.data_dir}.services_dir();
  const std::string& ip = node.ip;
  if (role == "primary") {
    ProcessSpec s;
    s.name = "primary";
    s.argv = {node.katod_path, "primary", "--data-dir", node.data_dir, "--ip", ip};
    s.env = KatodEnv(env);
    s.order = StartOrder(role);
    s.ready = ReadinessCheck{ip, kPrimaryPort};
    return {s};
  }
  if (role == "controller" || role == "router" || role == "dea") {
    // kato's own role processes: `katod ROLE`, on the node's address.
    ProcessSpec s;
    s.name = role;
    s.argv = {node.katod_path, role, "--data-dir", node.data_dir, "--ip", ip};
    s.env = KatodEnv(env);
    s.order = StartOrder(role);
    if (role == "controller") s.ready = ReadinessCheck{ip, kControllerPort};
    if (role == "router") s.ready = ReadinessCheck{ip, kRouterHealthPort};
    s.stop_timeout = std::chrono::seconds(15);
    return {s};
  }
  if (role == "harbor") {
    // `katod harbor` runs nginx (stream module) as its child and reloads it gracefully.
    ProcessSpec s;
    s.name = "harbor";
    s.argv = {node.katod_path, "harbor", "--data-dir", node.data_dir, "--ip", ip,
              "--nginx",       env.FindExecutable("nginx")};
    s.env = KatodEnv(env);
    s.order = StartOrder(role);
    s.start_secs = std::chrono::milliseconds(200);  // no port of its own to check
    s.stop_timeout = std::chrono::seconds(20);
    return {s};
  }
  if (role == "load_balancer") {
    // `katod lb` runs nginx as its child and stops it gracefully (SIGQUIT).
    ProcessSpec s;
    s.name = "load_balancer";
    s.argv = {node.katod_path, "lb",   "--data-dir", node.data_dir, "--ip", ip,
              "--nginx",       env.FindExecutable("nginx")};
    s.env = KatodEnv(env);
    s.order = StartOrder(role);
    s.ready = ReadinessCheck{ip, kRouterHttpPort};
    // It may wait for the router this node ran before to release port 80, and for its certificate.
    s.start_timeout = std::chrono::seconds(90);
    s.stop_timeout = std::chrono::seconds(20);
    return {s};
  }
  if (role == "postgresql") {
    ProcessSpec s = ServerSpec("postgresql", role, ip, 5432, kPostgresScript,
                               {svc + "/postgresql", ip, "5432", env.FindExecutable("postgres"),
                                env.FindExecutable("initdb")});
    s.start_timeout = std::chrono::seconds(60);
    s.stop_signal = 2;  // SIGINT, "fast shutdown": SIGTERM would wait for every client to leave
    return {s};
  }
  if (role == "mysql") {
    ProcessSpec s = ServerSpec("mysql", role, ip, 3306, kMysqlScript,
                               {svc + "/mysql", ip, "3306", FindAny(env, {"mariadbd", "mysqld"}),
                                FindAny(env, {"mariadb-install-db", "mysql_install_db"})});
    s.start_timeout = std::chrono::seconds(60);
    return {s};
  }
  if (role == "redis") {
    return {ServerSpec("redis", role, ip, 6379, kRedisScript,
                       {svc + "/redis", ip, "6379", env.FindExecutable("redis-server")})};
  }
  if (role == "memcached") {
    return {ServerSpec("memcached", role, ip, 11211, kMemcachedScript,
                       {svc + "/memcached", ip, "11211", env.FindExecutable("memcached")})};
  }
  if (role == "rabbit") {
    ProcessSpec s = ServerSpec("rabbitmq", role, ip, 5672, kRabbitScript,
                               {svc + "/rabbitmq", env.FindExecutable("rabbitmq-server")});
    const auto rabbit_env = RabbitEnv(node);
    s.env.insert(rabbit_env.begin(), rabbit_env.end());
    s.start_timeout = std::chrono::seconds(90);
    return {s};
  }
  if (role == "mongodb") {
    ProcessSpec s = ServerSpec("mongodb", role, ip, 27017, kMongoScript,
                               {svc + "/mongodb", ip, "27017", env.FindExecutable("mongod")});
    s.start_timeout = std::chrono::seconds(60);
    return {s};
  }
  return {};
}

}  // namespace

const std::vector<std::string>& AllRoles() {
  static const auto* v = new std::vector<std::string>{
      "primary",    "controller", "router", "dea",        "mdns",
      "filesystem", "mongodb",    "mysql",  "postgresql", "rabbit",
      "redis",      "memcached",  "harbor", "base",       "load_balancer"};
  return *v;
}

bool IsRole(const std::string& name) { return CatalogIndex(name) < AllRoles().size(); }

bool IsRoleGroup(const std::string& name) { return name == kDataServices; }

const std::vector<std::string>& GroupMembers(const std::string& group) {
  static const auto* data = new std::vector<std::string>{
      "mysql", "postgresql", "redis", "mongodb", "rabbit", "memcached", "filesystem"};
  static const auto* none = new std::vector<std::string>{};
  return group == kDataServices ? *data : *none;
}

std::string SystemRoleEnvironment::Getenv(const std::string& name) const {
  const char* value = std::getenv(name.c_str());
  return value ? value : "";
}

std::string SystemRoleEnvironment::FindExecutable(const std::string& name) const {
  namespace fs = std::filesystem;
  if (name.empty() || name.find('/') != std::string::npos) return "";
  // Server directories first: Debian's /usr/sbin/rabbitmq-server is a wrapper that
  // switches user and sends output to /var/log, while the real script lives in
  // /usr/lib/rabbitmq/bin; PostgreSQL's binaries are only in its versioned dir.
  std::vector<std::string> dirs = {"/usr/lib/rabbitmq/bin"};
  std::vector<std::pair<int, std::string>> pg;
  std::error_code ec;
  for (fs::directory_iterator it("/usr/lib/postgresql", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string v = it->path().filename().string();
    if (!v.empty() && std::all_of(v.begin(), v.end(), ::isdigit) && v.size() < 6) {
      pg.emplace_back(std::stoi(v), it->path().string() + "/bin");
    }
  }
  std::sort(pg.rbegin(), pg.rend());  // highest version first
  for (auto& [ver, dir] : pg) dirs.push_back(dir);
  const char* path = ::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string d; std::getline(ss, d, ':');) {
    if (!d.empty() && d[0] == '/') dirs.push_back(d);
  }
  dirs.insert(dirs.end(), {"/usr/local/sbin", "/usr/sbin", "/sbin"});
  for (const auto& d : dirs) {
    std::string p = d + "/" + name;
    if (::access(p.c_str(), X_OK) == 0 && fs::is_regular_file(p, ec)) return p;
  }
  return "";
}

Availability RoleAvailability(const std::string& role, const RoleEnvironment& env) {
  if (!IsRole(role)) return {false, role + ": unknown role; " + RolesHelp()};
  if (auto it = NotYetAvailable().find(role); it != NotYetAvailable().end()) {
    return {false, role + ": not yet available in kato " + KATO_VERSION + " (" + it->second + ")"};
  }
  if (auto it = Servers().find(role); it != Servers().end()) {
    for (const auto& names : it->second.any_of) {
      if (FindAny(env, names).empty()) return {false, role + ": " + it->second.missing};
    }
  }
  if (role == "harbor" && NginxStreamModule(env).empty())
    return {false, "harbor: nginx's stream module not installed (apt-get install libnginx-mod-stream)"};
  return {true, ""};
}

std::vector<std::string> SplitRoleList(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const auto& a : args) {
    std::string cur;
    for (char c : a + ",") {
      if (c == ',' || std::isspace(static_cast<unsigned char>(c))) {
        if (!cur.empty()) out.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
  }
  return out;
}

namespace {

// Names that are neither roles nor groups, as an error; Ok when there are none.
Status CheckKnown(const std::vector<std::string>& names) {
  std::vector<std::string> unknown;
  for (const auto& n : names) {
    if (!IsRole(n) && !IsRoleGroup(n) &&
        std::find(unknown.begin(), unknown.end(), "'" + n + "'") == unknown.end()) {
      unknown.push_back("'" + n + "'");
    }
  }
  if (unknown.empty()) return Ok();
  return Err(std::string(unknown.size() == 1 ? "unknown role " : "unknown roles ") +
             Join(unknown, ", ") + "; " + RolesHelp());
}

}  // namespace

Result<Expansion> ExpandRoles(const std::vector<std::string>& names, const RoleEnvironment& env) {
  const std::vector<std::string> split = SplitRoleList(names);
  if (split.empty()) return Err("no roles given; " + RolesHelp());
  KATO_TRY(CheckKnown(split));
  std::set<std::string> roles;
  std::set<std::string> explicit_roles;
  std::vector<std::string> unavailable;
  for (const auto& n : split) {
    if (!IsRole(n) || !explicit_roles.insert(n).second) continue;
    Availability a = RoleAvailability(n, env);
    if (a.available) {
      roles.insert(n);
    } else {
      unavailable.push_back(a.reason);
    }
  }
  if (!unavailable.empty()) return Err(Join(unavailable, "; "));
  std::set<std::string> skipped;
  for (const auto& n : split) {
    if (!IsRoleGroup(n)) continue;
    for (const auto& m : GroupMembers(n)) {
      if (explicit_roles.count(m)) continue;
      Availability a = RoleAvailability(m, env);
      if (a.available) {
        roles.insert(m);
      } else {
        skipped.insert(m);
      }
    }
  }
  Expansion out;
  out.roles = InCatalogOrder(roles);
  for (const auto& m : InCatalogOrder(skipped))
    out.skipped.push_back(RoleAvailability(m, env).reason);
  return out;
}

Result<Expansion> AllRolesBut(const std::vector<std::string>& except, const RoleEnvironment& env) {
  const std::vector<std::string> split = SplitRoleList(except);
  KATO_TRY(CheckKnown(split));
  std::set<std::string> excluded = {"load_balancer", "primary"};
  for (const auto& n : split) {
    if (IsRoleGroup(n)) {
      excluded.insert(GroupMembers(n).begin(), GroupMembers(n).end());
    } else {
      excluded.insert(n);
    }
  }
  Expansion out;
  for (const auto& r : AllRoles()) {
    if (excluded.count(r)) continue;
    Availability a = RoleAvailability(r, env);
    if (a.available) {
      out.roles.push_back(r);
    } else {
      out.skipped.push_back(a.reason);
    }
  }
  return out;
}

Status CheckNodeRoles(const std::set<std::string>& roles, bool primary_elsewhere) {
  KATO_TRY(CheckKnown(std::vector<std::string>(roles.begin(), roles.end())));
  for (const auto& r : roles) {
    if (IsRoleGroup(r)) return Err("'" + r + "' is a role group, not a role; expand it first");
  }
  if (!roles.count("base")) {
    return Err(
        "base is missing from the node's roles; every node serves base and it cannot be "
        "removed");
  }
  if (roles.count("load_balancer")) {
    std::vector<std::string> others;
    for (const auto& r : InCatalogOrder(roles)) {
      if (r != "base" && r != "load_balancer") others.push_back(r);
    }
    if (!others.empty()) {
      return Err("load_balancer cannot be combined with other roles (found: " + Join(others, ", ") +
                 "); a load-balancer node serves nothing else");
    }
  }
  if (roles.count("primary") && primary_elsewhere) {
    return Err("the cluster already has a primary on another node; a cluster has exactly one");
  }
  return Ok();
}

Result<LoadBalancerPlan> PlanLoadBalancer(const std::string& own_ip,
                                          const std::vector<std::string>& own_roles,
                                          const std::vector<ClusterNodeView>& nodes,
                                          const std::vector<std::string>& routers, bool force) {
  auto has = [](const std::vector<std::string>& v, const char* r) {
    return std::find(v.begin(), v.end(), r) != v.end();
  };
  if (has(own_roles, "primary"))
    return Err("this node is the core (it holds the primary role); a load balancer is a node of "
               "its own: attach another node with `kato node attach -e router CORE_IP` and run "
               "this there; nothing changed");
  std::vector<std::string> others;
  for (const auto& r : own_roles)
    if (r != "base" && r != "router" && r != "load_balancer") others.push_back(r);
  if (!others.empty())
    return Err("a load balancer serves nothing else, and this node has " + Join(others, ", ") +
               "; remove " + (others.size() == 1 ? "it" : "them") + " first (`kato role remove " +
               Join(others, " ") + "`) or use another node; nothing changed");
  LoadBalancerPlan plan;
  if (has(own_roles, "router")) plan.remove_roles = {"router"};
  std::set<std::string> pool;
  if (routers.empty() || force) {
    for (const auto& n : nodes)
      if (n.ip != own_ip && has(n.roles, "router")) pool.insert(n.ip);
  } else {
    plan.follow_cluster = false;
    for (const auto& ip : routers) {
      if (ip == own_ip)
        return Err("ROUTER_IP " + ip +
                   " is this node's own address; a load balancer never balances to itself; "
                   "nothing changed");
      auto it = std::find_if(nodes.begin(), nodes.end(),
                             [&](const ClusterNodeView& n) { return n.ip == ip; });
      if (it == nodes.end())
        return Err("ROUTER_IP " + ip +
                   " is not a node of this cluster (see `kato node list`); nothing changed");
      if (!has(it->roles, "router"))
        return Err("ROUTER_IP " + ip + " is a node of this cluster but not a router (its roles: " +
                   Join(it->roles, ", ") + "); nothing changed");
      pool.insert(ip);
    }
  }
  plan.pool.assign(pool.begin(), pool.end());
  return plan;
}

std::vector<ProcessSpec> ProcessesForRoles(const std::set<std::string>& roles,
                                           const NodeContext& node, const RoleEnvironment& env) {
  std::map<std::string, ProcessSpec> by_name;  // a process shared by several roles runs once
  for (const auto& role : InCatalogOrder(roles)) {
    if (!IsRole(role) || !RoleAvailability(role, env).available) continue;
    for (auto& spec : RoleProcesses(role, node, env)) {
      auto [it, inserted] = by_name.emplace(spec.name, spec);
      // Shared: it starts with the earliest role that needs it.
      if (!inserted) it->second.order = std::min(it->second.order, spec.order);
    }
  }
  std::vector<std::string> data_roles;
  for (const auto& role : InCatalogOrder(roles))
    if (ProvisionedRole(role) && RoleAvailability(role, env).available) data_roles.push_back(role);
  if (!data_roles.empty()) by_name.emplace("services", ServicesSpec(data_roles, node, env));
  std::vector<ProcessSpec> out;
  for (auto& [name, spec] : by_name) out.push_back(std::move(spec));
  std::stable_sort(out.begin(), out.end(), [](const ProcessSpec& a, const ProcessSpec& b) {
    return a.order != b.order ? a.order < b.order : a.name < b.name;
  });
  return out;
}

bool RoleEnvironment::HasFile(const std::string& path) const { return ::access(path.c_str(), R_OK) == 0; }

std::string NginxStreamModule(const RoleEnvironment& env) {
  for (const char* p : {"/usr/lib/nginx/modules/ngx_stream_module.so",
                        "/usr/share/nginx/modules/ngx_stream_module.so"})
    if (env.HasFile(p)) return p;
  return "";
}

bool ProvisionedRole(const std::string& role) {
  return role == "postgresql" || role == "mysql" || role == "redis" || role == "memcached" ||
         role == "rabbit" || role == "filesystem";
}

std::map<std::string, std::string> RabbitEnv(const NodeContext& node) {
  const std::string dir = DataLayout{node.data_dir}.services_dir() + "/rabbitmq";
  return {
      {"HOME", dir},  // .erlang.cookie, shared with rabbitmqctl run with the same HOME
      {"RABBITMQ_NODENAME", RabbitNodeName(node.node_id)},
      {"RABBITMQ_NODE_IP_ADDRESS", node.ip},
      {"RABBITMQ_NODE_PORT", "5672"},
      {"RABBITMQ_DIST_PORT", std::to_string(RabbitDistPort(node.ip))},
      // Erlang distribution (remote code execution given the cookie) stays on
      // loopback, like the node name's host, and so does the epmd it starts.
      {"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}"},
      {"ERL_EPMD_ADDRESS", "127.0.0.1"},
      // Keep the node away from the machine-wide /etc/rabbitmq and /var/lib/rabbitmq.
      {"RABBITMQ_CONF_ENV_FILE", dir + "/rabbitmq-env.conf"},
      {"RABBITMQ_CONFIG_FILE", dir + "/rabbitmq"},
      {"RABBITMQ_ADVANCED_CONFIG_FILE", dir + "/advanced.config"},
      {"RABBITMQ_ENABLED_PLUGINS_FILE", dir + "/enabled_plugins"},
      {"RABBITMQ_MNESIA_BASE", dir + "/mnesia"},
      {"RABBITMQ_LOG_BASE", dir + "/log"},
      {"RABBITMQ_LOGS", "-"},  // to stdout: the process log
  };
}

std::vector<std::string> RoleProcessNames(const std::string& role) {
  // The data roles' servers, then `katod services`, which provisions their instances.
  static const auto* names = new std::map<std::string, std::vector<std::string>>{
      {"primary", {"primary"}},
      {"postgresql", {"postgresql", "services"}},
      {"mysql", {"mysql", "services"}},
      {"redis", {"redis", "services"}},
      {"memcached", {"memcached", "services"}},
      {"rabbit", {"rabbitmq", "services"}},
      {"filesystem", {"services"}},  // its sshd runs under `katod services`
      {"mongodb", {"mongodb"}}, {"controller", {"controller"}}, {"router", {"router"}},
      {"dea", {"dea"}},         {"load_balancer", {"load_balancer"}},
      {"harbor", {"harbor"}},
  };
  auto it = names->find(role);
  return it == names->end() ? std::vector<std::string>{} : it->second;
}

}  // namespace kato
