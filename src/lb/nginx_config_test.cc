#include "lb/nginx_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "common/fs.h"
#include "common/pki.h"

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

NginxConfigInput Input() {
  NginxConfigInput in;
  in.listen_ip = "10.0.0.5";
  in.routers = {"10.0.0.2", "10.0.0.3"};
  in.cert_path = "/var/lib/kato/lb/web/cert.pem";
  in.key_path = "/var/lib/kato/lb/web/key.pem";
  in.run_dir = "/var/lib/kato/lb/run";
  in.log_dir = "/var/lib/kato/lb/logs";
  in.user = "nobody nogroup";
  return in;
}

TEST(NginxConfigTest, RoundRobinOverTheRoutersOnHttpAndHttps) {
  auto conf = NginxConfig(Input());
  ASSERT_TRUE(conf.ok()) << conf.error();
  const std::string& c = *conf;
  EXPECT_THAT(c, HasSubstr("daemon off;"));
  EXPECT_THAT(c, HasSubstr("user nobody nogroup;"));
  EXPECT_THAT(c, HasSubstr("pid /var/lib/kato/lb/run/nginx.pid;"));
  EXPECT_THAT(c, HasSubstr("error_log /var/lib/kato/lb/logs/error.log"));
  EXPECT_THAT(c, HasSubstr("access_log /var/lib/kato/lb/logs/access.log kato;"));
  EXPECT_THAT(c, HasSubstr("upstream=$upstream_addr"));
  for (const char* t : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"})
    EXPECT_THAT(c, HasSubstr(std::string(t) + "_temp_path /var/lib/kato/lb/run/" + t + ";"));
  EXPECT_THAT(c, HasSubstr("server 10.0.0.2:80 max_fails=2 fail_timeout=10s;"));
  EXPECT_THAT(c, HasSubstr("server 10.0.0.3:80 max_fails=2 fail_timeout=10s;"));
  EXPECT_THAT(c, HasSubstr("keepalive 64;"));
  EXPECT_THAT(c, HasSubstr("listen 10.0.0.5:80 default_server;"));
  EXPECT_THAT(c, HasSubstr("listen 10.0.0.5:443 ssl default_server;"));
  EXPECT_THAT(c, HasSubstr("ssl_certificate /var/lib/kato/lb/web/cert.pem;"));
  EXPECT_THAT(c, HasSubstr("ssl_certificate_key /var/lib/kato/lb/web/key.pem;"));
  EXPECT_THAT(c, HasSubstr("proxy_next_upstream error timeout http_502 http_503;"));
  // Bodies stream both ways (uploads to the router, server-sent events back).
  EXPECT_THAT(c, HasSubstr("proxy_request_buffering off;"));
  EXPECT_THAT(c, HasSubstr("proxy_buffering off;"));
  EXPECT_THAT(c, HasSubstr("proxy_set_header Upgrade $http_upgrade;"));
  EXPECT_THAT(c, HasSubstr("proxy_set_header Connection $kato_connection;"));
  EXPECT_THAT(c, HasSubstr("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"));
  EXPECT_THAT(c, HasSubstr("proxy_set_header X-Forwarded-Proto $scheme;"));
  EXPECT_THAT(c, HasSubstr("proxy_set_header X-Forwarded-Host $host;"));
  EXPECT_THAT(c, HasSubstr("proxy_http_version 1.1;"));
  EXPECT_THAT(c, HasSubstr("proxy_bind 10.0.0.5;"));
  EXPECT_THAT(c, HasSubstr("proxy_connect_timeout 2s;"));
  // Both servers proxy to the pool.
  size_t first = c.find("proxy_pass http://kato_routers;");
  ASSERT_NE(first, std::string::npos);
  EXPECT_NE(c.find("proxy_pass http://kato_routers;", first + 1), std::string::npos);
}

TEST(NginxConfigTest, OtherPortsAndNoUser) {
  auto in = Input();
  in.http_port = 8080;
  in.https_port = 8443;
  in.router_port = 81;
  in.user = "";
  auto c = NginxConfig(in);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_THAT(*c, HasSubstr("listen 10.0.0.5:8080 default_server;"));
  EXPECT_THAT(*c, HasSubstr("listen 10.0.0.5:8443 ssl"));
  EXPECT_THAT(*c, HasSubstr("server 10.0.0.2:81 "));
  EXPECT_THAT(*c, Not(HasSubstr("user ")));
}

TEST(NginxConfigTest, EmptyPoolAnswers503) {
  auto in = Input();
  in.routers.clear();
  auto c = NginxConfig(in);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_THAT(*c, Not(HasSubstr("upstream kato_routers")));
  EXPECT_THAT(*c, Not(HasSubstr("proxy_pass")));
  EXPECT_THAT(*c, HasSubstr("return 503"));
}

TEST(NginxConfigTest, RefusesWhatCannotGoIntoTheFile) {
  struct Case {
    std::function<void(NginxConfigInput&)> change;
    const char* error;
  };
  std::vector<Case> cases = {
      {[](auto& in) { in.listen_ip = "10.0.0.5; evil"; }, "listen address"},
      {[](auto& in) { in.routers.push_back("10.0.0.9:80 backup"); }, "router address"},
      {[](auto& in) { in.routers.push_back("host.example"); }, "router address"},
      {[](auto& in) { in.cert_path = "/a b/cert.pem"; }, "certificate path"},
      {[](auto& in) { in.key_path = "/x;/key.pem"; }, "key path"},
      {[](auto& in) { in.run_dir = "relative/run"; }, "absolute"},
      {[](auto& in) { in.log_dir = "/l/${x}"; }, "log dir"},
      {[](auto& in) { in.http_port = 0; }, "HTTP port"},
      {[](auto& in) { in.https_port = 70000; }, "HTTPS port"},
      {[](auto& in) { in.user = "nobody;"; }, "worker user"},
  };
  for (const auto& k : cases) {
    auto in = Input();
    k.change(in);
    auto c = NginxConfig(in);
    ASSERT_FALSE(c.ok()) << k.error;
    EXPECT_THAT(c.error(), HasSubstr(k.error));
  }
}

// The generated file is valid for the real nginx (Debian's), when it is installed.
TEST(NginxConfigTest, RealNginxAcceptsIt) {
  const char* nginx = "/usr/sbin/nginx";
  if (::access(nginx, X_OK) != 0) GTEST_SKIP() << "nginx is not installed";
  std::string dir = (std::filesystem::temp_directory_path() / "kato_nginx_test.XXXXXX").string();
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  auto ca = CreateCa("t");
  auto kc = CreateKeyAndCsr("web");
  ASSERT_TRUE(ca.ok() && kc.ok());
  auto cert = SignServerCsr(*ca, kc->csr_pem, "t.test", {"*.t.test"}, 30);
  ASSERT_TRUE(cert.ok()) << cert.error();
  auto in = Input();
  in.listen_ip = "127.0.0.1";
  in.cert_path = dir + "/cert.pem";
  in.key_path = dir + "/key.pem";
  in.run_dir = dir + "/run";
  in.log_dir = dir + "/logs";
  in.user = geteuid() == 0 ? "nobody nogroup" : "";
  ASSERT_TRUE(WriteFileAtomic(in.cert_path, *cert, 0644).ok());
  ASSERT_TRUE(WriteFileAtomic(in.key_path, kc->key_pem, 0600).ok());
  ASSERT_TRUE(MakeDirs(in.run_dir).ok());
  ASSERT_TRUE(MakeDirs(in.log_dir).ok());
  for (bool empty : {false, true}) {
    if (empty) in.routers.clear();
    auto conf = NginxConfig(in);
    ASSERT_TRUE(conf.ok()) << conf.error();
    ASSERT_TRUE(WriteFileAtomic(dir + "/nginx.conf", *conf, 0644).ok());
    std::string cmd = std::string(nginx) + " -q -t -p " + dir + "/ -e stderr -c " + dir +
                      "/nginx.conf 2>" + dir + "/out";
    int rc = std::system(cmd.c_str());
    auto out = ReadFile(dir + "/out");
    EXPECT_EQ(rc, 0) << (out ? *out : "") << "\n" << *conf;
  }
  std::filesystem::remove_all(dir);
}

NodeRecord N(const std::string& ip, std::vector<std::string> roles) {
  NodeRecord n;
  n.id = "id-" + ip;
  n.ip = ip;
  n.roles = std::move(roles);
  return n;
}

TEST(RouterCandidatesTest, RoutersButNeverItself) {
  std::vector<NodeRecord> nodes = {N("10.0.0.1", {"base", "primary", "controller", "router"}),
                                   N("10.0.0.3", {"base", "router"}),
                                   N("10.0.0.2", {"base", "router"}),
                                   N("10.0.0.4", {"base", "dea"}),
                                   N("10.0.0.5", {"base", "router"})};
  EXPECT_THAT(RouterCandidates(nodes, "10.0.0.5", {}),
              ElementsAre("10.0.0.1", "10.0.0.2", "10.0.0.3"));
  EXPECT_THAT(RouterCandidates(nodes, "10.0.0.5", {"10.0.0.3", "10.0.0.4", "10.0.0.5"}),
              ElementsAre("10.0.0.3"));
  EXPECT_THAT(RouterCandidates({}, "10.0.0.5", {}), IsEmpty());
}

TEST(RouterHealthTest, NewRoutersJoinOnTheirFirstPass) {
  RouterHealth h;
  EXPECT_FALSE(h.Healthy("a"));
  h.Observe("a", false);
  EXPECT_FALSE(h.Healthy("a"));
  h.Observe("a", true);
  EXPECT_TRUE(h.Healthy("a"));
}

TEST(RouterHealthTest, FallAndRiseNeedStreaks) {
  RouterHealth h;
  h.Observe("a", true);
  h.Observe("a", false);
  EXPECT_TRUE(h.Healthy("a"));  // one failure is not enough
  h.Observe("a", true);
  h.Observe("a", false);
  EXPECT_TRUE(h.Healthy("a"));  // the streak restarted
  h.Observe("a", false);
  EXPECT_FALSE(h.Healthy("a"));
  h.Observe("a", true);
  EXPECT_FALSE(h.Healthy("a"));
  h.Observe("a", true);
  EXPECT_TRUE(h.Healthy("a"));
}

TEST(RouterHealthTest, PoolIsTheHealthyOnesOrEveryoneWhenNoneIs) {
  RouterHealth h;
  std::vector<std::string> c = {"a", "b", "c"};
  EXPECT_EQ(h.Pool(c), c);  // nothing known yet
  h.Observe("a", true);
  h.Observe("c", true);
  EXPECT_THAT(h.Pool(c), ElementsAre("a", "c"));
  for (int i = 0; i < RouterHealth::kFall; ++i) {
    h.Observe("a", false);
    h.Observe("c", false);
  }
  EXPECT_EQ(h.Pool(c), c);
  h.Retain({"b"});
  h.Observe("b", true);
  EXPECT_THAT(h.Pool({"a", "b"}), ElementsAre("b"));
  EXPECT_FALSE(h.Healthy("a"));  // forgotten: new again
}

}  // namespace
}  // namespace kato
