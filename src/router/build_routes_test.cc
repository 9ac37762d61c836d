// BuildRoutes: the routes the cluster state implies, on a real (SQLite) store.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "roles/roles.h"
#include "router/run_router.h"

namespace kato {
namespace {

using json = nlohmann::json;

class BuildRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "kato_build_routes_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    store_ = std::move(OpenSqliteStore(dir_ + "/state.db").value());
    ASSERT_TRUE(store_->SetSetting("endpoint", "api.example.com").ok());
    ASSERT_TRUE(
        store_->PutNode({"core", "10.0.0.1", "core", "0.1.0", {"primary", "controller", "base"}, 1})
            .ok());
    ASSERT_TRUE(store_->PutNode({"dea", "10.0.0.2", "dea1", "0.1.0", {"dea", "base"}, 2}).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // An app with one RUNNING instance on the DEA at `port`.
  void RunningApp(const std::string& name, int port) {
    ASSERT_TRUE(store_->PutDoc("app", name, json{{"name", name}}.dump()).ok());
    std::string id = "i-" + name;
    ASSERT_TRUE(store_
                    ->PutDoc("assignment", name + "/0",
                             json{{"app", name}, {"instance_id", id}, {"node_id", "dea"}}.dump())
                    .ok());
    reported_.push_back({{"instance_id", id}, {"state", "RUNNING"}, {"port", port}});
    ASSERT_TRUE(store_->PutDoc("instances", "dea", json{{"instances", reported_}}.dump()).ok());
  }

  RouteMap Routes() {
    auto r = BuildRoutes(*store_);
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? *r : RouteMap{};
  }

  // api.example.com goes to the core's controller, and only there.
  static void ExpectApiToTheController(RouteMap& routes) {
    ASSERT_EQ(routes["api.example.com"].size(), 1u);
    EXPECT_EQ(routes["api.example.com"][0].ip, "10.0.0.1");
    EXPECT_EQ(routes["api.example.com"][0].port, kControllerRouterPort);
    EXPECT_TRUE(routes["api.example.com"][0].tls) << "routers reach controllers over TLS";
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
  json reported_ = json::array();
};

TEST_F(BuildRoutesTest, ApiGoesToControllersAndAppsToTheirInstances) {
  RunningApp("web", 61001);
  RouteMap routes = Routes();
  ExpectApiToTheController(routes);
  ASSERT_EQ(routes["web.example.com"].size(), 1u);
  EXPECT_EQ(routes["web.example.com"][0].ip, "10.0.0.2");
  EXPECT_EQ(routes["web.example.com"][0].port, 61001);
}

TEST_F(BuildRoutesTest, AnAppNamedApiNeverTakesTheApiEndpoint) {
  // The controller refuses this name; a store that holds it anyway (an older
  // cluster) must still route the API to the controllers, and only to them.
  RunningApp("api", 61002);
  RunningApp("web", 61003);
  RouteMap routes = Routes();
  ExpectApiToTheController(routes);
  ASSERT_EQ(routes["web.example.com"].size(), 1u);
}

TEST_F(BuildRoutesTest, WithoutAControllerTheApiIs503NotAnApp) {
  ASSERT_TRUE(store_->PutNode({"core", "10.0.0.1", "core", "0.1.0", {"primary", "base"}, 1}).ok());
  RunningApp("api", 61002);
  RouteMap routes = Routes();
  ASSERT_TRUE(routes.count("api.example.com"));
  EXPECT_TRUE(routes["api.example.com"].empty());  // 503 until a controller runs
}

}  // namespace
}  // namespace kato
