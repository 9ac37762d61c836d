#include "controller/app_api.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/pki.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kato {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

class AppApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-app-api-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store_ = std::move(OpenSqliteStore(dir_ + "/state.db").value());
    ASSERT_TRUE(store_->SetSetting("endpoint", "api.example.com").ok());
    ASSERT_TRUE(store_->SetSetting("core_ip", "10.0.0.1").ok());
    ASSERT_TRUE(store_->PutNode({"n1", "10.0.0.1", "core", "0.1.0", {"primary", "base"}, 1}).ok());
    ASSERT_TRUE(store_->PutNode({"n2", "10.0.0.2", "dea1", "0.1.0", {"dea", "base"}, 2}).ok());
    droplets_ = std::make_unique<DropletStore>(dir_ + "/droplets");
    ControllerApi::Options o;
    o.admin_token_hash = Sha256Hex("sesame");
    o.version = "0.1.0";
    api_ = std::make_unique<ControllerApi>(o, *store_, *droplets_, clock_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  HttpResponse Call(const std::string& method, const std::string& target,
                    const std::string& body = "", const std::string& token = "sesame") {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body;
    if (!token.empty()) r.headers["authorization"] = "Bearer " + token;
    return api_->Handle(r);
  }
  json Json(const HttpResponse& r) { return json::parse(r.body); }
  // Pushes `bits` and plays the DEA that stages them into `droplet`.
  HttpResponse Push(const std::string& app, const std::string& bits, const std::string& droplet) {
    auto up = Call("PUT", "/v2/apps/" + app + "/bits", bits);
    if (up.status != 200 || Json(up)["staging"].is_null()) return up;
    auto sha = droplets_->Save(droplet);
    HttpRequest r;
    r.method = "POST";
    r.target = "/v2/apps/" + app + "/staged";
    r.peer_cn = "n2";
    r.body = json{{"task_id", Json(up)["staging"]["task_id"]}, {"ok", true}, {"droplet_sha256", *sha},
                  {"command", "run"}, {"buildpack", "procfile"}}
                 .dump();
    auto staged = api_->Handle(r);
    return staged.status == 200 ? Call("GET", "/v2/apps/" + app) : staged;
  }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<DropletStore> droplets_;
  std::unique_ptr<ControllerApi> api_;
};

TEST_F(AppApiTest, EveryRequestNeedsTheAdminCredential) {
  EXPECT_EQ(Call("GET", "/v2/info", "", "").status, 401);
  EXPECT_EQ(Call("GET", "/v2/apps", "", "wrong").status, 401);
  HttpRequest r;
  r.method = "GET";
  r.target = "/v2/apps";
  r.headers["authorization"] = "Basic c2VzYW1l";
  EXPECT_EQ(api_->Handle(r).status, 401);
  EXPECT_EQ(Call("GET", "/v2/info").status, 200);
  // The same check from the header alone, before a body is read.
  ASSERT_TRUE(api_->CheckCredential(r).has_value());
  EXPECT_EQ(api_->CheckCredential(r)->status, 401);
  r.headers["authorization"] = "Bearer sesame";
  EXPECT_FALSE(api_->CheckCredential(r).has_value());
  HttpRequest member;
  member.peer_cn = "node-1";  // a verified node certificate (the internal port)
  EXPECT_FALSE(api_->CheckCredential(member).has_value());
}

TEST_F(AppApiTest, InfoNamesVersionEndpointAndNodes) {
  json j = Json(Call("GET", "/v2/info"));
  EXPECT_EQ(j["version"], "0.1.0");
  EXPECT_EQ(j["endpoint"], "api.example.com");
  EXPECT_EQ(j["core_ip"], "10.0.0.1");
  EXPECT_EQ(j["nodes"].size(), 2u);
}

TEST_F(AppApiTest, CreateInfoScaleStopDelete) {
  auto r = Call("POST", "/v2/apps",
                R"({"name":"web","instances":3,"memory":128,"command":"python3 app.py",
                    "env":{"GREETING":"hi"}})");
  ASSERT_EQ(r.status, 201) << r.body;
  json j = Json(r);
  EXPECT_EQ(j["urls"][0], "web.example.com");
  EXPECT_EQ(j["instances"], 3);
  EXPECT_EQ(Call("POST", "/v2/apps", R"({"name":"web"})").status, 409);

  auto list = Json(Call("GET", "/v2/apps"));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["name"], "web");

  int64_t version = Json(Call("GET", "/v2/apps/web"))["version"];
  r = Call("PUT", "/v2/apps/web", R"({"instances":5})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json(r)["instances"], 5);
  EXPECT_EQ(Json(r)["version"], version);  // scaling keeps the running instances
  EXPECT_EQ(Json(r)["disk_mb"], 1024);  // the default
  r = Call("PUT", "/v2/apps/web", R"({"env":{"GREETING":"hello"}})");
  EXPECT_EQ(Json(r)["version"], version + 1);  // new env: new instances
  r = Call("PUT", "/v2/apps/web", R"({"disk":256})");
  EXPECT_EQ(Json(r)["disk_mb"], 256);
  EXPECT_EQ(Json(r)["version"], version + 2);  // a new disk size: new instances
  version += 1;
  r = Call("PUT", "/v2/apps/web", R"({"state":"STOPPED"})");
  EXPECT_EQ(Json(r)["state"], "STOPPED");
  r = Call("POST", "/v2/apps/web/restart");
  EXPECT_EQ(Json(r)["state"], "STARTED");
  EXPECT_EQ(Json(r)["version"], version + 2);

  ASSERT_TRUE(store_->PutDoc("assignment", "web/0", R"({"index":0,"instance_id":"i1","node_id":"n2"})").ok());
  EXPECT_EQ(Call("DELETE", "/v2/apps/web").status, 200);
  EXPECT_EQ(Call("GET", "/v2/apps/web").status, 404);
  EXPECT_FALSE(store_->GetDoc("assignment", "web/0")->has_value());
}

TEST_F(AppApiTest, InstancesJoinAssignmentsWithReports) {
  ASSERT_EQ(Call("POST", "/v2/apps", R"({"name":"web","instances":2})").status, 201);
  ASSERT_TRUE(store_->PutDoc("assignment", "web/0", R"({"index":0,"instance_id":"i1","node_id":"n2"})").ok());
  ASSERT_TRUE(store_->PutDoc("assignment", "web/1", R"({"index":1,"instance_id":"i2","node_id":"n2"})").ok());
  ASSERT_TRUE(store_->PutDoc("instances", "n2",
      R"({"instances":[{"instance_id":"i1","app":"web","index":0,"state":"RUNNING","port":61001}]})").ok());
  json j = Json(Call("GET", "/v2/apps/web"));
  ASSERT_EQ(j["instance_list"].size(), 2u);
  EXPECT_EQ(j["instance_list"][0]["state"], "RUNNING");
  EXPECT_EQ(j["instance_list"][0]["node_ip"], "10.0.0.2");
  EXPECT_EQ(j["instance_list"][0]["port"], 61001);
  EXPECT_EQ(j["instance_list"][1]["state"], "STARTING");  // assigned, not reported yet
  EXPECT_EQ(j["running"], 1);
  EXPECT_EQ(j["placed"], 2);
}

TEST_F(AppApiTest, BitsAreStoredByContentAndBumpTheVersion) {
  ASSERT_EQ(Call("POST", "/v2/apps", R"({"name":"web"})").status, 201);
  std::string gz("\x1f\x8b\x08\x00rest-of-archive", 19);
  std::string droplet("\x1f\x8b\x08\x00droplet", 11);
  auto r = Push("web", gz, droplet);
  ASSERT_EQ(r.status, 200) << r.body;
  json j = Json(r);
  EXPECT_TRUE(j["has_bits"]);
  int64_t v = j["version"];
  auto app = AppFromJson(**store_->GetDoc("app", "web"));
  ASSERT_TRUE(app.ok());
  EXPECT_EQ(app->source_sha256, Sha256Hex(gz));
  EXPECT_EQ(app->droplet_sha256, Sha256Hex(droplet));
  EXPECT_EQ(droplets_->PathOf(Sha256Hex(gz)),
            dir_ + "/droplets/sha256/" + Sha256Hex(gz) + ".tar.gz");
  EXPECT_EQ(*ReadFile(droplets_->PathOf(Sha256Hex(gz))), gz);
  EXPECT_EQ(Call("PUT", "/v2/apps/web/bits", "not a gzip").status, 400);
  EXPECT_EQ(Call("PUT", "/v2/apps/web/bits", "").status, 400);

  // A restart or an env change needs new instances but keeps the droplet.
  EXPECT_EQ(Json(Call("POST", "/v2/apps/web/restart"))["version"], v + 1);
  EXPECT_EQ(Json(Call("PUT", "/v2/apps/web", R"({"env":{"A":"b"}})"))["version"], v + 2);
  EXPECT_EQ(AppFromJson(**store_->GetDoc("app", "web"))->droplet_sha256, Sha256Hex(droplet));
}

TEST_F(AppApiTest, SameBitsAreKeptOnceAndFreedWithTheirLastApp) {
  std::string one(
      "\x1f\x8b"
      "one",
      5),
      two("\x1f\x8b"
          "two",
          5);
  for (const char* name : {"a", "b"}) {
    ASSERT_EQ(Call("POST", "/v2/apps", json{{"name", name}}.dump()).status, 201);
    ASSERT_EQ(Push(name, one, one).status, 200);
  }
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_ + "/droplets/sha256"),
                          std::filesystem::directory_iterator()),
            1);
  ASSERT_EQ(Call("DELETE", "/v2/apps/a").status, 200);
  EXPECT_TRUE(std::filesystem::exists(droplets_->PathOf(Sha256Hex(one))));  // b uses it
  ASSERT_EQ(Push("b", two, two).status, 200);
  EXPECT_FALSE(std::filesystem::exists(droplets_->PathOf(Sha256Hex(one))));
  ASSERT_EQ(Call("DELETE", "/v2/apps/b").status, 200);
  EXPECT_FALSE(std::filesystem::exists(droplets_->PathOf(Sha256Hex(two))));
}

TEST_F(AppApiTest, ARecreatedAppGetsItsOwnBits) {
  std::string old_bits(
      "\x1f\x8b"
      "old",
      5),
      new_bits(
          "\x1f\x8b"
          "new",
          5);
  ASSERT_EQ(Call("POST", "/v2/apps", R"({"name":"web"})").status, 201);
  ASSERT_EQ(Push("web", old_bits, old_bits).status, 200);
  ASSERT_EQ(Call("DELETE", "/v2/apps/web").status, 200);
  ASSERT_EQ(Call("POST", "/v2/apps", R"({"name":"web"})").status, 201);
  auto r = Push("web", new_bits, new_bits);
  ASSERT_EQ(r.status, 200) << r.body;
  // Same name, same version as before: only the content hash tells them apart.
  EXPECT_EQ(AppFromJson(**store_->GetDoc("app", "web"))->droplet_sha256, Sha256Hex(new_bits));
}

TEST_F(AppApiTest, DropletsAreServedByHashOnly) {
  std::string gz(
      "\x1f\x8b"
      "bits",
      6);
  auto sha = droplets_->Save(gz);
  ASSERT_TRUE(sha.ok()) << sha.error();
  auto get = [&](const std::string& method, const std::string& target) {
    HttpRequest r;
    r.method = method;
    r.target = target;
    return ServeDroplet(*droplets_, r);
  };
  auto r = get("GET", "/v1/droplets/" + *sha);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, gz);
  EXPECT_EQ(r.content_type, "application/gzip");
  EXPECT_EQ(get("GET", "/v1/droplets/" + Sha256Hex("other")).status, 404);
  std::string upper = *sha;
  for (auto& ch : upper) ch = static_cast<char>(std::toupper(ch));
  for (const std::string& bad : std::vector<std::string>{
           "/v1/droplets/" + upper, "/v1/droplets/web/3", "/v1/droplets/../state.db",
           "/v1/droplets/" + sha->substr(1), "/v1/droplets/"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(get("GET", bad).status, 404);
  }
  EXPECT_EQ(get("PUT", "/v1/droplets/" + *sha).status, 404);
}

TEST_F(AppApiTest, BadInputChangesNothing) {
  ASSERT_EQ(Call("POST", "/v2/apps", R"({"name":"web"})").status, 201);
  int64_t rev = *store_->Revision();
  struct Case {
    std::string method, target, body;
    int status;
    std::string words;
  } cases[] = {
      {"POST", "/v2/apps", R"({"name":"Bad_Name"})", 400, "not valid"},
      {"POST", "/v2/apps", R"({"name":""})", 400, "not valid"},
      {"POST", "/v2/apps", R"({"name":"x","instances":"3"})", 400, "whole number"},
      {"POST", "/v2/apps", R"({"name":"x","instances":10001})", 400, "between"},
      {"POST", "/v2/apps", R"({"name":"x","memory":1})", 400, "memory"},
      {"POST", "/v2/apps", R"({"name":"x","disk":10})", 400, "disk must be between 64"},
      {"POST", "/v2/apps", R"({"name":"x","disk":"big"})", 400, "whole number"},
      {"POST", "/v2/apps", R"({"name":"x","env":{"PORT":"1"}})", 400, "set by kato"},
      {"POST", "/v2/apps", R"({"name":"x","env":{"A":1}})", 400, "string"},
      {"POST", "/v2/apps", "{not json", 400, "not a JSON object"},
      {"PUT", "/v2/apps/web", R"({"state":"RUNNING"})", 400, "STARTED"},
      {"GET", "/v2/apps/nope", "", 404, "no app named"},
      {"GET", "/v2/apps/..%2f", "", 400, "not valid"},
      {"PATCH", "/v2/apps/web", "", 404, "no such API"},
      {"GET", "/v3/x", "", 404, "no such API"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.method + " " + c.target + " " + c.body);
    auto r = Call(c.method, c.target, c.body);
    EXPECT_EQ(r.status, c.status) << r.body;
    EXPECT_THAT(r.body, HasSubstr(c.words));
  }
  EXPECT_EQ(*store_->Revision(), rev);
  EXPECT_FALSE(store_->GetDoc("app", "x")->has_value());
}

TEST_F(AppApiTest, TheApiEndpointsNameIsRefused) {
  int64_t rev = *store_->Revision();
  auto r = Call("POST", "/v2/apps", R"({"name":"api"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(Json(r)["error"].get<std::string>(),
              HasSubstr("would take the route api.example.com, the cluster's API endpoint"));
  EXPECT_EQ(*store_->Revision(), rev);
  EXPECT_FALSE(store_->GetDoc("app", "api")->has_value());
  // Names close to it are apps like any other.
  EXPECT_EQ(Call("POST", "/v2/apps", R"({"name":"api2"})").status, 201);
  EXPECT_EQ(Call("POST", "/v2/apps", R"({"name":"my-api"})").status, 201);
}

TEST_F(AppApiTest, ReservedNamesAreRefused) {
  int64_t rev = *store_->Revision();
  for (const auto& name : ReservedAppNames()) {
    SCOPED_TRACE(name);
    auto r = Call("POST", "/v2/apps", json{{"name", name}}.dump());
    EXPECT_EQ(r.status, 400);
    EXPECT_THAT(Json(r)["error"].get<std::string>(), HasSubstr("'" + name + "'"));
  }
  EXPECT_EQ(*store_->Revision(), rev);
  for (const char* name : {"admin", "console", "login", "uaa", "www"})
    EXPECT_THAT(CheckNewAppName(name, "api.example.com").error(), HasSubstr("is reserved"));
}

TEST(CheckNewAppNameTest, FollowsTheEndpoint) {
  EXPECT_TRUE(CheckNewAppName("web", "api.example.com").ok());
  EXPECT_THAT(CheckNewAppName("Web", "api.example.com").error(), HasSubstr("not valid"));
  // An endpoint without "api.": apps live under it, so no app name reaches it.
  EXPECT_TRUE(CheckNewAppName("cloud", "cloud.example.com").ok());
  EXPECT_FALSE(CheckNewAppName("api", "cloud.example.com").ok());  // still reserved
}

TEST_F(AppApiTest, DropletDirMustBeWritable) {
  EXPECT_TRUE(DropletStore(dir_ + "/d").CheckWritable().ok());
  auto s = DropletStore("/proc/kato-droplets").CheckWritable();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("/proc/kato-droplets"));
}

TEST_F(AppApiTest, LogsComeFromEachInstancesDea) {
  ASSERT_EQ(Call("POST", "/v2/apps", R"({"name":"web","instances":2})").status, 201);
  // Without a fetcher (no DEA access), logs are refused plainly.
  EXPECT_EQ(Call("GET", "/v2/apps/web/logs").status, 501);
  ControllerApi::Options o;
  o.admin_token_hash = Sha256Hex("sesame");
  std::vector<std::string> asked;
  o.fetch_log = [&](const std::string& ip, const std::string& id, int lines) -> Result<std::string> {
    asked.push_back(ip + " " + id + " " + std::to_string(lines));
    if (id == "i2") return Err("cannot reach the node agent");
    return std::string(R"({"end_offset":7,"text":"hello\n"})");
  };
  api_ = std::make_unique<ControllerApi>(o, *store_, *droplets_, clock_);
  ASSERT_TRUE(store_->PutDoc("assignment", "web/0", R"({"index":0,"instance_id":"i1","node_id":"n2"})").ok());
  ASSERT_TRUE(store_->PutDoc("assignment", "web/1", R"({"index":1,"instance_id":"i2","node_id":"n2"})").ok());
  auto r = Call("GET", "/v2/apps/web/logs?lines=5");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = Json(r);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["text"], "hello\n");
  EXPECT_EQ(j[0]["end_offset"], 7);
  EXPECT_THAT(j[1]["error"].get<std::string>(), HasSubstr("cannot reach"));
  EXPECT_THAT(asked, ::testing::ElementsAre("10.0.0.2 i1 5", "10.0.0.2 i2 5"));
}

}  // namespace
}  // namespace kato
