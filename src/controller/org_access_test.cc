// The controller's API as developers of two organizations see it: each sees
// and changes only what their organization owns, within its quota.
#include "controller/org_access.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/pki.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/service_model.h"

namespace kato {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

class OrgAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-org-access-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store_ = std::move(OpenSqliteStore(dir_ + "/state.db").value());
    ASSERT_TRUE(store_->SetSetting("endpoint", "api.example.com").ok());
    ASSERT_TRUE(store_->PutNode({"n1", "10.0.0.1", "core", "0.1.0", {"primary", "base"}, 1}).ok());
    ASSERT_TRUE(store_->PutNode({"n2", "10.0.0.2", "svc", "0.1.0", {"redis", "base"}, 2}).ok());
    droplets_ = std::make_unique<DropletStore>(dir_ + "/droplets");
    ControllerApi::Options o;
    o.admin_token_hash = Sha256Hex("sesame");
    o.version = "0.1.0";
    o.accounts.password_cost = {1, 64};
    o.services.provision_wait = Millis(2000);
    o.services.poll_pause = [this] { PlayServiceNode(); };
    api_ = std::make_unique<ControllerApi>(o, *store_, *droplets_, clock_);
    for (auto [email, org] : {std::pair{"blue@example.com", "blue"}, {"red@example.com", "red"}}) {
      ASSERT_EQ(Call("POST", "/v2/users", {{"email", email}, {"password", "password-1"}}).status,
                201);
      ASSERT_EQ(Call("POST", "/v2/orgs", {{"name", org}}).status, 201);
      ASSERT_EQ(
          Call("POST", std::string("/v2/orgs/") + org + "/members", {{"email", email}}).status,
          200);
    }
    blue_ = Token("blue@example.com");
    red_ = Token("red@example.com");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The service node: every service it is given is READY.
  void PlayServiceNode() {
    auto docs = store_->ListDocs("service").value();
    for (const auto& [name, value] : docs) {
      auto s = ServiceFromJson(value).value();
      if (s.state == "DELETING") {
        (void)store_->DeleteDoc("service", name);
        (void)store_->DeleteDoc("service_state", name);
      } else {
        ASSERT_TRUE(
            store_->PutDoc("service_state", name, ServiceStateToJson({s.id, "READY", "", 0})).ok());
      }
    }
  }
  std::string Token(const std::string& email) {
    HttpRequest r;
    r.method = "POST";
    r.target = "/v2/login";
    r.body = json{{"email", email}, {"password", "password-1"}}.dump();
    auto reply = api_->Handle(r);
    EXPECT_EQ(reply.status, 200) << reply.body;
    return json::parse(reply.body).value("token", "");
  }
  HttpResponse Call(const std::string& method, const std::string& target,
                    const json& body = nullptr, const std::string& token = "sesame") {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body.is_null() ? "" : body.dump();
    r.headers["authorization"] = "Bearer " + token;
    return api_->Handle(r);
  }
  json Json(const HttpResponse& r) { return json::parse(r.body); }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<DropletStore> droplets_;
  std::unique_ptr<ControllerApi> api_;
  std::string blue_, red_;
};

TEST_F(OrgAccessTest, UserTokensPassTheHeaderCheckAndLoginNeedsNone) {
  HttpRequest head;
  head.method = "GET";
  head.target = "/v2/apps";
  head.headers["authorization"] = "Bearer " + blue_;
  EXPECT_FALSE(api_->CheckCredential(head).has_value());
  head.headers["authorization"] = "Bearer kato_0000000000000000_00000000000000000000000000000000";
  ASSERT_TRUE(api_->CheckCredential(head).has_value());
  EXPECT_EQ(api_->CheckCredential(head)->status, 401);
  HttpRequest login;
  login.method = "POST";
  login.target = "/v2/login";
  EXPECT_FALSE(api_->CheckCredential(login).has_value());
}

TEST_F(OrgAccessTest, DevelopersSeeOnlyTheirOrganizationsApps) {
  auto created = Call("POST", "/v2/apps", {{"name", "bluesite"}}, blue_);
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(Json(created)["org"], "blue");  // their only organization
  ASSERT_EQ(Call("POST", "/v2/apps", {{"name", "redsite"}}, red_).status, 201);
  ASSERT_EQ(Call("POST", "/v2/apps", {{"name", "ops"}}).status, 201);  // the admin's, no org

  auto blue_list = Json(Call("GET", "/v2/apps", nullptr, blue_));
  ASSERT_EQ(blue_list.size(), 1u);
  EXPECT_EQ(blue_list[0]["name"], "bluesite");
  EXPECT_EQ(Json(Call("GET", "/v2/apps")).size(), 3u);  // the admin sees all

  // Another organization's app does not exist for them: read, change, delete, logs.
  for (auto [m, path] : {std::pair{"GET", "/v2/apps/redsite"},
                         {"PUT", "/v2/apps/redsite"},
                         {"DELETE", "/v2/apps/redsite"},
                         {"POST", "/v2/apps/redsite/restart"},
                         {"GET", "/v2/apps/redsite/logs"},
                         {"GET", "/v2/apps/ops"}}) {
    auto r = Call(m, path, m == std::string("PUT") ? json{{"instances", 0}} : json(nullptr), blue_);
    EXPECT_EQ(r.status, 404) << m << " " << path;
    EXPECT_THAT(r.body, HasSubstr("no app named"));
  }
  EXPECT_EQ(Call("GET", "/v2/apps/redsite", nullptr, red_).status, 200);
  // Nor may they create in an organization that is not theirs.
  EXPECT_EQ(Call("POST", "/v2/apps", {{"name", "sneaky"}, {"org", "red"}}, blue_).status, 403);
  EXPECT_EQ(Call("POST", "/v2/apps", {{"name", "sneaky"}, {"org", "nosuch"}}, blue_).status, 403);
  EXPECT_EQ(Call("POST", "/v2/apps", {{"name", "ops2"}, {"org", "nosuch"}}).status, 404);
  EXPECT_EQ(Json(Call("GET", "/v2/apps/redsite"))["org"], "red");
}

TEST_F(OrgAccessTest, DevelopersReachNoNodeOrClusterOperation) {
  auto info = Json(Call("GET", "/v2/info", nullptr, blue_));
  EXPECT_FALSE(info.contains("nodes"));
  EXPECT_FALSE(info.contains("core_ip"));
  EXPECT_TRUE(Json(Call("GET", "/v2/info")).contains("nodes"));
  EXPECT_EQ(Call("GET", "/v2/users", nullptr, blue_).status, 403);
  EXPECT_EQ(Call("POST", "/v2/buildpacks", {{"name", "x"}}, blue_).status, 403);
  ASSERT_EQ(Call("POST", "/v2/apps", {{"name", "bluesite"}}, blue_).status, 201);
  // A staging outcome comes from a DEA's certificate, never from a user.
  auto staged = Call("POST", "/v2/apps/bluesite/staged", {{"task_id", "t"}, {"ok", true}}, blue_);
  EXPECT_EQ(staged.status, 403);
}

TEST_F(OrgAccessTest, QuotasRefuseWhatExceedsThem) {
  ASSERT_EQ(Call("PUT", "/v2/orgs/blue/quota", {{"memory_mb", 1024}, {"instances", 3}}).status,
            200);
  ASSERT_EQ(
      Call("POST", "/v2/apps", {{"name", "a"}, {"memory", 512}, {"instances", 1}}, blue_).status,
      201);
  auto big = Call("POST", "/v2/apps", {{"name", "b"}, {"memory", 256}, {"instances", 3}}, blue_);
  EXPECT_EQ(big.status, 403);
  EXPECT_THAT(big.body, HasSubstr("3 instances"));
  auto mem = Call("POST", "/v2/apps", {{"name", "b"}, {"memory", 1024}}, blue_);
  EXPECT_EQ(mem.status, 403);
  EXPECT_THAT(mem.body, HasSubstr("1G of memory"));
  EXPECT_EQ(Call("GET", "/v2/apps/b", nullptr, blue_).status, 404);  // nothing was written
  ASSERT_EQ(
      Call("POST", "/v2/apps", {{"name", "b"}, {"memory", 256}, {"instances", 2}}, blue_).status,
      201);
  // Scaling up past the quota is refused and changes nothing; a stopped app does not count.
  EXPECT_EQ(Call("PUT", "/v2/apps/b", {{"instances", 3}}, blue_).status, 403);
  EXPECT_EQ(Json(Call("GET", "/v2/apps/b", nullptr, blue_))["instances"], 2);
  ASSERT_EQ(Call("PUT", "/v2/apps/a", {{"state", "STOPPED"}}, blue_).status, 200);
  EXPECT_EQ(Call("PUT", "/v2/apps/b", {{"instances", 3}}, blue_).status, 200);
  EXPECT_EQ(Call("POST", "/v2/apps/a/restart", nullptr, blue_).status, 403);  // would not fit again
  // Another organization's use is not counted.
  EXPECT_EQ(Call("POST", "/v2/apps", {{"name", "c"}, {"memory", 2048}}, red_).status, 201);
}

TEST_F(OrgAccessTest, ServicesBelongToAnOrganizationToo) {
  ASSERT_EQ(Call("PUT", "/v2/orgs/blue/quota", {{"services", 1}}).status, 200);
  auto created = Call("POST", "/v2/services", {{"type", "redis"}, {"name", "cache"}}, blue_);
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(Json(created)["org"], "blue");
  auto over = Call("POST", "/v2/services", {{"type", "redis"}, {"name", "cache2"}}, blue_);
  EXPECT_EQ(over.status, 403);
  EXPECT_THAT(over.body, HasSubstr("may have 1 services"));
  ASSERT_EQ(Call("POST", "/v2/services", {{"type", "redis"}, {"name", "redcache"}}, red_).status,
            201);

  auto list = Json(Call("GET", "/v2/services", nullptr, blue_));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["name"], "cache");
  EXPECT_EQ(Call("GET", "/v2/services/redcache", nullptr, blue_).status, 404);
  EXPECT_EQ(Call("DELETE", "/v2/services/redcache", nullptr, blue_).status, 404);
  EXPECT_EQ(Call("GET", "/v2/services/redcache", nullptr, red_).status, 200);

  // Binding: only an app and a service of one organization.
  ASSERT_EQ(Call("POST", "/v2/apps", {{"name", "bluesite"}}, blue_).status, 201);
  ASSERT_EQ(Call("POST", "/v2/apps", {{"name", "redsite"}}, red_).status, 201);
  EXPECT_EQ(Call("POST", "/v2/services/cache/bindings", {{"app", "redsite"}}, blue_).status, 404);
  auto cross =
      Call("POST", "/v2/services/redcache/bindings", {{"app", "bluesite"}});  // even an admin
  EXPECT_EQ(cross.status, 400);
  EXPECT_THAT(cross.body, HasSubstr("its own organization"));
  EXPECT_EQ(Call("POST", "/v2/services/cache/bindings", {{"app", "bluesite"}}, blue_).status, 200);
  EXPECT_EQ(Call("DELETE", "/v2/orgs/blue").status, 409);  // it still owns things
}

}  // namespace
}  // namespace kato
