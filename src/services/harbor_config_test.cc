#include "services/harbor_config.h"

#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <nlohmann/json.hpp>

namespace kato {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

ServiceRecord Harbor(const std::string& name, int port, const std::string& node = "h1") {
  ServiceRecord s;
  s.name = name;
  s.type = "harbor";
  s.id = "abc" + std::to_string(port);
  s.node_id = node;
  s.node_ip = "127.0.0.9";
  s.port = port;
  s.bound_apps = {"echo"};
  return s;
}

std::pair<std::string, std::string> Report(const std::string& dea, const json& instances) {
  return {dea, json{{"instances", instances}}.dump()};
}

TEST(HarborListeners, RunningInstancesOfBoundAppsOnTheirDeas) {
  ServiceRecord tcp = Harbor("t", 35001), udp = Harbor("u", 35000), other = Harbor("o", 35002, "h2");
  udp.protocol = "udp";
  ServiceRecord gone = Harbor("g", 35003);
  gone.state = "DELETING";
  std::vector<NodeRecord> nodes = {{"d1", "127.0.0.3"}, {"d2", "127.0.0.4"}};
  auto reports = {
      Report("d1", {{{"app", "echo"}, {"state", "RUNNING"},
                     {"harbor", {{{"service", "t"}, {"port", 61002}}, {{"service", "u"}, {"port", 61003}}}}},
                    {{"app", "echo"}, {"state", "CRASHED"}, {"harbor", {{{"service", "t"}, {"port", 61009}}}}}}),
      Report("d2", {{{"app", "echo"}, {"state", "RUNNING"},
                     {"harbor", {{{"service", "t"}, {"port", 61001}}, {{"service", "t"}, {"port", "x"}}}}}}),
      Report("unknown-node", {{{"state", "RUNNING"}, {"harbor", {{{"service", "t"}, {"port", 1}}}}}}),
      std::pair<std::string, std::string>{"d2", "not json"}};
  auto l = HarborListeners("h1", {tcp, udp, other, gone}, reports, nodes);
  ASSERT_EQ(l.size(), 2u);  // the other node's and the deleted one are not ours
  EXPECT_EQ(l[0].service, "u");
  EXPECT_EQ(l[0].protocol, "udp");
  EXPECT_EQ(l[0].backends, (std::vector<HarborBackend>{{"127.0.0.3", 61003}}));
  EXPECT_EQ(l[1].service, "t");
  // The crashed instance is out; the malformed entry too.
  EXPECT_EQ(l[1].backends, (std::vector<HarborBackend>{{"127.0.0.3", 61002}, {"127.0.0.4", 61001}}));
}

TEST(HarborNginxConfig, StreamServersForTcpAndUdp) {
  HarborConfigInput in{"127.0.0.9", "/usr/lib/nginx/modules/ngx_stream_module.so", "/d/run", "/d/logs",
                       "nobody nogroup", {}};
  in.listeners = {{"t", "abc1", 35000, "tcp", {{"127.0.0.3", 61002}, {"127.0.0.4", 61001}}},
                  {"u", "abc2", 35001, "udp", {}}};
  auto c = HarborNginxConfig(in);
  ASSERT_TRUE(c) << c.error();
  EXPECT_THAT(*c, HasSubstr("load_module /usr/lib/nginx/modules/ngx_stream_module.so;"));
  EXPECT_THAT(*c, HasSubstr("listen 127.0.0.9:35000;"));
  EXPECT_THAT(*c, HasSubstr("server 127.0.0.3:61002 max_fails=1 fail_timeout=5s;"));
  EXPECT_THAT(*c, HasSubstr("listen 127.0.0.9:35001 udp;"));
  EXPECT_THAT(*c, HasSubstr("server 127.0.0.1:9 down;"));
  EXPECT_THAT(*c, HasSubstr("user nobody nogroup;"));
  EXPECT_THAT(*c, HasSubstr("daemon off;"));  // the role process is its parent
  EXPECT_THAT(*c, Not(HasSubstr("http {")));
}

TEST(HarborNginxConfig, RefusesWhatCannotGoIntoTheFile) {
  HarborConfigInput in{"127.0.0.9", "/m.so", "/d/run", "/d/logs", "", {}};
  EXPECT_TRUE(HarborNginxConfig(in));
  auto bad = in;
  bad.listen_ip = "0.0.0.0; evil";
  EXPECT_FALSE(HarborNginxConfig(bad));
  bad = in;
  bad.run_dir = "/d/run; include /etc/passwd";
  EXPECT_FALSE(HarborNginxConfig(bad));
  bad = in;
  bad.listeners = {{"t", "ab;c", 35000, "tcp", {}}};
  EXPECT_FALSE(HarborNginxConfig(bad));
  bad.listeners = {{"t", "abc", 35000, "sctp", {}}};
  EXPECT_FALSE(HarborNginxConfig(bad));
  bad.listeners = {{"t", "abc", 35000, "tcp", {{"1.2.3.4; x", 1}}}};
  EXPECT_FALSE(HarborNginxConfig(bad));
  bad.listeners = {{"t", "abc", 70000, "tcp", {}}};
  EXPECT_FALSE(HarborNginxConfig(bad));
}

}  // namespace
}  // namespace kato
