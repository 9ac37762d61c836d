#include "controller/node_ops.h"

#include <nlohmann/json.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kato {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

// Plays the primary (its /v1/cluster) and the nodes' agents.
class NodeOpsTest : public ::testing::Test {
 protected:
  NodeOpsTest() {
    NodeOps::Options o;
    o.cluster = [this]() -> Result<std::string> { return cluster_.dump(); };
    o.call_agent = [this](const std::string& ip, const std::string& method, const std::string& path,
                          const std::string& body) -> Result<HttpResponse> {
      calls_.push_back({ip, method, path, body});
      if (ip == "10.0.0.3") return Err("connection refused");
      return agent_reply_;
    };
    ops_ = std::make_unique<NodeOps>(o);
    agent_reply_.status = 200;
    agent_reply_.body = R"({"roles":["base","dea"]})";
  }
  HttpResponse Call(const std::string& method, const std::string& target, const json& body,
                    const Caller& caller) {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body.is_null() ? "" : body.dump();
    return ops_->Handle(r, caller);
  }
  Caller Admin() {
    Caller c{Caller::Kind::kUser};
    c.email = "ann@example.com";
    c.admin_user = true;
    return c;
  }

  json cluster_ = {
      {"core_ip", "10.0.0.1"},
      {"revision", 7},
      {"nodes",
       {{{"id", "n1"}, {"ip", "10.0.0.1"}, {"state", "up"}, {"roles", {"base", "primary"}}},
        {{"id", "n2"}, {"ip", "10.0.0.2"}, {"state", "up"}, {"roles", {"base"}}},
        {{"id", "n3"}, {"ip", "10.0.0.3"}, {"state", "down"}, {"roles", {"base"}}}}}};
  HttpResponse agent_reply_;
  std::vector<std::vector<std::string>> calls_;
  std::unique_ptr<NodeOps> ops_;
};

TEST_F(NodeOpsTest, DevelopersGetNothing) {
  Caller dev{Caller::Kind::kUser};
  dev.email = "dev@example.com";
  EXPECT_EQ(Call("GET", "/v2/nodes", nullptr, dev).status, 403);
  EXPECT_EQ(Call("POST", "/v2/nodes/10.0.0.2/roles", {{"add", {"dea"}}}, dev).status, 403);
  EXPECT_TRUE(calls_.empty());
}

TEST_F(NodeOpsTest, ListsEveryNodeWithTheRolesThereAre) {
  auto r = Call("GET", "/v2/nodes", nullptr, Admin());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["nodes"].size(), 3u);
  EXPECT_EQ(j["nodes"][2]["state"], "down");
  EXPECT_THAT(j["roles"].dump(), HasSubstr("\"dea\""));
  EXPECT_EQ(j["core_ip"], "10.0.0.1");
}

TEST_F(NodeOpsTest, RoleChangesAreTheNodeAgentsCommand) {
  auto r = Call("POST", "/v2/nodes/10.0.0.2/roles", {{"add", {"dea"}}}, Admin());
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0][0], "10.0.0.2");
  EXPECT_EQ(calls_[0][2], "/v1/command");
  json cmd = json::parse(calls_[0][3]);
  EXPECT_EQ(cmd["cmd"], "role.add");
  EXPECT_EQ(cmd["args"]["roles"], json::array({"dea"}));
  EXPECT_EQ(cmd["user"], "ann@example.com");  // for the history
  // The agent's refusal is the answer, word for word.
  agent_reply_.status = 409;
  agent_reply_.body = R"({"error":"role primary can only be on the core"})";
  auto refused = Call("POST", "/v2/nodes/10.0.0.2/roles", {{"add", {"primary"}}}, Admin());
  EXPECT_EQ(refused.status, 409);
  EXPECT_THAT(refused.body, HasSubstr("only be on the core"));
  EXPECT_EQ(Call("POST", "/v2/nodes/10.0.0.3/roles", {{"remove", {"dea"}}}, Admin()).status, 502);
}

TEST_F(NodeOpsTest, BadInputChangesNothing) {
  for (const auto& body :
       {json{{"add", "dea"}}, json{{"add", json::array()}},
        json{{"add", {"dea"}}, {"remove", {"dea"}}}, json{{"add", {"../x"}}}, json{}})
    EXPECT_EQ(Call("POST", "/v2/nodes/10.0.0.2/roles", body, Admin()).status, 400) << body;
  EXPECT_EQ(Call("POST", "/v2/nodes/not-an-ip/roles", {{"add", {"dea"}}}, Admin()).status, 400);
  EXPECT_EQ(Call("POST", "/v2/nodes/10.0.0.9/roles", {{"add", {"dea"}}}, Admin()).status, 404);
  EXPECT_EQ(Call("POST", "/v2/nodes/10.0.0.2/processes/a;b/restart", nullptr, Admin()).status, 400);
  EXPECT_TRUE(calls_.empty());
}

TEST_F(NodeOpsTest, NodeDetailIsLiveOrSaysItIsNot) {
  agent_reply_.body = R"({"processes":[{"name":"katod-dea","state":"RUNNING"}]})";
  auto live = json::parse(Call("GET", "/v2/nodes/10.0.0.2", nullptr, Admin()).body);
  EXPECT_TRUE(live["live"]);
  EXPECT_EQ(live["processes"][0]["name"], "katod-dea");
  auto dead = json::parse(Call("GET", "/v2/nodes/10.0.0.3", nullptr, Admin()).body);
  EXPECT_FALSE(dead["live"]);
  EXPECT_THAT(dead["message"].get<std::string>(), HasSubstr("does not answer"));
  auto restart = Call("POST", "/v2/nodes/10.0.0.2/processes/katod-dea/restart", nullptr, Admin());
  EXPECT_EQ(restart.status, 200);
  EXPECT_EQ(json::parse(calls_.back()[3])["cmd"], "process.restart");
}

}  // namespace
}  // namespace kato
