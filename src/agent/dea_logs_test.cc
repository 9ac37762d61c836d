#include "agent/dea_logs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/fs.h"

namespace kato {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

class DeaLogsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-dea-logs-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  static HttpRequest Get(const std::string& target) {
    return HttpRequest{"GET", target, "", {}, "", ""};
  }
  std::string dir_;
};

TEST_F(DeaLogsTest, ServesTheTailOfInstanceAndStagingLogs) {
  ASSERT_TRUE(MakeDirs(dir_ + "/dea/instances/ab12/logs", 0700).ok());
  ASSERT_TRUE(
      WriteFileAtomic(dir_ + "/dea/instances/ab12/logs/app.log", "one\ntwo\nthree\n", 0600).ok());
  ASSERT_TRUE(MakeDirs(dir_ + "/dea/staging/cd34", 0700).ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/dea/staging/cd34/staging.log", "-----> built\n", 0600).ok());

  auto r = ServeDeaLog(dir_, Get("/v1/instances/ab12/log?lines=2"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  json j = json::parse(r->body);
  EXPECT_EQ(j["text"], "two\nthree\n");
  EXPECT_EQ(j["end_offset"], 14);

  r = ServeDeaLog(dir_, Get("/v1/staging/cd34/log"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["text"], "-----> built\n");
}

TEST_F(DeaLogsTest, RefusesIdsThatAreNotHexAndMissingLogs) {
  for (const char* target : {"/v1/staging/../../etc/log", "/v1/staging/AB/log", "/v1/staging//log",
                             "/v1/instances/ab12/log/x", "/v1/staging/ab12/logs"}) {
    auto r = ServeDeaLog(dir_, Get(target));
    ASSERT_TRUE(r.has_value()) << target;
    EXPECT_EQ(r->status, 404) << target;
  }
  auto r = ServeDeaLog(dir_, Get("/v1/staging/ee/log"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 404);
  EXPECT_THAT(r->body, HasSubstr("no log for staging task ee"));
  EXPECT_FALSE(ServeDeaLog(dir_, Get("/v1/status")).has_value());
  EXPECT_FALSE(
      ServeDeaLog(dir_, HttpRequest{"POST", "/v1/staging/ee/log", "", {}, "", ""}).has_value());
}

}  // namespace
}  // namespace kato
