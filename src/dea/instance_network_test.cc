#include "dea/instance_network.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "common/fs.h"

namespace kato {
namespace {

using ::testing::HasSubstr;
using ::testing::AllOf;
using ::testing::Not;

// Records every command; answers from a script of failures.
class FakeRunner final : public CommandRunner {
 public:
  Result<std::string> Run(const std::vector<std::string>& argv, const std::string& input) override {
    std::string line;
    for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
    calls.push_back(line);
    inputs.push_back(input);
    for (const auto& f : fail_when)
      if (line.find(f) != std::string::npos) return Err("fake failure of " + line);
    if (line.find("link show") != std::string::npos) return links;
    return std::string();
  }
  std::vector<std::string> calls, inputs, fail_when;
  std::string links;
};

TEST(NameserversTest, KeepsIpv4Nameservers) {
  EXPECT_EQ(
      Nameservers("# x\nnameserver 10.1.2.3\nsearch a\nnameserver ::1\nnameserver  127.0.0.53\n"),
      (std::vector<std::string>{"10.1.2.3", "127.0.0.53"}));
}

class NetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-netns-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    opt_.node_id = "ABCDEF0123456789";
    opt_.node_ip = "127.0.9.3";
    opt_.instance_cidr = "10.254.0.0/24";
    opt_.netns_dir = dir_ + "/netns";
    opt_.lock_path = dir_ + "/lock";
    opt_.run_root = dir_ + "/run";
    opt_.owner = "100 200";
    opt_.alive = [](const std::string& owner) { return owner == "7 8\n"; };
    ASSERT_TRUE(MakeDirs(opt_.netns_dir).ok());
    policy_.nodes = {"127.0.9.1", "127.0.9.3"};
    policy_.routers = {"127.0.9.1"};
    policy_.dns = {"10.255.255.53"};
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
  NetworkOptions opt_;
  EgressPolicy policy_;
  FakeRunner run_;
};

TEST_F(NetworkTest, TagComesFromTheNodeId) {
  EXPECT_EQ(InstanceNetwork::TagOf("ABCDEF0123456789"), "abcdef01");
  EXPECT_EQ(InstanceNetwork::TagOf("xy"), "00000000");
  InstanceNetwork net(run_, opt_);
  EXPECT_EQ(net.table(), "kato_abcdef01");
}

TEST_F(NetworkTest, TableRefusesClusterNodesAndAllowsRoutersDnsAndRules) {
  InstanceNetwork net(run_, opt_);
  policy_.allow = ParseEgressAllow(R"(["10.0.0.0/8:5432"])").value();
  std::string t = net.TableScript(policy_);
  EXPECT_THAT(t, HasSubstr("table ip kato_abcdef01 {"));
  EXPECT_THAT(t, HasSubstr("dnat ip to ip daddr . tcp dport map @ports"));
  EXPECT_THAT(t, HasSubstr("iifname \"kabcdef01-*\" jump egress"));
  EXPECT_THAT(t, HasSubstr("ip daddr @routers tcp dport { 80, 443 } accept"));
  EXPECT_THAT(t, HasSubstr("ip daddr @nodes reject"));
  EXPECT_THAT(t, HasSubstr("fib daddr type local reject"));
  EXPECT_THAT(t, HasSubstr("elements = { 10.254.0.0/24 }"));
  EXPECT_THAT(t, HasSubstr("snat to 10.254.0.1"));
  // The operator's rules come before the refusals.
  EXPECT_LT(t.find("@allow accept"), t.find("@nodes reject"));
  EXPECT_THAT(t, HasSubstr("add element ip kato_abcdef01 nodes { 127.0.9.1, 127.0.9.3 }"));
  EXPECT_THAT(t, HasSubstr("add element ip kato_abcdef01 allow { 10.0.0.0/8 . 5432 }"));
  EXPECT_THAT(t, HasSubstr("add element ip kato_abcdef01 dns { 10.255.255.53 }"));
}

TEST_F(NetworkTest, InitClearsLeftoversOfThisDeaOnly) {
  for (const char* n : {"kato-abcdef01-0", "kato-abcdef01-7", "kato-12345678-1", "other"})
    ASSERT_TRUE(WriteFileAtomic(opt_.netns_dir + "/" + n, "").ok());
  // 12345678 is another DEA on this host, alive.
  ASSERT_TRUE(MakeDirs(opt_.run_root + "/dea-12345678").ok());
  ASSERT_TRUE(WriteFileAtomic(opt_.run_root + "/dea-12345678/owner", "7 8\n").ok());
  run_.links = "1: lo: <LOOPBACK>\n9: kabcdef01-3@if2: <BROADCAST>\n10: k12345678-1@if2: <X>\n";
  InstanceNetwork net(run_, opt_);
  ASSERT_TRUE(net.Init(policy_).ok());
  std::string all;
  for (const auto& c : run_.calls) all += c + "\n";
  EXPECT_THAT(all, HasSubstr("netns del kato-abcdef01-0"));
  EXPECT_THAT(all, HasSubstr("netns del kato-abcdef01-7"));
  EXPECT_THAT(all, Not(HasSubstr("kato-12345678-1")));
  EXPECT_THAT(all, HasSubstr("link del kabcdef01-3"));
  EXPECT_THAT(all, Not(HasSubstr("link del k12345678-1")));
  EXPECT_THAT(all, HasSubstr("delete table ip kato_abcdef01"));
  EXPECT_THAT(all, HasSubstr("net.ipv4.ip_forward=1"));
  EXPECT_THAT(run_.inputs.back(), HasSubstr("table ip kato_abcdef01"));
}

TEST_F(NetworkTest, InitSweepsWhatDeadDeasLeftAndRecordsItsOwner) {
  // 11111111 left namespaces and its owner is gone; 22222222 never wrote one
  // (killed before it could); 33333333 runs.
  for (const char* n : {"kato-11111111-0", "kato-22222222-4", "kato-33333333-2"})
    ASSERT_TRUE(WriteFileAtomic(opt_.netns_dir + "/" + n, "").ok());
  for (auto [tag, owner] : {std::pair{"11111111", "5 6\n"}, {"33333333", "7 8\n"}}) {
    ASSERT_TRUE(MakeDirs(opt_.run_root + "/dea-" + tag).ok());
    ASSERT_TRUE(WriteFileAtomic(opt_.run_root + "/dea-" + tag + "/owner", owner).ok());
  }
  InstanceNetwork net(run_, opt_);
  std::vector<std::string> swept;
  ASSERT_TRUE(net.Init(policy_, &swept).ok());
  EXPECT_EQ(swept, (std::vector<std::string>{"11111111", "22222222"}));
  std::string all;
  for (const auto& c : run_.calls) all += c + "\n";
  EXPECT_THAT(all, HasSubstr("netns del kato-11111111-0"));
  EXPECT_THAT(all, HasSubstr("netns del kato-22222222-4"));
  EXPECT_THAT(all, Not(HasSubstr("kato-33333333-2")));
  EXPECT_EQ(ReadFile(opt_.run_root + "/dea-abcdef01/owner").value(), "100 200\n");
  ASSERT_TRUE(net.Shutdown().ok());
  EXPECT_FALSE(PathExists(opt_.run_root + "/dea-abcdef01/owner"));
}

TEST_F(NetworkTest, AttachTakesTheFirstFreeIndexOnTheHostAndDetachUndoesIt) {
  // Another DEA on this host holds index 0.
  ASSERT_TRUE(WriteFileAtomic(opt_.netns_dir + "/kato-12345678-0", "").ok());
  ASSERT_TRUE(MakeDirs(opt_.run_root + "/dea-12345678").ok());
  ASSERT_TRUE(WriteFileAtomic(opt_.run_root + "/dea-12345678/owner", "7 8\n").ok());
  InstanceNetwork net(run_, opt_);
  ASSERT_TRUE(net.Init(policy_).ok());
  run_.calls.clear();
  auto a = net.Attach(61001);
  ASSERT_TRUE(a.ok()) << a.error();
  EXPECT_EQ(a->index, 1);
  EXPECT_EQ(a->ip, "10.254.0.3");
  EXPECT_EQ(a->netns, "kato-abcdef01-1");
  EXPECT_EQ(a->veth, "kabcdef01-1");
  EXPECT_THAT(run_.calls[0], HasSubstr("netns add kato-abcdef01-1"));
  std::string inputs;
  for (const auto& i : run_.inputs) inputs += i;
  EXPECT_THAT(inputs,
              HasSubstr("link add kabcdef01-1 type veth peer name eth0 netns kato-abcdef01-1"));
  EXPECT_THAT(inputs, HasSubstr("addr del 127.0.0.1/8 dev lo"));
  EXPECT_THAT(inputs, HasSubstr("route add 127.0.0.0/8 via 10.254.0.1 dev eth0"));
  EXPECT_THAT(
      run_.calls.back(),
      HasSubstr("add element ip kato_abcdef01 ports { 127.0.9.3 . 61001 : 10.254.0.3 . 61001 }"));
  run_.calls.clear();
  ASSERT_TRUE(net.Detach(*a).ok());
  EXPECT_THAT(run_.calls[0],
              HasSubstr("delete element ip kato_abcdef01 ports { 127.0.9.3 . 61001 }"));
  EXPECT_THAT(run_.calls[1], HasSubstr("netns del kato-abcdef01-1"));
}

TEST_F(NetworkTest, AFailedAttachLeavesNoNamespace) {
  InstanceNetwork net(run_, opt_);
  ASSERT_TRUE(net.Init(policy_).ok());
  run_.fail_when = {"add element"};
  auto a = net.Attach(61001);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.error(), HasSubstr("cannot set up the instance's network"));
  EXPECT_THAT(run_.calls.back(), HasSubstr("netns del kato-abcdef01-0"));
}

TEST_F(NetworkTest, SetPolicyRunsOnlyOnChange) {
  InstanceNetwork net(run_, opt_);
  ASSERT_TRUE(net.Init(policy_).ok());
  size_t before = run_.calls.size();
  ASSERT_TRUE(net.SetPolicy(policy_).ok());
  EXPECT_EQ(run_.calls.size(), before);
  policy_.nodes.insert("127.0.9.4");
  ASSERT_TRUE(net.SetPolicy(policy_).ok());
  ASSERT_EQ(run_.calls.size(), before + 1);
  EXPECT_THAT(run_.inputs.back(), HasSubstr("flush set ip kato_abcdef01 nodes"));
  EXPECT_THAT(run_.inputs.back(), HasSubstr("127.0.9.4"));
}

TEST_F(NetworkTest, BadSettingsAreClearErrors) {
  opt_.instance_cidr = "10.254.0.0/30";
  EXPECT_THAT(InstanceNetwork(run_, opt_).Init(policy_).error(), HasSubstr("too small"));
  opt_.instance_cidr = "10.254.0.1/16";
  EXPECT_THAT(InstanceNetwork(run_, opt_).Attach(1).error(), HasSubstr("instance_cidr"));
}
TEST_F(NetworkTest, BoundServicesAreAddedForTheInstanceAndRemovedWithIt) {
  InstanceNetwork net(run_, opt_);
  ASSERT_TRUE(net.Init(policy_).ok());
  EXPECT_THAT(run_.inputs.back(), HasSubstr("ip saddr . ip daddr . tcp dport @bound accept"));
  run_.calls.clear();
  // Bad endpoints (from a malformed document) are left out, never reach nft.
  auto a = net.Attach(61001, {{"127.0.0.3", 5432}, {"127.0.0.4", 42001}, {"x; drop", 1}, {"127.0.0.5", 0}});
  ASSERT_TRUE(a.ok()) << a.error();
  EXPECT_EQ(a->services.size(), 2u);
  EXPECT_THAT(run_.calls.back(),
              HasSubstr("add element ip kato_abcdef01 bound { 10.254.0.2 . 127.0.0.3 . 5432, "
                        "10.254.0.2 . 127.0.0.4 . 42001 }"));
  run_.calls.clear();
  ASSERT_TRUE(net.Detach(*a).ok());
  EXPECT_THAT(run_.calls[1], HasSubstr("delete element ip kato_abcdef01 bound { 10.254.0.2 . 127.0.0.3"));
  // Harbor ports: DNATed like the HTTP port, TCP or UDP; bad ones are left out.
  run_.calls.clear();
  auto h = net.Attach(61003, {}, {{61004, 35000, "tcp"}, {61005, 35001, "udp"}, {0, 1, "tcp"}, {61006, 2, "sctp"}});
  ASSERT_TRUE(h.ok()) << h.error();
  EXPECT_EQ(h->forwards.size(), 2u);
  std::string all;
  for (const auto& c : run_.calls) all += c + "\n";
  EXPECT_THAT(all, HasSubstr("add element ip kato_abcdef01 ports { 127.0.9.3 . 61004 : " + h->ip + " . 35000 }"));
  EXPECT_THAT(all, HasSubstr("add element ip kato_abcdef01 uports { 127.0.9.3 . 61005 : " + h->ip + " . 35001 }"));
  run_.calls.clear();
  ASSERT_TRUE(net.Detach(*h).ok());
  all.clear();
  for (const auto& c : run_.calls) all += c + "\n";
  EXPECT_THAT(all, HasSubstr("delete element ip kato_abcdef01 uports { 127.0.9.3 . 61005 }"));
  // Without services, no element is touched.
  run_.calls.clear();
  auto b = net.Attach(61002);
  ASSERT_TRUE(b.ok());
  for (const auto& c : run_.calls) EXPECT_THAT(c, Not(HasSubstr("bound")));
}

// ---- real namespaces (root) --------------------------------------------------

// A TCP listener on ip:port in the current network namespace.
int Listen(const std::string& ip, int port) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 16) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

class RootNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
    if (FindTool("nft").empty() || FindTool("ip").empty()) GTEST_SKIP() << "needs ip and nft";
    opt_.node_id = "feedface" + std::to_string(::getpid());
    opt_.node_ip = "127.0.251.3";
    opt_.instance_cidr = "10.253.0.0/24";
    opt_.lock_path = "/run/kato-netns-test.lock";
    opt_.run_root = "/run/kato-netns-test-" + std::to_string(::getpid());
    policy_.nodes = {"127.0.251.1", "127.0.251.3"};
    policy_.routers = {"127.0.251.1"};
  }
  void TearDown() override { std::filesystem::remove_all(opt_.run_root); }
  // Runs `script` (Python) inside the namespace; its stdout.
  std::string InNs(const Attachment& a, const std::string& script) {
    auto r =
        run_.Run({FindTool("nsenter"), "--net=" + a.netns_path, "/usr/bin/python3", "-c", script});
    return r ? *r : "error: " + r.error();
  }
  NetworkOptions opt_;
  EgressPolicy policy_;
  PosixCommandRunner run_;
};

constexpr const char* kConnectScript =
    "import socket, sys\n"
    "def probe(ip, port):\n"
    "    s = socket.socket(); s.settimeout(2)\n"
    "    try:\n"
    "        s.connect((ip, port)); return 'ok'\n"
    "    except OSError as e:\n"
    "        return 'refused'\n";

TEST_F(RootNetworkTest, ROOT_DnatReachesTheInstanceAndEgressIsFiltered) {
  InstanceNetwork net(run_, opt_);
  ASSERT_TRUE(net.Init(policy_).ok());
  auto a = net.Attach(61999);
  ASSERT_TRUE(a.ok()) << a.error();
  // Services on the host: a "router" on 80 and a "data service" on another port of a node.
  int router = Listen("127.0.251.1", 80);
  int service = Listen("127.0.251.1", 6379);
  int outside_node = Listen("127.0.251.3", 9022);
  ASSERT_GE(router, 0);
  ASSERT_GE(service, 0);
  ASSERT_GE(outside_node, 0);
  std::string out = InNs(*a, std::string(kConnectScript) +
                                 "print('router', probe('127.0.251.1', 80))\n"
                                 "print('service', probe('127.0.251.1', 6379))\n"
                                 "print('controller', probe('127.0.251.3', 9022))\n"
                                 "print('host-lo', probe('127.0.0.1', 22))\n");
  EXPECT_THAT(out, HasSubstr("router ok"));
  EXPECT_THAT(out, HasSubstr("service refused"));
  EXPECT_THAT(out, HasSubstr("controller refused"));
  // An operator rule opens one port.
  policy_.allow = ParseEgressAllow(R"(["127.0.251.0/24:6379"])").value();
  ASSERT_TRUE(net.SetPolicy(policy_).ok());
  EXPECT_THAT(
      InNs(*a, std::string(kConnectScript) + "print('service', probe('127.0.251.1', 6379))\n"),
      HasSubstr("service ok"));

  // Ingress: a server in the namespace, reached at NODE_IP:PORT from the host,
  // from a 127.0.N.x source and from 127.0.0.1.
  std::thread server([&] {
    InNs(*a,
         "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, "
         "1)\n"
         "s.bind(('0.0.0.0', 61999)); s.listen(4)\n"
         "for _ in range(2):\n    c, peer = s.accept(); c.sendall(b'hi'); c.close()\n");
  });
  auto connect_from = [](const char* src) {
    for (int attempt = 0; attempt < 100; ++attempt) {
      int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in b{}, d{};
      b.sin_family = d.sin_family = AF_INET;
      ::inet_pton(AF_INET, src, &b.sin_addr);
      ::bind(s, reinterpret_cast<sockaddr*>(&b), sizeof b);
      d.sin_port = htons(61999);
      ::inet_pton(AF_INET, "127.0.251.3", &d.sin_addr);
      char buf[2] = {};
      bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&d), sizeof d) == 0 &&
                ::recv(s, buf, 2, MSG_WAITALL) == 2;
      ::close(s);
      if (ok) return std::string(buf, 2);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the server is starting
    }
    return std::string("unreachable");
  };
  EXPECT_EQ(connect_from("127.0.251.1"), "hi");
  EXPECT_EQ(connect_from("127.0.0.1"), "hi");
  server.join();
  ::close(router), ::close(service), ::close(outside_node);

  // A bound instance reaches its service's port on a node, and only that;
  // the unbound one beside it does not.
  policy_.allow = {};
  ASSERT_TRUE(net.SetPolicy(policy_).ok());
  auto bound = net.Attach(61998, {{"127.0.251.3", 9022}});
  ASSERT_TRUE(bound.ok()) << bound.error();
  outside_node = Listen("127.0.251.3", 9022);
  service = Listen("127.0.251.1", 6379);
  ASSERT_GE(outside_node, 0);
  std::string probes = std::string(kConnectScript) +
                       "print('bound', probe('127.0.251.3', 9022))\n"
                       "print('other', probe('127.0.251.1', 6379))\n";
  EXPECT_THAT(InNs(*bound, probes), AllOf(HasSubstr("bound ok"), HasSubstr("other refused")));
  EXPECT_THAT(InNs(*a, probes), AllOf(HasSubstr("bound refused"), HasSubstr("other refused")));
  ASSERT_TRUE(net.Detach(*bound).ok());
  ::close(service), ::close(outside_node);

  ASSERT_TRUE(net.Detach(*a).ok());
  EXPECT_FALSE(PathExists(a->netns_path));
  ASSERT_TRUE(net.Shutdown().ok());
  EXPECT_FALSE(run_.Run({FindTool("nft"), "list", "table", "ip", net.table()}).ok());
  // The veth goes with its namespace, asynchronously (bounded wait).
  for (int i = 0; i < 200 && run_.Run({FindTool("ip"), "link", "show", a->veth}).ok(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE(run_.Run({FindTool("ip"), "link", "show", a->veth}).ok());
}

}  // namespace
}  // namespace kato
