#include "controller/service_broker.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "controller/app_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/service_model.h"

namespace kato {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

// Plays the service nodes: on every pause of the broker it answers the way
// `mode` says (READY, FAILED, or nothing at all).
class ServiceBrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-broker-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store_ = std::move(OpenSqliteStore(dir_ + "/state.db").value());
    ASSERT_TRUE(store_->PutNode({"n1", "10.0.0.1", "core", "0.1.0", {"primary", "base"}, 1}).ok());
    ASSERT_TRUE(
        store_->PutNode({"n2", "10.0.0.2", "svc1", "0.1.0", {"postgresql", "redis", "base"}, 2}).ok());
    ASSERT_TRUE(store_->PutNode({"n3", "10.0.0.3", "svc2", "0.1.0", {"redis", "base"}, 3}).ok());
    AppRecord app;
    app.name = "web";
    ASSERT_TRUE(store_->PutDoc("app", "web", AppToJson(app)).ok());
    ServiceBroker::Options o;
    o.provision_wait = Millis(1000);
    o.delete_wait = Millis(1000);
    o.poll_pause = [this] { PlayNodes(); };
    broker_ = std::make_unique<ServiceBroker>(o, *store_, clock_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void PlayNodes() {
    clock_.advance(Millis(100));
    auto docs = store_->ListDocs("service").value();
    for (const auto& [name, value] : docs) {
      auto s = ServiceFromJson(value).value();
      if (s.state == "DELETING") {
        if (mode_ == "silent") continue;
        ASSERT_TRUE(store_->DeleteDoc("service", name).ok());
        (void)store_->DeleteDoc("service_state", name);
        continue;
      }
      if (mode_ == "silent") continue;
      ServiceState st{s.id, mode_, mode_ == "FAILED" ? "port 42000 is in use" : "", 0};
      ASSERT_TRUE(store_->PutDoc("service_state", name, ServiceStateToJson(st)).ok());
    }
  }

  HttpResponse Call(const std::string& method, const std::string& target, const json& body = {}) {
    HttpRequest r;
    r.method = method;
    r.target = target;
    if (!body.is_null()) r.body = body.dump();
    return broker_->Handle(r);
  }
  json Json(const HttpResponse& r) { return json::parse(r.body); }
  int64_t AppVersion() { return AppFromJson(*store_->GetDoc("app", "web").value()).value().version; }
  size_t Services() { return store_->ListDocs("service").value().size(); }

  std::string dir_, mode_ = "READY";
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ServiceBroker> broker_;
};

TEST_F(ServiceBrokerTest, CreateWaitsForTheNodeAndShowsCredentials) {
  auto r = Call("POST", "/v2/services", {{"type", "postgresql"}, {"name", "db"}});
  ASSERT_EQ(r.status, 201) << r.body;
  json v = Json(r);
  EXPECT_EQ(v["state"], "READY");
  EXPECT_EQ(v["node_ip"], "10.0.0.2");
  EXPECT_EQ(v["port"], 5432);
  const json& c = v["credentials"];
  EXPECT_EQ(c["host"], "10.0.0.2");
  EXPECT_EQ(c["password"].get<std::string>().size(), 32u);
  EXPECT_EQ(c["username"].get<std::string>(), "u" + c["name"].get<std::string>().substr(1));
  // The list leaves credentials out; info shows them.
  json list = Json(Call("GET", "/v2/services"));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_FALSE(list[0].contains("credentials"));
  EXPECT_EQ(Json(Call("GET", "/v2/services/db"))["credentials"], c);
  // Two services never share credentials or names.
  auto r2 = Call("POST", "/v2/services", {{"type", "postgresql"}, {"name", "db2"}});
  ASSERT_EQ(r2.status, 201);
  EXPECT_NE(Json(r2)["credentials"]["name"], c["name"]);
  EXPECT_NE(Json(r2)["credentials"]["password"], c["password"]);
}

TEST_F(ServiceBrokerTest, PlacesOnTheLeastLoadedNodeWithTheRoleAndGivesOwnPorts) {
  std::map<std::string, int> per_node;
  std::set<std::pair<std::string, int>> endpoints;
  for (int i = 0; i < 4; ++i) {
    auto r = Call("POST", "/v2/services", {{"type", "redis"}, {"name", "r" + std::to_string(i)}});
    ASSERT_EQ(r.status, 201) << r.body;
    json v = Json(r);
    ++per_node[v["node_ip"].get<std::string>()];
    EXPECT_GE(v["port"].get<int>(), kServicePortLo);
    EXPECT_TRUE(endpoints.insert({v["node_ip"].get<std::string>(), v["port"].get<int>()}).second);
    EXPECT_EQ(v["plan"], "64M");
    EXPECT_FALSE(v["credentials"].contains("username"));
  }
  EXPECT_EQ(per_node["10.0.0.2"], 2);
  EXPECT_EQ(per_node["10.0.0.3"], 2);
  auto r = Call("POST", "/v2/services",
                {{"type", "redis"}, {"name", "big"}, {"node", "10.0.0.3"}, {"plan", "1G"}});
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Json(r)["node_ip"], "10.0.0.3");
  EXPECT_EQ(Json(r)["plan"], "1024M");
  EXPECT_EQ(ServiceFromJson(*store_->GetDoc("service", "big").value()).value().plan_mb, 1024);
}

TEST_F(ServiceBrokerTest, BadInputIsAClearErrorThatChangesNothing) {
  auto expect = [&](const json& body, int status, const std::string& text) {
    auto r = Call("POST", "/v2/services", body);
    EXPECT_EQ(r.status, status) << body.dump() << " -> " << r.body;
    EXPECT_THAT(r.body, HasSubstr(text)) << body.dump();
  };
  expect({{"type", "oracle"}, {"name", "x"}}, 400, "unknown service type 'oracle'");
  expect({{"type", "mysql"}, {"name", "x"}}, 400, "`kato role add mysql`");
  expect({{"type", "rabbitmq"}, {"name", "x"}}, 400, "rabbit role");
  expect({{"type", "redis"}, {"name", "x"}, {"node", "10.0.0.1"}}, 400, "node 10.0.0.1 has no redis role");
  expect({{"type", "redis"}, {"name", "x"}, {"node", "10.9.9.9"}}, 400, "no node 10.9.9.9");
  expect({{"type", "redis"}, {"name", "Bad Name"}}, 400, "is not valid");
  expect({{"type", "redis"}, {"name", "x"}, {"plan", "lots"}}, 400, "is not a size");
  expect({{"type", "redis"}, {"name", "x"}, {"plan", "4K"}}, 400, "is not a size");
  expect({{"type", "postgresql"}, {"name", "x"}, {"plan", "1G"}}, 400, "has no size plans");
  expect({{"type", 5}, {"name", "x"}}, 400, "'type' must be a string");
  expect({{"type", "filesystem"}, {"name", "x"}}, 400, "filesystem role");
  expect({{"type", "filesystem"}, {"name", "x"}, {"plan", "16M"}}, 400, "between 64M and 64G");
  expect({{"type", "mongodb"}, {"name", "x"}}, 400, "no mongod");
  EXPECT_EQ(Services(), 0u);
  HttpRequest garbage;
  garbage.method = "POST";
  garbage.target = "/v2/services";
  garbage.body = "{not json";
  EXPECT_EQ(broker_->Handle(garbage).status, 400);
  ASSERT_EQ(Call("POST", "/v2/services", {{"type", "redis"}, {"name", "x"}}).status, 201);
  expect({{"type", "postgresql"}, {"name", "x"}}, 409, "already exists");
  EXPECT_EQ(Services(), 1u);
  EXPECT_EQ(Call("GET", "/v2/services/nope").status, 404);
  EXPECT_EQ(Call("GET", "/v2/services/..%2f").status, 400);
}

TEST_F(ServiceBrokerTest, AFullPortRangeIsRefused) {
  ServiceRecord filler;
  filler.type = "redis";
  filler.node_id = "n3";
  filler.node_ip = "10.0.0.3";
  filler.password = "x";
  for (int p = kServicePortLo; p <= kServicePortHi; ++p) {
    filler.name = "f" + std::to_string(p);
    filler.id = std::to_string(p);
    filler.port = p;
    ASSERT_TRUE(store_->PutDoc("service", filler.name, ServiceToJson(filler)).ok());
  }
  size_t before = Services();
  auto r = Call("POST", "/v2/services", {{"type", "memcached"}, {"name", "m"}, {"node", "10.0.0.3"}});
  EXPECT_EQ(r.status, 400) << r.body;  // n3 has no memcached role
  ASSERT_TRUE(store_->PutNode({"n3", "10.0.0.3", "svc2", "0.1.0", {"redis", "memcached", "base"}, 3}).ok());
  r = Call("POST", "/v2/services", {{"type", "memcached"}, {"name", "m"}, {"node", "10.0.0.3"}});
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_THAT(r.body, HasSubstr("no free service port"));
  EXPECT_EQ(Services(), before);
}

TEST_F(ServiceBrokerTest, AFailedProvisionIsUndoneAndASilentNodeTimesOut) {
  mode_ = "FAILED";
  auto r = Call("POST", "/v2/services", {{"type", "redis"}, {"name", "r"}});
  EXPECT_EQ(r.status, 500);
  EXPECT_THAT(r.body, HasSubstr("port 42000 is in use"));
  // Marked for the node to remove; once it has, nothing is left.
  EXPECT_EQ(ServiceFromJson(*store_->GetDoc("service", "r").value()).value().state, "DELETING");
  mode_ = "READY";
  PlayNodes();
  EXPECT_EQ(Services(), 0u);
  mode_ = "silent";
  r = Call("POST", "/v2/services", {{"type", "redis"}, {"name", "r"}});
  EXPECT_EQ(r.status, 504);
  EXPECT_THAT(r.body, HasSubstr("has not provisioned"));
  EXPECT_EQ(Json(Call("GET", "/v2/services/r"))["state"], "PROVISIONING");
}

TEST_F(ServiceBrokerTest, BindAndUnbindReplaceTheAppsInstances) {
  ASSERT_EQ(Call("POST", "/v2/services", {{"type", "postgresql"}, {"name", "db"}}).status, 201);
  int64_t v0 = AppVersion();
  auto r = Call("POST", "/v2/services/db/bindings", {{"app", "web"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json(r)["bound_apps"], json::array({"web"}));
  EXPECT_EQ(AppVersion(), v0 + 1);
  // Errors change nothing.
  EXPECT_EQ(Call("POST", "/v2/services/db/bindings", {{"app", "web"}}).status, 409);
  EXPECT_EQ(Call("POST", "/v2/services/db/bindings", {{"app", "ghost"}}).status, 404);
  EXPECT_EQ(Call("POST", "/v2/services/nope/bindings", {{"app", "web"}}).status, 404);
  EXPECT_EQ(Call("POST", "/v2/services/db/bindings", {{"ap", "web"}}).status, 400);
  EXPECT_EQ(Call("DELETE", "/v2/services/db/bindings/ghost").status, 404);
  EXPECT_EQ(AppVersion(), v0 + 1);
  // A bound service is not deleted without force.
  r = Call("DELETE", "/v2/services/db");
  EXPECT_EQ(r.status, 409);
  EXPECT_THAT(r.body, HasSubstr("bound to web"));
  EXPECT_EQ(Services(), 1u);
  ASSERT_EQ(Call("DELETE", "/v2/services/db/bindings/web").status, 200);
  EXPECT_EQ(AppVersion(), v0 + 2);
  EXPECT_EQ(Json(Call("GET", "/v2/services/db"))["bound_apps"], json::array());
}

TEST_F(ServiceBrokerTest, ForceDeleteUnbindsAndWaitsForTheNode) {
  ASSERT_EQ(Call("POST", "/v2/services", {{"type", "redis"}, {"name", "cache"}}).status, 201);
  ASSERT_EQ(Call("POST", "/v2/services/cache/bindings", {{"app", "web"}}).status, 200);
  int64_t v = AppVersion();
  auto r = Call("DELETE", "/v2/services/cache?force=1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(AppVersion(), v + 1);
  EXPECT_EQ(Services(), 0u);
  // A node that is away: 202, and the record waits for it.
  ASSERT_EQ(Call("POST", "/v2/services", {{"type", "redis"}, {"name", "cache"}}).status, 201);
  mode_ = "silent";
  r = Call("DELETE", "/v2/services/cache");
  EXPECT_EQ(r.status, 202);
  EXPECT_EQ(Json(Call("GET", "/v2/services/cache"))["state"], "DELETING");
  EXPECT_EQ(Call("POST", "/v2/services", {{"type", "redis"}, {"name", "cache"}}).status, 409);
}

TEST_F(ServiceBrokerTest, ADeletedAppLeavesItsServices) {
  ASSERT_EQ(Call("POST", "/v2/services", {{"type", "redis"}, {"name", "cache"}}).status, 201);
  ASSERT_EQ(Call("POST", "/v2/services/cache/bindings", {{"app", "web"}}).status, 200);
  broker_->ForgetApp("web");
  EXPECT_EQ(Json(Call("GET", "/v2/services/cache"))["bound_apps"], json::array());
}

}  // namespace
}  // namespace kato

namespace kato {
namespace {

TEST_F(ServiceBrokerTest, AFilesystemGetsItsOwnKeyPairAndShowsNoKey) {
  ASSERT_TRUE(store_->PutNode({"n4", "10.0.0.4", "fs", "0.1.0", {"filesystem", "base"}, 4}).ok());
  auto r = Call("POST", "/v2/services", {{"type", "filesystem"}, {"name", "files"}, {"plan", "2G"}});
  ASSERT_EQ(r.status, 201) << r.body;
  json v = Json(r);
  EXPECT_EQ(v["node_ip"], "10.0.0.4");
  EXPECT_EQ(v["port"], kFilesystemSshPort);
  EXPECT_EQ(v["plan"], "2048M");
  EXPECT_EQ(v["credentials"]["dir"], "/app/fs/files");
  EXPECT_FALSE(v["credentials"].contains("password"));
  EXPECT_THAT(r.body, ::testing::Not(HasSubstr("PRIVATE KEY")));  // nor in info or VCAP_SERVICES
  auto s = ServiceFromJson(*store_->GetDoc("service", "files").value()).value();
  EXPECT_EQ(s.username, "u" + s.id);
  EXPECT_EQ(s.plan_mb, 2048);
  EXPECT_THAT(s.ssh_key, HasSubstr("BEGIN PRIVATE KEY"));
  EXPECT_THAT(s.ssh_public_key, HasSubstr("ecdsa-sha2-nistp256 "));
  auto r2 = Call("POST", "/v2/services", {{"type", "filesystem"}, {"name", "files2"}});
  ASSERT_EQ(r2.status, 201) << r2.body;
  EXPECT_EQ(Json(r2)["plan"], "1024M");  // 1G unless --plan
  auto s2 = ServiceFromJson(*store_->GetDoc("service", "files2").value()).value();
  EXPECT_NE(s2.ssh_public_key, s.ssh_public_key);
}

TEST_F(ServiceBrokerTest, HarborGivesPortsFromItsRangeUntilItIsFull) {
  ASSERT_TRUE(store_->PutNode({"n4", "10.0.0.4", "harbor", "0.1.0", {"harbor", "base"}, 4}).ok());
  ASSERT_TRUE(store_->SetConfig({"harbor", "port_range", "\"35000-35001\""}).ok());
  auto r = Call("POST", "/v2/services", {{"type", "harbor"}, {"name", "h1"}});
  ASSERT_EQ(r.status, 201) << r.body;
  json v = Json(r);
  EXPECT_EQ(v["node_ip"], "10.0.0.4");
  EXPECT_EQ(v["port"], 35000);
  EXPECT_EQ(v["protocol"], "tcp");
  EXPECT_EQ(v["credentials"]["protocol"], "tcp");
  EXPECT_FALSE(v["credentials"].contains("password"));
  r = Call("POST", "/v2/services", {{"type", "harbor"}, {"name", "h2"}, {"udp", true}});
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Json(r)["port"], 35001);
  EXPECT_EQ(Json(r)["protocol"], "udp");
  size_t before = Services();
  r = Call("POST", "/v2/services", {{"type", "harbor"}, {"name", "h3"}});
  EXPECT_EQ(r.status, 409);
  EXPECT_THAT(r.body, HasSubstr("port range 35000-35001 of node 10.0.0.4 is full"));
  EXPECT_EQ(Call("POST", "/v2/services", {{"type", "redis"}, {"name", "r"}, {"udp", true}}).status, 400);
  EXPECT_EQ(Call("POST", "/v2/services", {{"type", "harbor"}, {"name", "h4"}, {"udp", "yes"}}).status, 400);
  ASSERT_TRUE(store_->SetConfig({"harbor", "port_range", "\"40000-3\""}).ok());
  r = Call("POST", "/v2/services", {{"type", "harbor"}, {"name", "h5"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("not LO-HI"));
  EXPECT_EQ(Services(), before);
  // The bound instance listens on HARBOR_PORT.
  auto env = ServiceEnv({ServiceFromJson(*store_->GetDoc("service", "h1").value()).value()});
  EXPECT_EQ(env.at("HARBOR_PORT"), "35000");
  EXPECT_TRUE(ServiceEndpoints({ServiceFromJson(*store_->GetDoc("service", "h1").value()).value()}).empty());
}

}  // namespace
}  // namespace kato
