#include "roles/roles.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// Finds only what the test installed.
class FakeEnv final : public RoleEnvironment {
 public:
  std::string FindExecutable(const std::string& name) const override {
    auto it = bins.find(name);
    return it == bins.end() ? "" : it->second;
  }
  std::string Getenv(const std::string& name) const override {
    auto it = vars.find(name);
    return it == vars.end() ? "" : it->second;
  }
  bool HasFile(const std::string& path) const override { return files.count(path) > 0; }
  std::map<std::string, std::string> bins;
  std::map<std::string, std::string> vars;  // katod's environment
  std::set<std::string> files;
};

FakeEnv AllServers() {
  FakeEnv env;
  env.bins = {{"postgres", "/usr/lib/postgresql/15/bin/postgres"},
              {"initdb", "/usr/lib/postgresql/15/bin/initdb"},
              {"mariadbd", "/usr/sbin/mariadbd"},
              {"mariadb-install-db", "/usr/bin/mariadb-install-db"},
              {"redis-server", "/usr/bin/redis-server"},
              {"memcached", "/usr/bin/memcached"},
              {"rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server"},
              {"mongod", "/usr/bin/mongod"},
              {"nginx", "/usr/sbin/nginx"},
              {"sshd", "/usr/sbin/sshd"}};
  env.files = {"/usr/lib/nginx/modules/ngx_stream_module.so"};
  return env;
}

NodeContext Node(const std::string& ip = "127.0.0.77") {
  return {"/var/lib/kato-a", ip, "0123456789abcdef", "/usr/bin/katod"};
}

std::vector<std::string> Names(const std::vector<ProcessSpec>& specs) {
  std::vector<std::string> out;
  for (const auto& s : specs) out.push_back(s.name);
  return out;
}

TEST(Catalog, OrderAndGroups) {
  EXPECT_THAT(AllRoles(), ElementsAre("primary", "controller", "router", "dea", "mdns",
                                      "filesystem", "mongodb", "mysql", "postgresql", "rabbit",
                                      "redis", "memcached", "harbor", "base", "load_balancer"));
  EXPECT_TRUE(IsRole("base"));
  EXPECT_FALSE(IsRole("data-services"));
  EXPECT_FALSE(IsRole(""));
  EXPECT_TRUE(IsRoleGroup("data-services"));
  EXPECT_THAT(GroupMembers("data-services"), ElementsAre("mysql", "postgresql", "redis", "mongodb",
                                                         "rabbit", "memcached", "filesystem"));
  EXPECT_THAT(GroupMembers("nope"), IsEmpty());
}

TEST(Availability, HarborNeedsNginxAndItsStreamModule) {
  EXPECT_THAT(RoleAvailability("harbor", FakeEnv{}).reason, HasSubstr("apt-get install nginx"));
  FakeEnv env = AllServers();
  EXPECT_TRUE(RoleAvailability("harbor", env).available);
  env.files.clear();
  EXPECT_THAT(RoleAvailability("harbor", env).reason, HasSubstr("apt-get install libnginx-mod-stream"));
}

TEST(Availability, LaterReleaseRolesSayWhy) {
  FakeEnv env = AllServers();
  Availability a = RoleAvailability("mdns", env);
  EXPECT_FALSE(a.available);
  EXPECT_THAT(a.reason, HasSubstr("mdns: not yet available in kato " KATO_VERSION));
  for (const char* r : {"base", "primary", "controller", "router", "dea", "postgresql", "mysql",
                        "redis", "memcached", "rabbit", "mongodb", "load_balancer", "filesystem"}) {
    EXPECT_TRUE(RoleAvailability(r, env).available) << r;
  }
}

TEST(Availability, ServersNeedTheirBinaries) {
  FakeEnv none;
  EXPECT_EQ(RoleAvailability("filesystem", none).reason,
            "filesystem: OpenSSH server not installed (apt-get install openssh-server)");
  EXPECT_EQ(RoleAvailability("postgresql", none).reason,
            "postgresql: PostgreSQL server not installed (apt-get install postgresql-15)");
  EXPECT_THAT(RoleAvailability("mongodb", none).reason, HasSubstr("no mongod binary found"));
  EXPECT_THAT(RoleAvailability("rabbit", none).reason,
              HasSubstr("apt-get install rabbitmq-server"));
  EXPECT_TRUE(RoleAvailability("base", none).available);
  EXPECT_TRUE(RoleAvailability("primary", none).available);
  EXPECT_EQ(RoleAvailability("load_balancer", none).reason,
            "load_balancer: nginx not installed (apt-get install nginx)");

  FakeEnv half = AllServers();
  half.bins.erase("initdb");  // a server without its initdb cannot make a cluster
  EXPECT_FALSE(RoleAvailability("postgresql", half).available);

  FakeEnv old_mysql;
  old_mysql.bins = {{"mysqld", "/usr/sbin/mysqld"}, {"mysql_install_db", "/usr/bin/x"}};
  EXPECT_TRUE(RoleAvailability("mysql", old_mysql).available);
}

TEST(SplitRoleList, CommasAndSpaces) {
  EXPECT_THAT(SplitRoleList({"a,b c", " d ,, e", ""}), ElementsAre("a", "b", "c", "d", "e"));
  EXPECT_THAT(SplitRoleList({}), IsEmpty());
}

TEST(ExpandRoles, GroupWithEverythingInstalled) {
  auto e = ExpandRoles({"data-services"}, AllServers());
  ASSERT_TRUE(e.ok()) << e.error();
  EXPECT_THAT(e->roles, ElementsAre("filesystem", "mongodb", "mysql", "postgresql", "rabbit",
                                    "redis", "memcached"));
  EXPECT_THAT(e->skipped, IsEmpty());
}

TEST(ExpandRoles, GroupSkipsMissingServersAndSaysWhy) {
  FakeEnv env = AllServers();
  env.bins.erase("mongod");
  env.bins.erase("redis-server");
  env.bins.erase("sshd");
  auto e = ExpandRoles({"data-services"}, env);
  ASSERT_TRUE(e.ok()) << e.error();
  EXPECT_THAT(e->roles, ElementsAre("mysql", "postgresql", "rabbit", "memcached"));
  ASSERT_EQ(e->skipped.size(), 3u);  // catalog order
  EXPECT_THAT(e->skipped[0], HasSubstr("filesystem: OpenSSH server not installed"));
  EXPECT_THAT(e->skipped[1], HasSubstr("mongodb: MongoDB server not installed"));
  EXPECT_THAT(e->skipped[2], HasSubstr("redis: Redis server not installed"));

  auto nothing = ExpandRoles({"data-services"}, FakeEnv{});
  ASSERT_TRUE(nothing.ok());
  EXPECT_THAT(nothing->roles, IsEmpty());
  EXPECT_EQ(nothing->skipped.size(), 7u);
}

TEST(ExpandRoles, UnknownRolesAreNamedWithTheValidOnes) {
  auto e = ExpandRoles({"redis,foo"}, AllServers());
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error(),
            "unknown role 'foo'; roles are: primary, controller, router, dea, mdns, filesystem, "
            "mongodb, mysql, postgresql, rabbit, redis, memcached, harbor, base, load_balancer "
            "(groups: data-services)");
  auto two = ExpandRoles({"foo", "bar", "foo"}, AllServers());
  ASSERT_FALSE(two.ok());
  EXPECT_THAT(two.error(), HasSubstr("unknown roles 'foo', 'bar';"));
  EXPECT_FALSE(ExpandRoles({" , "}, AllServers()).ok());
}

TEST(ExpandRoles, ExplicitUnavailableRoleIsAnError) {
  auto later = ExpandRoles({"mdns"}, AllServers());
  ASSERT_FALSE(later.ok());
  EXPECT_THAT(later.error(), HasSubstr("mdns: not yet available in kato"));

  auto missing = ExpandRoles({"redis", "postgresql"}, FakeEnv{});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error(), HasSubstr("redis: Redis server not installed"));
  EXPECT_THAT(missing.error(), HasSubstr("postgresql: PostgreSQL server not installed"));

  // Naming a member explicitly beside its group still requires it.
  FakeEnv env = AllServers();
  env.bins.erase("mongod");
  EXPECT_FALSE(ExpandRoles({"data-services", "mongodb"}, env).ok());
}

TEST(ExpandRoles, DeduplicatesInCatalogOrder) {
  auto e = ExpandRoles({"redis base", "primary,redis", "data-services"}, AllServers());
  ASSERT_TRUE(e.ok()) << e.error();
  EXPECT_THAT(e->roles, ElementsAre("primary", "filesystem", "mongodb", "mysql", "postgresql",
                                    "rabbit", "redis", "memcached", "base"));
}

TEST(AllRolesBut, EverythingAvailableButPrimaryAndLoadBalancer) {
  auto all = AllRolesBut({}, AllServers());
  ASSERT_TRUE(all.ok()) << all.error();
  EXPECT_THAT(all->roles, ElementsAre("controller", "router", "dea", "filesystem", "mongodb",
                                      "mysql", "postgresql", "rabbit", "redis", "memcached",
                                      "harbor", "base"));
  EXPECT_THAT(all->skipped, Not(IsEmpty()));
  for (const auto& s : all->skipped) {
    EXPECT_THAT(s, Not(HasSubstr("load_balancer"))) << "left out by definition, not skipped";
  }

  auto but = AllRolesBut({"mdns,redis", "mongodb", "harbor"}, AllServers());
  ASSERT_TRUE(but.ok());
  EXPECT_THAT(but->roles, ElementsAre("controller", "router", "dea", "filesystem", "mysql",
                                      "postgresql", "rabbit", "memcached", "base"));
  for (const auto& s : but->skipped) EXPECT_THAT(s, Not(HasSubstr("mdns")));

  auto no_data = AllRolesBut({"data-services"}, AllServers());
  ASSERT_TRUE(no_data.ok());
  EXPECT_THAT(no_data->roles, ElementsAre("controller", "router", "dea", "harbor", "base"));

  FakeEnv env = AllServers();
  env.bins.erase("memcached");
  auto partial = AllRolesBut({}, env);
  ASSERT_TRUE(partial.ok());
  EXPECT_THAT(partial->roles, Not(::testing::Contains("memcached")));
  EXPECT_THAT(partial->skipped, ::testing::Contains(HasSubstr("memcached: memcached not")));

  auto bad = AllRolesBut({"mdsn"}, AllServers());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error(), HasSubstr("unknown role 'mdsn'"));
}

TEST(CheckNodeRoles, Rules) {
  EXPECT_TRUE(CheckNodeRoles({"base"}, false).ok());
  EXPECT_TRUE(CheckNodeRoles({"base", "primary", "redis"}, false).ok());
  EXPECT_TRUE(CheckNodeRoles({"base", "load_balancer"}, true).ok());

  auto no_base = CheckNodeRoles({"redis"}, false);
  ASSERT_FALSE(no_base.ok());
  EXPECT_THAT(no_base.error(), HasSubstr("base"));

  auto lb = CheckNodeRoles({"base", "load_balancer", "router"}, false);
  ASSERT_FALSE(lb.ok());
  EXPECT_EQ(lb.error(),
            "load_balancer cannot be combined with other roles (found: router); a load-balancer "
            "node serves nothing else");
  auto lb2 = CheckNodeRoles({"base", "load_balancer", "redis", "dea"}, false);
  ASSERT_FALSE(lb2.ok());
  EXPECT_THAT(lb2.error(), HasSubstr("(found: dea, redis)"));

  auto two_primaries = CheckNodeRoles({"base", "primary"}, true);
  ASSERT_FALSE(two_primaries.ok());
  EXPECT_EQ(two_primaries.error(),
            "the cluster already has a primary on another node; a cluster has exactly one");

  EXPECT_FALSE(CheckNodeRoles({"base", "bogus"}, false).ok());
  EXPECT_FALSE(CheckNodeRoles({"base", "data-services"}, false).ok());
}

TEST(ProcessesForRoles, StartOrderFollowsDesign) {
  auto specs = ProcessesForRoles(
      {"redis", "memcached", "base", "postgresql", "primary", "rabbit", "mysql", "mongodb"}, Node(),
      AllServers());
  EXPECT_THAT(Names(specs), ElementsAre("primary", "mongodb", "mysql", "postgresql", "rabbitmq",
                                        "redis", "memcached", "services"));
  for (size_t i = 1; i < specs.size(); ++i) EXPECT_LT(specs[i - 1].order, specs[i].order);
}

TEST(ProcessesForRoles, EachProcessOnceAndOnlyForAvailableRoles) {
  std::set<std::string> every(AllRoles().begin(), AllRoles().end());
  auto specs = ProcessesForRoles(every, Node(), AllServers());
  std::set<std::string> unique;
  for (const auto& s : specs) EXPECT_TRUE(unique.insert(s.name).second) << s.name;
  EXPECT_EQ(unique.size(), 13u);  // load_balancer, harbor and services included

  EXPECT_THAT(ProcessesForRoles({"base"}, Node(), AllServers()), IsEmpty());
  EXPECT_THAT(Names(ProcessesForRoles({"base", "controller", "dea"}, Node(), AllServers())),
              ElementsAre("controller", "dea"));
  EXPECT_THAT(Names(ProcessesForRoles({"base", "filesystem"}, Node(), AllServers())),
              ElementsAre("services"));  // its sshd runs under `katod services`
  EXPECT_THAT(ProcessesForRoles({"base", "mdns"}, Node(), AllServers()), IsEmpty());
  EXPECT_THAT(Names(ProcessesForRoles({"base", "redis", "mysql"}, Node(), FakeEnv{})), IsEmpty());
  // Pure: the same input gives the same specs (the agent diffs them).
  EXPECT_EQ(specs, ProcessesForRoles(every, Node(), AllServers()));
}

TEST(ProcessesForRoles, ServersBindTheNodeAddressOnly) {
  std::set<std::string> every(AllRoles().begin(), AllRoles().end());
  for (const auto& s : ProcessesForRoles(every, Node("10.1.2.3"), AllServers())) {
    // The DEA and harbor serve no port of their own: they are RUNNING once alive.
    if (s.name != "dea" && s.name != "harbor" && s.name != "services") {
      ASSERT_TRUE(s.ready.has_value()) << s.name;
      EXPECT_EQ(s.ready->host, "10.1.2.3") << s.name;
    }
    bool told = std::find(s.argv.begin(), s.argv.end(), "10.1.2.3") != s.argv.end();
    for (const auto& [k, v] : s.env) told = told || v == "10.1.2.3";
    EXPECT_TRUE(told) << s.name << " is not given the node's address";
    for (const auto& a : s.argv) EXPECT_THAT(a, Not(HasSubstr("0.0.0.0"))) << s.name;
    for (const auto& [k, v] : s.env) EXPECT_THAT(v, Not(HasSubstr("0.0.0.0"))) << s.name;
    ASSERT_FALSE(s.argv.empty());
    EXPECT_EQ(s.argv[0][0], '/') << s.name;
    EXPECT_EQ(s.env.at("PATH"), "/usr/sbin:/usr/bin:/sbin:/bin") << s.name;
    EXPECT_EQ(s.env.at("LANG"), "C.UTF-8") << s.name;
    if (s.name != "primary" && s.name != "controller" && s.name != "router" && s.name != "dea") {
      EXPECT_EQ(s.stop_timeout, std::chrono::seconds(20)) << s.name;
      EXPECT_EQ(s.start_retries, 3) << s.name;
    }
  }
}

TEST(ProcessesForRoles, OnlyKatodsOwnProcessesGetTheSanitizerSettings) {
  FakeEnv env = AllServers();
  env.vars = {{"ASAN_OPTIONS", "log_path=/tmp/san/san"}, {"UBSAN_OPTIONS", "halt_on_error=1"},
              {"HOME", "/root"}};
  std::set<std::string> every(AllRoles().begin(), AllRoles().end());
  const std::set<std::string> katods = {"primary", "controller", "router", "dea", "load_balancer",
                                        "harbor",  "services"};
  for (const auto& s : ProcessesForRoles(every, Node(), env)) {
    if (katods.count(s.name)) {
      EXPECT_EQ(s.env.at("ASAN_OPTIONS"), "log_path=/tmp/san/san") << s.name;
      EXPECT_EQ(s.env.at("UBSAN_OPTIONS"), "halt_on_error=1") << s.name;
      EXPECT_EQ(s.env.count("LSAN_OPTIONS"), 0u) << s.name;  // unset: not passed empty
    } else {
      EXPECT_EQ(s.env.count("ASAN_OPTIONS"), 0u) << s.name;
    }
    EXPECT_EQ(s.env.count("HOME") && s.env.at("HOME") == "/root", false) << s.name;
  }
}

TEST(ProcessesForRoles, PrimarySpec) {
  auto specs = ProcessesForRoles({"base", "primary"}, Node(), FakeEnv{});
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_THAT(specs[0].argv, ElementsAre("/usr/bin/katod", "primary", "--data-dir",
                                         "/var/lib/kato-a", "--ip", "127.0.0.77"));
  EXPECT_EQ(specs[0].ready->port, kPrimaryPort);
  EXPECT_TRUE(specs[0].user.empty());
}

TEST(ProcessesForRoles, ServerDetails) {
  std::map<std::string, ProcessSpec> by;
  for (auto& s : ProcessesForRoles({"postgresql", "mysql", "redis", "memcached", "rabbit"}, Node(),
                                   AllServers())) {
    by[s.name] = s;
  }
  const ProcessSpec& pg = by.at("postgresql");
  EXPECT_EQ(pg.ready->port, 5432);
  EXPECT_EQ(pg.stop_signal, 2);  // fast shutdown
  EXPECT_EQ(pg.start_timeout, std::chrono::seconds(60));
  EXPECT_THAT(pg.argv, ElementsAre("/bin/sh", "-c", HasSubstr("initdb"), "kato-postgresql",
                                   "/var/lib/kato-a/services/postgresql", "127.0.0.77", "5432",
                                   "/usr/lib/postgresql/15/bin/postgres",
                                   "/usr/lib/postgresql/15/bin/initdb"));
  EXPECT_EQ(by.at("mysql").ready->port, 3306);
  EXPECT_THAT(by.at("mysql").argv, ::testing::Contains("/usr/sbin/mariadbd"));
  EXPECT_EQ(by.at("redis").ready->port, 6379);
  // Credentials live in files the wrappers make, never on a command line.
  EXPECT_THAT(by.at("redis").argv[2], HasSubstr("requirepass"));
  EXPECT_THAT(by.at("redis").argv[2], HasSubstr("\"$dir/kato.conf\""));
  EXPECT_THAT(by.at("memcached").argv,
              ElementsAre("/bin/sh", "-c", HasSubstr("-Y \"$dir/auth\""), "kato-memcached",
                          "/var/lib/kato-a/services/memcached", "127.0.0.77", "11211",
                          "/usr/bin/memcached"));
  EXPECT_THAT(by.at("memcached").argv[2], HasSubstr("-U 0 -u memcache -m 64"));
  const ProcessSpec& mq = by.at("rabbitmq");
  EXPECT_EQ(mq.ready->port, 5672);
  EXPECT_EQ(mq.start_timeout, std::chrono::seconds(90));
  EXPECT_EQ(mq.env.at("RABBITMQ_NODENAME"), "kato-01234567@localhost");
  EXPECT_EQ(mq.env.at("RABBITMQ_NODE_IP_ADDRESS"), "127.0.0.77");
  EXPECT_EQ(mq.env.at("HOME"), "/var/lib/kato-a/services/rabbitmq");
  EXPECT_EQ(mq.env.at("ERL_EPMD_ADDRESS"), "127.0.0.1");
  // rabbitmqctl gets the same environment (its node name, cookie, files).
  for (const auto& [k, v] : RabbitEnv(Node())) EXPECT_EQ(mq.env.at(k), v) << k;
}

TEST(ProcessesForRoles, ServicesProcessAfterTheDataServers) {
  auto specs = ProcessesForRoles({"base", "rabbit", "redis", "dea", "router"}, Node(), AllServers());
  EXPECT_THAT(Names(specs), ElementsAre("dea", "rabbitmq", "redis", "services", "router"));
  const ProcessSpec& s = specs[3];
  EXPECT_THAT(s.argv, ElementsAre("/usr/bin/katod", "services", "--data-dir", "/var/lib/kato-a",
                                  "--ip", "127.0.0.77", "--roles", "rabbit,redis"));
  EXPECT_FALSE(s.ready.has_value());
  // One process for every data role; none without one (harbor and mongodb have their own).
  auto every = ProcessesForRoles({"postgresql", "mysql", "memcached", "redis"}, Node(), AllServers());
  EXPECT_EQ(std::count_if(every.begin(), every.end(),
                          [](const ProcessSpec& p) { return p.name == "services"; }),
            1);
  EXPECT_EQ(every.back().argv.back(), "mysql,postgresql,redis,memcached");
  EXPECT_THAT(Names(ProcessesForRoles({"base", "harbor", "mongodb", "dea"}, Node(), AllServers())),
              Not(::testing::Contains("services")));
  // A data role that is not installed gets no provisioning either.
  FakeEnv no_redis = AllServers();
  no_redis.bins.erase("redis-server");
  EXPECT_THAT(Names(ProcessesForRoles({"base", "redis"}, Node(), no_redis)), IsEmpty());
}

TEST(ProcessesForRoles, RabbitNodesOnOneMachineGetDistinctDistPorts) {
  auto port = [](const std::string& ip) {
    return ProcessesForRoles({"rabbit"}, Node(ip), AllServers())[0].env.at("RABBITMQ_DIST_PORT");
  };
  EXPECT_NE(port("127.0.0.77"), port("127.0.0.78"));
  EXPECT_NE(port("127.0.1.77"), port("127.0.0.77"));
  EXPECT_EQ(port("127.0.0.77"), port("127.0.0.77"));
  int p = std::stoi(port("10.255.255.255"));
  EXPECT_GT(p, 25672);
  EXPECT_LT(p, 65536);
}

TEST(ProcessesForRoles, WrapperScriptsAreValidShell) {
  std::set<std::string> every(AllRoles().begin(), AllRoles().end());
  for (const auto& s : ProcessesForRoles(every, Node(), AllServers())) {
    if (s.argv[0] != "/bin/sh") continue;
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-n", "-c", s.argv[2].c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << s.name << ":\n" << s.argv[2];
  }
}

TEST(ProcessesForRoles, LoadBalancerRunsKatodLbReadyOnPort80) {
  auto specs = ProcessesForRoles({"base", "load_balancer"}, Node(), AllServers());
  ASSERT_EQ(specs.size(), 1u);
  const ProcessSpec& s = specs[0];
  EXPECT_EQ(s.name, "load_balancer");
  EXPECT_THAT(s.argv, ElementsAre("/usr/bin/katod", "lb", "--data-dir", "/var/lib/kato-a", "--ip",
                                  "127.0.0.77", "--nginx", "/usr/sbin/nginx"));
  ASSERT_TRUE(s.ready.has_value());
  EXPECT_EQ(s.ready->host, "127.0.0.77");
  EXPECT_EQ(s.ready->port, 80);
  FakeEnv none;
  EXPECT_THAT(ProcessesForRoles({"base", "load_balancer"}, Node(), none), IsEmpty());
}

std::vector<ClusterNodeView> LbCluster() {
  return {{"10.0.0.1", {"primary", "controller", "router", "base"}},
          {"10.0.0.2", {"router", "base"}},
          {"10.0.0.3", {"router", "base"}},
          {"10.0.0.4", {"dea", "base"}},
          {"10.0.0.9", {"router", "base"}}};
}

TEST(PlanLoadBalancer, EveryRouterButItself) {
  auto p = PlanLoadBalancer("10.0.0.9", {"base", "router"}, LbCluster(), {}, false);
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_THAT(p->pool, ElementsAre("10.0.0.1", "10.0.0.2", "10.0.0.3"));
  EXPECT_TRUE(p->follow_cluster);
  EXPECT_THAT(p->remove_roles, ElementsAre("router"));
  // --force: every router, whatever was given.
  p = PlanLoadBalancer("10.0.0.9", {"base"}, LbCluster(), {"10.0.0.2"}, true);
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_THAT(p->pool, ElementsAre("10.0.0.1", "10.0.0.2", "10.0.0.3"));
  EXPECT_TRUE(p->follow_cluster);
  EXPECT_THAT(p->remove_roles, IsEmpty());
}

TEST(PlanLoadBalancer, ChosenRoutersOnly) {
  auto p = PlanLoadBalancer("10.0.0.9", {"base", "router"}, LbCluster(),
                            {"10.0.0.3", "10.0.0.2", "10.0.0.3"}, false);
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_THAT(p->pool, ElementsAre("10.0.0.2", "10.0.0.3"));
  EXPECT_FALSE(p->follow_cluster);
  // Run again on a load balancer: allowed, it changes the pool.
  p = PlanLoadBalancer("10.0.0.9", {"base", "load_balancer"}, LbCluster(), {"10.0.0.1"}, false);
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_THAT(p->pool, ElementsAre("10.0.0.1"));
}

TEST(PlanLoadBalancer, BadInputSaysWhyAndChangesNothing) {
  struct Case {
    std::string ip;
    std::vector<std::string> roles, routers;
    const char* error;
  };
  std::vector<Case> cases = {
      {"10.0.0.1", {"base", "primary", "router"}, {}, "this node is the core"},
      {"10.0.0.4", {"base", "dea"}, {}, "this node has dea; remove it first (`kato role remove dea`)"},
      {"10.0.0.4", {"base", "router", "dea", "redis"}, {}, "has dea, redis; remove them first"},
      {"10.0.0.9", {"base", "router"}, {"10.0.0.9"}, "this node's own address"},
      {"10.0.0.9", {"base", "router"}, {"10.0.0.2", "10.0.0.77"},
       "ROUTER_IP 10.0.0.77 is not a node of this cluster"},
      {"10.0.0.9", {"base", "router"}, {"10.0.0.4"},
       "ROUTER_IP 10.0.0.4 is a node of this cluster but not a router (its roles: dea, base)"},
  };
  for (const auto& c : cases) {
    auto p = PlanLoadBalancer(c.ip, c.roles, LbCluster(), c.routers, false);
    ASSERT_FALSE(p.ok()) << c.error;
    EXPECT_THAT(p.error(), HasSubstr(c.error));
    EXPECT_THAT(p.error(), HasSubstr("nothing changed"));
  }
}

TEST(RoleProcessNames, MatchTheSpecs) {
  EXPECT_THAT(RoleProcessNames("base"), IsEmpty());
  EXPECT_THAT(RoleProcessNames("rabbit"), ElementsAre("rabbitmq", "services"));
  EXPECT_THAT(RoleProcessNames("controller"), ElementsAre("controller"));
  EXPECT_THAT(RoleProcessNames("harbor"), ElementsAre("harbor"));
  EXPECT_THAT(RoleProcessNames("bogus"), IsEmpty());
  for (const auto& role : AllRoles()) {
    EXPECT_EQ(RoleProcessNames(role), Names(ProcessesForRoles({role}, Node(), AllServers())))
        << role;
  }
}

TEST(SystemRoleEnvironment, FindsExecutables) {
  SystemRoleEnvironment env;
  std::string sh = env.FindExecutable("sh");
  EXPECT_FALSE(sh.empty());
  EXPECT_EQ(sh[0], '/');
  EXPECT_EQ(env.FindExecutable("no-such-kato-binary"), "");
  EXPECT_EQ(env.FindExecutable("/bin/sh"), "");
  EXPECT_EQ(env.FindExecutable(""), "");
}

}  // namespace
}  // namespace kato
