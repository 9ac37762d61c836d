#include "controller/staging.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/pki.h"
#include "controller/app_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kato {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

class StagingApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-staging-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store_ = std::move(OpenSqliteStore(dir_ + "/state.db").value());
    ASSERT_TRUE(store_->SetSetting("endpoint", "api.example.com").ok());
    ASSERT_TRUE(store_->PutNode({"n1", "10.0.0.1", "core", "0.1.0", {"primary", "base"}, 1}).ok());
    ASSERT_TRUE(store_->PutNode({"d1", "10.0.0.2", "dea1", "0.1.0", {"dea", "base"}, 2}).ok());
    ASSERT_TRUE(store_->PutNode({"d2", "10.0.0.3", "dea2", "0.1.0", {"dea", "base"}, 3}).ok());
    droplets_ = std::make_unique<DropletStore>(dir_ + "/droplets");
    ControllerApi::Options o;
    o.admin_token_hash = Sha256Hex("sesame");
    o.staging.deas = [this] { return deas_; };
    o.staging.fetch_log = [this](const std::string& ip, const std::string& task,
                                 int lines) -> Result<std::string> {
      asked_ = ip + " " + task + " " + std::to_string(lines);
      return json{{"end_offset", 12}, {"text", "-----> built\n"}}.dump();
    };
    o.staging.give_up_ms = 60000;
    api_ = std::make_unique<ControllerApi>(o, *store_, *droplets_, clock_);
    ASSERT_EQ(Call("POST", "/v2/apps", R"({"name":"web"})").status, 201);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  HttpResponse Call(const std::string& method, const std::string& target,
                    const std::string& body = "", const std::string& node = "") {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body;
    r.peer_cn = node;
    if (node.empty()) r.headers["authorization"] = "Bearer sesame";
    return api_->Handle(r);
  }
  static json Json(const HttpResponse& r) { return json::parse(r.body); }
  HttpResponse Outcome(const std::string& task, bool ok, const std::string& node = "d1",
                       const std::string& droplet = "") {
    json b{{"task_id", task}, {"ok", ok}, {"message", ok ? "" : "npm ERR! bad package.json"}};
    if (ok) {
      b["droplet_sha256"] = droplet.empty() ? *droplets_->Save(std::string("\x1f\x8b"
                                                                           "drop",
                                                                           6))
                                            : droplet;
      b["command"] = "npm start";
      b["buildpack"] = "nodejs";
    }
    return Call("POST", "/v2/apps/web/staged", b.dump(), node);
  }
  AppRecord App() { return *AppFromJson(**store_->GetDoc("app", "web")); }

  const std::string src_ = std::string(
      "\x1f\x8b"
      "source",
      8);
  std::vector<DeaInfo> deas_{{"d1", "10.0.0.2", 1024, true}, {"d2", "10.0.0.3", 1024, false}};
  std::string asked_;
  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<DropletStore> droplets_;
  std::unique_ptr<ControllerApi> api_;
};

TEST_F(StagingApiTest, APushIsStagedOnAnUpDeaAndItsOutcomeGivesTheAppItsDroplet) {
  auto up = Call("PUT", "/v2/apps/web/bits", src_);
  ASSERT_EQ(up.status, 200) << up.body;
  json staging = Json(up)["staging"];
  EXPECT_EQ(staging["node_ip"], "10.0.0.2");  // d2 is down
  EXPECT_EQ(staging["state"], "STAGING");
  int64_t version = Json(up)["version"];
  json doc = json::parse(**store_->GetDoc("staging", "web"));
  EXPECT_EQ(doc["node_id"], "d1");
  EXPECT_EQ(doc["source_sha256"], Sha256Hex(src_));
  EXPECT_TRUE(App().droplet_sha256.empty());  // nothing runs before it is staged

  auto s = Call("GET", "/v2/apps/web/staging?lines=40");
  ASSERT_EQ(s.status, 200);
  EXPECT_EQ(Json(s)["state"], "STAGING");
  EXPECT_EQ(Json(s)["log"]["text"], "-----> built\n");
  EXPECT_EQ(asked_, "10.0.0.2 " + staging["task_id"].get<std::string>() + " 40");

  // Only the DEA named reports, and only for the task under way.
  EXPECT_EQ(Outcome(staging["task_id"], true, "d2").status, 403);
  EXPECT_EQ(Outcome(staging["task_id"], true, "").status, 403);
  EXPECT_EQ(Outcome("ffff", true).status, 409);
  auto r = Outcome(staging["task_id"], true);
  ASSERT_EQ(r.status, 200) << r.body;
  AppRecord app = App();
  EXPECT_EQ(app.version, version + 1);
  EXPECT_EQ(app.staged_command, "npm start");
  EXPECT_EQ(app.detected_buildpack, "nodejs");
  EXPECT_FALSE(app.droplet_sha256.empty());
  EXPECT_EQ(Json(Call("GET", "/v2/apps/web/staging"))["state"], "STAGED");
  EXPECT_EQ(Json(Call("GET", "/v2/apps/web/staging"))["version"], version + 1);
  EXPECT_EQ(Outcome(staging["task_id"], true).status, 409);  // once

  // The same source again is not staged again: the droplet gets a new version.
  up = Call("PUT", "/v2/apps/web/bits", src_);
  ASSERT_EQ(up.status, 200);
  EXPECT_TRUE(Json(up)["staging"].is_null());
  EXPECT_EQ(App().version, version + 2);
  EXPECT_EQ(App().droplet_sha256, app.droplet_sha256);
  // A changed command is.
  ASSERT_EQ(Call("PUT", "/v2/apps/web", R"({"command":"node x.js"})").status, 200);
  EXPECT_FALSE(Json(Call("PUT", "/v2/apps/web/bits", src_))["staging"].is_null());
}

TEST_F(StagingApiTest, AFailedBuildLeavesTheRunningVersionAlone) {
  auto first = Json(Call("PUT", "/v2/apps/web/bits", src_))["staging"]["task_id"];
  ASSERT_EQ(Outcome(first, true).status, 200);
  AppRecord before = App();
  std::string next_src(
      "\x1f\x8b"
      "broken",
      8);
  auto task = Json(Call("PUT", "/v2/apps/web/bits", next_src))["staging"]["task_id"];
  ASSERT_EQ(Outcome(task, false).status, 200);
  AppRecord after = App();
  EXPECT_EQ(after.droplet_sha256, before.droplet_sha256);
  EXPECT_EQ(after.version, before.version);
  json s = Json(Call("GET", "/v2/apps/web/staging"));
  EXPECT_EQ(s["state"], "FAILED");
  EXPECT_THAT(s["message"].get<std::string>(), HasSubstr("bad package.json"));
  EXPECT_TRUE(std::filesystem::exists(droplets_->PathOf(before.droplet_sha256)));
}

TEST_F(StagingApiTest, ANewPushSupersedesAStagingUnderWayAndAStaleOneFails) {
  auto one = Json(Call("PUT", "/v2/apps/web/bits", src_))["staging"]["task_id"];
  auto two = Json(Call("PUT", "/v2/apps/web/bits",
                       std::string("\x1f\x8b"
                                   "two",
                                   5)))["staging"]["task_id"];
  EXPECT_NE(one, two);
  EXPECT_EQ(Outcome(one, true).status, 409);
  clock_.advance(Millis(61000));
  json s = Json(Call("GET", "/v2/apps/web/staging"));
  EXPECT_EQ(s["state"], "FAILED");
  EXPECT_THAT(s["message"].get<std::string>(), HasSubstr("sent no outcome"));
  EXPECT_EQ(Outcome(two, true).status, 409);
}

TEST_F(StagingApiTest, StagingNeedsAnUpDeaAndAKnownBuildpack) {
  deas_ = {{"d1", "10.0.0.2", 1024, false}, {"d2", "10.0.0.3", 1024, false}};
  auto r = Call("PUT", "/v2/apps/web/bits", src_);
  EXPECT_EQ(r.status, 503);
  EXPECT_THAT(r.body, HasSubstr("no DEA is up"));
  EXPECT_FALSE(store_->GetDoc("staging", "web")->has_value());
  deas_[0].up = true;
  ASSERT_EQ(Call("PUT", "/v2/apps/web", R"({"buildpack":"cobol"})").status, 200);
  r = Call("PUT", "/v2/apps/web/bits", src_);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("no buildpack is named 'cobol'"));
  EXPECT_EQ(Call("PUT", "/v2/apps/web", R"({"buildpack":"../x"})").status, 400);
  ASSERT_EQ(Call("PUT", "/v2/apps/web", R"({"buildpack":"static"})").status, 200);
  EXPECT_EQ(Call("PUT", "/v2/apps/web/bits", src_).status, 200);
  EXPECT_EQ(json::parse(**store_->GetDoc("staging", "web"))["buildpack"], "static");
}

TEST_F(StagingApiTest, CustomBuildpacksDetectFirstAndGoWithTheirName) {
  std::string pack(
      "\x1f\x8b"
      "pack",
      6);
  auto r = Call("PUT", "/v2/buildpacks/cobol", pack);
  ASSERT_EQ(r.status, 201) << r.body;
  clock_.advance(Millis(10));
  ASSERT_EQ(Call("PUT", "/v2/buildpacks/ada",
                 std::string("\x1f\x8b"
                             "ada",
                             5))
                .status,
            201);
  json list = Json(Call("GET", "/v2/buildpacks"));
  ASSERT_EQ(list.size(), 7u);
  EXPECT_EQ(list[0]["name"], "cobol");  // in the order they were added
  EXPECT_EQ(list[1]["name"], "ada");
  EXPECT_EQ(list[2]["name"], "nodejs");
  EXPECT_TRUE(list[2]["builtin"]);
  ASSERT_EQ(Call("PUT", "/v2/apps/web/bits", src_).status, 200);
  json doc = json::parse(**store_->GetDoc("staging", "web"));
  ASSERT_EQ(doc["custom_buildpacks"].size(), 2u);
  EXPECT_EQ(doc["custom_buildpacks"][0]["sha256"], Sha256Hex(pack));

  EXPECT_EQ(Call("PUT", "/v2/buildpacks/nodejs", pack).status, 409);
  EXPECT_EQ(Call("PUT", "/v2/buildpacks/Bad.Name", pack).status, 400);
  EXPECT_EQ(Call("PUT", "/v2/buildpacks/x", "not gzip").status, 400);
  EXPECT_EQ(Call("DELETE", "/v2/buildpacks/none").status, 404);
  ASSERT_EQ(Call("DELETE", "/v2/buildpacks/ada").status, 200);
  EXPECT_EQ(Json(Call("GET", "/v2/buildpacks")).size(), 6u);
  // cobol's archive is kept while a staging under way uses it, then it goes with it.
  ASSERT_EQ(Call("DELETE", "/v2/buildpacks/cobol").status, 200);
  EXPECT_TRUE(std::filesystem::exists(droplets_->PathOf(Sha256Hex(pack))));
}

TEST_F(StagingApiTest, DeletingTheAppForgetsItsStagingAndArchives) {
  auto task = Json(Call("PUT", "/v2/apps/web/bits", src_))["staging"]["task_id"];
  ASSERT_EQ(Outcome(task, true).status, 200);
  std::string droplet = App().droplet_sha256;
  ASSERT_EQ(Call("DELETE", "/v2/apps/web").status, 200);
  EXPECT_FALSE(store_->GetDoc("staging", "web")->has_value());
  EXPECT_FALSE(std::filesystem::exists(droplets_->PathOf(droplet)));
  EXPECT_FALSE(std::filesystem::exists(droplets_->PathOf(Sha256Hex(src_))));
}

TEST(ReceiveDropletTest, StoresGzipOnlyAndWithinTheLimit) {
  char tmpl[] = "/tmp/kato-receive-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  DropletStore droplets(dir);
  HttpRequest r{"PUT",
                "/v1/droplets",
                std::string("\x1f\x8b"
                            "abc",
                            5),
                {},
                "d1",
                ""};
  auto ok = ReceiveDroplet(droplets, r, 100);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(json::parse(ok.body)["sha256"], Sha256Hex(r.body));
  EXPECT_TRUE(std::filesystem::exists(droplets.PathOf(Sha256Hex(r.body))));
  EXPECT_EQ(ReceiveDroplet(droplets, r, 3).status, 413);
  r.body = "plain";
  EXPECT_EQ(ReceiveDroplet(droplets, r, 100).status, 400);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kato
