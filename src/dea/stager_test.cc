#include "dea/stager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/fs.h"

namespace kato {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kSha(64, 'a');

json Doc() {
  return json{
      {"task_id", "0123abcd"},
      {"app", "web"},
      {"node_id", "n1"},
      {"source_sha256", kSha},
      {"buildpack", ""},
      {"command", ""},
      {"env", {{"A", "1"}}},
      {"disk_mb", 2048},
      {"custom_buildpacks", json::array({{{"name", "mine"}, {"sha256", std::string(64, 'b')}}})},
      {"state", "STAGING"}};
}

TEST(ParseStagingDocTest, TakesTheTasksOfThisNodeThatAreStillStaging) {
  auto t = ParseStagingDoc(Doc().dump(), "n1");
  ASSERT_TRUE(t.ok()) << t.error();
  ASSERT_TRUE(t->has_value());
  EXPECT_EQ((*t)->task_id, "0123abcd");
  EXPECT_EQ((*t)->app, "web");
  EXPECT_EQ((*t)->source_sha256, kSha);
  EXPECT_EQ((*t)->env.at("A"), "1");
  EXPECT_EQ((*t)->disk_mb, 2048);
  ASSERT_EQ((*t)->custom_buildpacks.size(), 1u);
  EXPECT_EQ((*t)->custom_buildpacks[0].first, "mine");

  EXPECT_FALSE(ParseStagingDoc(Doc().dump(), "n2")->has_value());  // another DEA's
  json done = Doc();
  done["state"] = "STAGED";
  EXPECT_FALSE(ParseStagingDoc(done.dump(), "n1")->has_value());
}

TEST(ParseStagingDocTest, RefusesNamesThatWouldBecomeBadPaths) {
  auto with = [](const char* key, const json& value) {
    json d = Doc();
    d[key] = value;
    return ParseStagingDoc(d.dump(), "n1");
  };
  EXPECT_THAT(with("task_id", "../x").error(), HasSubstr("not lowercase hex"));
  EXPECT_THAT(with("task_id", "").error(), HasSubstr("not lowercase hex"));
  EXPECT_THAT(with("app", "../etc").error(), HasSubstr("bad app"));
  EXPECT_THAT(with("source_sha256", "abc").error(), HasSubstr("SHA-256"));
  EXPECT_THAT(with("buildpack", "a/b").error(), HasSubstr("bad buildpack"));
  EXPECT_THAT(with("disk_mb", 1).error(), HasSubstr("disk_mb"));
  EXPECT_THAT(with("disk_mb", "big").error(), HasSubstr("disk_mb"));
  EXPECT_THAT(with("custom_buildpacks", json::array({{{"name", ".."}, {"sha256", kSha}}})).error(),
              HasSubstr("custom buildpack"));
  EXPECT_THAT(with("custom_buildpacks", json::array({{{"name", "ok"}, {"sha256", "x"}}})).error(),
              HasSubstr("custom buildpack"));
  EXPECT_FALSE(ParseStagingDoc("[1]", "n1").ok());
  EXPECT_FALSE(ParseStagingDoc("not json", "n1").ok());
}

TEST(BuiltinBuildpacksTest, ComeWithTheBuildInTheirOrder) {
  std::string dir = BuiltinBuildpacksDir();
  auto order = ReadFile(dir + "/order");
  ASSERT_TRUE(order.ok()) << dir << ": " << order.error();
  EXPECT_EQ(*order, "nodejs\npython\ngo\nstatic\nprocfile\n");
  EXPECT_TRUE(PathExists(dir + "/stage"));
  for (const char* pack : {"nodejs", "python", "go", "static", "procfile"})
    for (const char* script : {"detect", "compile", "release"})
      EXPECT_TRUE(PathExists(dir + "/" + pack + "/bin/" + script)) << pack << "/" << script;
}

}  // namespace
}  // namespace kato
